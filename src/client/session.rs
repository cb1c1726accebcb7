//! A logged-in client's life: wait for a complete request, check out an upstream, relay, give
//! the upstream back (transaction mode: at each idle ReadyForQuery; session mode: when the
//! client leaves), and clean up whatever a vanished client left open.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use tracing::{Instrument, Span, debug};

use super::ClientError;
use super::cancel::CancelKey;
use super::handshake::Login;
use super::notify::ClientNotify;
use super::relay::{Buffers, Meter, RelayEnd, Signals, Tracker, relay, spare};
use super::shared::{PoolEntry, Shared};
use super::statements::{ClientStatements, UpstreamStatements};
use super::stop::{ClientInfo, Registration, Signal};
use super::stream::ClientStream;
use super::timers::Timers;
use super::tracked::Tracking;
use crate::config::PoolMode;
use crate::pool::{Checkout, CheckoutError};
use crate::protocol::backend::{self, Severity};
use crate::tls::stream::RelayIo;

/// How long cleanup statements (ROLLBACK, the reset query) may take before the upstream is
/// closed instead.
mod cleanup;
mod follow;
mod release;
mod serve;
mod settings;
mod timeouts;

const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes one read takes from an idle client (on the stack, see [`read_client`]): a
/// typical request arrives whole, a larger one continues into its heap buffer.
const IDLE_READ: usize = 4096;

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
    pinned_by: Option<String>,
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
    /// The client's log span (its registry id, peer, user, database), entered only where
    /// the session may log (see [`serve`]), not on every poll.
    span: Span,
}

/// What a session keeps of its login: the pool it joined and its cancel key. The rest (the
/// startup packet, bytes pipelined behind it, the settings) is taken apart at the start, so an
/// idle client holds none of it; its user and database are in its registry entry.
struct Joined {
    pool: PoolEntry,
    cancel: CancelKey,
}

enum Next {
    Request,
    Closed,
    /// Told to leave while idle.
    Stopped,
    /// Ended by an administrator.
    Killed,
    /// Idle between transactions for `client_idle_timeout`.
    IdleTimeout,
}

