//! TLS between clients and the proxy: `client_tls` require/allow with psql (`sslmode =
//! verify-full`, `channel_binding = require`) and tokio-postgres over rustls, channel
//! binding checks, the refusal of bytes sent ahead of the handshake, and certificate files
//! replaced on disk.

mod common;

#[path = "tls/certs.rs"]
mod certs;
#[path = "tls/connector.rs"]
mod connector;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use certs::{Ca, Files};
use common::{TestDb, client_config, fresh_db, proxy_toml, psql, start_proxy, try_connect};
use connector::{Binding, Rustls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::error::SqlState;

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Longer than any check here should take, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// psql through the proxy with libpq's TLS settings; returns (success, stdout, stderr).
async fn psql_tls(
    addr: SocketAddr,
    db: &TestDb,
    sslmode: &str,
    rootcert: Option<&std::path::Path>,
    channel_binding: &str,
) -> (bool, String, String) {
    let mut cmd = psql(addr, &db.user, &db.password, &db.name);
    cmd.env("PGSSLMODE", sslmode)
        .env("PGCHANNELBINDING", channel_binding)
        .args(["-c", "\\conninfo", "-c", "select current_user"]);
    if let Some(path) = rootcert {
        cmd.env("PGSSLROOTCERT", path);
    }
    let out = cmd.output().await.expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// tokio-postgres over rustls trusting `ca_pem`, requiring channel binding unless `binding`
/// is [`Binding::Absent`].
async fn connect_tls(
    addr: SocketAddr,
    db: &TestDb,
    ca_pem: &str,
    binding: Binding,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = client_config(addr, &db.user, &db.password, &db.name);
    config.ssl_mode(SslMode::Require);
    if !matches!(binding, Binding::Absent) {
        config.channel_binding(ChannelBinding::Require);
    }
    let (client, connection) = config.connect(Rustls::new(ca_pem, binding)).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn verify_full_and_channel_binding_require_log_in_over_tls() {
    let db = fresh_db("tlsverify").await;
    let files = Files::new("verify");
    let ca = Ca::new("pglease test CA");
    files.install_server_cert(&ca);
    let root = files.trust("ca", &ca);
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;

    let (ok, stdout, stderr) = psql_tls(
        proxy.local_addr(),
        &db,
        "verify-full",
        Some(&root),
        "require",
    )
    .await;
    assert!(ok, "psql over TLS failed: {stderr}");
    assert!(stdout.contains("SSL connection"), "not TLS: {stdout}");
    assert!(stdout.ends_with(&format!("{}\n", db.role)), "{stdout}");

    // tokio-postgres with channel binding required: PLUS with the right end-point hash.
    let client = connect_tls(proxy.local_addr(), &db, &ca.pem(), Binding::Real)
        .await
        .unwrap_or_else(|e| panic!("rustls client refused: {}", common::describe(&e)));
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_verification() {
    let db = fresh_db("tlswrongca").await;
    let files = Files::new("wrongca");
    files.install_server_cert(&Ca::new("pglease test CA"));
    let other = files.trust("other", &Ca::new("some other CA"));
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let (ok, _, stderr) = psql_tls(
        proxy.local_addr(),
        &db,
        "verify-full",
        Some(&other),
        "prefer",
    )
    .await;
    assert!(!ok, "psql trusted a certificate from another CA");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
}

#[tokio::test]
async fn require_refuses_plaintext_clients_with_28000() {
    let db = fresh_db("tlsrequire").await;
    let files = Files::new("require");
    files.install_server_cert(&Ca::new("pglease test CA"));
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let Err(err) = try_connect(proxy.local_addr(), &db.user, &db.password, &db.name).await else {
        panic!("a plaintext client got in under client_tls = require");
    };
    let db_error = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        db_error.code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    assert!(
        db_error.message().contains("no encryption"),
        "{}",
        db_error.message()
    );
    let (ok, _, stderr) = psql_tls(proxy.local_addr(), &db, "disable", None, "disable").await;
    assert!(!ok && stderr.contains("no encryption"), "{stderr}");
}

#[tokio::test]
async fn allow_serves_tls_and_plaintext_clients() {
    let db = fresh_db("tlsallow").await;
    let files = Files::new("allow");
    let ca = Ca::new("pglease test CA");
    files.install_server_cert(&ca);
    let root = files.trust("ca", &ca);
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("allow"),
    ))
    .await;
    let addr = proxy.local_addr();

    let (ok, stdout, stderr) = psql_tls(addr, &db, "verify-full", Some(&root), "require").await;
    assert!(ok && stdout.contains("SSL connection"), "{stdout} {stderr}");
    let (ok, stdout, stderr) = psql_tls(addr, &db, "disable", None, "disable").await;
    assert!(ok, "plaintext psql refused under allow: {stderr}");
    assert!(!stdout.contains("SSL connection"), "{stdout}");
    let plain = try_connect(addr, &db.user, &db.password, &db.name)
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    plain.simple_query("select 1").await.unwrap();
}

#[tokio::test]
async fn a_wrong_channel_binding_is_refused() {
    let db = fresh_db("tlsbinding").await;
    let files = Files::new("binding");
    let ca = Ca::new("pglease test CA");
    files.install_server_cert(&ca);
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let Err(err) = connect_tls(proxy.local_addr(), &db, &ca.pem(), Binding::Wrong).await else {
        panic!("a wrong channel binding was accepted");
    };
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {err}"));
    assert_eq!(db_error.code(), &SqlState::PROTOCOL_VIOLATION);
    assert!(
        db_error.message().contains("channel binding check failed"),
        "{}",
        db_error.message()
    );
    // A TLS client that cannot bind at all says so ("n") and may log in, as with PostgreSQL.
    let client = connect_tls(proxy.local_addr(), &db, &ca.pem(), Binding::Absent)
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    client.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_and_results_cross_tls_intact() {
    let files = Files::new("large");
    let ca = Ca::new("pglease test CA");
    files.install_server_cert(&ca);
    for mode in ["transaction", "session"] {
        let db = fresh_db(&format!("tlslarge{mode}")).await;
        let proxy = start_proxy(&proxy_toml(&db, mode, 2, &files.proxy_lines("require"))).await;
        let client = connect_tls(proxy.local_addr(), &db, &ca.pem(), Binding::Real)
            .await
            .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
        // Several relay buffers' worth each way, so rustls' buffering is exercised.
        let big = "y".repeat(3_000_000);
        let len: i32 = client
            .query_one("select length($1::text)", &[&big])
            .await
            .unwrap()
            .get(0);
        assert_eq!(len, 3_000_000, "{mode}");
        let text: String = client
            .query_one("select repeat('x', 4000000)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(text.len(), 4_000_000, "{mode}");
        let rows = client
            .query("select g from generate_series(1, 100000) g", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), 100_000, "{mode}");
        assert_eq!(rows[99_999].get::<_, i32>(0), 100_000, "{mode}");
    }
}

/// A StartupMessage for `db`'s user, as a plaintext client would send it.
fn startup_message(db: &TestDb) -> BytesMut {
    let mut buf = BytesMut::new();
    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];
    postgres_protocol::message::frontend::startup_message(params, &mut buf).unwrap();
    buf
}

/// Everything the proxy sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection")
        .ok();
    all
}

#[tokio::test]
async fn bytes_sent_ahead_of_the_tls_handshake_are_refused() {
    let db = fresh_db("tlsinject").await;
    let files = Files::new("inject");
    files.install_server_cert(&Ca::new("pglease test CA"));
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("allow"),
    ))
    .await;

    // Plaintext riding along with the SSLRequest: refused before any `S`.
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut injected = BytesMut::from(&SSL_REQUEST[..]);
    injected.extend_from_slice(&startup_message(&db));
    stream.write_all(&injected).await.unwrap();
    let reply = read_to_close(&mut stream).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply).contains("08P01"),
        "{reply:?}"
    );

    // Plaintext after the `S`: taken as TLS records, so the handshake fails and the login
    // never starts (no Authentication request, nothing in the clear but a TLS alert).
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    stream.write_all(&startup_message(&db)).await.unwrap();
    let reply = read_to_close(&mut stream).await;
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "not a TLS alert: {reply:?}"
    );
}

