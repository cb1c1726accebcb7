//! Wiring: turns a validated config into running parts (credentials rotators, pools, the
//! client listener) and owns their shutdown.
//!
//! # Design
//!
//! [`Proxy::start`] binds the listener itself and returns once everything is running, so a
//! test can start a whole proxy on `127.0.0.1:0` and read [`Proxy::local_addr`]. All shared
//! state lives in one [`Shared`] handle (defined by its readers, in `client`) passed to every
//! client task; nothing is global. This file only wires.
//! Every task is tracked, in two groups stopped in order by [`Proxy::shutdown`]: the clients
//! (with the accept loop) first, then the background (rotators, pool upkeep, the reaper),
//! whose rotators revoke their leases on the way out. The admin endpoint (`admin_listen`) is
//! a third group, stopped after both, so it answers (`/readyz`: shutting down) to the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::http::AdminState;
use crate::auth::{AuthError, LocalPassword};
use crate::client::control::{Control, ControlRequests};
use crate::client::{PoolEntry, Pools, Shared};
use crate::config::{ClientTls, Config, DatabaseConfig, UpstreamTlsMode};
use crate::credentials::setup;
use crate::metrics::{Metrics, Readiness};
use crate::pool::{Pool, PoolSettings};
use crate::tls::client::{ClientTlsFiles, TlsConfigError, client_config};
use crate::upstream::{UpstreamTarget, UpstreamTls};

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
    /// A database entry's TLS files could not be used.
    #[error("databases.{database}: {source}")]
    UpstreamTls {
        database: String,
        #[source]
        source: TlsConfigError,
    },
    /// The client TLS certificate or key did not load.
    #[error("proxy.client_tls: {0}")]
    ClientTls(#[from] crate::tls::server::ServerTlsError),
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop and every client task.
    clients: TaskTracker,
    /// Rotators, their source watchers, pool upkeep and the issuer's reaper.
    background: TaskTracker,
    /// Stops the rotators, which then revoke every lease they hold: cancelled only once no
    /// client and no pooled connection needs a lease any more.
    credentials_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// Reload and shutdown requests from the admin console.
    requests: ControlRequests,
    /// The proxy's metrics registry.
    metrics: Metrics,
    /// Where the admin endpoint listens, when `admin_listen` is set.
    admin_addr: Option<SocketAddr>,
    /// The admin endpoint and its connections; stopped last.
    admin: TaskTracker,
    admin_stop: CancellationToken,
}

/// After `shutdown_timeout`, how long the clients told to end get to go before the pools close
/// under them.
const END_GRACE: Duration = Duration::from_secs(2);

/// Longest wait for the rotators to revoke their leases at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(20);

