//! The timing rules of the lease lifecycle, as pure functions so they are tested without
//! clocks: when to rotate, when the hard deadline falls, how far a renewal may go, and the
//! jittered backoff between failed attempts.

use std::time::{Duration, SystemTime};

use super::Lease;

/// Lifecycle settings of one credentials entry (`[credentials.NAME]`).
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Fraction of a lease's lifetime after which the next lease is obtained.
    pub rotate_at: f64,
    /// Connections still on a lease this long before it expires are closed.
    pub safety_margin: Duration,
    /// Whether leases still in use are renewed (never past `max_ttl`).
    pub renew: bool,
    /// Upper bound on a lease's total lifetime from issue, when the source has one.
    pub max_ttl: Option<Duration>,
}

/// When rotation to the next lease should start; `None` for a lease that never expires.
/// Never later than the hard deadline, so a short lease still rotates in time.
pub fn rotation_time(lease: &Lease, life: &Lifecycle) -> Option<SystemTime> {
    let expires = lease.expires_at?;
    let lifetime = expires
        .duration_since(lease.issued_at)
        .unwrap_or(Duration::ZERO);
    let at = lease.issued_at + lifetime.mul_f64(life.rotate_at.clamp(0.0, 1.0));
    Some(at.min(hard_deadline(expires, life)))
}

/// The instant after which nothing may still use a lease expiring at `expires`.
pub fn hard_deadline(expires: SystemTime, life: &Lifecycle) -> SystemTime {
    expires
        .checked_sub(life.safety_margin)
        .unwrap_or(SystemTime::UNIX_EPOCH)
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
            safety_margin: Duration::from_secs(margin),
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
