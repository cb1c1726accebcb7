//! What happens to an upstream whose client left: given back, rolled back, or closed.

use tracing::debug;

use super::{CLEANUP_TIMEOUT, Session};
use crate::config::PoolMode;
use crate::pool::{Checkout, CloseReason};
use crate::upstream::maintenance;

impl Session {
    /// Decides what happens to an upstream whose client left: returned as is when it is
    /// idle between transactions, rolled back and reset when a transaction was open, closed
    /// (after cancelling its query) when a request was still in flight. One client's state
    /// never reaches the next one.
    pub(super) async fn cleanup(&mut self, mut up: Checkout) {
        let b = &self.bufs;
        let mid_request = self.track.pending > 0
            || b.fscan.open_batch()
            || !b.bscan.at_boundary()
            || !b.nothing_to_send()
            || self.track.unsolicited;
        if mid_request || self.settings_unknown() {
            let target = up.upstream().cancel;
            up.discard(CloseReason::ClientVanished);
            tokio::spawn(async move {
                let _ = maintenance::cancel(target).await;
            });
            return;
        }
        // Settled before the cleanup statements too, which a late cancel would interrupt.
        if !self.login.cancel.slot.settle().await {
            up.discard(CloseReason::CancelUnsettled);
            return;
        }
        if let Some(tracked) = up.state_mut().statements.as_mut() {
            // The cleanup below reads its own replies; none of the filter's are owed any more.
            tracked.abandon_replies();
        }
        let mut statements: Vec<&str> = Vec::with_capacity(2);
        if self.track.status != b'I' {
            statements.push("ROLLBACK");
        }
        if self.entry().mode == PoolMode::Session {
            // Run on its own: DISCARD ALL refuses to run inside a multi-statement query.
            statements.push(&self.login.pool.reset_query);
        }
        for sql in statements {
            match maintenance::run_simple(up.upstream_mut(), sql, CLEANUP_TIMEOUT).await {
                Ok(b'I') => {}
                other => {
                    debug!(result = ?other.map(char::from), "upstream cleanup failed; closing it");
                    up.discard(CloseReason::CleanupFailed);
                    return;
                }
            }
        }
        if self.entry().mode == PoolMode::Session {
            self.after_reset(&mut up);
        }
        if let Some(tracked) = up.state_mut().statements.as_mut() {
            if self.entry().mode == PoolMode::Session {
                // The reset query (DISCARD ALL by default) may have dropped every statement.
                tracked.clear();
            }
        }
        if up.upstream().has_unsolicited_input() {
            up.discard(CloseReason::UnsolicitedInput);
        } else {
            self.release(up).await;
        }
    }
}
