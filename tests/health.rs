//! `/healthz` and `/readyz` on the admin endpoint: ready while healthy, not ready before a
//! lease's cliff during a source outage and while shutting down, and an endpoint that a slow
//! or oversized request cannot take down.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http::{exchange, get, sample};
use common::*;
use tokio::io::AsyncWriteExt;

const ADMIN: &str = "admin_listen = \"127.0.0.1:0\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_proxy_is_alive_and_ready_and_unknown_paths_are_404() {
    let db = fresh_db("health_ok").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, ADMIN)).await;
    let admin = proxy.admin_addr().expect("admin endpoint");
    let health = get(admin, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // Ready means holding a lease: the first one is fetched in the background once the
    // proxy listens, so under load it may come after the first request here.
    let creds = proxy.shared().credentials()["upstream"].clone();
    creds
        .wait_current(Duration::from_secs(30))
        .await
        .expect("a lease");
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(get(admin, "/nope").await.status, 404);
    assert_eq!(get(admin, "/metricsx").await.status, 404);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_listen_means_no_endpoint() {
    let db = fresh_db("health_none").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    assert!(proxy.admin_addr().is_none());
    proxy.shutdown().await;
}

/// A file for the `file` source, removed when the test ends.
struct CredentialsFile(PathBuf);

impl CredentialsFile {
    fn write(db: &TestDb, expires_at: SystemTime) -> CredentialsFile {
        let path = std::env::temp_dir().join(format!(
            "pglease-health-{}-{}.json",
            std::process::id(),
            db.name
        ));
        let expires = expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let doc = format!(
            r#"{{"username":"{}","password":"{}","expires_at":{expires}}}"#,
            db.role,
            db.role_password.expose()
        );
        std::fs::write(&path, doc).unwrap();
        CredentialsFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for CredentialsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_before_the_cliff_during_a_source_outage() {
    let db = fresh_db("health_outage").await;
    // A 30 s credential: its cliff (hard deadline) falls 3 s before expiry, and readiness
    // turns false a twentieth of the lifetime (1.5 s) before that.
    let lifetime = Duration::from_secs(30);
    let file = CredentialsFile::write(&db, SystemTime::now() + lifetime);
    let source = format!("source = \"file\"\npath = \"{}\"", file.path().display());
    let toml = pooled_toml(&db, "transaction", 2, ADMIN, "filed", &source);
    let proxy = start_proxy(&toml).await;
    let admin = proxy.admin_addr().unwrap();
    let creds = proxy.shared().credentials()["filed"].clone();
    let lease = creds
        .wait_current(Duration::from_secs(10))
        .await
        .expect("a lease");
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    client.simple_query("SELECT 1").await.expect("query");
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "not ready while healthy: {}", ready.body);

    // Outage: the source has nothing to give any more.
    drop(file);
    let cliff = match creds.deadline(lease.generation) {
        pglease::credentials::Deadline::At(at) => at,
        other => panic!("a 30 s lease has no cliff: {other:?}"),
    };
    let first_503 = loop {
        let reply = get(admin, "/readyz").await;
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            SystemTime::now() < cliff,
            "still ready past the lease's cliff"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        first_503
            .body
            .contains("credentials \"filed\": lease within")
            && first_503.body.contains("of its cliff (margin 1s)"),
        "readiness did not turn false before the cliff: {}",
        first_503.body
    );
    let metrics = get(admin, "/metrics").await.body;
    assert_eq!(sample(&metrics, "pglease_ready"), Some(0.0));
    let left = sample(
        &metrics,
        "pglease_lease_seconds_to_cliff{credentials=\"filed\"}",
    )
    .expect("seconds to cliff");
    assert!(left < 2.0, "{left}s to the cliff, yet not ready");
    assert!(
        sample(
            &metrics,
            "pglease_lease_rotations_total{credentials=\"filed\",result=\"failed\"}"
        ) >= Some(1.0),
        "the failed rotations are not counted:\n{metrics}"
    );
    // The open connection keeps serving: not ready is not down.
    client
        .simple_query("SELECT 1")
        .await
        .expect("query after unready");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_is_not_ready_while_the_endpoint_keeps_answering() {
    let db = fresh_db("health_shutdown").await;
    // pooled_toml gives shutdown_timeout = "2s": an open transaction holds the shutdown.
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, ADMIN)).await;
    let admin = proxy.admin_addr().unwrap();
    let (client, _conn) =
        try_connect_with_task(proxy.local_addr(), &db.user, &db.password, &db.name)
            .await
            .expect("connect");
    client.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(get(admin, "/readyz").await.status, 200);
    let stopping = tokio::spawn(proxy.shutdown());
    let until = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = get(admin, "/readyz").await;
        if reply.status == 503 {
            break reply;
        }
        assert!(Instant::now() < until, "never unready during shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reply.body, "not ready: shutting down\n");
    assert!(
        !stopping.is_finished(),
        "the shutdown did not wait for the transaction"
    );
    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200, "no scrape during shutdown");
    assert_eq!(sample(&metrics.body, "pglease_ready"), Some(0.0));
    assert_eq!(get(admin, "/healthz").await.status, 200);
    stopping.await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the endpoint outlived the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_do_not_block_the_endpoint() {
    let db = fresh_db("health_hostile").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, ADMIN)).await;
    let admin = proxy.admin_addr().unwrap();
    // Clients that start a request and never finish it.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    assert_eq!(get(admin, "/healthz").await.status, 200);
    // A request larger than the endpoint reads (16 KiB; hyper alone would take ~400 KiB) is
    // refused, not buffered.
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\nConnection: close\r\n\r\n");
    let answer = exchange(admin, &big).await.unwrap_or_default();
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 64 KiB request was accepted: {}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(get(admin, "/healthz").await.status, 200);
    // A client that never finishes its headers is disconnected after the header timeout
    // (10 s), long before the connection's lifetime limit (60 s).
    let mut stalled = slow.pop().unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(25),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut byte),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a stalled request kept its connection: {closed:?}"
    );
    drop(slow);
    proxy.shutdown().await;
}
