//! One credential from a source, with the times that drive its rotation.

use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// A credential pglease logs in upstream with. Immutable once published: every upstream
/// connection holds an `Arc<Lease>` of the lease it logged in with, so the rotator can tell
/// which connections still depend on which lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The source's identifier for revocation and audit (a Vault lease id, an issued role
    /// name, or a fixed label for sources without ids). Never secret.
    pub id: String,
    /// The upstream role name to log in as.
    pub username: String,
    /// The upstream password; redacted in every `Debug`.
    pub password: Secret,
    /// When the source issued it.
    pub issued_at: SystemTime,
    /// When it stops working; `None` for credentials that do not expire (static).
    pub expires_at: Option<SystemTime>,
    /// Whether the source can extend `expires_at`.
    pub renewable: bool,
    /// Stamped by the rotator when it publishes: 1 for the first lease, then +1 per rotation.
    pub generation: u64,
}

impl Lease {
    /// Time left before the lease stops working, `None` when it never expires.
    pub fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
    }
}
