//! The `vault` source: upstream credentials from the database secrets engine of HashiCorp
//! Vault or OpenBao.
//!
//! Written against the Vault 1.15 HTTP API; OpenBao 2.x serves the same endpoints with the
//! same shapes. Endpoints used (all under `/v1/`):
//!
//! | what | request |
//! | --- | --- |
//! | dynamic credentials | `GET {mount}/creds/{role}` |
//! | static credentials | `GET {mount}/static-creds/{role}` |
//! | renew / revoke a lease | `PUT sys/leases/renew` `{lease_id, increment}`, `PUT sys/leases/revoke` `{lease_id}` |
//! | a given token | `GET auth/token/lookup-self`, `POST auth/token/renew-self` `{increment}` |
//! | a replaced token | `POST auth/token/revoke-self` |
//! | AppRole login | `POST auth/{mount}/login` `{role_id, secret_id}` |
//! | Kubernetes login | `POST auth/{mount}/login` `{role, jwt}` |
//!
//! # Design
//!
//! ```text
//!  kind = "dynamic": acquire = creds/ (a new role per lease, Vault's lease id is the lease id)
//!                    renew   = sys/leases/renew (Vault caps at the role's max_ttl)
//!                    revoke  = sys/leases/revoke (Vault drops the role)
//!  kind = "static":  acquire = static-creds/ (one role, no expiry, revoke does nothing)
//!                    changed = re-read after Vault's rotation and every 10 s
//!  token upkeep:     checked before every request, and by a background task that wakes at
//!                    two thirds of the token's TTL, so an idle source never lets it lapse
//!  token and leases: a dynamic lease dies with the token that created it, so that token is
//!                    renewed to outlive it, or the lease's expiry is capped at the token's
//!                    end; replaced tokens live while their leases do, then are revoked
//! ```
//!
//! Every request carries `X-Vault-Token` (and `X-Vault-Namespace` when configured). A `403`
//! on a request gets one fresh login and one retry when the auth method can log in. Vault's
//! answers map onto [`SourceError`]: transport failures, 5xx and 429 are `Unreachable` (the
//! rotator retries with backoff), other statuses (redirects included: they are never
//! followed) and unusable answers are `Rejected`. Errors
//! quote the request line, the status and Vault's error strings, never a token, password,
//! secret_id, JWT or response data.

mod auth;
mod client;
mod dynamic;
mod keeper;
mod response;
mod static_role;
mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::Notify;
use tracing::warn;

use self::client::VaultClient;
use self::keeper::TokenKeeper;
use self::static_role::RotationClock;
use self::token::Ticket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::source::SourceFuture;
use super::{Lease, Source, SourceError};
use crate::config::{VaultConfig, VaultKind};

pub use self::static_role::POLL_INTERVAL as STATIC_POLL_INTERVAL;
pub use crate::config::plaintext_remote_host;

/// The longest the token upkeep task sleeps before looking again; also how long it outlives
/// its source at most.
const UPKEEP_IDLE: Duration = Duration::from_secs(30);

/// Leases from Vault's database secrets engine (`source = "vault"`).
pub struct VaultSource {
    shared: Arc<Shared>,
    kind: VaultKind,
    /// When static-creds last said Vault's next rotation is due.
    clock: RotationClock,
    /// Set once the token upkeep task runs; it is started by the first call, inside the
    /// runtime, so building a source needs none.
    upkeep_started: AtomicBool,
    /// Where the upkeep task runs and what stops it; without them (a source built alone) it
    /// is a free task that ends once the source is dropped.
    upkeep: Option<(TaskTracker, CancellationToken)>,
}

/// What the source's requests need, shared with the token upkeep task.
struct Shared {
    client: VaultClient,
    keeper: TokenKeeper,
    /// Secrets engine mount, without surrounding slashes.
    mount: String,
    role: String,
}

impl Shared {
    /// One authenticated request. A `403` gets one fresh login and one retry, when the auth
    /// method can log in; otherwise it stands.
    async fn authed(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, SourceError> {
        Ok(self.authed_as(method, path, body, false).await?.0)
    }

    /// [`Shared::authed`], also returning the ticket of the token the answer came with. For a
    /// request that creates a lease (`creating`), the token is fit to create one.
    async fn authed_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        creating: bool,
    ) -> Result<(Option<Value>, Ticket), SourceError> {
        let ticket = self.ticket(creating).await?;
        let first = self
            .client
            .call(method.clone(), path, body.clone(), Some(&ticket.token), &[])
            .await;
        match first {
            Err(e) if e.is_permission_denied() => {
                if !self
                    .keeper
                    .replace_denied(&self.client, &ticket.token)
                    .await?
                {
                    return Err(e.into());
                }
                let ticket = self.ticket(creating).await?;
                let reply = self
                    .client
                    .call(method, path, body, Some(&ticket.token), &[])
                    .await?;
                Ok((reply, ticket))
            }
            other => Ok((other?, ticket)),
        }
    }

