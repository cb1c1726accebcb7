//! The integration suite's harness: one throwaway PostgreSQL per test binary, a fresh role and
//! database per test (so tests run in parallel), and helpers to start the proxy in-process and
//! reach it with tokio-postgres, psql and pgbench.

// Each test binary compiles this module and uses only some of its helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pglease::app::Proxy;
use pglease::config::Config;
use pglease::dev::cluster::{Cluster, ClusterOptions};
use pglease::secret::Secret;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub mod http;
pub mod log;
pub mod tls;
pub mod vault_standin;

/// What to install when a client program is missing; failing (never skipping) keeps a
/// machine without PostgreSQL from passing the suite by accident.
const CLIENT_INSTALL_HINT: &str = "install the PostgreSQL client programs \
     (Debian 12: `apt-get install postgresql-client`; some releases ship pgbench in \
     postgresql-contrib), or set PG_BIN to a directory that has them";

/// The binary's cluster. Started once, blocking, and holding nothing runtime-bound: every
/// `#[tokio::test]` has its own runtime. The watcher removes it when the binary exits, as
/// statics are never dropped. A failed start is kept so every test fails fast with the cause.
static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// Distinguishes the roles and databases of tests running at the same time.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The shared cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    let started = CLUSTER
        .get_or_init(|| Cluster::start(ClusterOptions::default()).map_err(|e| e.to_string()));
    match started {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the test PostgreSQL: {e}"),
    }
}

/// The cluster's TCP address, for tools that take host and port.
pub fn upstream_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster().port()))
}

/// A superuser connection to database `postgres`, bound to the calling test's runtime.
pub async fn superuser() -> Client {
    let url = cluster().url("postgres");
    let (client, conn) = tokio_postgres::connect(url.expose(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("superuser connection failed: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// One test's world: an upstream role owning a database of the same name, and the local
/// user the proxy config lets in.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Database name, both upstream and as clients ask for it.
    pub name: String,
    /// Upstream role that owns the database and that the proxy logs in as.
    pub role: String,
    /// The upstream role's password.
    pub role_password: Secret,
    /// Local user name clients give the proxy.
    pub user: String,
    /// Local user password (plaintext in the config; the proxy derives its verifier).
    pub password: String,
}

/// Creates a new role with LOGIN PASSWORD and a database it owns; `tag` (lowercase ASCII)
/// makes failures easy to attribute in the server log.
pub async fn fresh_db(tag: &str) -> TestDb {
    fresh_db_on(&superuser().await, tag).await
}

/// [`fresh_db`] on the cluster `admin` is a superuser of.
pub async fn fresh_db_on(admin: &Client, tag: &str) -> TestDb {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = format!("t_{tag}_{id}");
    let db = TestDb {
        role: name.clone(),
        role_password: Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 24)),
        user: format!("app_{tag}_{id}"),
        password: format!("local-{}", Alphanumeric.sample_string(&mut rand::rng(), 12)),
        name,
    };
    let role = escape_identifier(&db.role);
    let create_role = format!(
        "CREATE ROLE {role} LOGIN PASSWORD {}",
        escape_literal(db.role_password.expose())
    );
    admin
        .batch_execute(&create_role)
        .await
        .unwrap_or_else(|e| panic!("CREATE ROLE {role} failed: {}", describe(&e)));
    let create_db = format!(
        "CREATE DATABASE {} OWNER {role}",
        escape_identifier(&db.name)
    );
    admin
        .batch_execute(&create_db)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE for {role} failed: {}", describe(&e)));
    db
}

/// The password in the cluster's superuser URL (the issuer's admin password in tests), for
/// tests that check it never comes out.
pub fn cluster_password() -> String {
    cluster()
        .url("postgres")
        .expose()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .expect("the cluster URL has a password")
}

/// A proxy config for `db`: listen on 127.0.0.1:0, one local user, one database in `mode`
/// ("transaction" or "session") with `pool_size`, static upstream credentials.
/// `extra_proxy_lines` go into `[proxy]`, e.g. `query_wait_timeout = "1s"`.
pub fn proxy_toml(db: &TestDb, mode: &str, pool_size: usize, extra_proxy_lines: &str) -> String {
    let source = format!(
        "source = \"static\"\nusername = \"{}\"\npassword = \"{}\"",
        db.role,
        db.role_password.expose()
    );
    pooled_toml(db, mode, pool_size, extra_proxy_lines, "upstream", &source)
}

/// The config every proxy test shares: listen on 127.0.0.1:0, one local user, one database
/// in `mode` with `pool_size`, logging in with the credentials entry `entry`, whose keys
/// (`source = …` and the source's own) are `source_lines`.
pub fn pooled_toml(
    db: &TestDb,
    mode: &str,
    pool_size: usize,
    extra_proxy_lines: &str,
    entry: &str,
    source_lines: &str,
) -> String {
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
dbname = "{name}"
pool_mode = "{mode}"
pool_size = {pool_size}
credentials = "{entry}"

[credentials.{entry}]
{source_lines}
"#,
        user = db.user,
        password = db.password,
        name = db.name,
        port = cluster().port(),
    )
}

