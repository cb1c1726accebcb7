//! Every limit and timeout against a real PostgreSQL, each test built so that it fails if its
//! limit did nothing: `max_client_conn` (refused before authentication, cancels still served)
//! and the client timeouts here; the pool's limits (`server_lifetime`, `min_pool_size`, the
//! reserve pool) in `limits/pool.rs`.

mod common;

#[path = "limits/pool.rs"]
mod pool;

use std::time::Duration;

use common::{
    client_config, connect_app, describe, fresh_db, proxy_toml, start_proxy, try_connect,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// Far longer than any limit these tests set, so a slow machine never fails them; a limit
/// that did nothing runs into it.
const WINDOW: Duration = Duration::from_secs(20);

/// The SQLSTATE of a server error, or the error itself when it is not one.
fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.code().code().to_owned())
}

/// A client through the proxy with its connection task, whose result is the FATAL error the
/// proxy ended it with.
async fn watched(proxy: &pglease::app::Proxy, db: &common::TestDb) -> (Client, Ended) {
    let config = client_config(proxy.local_addr(), &db.user, &db.password, &db.name);
    let (client, conn) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting failed: {}", describe(&e)));
    (client, Ended(tokio::spawn(conn)))
}

/// How a watched connection ended.
struct Ended(JoinHandle<Result<(), tokio_postgres::Error>>);

impl Ended {
    /// The FATAL error the proxy sent (code and message); panics if none came in [`WINDOW`].
    async fn fatal(self) -> (String, String) {
        let ended = tokio::time::timeout(WINDOW, self.0)
            .await
            .expect("the proxy did not end the connection")
            .expect("connection task panicked");
        let e = ended.expect_err("the connection ended without an error");
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("not a server error: {e}"));
        (db.code().code().to_owned(), db.message().to_owned())
    }
}