    async fn ticket(&self, creating: bool) -> Result<Ticket, SourceError> {
        if creating {
            self.keeper.lease_ticket(&self.client).await
        } else {
            self.keeper.token(&self.client).await
        }
    }
}

impl VaultSource {
    /// Builds the HTTP client (reading `ca_file`); contacts Vault only on the first call.
    pub fn from_config(config: &VaultConfig) -> Result<VaultSource, SourceError> {
        Ok(VaultSource {
            shared: Arc::new(Shared {
                client: VaultClient::new(config)?,
                keeper: TokenKeeper::new(&config.auth),
                mount: config.mount.trim_matches('/').to_owned(),
                role: config.role.clone(),
            }),
            kind: config.kind,
            clock: RotationClock::default(),
            upkeep_started: AtomicBool::new(false),
            upkeep: None,
        })
    }

    /// Runs the token upkeep task on `tasks` until `stop`, so a shutdown can wait for it.
    pub fn with_upkeep_on(mut self, tasks: &TaskTracker, stop: &CancellationToken) -> Self {
        self.upkeep = Some((tasks.clone(), stop.clone()));
        self
    }

    fn start_upkeep(&self) {
        if !self.upkeep_started.swap(true, Ordering::AcqRel) {
            let changes = self.shared.keeper.changes();
            let shared = Arc::downgrade(&self.shared);
            match &self.upkeep {
                Some((tasks, stop)) => {
                    let stop = stop.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            () = keep_token(shared, changes) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
                None => {
                    tokio::spawn(keep_token(shared, changes));
                }
            }
        }
    }
}

impl Source for VaultSource {
    fn kind(&self) -> &'static str {
        "vault"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        self.start_upkeep();
        Box::pin(async move {
            match self.kind {
                VaultKind::Dynamic => dynamic::acquire(&self.shared).await,
                VaultKind::Static => static_role::acquire(&self.shared, &self.clock).await,
            }
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease, until: SystemTime) -> SourceFuture<'a, SystemTime> {
        Box::pin(async move {
            match self.kind {
                VaultKind::Dynamic => dynamic::renew(&self.shared, lease, until).await,
                VaultKind::Static => Err(SourceError::Unsupported("renew a static role")),
            }
        })
    }

    fn revoke<'a>(&'a self, lease: &'a Lease) -> SourceFuture<'a, ()> {
        Box::pin(async move {
            match self.kind {
                VaultKind::Dynamic => dynamic::revoke(&self.shared, lease).await,
                // The account is Vault's to keep; sessions on the old password may stay.
                VaultKind::Static => Ok(()),
            }
        })
    }

    fn close(&self) -> SourceFuture<'_, ()> {
        Box::pin(async move {
            self.shared.keeper.close(&self.shared.client).await;
            Ok(())
        })
    }

    fn changed<'a>(&'a self, current: &'a Lease) -> SourceFuture<'a, ()> {
        Box::pin(async move {
            match self.kind {
                VaultKind::Dynamic => std::future::pending().await,
                VaultKind::Static => {
                    static_role::changed(&self.shared, &self.clock, current).await;
                    Ok(())
                }
            }
        })
    }
}

/// Renews or replaces the tokens when due even while no lease request is made, so the source
/// never finds its token expired and no lease loses the token it was created with. Ends once
/// the source is dropped.
async fn keep_token(shared: Weak<Shared>, changes: Arc<Notify>) {
    loop {
        let due = match shared.upgrade() {
            Some(s) => s.keeper.refresh_at().await,
            None => return,
        };
        let wait = due.map_or(UPKEEP_IDLE, |d| {
            d.saturating_duration_since(Instant::now()).min(UPKEEP_IDLE)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // A new token: plan again from its TTL.
            () = changes.notified() => continue,
        }
        let Some(s) = shared.upgrade() else { return };
        if let Err(error) = s.keeper.tend(&s.client).await {
            warn!(%error, "vault token upkeep failed; retrying");
        }
    }
}
