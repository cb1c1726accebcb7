//! Session state that cannot follow a client in transaction mode, against a real PostgreSQL
//! through the proxy: each construct the README lists is refused with SQLSTATE 0A000 before
//! anything of its request runs, the client stays usable, the words themselves in strings and
//! comments run fine, what ends with its transaction works, and session mode is untouched.

mod common;

use common::{TestDb, connect_app, describe, fresh_db, proxy_toml, psql, start_proxy, superuser};
use tokio_postgres::Client;

/// Each refused construct, as a simple-protocol text, and a phrase of its message.
const REFUSED: &[(&str, &str)] = &[
    ("select pg_advisory_lock(1)", "session advisory locks"),
    (
        "SELECT pg_catalog.PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
        "session advisory locks",
    ),
    (
        "declare c cursor with hold for select 1",
        "cursors WITH HOLD",
    ),
    ("create temp table t (a int)", "temporary tables"),
    (
        "create temporary table t (a int) on commit preserve rows",
        "temporary tables",
    ),
    ("create temp view v as select 1", "temporary tables, views"),
    (
        "create temp sequence s",
        "temporary tables, views and sequences",
    ),
    ("create table pg_temp.t (a int)", "temporary tables"),
    ("select 1 as a into temp t", "temporary tables"),
    (
        "set session authorization postgres",
        "SET SESSION AUTHORIZATION",
    ),
];

/// A transaction-mode proxy over one upstream, so every client shares it.
async fn one_upstream(tag: &str, mode: &str) -> (TestDb, pglease::app::Proxy) {
    let db = fresh_db(tag).await;
    let proxy = start_proxy(&proxy_toml(&db, mode, 1, "")).await;
    (db, proxy)
}

/// Asserts that `result` is the refusal for `phrase`: 0A000, naming the feature, transaction
/// mode and a way out.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    text: &str,
    phrase: &str,
) {
    let err = result.expect_err(text);
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{text}: not an ErrorResponse: {err}"));
    assert_eq!(db.code().code(), "0A000", "{text}: {}", describe(&err));
    let message = db.message();
    assert!(message.contains(phrase), "{text}: {message}");
    assert!(
        message.contains("not supported in transaction mode"),
        "{message}"
    );
    assert!(message.contains("session-mode pool"), "{message}");
}

async fn one_text(client: &Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| {
        panic!("{sql}: {}", describe(&e));
    });
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

/// Advisory locks held in `db` by anyone, as the superuser sees them.
async fn advisory_locks(admin: &Client, db: &TestDb) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = $1",
            &[&db.name],
        )
        .await
        .expect("pg_locks")
        .get(0)
}

#[tokio::test]
async fn each_refusal_is_0a000_in_both_protocols_and_the_client_stays_usable() {
    // On a proxy without the refusals every one of these texts runs and succeeds.
    let (db, proxy) = one_upstream("confref", "transaction").await;
    let client = connect_app(&proxy, &db).await;
    for &(text, phrase) in REFUSED {
        assert_refused(client.simple_query(text).await, text, phrase);
        assert_eq!(one_text(&client, "select 'ok'").await, "ok", "after {text}");
        // Extended protocol: tokio-postgres prepares a named statement, then binds it.
        assert_refused(client.query(text, &[]).await, text, phrase);
        let row = client.query_one("select $1::text", &[&"ok"]).await;
        assert_eq!(
            row.expect("usable").get::<_, String>(0),
            "ok",
            "after {text}"
        );
    }
    let param = client.query("select pg_advisory_lock($1)", &[&7i64]).await;
    assert_refused(param, "a parameter", "session advisory locks");
    let admin = superuser().await;
    assert_eq!(advisory_locks(&admin, &db).await, 0);
    // Nothing was created on the shared upstream either.
    let left = one_text(
        &client,
        "select count(*) from pg_class where relname in ('t', 'v', 's') \
         and relpersistence = 't'",
    )
    .await;
    assert_eq!(left, "0");
}

