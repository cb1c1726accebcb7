//! TLS on pool connections (`upstream_tls`), against a real PostgreSQL with `ssl = on` and
//! `hostssl`-only TCP rules: verification under `verify-full` and `verify-ca`, the refusals
//! (wrong CA, wrong host, a server without TLS under `require`) reaching the client and the
//! log, and the login policy that keeps a lease's password off an unencrypted wire; and the
//! issuer's admin connection with `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.

mod common;

#[path = "tls/certs.rs"]
mod certs;
#[path = "tls_upstream/issuer.rs"]
mod issuer;

use common::log::Captured;
use common::tls::{password_cluster, socket_superuser, tls_world};
use common::{TestDb, describe, fresh_db, fresh_db_on, psql, start_proxy, try_connect};
use pglease::app::Proxy;
use tokio_postgres::Client;

/// A proxy config for `db` whose one database reaches `host:port` with `tls_lines` (the
/// `upstream_tls*` keys and any other database key).
fn tls_toml(db: &TestDb, host: &str, port: u16, tls_lines: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
shutdown_timeout = "2s"
connect_timeout = "10s"
query_wait_timeout = "10s"

[[users]]
name = "{user}"
password = "{password}"

[[databases]]
name = "{name}"
host = "{host}"
port = {port}
pool_mode = "transaction"
pool_size = 2
credentials = "upstream"
{tls_lines}

[credentials.upstream]
source = "static"
username = "{role}"
password = "{role_password}"
"#,
        user = db.user,
        password = db.password,
        name = db.name,
        role = db.role,
        role_password = db.role_password.expose(),
    )
}

/// The TLS cluster's `upstream_tls*` lines for `mode`, trusting `ca`.
fn verify_lines(mode: &str, ca: &std::path::Path) -> String {
    format!(
        "upstream_tls = \"{mode}\"\nupstream_tls_ca = \"{}\"",
        ca.display()
    )
}

async fn app_client(proxy: &Proxy, db: &TestDb) -> Result<Client, tokio_postgres::Error> {
    try_connect(proxy.local_addr(), &db.user, &db.password, &db.name).await
}

/// `(total, encrypted)` backends of `role`, from pg_stat_activity joined with pg_stat_ssl.
async fn ssl_backends(admin: &Client, role: &str) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
            &[&role],
        )
        .await
        .unwrap_or_else(|e| panic!("pg_stat_ssl query failed: {}", describe(&e)));
    (row.get(0), row.get(1))
}

/// The client's error for a login through `proxy`, which must fail.
async fn refused_login(proxy: &Proxy, db: &TestDb) -> String {
    match app_client(proxy, db).await {
        Ok(_) => panic!("the login through the proxy succeeded"),
        Err(e) => describe(&e),
    }
}

