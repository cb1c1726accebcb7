//! The stand-in's endpoints: routing, token checks, and the database work Vault's PostgreSQL
//! plugin would do.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use serde_json::{Value, json};

use super::leases::{creds, renew_lease, revoke_lease};
use super::tokens::{login, lookup_self, renew_self, revoke_self};
use super::{Inner, Mode, Recorded, full, random};

/// An answer: status and optional JSON body.
#[derive(Debug)]
pub struct Reply(pub StatusCode, pub Option<Value>);

pub fn ok(body: Value) -> Reply {
    Reply(StatusCode::OK, Some(body))
}

pub fn error(status: StatusCode, message: &str) -> Reply {
    Reply(status, Some(json!({ "errors": [message] })))
}

pub fn denied() -> Reply {
    error(StatusCode::FORBIDDEN, "permission denied")
}

/// Vault's response envelope around `data` or `auth`.
pub fn envelope(
    lease_id: &str,
    lease_duration: u64,
    renewable: bool,
    data: Value,
    auth: Value,
) -> Value {
    json!({
        "request_id": random(8),
        "lease_id": lease_id,
        "lease_duration": lease_duration,
        "renewable": renewable,
        "data": data,
        "auth": auth,
        "wrap_info": null,
        "warnings": null,
    })
}

pub async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (namespace, token) = (header("x-vault-namespace"), header("x-vault-token"));
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = serde_json::from_slice::<Value>(&bytes);
    let mode = {
        let mut state = inner.lock();
        state.requests.push(Recorded {
            at: Instant::now(),
            method: method.to_string(),
            path: path.clone(),
            namespace,
            token_sent: token.is_some(),
            body: body.as_ref().cloned().unwrap_or(Value::Null),
        });
        state.mode.clone()
    };
    let Reply(status, json) = match (mode, body) {
        // Accepted and read, never answered: the client's own timeout must end the wait.
        (Mode::Hang, _) => std::future::pending().await,
        (Mode::Redirect(to), _) => return Ok(redirect(&to, &path)),
        // Vault answers every request this way while sealed, logins included.
        (Mode::Sealed, _) => error(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"),
        (Mode::RateLimited, _) => error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("request path {path:?}: rate limit quota exceeded"),
        ),
        (_, body) => match body {
            Err(_) if !bytes.is_empty() => {
                error(StatusCode::BAD_REQUEST, "failed to parse JSON input")
            }
            body => route(&inner, &method, &path, token, body.unwrap_or(Value::Null)).await,
        },
    };
    let mut response = Response::new(full(
        json.map(|j| j.to_string().into_bytes()).unwrap_or_default(),
    ));
    *response.status_mut() = status;
    if response.status() != StatusCode::NO_CONTENT {
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
    }
    Ok(response)
}

/// What a standby Vault with request forwarding off answers: 307 to the same path elsewhere.
fn redirect(to: &str, path: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(full(Vec::new()));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(location) = format!("{to}{path}").parse() {
        response.headers_mut().insert("location", location);
    }
    response
}

async fn route(
    inner: &Inner,
    method: &Method,
    path: &str,
    token: Option<String>,
    body: Value,
) -> Reply {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let write = *method == Method::POST || *method == Method::PUT;
    if let Some(mount) = rest
        .strip_prefix("auth/")
        .and_then(|r| r.strip_suffix("/login"))
    {
        return if write {
            login(inner, mount, &body)
        } else {
            error(StatusCode::METHOD_NOT_ALLOWED, "")
        };
    }
    let Some(token) = token.filter(|t| valid(inner, t)) else {
        return denied();
    };
    match rest {
        "auth/token/lookup-self" if *method == Method::GET => lookup_self(inner, &token),
        "auth/token/renew-self" if write => renew_self(inner, &token, &body),
        "auth/token/revoke-self" if write => revoke_self(inner, &token).await,
        "sys/leases/renew" if write => renew_lease(inner, &body).await,
        "sys/leases/revoke" if write => revoke_lease(inner, &body).await,
        _ => {
            if let Some((mount, role)) = rest
                .split_once("/creds/")
                .filter(|_| *method == Method::GET)
            {
                creds(inner, mount, role, &token).await
            } else if let Some((mount, role)) = rest
                .split_once("/static-creds/")
                .filter(|_| *method == Method::GET)
            {
                static_creds(inner, &format!("{mount}/{role}")).await
            } else if let Some((mount, role)) = rest.split_once("/rotate-role/").filter(|_| write) {
                match rotate_static(inner, &format!("{mount}/{role}")).await {
                    Ok(()) => Reply(StatusCode::NO_CONTENT, None),
                    Err(reply) => reply,
                }
            } else {
                Reply(StatusCode::NOT_FOUND, Some(json!({ "errors": [] })))
            }
        }
    }
}

fn valid(inner: &Inner, token: &str) -> bool {
    let state = inner.lock();
    state
        .tokens
        .get(token)
        .is_some_and(|t| t.expires.is_none_or(|e| Instant::now() < e))
}

/// Vault accepts an increment as seconds or as a duration string such as "30s".
pub fn increment(body: &Value) -> Option<u64> {
    match body.get("increment")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.strip_suffix('s').unwrap_or(s).parse().ok(),
        _ => None,
    }
}

async fn static_creds(inner: &Inner, key: &str) -> Reply {
    let overdue = match inner.lock().static_roles.get(key) {
        None => return error(StatusCode::NOT_FOUND, &format!("unknown role: {key}")),
        Some(r) => r.rotated_at.elapsed() >= r.rotation_period,
    };
    if overdue {
        if let Err(reply) = rotate_static(inner, key).await {
            return reply;
        }
    }
    let state = inner.lock();
    let Some(r) = state.static_roles.get(key) else {
        return denied();
    };
    let ttl = r.rotation_period.saturating_sub(r.rotated_at.elapsed());
    let data = json!({
        "username": r.username,
        "password": r.password,
        "last_vault_rotation": r.last_rotation,
        "rotation_period": r.rotation_period.as_secs(),
        "ttl": ttl.as_secs(),
    });
    ok(envelope("", 0, false, data, Value::Null))
}

/// A new password for a static role, set in PostgreSQL before Vault (here) hands it out.
pub async fn rotate_static(inner: &Inner, key: &str) -> Result<(), Reply> {
    let username = match inner.lock().static_roles.get(key) {
        None => {
            return Err(error(
                StatusCode::NOT_FOUND,
                &format!("unknown role: {key}"),
            ));
        }
        Some(r) => r.username.clone(),
    };
    let password = format!("A1a-{}", random(20));
    let sql = format!(
        "ALTER ROLE {} PASSWORD {}",
        escape_identifier(&username),
        escape_literal(&password)
    );
    if let Err(e) = inner.admin.batch_execute(&sql).await {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("rotate: {e}"),
        ));
    }
    if let Some(r) = inner.lock().static_roles.get_mut(key) {
        r.password = password;
        r.rotated_at = Instant::now();
        r.last_rotation = rfc3339(SystemTime::now());
    }
    Ok(())
}

/// RFC 3339 in UTC with microseconds, as Vault writes `last_vault_rotation`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Days since the epoch to a civil date (the proleptic Gregorian calendar).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}
