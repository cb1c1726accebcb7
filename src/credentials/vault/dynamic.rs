//! Dynamic database roles: every lease is a new PostgreSQL role that Vault creates, renews
//! (moving its `VALID UNTIL`) and drops when the lease is revoked.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::json;

use super::Shared;
use super::client::parsed;
use super::response::{dynamic_creds, lease_renewal};
use crate::credentials::{Lease, SourceError};

/// `GET /v1/{mount}/creds/{role}`. The lease's clock starts when the request is sent, so
/// pglease never believes a credential lives longer than Vault does.
pub async fn acquire(shared: &Shared) -> Result<Lease, SourceError> {
    let path = format!("{}/creds/{}", shared.mount, shared.role);
    let issued_at = SystemTime::now();
    let reply = shared.authed(Method::GET, &path, None).await?;
    let creds = parsed(&Method::GET, &path, reply, dynamic_creds)?;
    Ok(Lease {
        id: creds.lease_id,
        username: creds.username,
        password: creds.password,
        issued_at,
        expires_at: (creds.lease_duration > 0)
            .then(|| issued_at + Duration::from_secs(creds.lease_duration)),
        renewable: creds.renewable,
        generation: 0,
    })
}

/// `PUT /v1/sys/leases/renew`, asking for the time left until `until`. Vault may grant less
/// (the role's `max_ttl` wins); the expiry returned is what it granted.
pub async fn renew(
    shared: &Shared,
    lease: &Lease,
    until: SystemTime,
) -> Result<SystemTime, SourceError> {
    let path = "sys/leases/renew";
    let sent = SystemTime::now();
    let body = json!({"lease_id": lease.id, "increment": increment_secs(sent, until)});
    let reply = shared.authed(Method::PUT, path, Some(body)).await?;
    let granted = parsed(&Method::PUT, path, reply, lease_renewal)?;
    Ok(sent + Duration::from_secs(granted))
}

/// `PUT /v1/sys/leases/revoke`: Vault runs the role's revocation statements (drops the role).
pub async fn revoke(shared: &Shared, lease: &Lease) -> Result<(), SourceError> {
    let body = json!({"lease_id": lease.id});
    shared
        .authed(Method::PUT, "sys/leases/revoke", Some(body))
        .await?;
    Ok(())
}

/// Whole seconds from `now` to `until`, rounded up so the request never asks for less than
/// wanted, and at least 1 (0 would mean "the default" to Vault).
fn increment_secs(now: SystemTime, until: SystemTime) -> u64 {
    let left = until.duration_since(now).unwrap_or_default();
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_rounds_up_and_is_never_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(increment_secs(now, now + Duration::from_secs(30)), 30);
        assert_eq!(increment_secs(now, now + Duration::from_millis(29_001)), 30);
        assert_eq!(increment_secs(now, now), 1);
        assert_eq!(increment_secs(now, now - Duration::from_secs(5)), 1);
    }
}
