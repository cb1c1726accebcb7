//! The admin console end to end: a real proxy in-process against the harness's PostgreSQL,
//! read with tokio-postgres' simple-query client (as scrapers do) and with psql.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pglease::app::Proxy;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A proxy whose local user is an admin, plus a second local user `plain` who is not.
async fn console_proxy(db: &TestDb, pool_size: usize) -> Proxy {
    let admin = format!("admin_users = [\"{}\"]", db.user);
    let mut toml = proxy_toml(db, "transaction", pool_size, &admin);
    toml.push_str("\n[[users]]\nname = \"plain\"\npassword = \"plain-pass\"\n");
    start_proxy(&toml).await
}

async fn admin(proxy: &Proxy, db: &TestDb) -> Client {
    connect(proxy.local_addr(), &db.user, &db.password, "pglease").await
}

/// One result table of a simple query: its column names and rows (by column name).
struct Table {
    columns: Vec<String>,
    rows: Vec<HashMap<String, Option<String>>>,
}

impl Table {
    fn cell(&self, row: usize, column: &str) -> &str {
        self.rows[row][column].as_deref().unwrap_or("<NULL>")
    }

    /// The index of the row whose `column` is `value`.
    fn find(&self, column: &str, value: &str) -> usize {
        (0..self.rows.len())
            .find(|&i| self.cell(i, column) == value)
            .unwrap_or_else(|| panic!("no row with {column} = {value}"))
    }
}

/// The tables a simple query returned, in order.
async fn tables(client: &Client, sql: &str) -> Vec<Table> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    let mut out: Vec<Table> = Vec::new();
    let mut current: Option<Table> = None;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                current = Some(Table {
                    columns: cols.iter().map(|c| c.name().to_owned()).collect(),
                    rows: Vec::new(),
                });
            }
            SimpleQueryMessage::Row(row) => {
                let t = current.as_mut().expect("a row before its description");
                let cells = (0..row.len())
                    .map(|i| (t.columns[i].clone(), row.get(i).map(str::to_owned)))
                    .collect();
                t.rows.push(cells);
            }
            SimpleQueryMessage::CommandComplete(_) => out.extend(current.take()),
            _ => {}
        }
    }
    out
}

async fn show(client: &Client, what: &str) -> Table {
    tables(client, &format!("SHOW {what}"))
        .await
        .pop()
        .unwrap_or_else(|| panic!("SHOW {what} returned no table"))
}

fn assert_columns(t: &Table, expected: &[&str]) {
    for c in expected {
        assert!(
            t.columns.iter().any(|n| n == c),
            "no column {c} in {:?}",
            t.columns
        );
    }
}

/// The SQLSTATE and message of a failed simple query.
async fn error_of(client: &Client, sql: &str) -> (String, String) {
    let e = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} succeeded"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test]
