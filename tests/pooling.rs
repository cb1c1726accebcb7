//! Pooling semantics against a real PostgreSQL: many clients over few upstreams without
//! cross-talk, transactions that keep their upstream, clients that vanish mid-transaction,
//! session state that does not leak, and a wait queue that times out instead of hanging.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::log::Captured;
use common::{
    UpstreamSampler, connect_app, describe, fresh_db, proxy_toml, start_proxy,
    try_connect_with_task,
};
use tokio::sync::Barrier;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

const CLIENTS: i32 = 50;
const POOL: usize = 10;
const ROUNDS: i32 = 5;

/// One client's workload: every answer must be this client's own. Uses the extended protocol
/// with unnamed statements (Parse/Bind/Execute/Sync in one request), which every transaction
/// may run on a different upstream.
async fn extended_rounds(mut client: Client, id: i32) {
    for round in 0..ROUNDS {
        let fail = |step: &str, e: tokio_postgres::Error| -> ! {
            panic!("client {id} round {round} {step}: {}", describe(&e))
        };
        let row = client
            .query_typed("SELECT $1::int", &[(&id, Type::INT4)])
            .await
            .unwrap_or_else(|e| fail("select", e));
        let echoed: i32 = row[0].get(0);
        assert_eq!(echoed, id, "client {id} got another client's result");
        let tx = client
            .transaction()
            .await
            .unwrap_or_else(|e| fail("begin", e));
        tx.query_typed(
            "INSERT INTO items (client, round) VALUES ($1, $2)",
            &[(&id, Type::INT4), (&round, Type::INT4)],
        )
        .await
        .unwrap_or_else(|e| fail("insert", e));
        let row = tx
            .query_typed(
                "SELECT count(*)::int FROM items WHERE client = $1",
                &[(&id, Type::INT4)],
            )
            .await
            .unwrap_or_else(|e| fail("count", e));
        assert_eq!(
            row[0].get::<_, i32>(0),
            round + 1,
            "client {id} round {round}"
        );
        tx.commit().await.unwrap_or_else(|e| fail("commit", e));
    }
}

