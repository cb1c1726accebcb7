//! Credential rotation under load, end to end: the embedded issuer hands out roles that live
//! a few seconds, while clients keep running transactions through the proxy. No client may see
//! an error, no upstream session may outlive its role's validity, and superseded roles must be
//! dropped once drained.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::SimpleQueryMessage;

#[path = "rotation/bounds.rs"]
mod bounds;
#[path = "rotation/lifecycle.rs"]
mod lifecycle;
#[path = "rotation/logins.rs"]
mod logins;
#[path = "rotation/moves.rs"]
mod moves;

/// The tests here each run real load against leases of a few seconds; on a 2-core machine
/// they would starve each other's rotations, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn issuer_toml(db: &TestDb, prefix: &str, mode: &str) -> String {
    let source = format!(
        r#"source = "issuer"
admin_url = "{admin}"
member_of = ["{role}"]
prefix = "{prefix}"
ttl = "8s"
max_ttl = "30s"
rotate_at = 0.3
safety_margin = "3s""#,
        admin = cluster().url(&db.name).expose(),
        role = db.role,
    );
    pooled_toml(db, mode, 4, "", "rotating", &source)
}

/// A connection straight to PostgreSQL as the database's owner, for setup and for looking.
async fn owner(db: &TestDb) -> tokio_postgres::Client {
    connect(
        upstream_addr(),
        &db.role,
        db.role_password.expose(),
        &db.name,
    )
    .await
}

