//! The log output of the real `pglease` binary: `--log-format json` turns every stdout and
//! stderr line into one JSON object, audit events (and only they) carry `"audit":true` with
//! their credentials name, no secret reaches any line, and `[proxy] log_format` picks the
//! format when the flag is absent (the flag wins when both are given).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// A pglease process started from a config file, with its output being collected.
struct Running {
    child: tokio::process::Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    config: PathBuf,
    addr: SocketAddr,
}

/// Reads a pipe to its end on a task, so a chatty process never blocks on a full pipe.
fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        pipe.read_to_string(&mut text).await.expect("utf-8 output");
        text
    })
}

/// Writes `toml` (its `listen = "127.0.0.1:0"` replaced by a free port) to a file and runs
/// the binary on it with `args` before `--config`.
fn spawn(tag: &str, toml: &str, args: &[&str]) -> Running {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let toml = toml.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = std::env::temp_dir().join(format!("pglease-{tag}-{}.toml", std::process::id()));
    std::fs::write(&config, &toml).expect("config file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
        .args(args)
        .arg("--config")
        .arg(&config)
        // The filter is the process's default, whatever the environment of the test run says.
        .env_remove("PGLEASE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pglease");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    Running {
        child,
        stdout,
        stderr,
        config,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

impl Running {
    /// A client through the proxy once it serves `dbname`.
    async fn client(&self, db: &TestDb, dbname: &str) -> tokio_postgres::Client {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match try_connect(self.addr, &db.user, &db.password, dbname).await {
                Ok(client) => return client,
                Err(e) if Instant::now() > until => panic!("pglease never served: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Stops the process with SIGTERM and returns every line it wrote on stdout and stderr.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("pid").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("pglease did not stop after SIGTERM")
            .expect("wait");
        let _ = std::fs::remove_file(&self.config);
        let stdout = self.stdout.await.expect("stdout reader");
        let stderr = self.stderr.await.expect("stderr reader");
        assert_eq!(status.code(), Some(0), "{status:?}\n{stderr}");
        stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Two databases on `db`: `{db}` with static credentials `fixed` (their password is known,
/// so the test can look for it) and `{db}_issued` with issuer credentials `issued`.
fn two_sources(db: &TestDb, extra_proxy_lines: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
shutdown_timeout = "2s"
{extra_proxy_lines}

[[users]]
name = "{user}"
password = "{password}"

[[databases]]
name = "{name}"
host = "127.0.0.1"
port = {port}
pool_size = 2
credentials = "fixed"

[[databases]]
name = "{name}_issued"
host = "127.0.0.1"
port = {port}
dbname = "{name}"
pool_size = 2
credentials = "issued"

[credentials.fixed]
source = "static"
username = "{name}"
password = "{role_password}"

[credentials.issued]
source = "issuer"
admin_url = "{admin}"
member_of = ["{name}"]
prefix = "logj"
ttl = "5m"
"#,
        user = db.user,
        password = db.password,
        name = db.name,
        port = cluster().port(),
        role_password = db.role_password.expose(),
        admin = cluster().url(&db.name).expose(),
    )
}

/// Every line parsed as a JSON object; panics naming the first line that is not one.
fn json_lines(lines: &[String]) -> Vec<serde_json::Map<String, Value>> {
    lines
        .iter()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => map,
            _ => panic!(
                "not a JSON object line: {line}\nall lines:\n{}",
                lines.join("\n")
            ),
        })
        .collect()
}

fn has_event(events: &[serde_json::Map<String, Value>], credentials: &str, event: &str) -> bool {
    events.iter().any(|e| {
        e.get("audit") == Some(&Value::Bool(true))
            && e.get("credentials").and_then(Value::as_str) == Some(credentials)
            && e.get("event").and_then(Value::as_str) == Some(event)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_audit_events_marked_and_no_secret() {
    let db = fresh_db("logjson").await;
    let running = spawn(&db.name, &two_sources(&db, ""), &["--log-format", "json"]);
    let fixed = running.client(&db, &db.name).await;
    fixed.simple_query("SELECT 1").await.expect("query");
    let issued_db = format!("{}_issued", db.name);
    let issued = running.client(&db, &issued_db).await;
    issued.simple_query("SELECT 1").await.expect("query");
    // A refused login logs a warning of its own: it too must be JSON and carry no password.
    let refused = try_connect(running.addr, &db.user, "wrong-password-xyz", &db.name).await;
    assert!(refused.is_err(), "a wrong password was let in");
    drop((fixed, issued));
    let lines = running.stop().await;

    let events = json_lines(&lines);
    for (line, event) in lines.iter().zip(&events) {
        let on_audit_target = event.get("target").and_then(Value::as_str) == Some("pglease::audit");
        let marked = event.get("audit") == Some(&Value::Bool(true));
        assert_eq!(
            on_audit_target, marked,
            "audit target and field disagree: {line}"
        );
        assert!(marked || !event.contains_key("audit"), "{line}");
    }
    assert!(
        has_event(&events, "fixed", "published"),
        "no audit line for the static lease: {lines:#?}"
    );
    assert!(
        has_event(&events, "issued", "published") && has_event(&events, "issued", "revoked"),
        "no audit lines for the issued lease's publication and revocation: {lines:#?}"
    );
    let secrets = [
        db.password.as_str(),
        db.role_password.expose(),
        cluster().superuser_password().expose(),
        "wrong-password-xyz",
    ];
    for line in &lines {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret reached the log: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_picks_the_log_format_and_the_flag_overrides_it() {
    let db = fresh_db("logcfg").await;
    let toml = proxy_toml(&db, "transaction", 2, "log_format = \"json\"");

    let running = spawn(&db.name, &toml, &[]);
    running.client(&db, &db.name).await;
    let lines = running.stop().await;
    let events = json_lines(&lines);
    assert!(
        has_event(&events, "upstream", "published"),
        "no JSON audit line with `log_format = \"json\"`: {lines:#?}"
    );

    let running = spawn(&db.name, &toml, &["--log-format", "text"]);
    running.client(&db, &db.name).await;
    let lines = running.stop().await;
    assert!(
        lines.iter().any(|l| l.contains("lease published")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "`--log-format text` still wrote JSON: {line}"
        );
    }
}

/// The session enters its client's span only where it may log, not on every poll: a line it
/// logs after many requests (here `idle_transaction_timeout` ending it) still names the
/// client's span, id and database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logs_inside_its_client_span() {
    let db = fresh_db("logspan").await;
    let toml = two_sources(&db, "idle_transaction_timeout = \"1s\"");
    let running = spawn(&db.name, &toml, &["--log-format", "json"]);
    let client = running.client(&db, &db.name).await;
    for _ in 0..20 {
        client.simple_query("SELECT 1").await.expect("query");
    }
    client.simple_query("BEGIN").await.expect("begin");
    // Ended by idle_transaction_timeout; the generous bound only guards against a hang.
    let until = Instant::now() + Duration::from_secs(60);
    while !client.is_closed() {
        assert!(Instant::now() < until, "the idle client was never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = running.stop().await;
    let events = json_lines(&lines);
    let ended = events
        .iter()
        .find(|e| e.get("message").and_then(Value::as_str) == Some("ending an idle client"))
        .unwrap_or_else(|| panic!("no idle-timeout line in:\n{}", lines.join("\n")));
    let span = ended.get("span").and_then(Value::as_object);
    assert_eq!(
        span.and_then(|s| s.get("name")).and_then(Value::as_str),
        Some("client"),
        "{ended:?}"
    );
    assert!(
        span.and_then(|s| s.get("id")).is_some_and(Value::is_u64),
        "{ended:?}"
    );
    assert_eq!(
        span.and_then(|s| s.get("db")).and_then(Value::as_str),
        Some(db.name.as_str()),
        "{ended:?}"
    );
}

/// `workers = 1` runs the proxy on a current-thread runtime: it still serves clients at the
/// same time (one holding a transaction open while the other runs queries), logs them in with
/// SCRAM (hashed off that one thread), issues a role for the second database and stops
/// cleanly on SIGTERM, revoking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_clients_at_once_and_stops_cleanly() {
    let db = fresh_db("oneworker").await;
    let toml = two_sources(&db, "workers = 1");
    let running = spawn("oneworker", &toml, &[]);
    let fixed = running.client(&db, &db.name).await;
    let issued = running.client(&db, &format!("{}_issued", db.name)).await;
    fixed.batch_execute("BEGIN").await.expect("begin");
    let (held, other) = tokio::join!(
        async {
            for _ in 0..20 {
                fixed.simple_query("SELECT 1").await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            fixed.batch_execute("COMMIT").await
        },
        async {
            for _ in 0..50 {
                issued.simple_query("SELECT 1").await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }
    );
    held.expect("the client holding a transaction");
    other.expect("the other client, served meanwhile");
    let lines = running.stop().await;
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("lease revoked")),
        "the issued role was not revoked at stop:\n{}",
        lines.join("\n")
    );
}
