//! One Vault token and what is known about its lifetime: when it ends, whether Vault will
//! extend it, which leases were created with it, and what to do about it next.
//!
//! # Design
//!
//! Vault revokes every lease created with a token when that token expires or is revoked, so a
//! token must outlive its leases. Each [`Held`] token records the leases it created that
//! pglease still uses, with the latest end each may need, and every renewal asks for enough
//! to reach the latest of them (at least the TTL the token was created with). Vault caps a
//! renewal at the token's max TTL; a renewal granted less than asked fixes the token's end,
//! and from then on a lease created with it cannot outlive it: the lease's expiry is capped
//! there. The current token is renewed at two thirds of its TTL, and replaced by a fresh login
//! once its end is fixed; a replaced token is kept (and renewed) while its leases are in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::auth::Obtained;
use super::response::TokenGrant;
use crate::secret::Secret;

/// The token in use and what is known about its lease.
pub struct Held {
    pub token: Secret,
    /// Names the token in audit lines; never grants anything.
    pub accessor: Option<String>,
    /// When the current TTL started (the request that granted it was sent).
    pub since: Instant,
    /// `None` for a token that never expires (a root token).
    pub ttl: Option<Duration>,
    pub renewable: bool,
    /// The least TTL asked for at each renewal: the one the token was created with.
    pub increment: Duration,
    /// The last renewal granted less than asked: Vault's max TTL is reached, the end is fixed.
    pub at_max: bool,
    /// The "expires soon and cannot be renewed" warning was logged.
    pub warned: bool,
    /// After a failed refresh: the next attempt waits until then.
    pub retry_at: Option<Instant>,
    /// Leases created with this token that pglease still uses, each with the latest end it
    /// may need (its expiry, or where a renewal moved it).
    pub leases: HashMap<String, Instant>,
    /// Requests made with this token that may create a lease and have not reported back; a
    /// replaced token is not revoked while any is out, or the lease would die at birth.
    pub in_flight: Arc<AtomicUsize>,
}

impl From<Obtained> for Held {
    fn from(o: Obtained) -> Held {
        Held::new(o.token, &o.grant, o.since)
    }
}

impl Held {
    pub fn new(token: Secret, grant: &TokenGrant, since: Instant) -> Held {
        let ttl = (grant.ttl > 0).then(|| Duration::from_secs(grant.ttl));
        Held {
            token,
            accessor: grant.accessor.clone(),
            since,
            ttl,
            renewable: grant.renewable,
            increment: Duration::from_secs(grant.creation_ttl.unwrap_or(grant.ttl).max(1)),
            at_max: false,
            warned: false,
            retry_at: None,
            leases: HashMap::new(),
            in_flight: Arc::default(),
        }
    }

    /// The accessor, or "" for audit fields.
    pub fn accessor(&self) -> &str {
        self.accessor.as_deref().unwrap_or("")
    }

    /// When the token expires unless renewed; `None` for one that never does.
    pub fn end(&self) -> Option<Instant> {
        self.ttl.map(|t| self.since + t)
    }

    /// Vault will not move [`Held::end`] any more: not renewable, or at its max TTL.
    pub fn end_is_fixed(&self) -> bool {
        !self.renewable || self.at_max
    }

    /// The token's end when it is fixed and already cuts short a lease made with it: a new
    /// lease from this token could live no longer than that one.
    pub fn capping_end(&self) -> Option<Instant> {
        let end = self.end().filter(|_| self.end_is_fixed())?;
        self.leases
            .values()
            .any(|until| *until > end)
            .then_some(end)
    }

    /// The latest end any lease created with this token may need.
    pub fn needed_until(&self) -> Option<Instant> {
        self.leases.values().max().copied()
    }

    /// The TTL to ask for when renewing at `now`: enough to reach every lease's end, and never
    /// less than the token's own TTL. Whole seconds, rounded up.
    pub fn increment_at(&self, now: Instant) -> Duration {
        let needed = self
            .needed_until()
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        let needed = Duration::from_secs(needed.as_secs() + u64::from(needed.subsec_nanos() > 0));
        needed.max(self.increment)
    }

    /// The token for one request, counted as out until the ticket is dropped.
    pub fn ticket(&self) -> Ticket {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ticket {
            token: self.token.clone(),
            _out: InFlight(self.in_flight.clone()),
        }
    }

    /// True while a lease created with this token may still be in use or about to be.
    pub fn has_leases(&self) -> bool {
        !self.leases.is_empty() || self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the token next needs attention; `None` when nothing will ever be done.
    pub fn refresh_at(&self, can_login: bool) -> Option<Instant> {
        let ttl = self.ttl?;
        if self.warned && !can_login {
            return None;
        }
        let due = self.since + ttl * 2 / 3;
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }
}

/// Marks one request as out with a token, until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token handed out for one request. For a request that creates a lease, give it back
/// with the lease ([`super::keeper::TokenKeeper::adopt`]) so the lease is tied to the token
/// that created it.
pub struct Ticket {
    /// The token to send.
    pub token: Secret,
    _out: InFlight,
}

/// What to do about the current token now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Keep,
    Renew,
    Login,
    Warn,
}

