//! The pool's limits: `server_lifetime` retires upstreams only when they come back,
//! `min_pool_size` keeps upstreams open with no client at all, and the reserve pool lends a
//! waiting client an extra upstream that closes once idle; a checkout never overtakes a
//! client queued before it.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use pglease::credentials::static_source::StaticSource;
use pglease::credentials::{Credentials, Lifecycle};
use pglease::pool::{Pool, PoolInstruments, PoolSettings};
use pglease::upstream::{UpstreamTarget, UpstreamTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::common::{
    TestDb, connect_app, fresh_db, proxy_toml, start_proxy, superuser, upstream_addr,
    upstream_count,
};
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

/// A pool of one upstream on `db`'s role, built directly on the cluster (no proxy), with a
/// reserve of `reserve` that opens only after a minute.
async fn one_upstream_pool(db: &TestDb, reserve: usize) -> (Pool, CancellationToken) {
    let source = StaticSource::new(db.role.clone(), db.role_password.clone());
    let life = Lifecycle {
        rotate_at: 0.9,
        safety_margin: None,
        renew: false,
        max_ttl: None,
    };
    let (credentials, rotator) = Credentials::new("fair", Arc::new(source), life);
    let stop = CancellationToken::new();
    rotator.start(None, &TaskTracker::new(), stop.clone());
    let addr = upstream_addr();
    let target = UpstreamTarget {
        host: addr.ip().to_string(),
        port: addr.port(),
        dbname: db.name.clone(),
        application_name: "pglease-test".into(),
        connect_timeout: WINDOW,
        database: db.name.clone(),
        tls: UpstreamTls::default(),
    };
    let settings = PoolSettings {
        size: 1,
        wait_timeout: WINDOW,
        idle_timeout: WINDOW,
        min_size: 0,
        reserve_size: reserve,
        reserve_timeout: Duration::from_secs(60),
        lifetime: None,
    };
    let pool = Pool::new(target, credentials, settings, PoolInstruments::default());
    (pool, stop)
}

/// The checkout's first, non-blocking attempt must not take an upstream given back while a
/// client is queued for it: the queued client gets it, and a newcomer queues behind.
#[tokio::test]
async fn a_released_upstream_goes_to_the_queued_client_not_to_a_newcomer() {
    let db = fresh_db("fair").await;
    for reserve in [0, 1] {
        let (pool, stop) = one_upstream_pool(&db, reserve).await;
        let held = pool.checkout().await.expect("the first checkout");
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout().await.map(|up| up.upstream().cancel.pid) }
        });
        // This test's runtime has one thread: yielding lets the queued checkout register.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !queued.is_finished(),
            "reserve {reserve}: the pool has one upstream"
        );
        let pid = held.upstream().cancel.pid;
        drop(held);
        // Polled once before the queued task runs again: the upstream is already its.
        let mut newcomer = pin!(pool.checkout());
        tokio::select! {
            biased;
            _ = &mut newcomer => panic!("reserve {reserve}: a newcomer overtook a queued client"),
            () = std::future::ready(()) => {}
        }
        let got = tokio::time::timeout(WINDOW, queued)
            .await
            .expect("queued client served");
        assert_eq!(
            got.unwrap().expect("its checkout"),
            pid,
            "reserve {reserve}"
        );
        let next = tokio::time::timeout(WINDOW, newcomer)
            .await
            .expect("newcomer served");
        assert_eq!(next.expect("its checkout").upstream().cancel.pid, pid);
        pool.close();
        stop.cancel();
    }
}
