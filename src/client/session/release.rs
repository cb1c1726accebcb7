//! Handing an upstream back in transaction mode, after a last check when the client's requests
//! may have left session state on it that the lexer could not see (see
//! [`crate::client::statements::ClientStatements::take_state_check`]).

use tracing::{debug, info};

use super::{CLEANUP_TIMEOUT, Session};
use crate::pool::{Checkout, CloseReason};
use crate::upstream::leftover;

impl Session {
    /// Gives `up` back to its pool (through [`Session::learn_settings`]), or closes it when it
    /// holds session state its client left (or when asking failed). Requests that mention no
    /// such state cost nothing here.
    pub(super) async fn release(&mut self, mut up: Checkout) {
        if up.past_lifetime() {
            // Back between transactions (or its session over): the moment to retire it.
            debug!(
                pid = up.upstream().cancel.pid,
                "upstream reached server_lifetime"
            );
            return up.discard(CloseReason::Lifetime);
        }
        let check = self
            .statements
            .as_mut()
            .is_some_and(|statements| statements.take_state_check());
        if !check {
            return self.learn_settings(up).await;
        }
        match leftover::find(up.upstream_mut(), CLEANUP_TIMEOUT).await {
            Ok(None) => self.learn_settings(up).await,
            Ok(Some(what)) => {
                info!(
                    leftover = what.as_str(),
                    "a client left session state on its upstream; closing the upstream"
                );
                up.discard(CloseReason::SessionStateLeft);
            }
            Err(e) => {
                debug!(error = %e, "checking an upstream for session state failed; closing it");
                up.discard(CloseReason::SessionStateLeft);
            }
        }
    }
}
