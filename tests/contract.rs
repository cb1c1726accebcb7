//! The client contract around cancel and failure, against a real PostgreSQL: a late cancel
//! hits nothing and a wrong key does nothing; the wait queue answers with SQLSTATE 57014, first
//! come first served, and leaves the client usable; a client that drops mid-query gets the
//! query cancelled and its upstream closed; an upstream lost mid-transaction gives its client
//! FATAL 08006.

mod common;
#[path = "contract/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{
    connect_app, describe, fresh_db, proxy_toml, start_proxy, superuser, try_connect_with_task,
};
use pglease::app::Proxy;
use pglease::pool::Pool;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

/// Rounds of the late-cancel race; the old forwarding lost it within a few rounds.
const LATE_CANCEL_ROUNDS: usize = 30;

fn pool_of(proxy: &Proxy, db: &common::TestDb) -> Pool {
    proxy
        .shared()
        .pool(&db.name, &db.user)
        .expect("the test's pool")
        .pool
        .clone()
}

/// Polls until `want` requests wait in `pool`'s queue, so the order of arrival is known.
async fn until_waiting(pool: &Pool, want: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while pool.status().2 < want {
        assert!(Instant::now() < until, "{want} requests never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The proxy-issued (pid, secret) behind a client's cancel token, read off the request the
/// driver writes.
async fn cancel_key(token: &CancelToken) -> (i32, i32) {
    let (ours, mut theirs) = tokio::io::duplex(64);
    token.cancel_query_raw(ours, NoTls).await.expect("request");
    let mut packet = [0u8; 16];
    theirs.read_exact(&mut packet).await.expect("16 bytes");
    assert_eq!(packet[..8], [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
    let word = |at: usize| i32::from_be_bytes([0, 1, 2, 3].map(|i| packet[at + i]));
    (word(8), word(12))
}

/// Sends a CancelRequest and waits until the proxy has handled it (it then closes).
async fn send_cancel(addr: SocketAddr, pid: i32, secret: i32) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut buf = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut buf);
    stream.write_all(&buf).await.expect("write");
    let mut sink = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut sink)).await;
    assert!(matches!(read, Ok(Ok(0))), "cancel not closed: {read:?}");
}

/// Runs `sql` until it succeeds: a late cancel of the client's own may interrupt it.
async fn until_ok(client: &Client, sql: &str) {
    for _ in 0..50 {
        if client.simple_query(sql).await.is_ok() {
            return;
        }
    }
    panic!("{sql} kept failing");
}

/// Sends cancels with `token` that race whatever the client does next, without waiting.
fn racing_cancels(token: &CancelToken) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move { token.cancel_query(NoTls).await.expect("cancel sent") })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_hits_nothing() {
    let db = fresh_db("late").await;
    // One upstream: B's every query runs on the upstream A just gave back.
    let toml = proxy_toml(&db, "transaction", 1, "query_wait_timeout = \"30s\"");
    let proxy = start_proxy(&toml).await;
    let pool = pool_of(&proxy, &db);
    let a = connect_app(&proxy, &db).await;
    let b = Arc::new(connect_app(&proxy, &db).await);
    let token = a.cancel_token();
    for round in 0..LATE_CANCEL_ROUNDS {
        // A holds the upstream, so B's query queues for it.
        until_ok(&a, "BEGIN").await;
        let b_query = {
            let b = b.clone();
            tokio::spawn(async move { b.simple_query("SELECT pg_sleep(0.3)").await })
        };
        until_waiting(&pool, 1).await;
        // Cancels race the end of A's transaction, and one follows it: whatever PostgreSQL
        // acts on after COMMIT is late, and must not reach B, now on that upstream.
        let racing = racing_cancels(&token);
        if a.simple_query("COMMIT").await.is_err() {
            until_ok(&a, "ROLLBACK").await;
        }
        token.cancel_query(NoTls).await.expect("cancel sent");
        for cancel in racing {
            cancel.await.unwrap();
        }
        if let Err(e) = b_query.await.unwrap() {
            panic!("round {round}: B's query failed: {}", describe(&e));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_from_a_client_that_left_hits_nothing() {
    let db = fresh_db("lateleft").await;
    // Session mode: the upstream goes back only when its client leaves (after the reset).
    let toml = proxy_toml(&db, "session", 1, "query_wait_timeout = \"30s\"");
    let proxy = start_proxy(&toml).await;
    let pool = pool_of(&proxy, &db);
    for round in 0..LATE_CANCEL_ROUNDS / 2 {
        let a = connect_app(&proxy, &db).await;
        until_ok(&a, "SELECT 1").await;
        let b = connect_app(&proxy, &db).await;
        let b_query = tokio::spawn(async move {
            let result = b.simple_query("SELECT pg_sleep(0.3)").await;
            (b, result)
        });
        until_waiting(&pool, 1).await;
        // A leaves with its cancels still on their way.
        let racing = racing_cancels(&a.cancel_token());
        drop(a);
        for cancel in racing {
            cancel.await.unwrap();
        }
        if let Err(e) = b_query.await.unwrap().1 {
            panic!("round {round}: B's query failed: {}", describe(&e));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_a_wrong_key_does_nothing() {
    let db = fresh_db("wrongkey").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let addr = proxy.local_addr();
    let a = Arc::new(connect_app(&proxy, &db).await);
    let (pid, secret) = cancel_key(&a.cancel_token()).await;
    let sleeper = {
        let a = a.clone();
        tokio::spawn(async move { a.simple_query("SELECT pg_sleep(1)").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_cancel(addr, pid, secret.wrapping_add(1)).await;
    send_cancel(addr, pid.wrapping_add(1), secret).await;
    send_cancel(addr, pid ^ i32::MIN, secret).await;
    let done = sleeper.await.unwrap();
    done.unwrap_or_else(|e| panic!("a wrong key cancelled A's query: {}", describe(&e)));
    // The key itself was A's: with the right secret the same request does cancel.
    let sleeper = {
        let a = a.clone();
        tokio::spawn(async move { a.simple_query("SELECT pg_sleep(30)").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_cancel(addr, pid, secret).await;
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the right key cancelled within 10 s")
        .unwrap()
        .expect_err("pg_sleep(30) was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
}

/// `fut`'s output; a client left hanging fails the test instead of stalling it.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

/// The SQLSTATE and severity of a query that failed.
fn failure(result: Result<impl Sized, tokio_postgres::Error>) -> (SqlState, String) {
    let Err(e) = result else {
        panic!("the query ran although the only upstream was busy");
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {e}"));
    (db.code().clone(), db.severity().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_too_long_gets_57014_and_the_client_stays_usable() {
    let db = fresh_db("waitcode").await;
    let toml = proxy_toml(&db, "transaction", 1, "query_wait_timeout = \"1s\"");
    let proxy = start_proxy(&toml).await;
    let holder = connect_app(&proxy, &db).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = connect_app(&proxy, &db).await;
    let expected = (SqlState::QUERY_CANCELED, "ERROR".to_owned());
    // Simple protocol, then extended (Parse/Describe/Sync, answered with one error and one
    // ReadyForQuery so the driver stays in step).
    let simple = within("simple query", waiter.simple_query("SELECT 1")).await;
    assert_eq!(failure(simple), expected);
    let extended = within(
        "extended query",
        waiter.query_one("SELECT $1::int", &[&7i32]),
    )
    .await;
    assert_eq!(failure(extended), expected);
    holder.batch_execute("COMMIT").await.unwrap();
    // The same client carries on, in both protocols and in a transaction.
    let row = within("query after", waiter.query_one("SELECT $1::int", &[&7i32])).await;
    let row = row.unwrap_or_else(|e| panic!("after the timeout: {}", describe(&e)));
    assert_eq!(row.get::<_, i32>(0), 7);
    within(
        "transaction after",
        waiter.batch_execute("BEGIN; SELECT 1; COMMIT"),
    )
    .await
    .unwrap_or_else(|e| panic!("after the timeout: {}", describe(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    const WAITERS: usize = 5;
    let db = fresh_db("fifo").await;
    let toml = proxy_toml(&db, "transaction", 1, "query_wait_timeout = \"30s\"");
    let proxy = start_proxy(&toml).await;
    let pool = pool_of(&proxy, &db);
    let holder = connect_app(&proxy, &db).await;
    holder
        .batch_execute("CREATE SEQUENCE served")
        .await
        .unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut queries = Vec::with_capacity(WAITERS);
    for i in 0..WAITERS {
        let waiter = connect_app(&proxy, &db).await;
        queries.push(tokio::spawn(async move {
            // One request each (the extended protocol would queue twice: prepare, execute).
            let messages = waiter.simple_query("SELECT nextval('served')").await?;
            let value = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse::<i64>().ok()),
                _ => None,
            });
            Ok::<_, tokio_postgres::Error>(value.expect("a number"))
        }));
        // Queued in this order: the sequence, drawn on the single upstream, tells the order
        // in which they were served.
        until_waiting(&pool, i + 1).await;
    }
    holder.batch_execute("COMMIT").await.unwrap();
    let mut served = Vec::with_capacity(WAITERS);
    for query in queries {
        served.push(within("waiter", query).await.unwrap().unwrap());
    }
    assert_eq!(served, (1..=WAITERS as i64).collect::<Vec<_>>());
}

/// Backends logged in as `role` and running a statement that contains `marker`.
async fn running(admin: &Client, role: &str, marker: &str) -> Vec<i32> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE usename = $1 AND state = 'active' AND strpos(query, $2) > 0",
            &[&role, &marker],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_mid_query_gets_it_cancelled_and_its_upstream_closed() {
    let db = fresh_db("dropq").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let admin = superuser().await;
    let addr = proxy.local_addr();
    let (a, a_task) = try_connect_with_task(addr, &db.user, &db.password, &db.name)
        .await
        .unwrap();
    let query = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(60)").await });
    let until = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let [pid] = running(&admin, &db.role, "pg_sleep(60)").await[..] {
            break pid;
        }
        assert!(Instant::now() < until, "the query never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The client vanishes without a word while its query runs.
    a_task.abort();
    query.abort();
    // Gone well before pg_sleep(60) could end on its own: the query was cancelled, and the
    // backend ended, so the upstream was closed rather than returned.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 0 {
            break;
        }
        assert!(Instant::now() < until, "backend {pid} still exists");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = connect_app(&proxy, &db).await;
    let row = b.query_one("SELECT pg_backend_pid()", &[]).await.unwrap();
    assert_ne!(row.get::<_, i32>(0), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_lost_mid_transaction_gives_its_client_fatal_08006() {
    let db = fresh_db("lost").await;
    let toml = proxy_toml(&db, "transaction", 1, "auth_type = \"md5\"");
    let proxy = start_proxy(&toml).await;
    let setup = connect_app(&proxy, &db).await;
    setup
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    drop(setup);
    let mut client = wire::Wire::login(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    client.query("BEGIN; INSERT INTO t VALUES (1)").await;
    let admin = superuser().await;
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND state = 'idle in transaction'",
            &[&db.role],
        )
        .await
        .unwrap();
    assert_eq!(killed.get::<_, i64>(0), 1);
    // Whatever PostgreSQL says on its way out is passed on; pglease's last word before it
    // hangs up is FATAL 08006, and the client never gets to carry on.
    let mut last_error = None;
    while let Some(message) = client.next().await {
        match message {
            backend::Message::ErrorResponse(body) => {
                last_error = Some(wire::severity_and_code(&body))
            }
            backend::Message::ReadyForQuery(_) => panic!("the client was told to carry on"),
            _ => {}
        }
    }
    assert_eq!(last_error, Some(("FATAL".to_owned(), "08006".to_owned())));
    let check = connect_app(&proxy, &db).await;
    let rows = check
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.get::<_, i64>(0),
        0,
        "the lost transaction's insert stayed"
    );
}