/// The first column of the last row a simple query returned.
async fn last_value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let value = messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    value.unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The same workload over the simple protocol only, with the transaction spanning several
/// requests, so a failure here is about pooling, not about prepared statements.
async fn simple_rounds(client: Client, id: i32) {
    for round in 0..ROUNDS {
        assert_eq!(
            last_value(&client, &format!("SELECT {id}")).await,
            id.to_string()
        );
        let count = last_value(
            &client,
            &format!(
                "BEGIN; INSERT INTO items VALUES ({id}, {round}); \
                 SELECT count(*) FROM items WHERE client = {id}"
            ),
        )
        .await;
        assert_eq!(count, (round + 1).to_string(), "client {id} round {round}");
        client
            .batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("client {id} commit: {}", describe(&e)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_ten_upstreams_simple_protocol() {
    fifty_clients_share_ten_upstreams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_ten_upstreams_extended_protocol() {
    fifty_clients_share_ten_upstreams(true).await;
}

async fn fifty_clients_share_ten_upstreams(extended: bool) {
    let db = fresh_db(if extended { "many_ext" } else { "many" }).await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", POOL, "")).await;
    let setup = connect_app(&proxy, &db).await;
    setup
        .batch_execute("CREATE TABLE items (client int NOT NULL, round int NOT NULL)")
        .await
        .unwrap();
    drop(setup);

    // Log everyone in first, then release them together: logins are slow (SCRAM) and would
    // otherwise spread the clients out until they hardly overlap.
    let mut clients = Vec::new();
    for id in 1..=CLIENTS {
        clients.push((id, connect_app(&proxy, &db).await));
    }
    let sampler = UpstreamSampler::start(&db.role).await;
    let start = Arc::new(Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for (id, client) in clients {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            match extended {
                true => extended_rounds(client, id).await,
                false => simple_rounds(client, id).await,
            }
        }));
    }
    let deadline = Duration::from_secs(60);
    for task in tasks {
        tokio::time::timeout(deadline, task)
            .await
            .expect("clients finished within a minute")
            .unwrap();
    }
    let samples = sampler.finish().await;
    assert!(samples.taken >= 3, "sampler barely ran: {samples:?}");
    // More than one: the clients really ran concurrently, so the limit was put to the test.
    assert!(samples.max >= 2, "upstreams never overlapped: {samples:?}");
    assert!(
        samples.max <= POOL as i64,
        "pool limit exceeded: {samples:?}"
    );

    let check = connect_app(&proxy, &db).await;
    let rows = check
        .query(
            "SELECT client, count(*)::int FROM items GROUP BY client",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), CLIENTS as usize);
    assert!(rows.iter().all(|row| row.get::<_, i32>(1) == ROUNDS));
}

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn count_rows(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_keeps_its_upstream_and_hides_its_writes() {
    let db = fresh_db("iso").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let a = connect_app(&proxy, &db).await;
    let b = connect_app(&proxy, &db).await;
    a.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();

    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (pid, xid): (i32, i64) = {
        let row = a
            .query_one("SELECT pg_backend_pid(), txid_current()", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    for _ in 0..5 {
        assert_eq!(count_rows(&b).await, 0, "B saw A's uncommitted insert");
        assert_ne!(
            backend_pid(&b).await,
            pid,
            "B was served by A's busy upstream"
        );
        let row = a
            .query_one("SELECT pg_backend_pid(), txid_current()", &[])
            .await
            .unwrap();
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (pid, xid));
    }
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        count_rows(&b).await,
        1,
        "B does not see A's committed insert"
    );
}

/// Runs the dirty-disconnect scenario; `abort_socket` drops the TCP connection without a
/// Terminate message, otherwise the client says goodbye politely mid-transaction.
async fn vanishing_client_leaves_no_trace(abort_socket: bool) {
    let db = fresh_db(if abort_socket { "dirty" } else { "quit" }).await;
    // One upstream: the next client must get the very connection the first one left.
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let addr = proxy.local_addr();
    let setup = connect_app(&proxy, &db).await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();
    drop(setup);

    let (a, a_task) = try_connect_with_task(addr, &db.user, &db.password, &db.name)
        .await
        .unwrap();
    a.batch_execute("BEGIN; INSERT INTO t VALUES (2, 0); SELECT * FROM t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    if abort_socket {
        a_task.abort();
        drop(a);
    } else {
        drop(a);
        let _ = a_task.await;
    }

    let b = connect_app(&proxy, &db).await;
    let started = Instant::now();
    let updated = tokio::time::timeout(
        Duration::from_secs(5),
        b.execute("UPDATE t SET v = v + 1 WHERE id = 1", &[]),
    )
    .await
    .expect("the row lock of the vanished client was released within 5 s")
    .expect("B's update succeeds (not inside an aborted transaction)");
    assert_eq!(updated, 1);
    // Simple protocol: one message, so a fresh implicit transaction starts with the statement
    // and now() equals statement_timestamp() unless an older transaction is still open.
    let messages = b
        .simple_query(
            "SELECT count(*) FILTER (WHERE id = 2), \
                    now() = statement_timestamp(), \
                    pg_current_xact_id_if_assigned() IS NULL \
             FROM t",
        )
        .await
        .unwrap();
    let Some(row) = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        panic!("no row: {messages:?}");
    };
    assert_eq!(row.get(0), Some("0"), "B sees the vanished client's insert");
    assert_eq!(
        row.get(1),
        Some("t"),
        "B runs inside an older, still open transaction"
    );
    assert_eq!(
        row.get(2),
        Some("t"),
        "B inherited a transaction with a write in it"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn client_dropping_its_socket_mid_transaction_is_rolled_back() {
    vanishing_client_leaves_no_trace(true).await;
}

#[tokio::test]
async fn client_quitting_mid_transaction_is_rolled_back() {
    vanishing_client_leaves_no_trace(false).await;
}

async fn show(client: &Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn session_state_persists_for_the_client_and_is_reset_after() {
    let db = fresh_db("session").await;
    let proxy = start_proxy(&proxy_toml(&db, "session", 1, "")).await;
    let first = connect_app(&proxy, &db).await;
    let pid = backend_pid(&first).await;
    first
        .batch_execute(
            "SET application_name = 'first_client'; SET search_path = pg_catalog; \
             CREATE TEMP TABLE scratch (x int)",
        )
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(show(&first, "application_name").await, "first_client");
        assert_eq!(show(&first, "search_path").await, "pg_catalog");
        assert_eq!(
            backend_pid(&first).await,
            pid,
            "session mode switched upstreams"
        );
    }
    drop(first);

    // Pool size 1: the next client gets the same upstream once it has been reset.
    let second = tokio::time::timeout(Duration::from_secs(10), async {
        let client = connect_app(&proxy, &db).await;
        let pid = backend_pid(&client).await;
        (client, pid)
    })
    .await
    .expect("the single upstream came back to the pool");
    let (second, second_pid) = second;
    assert_eq!(
        second_pid, pid,
        "expected the same upstream, reset; got a new one"
    );
    assert_ne!(show(&second, "application_name").await, "first_client");
    assert_eq!(show(&second, "search_path").await, "\"$user\", public");
    let row = second
        .query_one("SELECT to_regclass('pg_temp.scratch') IS NULL", &[])
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the first client's temp table survived"
    );
}

#[tokio::test]
async fn waiting_for_a_busy_pool_times_out_with_an_error() {
    let db = fresh_db("wait").await;
    let toml = proxy_toml(&db, "transaction", 1, "query_wait_timeout = \"1s\"");
    let proxy = start_proxy(&toml).await;
    let holder = connect_app(&proxy, &db).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let started = Instant::now();
    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        let waiter = connect_app(&proxy, &db).await;
        waiter.simple_query("SELECT 1").await.map(|_| ())
    })
    .await
    .expect("the waiting client got an answer instead of hanging");
    let elapsed = started.elapsed();
    let err = attempt.expect_err("the query ran although the only upstream was busy");
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {err}"));
    let message = db_error.message().to_lowercase();
    assert!(
        message.contains("wait") || message.contains("timeout"),
        "unclear error: {db_error:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}, expected about 1 s"
    );
    // The holder's transaction is untouched by the other client's timeout.
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_terminated_while_idle_is_replaced_not_handed_out() {
    let db = fresh_db("term").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let client = connect_app(&proxy, &db).await;
    let pid = |rows: Vec<SimpleQueryMessage>| {
        rows.iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("no row")
    };
    let first = pid(client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .expect("pid"));
    common::superuser()
        .await
        .batch_execute(&format!("SELECT pg_terminate_backend({first})"))
        .await
        .expect("terminate");
    // The FATAL and the hang-up reach the idle upstream's socket; the pool must notice them
    // at the next checkout rather than hand the dead connection to this client.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = pid(client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap_or_else(|e| panic!("query after the upstream died: {}", describe(&e))));
    assert_ne!(first, second, "the terminated upstream was reused");
    proxy.shutdown().await;
}

/// The backends logged in as `role` on the upstream, polled until `want` or `window` passes.
async fn wait_for_upstreams(role: &str, want: i64, window: Duration) -> i64 {
    let admin = common::superuser().await;
    let until = Instant::now() + window;
    loop {
        let n = common::upstream_count(&admin, role).await;
        if n == want || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstreams_close_after_idle_timeout_with_no_traffic() {
    let db = fresh_db("shrink").await;
    let toml = proxy_toml(&db, "transaction", 5, "idle_timeout = \"1s\"");
    let proxy = start_proxy(&toml).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Arc::new(connect_app(&proxy, &db).await));
    }
    // A burst: five transactions at once need five upstreams.
    let sampler = UpstreamSampler::start(&db.role).await;
    let barrier = Arc::new(Barrier::new(clients.len()));
    let mut burst = Vec::new();
    for client in &clients {
        let (client, barrier) = (client.clone(), barrier.clone());
        burst.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .simple_query("SELECT pg_sleep(0.5)")
                .await
                .unwrap_or_else(|e| panic!("burst query: {}", describe(&e)));
        }));
    }
    for task in burst {
        task.await.expect("burst task");
    }
    let during = sampler.finish().await;
    assert_eq!(during.max, 5, "the burst did not open five upstreams");

    // Nobody sends anything now, and the clients stay connected: the idle upstreams must
    // still be closed once idle_timeout has passed.
    let left = wait_for_upstreams(&db.role, 0, Duration::from_secs(15)).await;
    assert_eq!(left, 0, "idle upstreams outlived idle_timeout");
    // The pool serves again afterwards, with a fresh login.
    assert_eq!(last_value(&clients[0], "SELECT 7").await, "7");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_back_from_a_long_transaction_is_reused_not_reopened() {
    let db = fresh_db("longtx").await;
    let toml = proxy_toml(&db, "transaction", 1, "idle_timeout = \"2s\"");
    let proxy = start_proxy(&toml).await;
    let client = connect_app(&proxy, &db).await;
    // Busy for longer than idle_timeout, then idle for no time at all: idle time counts from
    // when the upstream came back, not from when it was handed out.
    let busy = last_value(&client, "SELECT pg_sleep(3); SELECT pg_backend_pid()").await;
    let next = last_value(&client, "SELECT pg_backend_pid()").await;
    assert_eq!(
        busy, next,
        "the upstream was closed as idle right after its transaction"
    );
    proxy.shutdown().await;
}