async fn show_pools_clients_servers_and_databases_see_a_client_inside_a_transaction() {
    let db = fresh_db("console_live").await;
    let proxy = console_proxy(&db, 3).await;
    let app = connect_app(&proxy, &db).await;
    app.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let console = admin(&proxy, &db).await;

    let pools = show(&console, "POOLS").await;
    assert_columns(
        &pools,
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_idle",
            "sv_active",
            "sv_idle",
            "sv_used",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "credentials",
            "generation",
            "paused",
        ],
    );
    assert_eq!(pools.rows.len(), 2, "one pool per local user");
    let p = pools.find("user", &db.user);
    assert_eq!(pools.cell(p, "database"), db.name);
    assert_eq!(
        pools.cell(p, "cl_active"),
        "1",
        "the client in its transaction"
    );
    assert_eq!(pools.cell(p, "cl_idle"), "0");
    assert_eq!(pools.cell(p, "sv_active"), "1");
    assert_eq!(pools.cell(p, "pool_mode"), "transaction");
    assert_eq!(pools.cell(p, "generation"), "1");
    assert_eq!(pools.cell(p, "paused"), "0");
    let other = pools.find("user", "plain");
    assert_eq!(
        pools.cell(other, "cl_active"),
        "0",
        "the other pool has no client"
    );

    let clients = show(&console, "CLIENTS").await;
    assert_columns(
        &clients,
        &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "local_addr",
            "local_port",
            "connect_time",
            "wait",
            "wait_us",
            "tls",
            "application_name",
            "id",
        ],
    );
    assert_eq!(clients.rows.len(), 1, "console sessions are not listed");
    assert_eq!(clients.cell(0, "user"), db.user);
    assert_eq!(clients.cell(0, "state"), "active");
    assert_eq!(clients.cell(0, "addr"), "127.0.0.1");
    assert_eq!(
        clients.cell(0, "local_port"),
        proxy.local_addr().port().to_string()
    );

    let servers = show(&console, "SERVERS").await;
    assert_columns(
        &servers,
        &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "local_addr",
            "local_port",
            "connect_time",
            "request_time",
            "id",
            "generation",
            "credentials",
            "role",
        ],
    );
    assert_eq!(servers.rows.len(), 1);
    assert_eq!(servers.cell(0, "type"), "S");
    assert_eq!(servers.cell(0, "state"), "active");
    assert_eq!(servers.cell(0, "port"), cluster().port().to_string());
    assert_eq!(servers.cell(0, "role"), db.role);
    assert_eq!(servers.cell(0, "credentials"), "upstream");
    assert_ne!(servers.cell(0, "request_time"), "<NULL>");
    let upstreams = show(&console, "UPSTREAMS").await;
    assert_eq!(upstreams.rows.len(), 1, "the alias shows the same");

    app.batch_execute("COMMIT").await.unwrap();
    let pools = show(&console, "POOLS").await;
    let p = pools.find("user", &db.user);
    assert_eq!(pools.cell(p, "cl_active"), "0", "back to idle after COMMIT");
    assert_eq!(pools.cell(p, "cl_idle"), "1");
    assert_eq!(pools.cell(p, "sv_idle"), "1");
    assert_eq!(show(&console, "SERVERS").await.cell(0, "state"), "idle");

    let dbs = show(&console, "DATABASES").await;
    assert_columns(
        &dbs,
        &[
            "name",
            "host",
            "port",
            "database",
            "pool_size",
            "pool_mode",
            "current_connections",
            "paused",
            "disabled",
        ],
    );
    assert_eq!(dbs.cell(0, "name"), db.name);
    assert_eq!(dbs.cell(0, "pool_size"), "3");
    assert_eq!(dbs.cell(0, "current_connections"), "1");

    drop(app);
    proxy.shutdown().await;
}

