//! The Vault token the source authenticates with: obtained by the configured auth method,
//! renewed with `renew-self` before it runs out, and replaced by a fresh login (AppRole,
//! Kubernetes) when renewal fails or Vault's max TTL is near.
//!
//! # Design
//!
//! At two thirds of the token's TTL it is renewed, asking for the TTL it was created with. When
//! Vault grants less than asked, the token has reached its max TTL and the next refresh is a
//! login instead. A given token (`method = "token"`) read from a file "logs in" by reading the
//! file again, since Vault Agent's token sink rewrites it after its own login; given literally
//! or by environment variable it cannot be replaced: it is renewed while Vault allows, then
//! used until it expires, with one warning when that gets close. A refresh that fails keeps
//! the current token (it may still work) and is retried a few seconds later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::sync::{Mutex, Notify};
use tracing::{info, warn};

use super::auth::{AuthMethod, Obtained, login, lookup_self};
use super::client::{VaultClient, parsed};
use super::response::{TokenGrant, auth_grant};
use crate::config::VaultAuth;
use crate::credentials::SourceError;
use crate::secret::Secret;

/// After a failed refresh, the current token is used for this long before trying again, so a
/// Vault outage does not turn every request into two.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// The token in use and what is known about its lease.
struct Held {
    token: Secret,
    /// Names the token in audit lines; never grants anything.
    accessor: Option<String>,
    /// When the current TTL started (the request that granted it was sent).
    since: Instant,
    /// `None` for a token that never expires (a root token).
    ttl: Option<Duration>,
    renewable: bool,
    /// The TTL asked for at each renewal: the one the token was created with.
    increment: Duration,
    /// The last renewal granted less than asked: Vault's max TTL is near.
    at_max: bool,
    /// The "expires soon and cannot be renewed" warning was logged.
    warned: bool,
    /// After a failed refresh: the next attempt waits until then.
    retry_at: Option<Instant>,
}

impl From<Obtained> for Held {
    fn from(o: Obtained) -> Held {
        Held::new(o.token, &o.grant, o.since)
    }
}

impl Held {
    fn new(token: Secret, grant: &TokenGrant, since: Instant) -> Held {
        let ttl = (grant.ttl > 0).then(|| Duration::from_secs(grant.ttl));
        Held {
            token,
            accessor: grant.accessor.clone(),
            since,
            ttl,
            renewable: grant.renewable,
            increment: Duration::from_secs(grant.creation_ttl.unwrap_or(grant.ttl).max(1)),
            at_max: false,
            warned: false,
            retry_at: None,
        }
    }

    /// When the token next needs attention; `None` when nothing will ever be done.
    fn refresh_at(&self, can_login: bool) -> Option<Instant> {
        let ttl = self.ttl?;
        if self.warned && !can_login {
            return None;
        }
        let due = self.since + ttl * 2 / 3;
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }
}

/// What to do about the held token now.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Keep,
    Renew,
    Login,
    Warn,
}

fn plan(held: &Held, can_login: bool, now: Instant) -> Step {
    let (Some(ttl), Some(due)) = (held.ttl, held.refresh_at(can_login)) else {
        return Step::Keep;
    };
    if now < due {
        return Step::Keep;
    }
    if can_login && now >= held.since + ttl {
        return Step::Login;
    }
    if held.renewable && !held.at_max {
        Step::Renew
    } else if can_login {
        Step::Login
    } else {
        Step::Warn
    }
}

/// Owns the Vault token of one source.
pub struct TokenKeeper {
    method: AuthMethod,
    /// `None` until the first request. A tokio mutex, held across the login request on
    /// purpose: concurrent callers wait for one login instead of each starting their own.
    held: Mutex<Option<Held>>,
    /// Signalled whenever the held token changes, so the upkeep task re-plans at once (it may
    /// have looked before the first token existed). Its own `Arc`: the task keeps this, not
    /// the source.
    changed: Arc<Notify>,
}

impl TokenKeeper {
    /// A keeper for the configured auth method; nothing is sent until the first request.
    pub fn new(auth: &VaultAuth) -> TokenKeeper {
        TokenKeeper {
            method: AuthMethod::from_config(auth),
            held: Mutex::new(None),
            changed: Arc::default(),
        }
    }

    /// Notified whenever the held token changes (obtained, renewed, replaced).
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// True when a fresh token can be obtained by logging in or reading its file again (not
    /// for a token given literally or by environment variable).
    pub fn can_login(&self) -> bool {
        !matches!(self.method, AuthMethod::Token { file: None, .. })
    }

    /// A token fit for a request now: obtained on first use, renewed or replaced when due.
    pub async fn token(&self, client: &VaultClient) -> Result<Secret, SourceError> {
        let mut held = self.held.lock().await;
        let Some(h) = held.as_mut() else {
            let fresh = self.obtain(client).await?;
            let token = fresh.token.clone();
            *held = Some(fresh);
            self.changed.notify_one();
            return Ok(token);
        };
        let now = Instant::now();
        let step = plan(h, self.can_login(), now);
        match step {
            Step::Keep => {}
            Step::Warn => {
                warn!(
                    target: "pglease::audit",
                    event = "vault_token_expiring",
                    accessor = h.accessor.as_deref().unwrap_or(""),
                    expires_in = ?h.ttl.map(|t| (h.since + t).saturating_duration_since(now)),
                    "the vault token cannot be renewed and expires soon; give pglease a new one"
                );
                h.warned = true;
            }
            Step::Renew => match self.renew(client, h).await {
                Ok(()) => {}
                Err(e) if self.can_login() => {
                    warn!(error = %e, "vault token renewal failed; logging in again");
                    self.relogin(client, h, now).await;
                }
                Err(e) => {
                    warn!(error = %e, "vault token renewal failed; using it until it expires");
                    h.at_max = true;
                }
            },
            Step::Login => self.relogin(client, h, now).await,
        }
        if step != Step::Keep {
            self.changed.notify_one();
        }
        Ok(h.token.clone())
    }

