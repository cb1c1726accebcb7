//! One pool of upstream connections per (database, user).
//!
//! # Design
//!
//! The limit and the fair FIFO wait queue are deadpool's (a semaphore with `pool_size`
//! permits, so the upstream count never exceeds `pool_size`). pglease adds what a pooler needs
//! on top: connections are opened with the newest published lease; a connection is checked
//! before reuse (broken, unsolicited bytes from PostgreSQL, lease retired) and closed instead
//! of handed out; connections idle for `idle_timeout` are closed in the background
//! ([`idle`]); the login parameters of the first connection are cached so clients can be
//! greeted without an upstream.
//!
//! What a client holds is a [`Checkout`] ([`checkout`]): the connection with the state that
//! lives as long as it does, swapped for a [`Replacement`] or discarded with a
//! [`CloseReason`] only through its own operations. A replacement is a connection opened on
//! a newer lease ahead of need ([`replacements`], [`drain`]); no other word names one.

mod checkout;
mod close;
mod drain;
mod idle;
pub mod listener;
mod manager;
mod moves;
mod pause;
mod prove;
mod replacements;
mod reserve;
mod retire;
pub mod stats;
pub mod upstreams;
pub mod waits;

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool::managed::{self, PoolError, Timeouts};
use thiserror::Error;

use crate::credentials::{Credentials, Deadline, Lease};
use crate::upstream::{ServerParams, Upstream, UpstreamError, UpstreamTarget};

pub use checkout::{Checkout, Pooled, Replacement, UpstreamState};
pub use close::CloseReason;
pub use drain::maintain;
pub use manager::Manager;
pub use moves::{Move, MoveError};
pub use prove::prover;
pub use retire::{Retired, retire};
pub use stats::{ConnectResult, PoolInstruments, PoolStats, StatsSnapshot, TransactionTotals};
pub use upstreams::UpstreamInfo;

/// Settings of one pool, from its `[[databases]]` entry and `[proxy]`.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most upstream connections open at once.
    pub size: usize,
    /// How long a request may wait for an upstream before the client gets an error.
    pub wait_timeout: Duration,
    /// Upstreams idle this long (since they came back to the pool) are closed, and so are
    /// replacements left unused this long.
    pub idle_timeout: Duration,
    /// `min_pool_size`: upstreams the upkeep keeps open on the current lease, within `size`.
    pub min_size: usize,
    /// `reserve_pool_size`: extra upstreams beyond `size` for clients that waited
    /// `reserve_timeout` ([`reserve`]).
    pub reserve_size: usize,
    /// `reserve_pool_timeout`.
    pub reserve_timeout: Duration,
    /// `server_lifetime` (each connection gets ±10% jitter on it); `None` is off.
    pub lifetime: Option<Duration>,
}

/// Why a client could not get an upstream.
#[derive(Debug, Error)]
pub enum CheckoutError {
    /// Every upstream stayed busy for `query_wait_timeout`.
    #[error("query_wait_timeout: no upstream connection became free within {0:?}")]
    WaitTimeout(Duration),
    /// Opening a new upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The pool is shutting down.
    #[error("pool is closed")]
    Closed,
}

/// A cheap, cloneable handle to one pool.
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
    settings: Arc<PoolSettings>,
    /// Transaction mode's LISTEN/NOTIFY ([`listener`]); opens nothing until the first LISTEN.
    listener: listener::Listener,
    /// Counts and totals the admin plane reads ([`stats`]).
    stats: Arc<PoolStats>,
    /// `PAUSE` / `RESUME` ([`pause`]).
    pause: Arc<pause::PauseGate>,
    /// Who may use the reserve pool's extra connections; `None` without a reserve.
    gate: Option<Arc<reserve::Gate>>,
}

