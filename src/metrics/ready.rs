//! Readiness: whether this proxy should get new traffic (`/readyz`, `pglease_ready`), and the
//! time each credentials entry has left before its cliff (`pglease_lease_seconds_to_cliff`).
//!
//! # Design
//!
//! A lease's cliff is its hard deadline (its expiry less the safety margin): past it no new
//! upstream login may use it, so if the source stays down that is how long pglease can keep
//! serving. Ready means: not shutting down (the listener is open from start until then), and
//! every pool's credentials have a published lease more than the readiness margin from its
//! cliff. The margin is `readiness_margin` capped at a twentieth of the lease's lifetime: a
//! healthy rotation starts at `rotate_at` of the lifetime, long before that point, so a short
//! lease never flaps the proxy, and the cap falls inside the safety margin, where the rotator
//! tries to renew first, so a renewal that works keeps the proxy ready. During a source outage
//! the time to the cliff only shrinks, so readiness turns false before the cliff, not after.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::client::Shared;
use crate::credentials::{Credentials, Deadline};

/// The share of a lease's lifetime the readiness margin is capped at.
const MARGIN_SHARE_DIVISOR: u32 = 20;

/// How readiness is judged.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    /// `readiness_margin`: the wanted distance from a lease's cliff.
    pub margin: Duration,
}

impl Readiness {
    /// `Ok` while ready; otherwise the failing condition, worded for an operator.
    pub fn check(&self, shared: &Shared) -> Result<(), String> {
        if shared.shutdown.is_cancelled() {
            return Err("shutting down".to_owned());
        }
        // Each entry once, in a stable order, so the reason names the same one every time.
        let pools = shared.pools();
        let entries: BTreeMap<&str, &Credentials> = pools
            .iter()
            .map(|(_, _, e)| (e.pool.credentials().name(), e.pool.credentials()))
            .collect();
        let now = SystemTime::now();
        for (name, creds) in entries {
            self.check_lease(creds, now)
                .map_err(|why| format!("credentials \"{name}\": {why}"))?;
        }
        Ok(())
    }

    fn check_lease(&self, creds: &Credentials, now: SystemTime) -> Result<(), String> {
        let Some(lease) = creds.current() else {
            return Err("no lease yet".to_owned());
        };
        let at = match creds.deadline(lease.generation) {
            Deadline::Never => return Ok(()),
            Deadline::Over => return Err("its lease has ended".to_owned()),
            Deadline::At(at) => at,
        };
        let lifetime = lease
            .expires_at
            .and_then(|e| e.duration_since(lease.issued_at).ok())
            .unwrap_or_default();
        let margin = self.margin.min(lifetime / MARGIN_SHARE_DIVISOR);
        match at.duration_since(now) {
            Ok(left) if left > margin => Ok(()),
            Ok(left) => Err(format!(
                "lease within {}s of its cliff (margin {}s)",
                left.as_secs(),
                margin.as_secs()
            )),
            Err(_) => Err("lease past its cliff (no new upstream login may use it)".to_owned()),
        }
    }
}

/// Seconds until the current lease of `creds` reaches its cliff (negative once past it;
/// infinite for a lease that never expires); `None` before the first lease.
pub fn seconds_to_cliff(creds: &Credentials, now: SystemTime) -> Option<f64> {
    let lease = creds.current()?;
    match creds.deadline(lease.generation) {
        Deadline::Never => Some(f64::INFINITY),
        Deadline::Over => Some(0.0),
        Deadline::At(at) => Some(match at.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }),
    }
}
