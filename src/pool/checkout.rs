//! The checked-out upstream: a pooled connection together with the state that lives as long
//! as it does, and the only operations that change which connection a client holds (swap for
//! a replacement, discard with a reason).
//!
//! # Design
//!
//! deadpool's slots hold boxed [`Pooled`] values (deadpool moves its objects by value on
//! every checkout and return, so only a pointer moves). A client holds one as a [`Checkout`], a plain
//! wrapper around deadpool's object: dropping it gives the connection back with no work and
//! no allocation, which is the transaction-mode hot path (one checkout per transaction).
//! A [`Replacement`] is a connection the pool opened on a newer lease ahead of need and lent
//! to a session for a move; it goes into the session's slot with [`Checkout::swap`], so the
//! slot (and the pool's count) stays the session's while only the connection in it changes.
//!
//! What a client left on a connection is the connection's, not the client's: the prepared
//! statements present on it and the parameters set on it ([`UpstreamState`]) stay with the
//! [`Pooled`] across checkouts, and go with it when it closes. Every close carries one
//! [`CloseReason`], logged once when the connection is dropped; a connection dropped without
//! one is one deadpool let go of, which it does only when its pool closes.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed;
use prometheus::IntCounter;
use tracing::debug;

use super::close::CloseReason;
use super::manager::Manager;
use super::replacements::Tally;
use super::upstreams::{InUse, Listed, UpstreamInfo};
use crate::client::statements::UpstreamStatements;
use crate::credentials::LeaseEnd;
use crate::upstream::Upstream;

/// What requests left on one upstream connection that outlives a checkout. A fresh
/// connection has none of it; nothing here is ever handed to a client other than through
/// the statement and parameter tracking built on it.
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// Transaction mode: the named prepared statements present on this connection under
    /// proxy-chosen names, and the replies it still owes the proxy for them. Made by the first
    /// tracked request it serves (`None` until then, and always in session mode), so it lives
    /// and dies with the connection.
    pub statements: Option<UpstreamStatements>,
    /// Session parameters set on this connection away from what it logged in with, as
    /// (name, value), so the next client's own values can be put in their place.
    pub params: Vec<(Box<str>, Box<str>)>,
}

/// An upstream connection as its pool keeps it.
pub struct Pooled {
    up: Upstream,
    /// Fires when this connection's lease reaches its hard deadline; the relay watches it.
    deadline: Arc<LeaseEnd>,
    /// Counts this connection under its generation for as long as it is open, wherever it is
    /// (idle, checked out, or waiting as a replacement).
    _tally: Tally,
    /// Lists this connection in its pool's `SHOW SERVERS` registry while it is open.
    listed: Listed,
    /// The pool's credentials entry, named in the close log line.
    credentials: Arc<str>,
    /// The pool's close counters by reason, one bumped when this connection closes.
    closes: Arc<[IntCounter]>,
    /// What clients left on this connection.
    state: UpstreamState,
    /// Why it is being closed, once that is decided; the first reason stays.
    closing: Option<CloseReason>,
    /// When it has served long enough (`server_lifetime` with its jitter); never if `None`.
    retire_at: Option<Instant>,
}

impl Pooled {
    pub(super) fn new(
        up: Upstream,
        deadline: Arc<LeaseEnd>,
        tally: Tally,
        listed: Listed,
        credentials: Arc<str>,
        closes: Arc<[IntCounter]>,
    ) -> Pooled {
        Pooled {
            up,
            deadline,
            _tally: tally,
            listed,
            credentials,
            closes,
            state: UpstreamState::default(),
            closing: None,
            retire_at: None,
        }
    }

    /// Gives this connection a lifetime of `lifetime` ±10%, drawn once, so connections
    /// opened together (a pool filling up, a rotation) retire spread out rather than at once.
    pub(super) fn retire_after(&mut self, lifetime: Duration) {
        let jitter = 0.9 + 0.2 * rand::random::<f64>();
        self.retire_at = self.up.created_at.checked_add(lifetime.mul_f64(jitter));
    }

    /// Whether it has outlived its `server_lifetime`: it is closed when it next comes back,
    /// or at the latest before it would be handed out again.
    pub fn past_lifetime(&self) -> bool {
        self.retire_at.is_some() && self.past_lifetime_at(Instant::now())
    }

    /// [`Pooled::past_lifetime`] as of `now`, a clock read the caller already made.
    pub fn past_lifetime_at(&self, now: Instant) -> bool {
        self.retire_at.is_some_and(|at| now >= at)
    }

    /// The connection itself: its socket, lease, login parameters and cancel key.
    pub fn upstream(&self) -> &Upstream {
        &self.up
    }

    /// The generation of the lease this connection logged in with.
    pub fn generation(&self) -> u64 {
        self.up.generation()
    }

