//! Session settings follow their client: a transaction-mode client's `SET` is what it sees on
//! every upstream and what no other client sees; startup parameters (`options` included)
//! reach PostgreSQL in both modes and are greeted as PostgreSQL reports them; what would
//! change the upstream role is refused at login.

mod common;
#[path = "contract/wire.rs"]
#[allow(dead_code)]
mod wire;

use common::{
    TestDb, client_config, connect_app, describe, fresh_db, proxy_toml, start_proxy, superuser,
};
use pglease::app::Proxy;
use tokio_postgres::{Client, NoTls};

/// Settings a client reads back, as one comma-separated row.
const SHOW: &str = "SELECT current_setting('statement_timeout') || ',' || \
    current_setting('search_path') || ',' || current_setting('application_name') || ',' || \
    current_user::text";

async fn show(client: &Client) -> String {
    let row = client
        .query_one(SHOW, &[])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    row.get(0)
}

async fn pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// A role the lease's login role is a member of, so it may `SET ROLE` to it.
async fn grant_role(db: &TestDb) -> String {
    let role = format!("{}_r", db.role);
    let sql = format!("CREATE ROLE {role} NOLOGIN; GRANT {role} TO {}", db.role);
    superuser().await.batch_execute(&sql).await.unwrap();
    role
}

/// Connects with `options` and `application_name` in the startup packet.
async fn connect_with(proxy: &Proxy, db: &TestDb, app: &str, options: &str) -> Client {
    try_connect_with(proxy, db, app, options)
        .await
        .unwrap_or_else(|e| panic!("login failed: {}", describe(&e)))
}

