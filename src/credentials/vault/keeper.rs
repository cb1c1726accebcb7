//! The Vault tokens of one source: the current one, obtained by the configured auth method,
//! renewed with `renew-self` and replaced by a fresh login (AppRole, Kubernetes, a token file
//! read again) when renewal fails or Vault's max TTL is reached; and the replaced ones that
//! still own leases in use, kept alive until those leases are revoked and then revoked
//! themselves (`revoke-self`).
//!
//! # Design
//!
//! ```text
//!  acquire:  lease_ticket ─► creds/ with that token ─► adopt(lease): renew the token to reach
//!            the lease's expiry if needed; a token that cannot is the lease's cap
//!  renew:    sys/leases/renew ─► extend(lease): the same, for the new expiry
//!  revoke:   sys/leases/revoke ─► forget(lease): a replaced token left with none is revoked
//!  upkeep:   the current token at two thirds of its TTL (renew, or log in when its end is
//!            fixed); replaced ones renewed while their leases need it
//! ```
//!
//! A token given literally or by environment variable cannot be replaced: it is renewed while
//! Vault allows, then used until it expires, with one warning when that gets close. Tokens read
//! from a file belong to whoever writes the file (Vault Agent), so they are never revoked here;
//! tokens pglease logged in for are. A refresh that fails keeps the token (it may still work)
//! and is retried a few seconds later.

use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::sync::{Mutex, Notify};
use tracing::warn;

use super::auth::{AuthMethod, login, lookup_self};
use super::client::{VaultClient, parsed};
use super::response::auth_grant;
use super::token::{Held, RetiredStep, Step, Ticket, plan, plan_retired};

mod custody;
use crate::config::VaultAuth;
use crate::credentials::SourceError;
use crate::credentials::audit;
use crate::secret::Secret;

/// After a failed refresh, the current token is used for this long before trying again, so a
/// Vault outage does not turn every request into two.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// Every token the source holds.
#[derive(Default)]
struct Tokens {
    /// `None` until the first request.
    current: Option<Held>,
    /// Replaced by a fresh login, kept while leases created with them are in use.
    retired: Vec<Held>,
    /// How long Vault's last lease was to live: a current token with a fixed end nearer than
    /// that is replaced before the next lease, so the lease need not be cut short.
    last_lease: Option<Duration>,
}

impl Tokens {
    fn owner_of(&mut self, lease_id: &str) -> Option<&mut Held> {
        self.current
            .iter_mut()
            .chain(self.retired.iter_mut())
            .find(|h| h.leases.contains_key(lease_id))
    }

    fn holder_of(&mut self, token: &Secret) -> Option<&mut Held> {
        self.current
            .iter_mut()
            .chain(self.retired.iter_mut())
            .find(|h| h.token == *token)
    }
}

/// Owns the Vault tokens of one source.
pub struct TokenKeeper {
    method: AuthMethod,
    /// A tokio mutex, held across login and renewal requests on purpose: concurrent callers
    /// wait for one login instead of each starting their own.
    tokens: Mutex<Tokens>,
    /// Signalled whenever a token changes, so the upkeep task re-plans at once (it may have
    /// looked before the first token existed). Its own `Arc`: the task keeps this, not the
    /// source.
    changed: Arc<Notify>,
}

impl TokenKeeper {
    /// A keeper for the configured auth method; nothing is sent until the first request.
    pub fn new(auth: &VaultAuth) -> TokenKeeper {
        TokenKeeper {
            method: AuthMethod::from_config(auth),
            tokens: Mutex::default(),
            changed: Arc::default(),
        }
    }

    /// The end of the source: every token pglease logged in for is revoked (given ones stay
    /// their owner's). Called once every lease is revoked.
    pub async fn close(&self, client: &VaultClient) {
        let mut tokens = self.tokens.lock().await;
        let all: Vec<Held> = tokens
            .current
            .take()
            .into_iter()
            .chain(mem::take(&mut tokens.retired))
            .collect();
        for held in all {
            self.release(client, held).await;
        }
        self.changed.notify_waiters();
    }