#[tokio::test]
async fn nothing_of_a_refused_request_runs() {
    // Without the refusal the INSERT commits and the lock stays on the shared upstream.
    let (db, proxy) = one_upstream("confbatch", "transaction").await;
    let client = connect_app(&proxy, &db).await;
    client
        .batch_execute("create table t (a int)")
        .await
        .expect("create");
    let text = "insert into t values (1); select pg_advisory_lock(1); insert into t values (2)";
    assert_refused(client.simple_query(text).await, text, "advisory");
    // In a transaction the refusal is the error PostgreSQL would give: the rest is rolled back.
    client.batch_execute("begin").await.expect("begin");
    client
        .execute("insert into t values (3)", &[])
        .await
        .expect("insert");
    assert_refused(
        client
            .query("declare c cursor with hold for select 1", &[])
            .await,
        "in a transaction",
        "WITH HOLD",
    );
    let aborted = client.simple_query("select 1").await.expect_err("aborted");
    assert_eq!(
        aborted.as_db_error().map(|e| e.code().code()),
        Some("25P02")
    );
    client.batch_execute("rollback").await.expect("rollback");
    assert_eq!(one_text(&client, "select count(*) from t").await, "0");
    let admin = superuser().await;
    assert_eq!(advisory_locks(&admin, &db).await, 0);
}

#[tokio::test]
async fn the_words_in_strings_comments_dollar_quotes_and_identifiers_run_fine() {
    let (db, proxy) = one_upstream("confwords", "transaction").await;
    let client = connect_app(&proxy, &db).await;
    for (text, want) in [
        ("select 'pg_advisory_lock(1)'", "pg_advisory_lock(1)"),
        ("select 'x' /* declare c cursor with hold for */", "x"),
        (
            "select $$create temp table t (a int)$$",
            "create temp table t (a int)",
        ),
        (
            "select $q$set session authorization x$q$",
            "set session authorization x",
        ),
        ("select 'y' -- select pg_advisory_lock(1)\n", "y"),
        (
            "select \"pg_advisory_lock(1)\" from (select 'z' as \"pg_advisory_lock(1)\") s",
            "z",
        ),
        (
            "select e'\\' pg_advisory_lock(1) '",
            "' pg_advisory_lock(1) ",
        ),
    ] {
        assert_eq!(one_text(&client, text).await, want, "simple: {text}");
        let row = client.query_one(text, &[]).await.unwrap_or_else(|e| {
            panic!("extended: {text}: {}", describe(&e));
        });
        assert_eq!(row.get::<_, String>(0), want, "extended: {text}");
    }
}

#[tokio::test]
async fn what_ends_with_its_transaction_works() {
    let (db, proxy) = one_upstream("confxact", "transaction").await;
    let client = connect_app(&proxy, &db).await;
    let admin = superuser().await;
    client
        .batch_execute(
            "begin; create temp table scratch (a int) on commit drop; \
             insert into scratch values (1), (2)",
        )
        .await
        .expect("temp table on commit drop");
    assert_eq!(one_text(&client, "select sum(a) from scratch").await, "3");
    client
        .query_one("select pg_advisory_xact_lock($1)", &[&5i64])
        .await
        .expect("xact lock");
    assert_eq!(advisory_locks(&admin, &db).await, 1);
    client
        .batch_execute("declare c cursor without hold for select 42")
        .await
        .expect("cursor without hold");
    assert_eq!(one_text(&client, "fetch c").await, "42");
    client.batch_execute("commit").await.expect("commit");
    // Gone with the transaction: the next client on the same upstream sees none of it.
    assert_eq!(advisory_locks(&admin, &db).await, 0);
    let next = connect_app(&proxy, &db).await;
    let left = one_text(
        &next,
        "select count(*) from pg_class where relname = 'scratch'",
    )
    .await;
    assert_eq!(left, "0");
    let unlock = one_text(&next, "select pg_advisory_unlock_all()::text").await;
    assert_eq!(unlock, "");
    one_text(&next, "reset session authorization").await;
}

