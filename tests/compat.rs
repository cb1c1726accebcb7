//! Real drivers through pglease: psycopg 3, asyncpg, node-postgres and pgjdbc each run their
//! compatibility program (tests/compat/) against PostgreSQL directly, against the proxy in
//! session mode and in transaction mode. A program prints one line per check and exits
//! non-zero when any fails; its whole output becomes the failure message here.
//!
//! Missing drivers fail loudly with what to install (`.ci/run` installs them), never a skip.

mod common;
#[path = "compat/rotating.rs"]
mod rotating;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{TestDb, fresh_db, proxy_toml, start_proxy, upstream_addr};

/// Checks transaction mode cannot pass yet (none: named prepared statements run there with
/// every driver's defaults, session `SET` follows its client, and LISTEN/NOTIFY goes through
/// the pool's listener connection). A name here switches its check off in transaction mode.
const NOT_YET_IN_TRANSACTION_MODE: &[&str] = &[];

/// While this check is left out, the drivers are configured for a transaction pooler
/// (asyncpg `statement_cache_size=0`, pgjdbc `prepareThreshold=0`, psycopg
/// `prepare_threshold=None`, node-postgres unnamed queries).
const NAMED_STATEMENTS: &str = "named_statements";

/// Every check a program runs, in the order it runs them.
const ALL_CHECKS: &[&str] = &[
    NAMED_STATEMENTS,
    "shared_statement_names",
    "binary_results",
    "pipeline",
    "copy",
    "large_result",
    "cancel",
    "sqlstates",
    "rollback_after_error",
    "set_isolation",
    "listen_notify",
];

/// Upstreams per session-mode pool: one per connection a program holds at once, with room
/// for the replacements a rotation logs in ahead of need.
const SESSION_POOL: usize = 10;

/// Upstreams per transaction-mode pool: two, so a program's connections share upstreams
/// while the cancel check still has one free for its watcher.
const TRANSACTION_POOL: usize = 2;

/// Generous bound for one program's whole run on a busy two-core machine.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);

/// One driver's program and what it needs installed.
#[derive(Debug, Clone, Copy)]
enum Driver {
    Psycopg,
    Asyncpg,
    NodePostgres,
    Pgjdbc,
}

impl Driver {
    /// A short lowercase tag for role and database names.
    fn short(self) -> &'static str {
        match self {
            Driver::Psycopg => "psycopg",
            Driver::Asyncpg => "asyncpg",
            Driver::NodePostgres => "node",
            Driver::Pgjdbc => "jdbc",
        }
    }
}

/// Where the program connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Session,
    Transaction,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Session => "session",
            Mode::Transaction => "transaction",
        }
    }

    /// The checks not run in this mode.
    fn not_yet(self) -> &'static [&'static str] {
        match self {
            Mode::Transaction => NOT_YET_IN_TRANSACTION_MODE,
            Mode::Direct | Mode::Session => &[],
        }
    }
}

/// Where the driver is aimed.
struct Target {
    /// PostgreSQL itself (direct) or the proxy's listener.
    addr: SocketAddr,
    /// The upstream role (direct) or the proxy's local user.
    user: String,
    /// That user's password, passed on the program's command line (test credentials only).
    password: String,
    /// The database, named the same upstream and at the proxy.
    dbname: String,
}

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// Fails, naming what to install, unless `path` exists.
fn require(path: &Path, what: &str, install: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({} not found). Install it with `bash .ci/run`, or by hand: {install}",
        path.display()
    );
}

/// The python of the compat virtualenv, with the drivers in it.
fn venv_python(module: &str) -> PathBuf {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    let hint = "python3 -m venv tests/compat/.venv && \
                tests/compat/.venv/bin/pip install -r tests/compat/python/requirements.txt";
    require(&python, "the compat virtualenv", hint);
    let site = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .expect("the venv's python runs");
    assert!(
        site.status.success(),
        "python module {module} is missing from tests/compat/.venv: {hint}\n{}",
        String::from_utf8_lossy(&site.stderr)
    );
    python
}

/// The program line (executable and leading arguments) for `driver`.
fn program(driver: Driver) -> (PathBuf, Vec<String>) {
    let dir = compat_dir();
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    match driver {
        Driver::Psycopg => (
            venv_python("psycopg"),
            vec![path("python/psycopg_checks.py")],
        ),
        Driver::Asyncpg => (
            venv_python("asyncpg"),
            vec![path("python/asyncpg_checks.py")],
        ),
        Driver::NodePostgres => {
            let hint = "cd tests/compat/node && npm ci";
            require(&dir.join("node/node_modules/pg"), "node-postgres", hint);
            require(
                &dir.join("node/node_modules/pg-copy-streams"),
                "pg-copy-streams",
                hint,
            );
            (PathBuf::from("node"), vec![path("node/checks.js")])
        }
        Driver::Pgjdbc => {
            let hint = "apt-get install default-jdk-headless libpostgresql-jdbc-java";
            let jar = Path::new("/usr/share/java/postgresql.jar");
            require(jar, "pgjdbc", hint);
            let java = std::process::Command::new("java").arg("-version").output();
            assert!(
                java.is_ok_and(|o| o.status.success()),
                "java is missing: {hint}"
            );
            // The single-file source launcher compiles the program in memory: no build step.
            let args = vec![
                "-cp".to_owned(),
                jar.to_string_lossy().into_owned(),
                path("jdbc/Checks.java"),
            ];
            (PathBuf::from("java"), args)
        }
    }
}