/// Both legs at once: psql with `sslmode=verify-full` and `channel_binding=require` to a proxy
/// with `client_tls = "require"`, which reaches the `hostssl`-only cluster under
/// `upstream_tls = "verify-full"`: the client's session is TLS, and so is the upstream's.
#[tokio::test(flavor = "current_thread")]
async fn a_verified_tls_client_reaches_postgres_over_verified_tls() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "bothlegs").await;
    let files = certs::Files::new("bothlegs");
    let client_ca = certs::Ca::new("pglease client-side test CA");
    files.install_server_cert(&client_ca);
    let root = files.trust("client-ca", &client_ca);
    let toml = tls_toml(
        &db,
        "localhost",
        world.cluster.port(),
        &verify_lines("verify-full", &world.ca),
    )
    .replacen(
        "[[users]]",
        &format!("{}\n\n[[users]]", files.proxy_lines("require")),
        1,
    );
    let proxy = start_proxy(&toml).await;
    let out = psql(proxy.local_addr(), &db.user, &db.password, &db.name)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &root)
        .env("PGCHANNELBINDING", "require")
        .args([
            "-c",
            "\\conninfo",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SSL connection"),
        "client leg not TLS: {stdout}"
    );
    assert!(stdout.ends_with("t\n"), "upstream leg not TLS: {stdout}");
    let (total, encrypted) = ssl_backends(&admin, &db.role).await;
    assert!(
        total > 0 && total == encrypted,
        "{encrypted} of {total} backends on TLS"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn pool_connections_are_encrypted_and_verified_under_verify_full() {
    let logs = Captured::default();
    let _guard = logs.install();
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "vfull").await;
    let lines = verify_lines("verify-full", &world.ca);
    let proxy = start_proxy(&tls_toml(&db, "localhost", world.cluster.port(), &lines)).await;
    let a = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("login over verify-full failed: {}", describe(&e)));
    let b = app_client(&proxy, &db).await.expect("second client");
    // Both pool connections in use at once, and results larger than one TLS record.
    let (ra, rb) = tokio::join!(
        a.query_one("SELECT ssl, length(string_agg(md5(i::text), '')) FROM pg_stat_ssl, generate_series(1, 20000) i WHERE pid = pg_backend_pid() GROUP BY ssl", &[]),
        b.query_one("SELECT ssl, pg_sleep(0.2)::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]),
    );
    let ra = ra.unwrap_or_else(|e| panic!("query a: {}", describe(&e)));
    let rb = rb.unwrap_or_else(|e| panic!("query b: {}", describe(&e)));
    assert!(ra.get::<_, bool>(0) && rb.get::<_, bool>(0));
    assert_eq!(ra.get::<_, i32>(1), 20000 * 32);
    let big = "x".repeat(300_000);
    let echoed: String = a
        .query_one("SELECT $1::text", &[&big])
        .await
        .expect("large parameter")
        .get(0);
    assert_eq!(echoed, big);
    let (total, encrypted) = ssl_backends(&admin, &db.role).await;
    assert!(total >= 1, "no pglease backend found");
    assert_eq!(total, encrypted, "every pglease backend uses TLS");
    // Channel binding to the certificate PostgreSQL showed: PostgreSQL checked the hash.
    assert!(
        logs.text().contains("mechanism=\"SCRAM-SHA-256-PLUS\""),
        "{}",
        logs.text()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "ccert").await;
    let lines = format!(
        "{}\nupstream_tls_cert = \"{}\"\nupstream_tls_key = \"{}\"",
        verify_lines("verify-full", &world.ca),
        world.client_cert.display(),
        world.client_key.display()
    );
    let proxy = start_proxy(&tls_toml(&db, "localhost", world.cluster.port(), &lines)).await;
    let client = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("login with a client certificate: {}", describe(&e)));
    let dn: Option<String> = client
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("client_dn")
        .get(0);
    assert_eq!(dn.as_deref(), Some("/CN=postgres"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_certificate_from_another_ca_is_refused_under_verify_full_and_verify_ca() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    for mode in ["verify-full", "verify-ca"] {
        let logs = Captured::default();
        let _guard = logs.install();
        let db = fresh_db_on(&admin, "wrongca").await;
        let lines = verify_lines(mode, &world.other_ca);
        let proxy = start_proxy(&tls_toml(&db, "localhost", world.cluster.port(), &lines)).await;
        let error = refused_login(&proxy, &db).await;
        assert!(error.contains("08006"), "{mode}: {error}");
        assert!(error.contains("unknown issuer"), "{mode}: {error}");
        assert!(
            error.contains(&db.name),
            "{mode}: names the database: {error}"
        );
        let log = logs.text();
        assert!(
            log.contains("unknown issuer") && log.contains(&db.name),
            "{mode}: the log says why:\n{log}"
        );
        assert_eq!(ssl_backends(&admin, &db.role).await.0, 0);
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_certificate_for_another_host_is_refused_under_verify_full_only() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let logs = Captured::default();
    let _guard = logs.install();
    // The certificate names `localhost`; 127.0.0.1 is the same server under another name.
    let db = fresh_db_on(&admin, "wronghost").await;
    let lines = verify_lines("verify-full", &world.ca);
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", world.cluster.port(), &lines)).await;
    let error = refused_login(&proxy, &db).await;
    assert!(error.contains("name mismatch"), "{error}");
    assert!(error.contains(&db.name), "{error}");
    assert!(logs.text().contains("name mismatch"), "{}", logs.text());
    proxy.shutdown().await;

    let lines = verify_lines("verify-ca", &world.ca);
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", world.cluster.port(), &lines)).await;
    let client = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("verify-ca checks no name: {}", describe(&e)));
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl);
    proxy.shutdown().await;
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back() {
    let db = fresh_db("plainonly").await;
    let port = common::cluster().port();
    let proxy = start_proxy(&tls_toml(
        &db,
        "127.0.0.1",
        port,
        "upstream_tls = \"require\"",
    ))
    .await;
    let error = refused_login(&proxy, &db).await;
    assert!(error.contains("does not accept TLS"), "{error}");
    proxy.shutdown().await;

    // `prefer` (the default) is how `pglease dev` and plaintext servers keep working.
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", port, "")).await;
    let client = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("prefer with a plaintext server: {}", describe(&e)));
    client.simple_query("SELECT 1").await.expect("query");
    proxy.shutdown().await;
}

#[tokio::test]
async fn require_encrypts_without_verifying() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "require").await;
    // The wrong host and no CA: libpq's `require` checks neither.
    let lines = "upstream_tls = \"require\"";
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", world.cluster.port(), lines)).await;
    let client = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("require: {}", describe(&e)));
    client.simple_query("SELECT 1").await.expect("query");
    let (total, encrypted) = ssl_backends(&admin, &db.role).await;
    assert!(total >= 1 && total == encrypted);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_cleartext_password_request_without_tls_is_refused_unless_allowed() {
    let cluster = password_cluster();
    let admin = socket_superuser(cluster).await;
    let logs = Captured::default();
    let _guard = logs.install();
    let db = fresh_db_on(&admin, "cleartext").await;
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", cluster.port(), "")).await;
    let error = refused_login(&proxy, &db).await;
    assert!(error.contains("cleartext password"), "{error}");
    assert!(error.contains("allow_plaintext_password"), "{error}");
    assert!(
        logs.text().contains("cleartext password"),
        "{}",
        logs.text()
    );
    // The password, had it gone out, would have logged in: no backend ever did.
    let logged_in: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&db.role],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(logged_in, 0);
    assert!(!logs.text().contains(db.role_password.expose()));
    proxy.shutdown().await;

    let opt_in = "allow_plaintext_password = true";
    let proxy = start_proxy(&tls_toml(&db, "127.0.0.1", cluster.port(), opt_in)).await;
    let client = app_client(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("with the opt-in: {}", describe(&e)));
    client.simple_query("SELECT 1").await.expect("query");
    proxy.shutdown().await;
}