    /// The signal that this connection's lease reached its hard deadline.
    pub fn deadline(&self) -> &LeaseEnd {
        &self.deadline
    }

    /// What clients left on this connection.
    pub fn state(&self) -> &UpstreamState {
        &self.state
    }

    /// What `SHOW SERVERS` shows about it.
    pub fn info(&self) -> &UpstreamInfo {
        self.listed.info()
    }

    /// Decides why this connection closes when it is dropped; an earlier reason stays.
    pub(super) fn close_as(&mut self, reason: CloseReason) {
        self.closing.get_or_insert(reason);
    }

    /// Puts `replacement` in this connection's place; this one closes, its lease retired.
    pub(super) fn swap(&mut self, replacement: Pooled) {
        let mut old = std::mem::replace(self, replacement);
        old.close_as(CloseReason::LeaseRetired);
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let reason = self.closing.unwrap_or(CloseReason::PoolClosed);
        if let Some(c) = self.closes.get(reason.index()) {
            c.inc();
        }
        debug!(
            credentials = %self.credentials,
            generation = self.up.generation(),
            pid = self.up.cancel.pid,
            reason = reason.as_str(),
            "upstream closed"
        );
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("generation", &self.up.generation())
            .field("pid", &self.up.cancel.pid)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

/// An upstream checked out of a pool. Dropping it gives the connection back to the pool;
/// [`Checkout::discard`] closes it instead. The [`InUse`] beside it shows the connection as
/// active in `SHOW SERVERS` for as long as it is held. In a pool with a reserve it also holds
/// its permit ([`super::reserve`]), released after the connection (fields drop in order).
pub struct Checkout(
    pub(super) managed::Object<Manager>,
    InUse,
    // Never read: holding it is the point, and dropping it lets the next client in.
    #[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>,
);

impl Checkout {
    pub(super) fn new(
        object: managed::Object<Manager>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Checkout {
        // deadpool stamped the checkout (recycled, or created just now): reuse its clock read.
        let metrics = managed::Object::metrics(&object);
        let at = metrics.recycled.unwrap_or(metrics.created);
        let in_use = object.listed.in_use(at);
        Checkout(object, in_use, permit)
    }

    /// When the pool handed this connection out (deadpool's stamp, taken as the checkout
    /// completed), so the client need not read the clock again for it.
    pub fn checked_out_at(&self) -> Instant {
        let metrics = managed::Object::metrics(&self.0);
        metrics.recycled.unwrap_or(metrics.created)
    }

    /// The connection, for the exchanges pglease itself runs on it (cleanup, a session
    /// move's capture and replay).
    pub fn upstream_mut(&mut self) -> &mut Upstream {
        &mut self.0.up
    }

    /// What clients left on this connection, for the statement and parameter tracking.
    pub fn state_mut(&mut self) -> &mut UpstreamState {
        &mut self.0.state
    }

    /// The connection, its state and its deadline at once, for the relay, which reads the
    /// socket while it updates the statement tracking.
    pub fn parts(&mut self) -> (&mut Upstream, &mut UpstreamState, &LeaseEnd) {
        let pooled = &mut *self.0;
        (&mut pooled.up, &mut pooled.state, &pooled.deadline)
    }

    /// Makes `replacement` the connection in this slot (a session move): the old connection
    /// closes and lets its lease drain, while the slot stays the client's.
    pub fn swap(&mut self, replacement: Replacement) {
        self.0.swap(replacement.0);
        self.1 = self.0.listed.in_use(Instant::now());
    }

    /// Closes the connection instead of giving it back (its state is unknown or dirty, or it
    /// is on its way out), freeing its slot.
    pub fn discard(self, reason: CloseReason) {
        let mut pooled: Box<Pooled> = managed::Object::take(self.0);
        pooled.close_as(reason);
    }
}

impl Deref for Checkout {
    type Target = Pooled;

    fn deref(&self) -> &Pooled {
        &self.0
    }
}

/// A connection on the newest lease, opened ahead of need and lent to a session-mode client
/// for a move: recreate the session's state on it, then [`Checkout::swap`] it in, or give it
/// back to the pool, or close it with [`Replacement::discard`].
#[derive(Debug)]
pub struct Replacement(pub(super) Pooled);

impl Replacement {
    /// The connection, to recreate a session's state on.
    pub fn upstream_mut(&mut self) -> &mut Upstream {
        &mut self.0.up
    }

    /// Closes it (it holds part of a session's state, or failed).
    pub fn discard(mut self, reason: CloseReason) {
        self.0.close_as(reason);
    }
}

impl Deref for Replacement {
    type Target = Pooled;

    fn deref(&self) -> &Pooled {
        &self.0
    }
}

#[cfg(test)]
mod tests;