/// The reason of the close line for upstream backend `pid`, waiting up to 10 s for it.
async fn close_reason(logs: &Captured, pid: &str) -> String {
    let needle = format!("pid={pid} ");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("upstream closed") && l.contains(&needle));
        if let Some(line) = line {
            let reason = line.split("reason=").nth(1).unwrap_or_default();
            return reason.trim_matches('"').to_owned();
        }
        assert!(Instant::now() < until, "no close line for {pid}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
/// Polls `count_sql` (one bigint) until it is 1, for up to 10 s.
async fn backend_reaches(admin: &Client, count_sql: &str, otherwise: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = admin.query_one(count_sql, &[]).await.unwrap().get(0);
        if n == 1 {
            return;
        }
        assert!(Instant::now() < until, "{otherwise}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every upstream close is logged once with why: a client that vanished mid-query, an
/// upstream idle for `idle_timeout`, and the pool closing at shutdown. The runtime is this
/// test's one thread, so the proxy's tasks log to the test's own subscriber.
#[tokio::test(flavor = "current_thread")]
async fn every_upstream_close_is_logged_with_its_reason() {
    let captured = Captured::default();
    let _guard = captured.install();
    let db = fresh_db("reasons").await;
    let admin = common::superuser().await;
    let pid_of = |rows: Vec<SimpleQueryMessage>| {
        rows.iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("no row")
    };

    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let (a, a_task) = try_connect_with_task(proxy.local_addr(), &db.user, &db.password, &db.name)
        .await
        .unwrap();
    let vanished = pid_of(a.simple_query("SELECT pg_backend_pid()").await.unwrap());
    let sleeping = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(30)").await });
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {vanished} \
         AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
    );
    backend_reaches(&admin, &running, "the query never started").await;
    a_task.abort();
    sleeping.abort();
    assert_eq!(close_reason(&captured, &vanished).await, "client_vanished");
    let b = connect_app(&proxy, &db).await;
    let idle_at_shutdown = pid_of(b.simple_query("SELECT pg_backend_pid()").await.unwrap());
    drop(b);
    proxy.shutdown().await;
    assert_eq!(
        close_reason(&captured, &idle_at_shutdown).await,
        "pool_closed"
    );

    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "idle_timeout = \"1s\"")).await;
    let c = connect_app(&proxy, &db).await;
    let idle = pid_of(c.simple_query("SELECT pg_backend_pid()").await.unwrap());
    assert_eq!(close_reason(&captured, &idle).await, "idle_timeout");
    proxy.shutdown().await;
}

/// An upstream whose backend PostgreSQL ended while it sat idle is closed at the next
/// checkout, as unsolicited input, and the client is served by a fresh one.
#[tokio::test(flavor = "current_thread")]
async fn an_upstream_ended_while_idle_closes_as_unsolicited_input() {
    let captured = Captured::default();
    let _guard = captured.install();
    let db = fresh_db("ended").await;
    let admin = common::superuser().await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let client = connect_app(&proxy, &db).await;
    let pid = |rows: Vec<SimpleQueryMessage>| {
        rows.iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("no row")
    };
    let ended = pid(client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap());
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({ended})"))
        .await
        .expect("terminate");
    // Once the backend is gone its goodbye is in the proxy's socket (loopback).
    let gone = format!("SELECT 1 - count(*) FROM pg_stat_activity WHERE pid = {ended}");
    backend_reaches(&admin, &gone, "the backend never exited").await;
    // A connection reused within 5 ms of its last checkout is not probed (the busy case):
    // this one must have sat idle for longer than that.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap_or_else(|e| panic!("the ended upstream was handed out: {}", describe(&e)));
    assert_ne!(pid(next), ended);
    assert_eq!(close_reason(&captured, &ended).await, "unsolicited_input");
    proxy.shutdown().await;
}