    /// Notified whenever a token changes (obtained, renewed, replaced, revoked).
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// True when a fresh token can be obtained by logging in or reading its file again (not
    /// for a token given literally or by environment variable).
    pub fn can_login(&self) -> bool {
        !matches!(self.method, AuthMethod::Token { file: None, .. })
    }

    /// Tokens pglease logged in for are its own to revoke; a given one belongs to whoever
    /// gave it (Vault Agent reuses its token for everything else it does).
    fn owns_tokens(&self) -> bool {
        !matches!(self.method, AuthMethod::Token { .. })
    }

    /// A token fit for a request now: obtained on first use, renewed or replaced when due.
    pub async fn token(&self, client: &VaultClient) -> Result<Ticket, SourceError> {
        let mut tokens = self.tokens.lock().await;
        self.refresh_current(client, &mut tokens).await?;
        Self::ticket(&tokens)
    }

    /// Like [`TokenKeeper::token`], for a request that creates a lease: a current token whose
    /// end is fixed and too near for a lease like the last one is replaced first.
    pub async fn lease_ticket(&self, client: &VaultClient) -> Result<Ticket, SourceError> {
        let mut tokens = self.tokens.lock().await;
        self.refresh_current(client, &mut tokens).await?;
        let now = Instant::now();
        let too_short = match (&tokens.current, tokens.last_lease) {
            (Some(h), Some(lease)) => h.end_is_fixed() && h.end().is_some_and(|e| e < now + lease),
            _ => false,
        };
        if too_short && self.can_login() {
            self.relogin(client, &mut tokens, now).await;
        }
        if let Some(end) = tokens.current.as_ref().and_then(Held::capping_end) {
            // Another lease would end with the token like the one already made with it: it
            // gains nothing, and asking again at once would loop. The rotator backs off.
            let left = end.saturating_duration_since(now).as_secs();
            let why = format!(
                "the vault token ends in {left}s, as does every lease made with it; \
                 a new lease needs a new token"
            );
            return Err(if self.can_login() {
                SourceError::Unreachable(format!("{why} (logging in again failed)"))
            } else {
                SourceError::Rejected(format!("{why}: give pglease one"))
            });
        }
        Self::ticket(&tokens)
    }

    fn ticket(tokens: &Tokens) -> Result<Ticket, SourceError> {
        match &tokens.current {
            Some(h) => Ok(h.ticket()),
            None => Err(SourceError::Unreachable("no vault token yet".into())),
        }
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
        let mut tokens = self.tokens.lock().await;
        if tokens.current.as_ref().is_none_or(|h| h.token == *denied) {
            let fresh = self.login(client).await?;
            // Vault refused the old token: it is gone, and its leases with it.
            if let Some(old) = tokens.current.replace(fresh) {
                if !old.leases.is_empty() {
                    warn!(
                        accessor = old.accessor(),
                        leases = old.leases.len(),
                        "vault refused a token that leases in use were created with"
                    );
                }
            }
            self.changed.notify_one();
        }
        Ok(true)
    }

    /// When any token next needs a renewal, login or revocation, for the upkeep task.
    pub async fn refresh_at(&self) -> Option<Instant> {
        let tokens = self.tokens.lock().await;
        let current = tokens
            .current
            .as_ref()
            .and_then(|h| h.refresh_at(self.can_login()));
        let now = Instant::now();
        let retired = tokens
            .retired
            .iter()
            .filter_map(|h| match plan_retired(h, now) {
                // Its next renewal, or when a lease or the token itself ends.
                RetiredStep::Keep => {
                    let renew = h.refresh_at(true).filter(|_| !h.end_is_fixed());
                    let lease_end = h.leases.values().min().copied();
                    [renew, lease_end, h.end()].into_iter().flatten().min()
                }
                _ => Some(now),
            });
        current.into_iter().chain(retired).min()
    }