async fn try_connect_with(
    proxy: &Proxy,
    db: &TestDb,
    app: &str,
    options: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = client_config(proxy.local_addr(), &db.user, &db.password, &db.name);
    config.application_name(app).options(options);
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn a_transaction_mode_set_follows_its_client_and_nobody_else_sees_it() {
    let db = fresh_db("setiso").await;
    let role = grant_role(&db).await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let a = connect_app(&proxy, &db).await;
    let b = connect_app(&proxy, &db).await;
    let defaults = show(&b).await;
    a.batch_execute(&format!(
        "SET statement_timeout = '7s'; SET search_path = pg_temp, public; \
         SET application_name = 'client_a'; SET ROLE {role}"
    ))
    .await
    .unwrap();
    let mine = format!("7s,pg_temp, public,client_a,{role}");
    assert_eq!(show(&a).await, mine);
    assert_eq!(pid(&a).await, pid(&b).await, "one upstream serves both");
    assert_eq!(show(&b).await, defaults, "B must not see A's settings");
    assert_eq!(show(&a).await, mine, "A keeps its own on every transaction");
    assert_eq!(show(&b).await, defaults);
}

#[tokio::test]
async fn set_config_in_a_prepared_statement_is_noticed_each_time_it_runs() {
    let db = fresh_db("setprep").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let a = connect_app(&proxy, &db).await;
    let b = connect_app(&proxy, &db).await;
    let defaults = show(&b).await;
    // Prepared in a request of its own: the runs below send only a Bind of its name, which
    // holds no set_config, on the one upstream that already has the statement.
    let set = a
        .prepare("SELECT set_config('statement_timeout', $1, false)")
        .await
        .unwrap();
    for value in ["7s", "9s"] {
        a.query(&set, &[&value]).await.unwrap();
        assert_eq!(pid(&a).await, pid(&b).await, "one upstream serves both");
        assert_eq!(show(&b).await, defaults, "B must not see A's {value}");
        let mine = show(&a).await;
        assert!(
            mine.starts_with(&format!("{value},")),
            "A keeps {value}: {mine}"
        );
    }
}

#[tokio::test]
async fn settings_follow_their_client_onto_another_upstream() {
    let db = fresh_db("setmove").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let a = connect_app(&proxy, &db).await;
    a.batch_execute("SET statement_timeout = '8s'; SET application_name = 'mover'")
        .await
        .unwrap();
    let first = pid(&a).await;
    // Two open transactions take both upstreams; the one on A's upstream stays open, so A's
    // next transaction must run on the other.
    let (c, d) = (
        connect_app(&proxy, &db).await,
        connect_app(&proxy, &db).await,
    );
    for x in [&c, &d] {
        x.batch_execute("BEGIN").await.unwrap();
    }
    let (pc, pd) = (pid(&c).await, pid(&d).await);
    assert!(pc == first || pd == first, "one of them holds A's upstream");
    let other = if pc == first { &d } else { &c };
    other.batch_execute("COMMIT").await.unwrap();
    let row = a
        .query_one(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'), \
             current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), first, "served by the other upstream");
    assert_eq!(row.get::<_, String>(1), "8s");
    assert_eq!(row.get::<_, String>(2), "mover");
}

#[tokio::test]
async fn reset_discard_and_rollback_return_to_the_startup_values() {
    let db = fresh_db("setreset").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let a = connect_with(&proxy, &db, "boot_app", "-c statement_timeout=11s").await;
    let b = connect_app(&proxy, &db).await;
    let defaults = show(&b).await;
    let startup = "11s,\"$user\", public,boot_app";
    assert!(
        show(&a).await.starts_with(startup),
        "startup values applied"
    );
    for reset in [
        "RESET statement_timeout; RESET application_name",
        "RESET ALL",
        "DISCARD ALL",
    ] {
        a.batch_execute("SET statement_timeout = '3s'; SET application_name = 'changed'")
            .await
            .unwrap();
        assert_eq!(show(&b).await, defaults);
        a.batch_execute(reset).await.unwrap();
        assert!(
            show(&a).await.starts_with(startup),
            "after {reset}: {}",
            show(&a).await
        );
        assert_eq!(show(&b).await, defaults);
    }
    a.batch_execute("BEGIN; SET statement_timeout = '4s'; ROLLBACK")
        .await
        .unwrap();
    assert!(
        show(&a).await.starts_with(startup),
        "a rolled-back SET is undone"
    );
    a.batch_execute("BEGIN; SET LOCAL statement_timeout = '5s'; COMMIT")
        .await
        .unwrap();
    assert!(show(&a).await.starts_with(startup), "SET LOCAL stays local");
    a.batch_execute("SELECT set_config('statement_timeout', '6s', false)")
        .await
        .unwrap();
    assert_eq!(show(&b).await, defaults, "set_config is tracked too");
    assert!(show(&a).await.starts_with("6s,"));
}

#[tokio::test]
async fn a_client_that_vanishes_mid_request_leaves_nothing_behind() {
    let db = fresh_db("setgone").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "")).await;
    let b = connect_app(&proxy, &db).await;
    let defaults = show(&b).await;
    let (a, task) =
        common::try_connect_with_task(proxy.local_addr(), &db.user, &db.password, &db.name)
            .await
            .unwrap();
    a.batch_execute("BEGIN; SET statement_timeout = '9s'")
        .await
        .unwrap();
    let sleeper = tokio::spawn(async move { a.batch_execute("SELECT pg_sleep(60)").await });
    let admin = superuser().await;
    for _ in 0..200 {
        let running: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 \
                 AND query LIKE '%pg_sleep(60)%' AND state = 'active'",
                &[&db.role],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    task.abort();
    sleeper.abort();
    assert_eq!(show(&b).await, defaults);
}

#[tokio::test]
async fn application_name_reaches_postgres_in_both_modes() {
    for mode in ["session", "transaction"] {
        let db = fresh_db("setapp").await;
        let proxy = start_proxy(&proxy_toml(&db, mode, 2, "")).await;
        let client = connect_with(&proxy, &db, "seen_app", "-c search_path=foo").await;
        let backend = pid(&client).await;
        let row = superuser()
            .await
            .query_one(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
                &[&backend],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "seen_app", "{mode} mode");
        let path: String = client
            .query_one("SHOW search_path", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(path, "foo", "{mode} mode: options -c applied");
    }
}

#[tokio::test]
async fn the_greeting_reports_values_as_postgres_does_and_bad_ones_are_refused() {
    let db = fresh_db("setgreet").await;
    let toml = proxy_toml(&db, "transaction", 1, "auth_type = \"md5\"");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.local_addr();
    let base = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut params = base.to_vec();
        params.extend_from_slice(extra);
        params
    };
    let greeted = wire::Wire::try_login(
        addr,
        &with(&[
            ("client_encoding", "utf8"),
            ("DateStyle", "sql, dmy"),
            ("IntervalStyle", "iso_8601"),
            ("application_name", "greeted"),
        ]),
        &db.password,
    )
    .await
    .unwrap_or_else(|e| panic!("login refused: {e:?}"));
    let param = |name: &str| {
        greeted
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("client_encoding").as_deref(), Some("UTF8"));
    assert_eq!(param("DateStyle").as_deref(), Some("SQL, DMY"));
    assert_eq!(param("IntervalStyle").as_deref(), Some("iso_8601"));
    assert_eq!(param("application_name").as_deref(), Some("greeted"));
    let refused = [
        (&[("DateStyle", "nonsense")][..], "22023", "DateStyle"),
        (&[("options", "-X")], "08P01", "-X"),
        (&[("options", "-c role=x")], "42501", "role"),
        (&[("role", "x")], "42501", "role"),
        (
            &[("session_authorization", "x")],
            "42501",
            "session_authorization",
        ),
        (&[("replication", "1")], "08P01", "replication"),
    ];
    for (extra, want_code, named) in refused {
        let Err((severity, code, message)) =
            wire::Wire::try_login(addr, &with(extra), &db.password).await
        else {
            panic!("{extra:?} was accepted");
        };
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", want_code),
            "{extra:?}: {message}"
        );
        assert!(message.contains(named), "{extra:?}: {message}");
    }
    // A refused value left nothing behind: the next client logs in and is served.
    let client = connect_app(&proxy, &db).await;
    assert_eq!(show(&client).await.split(',').next(), Some("0"));
}