impl Proxy {
    /// Starts the proxy from `config`, in phases: the listener first (nothing is acquired if
    /// the address is taken), then the credentials handles, the pools built on them, and last
    /// the rotators, whose proving logins go to those pools.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        for warning in &config.warnings {
            warn!(%warning, "config warning");
        }
        let listener = bind(&config.proxy.listen).await?;
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: config.proxy.listen.clone(),
            source,
        })?;
        let admin_listener =
            match &config.proxy.admin_listen {
                Some(listen) => Some(crate::admin::http::bind(listen).await.map_err(|source| {
                    AppError::Bind {
                        addr: listen.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let metrics = Metrics::new()?;
        let users = local_users(&config).await?;
        let targets = config
            .databases
            .iter()
            .map(|db| Ok((db.name.clone(), upstream_target(&config, db)?)))
            .collect::<Result<HashMap<_, _>, AppError>>()?;
        let shutdown = CancellationToken::new();
        let credentials_stop = CancellationToken::new();
        let background = TaskTracker::new();
        let mut entries = HashMap::new();
        for (name, entry) in &config.credentials {
            match setup::build(name, entry, &background, &shutdown) {
                Ok(built) => entries.insert(name.clone(), built),
                Err(source) => {
                    shutdown.cancel();
                    return Err(AppError::Source {
                        name: name.clone(),
                        source,
                    });
                }
            };
        }
        let pools = build_pools(
            &config,
            &targets,
            &entries,
            &metrics,
            &background,
            &shutdown,
        );
        let mut credentials = HashMap::new();
        for (name, entry) in entries {
            let prove = entry
                .proves
                .then(|| proving_pools(&config, &targets, &name, &pools))
                .flatten()
                .map(|(target, pools)| crate::pool::prover(target, pools));
            entry.rotator.instrumented(metrics.lease(&name)).start(
                prove,
                &background,
                credentials_stop.clone(),
            );
            credentials.insert(name, entry.credentials);
        }
        let client_tls = client_tls(&config.proxy)?;
        let (control, requests) = Control::new();
        let shared = Arc::new(Shared {
            users,
            pools,
            credentials,
            cancels: Arc::default(),
            clients: Arc::default(),
            mock_key: rand::random(),
            auth_type: config.proxy.auth_type,
            max_message_size: config.proxy.max_message_size,
            max_prepared_statements: config.proxy.max_prepared_statements,
            login_timeout: config.proxy.login_timeout,
            shutdown,
            client_tls,
            client_tls_required: config.proxy.client_tls == ClientTls::Require,
            control,
            config: Arc::new(config.clone()),
            console: Some(crate::admin::console::entry()),
            instruments: metrics.clients(),
        });
        let readiness = Readiness {
            margin: config.proxy.readiness_margin,
        };
        metrics.watch(Arc::downgrade(&shared), readiness)?;
        let clients = TaskTracker::new();
        clients.spawn(accept_loop(listener, shared.clone(), clients.clone()));
        info!(%addr, "pglease listening");
        let (admin, admin_stop) = (TaskTracker::new(), CancellationToken::new());
        let admin_addr = admin_listener.map(|(listener, admin_addr)| {
            let state = Arc::new(AdminState {
                shared: shared.clone(),
                metrics: metrics.clone(),
                readiness,
            });
            let serve =
                crate::admin::http::serve(listener, state, admin.clone(), admin_stop.clone());
            admin.spawn(serve);
            admin_addr
        });
        Ok(Proxy {
            addr,
            shared,
            clients,
            background,
            credentials_stop,
            shutdown_timeout: config.proxy.shutdown_timeout,
            requests,
            metrics,
            admin_addr,
            admin,
            admin_stop,
        })
    }

    /// Where the admin endpoint (`/metrics`, `/healthz`, `/readyz`) listens, when
    /// `admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The proxy's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves once the admin console asked for a shutdown (`SHUTDOWN`).
    pub async fn shutdown_requested(&self) {
        self.requests.shutdown.cancelled().await
    }

    /// The shared state (pools, users), for the admin plane and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Shuts down gracefully: stops accepting; idle clients are told so and leave; clients in
    /// a transaction get up to `shutdown_timeout` to finish it, then end with an error naming
    /// the reason; the pools close; last, every lease is revoked, so no credential outlives
    /// the process.
    pub async fn shutdown(self) {
        info!("shutting down: idle clients leave, open transactions may finish");
        self.shared.shutdown.cancel();
        self.shared.clients.stop_all();
        self.clients.close();
        let finished = tokio::time::timeout(self.shutdown_timeout, self.clients.wait()).await;
        if finished.is_err() {
            warn!(
                clients = self.shared.clients.count(),
                "shutdown_timeout reached: ending the clients still in a transaction"
            );
            for creds in self.shared.credentials.values() {
                creds.end_all_connections();
            }
            self.close_pools();
            if tokio::time::timeout(END_GRACE, self.clients.wait())
                .await
                .is_err()
            {
                warn!("clients still connected after being ended; closing their upstreams");
            }
        }
        self.close_pools();
        self.credentials_stop.cancel();
        self.background.close();
        if tokio::time::timeout(REVOKE_TIMEOUT, self.background.wait())
            .await
            .is_err()
        {
            warn!("revoking leases took too long; some may stay valid until they expire");
        }
        self.admin_stop.cancel();
        self.admin.close();
        self.admin.wait().await;
        info!("pglease stopped");
    }

    fn close_pools(&self) {
        for (_, _, entry) in self.shared.pools() {
            entry.pool.close();
        }
    }
}

async fn bind(listen: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: listen.to_owned(),
            source,
        })
}

/// One pool per (database, local user), each with its upkeep task.
fn build_pools(
    config: &Config,
    targets: &HashMap<String, UpstreamTarget>,
    entries: &HashMap<String, setup::Entry>,
    metrics: &Metrics,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Pools {
    let mut pools = Pools::default();
    for db in &config.databases {
        let (Some(entry), Some(target)) = (entries.get(&db.credentials), targets.get(&db.name))
        else {
            // Validation guarantees the entry exists; stay total anyway.
            continue;
        };
        let settings = PoolSettings {
            size: db.pool_size,
            wait_timeout: config.proxy.query_wait_timeout,
            idle_timeout: config.proxy.idle_timeout,
        };
        for user in &config.users {
            let pool = Pool::new(
                target.clone(),
                entry.credentials.clone(),
                settings.clone(),
                metrics.pool(&db.name, &user.name),
            );
            tasks.spawn(crate::pool::maintain(pool.clone(), shutdown.clone()));
            let entry = PoolEntry {
                pool,
                mode: db.pool_mode,
                reset_query: db.reset_query.as_str().into(),
                reported: Arc::default(),
            };
            pools.insert(&db.name, &user.name, entry);
        }
    }
    pools
}

/// Where a credentials entry proves its leases: the first database that uses it, and that
/// database's pools, which take the proving login as their first replacement.
fn proving_pools(
    config: &Config,
    targets: &HashMap<String, UpstreamTarget>,
    credentials: &str,
    pools: &Pools,
) -> Option<(UpstreamTarget, Vec<Pool>)> {
    let db = config
        .databases
        .iter()
        .find(|d| d.credentials == credentials)?;
    let takers = pools
        .of_database(&db.name)
        .map(|e| e.pool.clone())
        .collect();
    Some((targets.get(&db.name)?.clone(), takers))
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

/// The client-facing certificate, when `client_tls` is on (validation made sure both files
/// are named).
fn client_tls(
    proxy: &crate::config::ProxyConfig,
) -> Result<Option<Arc<crate::tls::server::ServerTls>>, AppError> {
    match (
        proxy.client_tls,
        &proxy.client_tls_cert,
        &proxy.client_tls_key,
    ) {
        (ClientTls::Disable, _, _) | (_, None, _) | (_, _, None) => Ok(None),
        (_, Some(cert), Some(key)) => Ok(Some(Arc::new(crate::tls::server::ServerTls::load(
            cert, key,
        )?))),
    }
}

/// Where a database's upstream connections go, with its TLS configuration built (CA and
/// client certificate files read) once here.
fn upstream_target(config: &Config, db: &DatabaseConfig) -> Result<UpstreamTarget, AppError> {
    let config_for = |mode| {
        let files = ClientTlsFiles {
            ca: db.upstream_tls_ca.clone(),
            cert: db.upstream_tls_cert.clone(),
            key: db.upstream_tls_key.clone(),
        };
        client_config(mode, &files).map_err(|source| AppError::UpstreamTls {
            database: db.name.clone(),
            source,
        })
    };
    let tls_config = match db.upstream_tls {
        UpstreamTlsMode::Disable => None,
        mode => Some(config_for(mode)?),
    };
    Ok(UpstreamTarget {
        host: db.host.clone(),
        port: db.port,
        dbname: db.upstream_dbname().to_owned(),
        application_name: config.proxy.application_name.clone(),
        connect_timeout: config.proxy.connect_timeout,
        database: db.name.clone(),
        tls: UpstreamTls {
            mode: db.upstream_tls,
            config: tls_config,
            allow_plaintext_password: db.allow_plaintext_password,
        },
    })
}
