//! `pglease dev`: a throwaway local PostgreSQL with the proxy in front of it, for trying
//! pglease (and benchmarking it) with nothing but the PostgreSQL programs installed.
//!
//! # Design
//!
//! [`run`] starts a [`cluster::Cluster`]; [`start`] creates the role `app_owner` (NOLOGIN) and
//! the database `app` it owns, then builds an ordinary config *text* and loads it through
//! [`Config::from_toml_str`], so `dev` exercises exactly the contract users write. Clients
//! log in as `app`/`app`; upstream logins use the credentials entry `app`, whose issued roles
//! act as `app_owner` (`act_as`): the tables `pgbench -i` creates belong to `app_owner`, so
//! every later lease reads and writes them and no rotation drops them. Only
//! [`credentials_section`] says where upstream credentials come from.
//! On shutdown the proxy stops first, then the cluster, whose files are removed.

pub mod cluster;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tokio::task::{JoinError, spawn_blocking};
use tokio_postgres::NoTls;
use tracing::info;

use crate::app::{AppError, Proxy};
use crate::config::{Config, ConfigError};
use crate::secret::Secret;
use cluster::{Cluster, ClusterError, ClusterOptions};

/// Local user, password and database name that `dev` prints; fixed so they can be typed.
const APP: &str = "app";
/// Upstream role owning database `app` and everything the application creates; issued roles
/// act as it. It cannot log in itself.
const OWNER: &str = "app_owner";

/// Options of `pglease dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the proxy listens (`host:port`); `127.0.0.1:6432` by default.
    pub listen: String,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            listen: "127.0.0.1:6432".to_owned(),
        }
    }
}

