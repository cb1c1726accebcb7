//! The pool's limits: `server_lifetime` retires upstreams only when they come back,
//! `min_pool_size` keeps upstreams open with no client at all, and the reserve pool lends a
//! waiting client an extra upstream that closes once idle.

use std::time::Duration;

use super::common::{connect_app, fresh_db, proxy_toml, start_proxy, superuser, upstream_count};
use super::{WINDOW, first_value};

/// Polls `role`'s upstream count until `wanted` says yes; panics after [`WINDOW`].
async fn wait_for_upstreams(role: &str, what: &str, wanted: impl Fn(i64) -> bool) {
    let admin = superuser().await;
    let waited = tokio::time::timeout(WINDOW, async {
        loop {
            let n = upstream_count(&admin, role).await;
            if wanted(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let last = upstream_count(&admin, role).await;
    waited.unwrap_or_else(|_| panic!("{what}: still {last} upstreams"))
}

#[tokio::test]
async fn server_lifetime_retires_an_upstream_when_it_comes_back_never_mid_transaction() {
    let db = fresh_db("lifetime").await;
    for mode in ["transaction", "session"] {
        let toml = proxy_toml(&db, mode, 1, "server_lifetime = \"1s\"");
        let proxy = start_proxy(&toml).await;
        let client = connect_app(&proxy, &db).await;
        client.batch_execute("BEGIN").await.unwrap();
        let pid = first_value(&client, "SELECT pg_backend_pid()").await;
        // Past its lifetime (1 s + 10% jitter at most) inside the transaction: kept.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            first_value(&client, "SELECT pg_backend_pid()").await,
            pid,
            "{mode}"
        );
        client.batch_execute("COMMIT").await.unwrap();
        if mode == "session" {
            // Session mode gives the upstream back when the client leaves.
            assert_eq!(first_value(&client, "SELECT pg_backend_pid()").await, pid);
            drop(client);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let next = connect_app(&proxy, &db).await;
        let fresh = first_value(&next, "SELECT pg_backend_pid()").await;
        assert_ne!(
            fresh, pid,
            "{mode}: an upstream past server_lifetime was reused"
        );
    }
}

#[tokio::test]
async fn min_pool_size_opens_upstreams_with_no_client_and_keeps_them_past_idle_timeout() {
    let db = fresh_db("minpool").await;
    let toml = proxy_toml(&db, "transaction", 4, "idle_timeout = \"1s\"")
        .replace("pool_size = 4\n", "pool_size = 4\nmin_pool_size = 2\n");
    let _proxy = start_proxy(&toml).await;
    wait_for_upstreams(&db.role, "min_pool_size = 2", |n| n >= 2).await;
    // Well past idle_timeout, nobody having used them: still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admin = superuser().await;
    assert_eq!(upstream_count(&admin, &db.role).await, 2);
}

#[tokio::test]
async fn a_client_that_waited_reserve_pool_timeout_gets_an_extra_upstream_closed_once_idle() {
    let db = fresh_db("reserve").await;
    let lines = "reserve_pool_timeout = \"1s\"\nquery_wait_timeout = \"60s\"";
    let toml = proxy_toml(&db, "transaction", 1, lines)
        .replace("pool_size = 1\n", "pool_size = 1\nreserve_pool_size = 1\n");
    let proxy = start_proxy(&toml).await;
    let holder = connect_app(&proxy, &db).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let held = first_value(&holder, "SELECT pg_backend_pid()").await;

    // The pool's one upstream is held; without the reserve this waits 60 s.
    let waiter = connect_app(&proxy, &db).await;
    let started = tokio::time::Instant::now();
    let extra = tokio::time::timeout(WINDOW, first_value(&waiter, "SELECT pg_backend_pid()"))
        .await
        .expect("a waiting client got no reserve upstream");
    assert_ne!(extra, held);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the reserve was used before reserve_pool_timeout"
    );
    // Idle again, the extra one closes; the held one stays.
    wait_for_upstreams(&db.role, "the idle reserve upstream", |n| n == 1).await;
    assert_eq!(first_value(&holder, "SELECT pg_backend_pid()").await, held);
    holder.batch_execute("COMMIT").await.unwrap();
}