impl Pool {
    /// A pool that logs in to `target` with the current lease of `credentials`, recording on
    /// `instruments`.
    pub fn new(
        target: UpstreamTarget,
        credentials: Credentials,
        settings: PoolSettings,
        instruments: PoolInstruments,
    ) -> Pool {
        let listener =
            listener::Listener::new(target.clone(), credentials.clone(), instruments.clone());
        let manager = Manager::new(target, credentials, &settings, instruments);
        let gate = reserve::Gate::new(
            settings.size,
            settings.reserve_size,
            settings.reserve_timeout,
        );
        let inner = managed::Pool::builder(manager)
            .max_size(settings.size + gate.as_ref().map_or(0, |_| settings.reserve_size))
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(settings.wait_timeout))
            .build()
            .unwrap_or_else(|_| unreachable!("a runtime is set, so building cannot fail"));
        Pool {
            inner,
            settings: Arc::new(settings),
            listener,
            stats: Arc::default(),
            pause: Arc::default(),
            gate: gate.map(Arc::new),
        }
    }

    /// Waits (fairly, first come first served) for an upstream; while the pool is paused,
    /// first for `RESUME`.
    ///
    /// The common case, an idle upstream free right now, takes no timer and reads no clock
    /// here: a non-blocking attempt comes first, and only when nothing is free does the
    /// checkout queue with `query_wait_timeout` armed. The attempt cannot jump the queue: a
    /// tokio semaphore hands a released permit to its oldest waiter before any is left for
    /// `try_acquire`, so it succeeds only while nobody waits.
    pub async fn checkout(&self) -> Result<Checkout, CheckoutError> {
        self.pause.pass().await;
        if let Some(up) = self.checkout_now().await? {
            return Ok(up);
        }
        // Not boxed: both paths hold one deadpool `timeout_get` future (the same type, timer
        // state included), so the waiting path adds only a few words to every checkout's
        // future, while a box cost an allocation and a free on each wait, which with more
        // clients than upstreams is most checkouts.
        self.checkout_waiting().await
    }

    /// A free upstream without waiting for one (opening it if the pool has room but no idle
    /// one); `None` when every slot, or every main permit of the reserve gate, is taken.
    async fn checkout_now(&self) -> Result<Option<Checkout>, CheckoutError> {
        let permit = match &self.gate {
            Some(gate) => match gate.try_enter() {
                Some(permit) => Some(permit),
                None => return Ok(None),
            },
            None => None,
        };
        match self.inner.timeout_get(&NOW).await {
            Ok(object) => Ok(Some(Checkout::new(object, permit))),
            // No slot free (with a gate, only while reserve holders fill deadpool's limit).
            Err(PoolError::Timeout(managed::TimeoutType::Wait)) => Ok(None),
            Err(e) => Err(self.checkout_error(e)),
        }
    }

    /// The queued checkout, with `query_wait_timeout` over the gate and deadpool together.
    async fn checkout_waiting(&self) -> Result<Checkout, CheckoutError> {
        let permit = match &self.gate {
            Some(gate) => Some(gate.enter(self.settings.wait_timeout).await?),
            None => None,
        };
        let timeouts = Timeouts {
            wait: Some(self.settings.wait_timeout),
            create: None,
            recycle: None,
        };
        self.inner
            .timeout_get(&timeouts)
            .await
            .map(|object| Checkout::new(object, permit))
            .map_err(|e| self.checkout_error(e))
    }

    fn checkout_error(&self, e: PoolError<UpstreamError>) -> CheckoutError {
        match e {
            PoolError::Timeout(managed::TimeoutType::Wait) => {
                CheckoutError::WaitTimeout(self.settings.wait_timeout)
            }
            PoolError::Timeout(_) => CheckoutError::Upstream(UpstreamError::Timeout),
            PoolError::Backend(e) => CheckoutError::Upstream(e),
            _ => CheckoutError::Closed,
        }
    }

    /// The ParameterStatus values clients are greeted with: cached from the first upstream
    /// login, opening one if none has logged in yet.
    pub async fn server_params(&self) -> Result<ServerParams, CheckoutError> {
        if let Some(p) = self.inner.manager().cached_params() {
            return Ok(p);
        }
        let up = self.checkout().await?;
        Ok(up.upstream().params.clone())
    }

    /// Moves ready replacements into the pool: checks out, without waiting, every upstream
    /// free right now and gives them all back. Checking out an idle upstream on a superseded
    /// lease swaps it for a ready replacement ([`Manager`]'s recycle), and a free slot is
    /// filled from the ready ones first, so no client ever waits for a login and the pool
    /// keeps its size. Connections are held only for the few microseconds this takes.
    pub async fn cycle_idle(&self) {
        // Idle ones plus one free slot per ready replacement; any more would open new
        // connections the pool does not need.
        let manager = self.inner.manager();
        let current = manager.credentials().generation();
        let idle = self.inner.status().available;
        let ready = manager
            .replacements
            .count_ready(current, manager.idle_timeout());
        let want = (idle + ready).min(self.settings.size);
        let mut held = Vec::with_capacity(want);
        while held.len() < want {
            // The pool's own checkouts stay within `pool_size`, never in the reserve.
            let permit = match &self.gate {
                Some(gate) => match gate.try_enter() {
                    Some(permit) => Some(permit),
                    None => break,
                },
                None => None,
            };
            match self.inner.timeout_get(&NOW).await {
                Ok(up) => held.push((up, permit)),
                Err(_) => break,
            }
        }
    }

    /// Closes idle connections beyond `pool_size` once no client uses the reserve any more,
    /// so the reserve's extra connections last only as long as the burst that opened them.
    /// Returns how many it closed.
    pub(crate) fn release_reserve(&self) -> usize {
        let Some(gate) = &self.gate else {
            return 0;
        };
        let mut excess = self.inner.status().size.saturating_sub(self.settings.size);
        if excess == 0 || gate.reserve_in_use() > 0 {
            return 0;
        }
        let removed = self.inner.retain(|_, _| {
            let keep = excess == 0;
            excess = excess.saturating_sub(1);
            keep
        });
        let closed = removed.removed.len();
        for mut up in removed.removed {
            up.close_as(CloseReason::ReserveReleased);
        }
        closed
    }

    /// Takes the login that proved a lease about to be published as this pool's first
    /// replacement for its connections on older leases; hands it back when the pool needs
    /// none (see [`drain`]).
    pub fn offer_replacement(&self, up: Upstream) -> Option<Upstream> {
        self.inner
            .manager()
            .offer_replacement(up, most_ready(&self.settings))
    }

    /// Session mode: resolves when a session on `old`, a superseded lease, should move: a
    /// replacement is ready for it, or the old lease is within [`MOVE_BEFORE_DEADLINE`] of
    /// its hard deadline. Sessions thus move one replacement at a time, at the drain's pace,
    /// instead of all logging in at once the moment a new lease is published.
    pub async fn move_due(&self, old: &Lease) {
        let manager = self.inner.manager();
        let creds = manager.credentials();
        loop {
            // Read on every round: a renewal moves the old lease's deadline later.
            let latest = match creds.deadline(old.generation) {
                Deadline::Never => None,
                Deadline::At(at) => Some(
                    at.checked_sub(MOVE_BEFORE_DEADLINE)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
                Deadline::Over => return,
            };
            // Registered before looking, so a replacement made ready in between still wakes us.
            let mut added = pin!(manager.replacements.added.notified());
            added.as_mut().enable();
            if manager
                .replacements
                .count_ready(creds.generation(), manager.idle_timeout())
                > 0
            {
                return;
            }
            let Some(latest) = latest else {
                added.await;
                continue;
            };
            let Ok(wait) = latest.duration_since(SystemTime::now()) else {
                return;
            };
            tokio::select! {
                () = added => {}
                () = tokio::time::sleep(wait) => return,
            }
        }
    }

    /// A ready replacement on the newest lease, for a session-mode client to move to.
    fn take_replacement(&self) -> Option<Replacement> {
        let manager = self.inner.manager();
        let current = manager.credentials().generation();
        let replacement = manager.replacements.take(current, manager.idle_timeout())?;
        manager.wanted.notify_one();
        Some(Replacement(replacement))
    }

    /// Gives back a replacement taken with [`Pool::take_replacement`] and not used.
    fn return_replacement(&self, replacement: Replacement) {
        self.inner.manager().replacements.add(replacement.0);
    }

    /// How many logins this pool made while handing a connection out, where the client
    /// waits for them: the pool growing, or refilling the slot of a connection it closed.
    /// A rotation should add none (its replacements log in on the background task, and a
    /// connection keeps serving on its old lease until one is ready), so this is the count
    /// to watch for logins that clients feel.
    pub fn checkout_logins(&self) -> u64 {
        self.inner
            .manager()
            .checkout_logins
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Current counts: (open upstreams, idle upstreams, requests waiting).
    pub fn status(&self) -> (usize, usize, usize) {
        let s = self.inner.status();
        (s.size, s.available, s.waiting)
    }

    /// Closes the pool: waiting and future checkouts fail, idle upstreams, ready
    /// replacements and the listener connection are closed.
    pub fn close(&self) {
        if let Some(gate) = &self.gate {
            gate.close();
        }
        self.inner.close();
        self.listener.close();
        self.inner.manager().replacements.clear();
    }

    /// Closes every idle upstream now, as `reason`; connections in use (and replacements
    /// ready for them) are left alone. Returns how many closed.
    pub fn close_idle(&self, reason: CloseReason) -> usize {
        let removed = self.inner.retain(|_, _| false).removed;
        let closed = removed.len();
        for mut up in removed {
            up.close_as(reason);
        }
        closed
    }

    /// The pool's listener, which transaction-mode clients' LISTENs subscribe to.
    pub fn listener(&self) -> &listener::Listener {
        &self.listener
    }

    /// The credentials entry this pool logs in with.
    pub fn credentials(&self) -> &Credentials {
        self.inner.manager().credentials()
    }

    /// The pool's settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// The pool's counts and totals, for the admin plane.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// A handle on the pool's counts, for a client's registry entry to move its gauges.
    pub fn stats_handle(&self) -> Arc<PoolStats> {
        self.stats.clone()
    }

    /// Every open upstream connection, for `SHOW SERVERS`.
    pub fn upstreams(&self) -> Vec<Arc<UpstreamInfo>> {
        self.inner.manager().upstreams.all()
    }

    /// `PAUSE`: new checkouts wait until [`Pool::resume`]; held upstreams finish their work.
    pub fn pause(&self) {
        self.pause.pause();
    }

    /// `RESUME`: waiting and future checkouts go on.
    pub fn resume(&self) {
        self.pause.resume();
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// How many upstreams clients hold right now.
    pub fn active_upstreams(&self) -> usize {
        let s = self.inner.status();
        s.size.saturating_sub(s.available)
    }
    /// The pool's prometheus instruments (histograms, login and close counters).
    pub fn instruments(&self) -> &PoolInstruments {
        &self.inner.manager().instruments
    }

    /// Upstream connections by state, for the admin plane (takes the replacements' lock
    /// briefly: scrape and `SHOW` time only, never on the data path).
    pub fn upstream_counts(&self) -> UpstreamCounts {
        let s = self.inner.status();
        let manager = self.inner.manager();
        let current = manager.credentials().generation();
        UpstreamCounts {
            active: s.size.saturating_sub(s.available),
            idle: s.available,
            replacement: manager
                .replacements
                .count_ready(current, manager.idle_timeout()),
            retiring: manager.replacements.older_than(current).connections,
        }
    }
}

/// A pool's upstream connections by state (`pglease_upstream_connections{state}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Checked out by a client.
    pub active: usize,
    /// In the pool, free.
    pub idle: usize,
    /// Logged in on the newest lease ahead of need, not yet in the pool.
    pub replacement: usize,
    /// Open on a superseded lease (these are also counted as active or idle).
    pub retiring: usize,
}

/// How long before a superseded lease's hard deadline a session still on it moves even with
/// no replacement ready (logging in on its own path), rather than be cut off at the deadline.
pub const MOVE_BEFORE_DEADLINE: Duration = Duration::from_secs(1);

/// deadpool's non-blocking checkout: a zero wait makes it `try_acquire` its semaphore, with
/// no timer; creating and recycling are not bounded here (the login has `connect_timeout`).
const NOW: Timeouts = Timeouts {
    wait: Some(Duration::ZERO),
    create: None,
    recycle: None,
};

/// How many replacements a pool keeps logged in ahead of need during a rotation.
fn most_ready(settings: &PoolSettings) -> usize {
    (settings.size / 4).max(1)
}
