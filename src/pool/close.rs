//! Why an upstream connection was closed: one reason per close, named in its log line and
//! meant to be reused as a metric label (`pglease_upstream_closes_total{reason}`).

/// Why pglease closed an upstream connection. Every close carries exactly one; the first
/// reason given is the one that stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Its protocol state is unknown (an exchange pglease ran on it failed or timed out).
    Broken,
    /// PostgreSQL hung up, or its socket or framing failed, while it served a client.
    UpstreamLost,
    /// It sat in the pool (or waited as a replacement) for `idle_timeout`.
    IdleTimeout,
    /// Its lease was superseded: it gave way to a replacement on the newer lease, or was too
    /// close to its lease's hard deadline to be handed out again.
    LeaseRetired,
    /// PostgreSQL sent something while no request was outstanding on it.
    UnsolicitedInput,
    /// Its replies did not match the requests the statement tracking sent it (transaction
    /// mode), so what it holds is unknown.
    ReplyMismatch,
    /// Its client left with a request still in flight; the running query was cancelled.
    ClientVanished,
    /// Rolling back or resetting after its client left failed.
    CleanupFailed,
    /// A cancel request its client sent may still reach it, so it cannot serve anyone else.
    CancelUnsettled,
    /// A session move could not recreate the session's state on it.
    MoveFailed,
    /// Transaction mode: what its last client left set on it could not be read (the read
    /// failed, or showed a changed session user), so it cannot be handed to anyone else.
    SettingsUnknown,
    /// Putting a client's settings on it failed.
    SettingsFailed,
    /// Transaction mode: its client left session state on it (an advisory lock, a cursor WITH
    /// HOLD, a temporary object) that the next client must not find, or the check failed.
    SessionStateLeft,
    /// A replacement the pool had no use for any more.
    NotNeeded,
    /// Its lease reached its hard deadline while a client still used it.
    Deadline,
    /// pglease is shutting down and `shutdown_timeout` passed while a client used it.
    Shutdown,
    /// Its pool was closed.
    PoolClosed,
    /// A config reload replaced or removed its pool, and it was idle.
    Reloaded,
    /// It outlived `server_lifetime` (with its jitter) and came back to its pool.
    Lifetime,
    /// A request on it ran past `query_timeout` and did not end after being cancelled.
    QueryTimeout,
    /// An extra connection of the reserve pool (`reserve_pool_size`) that fell idle.
    ReserveReleased,
}

impl CloseReason {
    /// Every reason, in [`CloseReason::index`] order (metrics resolve one counter per reason).
    pub const ALL: [CloseReason; 21] = [
        CloseReason::Broken,
        CloseReason::UpstreamLost,
        CloseReason::IdleTimeout,
        CloseReason::LeaseRetired,
        CloseReason::UnsolicitedInput,
        CloseReason::ReplyMismatch,
        CloseReason::ClientVanished,
        CloseReason::CleanupFailed,
        CloseReason::CancelUnsettled,
        CloseReason::MoveFailed,
        CloseReason::SettingsUnknown,
        CloseReason::SettingsFailed,
        CloseReason::SessionStateLeft,
        CloseReason::NotNeeded,
        CloseReason::Deadline,
        CloseReason::Shutdown,
        CloseReason::PoolClosed,
        CloseReason::Reloaded,
        CloseReason::Lifetime,
        CloseReason::QueryTimeout,
        CloseReason::ReserveReleased,
    ];

    /// Position in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable label for logs and metrics: snake case, never changed once released.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Broken => "broken",
            CloseReason::UpstreamLost => "upstream_lost",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::LeaseRetired => "lease_retired",
            CloseReason::UnsolicitedInput => "unsolicited_input",
            CloseReason::ReplyMismatch => "reply_mismatch",
            CloseReason::ClientVanished => "client_vanished",
            CloseReason::CleanupFailed => "cleanup_failed",
            CloseReason::CancelUnsettled => "cancel_unsettled",
            CloseReason::MoveFailed => "move_failed",
            CloseReason::SettingsUnknown => "settings_unknown",
            CloseReason::SettingsFailed => "settings_failed",
            CloseReason::SessionStateLeft => "session_state_left",
            CloseReason::NotNeeded => "not_needed",
            CloseReason::Deadline => "deadline",
            CloseReason::Shutdown => "shutdown",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::Reloaded => "reloaded",
            CloseReason::Lifetime => "lifetime",
            CloseReason::QueryTimeout => "query_timeout",
            CloseReason::ReserveReleased => "reserve_released",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let all = CloseReason::ALL;
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i, "{r} is out of place in ALL");
        }
        let labels: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len(), "two reasons share a label");
        for label in labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label} is not a metric label"
            );
        }
    }
}
