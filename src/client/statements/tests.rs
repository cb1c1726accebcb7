//! The rewrite and the reply filter against a small model of PostgreSQL's extended protocol:
//! whatever a client sends through the proxy, it must hear what a PostgreSQL session of its own
//! would have answered.

mod model;
mod refusals;

use bytes::BytesMut;

use super::*;
use model::*;

#[test]
fn a_named_statement_is_renamed_and_reused_across_upstreams() {
    let mut c = Client::new();
    let (mut one, mut two) = (Upstream::new(10), Upstream::new(10));
    let heard = c.send(&mut one, &Req::new().parse("S_1", "select 1").sync());
    assert_eq!(tags(&heard), "1Z");
    let name = name_of("select 1");
    assert!(one.pg.statements.contains_key(name.as_bytes()));
    assert!(!one.pg.statements.contains_key(&b"S_1"[..]));

    // The next transaction lands on another upstream: the statement is prepared there first,
    // its replies hidden.
    let run = Req::new().bind("", "S_1").execute("").sync();
    let (_, sent) = c.rewrite(&mut two, &run);
    assert_eq!(
        frames(&sent)[..3],
        [
            ('C', format!("S{name}\0")),
            ('P', format!("{name}\0select 1\0\0\0")),
            ('B', format!("\0{name}\0\0\0\0\0\0\0")),
        ]
    );
    two.state = UpstreamStatements::new(10);
    let heard = c.send(&mut two, &run);
    assert_eq!(tags(&heard), "2DCZ");
    assert_eq!(ran(&heard), ["select 1"]);
    // Back on the first upstream, nothing needs preparing.
    let (_, sent) = c.rewrite(&mut one, &run);
    assert_eq!(tags(&sent), "BES");
}

#[test]
fn two_clients_with_one_name_for_different_sql_never_collide() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("S_1", "select 'a'").sync());
    b.send(&mut up, &Req::new().parse("S_1", "select 'b'").sync());
    let run = Req::new().bind("", "S_1").execute("").sync();
    assert_eq!(ran(&a.send(&mut up, &run)), ["select 'a'"]);
    assert_eq!(ran(&b.send(&mut up, &run)), ["select 'b'"]);
    assert_eq!(up.state.len(), 2);
}

#[test]
fn identical_sql_from_two_clients_shares_one_upstream_statement() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("a1", "select 42").sync());
    let (heard, sent) = b.rewrite(&mut up, &Req::new().parse("b7", "select 42").sync());
    // The Parse is answered by the proxy, the upstream only sees the Sync.
    assert_eq!((tags(&heard), tags(&sent)), ("1".into(), "S".into()));
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("a1", "select 42").sync());
    b.send(&mut up, &Req::new().parse("b7", "select 42").sync());
    assert_eq!(up.pg.statements.len(), 1);
    let run = |n| Req::new().bind("", n).execute("").sync();
    assert_eq!(ran(&b.send(&mut up, &run("b7"))), ["select 42"]);
    // Different parameter types are a different statement.
    b.send(
        &mut up,
        &Req::new().parse_typed("b8", "select 42", &[23]).sync(),
    );
    assert_eq!(up.pg.statements.len(), 2);
}

#[test]
fn a_full_upstream_closes_its_least_recently_used_statement() {
    let mut c = Client::new();
    let mut up = Upstream::new(2);
    for (n, q) in [("s1", "select 1"), ("s2", "select 2")] {
        c.send(&mut up, &Req::new().parse(n, q).sync());
    }
    let run = |n| Req::new().bind("", n).execute("").sync();
    c.send(&mut up, &run("s1"));
    let (_, sent) = c.rewrite(
        &mut Upstream::new(2),
        &Req::new().parse("s3", "select 3").sync(),
    );
    assert_eq!(
        tags(&sent),
        "CPS",
        "a fresh upstream closes nothing but the name it prepares"
    );
    let heard = c.send(&mut up, &Req::new().parse("s3", "select 3").sync());
    assert_eq!(tags(&heard), "1Z", "the eviction's CloseComplete is hidden");
    assert_eq!(up.pg.statements.len(), 2);
    assert!(
        !up.pg
            .statements
            .contains_key(name_of("select 2").as_bytes())
    );
    assert!(
        up.pg
            .statements
            .contains_key(name_of("select 1").as_bytes())
    );
    // The evicted statement is prepared again when it is used.
    assert_eq!(ran(&c.send(&mut up, &run("s2"))), ["select 2"]);
    assert_eq!(up.pg.statements.len(), 2);
    assert_eq!(up.state.len(), 2);
}

#[test]
fn unnamed_statements_and_portals_pass_without_a_copy() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let request = Req::new()
        .parse("", "select 1")
        .bind("p", "")
        .describe(b'P', "p")
        .execute("p")
        .close(b'P', "p")
        .sync();
    let (heard, sent) = c.rewrite(&mut up, &request);
    assert!(heard.is_empty());
    assert_eq!(sent, request, "sent as it came");
    let heard = c.send(&mut Upstream::new(10), &request);
    assert_eq!(tags(&heard), "12TDC3Z");
}

