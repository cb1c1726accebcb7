//! Moving a session-mode client's checkout onto the newest lease (DESIGN §5.3): which
//! connection it moves to, and what happens to the one it leaves.
//!
//! # Design
//!
//! The session's state is read off its connection and recreated on a replacement the pool
//! already logged in ahead of need ([`crate::upstream::migrate`]); only once that worked does
//! the replacement go into the session's slot ([`Checkout::swap`]), so the client never waits
//! for a login and the slot never leaves the session. Only in the last
//! [`MOVE_BEFORE_DEADLINE`] before the old lease's hard deadline, with no replacement ready,
//! does the session give up its slot and check out a connection of its own. A session holding
//! state that cannot move, or that the new lease refuses to recreate, stays where it is.

use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tracing::{info, warn};

use super::{Checkout, CheckoutError, CloseReason, MOVE_BEFORE_DEADLINE, Pool, Replacement};
use crate::upstream::UpstreamError;
use crate::upstream::migrate::{self, HandOverError, SessionState};

/// What became of a session asked to move to the newest lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// It is on the newest lease (moved now, or already there).
    Moved,
    /// It holds state that cannot move (the reason); it stays until the next rotation or
    /// the deadline.
    Pinned(String),
    /// No replacement was ready (another session took it); it waits for the next one.
    NotYet,
}

/// Why a session lost its upstream while moving; its client must end.
#[derive(Debug, Error)]
pub enum MoveError {
    /// Reading the session's state off its upstream failed.
    #[error("upstream connection lost")]
    Capture(#[source] UpstreamError),
    /// No connection of its own could be checked out near the deadline.
    #[error("could not move the session to a new credential lease: {0}")]
    Checkout(#[source] CheckoutError),
    /// Its state could not be recreated on the connection it checked out.
    #[error("could not move the session to a new credential lease")]
    Replay(#[source] UpstreamError),
}

impl Pool {
    /// Moves the idle session on `old` to the newest lease, if a replacement is ready for it
    /// or its lease's deadline is near. `max_message_size` bounds what the capture reads;
    /// `timeout` bounds each exchange. Notifications for a session that LISTENs, read off
    /// either upstream during the move, are appended to `forward` for its client, each once.
    pub async fn move_session(
        &self,
        mut old: Checkout,
        max_message_size: usize,
        timeout: Duration,
        forward: &mut BytesMut,
    ) -> Result<(Checkout, Move), MoveError> {
        if old.generation() >= self.credentials().generation() {
            return Ok((old, Move::Moved));
        }
        let replacement = self.take_replacement();
        let near_deadline = || {
            self.credentials()
                .near_deadline(old.generation(), MOVE_BEFORE_DEADLINE)
        };
        if replacement.is_none() && !near_deadline() {
            return Ok((old, Move::NotYet));
        }
        let mut state = match migrate::capture(old.upstream_mut(), max_message_size, timeout).await
        {
            Ok(state) => state,
            Err(e) => {
                warn!(error = %e, "reading session state for a move failed");
                self.give_back(replacement);
                old.discard(CloseReason::Broken);
                return Err(MoveError::Capture(e));
            }
        };
        forward.extend_from_slice(&std::mem::take(&mut state.notifications));
        if !state.pinned_by.is_empty() {
            info!(pinned_by = %state.pin_reasons(), generation = old.generation(), "session stays on its retiring lease");
            self.give_back(replacement);
            return Ok((old, Move::Pinned(state.pin_reasons())));
        }
        let from = old.generation();
        let new = match replacement {
            Some(mut replacement) => {
                let replayed = migrate::replay(replacement.upstream_mut(), &state, timeout).await;
                if let Err(e) = replayed {
                    // The replacement holds part of the state now: it is closed, never kept.
                    replacement.discard(CloseReason::MoveFailed);
                    return Ok((old, not_recreated(&e, from)));
                }
                if !state.listens.is_empty() {
                    let (from_up, to_up) = (old.upstream_mut(), replacement.upstream_mut());
                    match migrate::hand_over(from_up, to_up, timeout, forward).await {
                        Ok(()) => {}
                        Err(HandOverError::New(e)) => {
                            warn!(error = %e, "handing notifications over to a replacement failed");
                            replacement.discard(CloseReason::MoveFailed);
                            return Ok((old, Move::NotYet));
                        }
                        Err(HandOverError::Old(e)) => {
                            warn!(error = %e, "the session's upstream failed during a move");
                            replacement.discard(CloseReason::MoveFailed);
                            old.discard(CloseReason::Broken);
                            return Err(MoveError::Capture(e));
                        }
                    }
                }
                // The old connection closes here, which lets its lease drain.
                old.swap(replacement);
                old
            }
            None => self.move_on_own_login(old, &state, timeout).await?,
        };
        info!(
            from,
            to = new.generation(),
            settings = state.settings.len(),
            prepared = state.prepared.len(),
            listens = state.listens.len(),
            "session moved to a new lease"
        );
        Ok((new, Move::Moved))
    }

    /// The last resort near the deadline, with no replacement ready: the session's own login.
    async fn move_on_own_login(
        &self,
        old: Checkout,
        state: &SessionState,
        timeout: Duration,
    ) -> Result<Checkout, MoveError> {
        // Free the old slot first: a full session-mode pool has no other room.
        old.discard(CloseReason::LeaseRetired);
        let mut new = self.checkout().await.map_err(MoveError::Checkout)?;
        if let Err(e) = migrate::replay(new.upstream_mut(), state, timeout).await {
            warn!(error = %e, "replaying session state failed");
            new.discard(CloseReason::MoveFailed);
            return Err(MoveError::Replay(e));
        }
        Ok(new)
    }

    fn give_back(&self, replacement: Option<Replacement>) {
        if let Some(replacement) = replacement {
            self.return_replacement(replacement);
        }
    }
}

/// What a session becomes when its state could not be recreated on a replacement, while its
/// old upstream is still intact: PostgreSQL refusing part of it (a role the new lease is not a
/// member of, a statement on something it cannot see) pins the session; a replacement that
/// failed otherwise is only a bad replacement, so the next one is tried.
fn not_recreated(e: &UpstreamError, generation: u64) -> Move {
    if let UpstreamError::Refused { code, .. } = e {
        warn!(error = %e, code = %code, generation, "the new lease refused the session's state; it stays on its retiring lease");
        Move::Pinned(format!("state the new lease refused: {e}"))
    } else {
        warn!(error = %e, generation, "recreating session state on a replacement failed");
        Move::NotYet
    }
}