#[tokio::test]
async fn psql_hears_the_refusal_and_its_way_out() {
    let (db, proxy) = one_upstream("confpsql", "transaction").await;
    let out = psql(proxy.local_addr(), &db.user, &db.password, &db.name)
        .args(["-c", "select pg_advisory_lock(1)"])
        .output()
        .await
        .expect("psql runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "psql succeeded: {stderr}");
    assert!(
        stderr.contains(
            "session advisory locks are not supported in transaction mode: use \
             pg_advisory_xact_lock, or a session-mode pool"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn session_mode_keeps_its_own_state() {
    let (db, proxy) = one_upstream("confsess", "session").await;
    let client = connect_app(&proxy, &db).await;
    client
        .batch_execute(
            "select pg_advisory_lock(1); create temp table t (a int); \
             declare c cursor with hold for select 1",
        )
        .await
        .unwrap_or_else(|e| panic!("session mode: {}", describe(&e)));
    let admin = superuser().await;
    assert_eq!(advisory_locks(&admin, &db).await, 1);
}

/// Polls `probe` until it returns `want`, for at most 15 s (a closed upstream's backend exits
/// on its own time).
async fn eventually<F, Fut>(want: i64, mut probe: F) -> i64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let got = probe().await;
        if got == want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn backend_pid(client: &Client) -> String {
    one_text(client, "select pg_backend_pid()").await
}

#[tokio::test]
async fn a_lock_taken_where_the_lexer_cannot_see_never_reaches_the_next_client() {
    // Without the check at release, the DO block's lock stays on the one upstream and the next
    // client is served there with it.
    let (db, proxy) = one_upstream("confdo", "transaction").await;
    let admin = superuser().await;
    let a = connect_app(&proxy, &db).await;
    let first_pid = backend_pid(&a).await;
    a.batch_execute("do $$ begin perform pg_advisory_lock(42); end $$")
        .await
        .unwrap_or_else(|e| panic!("DO: {}", describe(&e)));
    let left = eventually(0, || advisory_locks(&admin, &db)).await;
    assert_eq!(left, 0, "the lock outlived the client's transaction");
    let b = connect_app(&proxy, &db).await;
    assert_ne!(
        backend_pid(&b).await,
        first_pid,
        "served on the upstream that held it"
    );
    let seen = one_text(
        &b,
        "select count(*) from pg_locks where locktype = 'advisory'",
    )
    .await;
    assert_eq!(seen, "0");
}

#[tokio::test]
async fn a_temp_table_made_by_a_prepared_do_block_never_reaches_the_next_client() {
    // The extended protocol prepares the DO block in one request and runs it in the next:
    // the statement's text, not the request's, calls for the check.
    let (db, proxy) = one_upstream("confdox", "transaction").await;
    let a = connect_app(&proxy, &db).await;
    a.execute(
        "do $$ begin execute 'create temp table leak (a int)'; end $$",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("DO: {}", describe(&e)));
    let b = connect_app(&proxy, &db).await;
    let leaks = eventually(0, || async {
        let n = one_text(&b, "select count(*) from pg_class where relname = 'leak'").await;
        n.parse().unwrap_or(-1)
    })
    .await;
    assert_eq!(
        leaks, 0,
        "the temporary table outlived the client's transaction"
    );
}

#[tokio::test]
async fn a_check_that_finds_nothing_keeps_the_upstream() {
    // The check must not close upstreams whose state ended with the transaction.
    let (db, proxy) = one_upstream("confkeep", "transaction").await;
    let a = connect_app(&proxy, &db).await;
    let pid = backend_pid(&a).await;
    for text in [
        "do $$ begin perform pg_advisory_xact_lock(1); end $$",
        "select 'pg_advisory_lock(1) in a string'",
        "begin; create temp table t (a int) on commit drop; commit",
    ] {
        a.batch_execute(text)
            .await
            .unwrap_or_else(|e| panic!("{text}: {}", describe(&e)));
        assert_eq!(backend_pid(&a).await, pid, "closed after {text}");
    }
}