/// Runs `toml` (whose listen address is replaced by a free port) in a real pglease process
/// and waits until it serves `db`; returns the process, a client through it, and the config
/// file to remove.
async fn run_binary(
    db: &TestDb,
    toml: &str,
) -> (
    tokio::process::Child,
    tokio_postgres::Client,
    std::path::PathBuf,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let toml = toml.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let path =
        std::env::temp_dir().join(format!("pglease-{}-{}.toml", db.name, std::process::id()));
    std::fs::write(&path, &toml).expect("config file");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pglease");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match try_connect(addr, &db.user, &db.password, &db.name).await {
            Ok(client) => break client,
            Err(e) if Instant::now() > until => panic!("pglease never served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (child, client, path)
}

async fn prefixed_roles(admin: &tokio_postgres::Client, prefix: &str) -> BTreeSet<String> {
    let rows = admin
        .query(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&format!("{prefix}_")],
        )
        .await
        .expect("listing roles");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotations_under_load_with_no_client_error_transaction_mode() {
    rotations_under_load("transaction", 8, "rotx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rotations_under_load_with_no_client_error_session_mode() {
    // One upstream per session: as many clients as the pool holds.
    rotations_under_load("session", 4, "rots").await;
}

async fn rotations_under_load(mode: &str, clients: i32, prefix: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db(prefix).await;
    let admin = superuser().await;
    let setup = connect(
        upstream_addr(),
        &db.role,
        db.role_password.expose(),
        &db.name,
    )
    .await;
    setup
        .batch_execute("CREATE TABLE ledger (client int, n int)")
        .await
        .expect("create table");
    let proxy = start_proxy(&issuer_toml(&db, prefix, mode)).await;
    let addr = proxy.local_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for id in 0..clients {
        let client = connect(addr, &db.user, &db.password, &db.name).await;
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = if n % 2 == 0 {
                    format!("BEGIN; INSERT INTO ledger VALUES ({id}, {n}); SELECT count(*) FROM ledger WHERE client = {id}; COMMIT")
                } else {
                    "SELECT current_user".to_owned()
                };
                if let Err(e) = client.simple_query(&sql).await {
                    panic!("client {id} saw an error during rotation: {}", describe(&e));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Watch PostgreSQL while the load runs: who is logged in, and is any of them expired?
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeSet::new();
    while seen.len() < 6 && Instant::now() < deadline {
        let rows = admin
            .query(
                "SELECT a.usename::text, (r.rolvaliduntil < now()) AS expired
                 FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
                 WHERE starts_with(a.usename::text, $1)",
                &[&format!("{prefix}_")],
            )
            .await
            .expect("sampling pg_stat_activity");
        for row in rows {
            let (name, expired): (String, Option<bool>) = (row.get(0), row.get(1));
            assert_ne!(
                expired,
                Some(true),
                "upstream session on expired role {name}"
            );
            seen.insert(name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a client task failed");
    }
    assert!(
        seen.len() >= 6,
        "only {} issued roles served traffic: {seen:?}",
        seen.len()
    );
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "too little traffic to prove anything"
    );

    // Once the load stops, every superseded role is drained and dropped: at most the
    // current one (and one being rotated in) remain, and none that served traffic earlier.
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        let left = prefixed_roles(&admin, prefix).await;
        let stale: Vec<_> = seen.iter().filter(|r| left.contains(*r)).collect();
        if left.len() <= 2 && stale.len() <= 1 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "superseded roles left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_proxy_leaves_no_expired_role_after_restart() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("reap").await;
    let admin = superuser().await;
    let prefix = "reapx";
    // A real pglease process, so SIGKILL gives it no chance to revoke anything.
    let (mut child, client, path) = run_binary(&db, &issuer_toml(&db, prefix, "transaction")).await;
    let issued = first_value(&client, "SELECT current_user").await;
    assert!(
        issued.starts_with("reapx_"),
        "served by {issued}, not an issued role"
    );
    drop(client);
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status:?}"
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        prefixed_roles(&admin, prefix).await.contains(&issued),
        "the killed proxy could not have dropped {issued}"
    );
    // Its roles outlive it and expire (here: at once, instead of waiting out the lease).
    admin
        .batch_execute(&format!(
            "ALTER ROLE \"{issued}\" VALID UNTIL '2000-01-01'; CREATE ROLE reapx_keepme NOLOGIN; CREATE ROLE other_reapx_1 NOLOGIN VALID UNTIL '2000-01-01'"
        ))
        .await
        .expect("expire the role");
    let restarted = start_proxy(&issuer_toml(&db, prefix, "transaction")).await;
    let settle = Instant::now() + Duration::from_secs(10);
    loop {
        let left = prefixed_roles(&admin, prefix).await;
        if !left.contains(&issued) {
            // Roles of others, and prefixed roles that never expire, are never touched.
            assert!(left.contains("reapx_keepme"), "{left:?}");
            assert!(!prefixed_roles(&admin, "other_reapx").await.is_empty());
            break;
        }
        assert!(
            Instant::now() < settle,
            "expired role {issued} survived the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    restarted.shutdown().await;
    admin
        .batch_execute("DROP ROLE reapx_keepme; DROP ROLE other_reapx_1")
        .await
        .expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_outage_keeps_traffic_on_the_current_lease_and_recovery_resumes_rotation() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("outage").await;
    let admin = superuser().await;
    // A dedicated, non-superuser issuer admin whose password the test can break.
    let issuer_admin = format!("{}_issuer", db.name);
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{issuer_admin}\" LOGIN CREATEROLE PASSWORD 'right';
             GRANT \"{}\" TO \"{issuer_admin}\" WITH ADMIN OPTION",
            db.role
        ))
        .await
        .expect("issuer admin");
    let prefix = "outx";
    let url = format!(
        "postgresql://{issuer_admin}:right@127.0.0.1:{}/{}",
        cluster().port(),
        db.name
    );
    let toml = issuer_toml(&db, prefix, "transaction")
        .replace(&cluster().url(&db.name).expose().to_string(), &url)
        .replace("ttl = \"8s\"", "ttl = \"12s\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    client.simple_query("SELECT 1").await.expect("first query");
    let first = creds.generation();

    // Outage: the admin role's password changes and its open session is cut.
    admin
        .batch_execute(&format!(
            "ALTER ROLE \"{issuer_admin}\" PASSWORD 'wrong';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{issuer_admin}'"
        ))
        .await
        .expect("break the issuer admin");
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        client
            .simple_query("SELECT current_user")
            .await
            .unwrap_or_else(|e| panic!("traffic stopped during the outage: {}", describe(&e)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = creds.state();
    assert_eq!(
        creds.generation(),
        first,
        "a lease was published during the outage"
    );
    assert!(
        state.last_error.is_some(),
        "the outage is not reported: {state:?}"
    );
    assert!(
        state.next_rotation.is_some(),
        "no retry is scheduled: {state:?}"
    );

    // Recovery: rotation resumes on its own, and clients follow without noticing.
    admin
        .batch_execute(&format!("ALTER ROLE \"{issuer_admin}\" PASSWORD 'right'"))
        .await
        .expect("repair the issuer admin");
    let until = Instant::now() + Duration::from_secs(40);
    while creds.generation() == first {
        assert!(
            Instant::now() < until,
            "rotation did not resume: {:?}",
            creds.state()
        );
        client
            .simple_query("SELECT 1")
            .await
            .expect("query after recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(creds.state().last_error.is_none());
    client
        .simple_query("SELECT 1")
        .await
        .expect("query on the new lease");
    proxy.shutdown().await;
}

async fn first_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_rotation_and_pinned_sessions_end_at_the_deadline() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("sess").await;
    let prefix = "sessx";
    let toml =
        issuer_toml(&db, prefix, "session").replace("max_ttl = \"30s\"", "max_ttl = \"10s\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let addr = proxy.local_addr();

    let mover = connect(addr, &db.user, &db.password, &db.name).await;
    mover
        .batch_execute(
            "SET work_mem = '7MB'; PREPARE plus_one(int) AS SELECT $1 + 1; LISTEN pglease_chan",
        )
        .await
        .expect("session state");
    let mover_role = first_value(&mover, "SELECT current_user").await;

    // Keep the connection task's result: PostgreSQL-style FATAL errors that arrive while the
    // client is idle are reported there by tokio-postgres.
    let (pinned, pinned_conn) = client_config(addr, &db.user, &db.password, &db.name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("pinned session");
    let pinned_task = tokio::spawn(pinned_conn);
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .expect("temp table");
    let pinned_role = first_value(&pinned, "SELECT current_user").await;

    // Two rotations while both sessions sit idle.
    let start = creds.generation();
    let until = Instant::now() + Duration::from_secs(20);
    while creds.generation() < start + 2 {
        assert!(Instant::now() < until, "no rotation: {:?}", creds.state());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle session moved: new role, same settings, statements and channels.
    let now_role = first_value(&mover, "SELECT current_user").await;
    assert_ne!(
        now_role, mover_role,
        "the session did not move off its retiring lease"
    );
    assert!(now_role.starts_with("sessx_"));
    assert_eq!(first_value(&mover, "SHOW work_mem").await, "7MB");
    assert_eq!(first_value(&mover, "EXECUTE plus_one(41)").await, "42");
    assert_eq!(
        first_value(
            &mover,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await,
        "pglease_chan"
    );

    // The session with a temporary table stayed on its lease...
    assert_eq!(
        first_value(&pinned, "SELECT current_user").await,
        pinned_role
    );
    first_value(&pinned, "SELECT count(*) FROM scratch").await;
    // ...until that lease's hard deadline, when it gets an error naming the reason.
    let until = Instant::now() + Duration::from_secs(20);
    let query_error = loop {
        match pinned.simple_query("SELECT 1").await {
            Ok(_) => {
                assert!(Instant::now() < until, "pinned session outlived its lease");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => break describe(&e),
        }
    };
    // The FATAL reaches the connection task when it arrives while the client is idle, and
    // the query when it arrives while one is in flight; the other side then only sees the
    // connection close.
    let error = match pinned_task.await.expect("connection task") {
        Err(_) if query_error.contains("57P01") => query_error,
        Err(e) => describe(&e),
        Ok(()) => panic!("the pinned session was closed without an error"),
    };
    // It names what pinned this session, not every reason a session can be pinned for.
    assert!(
        error.contains("57P01") && error.contains("deadline") && error.contains("temporary tables"),
        "unexpected error for the pinned session: {error}"
    );
    assert!(
        !error.contains("advisory") && !error.contains("WITH HOLD"),
        "the error lists reasons that do not apply: {error}"
    );
    // The moved session is unaffected.
    assert_eq!(first_value(&mover, "EXECUTE plus_one(1)").await, "2");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_open_at_the_hard_deadline_ends_with_an_error_naming_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("txdl").await;
    let toml =
        issuer_toml(&db, "txdl", "transaction").replace("max_ttl = \"30s\"", "max_ttl = \"10s\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let addr = proxy.local_addr();

    let (stuck, stuck_conn) = client_config(addr, &db.user, &db.password, &db.name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("client");
    let stuck_task = tokio::spawn(stuck_conn);
    stuck.batch_execute("BEGIN").await.expect("begin");
    let role = first_value(&stuck, "SELECT current_user").await;
    let generation = creds.generation();

    // Other clients keep working on newer leases while this transaction holds the old one.
    let other = connect(addr, &db.user, &db.password, &db.name).await;
    let until = Instant::now() + Duration::from_secs(30);
    let query_error = loop {
        match stuck.simple_query("SELECT 1").await {
            Ok(_) => {
                assert!(Instant::now() < until, "the transaction outlived its lease");
                first_value(&other, "SELECT 1").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => break describe(&e),
        }
    };
    assert!(creds.generation() > generation, "no rotation happened");
    // As above: the FATAL reaches whichever side was waiting when it arrived.
    let error = match stuck_task.await.expect("connection task") {
        Err(_) if query_error.contains("57P01") => query_error,
        Err(e) => describe(&e),
        Ok(()) => panic!("the transaction's client was closed without an error"),
    };
    assert!(
        error.contains("57P01") && error.contains("hard deadline") && error.contains("transaction"),
        "unexpected error for the open transaction: {error}"
    );
    assert_ne!(first_value(&other, "SELECT current_user").await, role);
    assert!(creds.state().expired_in_use >= 1, "{:?}", creds.state());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changed_before_the_source_noticed_is_followed_at_the_next_login() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("pwchg").await;
    let dir = std::env::temp_dir().join(format!("pglease-pwchg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("db.json");
    let write = |password: &str| {
        let doc = serde_json::json!({ "username": db.role, "password": password });
        std::fs::write(path.with_extension("tmp"), doc.to_string()).expect("write");
        std::fs::rename(path.with_extension("tmp"), &path).expect("rename");
    };
    write(db.role_password.expose());
    // Polled so rarely that only the refused login can make the proxy look again.
    let source = format!(
        "source = \"file\"\npath = \"{}\"\npoll_interval = \"1h\"\n",
        path.display()
    );
    let static_source = format!(
        "source = \"static\"\nusername = \"{}\"\npassword = \"{}\"\n",
        db.role,
        db.role_password.expose()
    );
    let toml = proxy_toml(&db, "session", 4, "").replace(&static_source, &source);
    assert!(
        toml.contains("source = \"file\""),
        "config not rewritten:\n{toml}"
    );
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    let addr = proxy.local_addr();

    let first = connect(addr, &db.user, &db.password, &db.name).await;
    first_value(&first, "SELECT 1").await;
    let generation = creds.generation();

    // The store changes the password in PostgreSQL and rewrites the file at once.
    let new_password = "changed-under-the-pool-7Q";
    superuser()
        .await
        .batch_execute(&format!(
            "ALTER ROLE \"{}\" PASSWORD '{new_password}'",
            db.role
        ))
        .await
        .expect("alter role");
    write(new_password);

    // A new session needs a new upstream: its login is refused, the proxy re-reads the
    // source and retries, and the client never sees the refusal.
    let second = connect(addr, &db.user, &db.password, &db.name).await;
    assert_eq!(first_value(&second, "SELECT 2").await, "2");
    assert!(creds.generation() > generation, "{:?}", creds.state());
    // The session already logged in is untouched.
    assert_eq!(first_value(&first, "SELECT 3").await, "3");
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