#[tokio::test]
async fn show_stats_users_leases_config_version_and_lists() {
    let db = fresh_db("console_show").await;
    let proxy = console_proxy(&db, 2).await;
    let console = admin(&proxy, &db).await;
    let app = connect_app(&proxy, &db).await;
    app.simple_query("SELECT 1").await.unwrap();
    // The data path's totals belong to the metrics work; here only the reading is checked.
    let pool = proxy
        .shared()
        .pool(&db.name, &db.user)
        .unwrap()
        .pool
        .clone();
    let stats = pool.stats();
    stats
        .transactions
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    stats
        .transaction_micros
        .fetch_add(400, std::sync::atomic::Ordering::Relaxed);
    stats
        .wait_micros
        .fetch_add(80, std::sync::atomic::Ordering::Relaxed);

    let t = show(&console, "STATS").await;
    assert_columns(
        &t,
        &[
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
        ],
    );
    assert_eq!(t.cell(0, "database"), db.name);
    assert!(t.cell(0, "total_xact_count").parse::<u64>().unwrap() >= 4);
    assert_eq!(
        t.cell(0, "avg_xact_time"),
        (stats.snapshot().transaction_micros / stats.snapshot().transactions).to_string()
    );

    let users = show(&console, "USERS").await;
    let admin_flag: HashMap<&str, &str> = (0..users.rows.len())
        .map(|i| (users.cell(i, "name"), users.cell(i, "admin")))
        .collect();
    assert_eq!(admin_flag[db.user.as_str()], "1");
    assert_eq!(admin_flag["plain"], "0");

    let leases = show(&console, "LEASES").await;
    assert_columns(
        &leases,
        &[
            "credentials",
            "generation",
            "role",
            "issued",
            "expires",
            "renewable",
            "connections",
            "state",
            "last_error",
            "seconds_to_cliff",
        ],
    );
    assert_eq!(leases.cell(0, "credentials"), "upstream");
    assert_eq!(leases.cell(0, "role"), db.role);
    assert_eq!(leases.cell(0, "generation"), "1");
    assert_eq!(leases.cell(0, "state"), "active");
    assert_eq!(
        leases.cell(0, "connections"),
        "1",
        "the upstream SELECT 1 opened"
    );
    assert_eq!(
        leases.cell(0, "seconds_to_cliff"),
        "<NULL>",
        "a static login never expires"
    );

    let config = show(&console, "CONFIG").await;
    assert_columns(&config, &["key", "value", "default", "changeable"]);
    let value: HashMap<&str, &str> = (0..config.rows.len())
        .map(|i| (config.cell(i, "key"), config.cell(i, "value")))
        .collect();
    assert_eq!(value["shutdown_timeout"], "2s");
    assert_eq!(value[format!("users.{}.password", db.user).as_str()], "***");
    assert_eq!(value["users.plain.password"], "***");
    let mut everything = String::new();
    for what in [
        "CONFIG",
        "POOLS",
        "CLIENTS",
        "SERVERS",
        "STATS",
        "DATABASES",
        "USERS",
        "LEASES",
        "LISTS",
    ] {
        for row in show(&console, what).await.rows {
            everything.extend(row.into_values().flatten().map(|v| v + "\n"));
        }
    }
    assert!(
        everything.contains(&db.role),
        "the role is shown, its password never"
    );
    for secret in [
        db.password.as_str(),
        db.role_password.expose(),
        "plain-pass",
    ] {
        assert!(
            !everything.contains(secret),
            "a SHOW command shows a secret"
        );
    }

    let version = show(&console, "VERSION").await;
    assert!(version.cell(0, "version").starts_with("pglease "));
    let lists = show(&console, "LISTS").await;
    let items: HashMap<&str, &str> = (0..lists.rows.len())
        .map(|i| (lists.cell(i, "list"), lists.cell(i, "items")))
        .collect();
    assert_eq!(items["users"], "2");
    assert_eq!(items["free_servers"], "1");

    drop(app);
    proxy.shutdown().await;
}

#[tokio::test]
async fn commands_are_case_insensitive_several_run_in_turn_and_errors_are_clear() {
    let db = fresh_db("console_parse").await;
    let proxy = console_proxy(&db, 2).await;
    let console = admin(&proxy, &db).await;

    let two = tables(&console, "show version; Show Lists;").await;
    assert_eq!(two.len(), 2, "both statements answered");
    assert_eq!(two[0].columns, ["version"]);
    assert_eq!(two[1].columns, ["list", "items"]);

    let (code, message) = error_of(&console, "SHOW NONSENSE").await;
    assert_eq!(code, "42601");
    assert!(
        message.contains("\"SHOW NONSENSE\"") && message.contains("SHOW POOLS"),
        "{message}"
    );
    let (code, message) = error_of(&console, "DROP TABLE x").await;
    assert_eq!(code, "42601");
    assert!(message.contains("DROP TABLE x"), "{message}");
    let (code, _) = error_of(&console, "KILL nobody").await;
    assert_eq!(code, "22023");
    let (code, _) = error_of(&console, "KILL 999999").await;
    assert_eq!(code, "42704");
    let (code, _) = error_of(&console, "PAUSE nosuchdb").await;
    assert_eq!(code, "3D000");

    // The extended protocol is refused with a clear error, and the session carries on.
    let e = console.query("SHOW POOLS", &[]).await.unwrap_err();
    let db_error = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "0A000");
    assert!(
        db_error.message().contains("simple query"),
        "{}",
        db_error.message()
    );
    assert_eq!(show(&console, "POOLS").await.rows.len(), 2);

    proxy.shutdown().await;
}

