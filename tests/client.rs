//! What a client sees at the door and on the command line: authentication results, psql,
//! query cancellation, `pglease check` and `pglease dev`.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_app, fresh_db, proxy_toml, psql, start_proxy, try_connect};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn right_password_logs_in_and_reaches_the_upstream_role() {
    let db = fresh_db("authok").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let client = connect_app(&proxy, &db).await;
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    // The client said `user`; upstream it runs as the role from the credentials entry.
    assert_eq!(row.get::<_, String>(0), db.role);
    assert_eq!(row.get::<_, String>(1), db.name);
}

/// Connects with bad credentials and returns the error's SQLSTATE and message.
async fn refused(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
    dbname: &str,
) -> (SqlState, String) {
    let Err(err) = try_connect(addr, user, password, dbname).await else {
        panic!("{user} got in with password {password:?}");
    };
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {err}"));
    (db_error.code().clone(), db_error.message().to_owned())
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let db = fresh_db("authbad").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let addr = proxy.local_addr();

    let (code, wrong_msg) = refused(addr, &db.user, "not-the-password", &db.name).await;
    assert_eq!(code, SqlState::INVALID_PASSWORD, "{wrong_msg}");
    let unknown = "nobody_here";
    let (code, unknown_msg) = refused(addr, unknown, "whatever", &db.name).await;
    assert_eq!(code, SqlState::INVALID_PASSWORD, "{unknown_msg}");
    // Same text once the user name is taken out: nothing tells a prober the user is unknown.
    assert_eq!(
        wrong_msg.replace(&db.user, "USER"),
        unknown_msg.replace(unknown, "USER")
    );
    // Refusals leave the proxy serving.
    connect_app(&proxy, &db).await;
}

#[tokio::test]
async fn psql_runs_a_query_through_the_proxy() {
    let db = fresh_db("psql").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let out = psql(proxy.local_addr(), &db.user, &db.password, &db.name)
        .args(["-c", "select 1", "-c", "select current_user"])
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed: {stderr}");
    assert_eq!(stdout, format!("1\n{}\n", db.role), "stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_query_quickly() {
    let db = fresh_db("cancel").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, "")).await;
    let client = connect_app(&proxy, &db).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(10)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let result = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("the cancelled query returned within 5 s")
        .unwrap();
    let err = result.expect_err("pg_sleep(10) was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_rejects_an_unknown_key_with_exit_64_and_names_it() {
    let dir = std::env::temp_dir().join(format!("pglease-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let valid = "[proxy]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
                 [[databases]]\nname = \"app\"\npool_size = 5\ncredentials = \"app\"\n\n\
                 [credentials.app]\nsource = \"static\"\nusername = \"app\"\npassword = \"pw\"\n";
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pglease"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        (out.status.code(), all.into_owned())
    };
    let (code, output) = check(valid);
    assert_eq!(code, Some(0), "{output}");
    let (code, output) = check(&valid.replace("pool_size = 5", "pool_size = 5\npool_sise = 6"));
    assert_eq!(code, Some(64), "{output}");
    assert!(output.contains("pool_sise"), "{output}");
    let (code, output) = check(&valid.replace("[proxy]\n", "[proxy]\nlisten_backlogg = 5\n"));
    assert_eq!(code, Some(64), "{output}");
    assert!(output.contains("listen_backlogg"), "{output}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `pglease dev` end to end: it prints a URL that works, and Ctrl-C/SIGTERM stops it cleanly.
#[tokio::test]
async fn dev_serves_app_and_stops_on_sigterm() {
    // Make sure the binary finds the same PostgreSQL as the rest of the suite.
    let bin_dir = common::cluster().bin_dir().to_path_buf();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("PG_BIN", &bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match try_connect(addr, "app", "app", "app").await {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => panic!("pglease dev never served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    // dev logs in upstream with roles from the embedded issuer, acting as app_owner.
    let row = client
        .query_one("SELECT session_user::text, current_user::text", &[])
        .await
        .unwrap();
    let role: String = row.get(0);
    assert!(
        role.starts_with("pglease_"),
        "served by {role}, not an issued role"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "app_owner",
        "{role} does not act as app_owner"
    );
    drop(client);

    let pid = child.id().expect("dev is running").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("pglease dev exits within 20 s of SIGTERM")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let url = format!("psql \"postgresql://app:app@127.0.0.1:{port}/app\"");
    assert!(stdout.contains(&url), "{stdout}");
    assert!(stdout.contains("pgbench"), "{stdout}");
    assert!(
        try_connect(addr, "app", "app", "app").await.is_err(),
        "still serving after exit"
    );
    // Its throwaway cluster is gone too.
    let log = stdout
        .split("(log: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no log path in: {stdout}"));
    let cluster_dir = std::path::Path::new(log).parent().unwrap();
    assert!(!cluster_dir.exists(), "{} survived", cluster_dir.display());
}
