//! How a pool opens an upstream and decides whether an idle one may be reused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio::sync::Notify;
use tracing::warn;

use super::checkout::Pooled;
use super::close::CloseReason;
use super::replacements::Replacements;
use super::stats::PoolInstruments;
use super::upstreams::Upstreams;
use crate::credentials::Credentials;
use crate::upstream::{self, ServerParams, Upstream, UpstreamError, UpstreamTarget};

/// Connections last taken longer ago than this are probed for unsolicited input before reuse.
const PROBE_AFTER: Duration = Duration::from_millis(5);

/// How close to its hard deadline a superseded connection may still be handed out while no
/// replacement is ready.
const LAST_USE_BEFORE_DEADLINE: Duration = Duration::from_secs(1);

/// deadpool's hooks for upstream connections.
pub struct Manager {
    target: UpstreamTarget,
    credentials: Credentials,
    /// The credentials entry's name, shared by every connection's close log line.
    credentials_name: Arc<str>,
    idle_timeout: Duration,
    /// `server_lifetime`, given to each connection it opens (with jitter).
    lifetime: Option<Duration>,
    /// Login parameters of the most recent upstream, to greet clients without a checkout.
    params: Mutex<Option<ServerParams>>,
    /// Replacements opened ahead of need, and connection counts per generation.
    pub(super) replacements: Replacements,
    /// Woken when a ready replacement was used, so the drain task opens the next one.
    pub(super) wanted: Notify,
    /// Where logins and closes are counted.
    pub(super) instruments: PoolInstruments,
    /// Logins made on the checkout path, where a client waits for them (or the drain task,
    /// when the ready replacement it cycles in was taken by someone else meanwhile).
    pub(super) checkout_logins: AtomicU64,
    /// Every open connection, for `SHOW SERVERS`.
    pub(super) upstreams: Arc<Upstreams>,
}

impl Manager {
    pub(super) fn new(
        target: UpstreamTarget,
        credentials: Credentials,
        settings: &super::PoolSettings,
        instruments: PoolInstruments,
    ) -> Self {
        Manager {
            target,
            credentials_name: credentials.name().into(),
            credentials,
            idle_timeout: settings.idle_timeout,
            lifetime: settings.lifetime,
            params: Mutex::new(None),
            replacements: Replacements::default(),
            wanted: Notify::new(),
            checkout_logins: AtomicU64::new(0),
            upstreams: Arc::default(),
            instruments,
        }
    }

    pub(super) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub(super) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub(super) fn cached_params(&self) -> Option<ServerParams> {
        self.params.lock().ok().and_then(|p| p.clone())
    }

    /// Opens a connection on the newest lease, stamped with its deadline signal and counted
    /// under its generation. Right after start the first lease may still be on its way: wait
    /// for it as long as a connect may take, rather than failing the first clients.
    pub(super) async fn open(&self) -> Result<Pooled, UpstreamError> {
        let lease = match self.credentials.current() {
            Some(lease) => lease,
            None => self
                .credentials
                .wait_current(self.target.connect_timeout)
                .await
                .ok_or_else(|| UpstreamError::NoLease(self.credentials.name().to_owned()))?,
        };
        let generation = lease.generation;
        let first = upstream::connect(&self.target, lease).await;
        self.instruments.connected(&first);
        let up = match first {
            Err(UpstreamError::Refused { code, .. }) if code == "28P01" => {
                self.after_bad_password(generation).await?
            }
            other => other?,
        };
        if let Ok(mut p) = self.params.lock() {
            *p = Some(up.params.clone());
        }
        Ok(self.pooled(up))
    }

    /// Makes `up` one of this pool's connections: it gets its lease's deadline signal and is
    /// counted under its generation.
    fn pooled(&self, up: Upstream) -> Pooled {
        let generation = up.generation();
        let listed = self.upstreams.list(&up);
        let mut pooled = Pooled::new(
            up,
            self.credentials.watch_deadline(generation),
            self.replacements.tally(generation),
            listed,
            self.credentials_name.clone(),
            self.instruments.closes.clone(),
        );
        if let Some(lifetime) = self.lifetime {
            pooled.retire_after(lifetime);
        }
        pooled
    }

    /// Takes `up`, the login that proved a lease not yet published, as a replacement for
    /// this pool's connections on older leases, so proving a lease costs PostgreSQL no extra
    /// backend. Hands it back when this pool has nothing to replace or enough replacements.
    pub(super) fn offer_replacement(&self, up: Upstream, most_ready: usize) -> Option<Upstream> {
        let next = up.generation();
        let old = self.replacements.older_than(next).connections;
        let ready = self.replacements.count_ready(next, self.idle_timeout);
        if old == 0 || ready >= old.min(most_ready) {
            return Some(up);
        }
        self.replacements.add(self.pooled(up));
        None
    }