    /// After `denied` was answered `403`: logs in again unless another request already did.
    /// Returns false when the method cannot log in (a given token), so the 403 stands.
    pub async fn replace_denied(
        &self,
        client: &VaultClient,
        denied: &Secret,
    ) -> Result<bool, SourceError> {
        if !self.can_login() {
            return Ok(false);
        }
        let mut held = self.held.lock().await;
        if held.as_ref().is_none_or(|h| h.token == *denied) {
            *held = Some(self.login(client).await?);
            self.changed.notify_one();
        }
        Ok(true)
    }

    /// When the held token next needs a renewal or login, for the background upkeep task.
    pub async fn refresh_at(&self) -> Option<Instant> {
        let held = self.held.lock().await;
        held.as_ref()?.refresh_at(self.can_login())
    }

    /// Replaces the held token by a fresh login; on failure keeps it and retries later.
    async fn relogin(&self, client: &VaultClient, held: &mut Held, now: Instant) {
        match self.login(client).await {
            Ok(fresh) => *held = fresh,
            Err(e) => {
                warn!(error = %e, "vault login failed; keeping the current token for now");
                held.retry_at = Some(now + REFRESH_RETRY);
            }
        }
    }

    async fn obtain(&self, client: &VaultClient) -> Result<Held, SourceError> {
        match &self.method {
            AuthMethod::Token { token, file: None } => {
                lookup_self(client, token).await.map(Held::from)
            }
            _ => self.login(client).await,
        }
    }

    async fn login(&self, client: &VaultClient) -> Result<Held, SourceError> {
        login(client, &self.method).await.map(Held::from)
    }

    async fn renew(&self, client: &VaultClient, held: &mut Held) -> Result<(), SourceError> {
        let path = "auth/token/renew-self";
        let asked = held.increment.as_secs();
        let body = json!({ "increment": format!("{asked}s") });
        let since = Instant::now();
        let reply = client
            .call(Method::POST, path, Some(body), Some(&held.token), &[])
            .await?;
        let grant = parsed(&Method::POST, path, reply, auth_grant)?;
        held.since = since;
        held.ttl = (grant.ttl > 0).then(|| Duration::from_secs(grant.ttl));
        held.renewable = grant.renewable;
        held.at_max = grant.ttl < asked;
        held.retry_at = None;
        info!(
            target: "pglease::audit",
            event = "vault_token_renewed",
            method = self.method.name(),
            accessor = held.accessor.as_deref().unwrap_or(""),
            ttl_secs = grant.ttl,
            at_max_ttl = held.at_max,
            "vault token renewed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ttl: u64, renewable: bool) -> (Held, Instant) {
        let grant = TokenGrant {
            token: None,
            accessor: None,
            ttl,
            creation_ttl: None,
            renewable,
        };
        let since = Instant::now();
        (Held::new(Secret::from("t"), &grant, since), since)
    }

    #[test]
    fn renews_at_two_thirds_while_vault_grants_the_full_ttl() {
        let (h, t0) = held(30, true);
        assert_eq!(h.increment, Duration::from_secs(30));
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(19)), Step::Keep);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(20)), Step::Renew);
        assert_eq!(plan(&h, false, t0 + Duration::from_secs(20)), Step::Renew);
        // Past expiry a login method does not bother renewing a dead token.
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(31)), Step::Login);
    }

    #[test]
    fn at_max_ttl_logs_in_or_warns_once() {
        let (mut h, t0) = held(30, true);
        h.at_max = true;
        let due = t0 + Duration::from_secs(21);
        assert_eq!(plan(&h, true, due), Step::Login);
        assert_eq!(plan(&h, false, due), Step::Warn);
        h.warned = true;
        assert_eq!(plan(&h, false, due), Step::Keep);
        assert_eq!(h.refresh_at(false), None);
        let (h, t0) = held(30, false);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(21)), Step::Login);
    }

    #[test]
    fn tokens_without_ttl_are_left_alone_and_failures_back_off() {
        let (h, t0) = held(0, false);
        assert_eq!(h.ttl, None);
        assert_eq!(
            plan(&h, true, t0 + Duration::from_secs(1_000_000)),
            Step::Keep
        );
        assert_eq!(h.refresh_at(true), None);

        let (mut h, t0) = held(30, true);
        h.retry_at = Some(t0 + Duration::from_secs(25));
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(22)), Step::Keep);
        assert_eq!(plan(&h, true, t0 + Duration::from_secs(25)), Step::Renew);
        assert_eq!(h.refresh_at(true), Some(t0 + Duration::from_secs(25)));
    }
}