impl Session {
    /// A session for a client that just logged in, registered under `info` (idle), logging
    /// in `span`.
    pub fn new(
        shared: std::sync::Arc<Shared>,
        client: ClientStream,
        login: Login,
        info: ClientInfo,
        span: Span,
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
            span,
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
    pub fn run(mut self) -> impl std::future::Future<Output = Result<(), ClientError>> + Send {
        async move { self.serve_until_gone().await }
    }

    async fn serve_until_gone(&mut self) -> Result<(), ClientError> {
        loop {
            let e = match self.read_request().await? {
                Next::Request => None,
                Next::Closed => return Ok(()),
                Next::Stopped => Some(ClientError::refused("57P01", SHUTTING_DOWN)),
                Next::Killed => {
                    let span = self.span.clone();
                    return Err(Box::pin(self.killed()).instrument(span).await);
                }
                Next::IdleTimeout => Some(ClientError::refused(
                    timeouts::IDLE_SESSION.0,
                    timeouts::IDLE_SESSION.1,
                )),
            };
            if let Some(e) = e {
                return Err(Box::pin(self.fatal(e)).await);
            }
            // Serving a request (checkout, relay, cleanup) is by far the largest state of
            // this future; boxed, it is allocated only while a request is served, so the task
            // of a client waiting between requests stays small (see [`serve`] for what keeps
            // that box small).
            if !Box::pin(self.serve_request()).await? {
                return Ok(());
            }
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
            stop: &self.registration.stop,
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

    /// Reads from the client until a complete request is buffered (or it leaves). Nothing is
    /// checked out before then, so a slow client never holds an upstream while it types.
    async fn read_request(&mut self) -> Result<Next, ClientError> {
        let max = self.shared.max_message_size;
        // When `client_idle_timeout` ends this wait, set once the client is first seen idle.
        let mut idle_until = None;
        loop {
            let scan = self.bufs.fscan.scan(&self.bufs.c2u, true, max)?;
            self.track.pending += scan.sync_points;
            self.track.totals.queries += u64::from(scan.sync_points);
            self.request_ready |= scan.request_ready;
            if scan.terminate && self.bufs.fscan.forwardable() == 0 {
                return Ok(Next::Closed);
            }
            if self.request_ready {
                return Ok(Next::Request);
            }
            if self.bufs.c2u.len() > max {
                return Err(ClientError::refused(
                    "54000",
                    "request exceeds max_message_size",
                ));
            }
            if let Some(frame) = self.bufs.fscan.pending_frame_len(&self.bufs.c2u) {
                let unscanned = self.bufs.c2u.len() - self.bufs.fscan.forwardable();
                self.bufs.c2u.reserve(frame.saturating_sub(unscanned));
            }
            let idle = self.bufs.c2u.is_empty() && self.track.status == b'I';
            // Between requests, outside a transaction: where notifications are delivered.
            let deliverable = self.track.status == b'I' && self.track.pending == 0;
            let subscription = self.notify.as_ref().and_then(|n| n.subscription());
            let notified = async {
                match subscription {
                    // Boxed: only a client that LISTENs holds the wait's room.
                    Some(s) => Box::pin(s.ready()).await,
                    None => std::future::pending().await,
                }
            };
            if !idle {
                idle_until = None;
            } else if idle_until.is_none() {
                idle_until = self
                    .shared
                    .timeouts
                    .client_idle
                    .map(|l| tokio::time::Instant::now() + l);
                if let Some(at) = idle_until {
                    match self.idle_sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(at),
                        None => self.idle_sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
            }
            let idle_sleep = self.idle_sleep.as_mut().filter(|_| idle_until.is_some());
            let idle_over = async move {
                match idle_sleep {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            // Idle between transactions: the moment a shutdown may end the session, and the
            // one where a client whose pool a reload retired lets go of it (not at its next
            // request), so the old pool can close.
            let (stop, tenure) = (&self.registration.stop, &self.login.pool.tenure);
            let watch_retired = idle && !self.stays_on_retired;
            let signal =
                poll_fn(|cx| stop.poll_idle(cx, idle, || watch_retired && tenure.is_retired()));
            // Nothing to hold while waiting: empty buffers go back to the worker's spares.
            self.bufs.release_empty();
            let read = read_client(&mut self.client, &mut self.bufs.c2u);
            let n = tokio::select! {
                biased;
                r = read => r?,
                () = idle_over, if idle_until.is_some() => return Ok(Next::IdleTimeout),
                signal = signal => match signal {
                    Signal::Killed => return Ok(Next::Killed),
                    Signal::Stopped => return Ok(Next::Stopped),
                    Signal::LookAgain => {
                        self.span.clone().in_scope(|| self.follow_reload());
                        continue;
                    }
                },
                () = notified, if deliverable => {
                    let span = self.span.clone();
                    Box::pin(self.deliver_notifications()).instrument(span).await?;
                    continue;
                }
            };
            if n == 0 {
                return Ok(Next::Closed);
            }
            self.track.totals.received_bytes += n as u64;
        }
    }

    /// A checkout that took `waited` ended at `now` (with an upstream or not): its wait is
    /// counted, and the request's query and transaction are timed from now.
    fn waited(&mut self, waited: Duration, now: std::time::Instant) {
        self.login.pool.pool.stats().record_wait(waited);
        self.track.begin(now);
    }

    /// Transaction mode: whether the buffered request may be a LISTEN / UNLISTEN one for
    /// [`Session::answer_listen`] (a cheap look, no allocation).
    fn may_answer_listen(&self) -> bool {
        if self.login.pool.mode != PoolMode::Transaction {
            return false;
        }
        let request = &self.bufs.c2u[..self.bufs.fscan.forwardable()];
        match &self.notify {
            Some(n) => n.may_answer(request, self.track.status),
            None => ClientNotify::may_answer_first(request, self.track.status),
        }
    }

    /// Transaction mode: answers a LISTEN / UNLISTEN request through the pool's listener (see
    /// [`ClientNotify::answer`]). True when it was answered.
    async fn answer_listen(&mut self) -> Result<bool, ClientError> {
        if self.login.pool.mode != PoolMode::Transaction {
            return Ok(false);
        }
        let pool = &self.login.pool.pool;
        let notify = (self.notify).get_or_insert_with(|| Box::new(ClientNotify::new(pool.clone())));
        let request = &self.bufs.c2u[..self.bufs.fscan.forwardable()];
        let status = self.track.status;
        let Some(syncs) = notify.answer(request, status, &mut self.bufs.u2c).await else {
            return Ok(false);
        };
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        self.track.pending = self.track.pending.saturating_sub(syncs);
        self.flush_client().await?;
        Ok(true)
    }

    /// Transaction mode: writes the notifications waiting for the client. A client that let
    /// too many pile up is ended (see [`crate::pool::listener`]).
    async fn deliver_notifications(&mut self) -> Result<(), ClientError> {
        let Some(notify) = &self.notify else {
            return Ok(());
        };
        if let Err(e) = notify.deliver(&mut self.bufs.u2c) {
            let e = ClientError::refused("54000", format!("terminating connection: {e}"));
            return Err(self.fatal(e).await);
        }
        self.flush_client().await
    }

    /// Answers a request that could not get an upstream: one error, and a ReadyForQuery for
    /// each sync point so the client's protocol state stays in step. The client stays
    /// connected and may retry.
    async fn fail_request(&mut self, e: &CheckoutError) -> Result<(), ClientError> {
        let code = match e {
            CheckoutError::WaitTimeout(_) => "57014",
            CheckoutError::Upstream(_) => "08006",
            CheckoutError::Closed => "57P01",
        };
        debug!(error = %e, "request refused");
        self.refuse_request(code, &e.to_string()).await
    }

    /// Answers the buffered request with one error (and its ReadyForQuery replies) without
    /// running it; the client stays connected.
    async fn refuse_request(&mut self, code: &str, message: &str) -> Result<(), ClientError> {
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        self.shared.instruments.error_sent(code);
        let out = &mut self.bufs.u2c;
        backend::error_response(out, Severity::Error, code, message);
        for _ in 0..self.track.pending {
            backend::ready_for_query(out, b'I');
        }
        self.track.pending = 0;
        self.flush_client().await
    }

    /// Transaction mode: answers a request that only prepares named statements outside a
    /// transaction without checking out an upstream (see
    /// [`ClientStatements::answer_without_upstream`]). True when it was answered.
    async fn answer_without_upstream(&mut self) -> Result<bool, ClientError> {
        let Some(statements) = self.statements.as_mut() else {
            return Ok(false);
        };
        let n = self.bufs.fscan.forwardable();
        let request = &self.bufs.c2u[..n];
        let Some(syncs) =
            statements.answer_without_upstream(request, self.track.status, &mut self.bufs.u2c)
        else {
            return Ok(false);
        };
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        self.track.pending = self.track.pending.saturating_sub(syncs);
        self.flush_client().await?;
        Ok(true)
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

/// Reads the client's next bytes into `buf`. A buffer without an allocation (an idle
/// client's, see [`Buffers::release_empty`]) gets one only once bytes are there: each poll
/// borrows one of the worker's [`spare`] buffers and gives it back if nothing arrived, or,
/// with no spare at hand, reads through a stack buffer inside the poll and copies the bytes
/// into an allocation sized for them (the relay reserves its own room when it starts). The
/// wait so holds no heap memory.
async fn read_client(client: &mut ClientStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() > 0 {
        return client.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        if spare::refill(buf) {
            let read = client.poll_read_into(cx, buf);
            if read.is_pending() {
                spare::give(buf);
            }
            return read;
        }
        let mut stack = [0u8; IDLE_READ];
        let mut read = ReadBuf::new(&mut stack);
        std::task::ready!(std::pin::Pin::new(&mut *client).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

impl Drop for Session {
    /// Traffic since the last finished transaction (a client that left in the middle of one,
    /// or between transactions after its last reply went out) still counts.
    fn drop(&mut self) {
        self.login.pool.pool.stats().add_traffic(&self.track.totals);
    }
}
