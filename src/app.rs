//! Wiring: turns a validated config into running parts (credentials rotators, pools, the
//! client listener) and owns their shutdown.
//!
//! # Design
//!
//! [`Proxy::start`] binds the listener itself and returns once everything is running, so a
//! test can start a whole proxy on `127.0.0.1:0` and read [`Proxy::local_addr`]. All shared
//! state lives in one [`Shared`] handle passed to every client task; nothing is global.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{AuthError, LocalPassword};
use crate::client::cancel::CancelRegistry;
use crate::config::{AuthType, Config, CredentialsConfig, DatabaseConfig, PoolMode, SourceConfig};
use crate::credentials::exec_source::ExecSource;
use crate::credentials::file_source::FileSource;
use crate::credentials::issuer::IssuerSource;
use crate::credentials::static_source::StaticSource;
use crate::credentials::vault::VaultSource;
use crate::credentials::{Credentials, Lifecycle, Prover, Source};
use crate::pool::{Pool, PoolSettings};
use crate::upstream::{self, UpstreamTarget};

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum AppError {
    /// A local user's password is not a usable verifier, hash or plaintext.
    #[error("users.{user}.password: {source}")]
    BadPassword {
        user: String,
        #[source]
        source: AuthError,
    },
    /// A credentials source refused its configuration.
    #[error("credentials.{name}: {source}")]
    Source {
        name: String,
        #[source]
        source: crate::credentials::SourceError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// One pool and how clients use it.
#[derive(Clone)]
pub struct PoolEntry {
    /// The upstream connections.
    pub pool: Pool,
    /// Transaction or session pooling.
    pub mode: PoolMode,
    /// Run before a session-mode upstream is reused.
    pub reset_query: Arc<str>,
}

/// State every client task reads: immutable after start, except what sits behind its own
/// handles (pools, cancel registry).
pub struct Shared {
    /// Local users, their passwords already turned into verifiers.
    pub users: HashMap<String, LocalPassword>,
    /// Pools by database name, then local user name.
    pools: HashMap<String, HashMap<String, PoolEntry>>,
    /// Each credentials entry's rotator handle: current lease, state, `rotate_now`.
    pub credentials: HashMap<String, Credentials>,
    /// Proxy-issued cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Keys the fake SCRAM salt of unknown users, so probing cannot tell users apart.
    pub mock_key: [u8; 32],
    /// The preferred client authentication method.
    pub auth_type: AuthType,
    /// Largest client message accepted.
    pub max_message_size: usize,
    /// Time a client has to finish logging in.
    pub login_timeout: Duration,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// The pool for a (database, user) pair, if the config defines one.
    pub fn pool(&self, database: &str, user: &str) -> Option<PoolEntry> {
        self.pools.get(database)?.get(user).cloned()
    }

    /// Every pool, as (database, user, entry).
    pub fn pools(&self) -> impl Iterator<Item = (&str, &str, &PoolEntry)> {
        self.pools
            .iter()
            .flat_map(|(db, users)| users.iter().map(move |(u, e)| (db.as_str(), u.as_str(), e)))
    }
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
}

impl Proxy {
    /// Starts credentials, pools and the listener from `config`.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        for warning in &config.warnings {
            warn!(%warning, "config warning");
        }
        let shutdown = CancellationToken::new();
        let users = local_users(&config).await?;
        let (credentials, adopters) = start_credentials(&config, &shutdown)?;
        let mut pools: HashMap<String, HashMap<String, PoolEntry>> = HashMap::new();
        for db in &config.databases {
            let Some(creds) = credentials.get(&db.credentials) else {
                // Validation guarantees the entry exists; stay total anyway.
                continue;
            };
            let target = upstream_target(&config, db);
            let settings = PoolSettings {
                size: db.pool_size,
                wait_timeout: config.proxy.query_wait_timeout,
                idle_timeout: config.proxy.idle_timeout,
            };
            let by_user = pools.entry(db.name.clone()).or_default();
            for user in &config.users {
                let entry = PoolEntry {
                    pool: Pool::new(target.clone(), creds.clone(), settings.clone()),
                    mode: db.pool_mode,
                    reset_query: db.reset_query.as_str().into(),
                };
                tokio::spawn(crate::pool::maintain(entry.pool.clone(), shutdown.clone()));
                by_user.insert(user.name.clone(), entry);
            }
        }
        for (name, slot) in adopters {
            // The prover logs in to the first database using the entry (see `prover`).
            let proving = config.databases.iter().find(|d| d.credentials == name);
            let db_pools = proving.and_then(|db| pools.get(&db.name));
            // Each slot is new and set only here, so `set` cannot find it full.
            let _ = slot.set(
                db_pools
                    .into_iter()
                    .flat_map(|p| p.values())
                    .map(|e| e.pool.clone())
                    .collect(),
            );
        }
        let listener = TcpListener::bind(&config.proxy.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.proxy.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: config.proxy.listen.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            users,
            pools,
            credentials,
            cancels: Arc::default(),
            mock_key: rand::random(),
            auth_type: config.proxy.auth_type,
            max_message_size: config.proxy.max_message_size,
            login_timeout: config.proxy.login_timeout,
            shutdown,
        });
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, shared.clone(), tracker.clone()));
        info!(%addr, "pglease listening");
        Ok(Proxy {
            addr,
            shared,
            tracker,
            shutdown_timeout: config.proxy.shutdown_timeout,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (pools, users), for the admin plane and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets idle clients go, waits up to `shutdown_timeout` for busy ones,
    /// then closes the pools.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown timeout reached with clients still connected");
        }
        for (_, _, entry) in self.shared.pools() {
            entry.pool.close();
        }
        info!("pglease stopped");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracker.spawn(crate::client::serve(shared.clone(), stream, peer));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Turns each user's configured password into verifiers, off the async threads: deriving a
/// SCRAM verifier from a plaintext password costs thousands of hash rounds.
async fn local_users(config: &Config) -> Result<HashMap<String, LocalPassword>, AppError> {
    let users: Vec<_> = config
        .users
        .iter()
        .map(|u| (u.name.clone(), u.password.clone()))
        .collect();
    let parsed = tokio::task::spawn_blocking(move || {
        users
            .into_iter()
            .map(|(name, pw)| match LocalPassword::parse(&name, &pw) {
                Ok(p) => Ok((name, p)),
                Err(source) => Err(AppError::BadPassword { user: name, source }),
            })
            .collect::<Result<HashMap<_, _>, _>>()
    })
    .await;
    parsed.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Drops issued roles whose validity has passed (left by a crash or a kill -9): once at start,
/// then every `reap_interval`. A failure is logged and retried at the next interval.
fn spawn_reaper(name: String, issuer: Arc<IssuerSource>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(issuer.reap_interval());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match issuer.reap().await {
                Ok(0) => {}
                Ok(n) => info!(credentials = %name, dropped = n, "reaped expired issued roles"),
                Err(e) => {
                    warn!(credentials = %name, error = %e, "reaping expired issued roles failed")
                }
            }
        }
    });
}

