//! The rotator's loop: acquisition with backoff, publication, and the housekeeping of the
//! leases it holds (renew, revoke when drained, end at the deadline, revoke all on stop).
//! The timeline is in the parent module's docs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{Credentials, ObtainError, Prover};
use crate::credentials::audit::{self, Event};
use crate::credentials::deadline::EndReason;
use crate::credentials::schedule::{
    Backoff, Lifecycle, SHORT_LEASE_RETRY, renewal_target, rotation_time,
};
use crate::credentials::{Lease, Source, SourceError};

/// How long sessions told that their lease hit its deadline get to close by themselves
/// before the source cuts them off.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// How long to wait before asking an unreachable source again to renew a lease.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// How often held leases are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A fresh lease whose rotation point is closer than this is short: it is used, but the next
/// acquisition waits for [`SHORT_LEASE_RETRY`] backoff rather than for the lease.
const MIN_LEAD: Duration = Duration::from_secs(1);

/// The rotator of one credentials entry, built by [`Credentials::new`] and not yet running.
pub struct Rotator {
    creds: Credentials,
    source: Arc<dyn Source>,
    life: Lifecycle,
    publish: watch::Sender<Option<Arc<Lease>>>,
}

/// A lease the rotator holds: the published one, or a superseded one still in use.
struct Held {
    lease: Arc<Lease>,
    /// Current expiry (moves when renewed).
    expires_at: Option<SystemTime>,
    /// No renewal before this: set after one the source could not be reached for.
    renew_after: Option<SystemTime>,
    /// The source refused to extend the lease, or extended it no further: stop asking.
    renewal_done: bool,
}

impl Held {
    fn new(lease: Arc<Lease>) -> Held {
        Held {
            expires_at: lease.expires_at,
            lease,
            renew_after: None,
            renewal_done: false,
        }
    }

    /// Connections still logged in with this lease (the rotator holds one reference).
    fn in_use(&self) -> usize {
        Arc::strong_count(&self.lease).saturating_sub(1)
    }

    fn deadline(&self, life: &Lifecycle) -> Option<SystemTime> {
        self.expires_at.map(|e| life.deadline(&self.lease, e))
    }
}

/// Why the loop attempts an acquisition now; the `reason` of the rotation's audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    First,
    Scheduled,
    Retry,
    Requested,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::First => "first lease",
            Trigger::Scheduled => "scheduled",
            Trigger::Retry => "retry",
            Trigger::Requested => "requested",
        }
    }
}

/// The running loop's state.
struct Run {
    rotator: Rotator,
    prover: Option<Prover>,
    current: Option<Held>,
    retiring: Vec<Held>,
    /// Set after a failure or a short lease: the next attempt is due then, not earlier.
    retry_at: Option<SystemTime>,
    /// The last attempt failed: the current lease is renewed near its deadline meanwhile.
    failing: bool,
    failures: Backoff,
    shorts: Backoff,
}

impl Rotator {
    pub(super) fn new(
        creds: Credentials,
        source: Arc<dyn Source>,
        life: Lifecycle,
        publish: watch::Sender<Option<Arc<Lease>>>,
    ) -> Rotator {
        Rotator {
            creds,
            source,
            life,
            publish,
        }
    }

    /// Runs the rotator, and the watcher of its source, as tasks of `tasks` until `stop` is
    /// cancelled; the rotator then revokes every lease it still holds before it ends, so a
    /// clean shutdown leaves no credential alive. `prover` logs in once with each new lease
    /// before it is published.
    pub fn start(self, prover: Option<Prover>, tasks: &TaskTracker, stop: CancellationToken) {
        let watcher = watch_source(
            self.source.clone(),
            self.creds.current.clone(),
            self.creds.rotate.clone(),
        );
        let watcher_stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = watcher => {}
                () = watcher_stop.cancelled() => {}
            }
        });
        let run = Run {
            rotator: self,
            prover,
            current: None,
            retiring: Vec::new(),
            retry_at: None,
            failing: false,
            failures: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            shorts: Backoff::new(SHORT_LEASE_RETRY.0, SHORT_LEASE_RETRY.1),
        };
        tasks.spawn(run.run(stop));
    }
}

