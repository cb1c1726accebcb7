//! Dynamic database roles: every lease is a new PostgreSQL role that Vault creates, renews
//! (moving its `VALID UNTIL`) and drops when the lease is revoked, or when the token that
//! created it expires or is revoked. So each lease is handed to the token keeper, which keeps
//! that token alive as long as the lease, or says when the token ends first: the lease's
//! `expires_at` is then the token's end, and the rotator moves on before it.

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
    let (reply, ticket) = shared.authed_as(Method::GET, &path, None, true).await?;
    let creds = parsed(&Method::GET, &path, reply, dynamic_creds)?;
    // A lease Vault sets no duration for still dies with its token: count on it no longer
    // than the token has been granted so far.
    let vault_expiry = match creds.lease_duration {
        0 => far_future(issued_at),
        secs => issued_at + Duration::from_secs(secs),
    };
    let expires_at = shared
        .keeper
        .adopt(&shared.client, ticket, &creds.lease_id, vault_expiry)
        .await;
    Ok(Lease {
        id: creds.lease_id,
        username: creds.username,
        password: creds.password,
        issued_at,
        expires_at: (creds.lease_duration > 0 || expires_at < vault_expiry).then_some(expires_at),
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
    let expires = sent + Duration::from_secs(granted);
    Ok(shared
        .keeper
        .extend(&shared.client, &lease.id, expires)
        .await)
}

/// `PUT /v1/sys/leases/revoke`: Vault runs the role's revocation statements (drops the role).
pub async fn revoke(shared: &Shared, lease: &Lease) -> Result<(), SourceError> {
    let body = json!({"lease_id": lease.id});
    let revoked = shared
        .authed(Method::PUT, "sys/leases/revoke", Some(body))
        .await;
    // Revoked or not, pglease is done with it: its token need not outlive it, and a lease
    // Vault would not revoke now goes when that token does.
    shared.keeper.forget(&shared.client, &lease.id).await;
    revoked.map(drop)
}

/// Stands in for "no expiry" when tying such a lease to its token: far enough never to be
/// reached, near enough that adding it to a clock cannot overflow.
fn far_future(from: SystemTime) -> SystemTime {
    from + Duration::from_secs(100 * 365 * 24 * 3600)
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
