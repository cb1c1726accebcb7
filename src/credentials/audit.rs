//! The audit trail of the lease lifecycle: one structured line on the `pglease::audit` target
//! per lease event (DESIGN §5.9), with times in RFC 3339 UTC so log pipelines can parse them.
//! A password never reaches these lines: only the lease's id, role and times.
//!
//! Every audit event, here or in a source (the Vault token's lifecycle), is written with this
//! module's `record!`, which puts it on [`TARGET`] with the field `audit = true`: a log pipeline
//! routes on that field (in JSON, `"audit":true`) to an audit store. Nothing else writes on
//! that target or sets that field.

use std::fmt;
use std::time::SystemTime;

use super::Lease;

/// The tracing target every audit line is written to.
pub const TARGET: &str = "pglease::audit";

/// Writes one audit event at `$level` (`INFO` or `WARN`, a [`tracing::Level`] constant): on
/// [`TARGET`], with `audit = true`, then the fields and message as `tracing::event!` takes
/// them.
macro_rules! record {
    ($level:ident, $($rest:tt)+) => {
        ::tracing::event!(
            target: $crate::credentials::audit::TARGET,
            ::tracing::Level::$level,
            audit = true,
            $($rest)+
        )
    };
}
pub(crate) use record;

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
        record!(
            WARN,
            credentials, source, event = name, lease_id = %lease.id, role = %lease.username,
            generation = lease.generation, %issued_at, %expires_at, reason,
            "lease {name}"
        );
    } else {
        record!(
            INFO,
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
        assert!(line.contains("audit=true"), "not marked as audit: {line}");
        assert!(!line.contains("SystemTime"), "{line}");
        assert!(
            !line.contains("hunter2"),
            "the password reached the audit line: {line}"
        );
    }

    /// Every audit event goes through `record!`, and `audit = true` is set nowhere else: a
    /// file that writes on the audit target itself, or marks another event as audit, fails.
    #[test]
    fn audit_events_are_written_only_through_record() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let this = src.join("credentials").join("audit.rs");
        let mut pending = vec![src];
        let mut offenders = Vec::new();
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path == this {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in ["\"pglease::audit\"", "audit::TARGET", "audit = true"] {
                    if text.contains(needle) {
                        offenders.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "audit events outside record!: {offenders:?}"
        );
    }
}
