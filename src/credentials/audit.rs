//! The audit trail of the lease lifecycle: one structured line on the `pglease::audit` target
//! per lease event (DESIGN §5.9), with times in RFC 3339 UTC so log pipelines can parse them.
//! A password never reaches these lines: only the lease's id, role and times.

use std::fmt;
use std::time::SystemTime;

use tracing::{info, warn};

use super::Lease;

/// The tracing target every audit line is written to.
pub const TARGET: &str = "pglease::audit";

/// What happened to a lease; the `event` field of its audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source handed out a new lease.
    Issued,
    /// One upstream login with the new lease succeeded.
    Proved,
    /// New upstream logins use it from now on.
    Published,
    /// It replaced the previous lease.
    Rotated,
    /// It arrived with less life left than a rotation needs; the source is asked again later.
    ArrivedShort,
    /// The source extended it.
    Renewed,
    /// The source extends it no further.
    RenewalCapped,
    /// No connection uses it any more.
    Drained,
    /// It was ended at the source.
    Revoked,
    /// Its hard deadline passed while connections still used it.
    Expired,
    /// It failed its proof, or a lifecycle step on it failed.
    Failed,
}

impl Event {
    /// The stable label of the event, for log queries and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Issued => "issued",
            Event::Proved => "proved",
            Event::Published => "published",
            Event::Rotated => "rotated",
            Event::ArrivedShort => "arrived_short",
            Event::Renewed => "renewed",
            Event::RenewalCapped => "renewal_capped",
            Event::Drained => "drained",
            Event::Revoked => "revoked",
            Event::Expired => "expired",
            Event::Failed => "failed",
        }
    }

    /// Events an operator should look at; the rest are the normal course of a lease.
    fn is_warning(self) -> bool {
        matches!(self, Event::ArrivedShort | Event::Expired | Event::Failed)
    }
}

/// A time as RFC 3339 UTC with whole seconds (`2030-01-01T00:00:00Z`), or `never`.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub Option<SystemTime>);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{}", humantime::format_rfc3339_seconds(t)),
            None => f.write_str("never"),
        }
    }
}

/// Writes the audit line of `event` for `lease` of credentials entry `credentials`.
pub fn lease(credentials: &str, source: &str, event: Event, lease: &Lease, reason: &str) {
    lease_until(credentials, source, event, lease, lease.expires_at, reason);
}

/// As [`lease`], for a lease whose expiry has moved (renewed) to `expires_at`.
pub fn lease_until(
    credentials: &str,
    source: &str,
    event: Event,
    lease: &Lease,
    expires_at: Option<SystemTime>,
    reason: &str,
) {
    let issued_at = Rfc3339(Some(lease.issued_at));
    let expires_at = Rfc3339(expires_at);
    let name = event.as_str();
    if event.is_warning() {
        warn!(
            target: TARGET,
            credentials, source, event = name, lease_id = %lease.id, role = %lease.username,
            generation = lease.generation, %issued_at, %expires_at, reason,
            "lease {name}"
        );
    } else {
        info!(
            target: TARGET,
            credentials, source, event = name, lease_id = %lease.id, role = %lease.username,
            generation = lease.generation, %issued_at, %expires_at, reason,
            "lease {name}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::Secret;
    use crate::test_log::capture;

    #[test]
    fn audit_lines_carry_rfc3339_utc_times_and_no_password() {
        let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        let lease = Lease {
            id: "lease-7".into(),
            username: "pglease_abc".into(),
            password: Secret::from("hunter2-secret"),
            issued_at,
            expires_at: Some(issued_at + Duration::from_secs(90)),
            renewable: true,
            generation: 7,
        };
        let (captured, guard) = capture();
        super::lease("app", "issuer", Event::Published, &lease, "test");
        drop(guard);
        let line = captured.text();
        assert!(
            line.contains("issued_at=2030-01-01T00:00:00Z"),
            "issued_at not RFC 3339: {line}"
        );
        assert!(
            line.contains("expires_at=2030-01-01T00:01:30Z"),
            "expires_at not RFC 3339: {line}"
        );
        assert!(line.contains("event=\"published\"") || line.contains("event=published"));
        assert!(!line.contains("SystemTime"), "{line}");
        assert!(
            !line.contains("hunter2"),
            "the password reached the audit line: {line}"
        );
    }
}