#[tokio::test]
async fn a_cancel_request_over_tls_cancels() {
    let db = fresh_db("tlscancel").await;
    let files = Files::new("cancel");
    let ca = Ca::new("pglease test CA");
    files.install_server_cert(&ca);
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let client = connect_tls(proxy.local_addr(), &db, &ca.pem(), Binding::Real)
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The token keeps the connection's sslmode: the CancelRequest goes over TLS too.
    token
        .cancel_query(Rustls::new(&ca.pem(), Binding::Real))
        .await
        .expect("cancel request sent");
    let result = tokio::time::timeout(Duration::from_secs(40), sleeper)
        .await
        .expect("the cancelled query returned well before pg_sleep(60) would")
        .unwrap();
    let err = result.expect_err("pg_sleep(60) was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
}

#[tokio::test]
async fn gssenc_is_declined_and_ssl_may_follow() {
    let db = fresh_db("tlsgss").await;
    let files = Files::new("gss");
    files.install_server_cert(&Ca::new("pglease test CA"));
    let proxy = start_proxy(&proxy_toml(
        &db,
        "transaction",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    // GSSENCRequest: length 8, code 80877104.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    stream.write_all(&SSL_REQUEST).await.unwrap();
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_the_next_client() {
    let db = fresh_db("tlsreload").await;
    let files = Files::new("reload");
    let first_ca = Ca::new("pglease first test CA");
    let second_ca = Ca::new("pglease second test CA, longer");
    files.install_server_cert(&first_ca);
    let first_root = files.trust("first", &first_ca);
    let second_root = files.trust("second", &second_ca);
    let proxy = start_proxy(&proxy_toml(
        &db,
        "session",
        2,
        &files.proxy_lines("require"),
    ))
    .await;
    let addr = proxy.local_addr();
    let early = connect_tls(addr, &db, &first_ca.pem(), Binding::Real)
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));

    files.install_server_cert(&second_ca);
    // The files are looked at again at most once a second.
    tokio::time::sleep(tls_recheck()).await;
    let (ok, stdout, stderr) =
        psql_tls(addr, &db, "verify-full", Some(&second_root), "require").await;
    assert!(
        ok && stdout.contains("SSL connection"),
        "new cert not served: {stderr}"
    );
    let (ok, _, stderr) = psql_tls(addr, &db, "verify-full", Some(&first_root), "prefer").await;
    assert!(!ok, "the old certificate is still served");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    // A channel-bound login against the new certificate.
    connect_tls(addr, &db, &second_ca.pem(), Binding::Real)
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));

    // A broken file keeps the certificate in service.
    std::fs::write(files.cert(), "not a certificate").unwrap();
    tokio::time::sleep(tls_recheck()).await;
    let (ok, _, stderr) = psql_tls(addr, &db, "verify-full", Some(&second_root), "require").await;
    assert!(
        ok,
        "a broken file replaced the working certificate: {stderr}"
    );

    // The session opened before all this still works.
    let n: i32 = early.query_one("select 42", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

/// A little longer than the proxy's recheck interval.
fn tls_recheck() -> Duration {
    pglease::tls::server::RECHECK + Duration::from_millis(200)
}
