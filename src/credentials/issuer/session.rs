//! The issuer's admin connection: opened lazily, opened again on the next call after it
//! drops, and on every new session first taking the instance's liveness lock (see
//! [`super::liveness`]), so the other replicas know this instance is alive.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{debug, warn};

use super::{IssuerSource, SourceError, liveness, map_error};

/// Longest wait for the admin connection before the source counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The open admin connection and whether its session holds the instance's advisory lock.
pub(super) struct AdminSession {
    client: Arc<Client>,
    locked: bool,
}

impl IssuerSource {
    /// The open admin connection, or a new one holding the instance's advisory lock.
    pub(super) async fn client(&self) -> Result<Arc<Client>, SourceError> {
        let mut slot = self.admin_session.lock().await;
        if let Some(session) = slot.as_mut().filter(|s| !s.client.is_closed()) {
            if !session.locked {
                session.locked = self.lock(&session.client).await?;
            }
            return Ok(Arc::clone(&session.client));
        }
        let connect = self.admin.config.connect(self.admin.tls.clone());
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(map_error(&e, &[])),
            Err(_) => {
                return Err(SourceError::Unreachable(
                    "admin connection timed out".into(),
                ));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "issuer admin connection ended");
            }
        });
        let client = Arc::new(client);
        let locked = self.lock(&client).await?;
        *slot = Some(AdminSession {
            client: Arc::clone(&client),
            locked,
        });
        Ok(client)
    }

    /// Takes the instance's liveness lock on `client`'s session. Not getting it is no error:
    /// an earlier session of ours may linger half-open, and until it goes others think us
    /// alive anyway; the next call tries again.
    async fn lock(&self, client: &Client) -> Result<bool, SourceError> {
        let locked = liveness::take_lock(client, self.instance).await?;
        if !locked {
            warn!(
                instance = %self.instance,
                "another session holds this issuer instance's advisory lock; will retry"
            );
        }
        Ok(locked)
    }

    /// Runs `sql` as one simple-query batch (one implicit transaction). `secrets` are scrubbed
    /// from any error text.
    pub(super) async fn execute(&self, sql: &str, secrets: &[&str]) -> Result<(), SourceError> {
        let client = self.client().await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| map_error(&e, secrets))
    }
}