    /// What the upkeep task does when woken: every token that is due gets its step.
    pub async fn tend(&self, client: &VaultClient) -> Result<(), SourceError> {
        let mut tokens = self.tokens.lock().await;
        self.tend_retired(client, &mut tokens).await;
        self.refresh_current(client, &mut tokens).await
    }

    async fn refresh_current(
        &self,
        client: &VaultClient,
        tokens: &mut Tokens,
    ) -> Result<(), SourceError> {
        let Some(h) = tokens.current.as_mut() else {
            tokens.current = Some(self.obtain(client).await?);
            self.changed.notify_one();
            return Ok(());
        };
        let now = Instant::now();
        let step = plan(h, self.can_login(), now);
        match step {
            Step::Keep => {}
            Step::Warn => {
                audit::record!(
                    WARN,
                    event = "vault_token_expiring",
                    accessor = h.accessor(),
                    expires_in = ?h.end().map(|e| e.saturating_duration_since(now)),
                    "the vault token cannot be renewed and expires soon; give pglease a new one"
                );
                h.warned = true;
            }
            Step::Renew => match self.renew(client, h).await {
                Ok(()) => {}
                Err(e) if self.can_login() => {
                    warn!(error = %e, "vault token renewal failed; logging in again");
                    self.relogin(client, tokens, now).await;
                }
                Err(e) => {
                    warn!(error = %e, "vault token renewal failed; using it until it expires");
                    h.at_max = true;
                }
            },
            Step::Login => self.relogin(client, tokens, now).await,
        }
        if step != Step::Keep {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Replaces the current token by a fresh login; on failure keeps it and retries later.
    /// The old token is kept while leases created with it are in use.
    async fn relogin(&self, client: &VaultClient, tokens: &mut Tokens, now: Instant) {
        let mut fresh = match self.login(client).await {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(error = %e, "vault login failed; keeping the current token for now");
                if let Some(h) = tokens.current.as_mut() {
                    h.retry_at = Some(now + REFRESH_RETRY);
                }
                return;
            }
        };
        let Some(mut old) = tokens.current.take() else {
            tokens.current = Some(fresh);
            return;
        };
        if old.token == fresh.token {
            // A token file not rewritten yet: the same token, looked up afresh. What Vault
            // said about its max TTL still holds, and its leases are still its own.
            fresh.leases = mem::take(&mut old.leases);
            fresh.in_flight = old.in_flight.clone();
            fresh.at_max |= old.at_max;
        } else if old.has_leases() {
            tokens.retired.push(old);
        } else {
            self.release(client, old).await;
        }
        tokens.current = Some(fresh);
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

    /// `renew-self`, asking for enough to outlive every lease made with the token.
    async fn renew(&self, client: &VaultClient, held: &mut Held) -> Result<(), SourceError> {
        let path = "auth/token/renew-self";
        let since = Instant::now();
        let asked = held.increment_at(since).as_secs();
        let body = json!({ "increment": format!("{asked}s") });
        let reply = client
            .call(Method::POST, path, Some(body), Some(&held.token), &[])
            .await?;
        let grant = parsed(&Method::POST, path, reply, auth_grant)?;
        held.since = since;
        held.ttl = (grant.ttl > 0).then(|| Duration::from_secs(grant.ttl));
        held.renewable = grant.renewable;
        held.at_max = grant.ttl < asked;
        held.retry_at = None;
        audit::record!(
            INFO,
            event = "vault_token_renewed",
            method = self.method.name(),
            accessor = held.accessor(),
            asked_secs = asked,
            ttl_secs = grant.ttl,
            at_max_ttl = held.at_max,
            leases = held.leases.len(),
            "vault token renewed"
        );
        Ok(())
    }
}