#[test]
fn describe_of_a_portal_is_untouched_and_of_a_statement_renamed() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 5").sync());
    let request = Req::new()
        .describe(b'S', "s")
        .bind("p", "s")
        .describe(b'P', "p")
        .sync();
    let (heard, sent) = c.exchange(&mut up, &request);
    let f = frames(&sent);
    assert_eq!(f[0], ('D', format!("S{}\0", name_of("select 5"))));
    assert_eq!(f[2], ('D', "Pp\0".into()));
    assert_eq!(tags(&heard), "tT2TZ");
}

#[test]
fn close_forgets_the_clients_name_and_keeps_the_shared_statement() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("x", "select 9").sync());
    b.send(&mut up, &Req::new().parse("y", "select 9").sync());
    let (heard, sent) = a.rewrite(&mut up, &Req::new().close(b'S', "x").sync());
    assert_eq!((tags(&heard), tags(&sent)), ("3".into(), "S".into()));
    a.direct.run(&Req::new().close(b'S', "x").sync());
    let mut rest = BytesMut::new();
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut rest);
    assert_eq!(tags(&rest), "Z");
    assert_eq!(
        tags(&a.send(&mut up, &Req::new().bind("", "x").sync())),
        "EZ"
    );
    assert_eq!(
        ran(&b.send(&mut up, &Req::new().bind("", "y").execute("").sync())),
        ["select 9"]
    );
    // Closing a name never prepared is not an error, as in PostgreSQL.
    assert_eq!(
        tags(&a.send(&mut up, &Req::new().close(b'S', "zz").sync())),
        "3Z"
    );
}

#[test]
fn owed_replies_wait_for_the_replies_before_them() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("s", "select 1").sync());
    // Two pipelined requests: the second's ParseComplete is the proxy's, and must come after
    // the first's replies.
    let first = Req::new()
        .parse("", "select 0")
        .bind("", "")
        .execute("")
        .sync();
    let second = Req::new()
        .parse("t", "select 1")
        .bind("", "t")
        .execute("")
        .sync();
    let (mut heard, sent1) = b.rewrite(&mut up, &first);
    let (more, sent2) = b.rewrite(&mut up, &second);
    assert!(heard.is_empty() && more.is_empty());
    let mut sent = sent1;
    sent.extend_from_slice(&sent2);
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut heard);
    let mut both = first.clone();
    both.extend_from_slice(&second);
    assert_eq!(frames(&heard), frames(&b.direct.run(&both)));
    assert_eq!(tags(&heard), "12DCZ12DCZ");
}

#[test]
fn a_failed_parse_is_not_counted_as_present() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    up.pg.failing.push(b"select broken".to_vec());
    c.direct.failing.push(b"select broken".to_vec());
    let heard = c.send(
        &mut up,
        &Req::new().parse("s", "select broken").bind("", "s").sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    assert!(!up.state.contains(&StatementId::of(b"select broken", b"")));
    // A statement the upstream cannot prepare any more (its table was dropped): the added
    // Parse's error reaches the client, and the statement is not counted as present.
    c.send(
        &mut Upstream::new(10),
        &Req::new().parse("ok", "select t").sync(),
    );
    let mut other = Upstream::new(10);
    other.pg.failing.push(b"select t".to_vec());
    let heard = c.send_only(&mut other, &Req::new().bind("", "ok").execute("").sync());
    assert_eq!(tags(&heard), "EZ");
    assert!(other.state.is_empty());
    // Skipped after an error: a later Parse in the batch is not present either.
    let request = Req::new().bind("", "missing").parse("q", "select q").sync();
    let mut up = Upstream::new(10);
    c.send(&mut up, &request);
    assert!(up.state.is_empty());
    assert!(up.pg.statements.is_empty());
}

#[test]
fn a_parse_the_upstream_skipped_does_not_make_the_unnamed_statement_ours() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("", "select secret").sync());
    // b's Parse comes after an error, so PostgreSQL skips it: a's unnamed statement stays.
    b.direct.failing.push(b"select bad".to_vec());
    up.pg.failing.push(b"select bad".to_vec());
    b.send(
        &mut up,
        &Req::new()
            .parse("", "select bad")
            .parse("", "select mine")
            .sync(),
    );
    let heard = b.send(&mut up, &Req::new().bind("", "").execute("").sync());
    assert!(ran(&heard).is_empty());
    assert_eq!(tags(&heard), "EZ");
}

#[test]
fn discard_all_forgets_the_clients_statements_and_the_upstreams() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    c.send(&mut up, &Req::new().query("DISCARD ALL"));
    assert!(c.statements.is_empty() && up.state.is_empty());
    assert_eq!(
        tags(&c.send(&mut up, &Req::new().bind("", "s").sync())),
        "EZ"
    );
    // Prepared again on the same upstream: the Close before the Parse makes it work even if
    // the upstream had kept it.
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    up.state.clear();
    assert_eq!(
        ran(&c.send(&mut up, &Req::new().bind("", "s").execute("").sync())),
        ["select 1"]
    );
}