/// The plan for the current token at `now`.
pub fn plan(held: &Held, can_login: bool, now: Instant) -> Step {
    let (Some(ttl), Some(due)) = (held.ttl, held.refresh_at(can_login)) else {
        return Step::Keep;
    };
    if now < due {
        return Step::Keep;
    }
    if can_login && now >= held.since + ttl {
        return Step::Login;
    }
    if held.renewable && !held.at_max {
        Step::Renew
    } else if can_login {
        Step::Login
    } else {
        Step::Warn
    }
}

/// What to do about a replaced token at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum RetiredStep {
    Keep,
    /// Its leases still need it, and Vault may extend it.
    Renew,
    /// Nothing needs it any more (or it has expired): revoke or forget it.
    Release,
}

/// The plan for a token replaced by a fresh login.
pub fn plan_retired(held: &Held, now: Instant) -> RetiredStep {
    if !held.has_leases() || held.end().is_some_and(|e| now >= e) {
        return RetiredStep::Release;
    }
    match held.refresh_at(true) {
        Some(due) if now >= due && !held.end_is_fixed() => RetiredStep::Renew,
        _ => RetiredStep::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ttl: u64, renewable: bool) -> (Held, Instant) {
        let grant = TokenGrant {
            token: None,
            accessor: None,
            ttl,
            creation_ttl: None,
            renewable,
        };
        let since = Instant::now();
        (Held::new(Secret::from("t"), &grant, since), since)
    }

    #[test]
    fn renews_at_two_thirds_while_vault_grants_the_full_ttl() {
        let (h, t0) = held(30, true);
        assert_eq!(h.increment, Duration::from_secs(30));
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(19)), Step::Keep);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(20)), Step::Renew);
        assert_eq!(plan(&h, false, t0 + Duration::from_secs(20)), Step::Renew);
        // Past expiry a login method does not bother renewing a dead token.
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(31)), Step::Login);
    }

    #[test]
    fn at_max_ttl_logs_in_or_warns_once() {
        let (mut h, t0) = held(30, true);
        h.at_max = true;
        let due = t0 + Duration::from_secs(21);
        assert_eq!(plan(&h, true, due), Step::Login);
        assert_eq!(plan(&h, false, due), Step::Warn);
        h.warned = true;
        assert_eq!(plan(&h, false, due), Step::Keep);
        assert_eq!(h.refresh_at(false), None);
        let (h, t0) = held(30, false);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(21)), Step::Login);
    }

    #[test]
    fn tokens_without_ttl_are_left_alone_and_failures_back_off() {
        let (h, t0) = held(0, false);
        assert_eq!(h.ttl, None);
        assert_eq!(h.end(), None);
        assert_eq!(
            plan(&h, true, t0 + Duration::from_secs(1_000_000)),
            Step::Keep
        );
        assert_eq!(h.refresh_at(true), None);

        let (mut h, t0) = held(30, true);
        h.retry_at = Some(t0 + Duration::from_secs(25));
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(22)), Step::Keep);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(25)), Step::Renew);
        assert_eq!(h.refresh_at(true), Some(t0 + Duration::from_secs(25)));
    }

    #[test]
    fn renewals_ask_enough_to_outlive_every_lease() {
        let (mut h, t0) = held(10, true);
        assert_eq!(h.increment_at(t0), Duration::from_secs(10));
        h.leases
            .insert("a".into(), t0 + Duration::from_millis(59_500));
        h.leases.insert("b".into(), t0 + Duration::from_secs(20));
        assert_eq!(h.increment_at(t0), Duration::from_secs(60));
        // Near the end of the longest lease the token's own TTL is the floor.
        assert_eq!(
            h.increment_at(t0 + Duration::from_secs(55)),
            Duration::from_secs(10)
        );
        assert!(!h.end_is_fixed());
        h.at_max = true;
        assert!(h.end_is_fixed());
        assert!(held(10, false).0.end_is_fixed());
    }

    #[test]
    fn a_fixed_end_caps_leases_that_would_outlive_it() {
        let (mut h, t0) = held(10, true);
        h.leases.insert("a".into(), t0 + Duration::from_secs(30));
        // Vault may still extend it: nothing is capped yet.
        assert_eq!(h.capping_end(), None);
        h.at_max = true;
        assert_eq!(h.capping_end(), Some(t0 + Duration::from_secs(10)));
        h.leases.insert("a".into(), t0 + Duration::from_secs(5));
        assert_eq!(h.capping_end(), None);
    }

    #[test]
    fn a_replaced_token_lives_while_its_leases_do() {
        let (mut h, t0) = held(30, true);
        // Nothing created with it: let it go at once.
        assert_eq!(plan_retired(&h, t0), RetiredStep::Release);
        let out = h.ticket();
        assert_eq!(plan_retired(&h, t0), RetiredStep::Keep);
        drop(out);
        h.leases.insert("a".into(), t0 + Duration::from_secs(100));
        assert_eq!(plan_retired(&h, t0), RetiredStep::Keep);
        assert_eq!(
            plan_retired(&h, t0 + Duration::from_secs(20)),
            RetiredStep::Renew
        );
        h.at_max = true;
        assert_eq!(
            plan_retired(&h, t0 + Duration::from_secs(20)),
            RetiredStep::Keep
        );
        // Expired: its leases died with it in Vault.
        assert_eq!(
            plan_retired(&h, t0 + Duration::from_secs(30)),
            RetiredStep::Release
        );
    }
}
