//! The timing rules of the lease lifecycle, as pure functions so they are tested without
//! clocks: when to rotate, when the hard deadline falls, how far a renewal may go, and the
//! jittered backoff between failed attempts.
//!
//! # Scaling
//!
//! Leases from seconds to days work with the defaults because the margins scale with each
//! lease's lifetime: unless `safety_margin` is set, the hard deadline falls a tenth of the
//! lifetime before expiry, at most [`MAX_AUTO_MARGIN`] (a 10 s lease keeps 1 s, a 15 min one
//! 30 s), and rotation starts at `rotate_at` of the lifetime, never later than that deadline.
//! A source can still hand out a lease that is already at its rotation point (a file whose
//! credential is about to expire, a token near its end); such a lease is used, but the next
//! attempt is paced by [`SHORT_LEASE_RETRY`] backoff rather than by the lease, so no source
//! can make the rotator spin.

use std::time::{Duration, SystemTime};

use super::Lease;

/// Lifecycle settings of one credentials entry (`[credentials.NAME]`).
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Fraction of a lease's lifetime after which the next lease is obtained.
    pub rotate_at: f64,
    /// Connections still on a lease this long before it expires are closed; `None` scales the
    /// margin with each lease's lifetime (see the module docs).
    pub safety_margin: Option<Duration>,
    /// Whether leases still in use are renewed (never past `max_ttl`).
    pub renew: bool,
    /// Upper bound on a lease's total lifetime from issue, when the source has one.
    pub max_ttl: Option<Duration>,
}

/// The largest safety margin chosen automatically, whatever the lease's lifetime.
pub const MAX_AUTO_MARGIN: Duration = Duration::from_secs(30);

/// The automatic safety margin as a share of a lease's lifetime.
const AUTO_MARGIN_SHARE: f64 = 0.1;

/// First and longest pause before asking again after a lease arrived already at its rotation
/// point: at most about eight acquisitions in the first minute, then one a minute.
pub const SHORT_LEASE_RETRY: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));

impl Lifecycle {
    /// The safety margin of `lease`: the configured one, or a tenth of its lifetime (at most
    /// [`MAX_AUTO_MARGIN`]).
    pub fn margin(&self, lease: &Lease) -> Duration {
        self.safety_margin.unwrap_or_else(|| {
            lifetime(lease)
                .mul_f64(AUTO_MARGIN_SHARE)
                .min(MAX_AUTO_MARGIN)
        })
    }

    /// The hard deadline of `lease` while it expires at `expires` (its own expiry, or a later
    /// one after renewal): nothing may use it after this instant.
    pub fn deadline(&self, lease: &Lease, expires: SystemTime) -> SystemTime {
        expires
            .checked_sub(self.margin(lease))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// How long `lease` was issued for (zero when it never expires or came already expired).
fn lifetime(lease: &Lease) -> Duration {
    lease
        .expires_at
        .and_then(|e| e.duration_since(lease.issued_at).ok())
        .unwrap_or(Duration::ZERO)
}

/// When rotation to the next lease should start; `None` for a lease that never expires.
/// Never later than the hard deadline, so a short lease still rotates in time.
pub fn rotation_time(lease: &Lease, life: &Lifecycle) -> Option<SystemTime> {
    let expires = lease.expires_at?;
    let at = lease.issued_at + lifetime(lease).mul_f64(life.rotate_at.clamp(0.0, 1.0));
    Some(at.min(life.deadline(lease, expires)))
}

/// How far a renewal may extend a lease: another full original lifetime, but never past
/// `issued_at + max_ttl`. `None` when that bound leaves nothing to gain.
pub fn renewal_target(
    lease: &Lease,
    expires: SystemTime,
    life: &Lifecycle,
    now: SystemTime,
) -> Option<SystemTime> {
    let original = lease.expires_at?.duration_since(lease.issued_at).ok()?;
    let mut until = now + original;
    if let Some(max) = life.max_ttl {
        until = until.min(lease.issued_at + max);
    }
    (until > expires).then_some(until)
}

/// Exponential backoff with full jitter, so many rotators never retry in lockstep.
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    /// The next delay: uniformly random in [next/2, next], then doubles `next`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn lease(ttl: u64) -> Lease {
        let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        Lease {
            id: "l".into(),
            username: "u".into(),
            password: Secret::from("p"),
            issued_at,
            expires_at: Some(issued_at + Duration::from_secs(ttl)),
            renewable: true,
            generation: 1,
        }
    }

    fn life(margin: u64, max_ttl: Option<u64>) -> Lifecycle {
        Lifecycle {
            rotate_at: 0.66,
            safety_margin: Some(Duration::from_secs(margin)),
            renew: true,
            max_ttl: max_ttl.map(Duration::from_secs),
        }
    }

    #[test]
    fn rotates_at_fraction_but_before_deadline() {
        let l = lease(100);
        let at = rotation_time(&l, &life(5, None)).unwrap();
        assert_eq!(at.duration_since(l.issued_at).unwrap().as_secs(), 66);
        // A safety margin larger than the remaining third pulls rotation earlier.
        let at = rotation_time(&l, &life(50, None)).unwrap();
        assert_eq!(at.duration_since(l.issued_at).unwrap().as_secs(), 50);
        let mut forever = lease(100);
        forever.expires_at = None;
        assert!(rotation_time(&forever, &life(5, None)).is_none());
    }

    #[test]
    fn the_automatic_margin_scales_with_the_lease() {
        let auto = Lifecycle {
            safety_margin: None,
            ..life(0, None)
        };
        let expiry = |l: &Lease| l.expires_at.unwrap();
        for (ttl, margin) in [(10, 1), (20, 2), (900, 30), (86_400, 30)] {
            let l = lease(ttl);
            assert_eq!(auto.margin(&l), Duration::from_secs(margin), "ttl {ttl}s");
            let deadline = auto.deadline(&l, expiry(&l));
            let rotate = rotation_time(&l, &auto).unwrap();
            assert!(rotate < deadline, "ttl {ttl}s rotates after its deadline");
            assert!(rotate > l.issued_at, "ttl {ttl}s rotates at once");
        }
        // A 10 s lease rotates at 6.6 s and keeps 2.4 s to drain before its deadline at 9 s.
        let l = lease(10);
        let rotate = rotation_time(&l, &auto).unwrap();
        assert_eq!(
            rotate.duration_since(l.issued_at).unwrap().as_millis(),
            6_600
        );
        // An explicit margin still wins.
        assert_eq!(life(5, None).margin(&lease(86_400)), Duration::from_secs(5));
    }

    #[test]
    fn renewal_never_passes_max_ttl() {
        let l = lease(100);
        let expires = l.expires_at.unwrap();
        let now = l.issued_at + Duration::from_secs(90);
        let until = renewal_target(&l, expires, &life(5, Some(150)), now).unwrap();
        assert_eq!(until, l.issued_at + Duration::from_secs(150));
        let until = renewal_target(&l, expires, &life(5, None), now).unwrap();
        assert_eq!(until, now + Duration::from_secs(100));
        assert!(renewal_target(&l, expires, &life(5, Some(100)), now).is_none());
    }

    #[test]
    fn backoff_grows_jittered_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[4] >= Duration::from_millis(200) && d[4] <= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