/// The lifecycle settings of a credentials entry.
fn lifecycle(entry: &CredentialsConfig) -> Lifecycle {
    Lifecycle {
        rotate_at: entry.rotate_at,
        safety_margin: entry.safety_margin,
        renew: entry.renew,
        max_ttl: match &entry.source {
            SourceConfig::Issuer(i) => Some(i.max_ttl),
            _ => None,
        },
    }
}

/// Where a database's upstream connections go.
fn upstream_target(config: &Config, db: &DatabaseConfig) -> UpstreamTarget {
    UpstreamTarget {
        host: db.host.clone(),
        port: db.port,
        dbname: db.upstream_dbname().to_owned(),
        application_name: config.proxy.application_name.clone(),
        connect_timeout: config.proxy.connect_timeout,
    }
}

/// The pools of the database a credentials entry proves its leases against, filled in once
/// the pools exist.
type Adopters = Arc<OnceLock<Vec<Pool>>>;

/// Every credentials entry's rotator handle, and for those that prove their leases, the slot
/// for the pools that take the proving logins.
type Started = (HashMap<String, Credentials>, HashMap<String, Adopters>);

/// Proves a fresh lease with one login to the first database that uses it. The login is not
/// wasted: it becomes the first replacement of a pool of that database still on the old
/// lease, and is closed only when none needs it (the first lease, at start).
fn prover(config: &Config, credentials: &str) -> Option<(Prover, Adopters)> {
    let db = config
        .databases
        .iter()
        .find(|d| d.credentials == credentials)?;
    let target = upstream_target(config, db);
    let adopters = Adopters::default();
    let pools = adopters.clone();
    let prove: Prover = Arc::new(move |lease| {
        let target = target.clone();
        let pools = pools.clone();
        Box::pin(async move {
            let mut up = upstream::connect(&target, lease)
                .await
                .map_err(|e| e.to_string())?;
            for pool in pools.get().into_iter().flatten() {
                match pool.adopt(up) {
                    None => return Ok(()),
                    Some(back) => up = back,
                }
            }
            Ok(())
        })
    });
    Some((prove, adopters))
}

fn start_credentials(config: &Config, shutdown: &CancellationToken) -> Result<Started, AppError> {
    let mut out = HashMap::new();
    let mut adopters = HashMap::new();
    for (name, entry) in &config.credentials {
        let source: Arc<dyn Source> =
            match &entry.source {
                SourceConfig::Static(s) => {
                    Arc::new(StaticSource::new(s.username.clone(), s.password.clone()))
                }
                SourceConfig::Issuer(i) => {
                    let issuer =
                        IssuerSource::from_config(name, i).map_err(|source| AppError::Source {
                            name: name.clone(),
                            source,
                        })?;
                    let issuer = Arc::new(issuer);
                    spawn_reaper(name.clone(), issuer.clone(), shutdown.clone());
                    issuer
                }
                SourceConfig::File(f) => Arc::new(FileSource::new(f)),
                SourceConfig::Exec(e) => Arc::new(ExecSource::new(e)),
                SourceConfig::Vault(v) => Arc::new(VaultSource::from_config(v).map_err(
                    |source| AppError::Source {
                        name: name.clone(),
                        source,
                    },
                )?),
            };
        // A static password needs no proof: there is nothing to fall back to.
        let prove = if entry.source.kind() == "static" {
            None
        } else {
            prover(config, name).map(|(prove, pools)| {
                adopters.insert(name.clone(), pools);
                prove
            })
        };
        let creds = Credentials::spawn(name, source, lifecycle(entry), prove, shutdown.clone());
        out.insert(name.clone(), creds);
    }
    Ok((out, adopters))
}