#[tokio::test]
async fn a_user_not_in_admin_users_is_refused() {
    let db = fresh_db("console_refuse").await;
    let proxy = console_proxy(&db, 2).await;
    let e = try_connect(proxy.local_addr(), "plain", "plain-pass", "pglease")
        .await
        .map(|_| ())
        .expect_err("a non-admin reached the console");
    let db_error = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "42501");
    assert!(
        db_error.message().contains("admin_users"),
        "{}",
        db_error.message()
    );
    // A wrong password for an admin is an authentication failure, as anywhere.
    let e = try_connect(proxy.local_addr(), &db.user, "wrong", "pglease")
        .await
        .map(|_| ())
        .expect_err("a wrong password reached the console");
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");
    proxy.shutdown().await;
}

#[tokio::test]
async fn psql_reads_show_pools() {
    let db = fresh_db("console_psql").await;
    let proxy = console_proxy(&db, 2).await;
    let output = pg_command(
        "psql",
        proxy.local_addr(),
        &db.user,
        &db.password,
        "pglease",
    )
    .args(["-X", "-c", "SHOW POOLS"])
    .output()
    .await
    .expect("psql runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("cl_active") && header.contains("maxwait_us"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&db.name) && stdout.contains("(2 rows)"),
        "{stdout}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn pause_holds_a_query_until_resume() {
    let db = fresh_db("console_pause").await;
    let proxy = console_proxy(&db, 2).await;
    let console = admin(&proxy, &db).await;
    let app = connect_app(&proxy, &db).await;
    app.batch_execute("BEGIN").await.unwrap();

    // PAUSE returns only once the upstream in use is given back.
    let pausing = tokio::spawn({
        let console = admin(&proxy, &db).await;
        let name = db.name.clone();
        async move { console.simple_query(&format!("PAUSE {name}")).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with an upstream still in use"
    );
    app.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pausing)
        .await
        .expect("PAUSE did not return after the upstream came back")
        .unwrap()
        .expect("PAUSE failed");

    let query = tokio::spawn(async move {
        let rows = app.simple_query("SELECT 42").await;
        (app, rows)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !query.is_finished(),
        "a query ran while the pool was paused"
    );
    let pools = show(&console, "POOLS").await;
    let p = pools.find("user", &db.user);
    assert_eq!(pools.cell(p, "paused"), "1");
    assert_eq!(pools.cell(p, "cl_waiting"), "1", "the held query waits");
    assert_ne!(pools.cell(p, "maxwait_us"), "0", "it has waited a while");

    console.simple_query("resume").await.expect("RESUME failed");
    let (_app, rows) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query did not finish after RESUME")
        .unwrap();
    assert!(rows.expect("the query failed").len() > 1);
    let pools = show(&console, "POOLS").await;
    assert_eq!(pools.cell(pools.find("user", &db.user), "paused"), "0");
    proxy.shutdown().await;
}

#[tokio::test]
async fn rotate_publishes_a_new_generation() {
    let db = fresh_db("console_rotate").await;
    // A source that takes a while to answer, so a ROTATE that returned before the new
    // generation is published would be seen doing so.
    let script = std::env::temp_dir().join(format!("pglease-{}-creds.sh", db.name));
    let document = format!(
        r#"{{"username":"{}","password":"{}"}}"#,
        db.role,
        db.role_password.expose()
    );
    std::fs::write(&script, format!("sleep 1\nprintf '%s' '{document}'\n")).unwrap();
    let source = format!(
        "source = \"exec\"\ncommand = [\"sh\", \"{}\"]",
        script.display()
    );
    let admin_line = format!("admin_users = [\"{}\"]", db.user);
    let proxy = start_proxy(&pooled_toml(
        &db,
        "transaction",
        2,
        &admin_line,
        "slow",
        &source,
    ))
    .await;
    let console = admin(&proxy, &db).await;
    let creds = proxy.shared().credentials()["slow"].clone();
    assert!(
        creds.wait_current(Duration::from_secs(20)).await.is_some(),
        "no first lease"
    );
    assert_eq!(show(&console, "LEASES").await.cell(0, "generation"), "1");

    console
        .simple_query("ROTATE slow")
        .await
        .expect("ROTATE failed");
    let leases = show(&console, "LEASES").await;
    assert_eq!(
        leases.cell(0, "generation"),
        "2",
        "ROTATE returns once the new generation is published"
    );
    assert_eq!(leases.cell(0, "source"), "exec");
    console
        .simple_query("rotate;")
        .await
        .expect("ROTATE of all failed");
    assert_eq!(show(&console, "LEASES").await.cell(0, "generation"), "3");
    let (code, _) = error_of(&console, "ROTATE nosuch").await;
    assert_eq!(code, "42704");
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&script);
}

#[tokio::test]
async fn kill_ends_that_client_and_only_it_and_its_transaction_is_rolled_back() {
    let db = fresh_db("console_kill").await;
    // One upstream: the survivor's query needs the very connection the victim held.
    let proxy = console_proxy(&db, 1).await;
    let console = admin(&proxy, &db).await;
    let mut config = client_config(proxy.local_addr(), &db.user, &db.password, &db.name);
    config.application_name("victim");
    let (victim, conn) = config.connect(NoTls).await.expect("victim connects");
    let victim_conn = tokio::spawn(conn);
    victim
        .batch_execute("CREATE TABLE k (n int)")
        .await
        .unwrap();
    victim
        .batch_execute("BEGIN; INSERT INTO k VALUES (1)")
        .await
        .unwrap();

    let clients = show(&console, "CLIENTS").await;
    let row = (0..clients.rows.len())
        .find(|&i| clients.cell(i, "application_name") == "victim")
        .expect("the victim is listed");
    let id = clients.cell(row, "id").to_owned();
    console
        .simple_query(&format!("KILL {id}"))
        .await
        .expect("KILL failed");

    let ended = tokio::time::timeout(Duration::from_secs(10), victim_conn)
        .await
        .expect("the killed client's connection stayed open")
        .unwrap();
    let e = ended.expect_err("the killed connection ended cleanly");
    let db_error = e.as_db_error().expect("a FATAL from the proxy");
    assert_eq!(db_error.code().code(), "57P01");
    assert!(
        db_error.message().contains("terminated by administrator"),
        "{}",
        db_error.message()
    );

    let survivor = connect_app(&proxy, &db).await;
    let rows = survivor
        .simple_query("SELECT count(*) FROM k")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("no row: {rows:?}");
    };
    assert_eq!(
        row.get(0),
        Some("0"),
        "the killed client's INSERT was rolled back"
    );
    assert_eq!(
        show(&console, "CLIENTS").await.rows.len(),
        1,
        "only the victim left"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_makes_the_proxy_stop() {
    let db = fresh_db("console_shutdown").await;
    let proxy = console_proxy(&db, 2).await;
    let console = admin(&proxy, &db).await;
    console
        .simple_query("SHUTDOWN")
        .await
        .expect("SHUTDOWN failed");
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown_requested())
        .await
        .expect("SHUTDOWN did not reach the process");
    proxy.shutdown().await;
}
