//! What a session does when one of its timeouts ([`crate::client::timers`]) is reached: a
//! running request is cancelled on its upstream, an idle client is ended with PostgreSQL's
//! own error for the same limit.

use tracing::{info, warn};

use super::Session;
use crate::client::ClientError;
use crate::client::timers::Expired;
use crate::pool::{Checkout, CloseReason};

/// PostgreSQL's `idle_session_timeout` error, for `client_idle_timeout`.
pub(super) const IDLE_SESSION: (&str, &str) = (
    "57P05",
    "terminating connection due to idle-session timeout",
);

/// PostgreSQL's `idle_in_transaction_session_timeout` error, for `idle_transaction_timeout`.
const IDLE_IN_TRANSACTION: (&str, &str) = (
    "25P03",
    "terminating connection due to idle-in-transaction timeout",
);

impl Session {
    /// `query_timeout`: cancels the running request the way a client's own CancelRequest
    /// would (through the cancel registry, so the release waits for it to settle); the relay
    /// goes on, and the client gets PostgreSQL's cancellation error for its request.
    pub(super) fn cancel_for_timeout(&mut self, up: &Checkout) {
        info!(
            pid = up.upstream().cancel.pid,
            "query_timeout reached; cancelling the request upstream"
        );
        // The relay cleared the slot on its way out; the cancel must find this upstream.
        self.login.cancel.slot.set(Some(up.upstream().cancel));
        let cancels = self.shared.cancels.clone();
        let (pid, secret) = (self.login.cancel.pid, self.login.cancel.secret);
        tokio::spawn(async move { cancels.cancel(pid, secret).await });
        if let Some(timers) = self.timers.as_mut() {
            timers.cancel_sent();
        }
    }

    /// Ends the client for an idle limit (its upstream rolled back, reset and given back,
    /// or closed, as for any client that leaves) or for a cancelled request that did not end
    /// (its upstream closed). Returns the error the client was sent.
    pub(super) async fn end_timed_out(&mut self, up: Checkout, expired: Expired) -> ClientError {
        let _ = self.flush_client().await;
        let (code, message) = match expired {
            Expired::IdleSession => IDLE_SESSION,
            Expired::IdleInTransaction => IDLE_IN_TRANSACTION,
            Expired::Query | Expired::CancelIgnored => {
                warn!(
                    pid = up.upstream().cancel.pid,
                    "a request cancelled for query_timeout did not end; closing its upstream"
                );
                up.discard(CloseReason::QueryTimeout);
                let e = ClientError::refused(
                    "57014",
                    "terminating connection: the request ran past query_timeout and its \
                     upstream did not answer the cancel request",
                );
                return self.fatal(e).await;
            }
        };
        info!(code, "ending an idle client");
        let e = self.fatal(ClientError::refused(code, message)).await;
        self.cleanup(up).await;
        e
    }
}