#[test]
fn bad_frames_are_protocol_errors_and_change_nothing() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let good = Req::new().parse("t", "select 2").sync();
    let bad: Vec<Vec<u8>> = vec![
        [&good[..], b"P\0\0\0\x05x"].concat(),
        [&good[..], b"B\0\0\0\x06p\0"].concat(),
        [&good[..], b"D\0\0\0\x06Qx\0"].concat(),
        [&good[..], b"E\0\0\0\x06\0\0"].concat(),
        [&good[..], b"S\0\0\0\x03"].concat(),
        [&good[..], b"S\0\0\0\x09"].concat(),
        [&good[..], b"S\0\0"].concat(),
        [&good[..], b"P\0\0\0\x0bs\0q\0\xff\xff"].concat(),
    ];
    for request in bad {
        let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
        let r = c
            .statements
            .rewrite(&request, b'I', &mut up.state, &mut out, &mut heard);
        assert!(r.is_err(), "{request:?}");
        assert!(heard.is_empty());
        assert!(c.statements.get(b"t").is_none() && c.statements.len() == 1);
        assert!(up.state.idle() && up.state.len() == 1);
    }
}

#[test]
fn replies_that_fit_nothing_sent_are_errors() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let (_, _) = c.rewrite(&mut up, &Req::new().parse("s", "select 1").sync());
    // A BindComplete where the added Close's CloseComplete is due.
    let mut heard = BytesMut::new();
    assert!(up.state.on_reply(b'2', &mut heard).is_err());
    let mut up = Upstream::new(10);
    let _ = c.rewrite(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert!(up.state.on_reply(b'Z', &mut heard).is_err());
    // Asynchronous messages are fine anywhere.
    assert_eq!(up.state.on_reply(b'N', &mut heard), Ok(Verdict::Forward));
}

#[test]
fn a_second_parse_of_a_recorded_name_replaces_it() {
    // PostgreSQL would refuse it with 42P05; the proxy records Parses PostgreSQL may have
    // skipped after an error, so a driver that prepares again after an error must not fail.
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let heard = c.send_only(&mut up, &Req::new().parse("s", "select 2").sync());
    assert_eq!(tags(&heard), "1Z");
    let heard = c.send_only(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert_eq!(ran(&heard), ["select 2"]);
}

#[test]
fn in_a_failed_transaction_a_parse_goes_upstream_to_be_refused() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
    let request = Req::new().parse("t", "select 1").sync();
    assert!(
        b.statements
            .rewrite(&request, b'E', &mut up.state, &mut out, &mut heard)
            .unwrap()
    );
    assert!(heard.is_empty(), "no ParseComplete of the proxy's");
    assert_eq!(tags(&out), "CPS");
    // PostgreSQL refuses it there (25P02): the statement the Close dropped is not counted.
    let mut refused = BytesMut::new();
    reply(&mut refused, b'3', b"");
    error(
        &mut refused,
        "25P02",
        "current transaction is aborted".into(),
    );
    reply(&mut refused, b'Z', b"E");
    let mut heard = BytesMut::new();
    up.filter(&refused, &mut heard);
    assert_eq!(tags(&heard), "EZ");
    assert!(up.state.is_empty() && up.state.idle());
}

#[test]
fn abandoned_replies_leave_the_upstream_idle() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let _ = c.rewrite(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert!(!up.state.idle());
    up.state.abandon_replies();
    assert!(up.state.idle() && up.state.len() == 1);
}

#[test]
fn arbitrary_requests_and_replies_never_panic() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let tags = b"PBDCESHQFdcfX";
    let pieces: [&[u8]; 8] = [
        b"",
        b"\0",
        b"S",
        b"P",
        b"s1\0",
        b"select 1\0",
        b"\0\0",
        b"\xff\xff",
    ];
    let mut c = Client::new();
    let mut up = Upstream::new(3);
    c.send(&mut up, &Req::new().parse("s1", "select 1").sync());
    for _ in 0..5000 {
        let mut request = BytesMut::new();
        for _ in 0..rng.random_range(1..6) {
            let tag = tags[rng.random_range(0..tags.len())];
            let mut body = Vec::new();
            for _ in 0..rng.random_range(0..4) {
                body.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            }
            request.extend_from_slice(&[tag]);
            request.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            request.extend_from_slice(&body);
        }
        if rng.random_bool(0.2) {
            let cut = rng.random_range(0..request.len());
            request.truncate(cut);
        }
        let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
        let status = [b'I', b'T', b'E'][rng.random_range(0..3)];
        let _ = c
            .statements
            .rewrite(&request, status, &mut up.state, &mut out, &mut heard);
        for _ in 0..rng.random_range(0..8) {
            let tag = b"123tTnCIsZENASDdGHc"[rng.random_range(0..19)];
            if up.state.on_reply(tag, &mut heard).is_err() {
                up.state.abandon_replies();
            }
        }
    }
}
