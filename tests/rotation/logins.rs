//! What a rotation costs PostgreSQL in logins: one per pooled connection, with the login
//! that proved the new lease serving as the first replacement instead of being thrown away.

use super::*;

/// Sessions PostgreSQL has counted for `db` (every backend flushes its own count as soon as
/// it first goes idle after logging in, or when it exits).
async fn sessions(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .expect("clear the stats snapshot");
    admin
        .query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await
        .expect("reading pg_stat_database")
        .get(0)
}

/// Asks `creds` for a rotation and waits until the old lease is drained and revoked (its role
/// dropped), running `meanwhile` between looks. Returns the session count of `db` from just
/// before the rotation; the count is settled again before returning.
async fn rotate_until_drained(
    admin: &tokio_postgres::Client,
    creds: &pglease::credentials::Credentials,
    db: &str,
    prefix: &str,
    mut meanwhile: impl AsyncFnMut(),
) -> i64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sessions(admin, db).await;
    let old_role = creds.state().username.expect("a published lease");
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(30);
    while prefixed_roles(admin, prefix).await.contains(&old_role) {
        assert!(
            Instant::now() < until,
            "the old lease did not drain: {:?}",
            creds.state()
        );
        meanwhile().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    before
}

/// A proxy on issued leases that only rotate when asked, so the test decides when.
async fn rotating_on_request(
    db: &TestDb,
    prefix: &str,
    mode: &str,
) -> (pglease::app::Proxy, pglease::credentials::Credentials) {
    let toml = issuer_toml(db, prefix, mode)
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    (proxy, creds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_logs_in_once_per_pooled_connection_reusing_the_proof() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("logins").await;
    let admin = superuser().await;
    let (proxy, creds) = rotating_on_request(&db, "logx", "transaction").await;

    // Fill the pool: four clients each hold a transaction, so four upstreams open.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(proxy.local_addr(), &db.user, &db.password, &db.name).await);
    }
    for c in &clients {
        c.batch_execute("BEGIN; SELECT 1").await.expect("begin");
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    let before = rotate_until_drained(&admin, &creds, &db.name, "logx", async || {
        for c in &clients {
            c.simple_query("SELECT 1")
                .await
                .expect("query during rotation");
        }
    })
    .await;
    let logins = sessions(&admin, &db.name).await - before;
    assert_eq!(
        logins, 4,
        "a rotation of a pool of 4 should cost exactly 4 logins, the proving one included"
    );
    let pool = proxy.shared().pool(&db.name, &db.user).expect("the pool");
    assert_eq!(
        pool.pool.status().0,
        4,
        "the pool shrank while its connections were replaced"
    );
    for c in &clients {
        let user = first_value(c, "SELECT current_user").await;
        assert!(user.starts_with("logx_"), "not on an issued role: {user}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_clients_move_one_replacement_at_a_time() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("smove").await;
    let admin = superuser().await;
    let (proxy, creds) = rotating_on_request(&db, "smov", "session").await;

    // Four idle sessions fill the session-mode pool, each with its own setting.
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
        c.batch_execute(&format!("SET application_name = 'client{i}'"))
            .await
            .expect("set");
        clients.push(c);
    }
    let old_role = creds.state().username.expect("a published lease");
    let before = rotate_until_drained(&admin, &creds, &db.name, "smov", async || {}).await;
    let new_role = creds.state().username.expect("the new lease");
    assert_ne!(new_role, old_role);
    assert_eq!(
        sessions(&admin, &db.name).await - before,
        4,
        "moving 4 sessions should cost exactly 4 logins, the proving one included"
    );
    // The replacements were opened at the drain's pace, not all at once on the clients'
    // paths when the lease was published (the pace is 250 ms for a lease this long).
    let started: f64 = admin
        .query_one(
            "SELECT extract(epoch FROM max(backend_start) - min(backend_start))::float8 \
             FROM pg_stat_activity WHERE usename = $1",
            &[&new_role],
        )
        .await
        .expect("backend start times")
        .get(0);
    assert!(
        started >= 0.4,
        "the 4 replacements logged in within {started:.3} s of each other: a burst"
    );
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(first_value(c, "SELECT current_user").await, new_role);
        assert_eq!(
            first_value(c, "SHOW application_name").await,
            format!("client{i}")
        );
    }
    proxy.shutdown().await;
}
