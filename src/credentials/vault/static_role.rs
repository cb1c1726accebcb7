//! Static database roles: one existing PostgreSQL role whose password Vault rotates.
//!
//! The account outlives every rotation and PostgreSQL keeps sessions opened with an old
//! password, so a lease here never expires and revoking it does nothing. What matters is
//! noticing a rotation: [`changed`] re-reads `static-creds` shortly after Vault's scheduled
//! rotation (`ttl`) and otherwise every [`POLL_INTERVAL`], which also catches a manual
//! `rotate-role`, and reports a change once the password or the rotation time differs from
//! the current lease.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use tracing::debug;

use super::Shared;
use super::client::parsed;
use super::response::{StaticCreds, static_creds};
use crate::credentials::{Lease, SourceError};

/// Longest time between two reads of `static-creds`: bounds how long a manual rotation goes
/// unnoticed (new logins with the old password fail meanwhile).
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest time between two reads, so a rotation Vault keeps reporting as due (ttl 0) cannot
/// turn polling into a busy loop.
const MIN_POLL: Duration = Duration::from_secs(2);

/// Vault applies a scheduled rotation on its next queue tick, a little after `ttl` runs out.
const ROTATION_GRACE: Duration = Duration::from_secs(1);

/// When Vault's next scheduled rotation is due, as of the last read.
#[derive(Default)]
pub struct RotationClock {
    due: Mutex<Option<Instant>>,
}

impl RotationClock {
    fn note(&self, creds: &StaticCreds, read_at: Instant) {
        if let Ok(mut due) = self.due.lock() {
            *due = Some(read_at + Duration::from_secs(creds.ttl));
        }
    }

    fn due(&self) -> Option<Instant> {
        self.due.lock().ok().and_then(|d| *d)
    }
}

/// `GET /v1/{mount}/static-creds/{role}` as a lease that never expires.
pub async fn acquire(shared: &Shared, clock: &RotationClock) -> Result<Lease, SourceError> {
    let creds = read(shared, clock).await?;
    Ok(Lease {
        id: lease_id(shared, &creds),
        username: creds.username,
        password: creds.password,
        issued_at: SystemTime::now(),
        expires_at: None,
        renewable: false,
        generation: 0,
    })
}

/// Resolves once Vault holds a password other than `current`'s. Read failures are logged and
/// polling goes on: the current password keeps working for sessions already open.
pub async fn changed(shared: &Shared, clock: &RotationClock, current: &Lease) {
    loop {
        tokio::time::sleep(next_read_in(clock.due(), Instant::now())).await;
        match read(shared, clock).await {
            Ok(creds) => {
                if creds.username != current.username
                    || creds.password != current.password
                    || lease_id(shared, &creds) != current.id
                {
                    return;
                }
            }
            Err(error) => debug!(%error, "reading vault static credentials failed; polling on"),
        }
    }
}

async fn read(shared: &Shared, clock: &RotationClock) -> Result<StaticCreds, SourceError> {
    let path = format!("{}/static-creds/{}", shared.mount, shared.role);
    let read_at = Instant::now();
    let reply = shared.authed(Method::GET, &path, None).await?;
    let creds = parsed(&Method::GET, &path, reply, static_creds)?;
    clock.note(&creds, read_at);
    Ok(creds)
}

/// Names the rotation, never the password: `static:{mount}/{role}@{last_vault_rotation}`.
fn lease_id(shared: &Shared, creds: &StaticCreds) -> String {
    let rotation = creds.last_vault_rotation.as_deref().unwrap_or("unknown");
    format!("static:{}/{}@{rotation}", shared.mount, shared.role)
}

/// Time to the next read: just after the scheduled rotation when that comes before the next
/// regular poll.
fn next_read_in(due: Option<Instant>, now: Instant) -> Duration {
    let until_rotation = due.map(|d| d.saturating_duration_since(now) + ROTATION_GRACE);
    until_rotation
        .map_or(POLL_INTERVAL, |d| d.min(POLL_INTERVAL))
        .max(MIN_POLL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_rotation_schedule_within_bounds() {
        let now = Instant::now();
        assert_eq!(next_read_in(None, now), POLL_INTERVAL);
        let far = now + Duration::from_secs(3600);
        assert_eq!(next_read_in(Some(far), now), POLL_INTERVAL);
        let soon = now + Duration::from_secs(4);
        assert_eq!(next_read_in(Some(soon), now), Duration::from_secs(5));
        // Overdue: Vault has not rotated yet; read again soon, but not in a tight loop.
        let past = now.checked_sub(Duration::from_secs(30)).unwrap_or(now);
        assert_eq!(next_read_in(Some(past), now), MIN_POLL);
    }

    #[test]
    fn clock_notes_the_ttl_from_the_read() {
        let clock = RotationClock::default();
        assert_eq!(clock.due(), None);
        let at = Instant::now();
        let creds = StaticCreds {
            username: "u".into(),
            password: "p".into(),
            ttl: 28,
            last_vault_rotation: None,
        };
        clock.note(&creds, at);
        assert_eq!(clock.due(), Some(at + Duration::from_secs(28)));
    }
}
