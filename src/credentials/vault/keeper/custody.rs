//! The leases each token created: tying a new lease to its token, keeping the token alive
//! long enough (or saying where it ends first), and letting go of a replaced token once none
//! of its leases is in use.

use std::mem;
use std::time::{Instant, SystemTime};

use reqwest::Method;
use tracing::{debug, warn};

use super::{REFRESH_RETRY, TokenKeeper, Tokens};
use crate::credentials::audit;
use crate::credentials::vault::client::VaultClient;
use crate::credentials::vault::token::{Held, RetiredStep, Ticket, plan_retired};

impl TokenKeeper {
    /// Ties the lease `lease_id`, created with `ticket`'s token and expiring at `expires` per
    /// Vault, to that token. Returns when the lease really ends: `expires`, or the token's end
    /// if the token cannot be made to last that long.
    pub async fn adopt(
        &self,
        client: &VaultClient,
        ticket: Ticket,
        lease_id: &str,
        expires: SystemTime,
    ) -> SystemTime {
        let mut tokens = self.tokens.lock().await;
        let now = Instant::now();
        let until = instant_of(expires, now);
        tokens.last_lease = Some(until.saturating_duration_since(now));
        let Some(held) = tokens.holder_of(&ticket.token) else {
            // Dropped since (a 403 on it): whatever it made is Vault's to expire.
            debug!(lease_id, "the token that created a lease is no longer held");
            return expires;
        };
        held.leases.insert(lease_id.to_owned(), until);
        drop(ticket);
        let end = self.cover(client, held, until).await;
        system_time_of(end, expires)
    }

    /// Notes that `lease_id` was renewed to `expires`; returns when it really ends (as
    /// [`TokenKeeper::adopt`]).
    pub async fn extend(
        &self,
        client: &VaultClient,
        lease_id: &str,
        expires: SystemTime,
    ) -> SystemTime {
        let mut tokens = self.tokens.lock().await;
        let until = instant_of(expires, Instant::now());
        let Some(held) = tokens.owner_of(lease_id) else {
            return expires;
        };
        held.leases.insert(lease_id.to_owned(), until);
        let end = self.cover(client, held, until).await;
        system_time_of(end, expires)
    }

    /// The lease is revoked (or given up on): its token need not outlive it any more. A
    /// replaced token left with no lease is revoked now.
    pub async fn forget(&self, client: &VaultClient, lease_id: &str) {
        let mut tokens = self.tokens.lock().await;
        if let Some(held) = tokens.owner_of(lease_id) {
            held.leases.remove(lease_id);
        }
        self.tend_retired(client, &mut tokens).await;
        self.changed.notify_one();
    }

    /// Makes `held` last until `until` if Vault allows; returns its end when that falls
    /// earlier (the lease's cap), `None` when it lasts long enough.
    async fn cover(
        &self,
        client: &VaultClient,
        held: &mut Held,
        until: Instant,
    ) -> Option<Instant> {
        let end = held.end()?;
        if end >= until {
            return None;
        }
        if !held.end_is_fixed() {
            if let Err(e) = self.renew(client, held).await {
                warn!(
                    error = %e,
                    accessor = held.accessor(),
                    "vault token renewal for a new lease failed; the lease ends with the token"
                );
            }
        }
        held.end().filter(|e| *e < until)
    }

    /// Renews replaced tokens whose leases need them and lets go of the ones nothing needs.
    pub(super) async fn tend_retired(&self, client: &VaultClient, tokens: &mut Tokens) {
        let now = Instant::now();
        for mut held in mem::take(&mut tokens.retired) {
            // Leases past their end are gone in Vault whatever happens to the token.
            held.leases.retain(|_, end| *end > now);
            match plan_retired(&held, now) {
                RetiredStep::Keep => tokens.retired.push(held),
                RetiredStep::Renew => {
                    if let Err(e) = self.renew(client, &mut held).await {
                        warn!(error = %e, accessor = held.accessor(), "renewing a replaced vault token failed");
                        held.retry_at = Some(now + REFRESH_RETRY);
                    }
                    tokens.retired.push(held);
                }
                RetiredStep::Release => self.release(client, held).await,
            }
        }
    }

    /// Revokes a token nothing needs any more, when it is pglease's own and still alive.
    pub(super) async fn release(&self, client: &VaultClient, held: Held) {
        let alive = held.end().is_none_or(|e| Instant::now() < e);
        if !self.owns_tokens() || !alive {
            return;
        }
        let path = "auth/token/revoke-self";
        match client
            .call(Method::POST, path, None, Some(&held.token), &[])
            .await
        {
            Ok(_) => audit::record!(
                INFO,
                event = "vault_token_revoked",
                method = self.method.name(),
                accessor = held.accessor(),
                "replaced vault token revoked: no lease created with it is in use"
            ),
            // It expires by itself; nothing pglease needs depends on it.
            Err(e) => {
                warn!(error = %e, accessor = held.accessor(), "revoking a replaced vault token failed")
            }
        }
    }
}

/// `t` on the monotonic clock, as seen at `now`.
fn instant_of(t: SystemTime, now: Instant) -> Instant {
    now + t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// `expires`, or `cap` on the wall clock when there is one.
fn system_time_of(cap: Option<Instant>, expires: SystemTime) -> SystemTime {
    match cap {
        Some(end) => {
            let end = SystemTime::now() + end.saturating_duration_since(Instant::now());
            end.min(expires)
        }
        None => expires,
    }
}
