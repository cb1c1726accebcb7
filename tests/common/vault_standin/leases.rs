//! The stand-in's dynamic leases: each one a real PostgreSQL role that is created, renewed
//! (its `VALID UNTIL` moved, never past the role's max_ttl) and dropped on revocation, its
//! sessions terminated first as the usual revocation statements do. Each lease remembers the
//! token that created it: when that token goes, so does the lease (see `tokens`).

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use serde_json::{Value, json};

use super::endpoints::{Reply, envelope, error, increment, ok, rfc3339};
use super::{Ended, Inner, LeaseRecord, Renewal, random};

pub async fn creds(inner: &Inner, mount: &str, role: &str, token: &str) -> Reply {
    let (member_of, ttl, max_ttl) = {
        let state = inner.lock();
        let Some(r) = state.dynamic_roles.get(&format!("{mount}/{role}")) else {
            return error(StatusCode::NOT_FOUND, &format!("unknown role: {role}"));
        };
        (r.member_of.clone(), r.default_ttl, r.max_ttl)
    };
    let accessor = inner.lock().tokens.get(token).map(|t| t.accessor.clone());
    let name = format!("v-token-{role}-{}", random(12).to_lowercase());
    let password = format!("A1a-{}", random(20));
    let issued = SystemTime::now();
    let expires = issued + ttl;
    let sql = format!(
        "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {} IN ROLE {}",
        escape_identifier(&name),
        escape_literal(&password),
        escape_literal(&rfc3339(expires)),
        escape_identifier(&member_of)
    );
    if let Err(e) = inner.admin.batch_execute(&sql).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("create role: {e}"),
        );
    }
    let lease_id = format!("{mount}/creds/{role}/{}", random(24));
    let record = LeaseRecord {
        role: name.clone(),
        issued,
        expires,
        max_until: issued + max_ttl,
        revoked: false,
        token_accessor: accessor,
        ended_by: None,
    };
    inner.lock().leases.insert(lease_id.clone(), record);
    let data = json!({ "username": name, "password": password });
    ok(envelope(&lease_id, ttl.as_secs(), true, data, Value::Null))
}

pub async fn renew_lease(inner: &Inner, body: &Value) -> Reply {
    let lease_id = body
        .get("lease_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let asked = increment(body).unwrap_or(0);
    let now = SystemTime::now();
    let (role, expires) = {
        let state = inner.lock();
        let lease = state
            .leases
            .get(&lease_id)
            .filter(|l| l.ended_by.is_none() && l.expires > now);
        let Some(lease) = lease.filter(|_| !state.refuse_renewals) else {
            return error(
                StatusCode::BAD_REQUEST,
                "lease not found or lease is not renewable",
            );
        };
        (
            lease.role.clone(),
            (now + Duration::from_secs(asked)).min(lease.max_until),
        )
    };
    let sql = format!(
        "ALTER ROLE {} VALID UNTIL {}",
        escape_identifier(&role),
        escape_literal(&rfc3339(expires))
    );
    if let Err(e) = inner.admin.batch_execute(&sql).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("renew: {e}"));
    }
    let granted = expires.duration_since(now).unwrap_or_default().as_secs();
    let mut state = inner.lock();
    if let Some(lease) = state.leases.get_mut(&lease_id) {
        lease.expires = expires;
    }
    state.renewals.push(Renewal {
        lease_id: lease_id.clone(),
        increment: asked,
        granted,
    });
    ok(
        json!({ "request_id": random(8), "lease_id": lease_id, "renewable": true, "lease_duration": granted }),
    )
}

pub async fn revoke_lease(inner: &Inner, body: &Value) -> Reply {
    let lease_id = body.get("lease_id").and_then(Value::as_str).unwrap_or("");
    // Like Vault, revoking an unknown or already revoked lease succeeds.
    match end_lease(inner, lease_id, Ended::Revoked).await {
        Ok(()) => Reply(StatusCode::NO_CONTENT, None),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("revoke: {e}")),
    }
}

/// Terminates the lease's sessions and drops its role, recording why; the first cause to
/// start ending a lease is the one kept.
pub async fn end_lease(inner: &Inner, lease_id: &str, cause: Ended) -> Result<(), String> {
    let role = match inner.lock().leases.get_mut(lease_id) {
        Some(l) if !l.revoked => {
            l.ended_by.get_or_insert(cause);
            l.role.clone()
        }
        _ => return Ok(()),
    };
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1";
    let _ = inner.admin.execute(kill, &[&role]).await;
    let drop = format!("DROP ROLE IF EXISTS {}", escape_identifier(&role));
    // A terminated session may still be cleaning up its temporary objects.
    let mut tries = 0;
    while let Err(e) = inner.admin.batch_execute(&drop).await {
        tries += 1;
        if tries >= 20 {
            return Err(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(lease) = inner.lock().leases.get_mut(lease_id) {
        lease.revoked = true;
    }
    Ok(())
}
