//! The rotator: one background task per `[credentials.NAME]` entry that acquires leases,
//! proves and publishes them, and retires the old ones (DESIGN §5). This file is the handle
//! every pool and client reads; [`task`] is the loop itself.
//!
//! # Design
//!
//! ```text
//!  acquire N ─► prove ─► publish N ─┬─ at rotate_at·lifetime, source change, or ROTATE:
//!                                   │     acquire N+1 ─► prove ─► publish N+1 ─► N retiring
//!                                   ├─ every tick, for each retiring lease:
//!                                   │     no connection left   ─► revoke at once
//!                                   │     near its deadline    ─► renew (never past max_ttl)
//!                                   │     deadline reached     ─► end its connections, revoke
//!                                   ├─ while acquisition fails: the current lease is renewed
//!                                   │     near its deadline, and keeps serving past it
//!                                   └─ on stop: revoke the current lease and every retiring one
//! ```
//!
//! Starting is two phases: [`Credentials::new`] makes the handle the pools are built with,
//! then [`Rotator::start`] runs the task with a prover that can hand its login to those pools.
//! Publishing is a `watch` send plus an atomic generation, so pools read the current lease
//! without a lock. Which connections still use a lease is known without bookkeeping: every
//! upstream connection holds an `Arc` of its lease, so the strong count minus the rotator's
//! own reference is the number of connections on it. A failed acquisition or proof never
//! unpublishes anything: traffic keeps flowing on the current lease while the rotator retries
//! with jittered backoff and `last_error` says why (§5.7). A lease that fails its proof (the
//! source handed out a password PostgreSQL refuses) is revoked and never published. A lease
//! that arrives with less life left than a rotation needs is used, reported, and followed by
//! backoff, so a source can never make the rotator spin. Every lifecycle event is one audit
//! line ([`super::audit`]).
//!
//! # Outages
//!
//! While the source cannot give a new lease, the current one is renewed near its deadline if
//! the source still answers renewals. Past its expiry the open connections keep serving:
//! for the issuer (and for credentials whose expiry only stops new logins) PostgreSQL keeps
//! authenticated sessions, so ending them would turn an outage of the store into an outage of
//! the application. New logins fail from the expiry on, and the entry reports it
//! (`current_expired`). A lease the store revokes (Vault ends a dynamic lease at its expiry,
//! terminating its sessions) ends its connections there and then; pglease never keeps a
//! connection on a lease it revoked itself.

mod task;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{Notify, watch};

use super::deadline::{Deadline, Deadlines, EndReason, LeaseEnd};
use super::{Lease, Lifecycle, Source, SourceError};

pub use task::Rotator;

/// Logs in once with a fresh lease before it is published.
pub type Prover = Arc<
    dyn Fn(Arc<Lease>) -> Pin<Box<dyn Future<Output = Result<(), ProofError>> + Send>>
        + Send
        + Sync,
>;

/// Why the login that proves a lease failed. Carries no secret.
#[derive(Debug, Error)]
pub enum ProofError {
    /// PostgreSQL could not be reached: says nothing about the lease.
    #[error("PostgreSQL unreachable for the proving login: {0}")]
    Unreachable(String),
    /// PostgreSQL refused the login (a wrong password, a role it does not know).
    #[error("the proving login was refused: {0}")]
    Refused(String),
}

/// Why a new lease could not be obtained; the variant decides the audit line and the retry.
#[derive(Debug, Error)]
pub enum ObtainError {
    /// The source did not hand one out.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The source handed one out, but it failed its proof (and was revoked).
    #[error("new lease failed its login: {0}")]
    Proof(#[from] ProofError),
}

/// What the admin plane shows about one credentials entry.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    /// Generation of the published lease; 0 before the first one.
    pub generation: u64,
    /// Id of the published lease (not secret).
    pub lease_id: Option<String>,
    /// Upstream role of the published lease.
    pub username: Option<String>,
    /// When the published lease stops working (after renewals).
    pub expires_at: Option<SystemTime>,
    /// When the next rotation is due (or the next retry, after a failure).
    pub next_rotation: Option<SystemTime>,
    /// Superseded leases still serving connections: (generation, lease id, connections).
    pub retiring: Vec<(u64, String, usize)>,
    /// Completed rotations since start.
    pub rotations: u64,
    /// Leases whose hard deadline passed while connections still used them.
    pub expired_in_use: u64,
    /// The published lease passed its hard deadline with no successor (a source outage).
    pub current_expired: bool,
    /// The last failure talking to the source, cleared on success.
    pub last_error: Option<String>,
}