impl Run {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            let due = self.due();
            self.creds().update(|s| s.next_rotation = due);
            let trigger = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = sleep_until(due) => self.timer_trigger(),
                () = self.rotator.creds.rotate.notified() => Trigger::Requested,
                _ = tick.tick(), if self.current.is_some() => {
                    self.housekeeping().await;
                    continue;
                }
            };
            if trigger == Trigger::Requested && self.retry_at.is_some_and(|t| t > SystemTime::now())
            {
                // A retry after a failure or a short lease is already scheduled. Asking sooner
                // would let clients whose logins keep being refused hammer the source.
                continue;
            }
            self.attempt(trigger).await;
        }
        self.revoke_all().await;
    }

    fn creds(&self) -> &Credentials {
        &self.rotator.creds
    }

    /// When the next acquisition is due: now for the first lease, the scheduled retry, or the
    /// current lease's rotation point (`None`: it never expires, wait for a request).
    fn due(&self) -> Option<SystemTime> {
        match &self.current {
            None => Some(self.retry_at.unwrap_or_else(SystemTime::now)),
            Some(c) => self
                .retry_at
                .or_else(|| rotation_time(&c.lease, &self.rotator.life)),
        }
    }

    fn timer_trigger(&self) -> Trigger {
        match (&self.current, self.retry_at) {
            (None, _) => Trigger::First,
            (Some(_), Some(_)) => Trigger::Retry,
            (Some(_), None) => Trigger::Scheduled,
        }
    }

    async fn attempt(&mut self, trigger: Trigger) {
        let generation = self.current.as_ref().map_or(1, |c| c.lease.generation + 1);
        match self.obtain(generation).await {
            Ok(next) => {
                self.failing = false;
                self.failures.reset();
                self.retry_at = None;
                let now = SystemTime::now();
                let short =
                    rotation_time(&next, &self.rotator.life).is_some_and(|at| at <= now + MIN_LEAD);
                if let Some(old) = self.current.replace(Held::new(next.clone())) {
                    self.audit(Event::Rotated, &next, trigger.as_str());
                    self.retiring.push(old);
                    self.creds().update(|s| s.rotations += 1);
                }
                self.publish();
                if short {
                    self.short_lease(&next, now);
                } else {
                    self.shorts.reset();
                }
            }
            Err(e) => {
                self.failing = true;
                let delay = self.failures.next_delay();
                self.failed(&e, delay);
                self.retry_at = Some(SystemTime::now() + delay);
            }
        }
    }

    /// A lease arrived already at (or past) its rotation point: it is published, since it is
    /// the newest the source has, but the next attempt waits for backoff.
    fn short_lease(&mut self, lease: &Lease, now: SystemTime) {
        let delay = self.shorts.next_delay();
        self.retry_at = Some(now + delay);
        let left = lease.time_left(now).unwrap_or_default();
        let why = format!(
            "arrived with {left:?} of life, less than a rotation needs; asking the source \
             again in {delay:?}"
        );
        self.audit(Event::ArrivedShort, lease, &why);
        self.creds().update(|s| s.last_error = Some(why));
    }

    /// Acquires a lease and proves it with one login. A lease that fails its proof is revoked.
    async fn obtain(&self, generation: u64) -> Result<Arc<Lease>, ObtainError> {
        let mut lease = self.rotator.source.acquire().await?;
        lease.generation = generation;
        self.audit(Event::Issued, &lease, "acquired from source");
        let lease = Arc::new(lease);
        if let Some(prove) = &self.prover {
            if let Err(e) = prove(lease.clone()).await {
                self.audit(Event::Failed, &lease, &e.to_string());
                if let Err(re) = self.rotator.source.revoke(&lease).await {
                    warn!(credentials = %self.creds().name, error = %re, "revoking an unproven lease failed");
                }
                return Err(e.into());
            }
            self.audit(Event::Proved, &lease, "one upstream login succeeded");
        }
        Ok(lease)
    }

    fn publish(&self) {
        let Some(current) = &self.current else { return };
        let lease = &current.lease;
        let creds = self.creds();
        self.audit(Event::Published, lease, "new upstream logins use it");
        creds
            .deadlines
            .set_deadline(lease.generation, current.deadline(&self.rotator.life));
        creds.update(|s| {
            s.generation = lease.generation;
            s.lease_id = Some(lease.id.clone());
            s.username = Some(lease.username.clone());
            s.expires_at = lease.expires_at;
            s.current_expired = false;
            s.last_error = None;
        });
        self.rotator.publish.send_replace(Some(lease.clone()));
        creds.generation.store(lease.generation, Ordering::Release);
    }

    fn failed(&self, error: &ObtainError, retry_in: Duration) {
        let time_left = self
            .current
            .as_ref()
            .and_then(|c| c.expires_at)
            .map(|e| e.duration_since(SystemTime::now()).unwrap_or_default());
        let kind = match error {
            ObtainError::Source(SourceError::Unreachable(_)) => "source_unreachable",
            ObtainError::Source(_) => "source_refused",
            ObtainError::Proof(_) => "proof_failed",
        };
        warn!(
            target: audit::TARGET,
            credentials = %self.creds().name,
            event = "failed",
            kind,
            error = %error,
            retry_in = ?retry_in,
            current_lease_time_left = ?time_left,
            "lease acquisition failed; serving on the current lease"
        );
        self.creds()
            .update(|s| s.last_error = Some(error.to_string()));
    }

    /// Revokes drained leases, renews busy ones near their deadline, ends the ones whose
    /// deadline has come, and looks after the current lease while acquisition fails.
    async fn housekeeping(&mut self) {
        let now = SystemTime::now();
        let mut kept = Vec::with_capacity(self.retiring.len());
        for mut r in std::mem::take(&mut self.retiring) {
            if r.in_use() == 0 {
                self.creds().end_lease(r.lease.generation, None);
                self.audit(Event::Drained, &r.lease, "no connection uses it any more");
                self.revoke(&r.lease, "drained: no connection uses it")
                    .await;
                continue;
            }
            if r.deadline(&self.rotator.life).is_some_and(|d| now >= d) {
                self.end_at_deadline(&r).await;
                continue;
            }
            self.maybe_renew(&mut r, now).await;
            kept.push(r);
        }
        self.retiring = kept;
        if self.failing {
            self.keep_current(now).await;
        }
        let view = self
            .retiring
            .iter()
            .map(|r| (r.lease.generation, r.lease.id.clone(), r.in_use()))
            .collect();
        self.creds().update(|s| s.retiring = view);
    }

    /// A superseded lease reached its hard deadline with connections still on it: they end
    /// with an error naming the reason, then the lease is revoked.
    async fn end_at_deadline(&self, r: &Held) {
        self.audit(
            Event::Expired,
            &r.lease,
            "hard deadline reached with connections still on it",
        );
        self.creds().update(|s| s.expired_in_use += 1);
        self.creds()
            .end_lease(r.lease.generation, Some(EndReason::Deadline));
        let grace = tokio::time::Instant::now() + DEADLINE_GRACE;
        while r.in_use() > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.revoke(&r.lease, "hard deadline").await;
    }

    /// While no successor can be had: renew the current lease near its deadline, and say so
    /// once when it passes the deadline anyway (its open connections keep serving).
    async fn keep_current(&mut self, now: SystemTime) {
        let Some(mut current) = self.current.take() else {
            return;
        };
        self.maybe_renew(&mut current, now).await;
        let passed = current
            .deadline(&self.rotator.life)
            .is_some_and(|d| now >= d);
        if passed && !self.creds().state().current_expired {
            self.audit(
                Event::Expired,
                &current.lease,
                "hard deadline passed with no successor (the source is failing): open \
                 connections keep serving, new logins fail once it expires",
            );
            self.creds().update(|s| s.current_expired = true);
        }
        self.current = Some(current);
    }

    async fn maybe_renew(&self, r: &mut Held, now: SystemTime) {
        let life = &self.rotator.life;
        let near = r
            .deadline(life)
            .is_some_and(|d| now + life.margin(&r.lease) >= d);
        let may_renew = !r.renewal_done && r.renew_after.is_none_or(|t| now >= t);
        if near && may_renew && life.renew && r.lease.renewable {
            self.renew(r, now).await;
        }
    }

    async fn renew(&self, r: &mut Held, now: SystemTime) {
        let Some(expires) = r.expires_at else { return };
        let Some(until) = renewal_target(&r.lease, expires, &self.rotator.life, now) else {
            return;
        };
        match self.rotator.source.renew(&r.lease, until).await {
            // Less than a second gained: the source's own cap (Vault's max_ttl) is reached.
            Ok(new_expiry) if new_expiry < expires + Duration::from_secs(1) => {
                r.renewal_done = true;
                self.audit(
                    Event::RenewalCapped,
                    &r.lease,
                    "the source extends it no further",
                );
            }
            Ok(new_expiry) => {
                r.expires_at = Some(new_expiry);
                let generation = r.lease.generation;
                let creds = self.creds();
                creds
                    .deadlines
                    .set_deadline(generation, r.deadline(&self.rotator.life));
                if creds.generation() == generation {
                    creds.update(|s| {
                        s.expires_at = Some(new_expiry);
                        s.current_expired = false;
                    });
                }
                let source = creds.kind;
                audit::lease_until(
                    &creds.name,
                    source,
                    Event::Renewed,
                    &r.lease,
                    r.expires_at,
                    "connections still use it",
                );
            }
            Err(e) => {
                if let SourceError::Unreachable(_) = e {
                    r.renew_after = Some(now + RENEW_RETRY);
                } else {
                    r.renewal_done = true;
                }
                warn!(credentials = %self.creds().name, lease_id = %r.lease.id, error = %e, "lease renewal failed")
            }
        }
    }

    /// The end of the rotator: every lease it holds is revoked, the superseded ones first.
    async fn revoke_all(&mut self) {
        let held: Vec<Held> = std::mem::take(&mut self.retiring)
            .into_iter()
            .chain(self.current.take())
            .collect();
        for h in held {
            self.creds()
                .end_lease(h.lease.generation, Some(EndReason::Shutdown));
            self.revoke(&h.lease, "shutdown: pglease no longer needs it")
                .await;
        }
        if let Err(e) = self.rotator.source.close().await {
            warn!(credentials = %self.creds().name, error = %e, "closing the source failed");
        }
    }

    async fn revoke(&self, lease: &Lease, reason: &str) {
        match self.rotator.source.revoke(lease).await {
            Ok(()) => self.audit(Event::Revoked, lease, reason),
            Err(e) => warn!(
                target: audit::TARGET,
                credentials = %self.creds().name,
                event = "revoke_failed",
                lease_id = %lease.id,
                generation = lease.generation,
                error = %e,
                "lease revocation failed"
            ),
        }
    }

    fn audit(&self, event: Event, lease: &Lease, reason: &str) {
        let creds = self.creds();
        audit::lease(&creds.name, creds.kind, event, lease, reason);
    }
}

/// Sleeps until wall-clock `due` (lease times are wall-clock); forever for `None`.
async fn sleep_until(due: Option<SystemTime>) {
    match due {
        Some(t) => {
            tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default()).await
        }
        None => std::future::pending().await,
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
