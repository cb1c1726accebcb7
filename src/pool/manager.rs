//! How a pool opens an upstream and decides whether an idle one may be reused.

use std::sync::Mutex;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use crate::credentials::Credentials;
use crate::upstream::{self, ServerParams, Upstream, UpstreamError, UpstreamTarget};

/// deadpool's hooks for upstream connections.
pub struct Manager {
    target: UpstreamTarget,
    credentials: Credentials,
    idle_timeout: Duration,
    /// Login parameters of the most recent upstream, to greet clients without a checkout.
    params: Mutex<Option<ServerParams>>,
}

impl Manager {
    pub(super) fn new(
        target: UpstreamTarget,
        credentials: Credentials,
        idle_timeout: Duration,
    ) -> Self {
        Manager {
            target,
            credentials,
            idle_timeout,
            params: Mutex::new(None),
        }
    }

    pub(super) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub(super) fn cached_params(&self) -> Option<ServerParams> {
        self.params.lock().ok().and_then(|p| p.clone())
    }
}

impl managed::Manager for Manager {
    type Type = Upstream;
    type Error = UpstreamError;

    async fn create(&self) -> Result<Upstream, UpstreamError> {
        // Right after start the first lease may still be on its way: wait for it as long as a
        // connect may take, rather than failing the first clients.
        let lease = match self.credentials.current() {
            Some(lease) => lease,
            None => self
                .credentials
                .wait_current(self.target.connect_timeout)
                .await
                .ok_or_else(|| UpstreamError::NoLease(self.credentials.name().to_owned()))?,
        };
        let up = upstream::connect(&self.target, lease).await?;
        if let Ok(mut p) = self.params.lock() {
            *p = Some(up.params.clone());
        }
        Ok(up)
    }

    async fn recycle(&self, up: &mut Upstream, metrics: &Metrics) -> RecycleResult<UpstreamError> {
        if up.broken {
            return Err(RecycleError::message("broken"));
        }
        if metrics.last_used() > self.idle_timeout {
            return Err(RecycleError::message("idle timeout"));
        }
        if up.generation() < self.credentials.generation() {
            // A newer lease is published: this connection's lease is retiring. Closing it
            // here, when it comes back from a transaction, is how busy connections drain.
            return Err(RecycleError::message("lease retired"));
        }
        if up.has_unsolicited_input() {
            return Err(RecycleError::message("unsolicited input while idle"));
        }
        Ok(())
    }
}
