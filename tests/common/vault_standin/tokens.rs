//! The stand-in's tokens: login, lookup-self, renew-self and revoke-self, and Vault's rule that
//! a token's leases die with it. Vault's expiration manager revokes a token when its TTL runs
//! out, and revoking a token (expired, `revoke-self`, `vault token revoke`) revokes every lease
//! created with it; the reaper here does the same, dropping each lease's role for real.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use super::endpoints::{Reply, denied, envelope, error, increment, ok};
use super::leases::end_lease;
use super::{Ended, Inner};

/// How often the reaper looks for expired tokens. Vault's timers are exact; a tenth of a
/// second late is well inside every test's margins.
const REAP_EVERY: Duration = Duration::from_millis(100);

fn auth_block(token: &str, accessor: &str, ttl: Duration, renewable: bool) -> Value {
    json!({
        "client_token": token,
        "accessor": accessor,
        "policies": ["default", "pglease"],
        "token_policies": ["default", "pglease"],
        "metadata": null,
        "lease_duration": ttl.as_secs(),
        "renewable": renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
    })
}

pub fn login(inner: &Inner, mount: &str, body: &Value) -> Reply {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut state = inner.lock();
    let spec = if let Some(app) = state.approles.get(mount) {
        if field("role_id") != app.role_id || field("secret_id") != app.secret_id {
            return error(StatusCode::BAD_REQUEST, "invalid role or secret ID");
        }
        app.spec
    } else if let Some(kube) = state.kube_roles.get(mount) {
        if field("role") != kube.role || field("jwt") != kube.jwt {
            return error(StatusCode::FORBIDDEN, "permission denied");
        }
        kube.spec
    } else {
        return error(StatusCode::BAD_REQUEST, "no handler for route");
    };
    let (token, accessor) = state.issue_token(spec);
    let auth = auth_block(&token, &accessor, spec.ttl, spec.renewable);
    ok(envelope("", 0, false, Value::Null, auth))
}

pub fn lookup_self(inner: &Inner, token: &str) -> Reply {
    let state = inner.lock();
    let Some(t) = state.tokens.get(token) else {
        return denied();
    };
    let ttl = t
        .expires
        .map_or(0, |e| e.saturating_duration_since(Instant::now()).as_secs());
    let data = json!({
        "accessor": t.accessor,
        "creation_ttl": t.spec.ttl.as_secs(),
        "display_name": "token",
        "explicit_max_ttl": t.spec.max_ttl.as_secs(),
        "id": token,
        "policies": ["default", "pglease"],
        "renewable": t.spec.renewable,
        "ttl": ttl,
        "type": "service",
    });
    ok(envelope("", 0, false, data, Value::Null))
}

pub fn renew_self(inner: &Inner, token: &str, body: &Value) -> Reply {
    let mut state = inner.lock();
    let Some(t) = state.tokens.get_mut(token) else {
        return denied();
    };
    if !t.spec.renewable {
        return error(StatusCode::BAD_REQUEST, "lease is not renewable");
    }
    let now = Instant::now();
    let asked = increment(body).map_or(t.spec.ttl, Duration::from_secs);
    let expires = t
        .max_expires
        .map_or(now + asked, |max| (now + asked).min(max));
    t.expires = Some(expires);
    let granted = expires.saturating_duration_since(now);
    let auth = auth_block(token, &t.accessor, granted, true);
    ok(envelope("", 0, false, Value::Null, auth))
}

/// `POST auth/token/revoke-self`: the token and every lease created with it; 204 like Vault.
pub async fn revoke_self(inner: &Inner, token: &str) -> Reply {
    revoke_token(inner, token, Ended::TokenRevoked).await;
    Reply(StatusCode::NO_CONTENT, None)
}

/// Forgets `token` and revokes the leases it created, with `cause` recorded on each.
pub async fn revoke_token(inner: &Inner, token: &str, cause: Ended) {
    let Some(gone) = inner.lock().tokens.remove(token) else {
        return;
    };
    let leases: Vec<String> = {
        let state = inner.lock();
        state
            .leases
            .iter()
            .filter(|(_, l)| !l.revoked && l.token_accessor.as_deref() == Some(&gone.accessor))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for id in leases {
        // A failed drop is retried by nothing here; the test that caused it sees the role.
        let _ = end_lease(inner, &id, cause).await;
    }
}

/// Revokes tokens whose TTL has run out, with their leases, until the stand-in stops.
pub async fn reap(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<String> = inner
            .lock()
            .tokens
            .iter()
            .filter(|(_, t)| t.expires.is_some_and(|e| e <= now))
            .map(|(token, _)| token.clone())
            .collect();
        for token in expired {
            revoke_token(&inner, &token, Ended::TokenExpired).await;
        }
    }
}
