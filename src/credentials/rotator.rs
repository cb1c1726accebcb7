//! The rotator: one background task per `[credentials.NAME]` entry that acquires leases,
//! proves and publishes them, and retires the old ones (DESIGN §5).
//!
//! # Design
//!
//! ```text
//!  acquire N ─► prove ─► publish N ─┬─ at rotate_at·lifetime, source change, or ROTATE:
//!                                   │     acquire N+1 ─► prove ─► publish N+1 ─► N retiring
//!                                   └─ every tick, for each retiring lease:
//!                                        no connection left   ─► revoke at once
//!                                        near its deadline    ─► renew (never past max_ttl)
//!                                        deadline reached     ─► revoke anyway, logged as expired
//! ```
//!
//! Publishing is a `watch` send plus an atomic generation, so pools read the current lease
//! without a lock. Which connections still use a lease is known without bookkeeping: every
//! upstream connection holds an `Arc` of its lease, so the strong count minus the rotator's
//! own reference is the number of connections on it. A failed acquisition or proof never
//! unpublishes anything: traffic keeps flowing on the current lease while the rotator retries
//! with jittered backoff and `last_error` says why (§5.7). A lease that fails its proof (the
//! source handed out a password PostgreSQL refuses) is revoked and never published.
//! Every lifecycle event is one audit line on the `pglease::audit` target (§5.8).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::deadline::{Deadlines, LeaseEnd};
use super::schedule::{Backoff, Lifecycle, hard_deadline, renewal_target, rotation_time};
use super::{Lease, Source, SourceError};

/// Logs in once with a fresh lease before it is published; `Err` carries a reason that
/// contains no secret.
pub type Prover = Arc<
    dyn Fn(Arc<Lease>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// How long sessions told that their lease hit its deadline get to close by themselves
/// before the source cuts them off.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// How long to wait before asking an unreachable source again to renew a lease.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// How often retiring leases are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// What the admin plane shows about one credentials entry.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    /// Generation of the published lease; 0 before the first one.
    pub generation: u64,
    /// Id of the published lease (not secret).
    pub lease_id: Option<String>,
    /// Upstream role of the published lease.
    pub username: Option<String>,
    /// When the published lease stops working.
    pub expires_at: Option<SystemTime>,
    /// When the next rotation is due (or the next retry, after a failure).
    pub next_rotation: Option<SystemTime>,
    /// Superseded leases still serving connections: (generation, lease id, connections).
    pub retiring: Vec<(u64, String, usize)>,
    /// Completed rotations since start.
    pub rotations: u64,
    /// Leases whose hard deadline passed while connections still used them.
    pub expired_in_use: u64,
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
    /// Per generation, fired just before that lease is revoked at its hard deadline, so
    /// clients still on it end with a clear error instead of being cut off by PostgreSQL.
    deadlines: Arc<Deadlines>,
    /// How long before a lease's expiry its hard deadline falls.
    safety_margin: Duration,
}

