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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_logs_in_once_per_pooled_connection_reusing_the_proof() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("logins").await;
    let admin = superuser().await;
    // A lease that only rotates when asked, so the test decides when.
    let toml = issuer_toml(&db, "logx", "transaction")
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials["rotating"].clone();

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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sessions(&admin, &db.name).await;
    let old_role = creds.state().username.expect("a published lease");

    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(30);
    // Done once the old lease is drained and revoked: its role is dropped.
    while prefixed_roles(&admin, "logx").await.contains(&old_role) {
        assert!(
            Instant::now() < until,
            "the old lease did not drain: {:?}",
            creds.state()
        );
        for c in &clients {
            c.simple_query("SELECT 1")
                .await
                .expect("query during rotation");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
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
