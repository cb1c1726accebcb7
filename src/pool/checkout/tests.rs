//! A pooled connection's close reason and swap, on real loopback sockets, read back from the
//! one log line each close writes.

use std::time::{Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::credentials::Lease;
use crate::pool::replacements::Replacements;
use crate::secret::Secret;
use crate::test_log::capture;
use crate::upstream::CancelTarget;

/// A connection on `generation` whose far end is a socket nobody reads: enough for the pool's
/// bookkeeping, which never speaks the protocol.
async fn pooled(generation: u64, pid: i32, counts: &Replacements) -> (Pooled, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stream, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let lease = Lease {
        id: format!("lease-{generation}"),
        username: "pglease_test".into(),
        password: Secret::from("not-logged"),
        issued_at: SystemTime::now(),
        expires_at: None,
        renewable: false,
        generation,
    };
    let up = Upstream {
        stream: stream.unwrap().into(),
        lease: Arc::new(lease),
        params: Arc::from(Vec::new()),
        cancel: CancelTarget {
            addr,
            pid,
            secret: 7,
        },
        created_at: Instant::now(),
        broken: false,
    };
    let listed = Arc::new(crate::pool::upstreams::Upstreams::default()).list(&up);
    let pooled = Pooled::new(
        up,
        LeaseEnd::never(),
        counts.tally(generation),
        listed,
        "app".into(),
        crate::pool::PoolInstruments::default().closes,
    );
    (pooled, accepted.unwrap().0)
}

fn close_line(lines: &[String], pid: i32) -> &str {
    let needle = format!("pid={pid} ");
    let found: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("upstream closed") && l.contains(&needle))
        .collect();
    assert_eq!(found.len(), 1, "one close line per connection: {lines:?}");
    found[0]
}

#[tokio::test]
async fn a_swap_keeps_the_replacement_and_closes_the_old_one_as_lease_retired() {
    let (captured, _guard) = capture();
    let counts = Replacements::default();
    let (mut slot, _old_peer) = pooled(1, 101, &counts).await;
    let (replacement, _new_peer) = pooled(2, 202, &counts).await;
    assert_eq!(counts.older_than(2).connections, 1);
    slot.swap(replacement);
    assert_eq!(slot.generation(), 2, "the slot holds the replacement");
    assert_eq!(
        counts.older_than(2).connections,
        0,
        "the old connection is no longer counted"
    );
    let lines = captured.lines();
    let line = close_line(&lines, 101);
    assert!(line.contains("reason=\"lease_retired\"") || line.contains("reason=lease_retired"));
    assert!(
        line.contains("credentials=app") && line.contains("generation=1"),
        "{line}"
    );
    assert!(
        !line.contains("not-logged"),
        "a lease's password reached a log line"
    );
    assert!(
        !lines.iter().any(|l| l.contains("pid=202 ")),
        "the replacement was closed"
    );
}

#[tokio::test]
async fn the_first_reason_given_is_the_one_logged() {
    let (captured, _guard) = capture();
    let counts = Replacements::default();
    let (mut dirty, _peer) = pooled(1, 303, &counts).await;
    dirty.close_as(CloseReason::CleanupFailed);
    dirty.close_as(CloseReason::Broken);
    drop(dirty);
    let (unnamed, _peer) = pooled(1, 404, &counts).await;
    drop(unnamed);
    let lines = captured.lines();
    assert!(
        close_line(&lines, 303).contains("cleanup_failed"),
        "{lines:?}"
    );
    // deadpool drops connections without asking only when its pool closes.
    assert!(close_line(&lines, 404).contains("pool_closed"), "{lines:?}");
}

#[tokio::test]
async fn lifetimes_are_jittered_within_ten_percent_and_none_means_never() {
    let counts = Replacements::default();
    let lifetime = std::time::Duration::from_secs(1000);
    let mut retire_ats = Vec::new();
    for pid in 0..20 {
        let (mut up, _peer) = pooled(1, 500 + pid, &counts).await;
        assert!(!up.past_lifetime(), "no lifetime: never past it");
        up.retire_after(lifetime);
        let at = up.retire_at.expect("a lifetime was set");
        let after = at - up.upstream().created_at;
        assert!(
            (900..=1100).contains(&after.as_secs()),
            "{after:?} is not 1000 s ±10%"
        );
        assert!(!up.past_lifetime());
        up.retire_after(std::time::Duration::ZERO);
        assert!(up.past_lifetime(), "a lifetime of 0 s is over at once");
        retire_ats.push(after);
    }
    retire_ats.sort();
    retire_ats.dedup();
    assert!(
        retire_ats.len() > 1,
        "twenty connections, one lifetime: no jitter"
    );
}

#[tokio::test]
async fn show_servers_gets_the_checkout_stamp_as_wall_clock_time_and_activity() {
    // Its close line goes to a capture of its own, as in the tests above: a thread logging
    // with no subscriber can race another test's capture over tracing's callsite cache.
    let (_captured, _guard) = capture();
    let counts = Replacements::default();
    let (up, _peer) = pooled(1, 606, &counts).await;
    let info = up.info();
    assert_eq!(info.last_request(), None, "never handed out");
    // A stamp unlike the clock now, so that what is shown is seen to be the stamp.
    let later = std::time::Duration::from_secs(30);
    let in_use = up.listed.in_use(Instant::now() + later);
    assert!(info.is_active());
    let shown = info.last_request().expect("handed out");
    let expected = SystemTime::now() + later;
    let off = shown
        .duration_since(expected)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off < std::time::Duration::from_secs(5),
        "{shown:?} is not the stamp, {expected:?}"
    );
    drop(in_use);
    assert!(!info.is_active(), "given back");
}