impl Credentials {
    /// Starts the rotator task for `source`; it runs until `shutdown` is cancelled.
    pub fn spawn(
        name: &str,
        source: Arc<dyn Source>,
        life: Lifecycle,
        prover: Option<Prover>,
        shutdown: CancellationToken,
    ) -> Credentials {
        let (tx, rx) = watch::channel(None);
        let handle = Credentials {
            name: name.into(),
            kind: source.kind(),
            current: rx,
            generation: Arc::default(),
            rotate: Arc::default(),
            state: Arc::default(),
            deadlines: Arc::default(),
            safety_margin: life.safety_margin,
        };
        let rotator = Rotator {
            creds: handle.clone(),
            source: source.clone(),
            life,
            prover,
            publish: tx,
        };
        let watcher = watch_source(source, handle.current.clone(), handle.rotate.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = rotator.run() => {}
                () = watcher => {}
                () = shutdown.cancelled() => {}
            }
        });
        handle
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
    /// lease reaches its hard deadline with the connection still open.
    pub fn watch_deadline(&self, generation: u64) -> Arc<LeaseEnd> {
        self.deadlines.register(generation)
    }

    /// True when `lease` is within `margin` of its hard deadline (or past it): connections on
    /// it should not start new work.
    pub fn near_deadline(&self, lease: &Lease, margin: Duration) -> bool {
        lease.expires_at.is_some_and(|e| {
            let deadline = self.hard_deadline(e);
            SystemTime::now() + margin >= deadline
        })
    }

    /// When a lease expiring at `expires_at` reaches its hard deadline.
    pub fn hard_deadline(&self, expires_at: SystemTime) -> SystemTime {
        expires_at
            .checked_sub(self.safety_margin)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn end_lease(&self, generation: u64, fire: bool) {
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

/// A superseded lease waiting for its last connection to go.
struct Retiring {
    lease: Arc<Lease>,
    /// Current expiry (moves when renewed).
    expires_at: Option<SystemTime>,
    /// No renewal before this: set after one the source could not be reached for.
    renew_after: Option<SystemTime>,
    /// The source refused to extend the lease, or extended it no further: stop asking.
    renewal_done: bool,
}

impl Retiring {
    /// Connections still logged in with this lease (the rotator holds one reference).
    fn in_use(&self) -> usize {
        Arc::strong_count(&self.lease).saturating_sub(1)
    }
}

struct Rotator {
    creds: Credentials,
    source: Arc<dyn Source>,
    life: Lifecycle,
    prover: Option<Prover>,
    publish: watch::Sender<Option<Arc<Lease>>>,
}

impl Rotator {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut current = loop {
            match self.obtain(1).await {
                Ok(lease) => break lease,
                Err(e) => {
                    let delay = backoff.next_delay();
                    self.failed(&e, delay);
                    tokio::time::sleep(delay).await;
                }
            }
        };
        backoff.reset();
        self.publish(&current);
        let mut retry_at: Option<SystemTime> = None;
        let mut retiring: Vec<Retiring> = Vec::new();
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            let due = retry_at.or_else(|| rotation_time(&current, &self.life));
            self.creds.update(|s| s.next_rotation = due);
            let wait = async {
                match due {
                    Some(t) => {
                        tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default())
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                () = wait => if retry_at.is_some() { "retry" } else { "scheduled" },
                () = self.creds.rotate.notified() => "requested",
                _ = tick.tick() => {
                    self.housekeeping(&mut retiring).await;
                    continue;
                }
            };
            if reason == "requested" && retry_at.is_some_and(|t| t > SystemTime::now()) {
                // A retry after a failure is already scheduled. Asking sooner would let
                // clients whose logins keep being refused hammer a source that is failing.
                continue;
            }
            match self.obtain(current.generation + 1).await {
                Ok(next) => {
                    backoff.reset();
                    retry_at = None;
                    self.audit("rotated", &next, reason);
                    let expires_at = current.expires_at;
                    retiring.push(Retiring {
                        lease: std::mem::replace(&mut current, next),
                        expires_at,
                        renew_after: None,
                        renewal_done: false,
                    });
                    self.publish(&current);
                    self.creds.update(|s| s.rotations += 1);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    self.failed(&e, delay);
                    retry_at = Some(SystemTime::now() + delay);
                }
            }
        }
    }

    /// Acquires a lease and proves it with one login. A lease that fails its proof is revoked.
    async fn obtain(&self, generation: u64) -> Result<Arc<Lease>, String> {
        let mut lease = self.source.acquire().await.map_err(|e| e.to_string())?;
        lease.generation = generation;
        self.audit("issued", &lease, "acquired from source");
        let lease = Arc::new(lease);
        if let Some(prove) = &self.prover {
            if let Err(e) = prove(lease.clone()).await {
                self.audit("failed", &lease, &e);
                if let Err(re) = self.source.revoke(&lease).await {
                    warn!(credentials = %self.creds.name, error = %re, "revoking an unproven lease failed");
                }
                return Err(format!("new lease failed its login: {e}"));
            }
            self.audit("proved", &lease, "one upstream login succeeded");
        }
        Ok(lease)
    }

    fn publish(&self, lease: &Arc<Lease>) {
        self.audit("published", lease, "new upstream logins use it");
        self.creds.update(|s| {
            s.generation = lease.generation;
            s.lease_id = Some(lease.id.clone());
            s.username = Some(lease.username.clone());
            s.expires_at = lease.expires_at;
            s.last_error = None;
        });
        self.publish.send_replace(Some(lease.clone()));
        self.creds
            .generation
            .store(lease.generation, Ordering::Release);
    }

    fn failed(&self, error: &str, retry_in: Duration) {
        let time_left = self
            .creds
            .current()
            .and_then(|l| l.time_left(SystemTime::now()));
        warn!(
            target: "pglease::audit",
            credentials = %self.creds.name,
            event = "failed",
            error,
            retry_in = ?retry_in,
            current_lease_time_left = ?time_left,
            "lease acquisition failed; serving on the current lease"
        );
        self.creds.update(|s| s.last_error = Some(error.to_owned()));
    }

    /// Revokes drained leases, renews busy ones near their deadline, and ends the ones whose
    /// deadline has come.
    async fn housekeeping(&self, retiring: &mut Vec<Retiring>) {
        let now = SystemTime::now();
        let mut kept = Vec::with_capacity(retiring.len());
        for mut r in retiring.drain(..) {
            let in_use = r.in_use();
            let deadline = r.expires_at.map(|e| hard_deadline(e, &self.life));
            if in_use == 0 {
                self.creds.end_lease(r.lease.generation, false);
                self.audit("drained", &r.lease, "no connection uses it any more");
                self.revoke(&r.lease, "drained: no connection uses it")
                    .await;
                continue;
            }
            if deadline.is_some_and(|d| now >= d) {
                self.audit(
                    "expired",
                    &r.lease,
                    "hard deadline reached with connections still on it",
                );
                self.creds.update(|s| s.expired_in_use += 1);
                // Sessions on the lease end themselves with an error that names the reason;
                // give them a moment before the source cuts whatever is left.
                self.creds.end_lease(r.lease.generation, true);
                let grace = tokio::time::Instant::now() + DEADLINE_GRACE;
                while r.in_use() > 0 && tokio::time::Instant::now() < grace {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.revoke(&r.lease, "hard deadline").await;
                continue;
            }
            let near = deadline.is_some_and(|d| now + self.life.safety_margin >= d);
            let may_renew = !r.renewal_done && r.renew_after.is_none_or(|t| now >= t);
            if near && may_renew && self.life.renew && r.lease.renewable {
                self.renew(&mut r, now).await;
            }
            kept.push(r);
        }
        *retiring = kept;
        let view = retiring
            .iter()
            .map(|r| (r.lease.generation, r.lease.id.clone(), r.in_use()))
            .collect();
        self.creds.update(|s| s.retiring = view);
    }

    async fn renew(&self, r: &mut Retiring, now: SystemTime) {
        let Some(expires) = r.expires_at else { return };
        let Some(until) = renewal_target(&r.lease, expires, &self.life, now) else {
            return;
        };
        match self.source.renew(&r.lease, until).await {
            // Less than a second gained: the source's own cap (Vault's max_ttl) is reached.
            Ok(new_expiry) if new_expiry < expires + Duration::from_secs(1) => {
                r.renewal_done = true;
                self.audit(
                    "renewal_capped",
                    &r.lease,
                    "the source extends it no further",
                );
            }
            Ok(new_expiry) => {
                r.expires_at = Some(new_expiry);
                self.audit("renewed", &r.lease, "connections still use it");
            }
            Err(e) => {
                if let SourceError::Unreachable(_) = e {
                    r.renew_after = Some(now + RENEW_RETRY);
                } else {
                    r.renewal_done = true;
                }
                warn!(credentials = %self.creds.name, lease_id = %r.lease.id, error = %e, "lease renewal failed")
            }
        }
    }

    async fn revoke(&self, lease: &Lease, reason: &str) {
        match self.source.revoke(lease).await {
            Ok(()) => self.audit("revoked", lease, reason),
            Err(e) => warn!(
                target: "pglease::audit",
                credentials = %self.creds.name,
                event = "revoke_failed",
                lease_id = %lease.id,
                generation = lease.generation,
                error = %e,
                "lease revocation failed"
            ),
        }
    }

    /// One structured audit line per lifecycle event. Never carries the password.
    fn audit(&self, event: &'static str, lease: &Lease, reason: &str) {
        info!(
            target: "pglease::audit",
            credentials = %self.creds.name,
            source = self.creds.kind,
            event,
            lease_id = %lease.id,
            role = %lease.username,
            generation = lease.generation,
            issued_at = ?lease.issued_at,
            expires_at = ?lease.expires_at,
            reason,
            "lease {event}"
        );
    }
}

/// Turns "the source has something new" into a rotation request. Runs beside the rotator
/// so a source's change detection (a file poll, say) is never restarted by the rotator's
/// housekeeping ticks.
async fn watch_source(
    source: Arc<dyn Source>,
    mut published: watch::Receiver<Option<Arc<Lease>>>,
    rotate: Arc<Notify>,
) {
    loop {
        let lease = published.borrow_and_update().clone();
        let Some(lease) = lease else {
            if published.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            r = source.changed(&lease) => {
                if r.is_ok() {
                    rotate.notify_one();
                }
                // Wait for the rotation (or a retry) to publish before watching again.
                if published.changed().await.is_err() {
                    return;
                }
            }
            r = published.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests;