/// The checks `driver` leaves out in `mode`: the mode's own list, plus what the driver
/// cannot do under its transaction-pooler settings (pgjdbc asks for binary results only on
/// statements it prepared by name).
fn skipped(driver: Driver, mode: Mode) -> Vec<&'static str> {
    let mut skip = mode.not_yet().to_vec();
    if skip.contains(&NAMED_STATEMENTS) && matches!(driver, Driver::Pgjdbc) {
        skip.push("binary_results");
    }
    skip
}

/// Runs `driver`'s program against `target` and fails with its output unless every check
/// that should run printed `ok`; `also_skip` leaves out more than the mode's own list.
async fn run_program(driver: Driver, mode: Mode, target: &Target, also_skip: &[&'static str]) {
    let (exe, mut args) = program(driver);
    let mut skip = skipped(driver, mode);
    for check in also_skip {
        if !skip.contains(check) {
            skip.push(check);
        }
    }
    args.extend(
        [
            "--host",
            &target.addr.ip().to_string(),
            "--port",
            &target.addr.port().to_string(),
            "--user",
            &target.user,
            "--password",
            &target.password,
            "--dbname",
            &target.dbname,
            "--mode",
            mode.as_str(),
            "--skip",
            &skip.join(","),
        ]
        .map(str::to_owned),
    );
    if skip.contains(&NAMED_STATEMENTS) {
        args.push("--pooler-settings".to_owned());
    }
    let child = tokio::process::Command::new(&exe)
        .args(&args)
        .current_dir(compat_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROGRAM_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{driver:?} in {mode:?} mode ran over {PROGRAM_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let missing: Vec<&str> = ALL_CHECKS
        .iter()
        .copied()
        .filter(|c| !skip.contains(c))
        .filter(|c| !stdout.lines().any(|l| l.starts_with(&format!("ok   {c} "))))
        .collect();
    assert!(
        out.status.success() && missing.is_empty(),
        "{driver:?} in {mode:?} mode: {} (checks not passed: {missing:?})\n\
         --- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
}

/// Starts what `mode` needs and runs `driver`'s program through it.
async fn check(driver: Driver, mode: Mode) {
    let tag = format!("{}_{}", driver.short(), mode.as_str());
    let db: TestDb = fresh_db(&tag).await;
    if mode == Mode::Direct {
        let target = Target {
            addr: upstream_addr(),
            user: db.role.clone(),
            password: db.role_password.expose().to_owned(),
            dbname: db.name.clone(),
        };
        return run_program(driver, mode, &target, &[]).await;
    }
    let pool = match mode {
        Mode::Transaction => TRANSACTION_POOL,
        Mode::Direct | Mode::Session => SESSION_POOL,
    };
    let proxy = start_proxy(&proxy_toml(&db, mode.as_str(), pool, "")).await;
    let target = Target {
        addr: proxy.local_addr(),
        user: db.user.clone(),
        password: db.password.clone(),
        dbname: db.name.clone(),
    };
    run_program(driver, mode, &target, &[]).await;
    proxy.shutdown().await;
}

macro_rules! compat_tests {
    ($($name:ident: $driver:ident in $mode:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            check(Driver::$driver, Mode::$mode).await;
        }
    )*};
}

compat_tests! {
    psycopg_direct: Psycopg in Direct;
    psycopg_session_mode: Psycopg in Session;
    psycopg_transaction_mode: Psycopg in Transaction;
    asyncpg_direct: Asyncpg in Direct;
    asyncpg_session_mode: Asyncpg in Session;
    asyncpg_transaction_mode: Asyncpg in Transaction;
    node_postgres_direct: NodePostgres in Direct;
    node_postgres_session_mode: NodePostgres in Session;
    node_postgres_transaction_mode: NodePostgres in Transaction;
    pgjdbc_direct: Pgjdbc in Direct;
    pgjdbc_session_mode: Pgjdbc in Session;
    pgjdbc_transaction_mode: Pgjdbc in Transaction;
}

macro_rules! rotating_tests {
    ($($name:ident: $driver:ident in $mode:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            rotating::check_rotating(Driver::$driver, Mode::$mode).await;
        }
    )*};
}

rotating_tests! {
    psycopg_session_mode_while_leases_rotate: Psycopg in Session;
    psycopg_transaction_mode_while_leases_rotate: Psycopg in Transaction;
    asyncpg_session_mode_while_leases_rotate: Asyncpg in Session;
    asyncpg_transaction_mode_while_leases_rotate: Asyncpg in Transaction;
    node_postgres_session_mode_while_leases_rotate: NodePostgres in Session;
    node_postgres_transaction_mode_while_leases_rotate: NodePostgres in Transaction;
    pgjdbc_session_mode_while_leases_rotate: Pgjdbc in Session;
    pgjdbc_transaction_mode_while_leases_rotate: Pgjdbc in Transaction;
}