/// A closed pool connection sends Terminate through TLS, as plaintext ones always did.
#[tokio::test]
async fn retired_tls_connections_say_goodbye() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "goodbye").await;
    let lines = verify_lines("verify-full", &world.ca);
    let proxy = start_proxy(&tls_toml(&db, "localhost", world.cluster.port(), &lines)).await;
    let client = app_client(&proxy, &db).await.expect("login");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    drop(client);
    proxy.shutdown().await;
    let gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while admin
        .query_one(gone, &[&pid])
        .await
        .expect("count")
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            std::time::Instant::now() < until,
            "backend {pid} never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Without a Terminate inside TLS, PostgreSQL logs "could not receive data from client:
    // Connection reset by peer" for the backend.
    let log = std::fs::read_to_string(world.cluster.log_path()).expect("server log");
    let marker = format!("[{pid}]");
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&marker))
        .filter(|l| l.contains("could not receive data") || l.contains("unexpected EOF"))
        .collect();
    assert!(noisy.is_empty(), "{}", noisy.join("\n"));
}

/// pgbench through TLS pool connections: its COPY of `-i` (bulk client-to-upstream bytes) and
/// twenty clients over a pool of two, with the extended protocol, all without a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_over_tls_pool_connections() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let db = fresh_db_on(&admin, "bench").await;
    let lines = verify_lines("verify-full", &world.ca);
    let proxy = start_proxy(&tls_toml(&db, "localhost", world.cluster.port(), &lines)).await;
    let addr = proxy.local_addr();
    for args in [
        &["-i", "-q", "-s", "1"][..],
        &["-M", "extended", "-c", "20", "-j", "2", "-t", "50"][..],
    ] {
        let out = common::pgbench(addr, &db.user, &db.password, &db.name)
            .args(args)
            .output()
            .await
            .expect("pgbench runs");
        assert!(
            out.status.success(),
            "pgbench {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let accounts: i64 = admin_count(&world.cluster, &db.name).await;
    assert_eq!(accounts, 100_000);
    let (total, encrypted) = ssl_backends(&admin, &db.role).await;
    assert_eq!(total, encrypted);
    proxy.shutdown().await;
}

/// Rows in `pgbench_accounts` of database `name`, over the cluster's unix socket.
async fn admin_count(cluster: &pglease::dev::cluster::Cluster, name: &str) -> i64 {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user(cluster.superuser())
        .password(cluster.superuser_password().expose())
        .dbname(name);
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .expect("count")
        .get(0)
}
