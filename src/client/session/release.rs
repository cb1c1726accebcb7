//! Handing an upstream back in transaction mode, after a last check when the client's requests
//! may have left session state on it that the lexer could not see (see
//! [`crate::client::statements::ClientStatements::take_state_check`]).

use tracing::{debug, info};

use super::{CLEANUP_TIMEOUT, Session};
use crate::pool::{Checkout, CloseReason};
use crate::upstream::leftover;

impl Session {
    /// Gives `up` back to its pool at once when nothing must be checked or read first (the
    /// usual end of a transaction, with no allocation and no await); otherwise returns it,
    /// with whether its session state must be checked, for [`Session::finish_release`].
    pub(super) fn release_now(&mut self, up: Checkout) -> Option<(Checkout, bool)> {
        let check = self
            .statements
            .as_mut()
            .is_some_and(|statements| statements.take_state_check());
        // Past its lifetime as of its checkout (a stamp, not a clock read): a connection
        // that outlived it during this transaction is retired before its next handout
        // instead (the pool's recycle).
        if check || self.track.settings_changed || up.past_lifetime_at(up.checked_out_at()) {
            return Some((up, check));
        }
        drop(up);
        None
    }

    /// Gives `up` back to its pool (through [`Session::learn_settings`]), or closes it when it
    /// holds session state its client left (or when asking failed). Requests that mention no
    /// such state cost nothing here.
    pub(super) async fn release(&mut self, up: Checkout) {
        if let Some((up, check)) = self.release_now(up) {
            self.finish_release(up, check).await;
        }
    }

    /// The rest of [`Session::release`] when [`Session::release_now`] could not give `up`
    /// back at once.
    pub(super) async fn finish_release(&mut self, mut up: Checkout, check: bool) {
        if up.past_lifetime() {
            // Back between transactions (or its session over): the moment to retire it.
            debug!(
                pid = up.upstream().cancel.pid,
                "upstream reached server_lifetime"
            );
            return up.discard(CloseReason::Lifetime);
        }
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
