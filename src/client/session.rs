//! A logged-in client's life: wait for a complete request, check out an upstream, relay, give
//! the upstream back (transaction mode: at each idle ReadyForQuery; session mode: when the
//! client leaves), and clean up whatever a vanished client left open.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use tracing::{Instrument, Span, debug};

use super::ClientError;
use super::cancel::CancelKey;
use super::handshake::Login;
use super::notify::ClientNotify;
use super::relay::{Buffers, Meter, RelayEnd, Signals, Tracker, relay};
use super::shared::{PoolEntry, Shared};
use super::statements::{ClientStatements, UpstreamStatements};
use super::stop::{ClientInfo, Registration};
use super::stream::ClientStream;
use super::timers::Timers;
use super::tracked::Tracking;
use crate::config::PoolMode;
use crate::pool::Checkout;

mod answer;
mod cleanup;
mod follow;
mod idle;
mod release;
mod serve;
mod settings;
mod timeouts;

use idle::Next;

/// How long cleanup statements (ROLLBACK, the reset query) may take before the upstream is
/// closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client hears when pglease shuts down while it is idle (PostgreSQL's own code for an
/// administrator's shutdown).
const SHUTTING_DOWN: &str = "terminating connection: pglease is shutting down";

/// What a client ended by the admin console's `KILL` hears (with 57P01, as PostgreSQL's
/// `pg_terminate_backend`).
const KILLED: &str = "terminating connection: terminated by administrator (KILL)";

/// One client session after login.
pub struct Session {
    shared: std::sync::Arc<Shared>,
    client: ClientStream,
    login: Joined,
    bufs: Buffers,
    track: Tracker,
    /// A complete request (through Sync, Flush or a Query) is buffered.
    request_ready: bool,
    /// Told to leave at the next idle point (shutdown); unregistered when the session ends.
    registration: Registration,
    /// Transaction mode with `max_prepared_statements` above 0: the client's named prepared
    /// statements, recreated on whichever upstream serves it.
    statements: Option<ClientStatements>,
    /// The client's session settings, put on every upstream before it serves the client.
    settings: super::settings::ClientSettings,
    /// Transaction mode: the client's LISTEN channels on the pool's listener, made at its
    /// first LISTEN / UNLISTEN request (boxed: most clients never send one).
    notify: Option<Box<ClientNotify>>,
    /// Session mode: why the last move was refused, named in the error the session ends with
    /// if its lease reaches its hard deadline.
    pinned_by: Option<Box<str>>,
    /// Its pool was retired by a reload and the session stays on it (see
    /// [`Session::follow_reload`]), so being idle on it is no reason to look again.
    stays_on_retired: bool,
    /// The timeouts watched while an upstream is held; `None` when all are off (boxed, so a
    /// session with none carries a pointer, not the timer's room).
    timers: Option<Box<Timers>>,
    /// `client_idle_timeout`'s timer between requests, made the first time it is needed and
    /// re-armed after (never re-created), so neither the idle wait nor each transaction
    /// carries or allocates one.
    idle_sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// What a session keeps of its login: the pool it joined and its cancel key. The rest (the
/// startup packet, bytes pipelined behind it, the settings) is taken apart at the start, so an
/// idle client holds none of it; its user and database are in its registry entry.
struct Joined {
    pool: PoolEntry,
    cancel: CancelKey,
}

impl Session {
    /// A session for a client that just logged in, registered under `info` (idle).
    pub fn new(
        shared: std::sync::Arc<Shared>,
        client: ClientStream,
        login: Login,
        info: ClientInfo,
    ) -> Self {
        let Login {
            pool,
            cancel,
            pending,
            settings,
            startup: _,
        } = login;
        let login = Joined { pool, cancel };
        // Bytes the client pipelined behind its login; none usually, and then nothing is
        // allocated until it sends its first request.
        let mut bufs = Buffers {
            c2u: pending,
            ..Buffers::default()
        };
        bufs.release_empty();
        let registration = shared
            .clients
            .register(info, login.pool.pool.stats_handle());
        let transaction = login.pool.mode == PoolMode::Transaction;
        let tracked = transaction && shared.max_prepared_statements > 0;
        Session {
            settings,
            notify: None,
            statements: tracked.then(ClientStatements::new),
            registration,
            pinned_by: None,
            stays_on_retired: false,
            idle_sleep: None,
            timers: shared
                .timeouts
                .any_while_held()
                .then(|| Box::new(Timers::new(shared.timeouts))),
            shared,
            client,
            login,
            bufs,
            track: Tracker::default(),
            request_ready: false,
        }
    }

    fn entry(&self) -> &PoolEntry {
        &self.login.pool
    }

