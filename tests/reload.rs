//! Reloading the config of a running proxy: a changed pool applies while unchanged pools keep
//! their upstream connections, an open transaction on a changed pool finishes, a removed
//! database refuses new clients, an invalid file changes nothing, and SIGHUP reloads the real
//! binary without ending it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestDb, connect, describe, fresh_db, superuser, try_connect};
use pglease::app::{Proxy, ReloadError};
use pglease::config::Config;
use tokio_postgres::Client;

/// Two databases, each with its own local user and static credentials; `a` has `size_a`
/// connections, `b` two. `extra` goes at the end (more sections).
fn two_databases(a: &TestDb, b: &TestDb, size_a: usize, extra: &str) -> String {
    let db = |d: &TestDb, entry: &str, size: usize| {
        format!(
            "[[databases]]\nname = \"{name}\"\nport = {port}\npool_size = {size}\n\
             credentials = \"{entry}\"\n\n\
             [credentials.{entry}]\nsource = \"static\"\nusername = \"{role}\"\n\
             password = \"{pw}\"\n\n",
            name = d.name,
            port = common::cluster().port(),
            role = d.role,
            pw = d.role_password.expose(),
        )
    };
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"2s\"\n\
         query_wait_timeout = \"2s\"\n\n\
         [[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
         [[users]]\nname = \"{}\"\npassword = \"{}\"\n\n{}{}{extra}",
        a.user,
        a.password,
        b.user,
        b.password,
        db(a, "ca", size_a),
        db(b, "cb", 2),
    )
}

