//! The rotator's loop: acquisition with backoff, publication, and the housekeeping of the
//! leases it holds (renew, revoke when drained, end at the deadline, revoke all on stop).
//! The timeline is in the parent module's docs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

mod housekeeping;

use super::{Credentials, ObtainError, Prover};
use crate::credentials::audit::{self, Event};
use crate::credentials::instruments::{LeaseInstruments, Outcome};
use crate::credentials::schedule::{Backoff, Lifecycle, SHORT_LEASE_RETRY, rotation_time};
use crate::credentials::{Lease, Source, SourceError};

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
    /// Where lease events are counted, beside their audit lines.
    instruments: LeaseInstruments,
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
    /// When it was superseded, for the drain histogram.
    retired_at: Option<Instant>,
}

impl Held {
    fn new(lease: Arc<Lease>) -> Held {
        Held {
            expires_at: lease.expires_at,
            lease,
            renew_after: None,
            renewal_done: false,
            retired_at: None,
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
            instruments: LeaseInstruments::default(),
        }
    }

    /// Counts this entry's lease events on `instruments` (the metrics registry's, resolved
    /// for this entry) instead of on unregistered ones.
    pub fn instrumented(mut self, instruments: LeaseInstruments) -> Rotator {
        self.instruments = instruments;
        self
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
                if let Some(mut old) = self.current.replace(Held::new(next.clone())) {
                    self.audit(Event::Rotated, &next, trigger.as_str());
                    self.rotator.instruments.rotation(Outcome::Ok);
                    old.retired_at = Some(Instant::now());
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
                self.rotator.instruments.rotation(Outcome::Failed);
                if let ObtainError::Source(source) = &e {
                    self.rotator.instruments.source_error(source);
                }
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
        self.rotator.instruments.issued.inc();
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
        audit::record!(
            WARN,
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

    pub(super) fn audit(&self, event: Event, lease: &Lease, reason: &str) {
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