/// Why `pglease dev` stopped early. Displayed with its source chain (`{:#}`); no variant
/// holds a password.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The throwaway PostgreSQL could not be found, started or stopped.
    #[error("throwaway PostgreSQL")]
    Cluster(#[from] ClusterError),
    /// Creating the `app` role and database failed.
    #[error("creating the `{OWNER}` role and the `{APP}` database")]
    Setup(#[source] tokio_postgres::Error),
    /// The generated config did not load: a bug in `dev`, not a user mistake.
    #[error("the generated dev config was rejected")]
    Config(#[from] ConfigError),
    /// The proxy did not start (typically: the listen address is taken).
    #[error("starting the proxy")]
    Proxy(#[from] AppError),
    /// A blocking cluster step panicked or was cancelled.
    #[error("cluster task")]
    Task(#[from] JoinError),
}

/// Runs `pglease dev` until `shutdown` resolves (main passes Ctrl-C/SIGTERM), then stops the
/// proxy and removes the cluster. The cluster is removed on every path, errors included.
pub async fn run(opts: DevOptions, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    let cluster = spawn_blocking(|| Cluster::start(ClusterOptions::default())).await??;
    info!(port = cluster.port(), log = %cluster.log_path().display(), "throwaway PostgreSQL started");
    let served = serve(&opts, &cluster, shutdown).await;
    // Stopping blocks on pg_ctl; keep it off the async threads.
    let stopped = spawn_blocking(move || cluster.stop()).await;
    served?;
    stopped??;
    info!("throwaway PostgreSQL stopped and removed");
    Ok(())
}

/// Sets `cluster` up for `dev` (role `app_owner`, database `app`) and starts the proxy in
/// front of it, as `pglease dev` does before printing its instructions. Public so the
/// integration suite can run `dev`'s exact setup against its own cluster.
pub async fn start(opts: &DevOptions, cluster: &Cluster) -> Result<Proxy, DevError> {
    create_app_database(cluster).await?;
    // The text holds a password: keep it in a Secret so it is zeroized and never printed.
    let toml = Secret::new(config_toml(&opts.listen, cluster.port(), &cluster.url(APP)));
    let config = Config::from_toml_str(toml.expose(), &std::env::temp_dir())?;
    Ok(Proxy::start(config).await?)
}

async fn serve(
    opts: &DevOptions,
    cluster: &Cluster,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let proxy = start(opts, cluster).await?;
    println!(
        "{}",
        instructions(
            proxy.local_addr(),
            proxy.admin_addr(),
            cluster.port(),
            cluster.log_path()
        )
    );
    shutdown.await;
    info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}

async fn create_app_database(cluster: &Cluster) -> Result<(), DevError> {
    let url = cluster.url("postgres");
    let (client, connection) = tokio_postgres::connect(url.expose(), NoTls)
        .await
        .map_err(DevError::Setup)?;
    let connection = tokio::spawn(connection);
    // Two messages: CREATE DATABASE refuses to run in the implicit transaction of a batch.
    let mut result = client
        .batch_execute(&format!("CREATE ROLE {OWNER} NOLOGIN"))
        .await;
    if result.is_ok() {
        let create_db = format!("CREATE DATABASE {APP} OWNER {OWNER}");
        result = client.batch_execute(&create_db).await;
    }
    drop(client);
    let _ = connection.await;
    result.map_err(DevError::Setup)
}

/// The config `dev` runs with: one local user `app`/`app`, database `app` in transaction
/// mode over a pool of 20, upstream credentials from [`credentials_section`].
fn config_toml(listen: &str, upstream_port: u16, admin_url: &Secret) -> String {
    format!(
        "[proxy]\n\
         listen = {listen}\n\
         # a dev proxy should stop promptly on Ctrl-C, even with psql still connected\n\
         shutdown_timeout = \"5s\"\n\
         # the operator's plane, to try it: any free port for /metrics, `app` on the console\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_users = [\"{APP}\"]\n\
         \n\
         [[users]]\n\
         name = \"{APP}\"\n\
         password = \"{APP}\"\n\
         \n\
         [[databases]]\n\
         name = \"{APP}\"\n\
         host = \"127.0.0.1\"\n\
         port = {upstream_port}\n\
         dbname = \"{APP}\"\n\
         pool_mode = \"transaction\"\n\
         pool_size = 20\n\
         credentials = \"{APP}\"\n\
         \n\
         {credentials}",
        listen = toml_string(listen),
        credentials = credentials_section(admin_url)
    )
}

/// Where `dev`'s upstream logins come from: the embedded issuer, creating a fresh role that
/// acts as `app_owner` every minute, so a new user sees rotation happen (watch the
/// `pglease::audit` lines and `SELECT usename FROM pg_stat_activity`) while every table
/// stays `app_owner`'s.
fn credentials_section(admin_url: &Secret) -> String {
    format!(
        "[credentials.{APP}]\n\
         source = \"issuer\"\n\
         admin_url = {}\n\
         act_as = \"{OWNER}\"\n\
         prefix = \"pglease\"\n\
         ttl = \"1m\"\n\
         max_ttl = \"10m\"\n\
         safety_margin = \"10s\"\n",
        toml_string(admin_url.expose())
    )
}

/// A TOML basic string with every needed escape, so odd `--listen` values cannot break
/// (or inject into) the generated config.
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// What `dev` prints once everything is up: how to connect and how to benchmark.
fn instructions(
    proxy: SocketAddr,
    admin: Option<SocketAddr>,
    upstream_port: u16,
    log: &Path,
) -> String {
    // A wildcard listen address is reachable on loopback; print something one can type.
    let host = match proxy.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!(
        "postgresql://{APP}:{APP}@{}/{APP}",
        SocketAddr::new(host, proxy.port())
    );
    let console = format!(
        "postgresql://{APP}:{APP}@{}/pglease",
        SocketAddr::new(host, proxy.port())
    );
    let metrics = admin.map_or_else(String::new, |a| {
        format!("\x20   curl http://{a}/metrics   (and /readyz)\n")
    });
    format!(
        "\n\
         pglease dev is running: a throwaway PostgreSQL on 127.0.0.1:{upstream_port} \
         (log: {}) with pglease in front of it on {proxy}.\n\
         \n\
         Connect (user {APP}, password {APP}, database {APP}):\n\
         \x20   psql \"{url}\"\n\
         \n\
         Benchmark:\n\
         \x20   pgbench -i \"{url}\"\n\
         \x20   pgbench -c 20 -j 2 -T 30 \"{url}\"\n\
         \n\
         Watch it (SHOW POOLS, SHOW LEASES, ROTATE, … on the admin console):\n\
         \x20   psql \"{console}\" -c 'SHOW LEASES'\n\
         {metrics}\
         \n\
         Press Ctrl-C to stop; the PostgreSQL data is deleted.\n",
        log.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolMode, SourceConfig};

    #[test]
    fn generated_config_loads_with_the_promised_shape() {
        let admin = Secret::from("postgres://postgres:pw\"with'quotes\\@127.0.0.1:5499/app");
        let toml = config_toml("127.0.0.1:7777", 5499, &admin);
        let config = Config::from_toml_str(&toml, Path::new("/")).unwrap();
        assert_eq!(config.proxy.listen, "127.0.0.1:7777");
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].name, "app");
        assert_eq!(config.users[0].password.expose(), "app");
        assert_eq!(config.proxy.admin_users, ["app"]);
        assert_eq!(config.proxy.admin_listen.as_deref(), Some("127.0.0.1:0"));
        let db = &config.databases[0];
        assert_eq!((db.name.as_str(), db.upstream_dbname()), ("app", "app"));
        assert_eq!(
            (db.port, db.pool_size, db.pool_mode),
            (5499, 20, PoolMode::Transaction)
        );
        let entry = &config.credentials[&db.credentials];
        let SourceConfig::Issuer(issuer) = &entry.source else {
            panic!("dev should use the embedded issuer");
        };
        assert_eq!(issuer.act_as.as_deref(), Some("app_owner"));
        assert_eq!(issuer.on_revoke, crate::config::OnRevoke::Reassign);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(issuer.ttl, std::time::Duration::from_secs(60));
        assert_eq!(issuer.admin_url.expose(), admin.expose());
    }

    #[test]
    fn a_hostile_listen_value_cannot_inject_keys() {
        let toml = config_toml("x\"\napplication_name = \"evil\"\n#", 1, &Secret::from("p"));
        let config = Config::from_toml_str(&toml, Path::new("/"));
        // Either rejected as an address or kept verbatim; never parsed as a second key.
        if let Ok(config) = config {
            assert_eq!(config.proxy.application_name, "pglease");
        }
    }

    #[test]
    fn instructions_show_a_typeable_url() {
        let text = instructions(
            "0.0.0.0:6432".parse().unwrap(),
            Some("127.0.0.1:9930".parse().unwrap()),
            5555,
            Path::new("/tmp/pg.log"),
        );
        assert!(
            text.contains("psql \"postgresql://app:app@127.0.0.1:6432/pglease\" -c 'SHOW LEASES'"),
            "{text}"
        );
        assert!(
            text.contains("curl http://127.0.0.1:9930/metrics"),
            "{text}"
        );
        assert!(
            text.contains("psql \"postgresql://app:app@127.0.0.1:6432/app\""),
            "{text}"
        );
        assert!(text.contains("pgbench -c 20"), "{text}");
        assert!(
            text.contains("127.0.0.1:5555") && text.contains("/tmp/pg.log"),
            "{text}"
        );
        let text = instructions("[::1]:7000".parse().unwrap(), None, 1, Path::new("/l"));
        assert!(text.contains("@[::1]:7000/app"), "{text}");
    }
}