/// A directory of its own for one test's config file.
fn config_file(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglease-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pglease.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_from(path: &Path) -> Proxy {
    let config = Config::load(path).unwrap_or_else(|e| panic!("test config rejected:\n{e}"));
    Proxy::start_from_file(config, path)
        .await
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
}

/// The backend pids logged in as `role`, as PostgreSQL lists them.
async fn backends(admin: &Client, role: &str) -> BTreeSet<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Opens `n` clients that each hold a transaction open on its own upstream; returns them and
/// their backend pids, or the first error (a wait past `query_wait_timeout`).
async fn hold_transactions(
    addr: std::net::SocketAddr,
    db: &TestDb,
    n: usize,
) -> Result<(Vec<Client>, BTreeSet<i32>), String> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(addr, &db.user, &db.password, &db.name).await);
    }
    let mut pids = BTreeSet::new();
    let mut pending = Vec::new();
    for client in &clients {
        pending.push(async move {
            client.batch_execute("BEGIN").await?;
            let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
            Ok::<i32, tokio_postgres::Error>(row.get(0))
        });
    }
    for result in futures_util::future::join_all(pending).await {
        pids.insert(result.map_err(|e| describe(&e))?);
    }
    Ok((clients, pids))
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_changed_pool_size_applies_while_an_unchanged_pool_keeps_its_connections() {
    let (a, b) = (fresh_db("rlsize_a").await, fresh_db("rlsize_b").await);
    let path = config_file("size", &two_databases(&a, &b, 1, ""));
    let proxy = start_from(&path).await;
    let addr = proxy.local_addr();
    let admin = superuser().await;
    let (b_clients, b_pids) = hold_transactions(addr, &b, 2).await.unwrap();
    for client in &b_clients {
        client.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(backends(&admin, &b.role).await, b_pids);
    let b_before = proxy.shared().pool(&b.name, &b.user).unwrap();
    // Pool size 1: a second transaction at once waits past query_wait_timeout.
    assert!(hold_transactions(addr, &a, 2).await.is_err());

    std::fs::write(&path, two_databases(&a, &b, 3, "")).unwrap();
    let summary = proxy.reload().await.expect("reload");
    let (held, a_pids) = hold_transactions(addr, &a, 3)
        .await
        .expect("three transactions at once on the resized pool");
    assert_eq!(a_pids.len(), 3);
    drop(held);
    for client in &b_clients {
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap();
        assert!(b_pids.contains(&row.get(0)), "b served by a new backend");
    }
    assert_eq!(backends(&admin, &b.role).await, b_pids);
    // Both local users have a pool on each database (no access lists).
    let mut on_a = vec![
        (a.name.clone(), a.user.clone()),
        (a.name.clone(), b.user.clone()),
    ];
    on_a.sort();
    assert_eq!(summary.pools_replaced, on_a);
    assert_eq!(summary.pools_kept, 2, "{summary}");
    let b_after = proxy.shared().pool(&b.name, &b.user).unwrap();
    assert!(b_after.tenure.same(&b_before.tenure), "pool b was rebuilt");
    assert!(summary.needs_restart.is_empty(), "{summary}");

    proxy.shutdown().await;
}

#[tokio::test]
async fn a_transaction_open_across_a_reload_finishes_then_moves_to_the_new_pool() {
    let (a, b) = (fresh_db("rltx_a").await, fresh_db("rltx_b").await);
    let path = config_file("tx", &two_databases(&a, &b, 2, ""));
    let proxy = start_from(&path).await;
    let client = connect(proxy.local_addr(), &a.user, &a.password, &a.name).await;
    client
        .batch_execute("CREATE TABLE t (v int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let old_pool = proxy.shared().pool(&a.name, &a.user).unwrap().pool.clone();

    std::fs::write(&path, two_databases(&a, &b, 4, "")).unwrap();
    proxy.reload().await.expect("reload");

    let still: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, pid, "the open transaction left its upstream");
    client
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let sum: i64 = client
        .query_one("SELECT sum(v) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 3);
    let new_pool = proxy.shared().pool(&a.name, &a.user).unwrap().pool.clone();
    assert_eq!(new_pool.settings().size, 4);
    assert!(
        new_pool.status().0 >= 1,
        "the next transaction did not use the new pool"
    );
    eventually("the old pool's connection closes", async || {
        old_pool.status().0 == 0
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_mode_client_finishes_its_session_on_the_replaced_pool() {
    let (a, b) = (fresh_db("rlses_a").await, fresh_db("rlses_b").await);
    let session = |size| {
        two_databases(&a, &b, size, "").replace(
            &format!("[[databases]]\nname = \"{}\"\n", a.name),
            &format!(
                "[[databases]]\nname = \"{}\"\npool_mode = \"session\"\n",
                a.name
            ),
        )
    };
    let path = config_file("ses", &session(2));
    let proxy = start_from(&path).await;
    let client = connect(proxy.local_addr(), &a.user, &a.password, &a.name).await;
    client.batch_execute("SET work_mem = '7MB'").await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    std::fs::write(&path, session(3)).unwrap();
    proxy.reload().await.expect("reload");
    let row = client
        .query_one("SELECT pg_backend_pid(), current_setting('work_mem')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), pid, "the session lost its upstream");
    assert_eq!(row.get::<_, String>(1), "7MB", "the session lost its state");
    let newcomer = connect(proxy.local_addr(), &a.user, &a.password, &a.name).await;
    let other: i32 = newcomer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(other, pid);
    let new_pool = proxy.shared().pool(&a.name, &a.user).unwrap().pool.clone();
    assert_eq!(
        new_pool.status().0,
        1,
        "the newcomer is not on the new pool"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_removed_database_refuses_new_clients_while_connected_ones_finish() {
    let (a, b) = (fresh_db("rlrm_a").await, fresh_db("rlrm_b").await);
    let path = config_file("rm", &two_databases(&a, &b, 2, ""));
    let proxy = start_from(&path).await;
    let addr = proxy.local_addr();
    let connected = connect(addr, &a.user, &a.password, &a.name).await;
    connected.batch_execute("SELECT 1").await.unwrap();
    let old_pool = proxy.shared().pool(&a.name, &a.user).unwrap().pool.clone();

    // Only b is left (its entry is the second half of the two-database file).
    let text = two_databases(&a, &b, 2, "");
    let b_start = text
        .find(&format!("[[databases]]\nname = \"{}\"", b.name))
        .unwrap();
    let a_start = text.find("[[databases]]").unwrap();
    let only_b = format!("{}{}", &text[..a_start], &text[b_start..]);
    std::fs::write(&path, only_b).unwrap();
    let summary = proxy.reload().await.expect("reload");
    assert!(
        summary
            .pools_removed
            .contains(&(a.name.clone(), a.user.clone())),
        "{summary}"
    );
    assert_eq!(summary.credentials_removed, ["ca"]);

    let refused = try_connect(addr, &a.user, &a.password, &a.name)
        .await
        .expect_err("a new client of the removed database is refused");
    let db_error = refused.as_db_error().expect("a PostgreSQL error");
    assert_eq!(db_error.code().code(), "3D000", "{}", describe(&refused));
    for _ in 0..3 {
        connected.batch_execute("SELECT 1").await.unwrap();
    }
    connect(addr, &b.user, &b.password, &b.name)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    drop(connected);
    eventually(
        "the removed pool closes after its last client",
        async || old_pool.status().0 == 0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_old_config_keeps_serving() {
    let (a, b) = (fresh_db("rlbad_a").await, fresh_db("rlbad_b").await);
    let path = config_file("bad", &two_databases(&a, &b, 2, ""));
    let proxy = start_from(&path).await;
    let addr = proxy.local_addr();
    let before = proxy.shared().pool(&a.name, &a.user).unwrap();

    let broken = two_databases(&a, &b, 0, "").replace("[proxy]\n", "[proxy]\nlisn = 1\n");
    std::fs::write(&path, broken).unwrap();
    let err = proxy
        .reload()
        .await
        .expect_err("an invalid file is refused");
    assert!(matches!(err, ReloadError::Invalid { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("pool_size") && text.contains("lisn"),
        "{text}"
    );
    // The console's RELOAD goes through the same path and gets the reason back.
    let console = proxy.shared().control.reload().await;
    let reason = console.expect_err("RELOAD refused too");
    assert!(reason.contains("pool_size"), "{reason}");

    let after = proxy.shared().pool(&a.name, &a.user).unwrap();
    assert!(
        after.tenure.same(&before.tenure),
        "the refused file changed a pool"
    );
    assert_eq!(after.pool.settings().size, 2);
    connect(addr, &a.user, &a.password, &a.name)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();

    // Fixed, the console's RELOAD applies it and says what it did.
    std::fs::write(&path, two_databases(&a, &b, 3, "")).unwrap();
    let done = proxy.shared().control.reload().await.expect("RELOAD");
    assert!(
        done.contains("replaced") && done.contains(&a.name),
        "{done}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_new_password_and_a_changed_credentials_entry_apply_to_new_logins() {
    let (a, b) = (fresh_db("rlpw_a").await, fresh_db("rlpw_b").await);
    let path = config_file("pw", &two_databases(&a, &b, 2, ""));
    let proxy = start_from(&path).await;
    let addr = proxy.local_addr();
    let connected = connect(addr, &b.user, &b.password, &b.name).await;
    connected.batch_execute("SELECT 1").await.unwrap();
    let old_pool = proxy.shared().pool(&b.name, &b.user).unwrap().pool.clone();

    // The upstream role gets a new password, the file both it and a new local password.
    let admin = superuser().await;
    let role = postgres_protocol::escape::escape_identifier(&b.role);
    admin
        .batch_execute(&format!("ALTER ROLE {role} PASSWORD 'upstream-2'"))
        .await
        .unwrap();
    let changed = two_databases(&a, &b, 2, "")
        .replace(b.role_password.expose(), "upstream-2")
        .replace(
            &format!("password = \"{}\"", b.password),
            "password = \"local-2\"",
        );
    std::fs::write(&path, changed).unwrap();
    let summary = proxy.reload().await.expect("reload");
    assert_eq!(
        summary.passwords_changed,
        std::slice::from_ref(&b.user),
        "{summary}"
    );
    assert_eq!(summary.credentials_replaced, ["cb"], "{summary}");

    let old_login = try_connect(addr, &b.user, &b.password, &b.name).await;
    let refused = old_login.expect_err("the old local password still works");
    assert_eq!(refused.as_db_error().unwrap().code().code(), "28P01");
    let fresh = connect(addr, &b.user, "local-2", &b.name).await;
    fresh.batch_execute("SELECT 1").await.unwrap();
    // The client connected before moves to the new pool, on the new upstream password.
    connected.batch_execute("SELECT 1").await.unwrap();
    eventually("the replaced pool drains", async || {
        old_pool.status().0 == 0
    })
    .await;
    proxy.shutdown().await;
}

/// `db` served in transaction mode with leases from the embedded issuer, lasting `ttl`.
fn issuer_toml(db: &TestDb, ttl: &str) -> String {
    let source = format!(
        "source = \"issuer\"\nadmin_url = \"{admin}\"\nmember_of = [\"{role}\"]\n\
         prefix = \"rliss\"\nttl = \"{ttl}\"\nmax_ttl = \"10m\"\nrotate_at = 0.9",
        admin = common::cluster().url(&db.name).expose(),
        role = db.role,
    );
    common::pooled_toml(db, "transaction", 2, "", "issued", &source)
}

#[tokio::test]
async fn a_changed_credentials_entry_is_revoked_once_its_idle_clients_moved() {
    let db = fresh_db("rliss").await;
    let path = config_file("issuer", &issuer_toml(&db, "2m"));
    let proxy = start_from(&path).await;
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    let who = async || -> String {
        let row = client.query_one("SELECT session_user::text", &[]).await;
        row.unwrap().get(0)
    };
    let first = who().await;

    std::fs::write(&path, issuer_toml(&db, "3m")).unwrap();
    let summary = proxy.reload().await.expect("reload");
    assert_eq!(summary.credentials_replaced, ["issued"], "{summary}");
    // The client sends nothing: being idle, it lets go of the old pool at once, which
    // closes, and the old entry's rotator then drops its role.
    let admin = superuser().await;
    eventually("the old lease's role is dropped", async || {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_roles WHERE rolname = $1",
                &[&first],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
    let second = who().await;
    assert_ne!(second, first, "still served by the old lease");
    proxy.shutdown().await;
}

#[tokio::test]
async fn keys_bound_at_start_are_reported_and_keep_their_value() {
    let (a, b) = (fresh_db("rlkeys_a").await, fresh_db("rlkeys_b").await);
    let path = config_file("keys", &two_databases(&a, &b, 2, ""));
    let proxy = start_from(&path).await;
    let addr = proxy.local_addr();
    let moved = two_databases(&a, &b, 2, "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:1\"\nmax_message_size = 100000",
    );
    std::fs::write(&path, moved).unwrap();
    let summary = proxy.reload().await.expect("reload");
    assert_eq!(summary.needs_restart, ["listen", "max_message_size"]);
    assert!(summary.pools_replaced.is_empty(), "{summary}");
    connect(addr, &b.user, &b.password, &b.name)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    proxy.shutdown().await;
}

/// A free port for the binary to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_which_stays_up() {
    let (a, b) = (fresh_db("rlhup_a").await, fresh_db("rlhup_b").await);
    let port = free_port();
    let text = |size| {
        two_databases(&a, &b, size, "").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
    };
    let path = config_file("hup", &text(1));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().expect("running");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    let b_client = loop {
        match try_connect(addr, &b.user, &b.password, &b.name).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("pglease never served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let b_pid: i32 = b_client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hold_transactions(addr, &a, 2).await.is_err(), "pool a is 1");

    std::fs::write(&path, text(2)).unwrap();
    signal(pid, "HUP");
    eventually("the resized pool serves two transactions", async || {
        hold_transactions(addr, &a, 2).await.is_ok()
    })
    .await;
    let again: i32 = b_client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, b_pid, "the unchanged pool lost its connection");

    // An invalid file on SIGHUP is refused; the process stays and serves.
    std::fs::write(&path, "[proxy\n").unwrap();
    signal(pid, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );
    b_client.batch_execute("SELECT 1").await.unwrap();
    drop(b_client);

    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("config reloaded"), "{stderr}");
    assert!(stderr.contains("config reload refused"), "{stderr}");
}