/// Starts a whole proxy in-process from a config text; panics with every config problem.
pub async fn start_proxy(toml: &str) -> Proxy {
    let config = Config::from_toml_str(toml, &std::env::temp_dir())
        .unwrap_or_else(|e| panic!("test config rejected:\n{e}"));
    Proxy::start(config)
        .await
        .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
}

/// An error as a person wants to read it: tokio-postgres' `Display` says only "db error",
/// while the SQLSTATE and message are what explain a failure.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

pub fn client_config(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10));
    config
}

/// Connects through the proxy (or anywhere) and returns the client together with its
/// connection task: aborting that task drops the socket without a Terminate message, which
/// is how a test simulates a client that vanishes.
pub async fn try_connect_with_task(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, conn) = client_config(addr, user, password, db)
        .connect(NoTls)
        .await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, task))
}

/// Like [`connect`], but returns the error (for authentication tests).
pub async fn try_connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> Result<Client, tokio_postgres::Error> {
    try_connect_with_task(addr, user, password, db)
        .await
        .map(|(client, _)| client)
}

/// A connected client; panics with the cause when the connection fails.
pub async fn connect(addr: SocketAddr, user: &str, password: &str, db: &str) -> Client {
    try_connect(addr, user, password, db)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr} as {user} failed: {}", describe(&e)))
}

/// Connects to the proxy `proxy` as `db`'s local user.
pub async fn connect_app(proxy: &Proxy, db: &TestDb) -> Client {
    connect(proxy.local_addr(), &db.user, &db.password, &db.name).await
}

/// Upstream backends currently logged in as `role`.
pub async fn upstream_count(admin: &Client, role: &str) -> i64 {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap_or_else(|e| panic!("counting upstreams failed: {}", describe(&e)));
    row.get(0)
}

/// Polls the upstream count of one role in the background, so a test can assert the pool
/// limit held for the whole run, not only at the end.
pub struct UpstreamSampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(i64, u32)>,
}

/// What an [`UpstreamSampler`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    /// The highest count observed.
    pub max: i64,
    /// How many samples were taken; a test should see several, or it proved nothing.
    pub taken: u32,
}

impl UpstreamSampler {
    /// Starts sampling `role` every 20 ms over its own superuser connection.
    pub async fn start(role: &str) -> UpstreamSampler {
        let admin = superuser().await;
        let role = role.to_owned();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut max, mut taken) = (0, 0);
            loop {
                max = max.max(upstream_count(&admin, &role).await);
                taken += 1;
                tokio::select! {
                    _ = &mut stopped => return (max, taken),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        UpstreamSampler { stop, task }
    }

    /// Stops sampling and reports the maximum.
    pub async fn finish(self) -> Samples {
        let _ = self.stop.send(());
        let (max, taken) = self.task.await.expect("sampler task panicked");
        Samples { max, taken }
    }
}

/// Path of a PostgreSQL client program: the cluster's bin dir first (same version as the
/// server), then /usr/bin. Panics, naming the package, when it is missing.
pub fn pg_program(name: &str) -> PathBuf {
    let bin_dir = cluster().bin_dir();
    [bin_dir.join(name), PathBuf::from("/usr/bin").join(name)]
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found in {} or /usr/bin: {CLIENT_INSTALL_HINT}",
                bin_dir.display()
            )
        })
}

/// `program` (psql, pgbench, …) aimed at `addr` through libpq's environment variables, so
/// callers add only the program's own options; no variable of the caller's leaks in.
pub fn pg_command(
    program: &str,
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(pg_program(program));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// `psql` without any startup file, unaligned tuples-only output, stopping at the first error.
pub fn psql(addr: SocketAddr, user: &str, password: &str, db: &str) -> tokio::process::Command {
    let mut cmd = pg_command("psql", addr, user, password, db);
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// `pgbench` aimed at `addr`; the caller adds the workload options.
pub fn pgbench(addr: SocketAddr, user: &str, password: &str, db: &str) -> tokio::process::Command {
    pg_command("pgbench", addr, user, password, db)
}
