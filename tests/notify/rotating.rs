//! LISTEN/NOTIFY while leases rotate every few seconds: a notifier sends numbered
//! notifications while the embedded issuer replaces its lease about every 2.4 s, until at
//! least three issued roles have served the proxy; the listener must get every number exactly
//! once and in order. Transaction mode: through the pool's listener connection, handed over
//! to each new lease. Session mode: the listener's own upstream, moved to each new lease.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::common::{TestDb, cluster, connect_app, fresh_db, pooled_toml, start_proxy, superuser};
use super::listening;

/// Issued roles that must have served: two rotations at least.
const ROLES_WANTED: usize = 3;

/// The most time spent sending (a lease is replaced every 2.4 s).
const SEND_FOR_AT_MOST: Duration = Duration::from_secs(90);

/// Rotations every few seconds starve each other on a two-core machine: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn issuer_toml(db: &TestDb, prefix: &str, mode: &str) -> String {
    let source = format!(
        r#"source = "issuer"
admin_url = "{admin}"
member_of = ["{role}"]
act_as = "{role}"
prefix = "{prefix}"
ttl = "8s"
max_ttl = "30s"
rotate_at = 0.3
safety_margin = "3s""#,
        admin = cluster().url(&db.name).expose(),
        role = db.role,
    );
    pooled_toml(db, mode, 4, "", "rotating", &source)
}

async fn every_notification_once_in_order(mode: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let prefix = format!("ntf_{}", &mode[..1]);
    let db = fresh_db(&prefix).await;
    let proxy = start_proxy(&issuer_toml(&db, &prefix, mode)).await;
    let mut listener = listening(proxy.local_addr(), &db).await;
    listener
        .client
        .batch_execute("LISTEN numbers")
        .await
        .expect("LISTEN");
    let sender = connect_app(&proxy, &db).await;
    let admin = superuser().await;
    let pattern = format!("{prefix}_");
    let mut roles = BTreeSet::new();
    let (mut sent, started) = (0u32, Instant::now());
    while (roles.len() < ROLES_WANTED || sent < 100) && started.elapsed() < SEND_FOR_AT_MOST {
        sender
            .batch_execute(&format!("NOTIFY numbers, '{sent}'"))
            .await
            .expect("NOTIFY");
        sent += 1;
        let rows = admin
            .query(
                "SELECT DISTINCT usename::text FROM pg_stat_activity \
                 WHERE starts_with(usename::text, $1)",
                &[&pattern],
            )
            .await
            .expect("sampling pg_stat_activity");
        roles.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        roles.len() >= ROLES_WANTED,
        "only {} issued roles served: {roles:?}",
        roles.len()
    );
    let mut got = Vec::with_capacity(sent as usize);
    while got.len() < sent as usize {
        let n = listener.next().await;
        got.push(n.payload().parse::<u32>().expect("a number"));
    }
    let expected: Vec<u32> = (0..sent).collect();
    assert_eq!(
        got, expected,
        "{mode} mode: not every number exactly once, in order"
    );
    // Nothing extra after the last one: a marker NOTIFY or a repeat would show here.
    sender
        .batch_execute("NOTIFY numbers, 'end'")
        .await
        .expect("NOTIFY");
    assert_eq!(listener.next().await.payload(), "end");
    println!(
        "{mode} mode: {sent} notifications over {} issued roles",
        roles.len()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn transaction_mode_listener_follows_rotation() {
    every_notification_once_in_order("transaction").await;
}

#[tokio::test]
async fn session_mode_listener_moves_without_losing_one() {
    every_notification_once_in_order("session").await;
}
