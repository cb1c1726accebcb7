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
//! (with the accept loop and the answering of the console's reloads) first, then the
//! background (rotators, pool upkeep, drains, the reaper), whose rotators revoke their leases
//! on the way out. Building the parts from a config is [`build`]'s; putting a config in
//! service, at start and at each reload, is [`reload`]'s ([`diff`] says what changed).
//! The admin endpoint (`admin_listen`) is a third group, stopped after both, so it answers
//! (`/readyz`: shutting down) to the end.

mod build;
mod diff;
mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::http::AdminState;
use crate::auth::AuthError;
use crate::client::Shared;
use crate::client::admission::Admission;
use crate::client::control::{Control, ControlRequests, ReloadRequest};
use crate::client::timers::Timeouts;
use crate::config::{ClientTls, Config};
use crate::metrics::{Metrics, Readiness};
use crate::tls::client::TlsConfigError;
use reload::Reloader;

pub use reload::{ReloadError, ReloadSummary};

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
    /// Puts a config in service, at start and at each reload.
    reloader: Arc<Reloader>,
    /// The accept loop, the console's reload answers and every client task.
    clients: TaskTracker,
    /// Rotators, their source watchers, pool upkeep, drains and the issuer's reaper.
    background: TaskTracker,
    /// Stops the rotators, which then revoke every lease they hold: cancelled only once no
    /// client and no pooled connection needs a lease any more.
    credentials_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// Cancelled by the admin console's `SHUTDOWN`.
    shutdown_requested: CancellationToken,
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
    /// Starts the proxy from `config`, built in code or loaded by the caller; there is no
    /// file to reload, so [`Proxy::reload`] refuses.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        Self::start_inner(config, None).await
    }

    /// Starts the proxy from `config` as loaded from `path`; each [`Proxy::reload`] (SIGHUP,
    /// the console's `RELOAD`) reads `path` again.
    pub async fn start_from_file(
        config: Config,
        path: impl Into<PathBuf>,
    ) -> Result<Proxy, AppError> {
        Self::start_inner(config, Some(path.into())).await
    }

    /// Starts in phases: the listener first (nothing is acquired if the address is taken),
    /// then the config is put in service as a reload from nothing would (credentials handles,
    /// the pools built on them, last the rotators, whose proving logins go to those pools),
    /// and only then are clients accepted.
    async fn start_inner(config: Config, path: Option<PathBuf>) -> Result<Proxy, AppError> {
        for warning in &config.warnings {
            warn!(%warning, "config warning");
        }
        let listener = bind(&config.proxy.listen).await?;
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: config.proxy.listen.clone(),
            source,
        })?;
        let upstreams: usize = config
            .databases
            .iter()
            .map(|db| (db.pool_size + db.reserve_pool_size) * config.users.len())
            .sum();
        crate::client::descriptors::make_room(config.proxy.max_client_conn, upstreams);
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
        let client_tls = build::client_tls(&config.proxy)?;
        let (control, requests) = Control::new();
        let shared = Arc::new(Shared {
            serving: RwLock::default(),
            cancels: Arc::default(),
            clients: Arc::default(),
            mock_key: rand::random(),
            auth_type: config.proxy.auth_type,
            max_message_size: config.proxy.max_message_size,
            max_prepared_statements: config.proxy.max_prepared_statements,
            client_login_timeout: config.proxy.client_login_timeout,
            admission: Arc::new(Admission::new(config.proxy.max_client_conn)),
            timeouts: Timeouts::from_config(&config.proxy),
            shutdown: CancellationToken::new(),
            client_tls,
            client_tls_required: config.proxy.client_tls == ClientTls::Require,
            control,
            console: Some(crate::admin::console::entry()),
            instruments: metrics.clients(),
        });
        let background = TaskTracker::new();
        let credentials_stop = CancellationToken::new();
        let reloader = Arc::new(Reloader::new(
            shared.clone(),
            path,
            background.clone(),
            credentials_stop.clone(),
            metrics.clone(),
        ));
        let shutdown_timeout = config.proxy.shutdown_timeout;
        let readiness = Readiness {
            margin: config.proxy.readiness_margin,
        };
        if let Err(e) = reloader.apply(config).await {
            shared.shutdown.cancel();
            return Err(e);
        }
        metrics.watch(Arc::downgrade(&shared), readiness)?;
        let ControlRequests { reloads, shutdown } = requests;
        let clients = TaskTracker::new();
        clients.spawn(accept_loop(listener, shared.clone(), clients.clone()));
        clients.spawn(answer_reloads(
            reloader.clone(),
            reloads,
            shared.shutdown.clone(),
        ));
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
            reloader,
            clients,
            background,
            credentials_stop,
            shutdown_timeout,
            shutdown_requested: shutdown,
            metrics,
            admin_addr,
            admin,
            admin_stop,
        })
    }

    /// Reads the config file again and applies what changed (see [`reload`]'s design): on
    /// success, what was done; on failure, why, with the running config untouched. Either
    /// way the outcome is logged.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.reloader.reload().await
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
        self.shutdown_requested.cancelled().await
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
            for creds in self.shared.credentials().values() {
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => match shared.admission.seat() {
                Some(seat) => {
                    tracker.spawn(crate::client::serve(shared.clone(), stream, peer, seat));
                }
                // Above max_client_conn and the overflow path is full too.
                None => debug!(%peer, "client closed at once: max_client_conn reached"),
            },
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the admin console's `RELOAD`s, one at a time, until shutdown.
async fn answer_reloads(
    reloader: Arc<Reloader>,
    mut reloads: mpsc::UnboundedReceiver<ReloadRequest>,
    shutdown: CancellationToken,
) {
    loop {
        let reply = tokio::select! {
            () = shutdown.cancelled() => return,
            r = reloads.recv() => match r {
                Some(reply) => reply,
                None => return,
            },
        };
        let outcome = reloader
            .reload()
            .await
            .map(|summary| summary.to_string())
            .map_err(|e| e.to_string());
        // The console may have hung up meanwhile; the reload happened either way.
        let _ = reply.send(outcome);
    }
}