/// A cheap, cloneable handle to one credentials entry: the current lease and its state.
#[derive(Clone)]
pub struct Credentials {
    name: Arc<str>,
    kind: &'static str,
    current: watch::Receiver<Option<Arc<Lease>>>,
    generation: Arc<AtomicU64>,
    rotate: Arc<Notify>,
    state: Arc<Mutex<LeaseState>>,
    /// Per generation: its current hard deadline, and the signals fired just before that
    /// lease is revoked at its deadline, so clients still on it end with a clear error
    /// instead of being cut off by PostgreSQL.
    deadlines: Arc<Deadlines>,
}

impl Credentials {
    /// The handle for `source`, with no lease yet. Build the pools with it, then start the
    /// rotator it comes with.
    pub fn new(name: &str, source: Arc<dyn Source>, life: Lifecycle) -> (Credentials, Rotator) {
        let (tx, rx) = watch::channel(None);
        let handle = Credentials {
            name: name.into(),
            kind: source.kind(),
            current: rx,
            generation: Arc::default(),
            rotate: Arc::default(),
            state: Arc::default(),
            deadlines: Arc::default(),
        };
        let rotator = Rotator::new(handle.clone(), source, life, tx);
        (handle, rotator)
    }

    /// The config name of this entry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The newest published lease, if one has been acquired yet.
    pub fn current(&self) -> Option<Arc<Lease>> {
        self.current.borrow().clone()
    }

    /// Generation of the newest published lease (0 before the first): one atomic load, for
    /// the per-checkout "is this connection's lease retired?" test.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Resolves once a lease newer than `generation` is published (never, after shutdown).
    pub async fn wait_newer_than(&self, generation: u64) {
        let mut rx = self.current.clone();
        let newer = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.generation > generation));
        if newer.await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The hard-deadline signal for a new connection on `generation`; it fires when that
    /// lease reaches its hard deadline with the connection still open, or at shutdown.
    pub fn watch_deadline(&self, generation: u64) -> Arc<LeaseEnd> {
        self.deadlines.register(generation)
    }

    /// The hard deadline of `generation` as it stands now (moved by renewals).
    pub fn deadline(&self, generation: u64) -> Deadline {
        self.deadlines.deadline(generation)
    }

    /// True when `generation` is within `margin` of its hard deadline (or past it):
    /// connections on it should not start new work.
    pub fn near_deadline(&self, generation: u64, margin: Duration) -> bool {
        self.deadline(generation).within(margin, SystemTime::now())
    }

    /// Ends every connection of this entry with [`EndReason::Shutdown`]: the last step of a
    /// shutdown whose `shutdown_timeout` passed.
    pub fn end_all_connections(&self) {
        self.deadlines.fire_all(EndReason::Shutdown);
    }

    fn end_lease(&self, generation: u64, fire: Option<EndReason>) {
        self.deadlines.end(generation, fire);
    }

    /// Asks for a rotation now (the admin `ROTATE` command).
    pub fn rotate_now(&self) {
        self.rotate.notify_one();
    }

    /// Waits until a lease is published (or `timeout` passes) and returns it.
    pub async fn wait_current(&self, timeout: Duration) -> Option<Arc<Lease>> {
        let mut rx = self.current.clone();
        let wait = rx.wait_for(|l| l.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(lease)) => lease.clone(),
            _ => None,
        }
    }

    /// A snapshot of the entry's state for the admin plane.
    pub fn state(&self) -> LeaseState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut LeaseState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

#[cfg(test)]
mod tests;
