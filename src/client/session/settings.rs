//! The session's two settings steps (see [`crate::client::settings`]): the client's settings
//! put on an upstream before it serves a request, and, in transaction mode, what a request
//! changed read back before the upstream goes back to its pool.

use bytes::BytesMut;
use tracing::{Instrument, debug, warn};

use super::Session;
use crate::client::ClientError;
use crate::config::PoolMode;
use crate::pool::{Checkout, CloseReason};
use crate::upstream::UpstreamError;

impl Session {
    /// Puts the client's settings on `up`. When PostgreSQL refuses them, the request is
    /// answered with PostgreSQL's error without running (never under other settings), the
    /// upstream is closed and `None` returned; the client stays connected.
    pub(super) async fn put_settings(
        &mut self,
        mut up: Checkout,
    ) -> Result<Option<Checkout>, ClientError> {
        let Err(e) = self.settings.apply(&mut up).await else {
            return Ok(Some(up));
        };
        // The rare path: boxed, and inside the client's log span (see `serve`).
        let span = self.span();
        Box::pin(self.settings_refused(up, e))
            .instrument(span)
            .await
    }

    /// The client's settings were refused on `up`: the request is answered with the error,
    /// `up` closed.
    async fn settings_refused(
        &mut self,
        up: Checkout,
        e: UpstreamError,
    ) -> Result<Option<Checkout>, ClientError> {
        warn!(error = %e, "putting a client's settings on an upstream failed; closing it");
        up.discard(CloseReason::SettingsFailed);
        let (code, message) = match e {
            UpstreamError::Refused { code, message } => (code, message),
            other => ("08006".to_owned(), format!("upstream unavailable: {other}")),
        };
        self.refuse_request(&code, &message).await?;
        Ok(None)
    }

    /// Gives `up` back to its pool at the end of a transaction-mode request, after reading
    /// what the request changed when it may have changed settings. An upstream whose settings
    /// could not be read is closed instead: they are not known, so nobody else may get them.
    pub(super) async fn learn_settings(&mut self, mut up: Checkout) {
        if !std::mem::take(&mut self.track.settings_changed) {
            return;
        }
        let mut status = BytesMut::new();
        if let Err(e) = self.settings.learn(&mut up, &mut status).await {
            debug!(error = %e, "a client's settings could not be read; closing its upstream");
            up.discard(CloseReason::SettingsUnknown);
        }
        before_ready_for_query(&mut self.bufs.u2c, &status);
    }

    /// Whether an upstream the client left may hold settings nobody knows: transaction mode
    /// after a request that may have changed them (a rollback does not undo a `SET` an
    /// earlier, committed part of the request made).
    pub(super) fn settings_unknown(&self) -> bool {
        self.entry().mode == PoolMode::Transaction && self.track.settings_changed
    }

    /// Session mode, after the reset query ran on an upstream the client left: what is set
    /// on it now.
    pub(super) fn after_reset(&self, up: &mut Checkout) {
        let query = self.entry().reset_query.to_ascii_uppercase();
        if query.contains("DISCARD ALL") || query.contains("RESET ALL") {
            up.state_mut().params.clear();
        }
    }
}

/// Puts `frames` in front of the ReadyForQuery that ends `u2c` when it is still there
/// unsent, else after everything (a ParameterStatus may come at any time).
fn before_ready_for_query(u2c: &mut BytesMut, frames: &[u8]) {
    if frames.is_empty() {
        return;
    }
    let len = u2c.len();
    if len >= 6 && u2c[len - 6..len - 1] == [b'Z', 0, 0, 0, 5] {
        let ready = u2c.split_off(len - 6);
        u2c.extend_from_slice(frames);
        u2c.unsplit(ready);
    } else {
        u2c.extend_from_slice(frames);
    }
}