    /// Serves requests until the client leaves.
    ///
    /// A function returning an `async move` block rather than an `async fn`: an `async fn`
    /// taking `self` by value keeps both the argument and the moved-in binding in its state
    /// machine, so every idle client would carry its whole `Session` twice.
    #[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            if let Err(e) = self.serve_until_gone().await {
                self.span()
                    .in_scope(|| debug!(error = %e, "client connection ended"));
            }
        }
    }

    /// The client's log span (its registry id, peer, user and database), made for the rare
    /// paths that may log rather than kept: a span lives in the log subscriber's registry
    /// with its fields formatted, which would be several hundred bytes more for every idle
    /// client. Each one made carries the same fields, so its lines read as the client's.
    fn span(&self) -> Span {
        let info = self.registration.info();
        super::client_span(info.id, info.peer, info.user(), info.database())
    }

    async fn serve_until_gone(&mut self) -> Result<(), ClientError> {
        // Each path that leaves the loop boxes what it awaits, and the wait's outcome is taken
        // by value first: what this future keeps across its awaits is in every idle client.
        loop {
            let next = self.read_request().await?;
            let e = match next {
                Next::Request => {
                    // Serving a request (checkout, relay, cleanup) is by far the largest state
                    // of this future; boxed, it is allocated only while a request is served,
                    // so the task of a client waiting between requests stays small (see
                    // [`serve`] for what keeps that box small).
                    if !Box::pin(self.serve_request()).await? {
                        return Ok(());
                    }
                    continue;
                }
                Next::Closed => return Ok(()),
                Next::Stopped => ClientError::refused("57P01", SHUTTING_DOWN),
                Next::Killed => {
                    let span = self.span();
                    return Err(Box::pin(self.killed().instrument(span)).await);
                }
                Next::IdleTimeout => {
                    ClientError::refused(timeouts::IDLE_SESSION.0, timeouts::IDLE_SESSION.1)
                }
            };
            return Err(Box::pin(self.fatal(e)).await);
        }
    }

    async fn relay<'a>(
        &mut self,
        up: &'a mut Checkout,
        release_on_idle: bool,
        rotated: Option<std::pin::Pin<&'a mut (dyn std::future::Future<Output = ()> + Send + 'a)>>,
    ) -> RelayEnd {
        let max = self.shared.max_message_size;
        let max_statements = self.shared.max_prepared_statements;
        let (upstream, state, deadline) = up.parts();
        let tracking = self.statements.as_mut().map(|client| Tracking {
            client,
            upstream: state
                .statements
                .get_or_insert_with(|| UpstreamStatements::new(max_statements)),
        });
        let pool = &self.login.pool.pool;
        let signals = Signals {
            rotated,
            deadline,
            stop: self.registration.stop(),
            tracking,
            meter: Meter {
                stats: pool.stats(),
                instruments: pool.instruments(),
            },
            timers: self.timers.as_deref_mut(),
        };
        relay(
            &mut self.client,
            &mut upstream.stream,
            &mut self.bufs,
            &mut self.track,
            release_on_idle,
            max,
            signals,
        )
        .await
    }

    /// Ends a client an administrator killed: FATAL 57P01 to it, logged once.
    async fn killed(&mut self) -> ClientError {
        tracing::info!("client terminated by administrator (KILL)");
        self.fatal(ClientError::refused("57P01", KILLED)).await
    }

    /// Sends a FATAL error to the client and returns it.
    async fn fatal(&mut self, err: ClientError) -> ClientError {
        if let Some(code) = err.sqlstate() {
            self.shared.instruments.error_sent(code);
        }
        super::refuse(&mut self.client, &err).await;
        err
    }

    /// A checkout that took `waited` ended at `now` (with an upstream or not): its wait is
    /// counted, and the request's query and transaction are timed from now.
    fn waited(&mut self, waited: Duration, now: std::time::Instant) {
        self.login.pool.pool.stats().record_wait(waited);
        self.track.begin(now);
    }

    /// Writes everything left in the client-bound buffer.
    async fn flush_client(&mut self) -> Result<(), ClientError> {
        if !self.bufs.u2c.is_empty() {
            self.client.write_all(&self.bufs.u2c).await?;
            self.bufs.u2c.clear();
        }
        // Over TLS, records may wait in rustls until flushed; a no-op on plain TCP.
        self.client.flush().await?;
        self.bufs.bscan.reset();
        self.bufs.filter.reset();
        Ok(())
    }
}

impl Drop for Session {
    /// Traffic since the last finished transaction (a client that left in the middle of one,
    /// or between transactions after its last reply went out) still counts.
    fn drop(&mut self) {
        self.login.pool.pool.stats().add_traffic(&self.track.totals);
    }
}