#[tokio::test]
async fn max_client_conn_refuses_before_authentication_and_still_serves_cancels() {
    let db = fresh_db("maxconn").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 4, "max_client_conn = 2")).await;
    let addr = proxy.local_addr();
    let first = connect_app(&proxy, &db).await;
    let second = connect_app(&proxy, &db).await;

    // A wrong password gets the limit, not 28P01: nothing of the login was looked at.
    let Err(refused) = try_connect(addr, &db.user, "not-the-password", &db.name).await else {
        panic!("a third client got in past max_client_conn = 2");
    };
    let db_error = refused
        .as_db_error()
        .expect("refused without a server error");
    assert_eq!(db_error.code().code(), "53300", "{}", describe(&refused));
    assert_eq!(db_error.message(), "sorry, too many clients already");
    // The admin console is let through to its own login (which then refuses this user).
    let admin = try_connect(addr, &db.user, &db.password, "pglease").await;
    assert_ne!(admin.err().as_ref().map(code).as_deref(), Some("53300"));

    // A cancel request still reaches the upstream of a full proxy.
    let token = first.cancel_token();
    let sleeping = tokio::spawn(async move { first.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.expect("cancel request");
    let cancelled = tokio::time::timeout(WINDOW, sleeping)
        .await
        .expect("the cancel did not get through the full proxy")
        .unwrap();
    assert_eq!(cancelled.err().as_ref().map(code).as_deref(), Some("57014"));

    // A client leaving frees its place.
    drop(second);
    let again = tokio::time::timeout(WINDOW, async {
        loop {
            match try_connect(addr, &db.user, &db.password, &db.name).await {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("no client got in after one left");
    again.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn client_login_timeout_and_its_old_name_end_a_silent_login() {
    let db = fresh_db("logintimeout").await;
    for key in ["client_login_timeout", "login_timeout"] {
        let proxy = start_proxy(&proxy_toml(
            &db,
            "transaction",
            1,
            &format!("{key} = \"1s\""),
        ))
        .await;
        let mut silent = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let mut answer = Vec::new();
        // Sends nothing: the proxy must give up on it (a FATAL, then EOF).
        let read = silent.read_to_end(&mut answer);
        tokio::time::timeout(WINDOW, read)
            .await
            .unwrap_or_else(|_| panic!("{key}: a silent login was kept open"))
            .unwrap();
        assert!(
            String::from_utf8_lossy(&answer).contains("login timeout"),
            "{key}"
        );
    }
}

#[tokio::test]
async fn client_idle_timeout_ends_idle_clients_in_both_modes_with_57p05() {
    let db = fresh_db("idletimeout").await;
    for mode in ["transaction", "session"] {
        let proxy = start_proxy(&proxy_toml(&db, mode, 2, "client_idle_timeout = \"1s\"")).await;
        let (client, ended) = watched(&proxy, &db).await;
        client.simple_query("SELECT 1").await.unwrap();
        let (code, message) = ended.fatal().await;
        assert_eq!(code, "57P05", "{mode}: {message}");
        assert_eq!(
            message,
            "terminating connection due to idle-session timeout"
        );
        // A client that keeps talking is never idle for the whole timeout.
        let busy = connect_app(&proxy, &db).await;
        for _ in 0..8 {
            busy.simple_query("SELECT 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test]
async fn idle_transaction_timeout_ends_the_client_rolls_back_and_reuses_the_upstream() {
    let db = fresh_db("idletx").await;
    let toml = proxy_toml(&db, "transaction", 1, "idle_transaction_timeout = \"1s\"");
    let proxy = start_proxy(&toml).await;
    let setup = connect_app(&proxy, &db).await;
    setup.batch_execute("CREATE TABLE t (v int)").await.unwrap();
    let pid: String = first_value(&setup, "SELECT pg_backend_pid()").await;
    drop(setup);

    let (client, ended) = watched(&proxy, &db).await;
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (code, message) = ended.fatal().await;
    assert_eq!(code, "25P03", "{message}");
    assert_eq!(
        message,
        "terminating connection due to idle-in-transaction timeout"
    );

    // The pool's one upstream came back rolled back, not closed and not dirty.
    let next = connect_app(&proxy, &db).await;
    assert_eq!(first_value(&next, "SELECT count(*) FROM t").await, "0");
    assert_eq!(first_value(&next, "SELECT pg_backend_pid()").await, pid);
}

#[tokio::test]
async fn query_timeout_cancels_a_long_request_and_the_client_carries_on() {
    let db = fresh_db("querytimeout").await;
    for mode in ["transaction", "session"] {
        let toml = proxy_toml(&db, mode, 1, "query_timeout = \"1s\"");
        let proxy = start_proxy(&toml).await;
        let client = connect_app(&proxy, &db).await;
        let slow = client.simple_query("SELECT pg_sleep(60)");
        let result = tokio::time::timeout(WINDOW, slow)
            .await
            .unwrap_or_else(|_| panic!("{mode}: a request ran past query_timeout"));
        assert_eq!(
            result.err().as_ref().map(code).as_deref(),
            Some("57014"),
            "{mode}"
        );
        // The same client goes on; quick requests are not touched.
        for _ in 0..3 {
            assert_eq!(first_value(&client, "SELECT 1").await, "1");
        }
    }
}

/// Sends `signal` to an upstream backend (a stand-in for an upstream that stops answering).
fn signal_backend(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Lets a stopped backend run again however the test ends, so it can exit.
struct Continue(String);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

#[tokio::test]
async fn query_timeout_closes_an_upstream_that_ignores_the_cancel_and_the_client_hears_it() {
    let db = fresh_db("querystuck").await;
    let toml = proxy_toml(&db, "transaction", 1, "query_timeout = \"1s\"");
    let proxy = start_proxy(&toml).await;
    let client = connect_app(&proxy, &db).await;
    // Pool size 1: the next request runs on this same backend.
    let pid = first_value(&client, "SELECT pg_backend_pid()").await;
    let slow = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A stopped backend acts on no cancel: only closing it ends the request.
    signal_backend("-STOP", &pid);
    let _resume = Continue(pid);
    let result = tokio::time::timeout(WINDOW, slow)
        .await
        .expect("a request on a stuck upstream hung past query_timeout and its grace")
        .unwrap();
    let e = result.expect_err("the stuck request succeeded");
    let db_error = e
        .as_db_error()
        .unwrap_or_else(|| panic!("no server error: {e}"));
    assert_eq!(db_error.code().code(), "57014", "{}", describe(&e));
    assert!(
        db_error.message().contains("query_timeout"),
        "{}",
        db_error.message()
    );
}

/// The first column of the first row of a simple query, as text.
async fn first_value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}
