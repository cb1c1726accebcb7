//! The rotator's housekeeping of the leases it holds: revoke the drained ones, renew the busy
//! ones near their deadline, end the ones whose deadline has come, look after the current
//! lease while no successor can be had, and revoke everything when the rotator stops.

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{Held, Run};
use crate::credentials::audit::{self, Event};
use crate::credentials::deadline::EndReason;
use crate::credentials::instruments::Outcome;
use crate::credentials::schedule::renewal_target;
use crate::credentials::{Lease, SourceError};

/// How long sessions told that their lease hit its deadline get to close by themselves
/// before the source cuts them off.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// How long to wait before asking an unreachable source again to renew a lease.
const RENEW_RETRY: Duration = Duration::from_secs(5);

impl Run {
    /// Revokes drained leases, renews busy ones near their deadline, ends the ones whose
    /// deadline has come, and looks after the current lease while acquisition fails.
    pub(super) async fn housekeeping(&mut self) {
        let now = SystemTime::now();
        let mut kept = Vec::with_capacity(self.retiring.len());
        for mut r in std::mem::take(&mut self.retiring) {
            if r.in_use() == 0 {
                self.drained(&r);
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
        self.drained(r);
        let ended = u64::try_from(r.in_use()).unwrap_or(u64::MAX);
        self.rotator.instruments.deadline_closes.inc_by(ended);
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
                self.rotator.instruments.renewals.inc();
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
                self.rotator.instruments.source_error(&e);
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
    pub(super) async fn revoke_all(&mut self) {
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

    pub(super) async fn revoke(&self, lease: &Lease, reason: &str) {
        let instruments = &self.rotator.instruments;
        match self.rotator.source.revoke(lease).await {
            Ok(()) => {
                instruments.revocation(Outcome::Ok);
                let lived = SystemTime::now()
                    .duration_since(lease.issued_at)
                    .unwrap_or_default();
                instruments.lifetime.observe(lived.as_secs_f64());
                self.audit(Event::Revoked, lease, reason)
            }
            Err(e) => {
                instruments.revocation(Outcome::Failed);
                instruments.source_error(&e);
                audit::record!(
                    WARN,
                credentials = %self.creds().name,
                event = "revoke_failed",
                lease_id = %lease.id,
                generation = lease.generation,
                error = %e,
                "lease revocation failed"
                )
            }
        }
    }

    /// A superseded lease's drain is over (its last connection left, or its deadline came):
    /// observes how long it took.
    fn drained(&self, r: &Held) {
        if let Some(at) = r.retired_at {
            let took = at.elapsed();
            self.rotator.instruments.drain.observe(took.as_secs_f64());
        }
    }
}