    /// PostgreSQL refused the current lease's password: the store changed it under us (a
    /// Vault static role rotated, a file rewritten) before the source noticed. Ask for a
    /// rotation now, wait (as long as a connect may take) for the new lease, and try once more.
    async fn after_bad_password(&self, refused: u64) -> Result<Upstream, UpstreamError> {
        warn!(
            credentials = %self.credentials.name(),
            generation = refused,
            "upstream refused the current lease's password; asking for a new lease"
        );
        self.credentials.rotate_now();
        let newer = self.credentials.wait_newer_than(refused);
        if tokio::time::timeout(self.target.connect_timeout, newer)
            .await
            .is_err()
        {
            return Err(UpstreamError::Refused {
                code: "28P01".into(),
                message: "password authentication failed, and no new lease came in time".into(),
            });
        }
        let lease = self
            .credentials
            .current()
            .ok_or_else(|| UpstreamError::NoLease(self.credentials.name().to_owned()))?;
        let retried = upstream::connect(&self.target, lease).await;
        self.instruments.connected(&retried);
        retried
    }
}

impl managed::Manager for Manager {
    // Boxed: deadpool moves its object by value into and out of its slot queue on every
    // checkout and return, so a pointer is moved there instead of the whole `Pooled`.
    type Type = Box<Pooled>;
    type Error = UpstreamError;

    // Boxed: a login's future is kilobytes, and unboxed it would sit inline in every
    // checkout's future (deadpool's `timeout_get` holds it whether it logs in or not), to be
    // copied on each of the checkouts that reuse an idle upstream. A login allocates once.
    fn create(&self) -> impl Future<Output = Result<Box<Pooled>, UpstreamError>> + Send {
        Box::pin(async move {
            let current = self.credentials.generation();
            if let Some(up) = self.replacements.take(current, self.idle_timeout) {
                self.wanted.notify_one();
                return Ok(Box::new(up));
            }
            self.checkout_logins.fetch_add(1, Ordering::Relaxed);
            self.open().await.map(Box::new)
        })
    }

    async fn recycle(
        &self,
        up: &mut Box<Pooled>,
        metrics: &Metrics,
    ) -> RecycleResult<UpstreamError> {
        if up.upstream().broken {
            up.close_as(CloseReason::Broken);
            return Err(RecycleError::message("broken"));
        }
        // Not `idle_timeout`: deadpool's metric counts from the last checkout, so it would
        // close a connection just back from a long transaction; [`super::idle`] counts from
        // its return and closes idle connections in the background.
        let current = self.credentials.generation();
        if up.generation() < current {
            // Make before break: swap in a connection already logged in on the new lease.
            if let Some(replacement) = self.replacements.take(current, self.idle_timeout) {
                up.swap(replacement);
                self.wanted.notify_one();
                return Ok(());
            }
            // No replacement yet: the old lease still works, so keep serving on it rather
            // than make a client wait for a login, unless its end is near. That holds however
            // many leases behind it is: rotations requested faster than a drain completes
            // must not put logins on the clients' path either.
            let ending = up.deadline().is_ended()
                || self
                    .credentials
                    .near_deadline(up.generation(), LAST_USE_BEFORE_DEADLINE);
            if ending {
                up.close_as(CloseReason::LeaseRetired);
                return Err(RecycleError::message("lease retired"));
            }
            // The drain task is not woken here: it is already opening replacements at its
            // own pace, and a wake-up per checkout would cost the hot path during a drain.
        }
        // One clock read for both checks below (deadpool reads it again to stamp the
        // checkout). Retiring here, not only when a connection comes back, lets the release
        // on the transaction path skip the clock: a connection past its lifetime is never
        // handed out again, and the idle sweep closes it if nobody asks for it.
        let now = Instant::now();
        if up.past_lifetime_at(now) {
            up.close_as(CloseReason::Lifetime);
            return Err(RecycleError::message("past server_lifetime"));
        }
        // The probe is a syscall; a connection handed straight from one transaction to the
        // next (the busy case) skips it, because a message PostgreSQL sends in so short a
        // window could just as well arrive right after the probe.
        let last_used = now.saturating_duration_since(metrics.recycled.unwrap_or(metrics.created));
        if last_used >= PROBE_AFTER && up.upstream().has_unsolicited_input() {
            up.close_as(CloseReason::UnsolicitedInput);
            return Err(RecycleError::message("unsolicited input while idle"));
        }
        Ok(())
    }
}
