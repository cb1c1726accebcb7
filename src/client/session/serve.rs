//! Serving one buffered request: checked out, relayed, given back.
//!
//! # Design
//!
//! This is the per-transaction path, and it is kept small and quiet. Its future is boxed per
//! request (so an idle client's task holds none of it), which costs one allocation and a copy
//! of the future, so every rarely taken branch (a relay that ends any other way than at an
//! idle ReadyForQuery, session mode, settings refused, a cancel still in flight, a checkout
//! refused) is a boxed future of its own, allocated only when taken. The client's log span is
//! made and entered only on those rare branches, never per transaction (a pool's own lines,
//! such as an upstream login failing during a checkout, name the pool's database and
//! credentials instead). Bookkeeping is done when it changes: the registry
//! hears "waiting" only when the checkout does not complete at once, and the clock is read
//! here only when it waits (the pool's own checkout stamp serves otherwise).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{CLEANUP_TIMEOUT, SHUTTING_DOWN, Session};
use crate::client::ClientError;
use crate::client::relay::RelayEnd;
use crate::client::stop::ClientState;
use crate::client::timers::Expired;
use crate::config::PoolMode;
use crate::credentials::EndReason;
use crate::pool::{Checkout, CloseReason, Move};

/// `$f` boxed (a rare path, allocated only when taken) and run inside the client's log span.
macro_rules! traced {
    ($session:ident, $f:expr) => {{
        let span = $session.span();
        Box::pin($f).instrument(span)
    }};
}

/// How a relay run that did not end at an idle point was dealt with.
enum Ended {
    /// The session goes on relaying on this upstream.
    Relay(Checkout),
    /// The request is over: the upstream to give back, or `None` when the client is gone.
    Done(Result<Option<Checkout>, ClientError>),
}

impl Session {
    /// Serves the buffered request: answered here, or on a checked-out upstream. False when
    /// the client left while it was served.
    pub(super) async fn serve_request(&mut self) -> Result<bool, ClientError> {
        if self.may_answer_listen() && traced!(self, self.answer_listen()).await? {
            return Ok(true);
        }
        if self.answer_without_upstream().await? {
            return Ok(true);
        }
        self.follow_reload();
        let Some(up) = self.check_out().await? else {
            return Ok(true);
        };
        let Some(up) = self.put_settings(up).await? else {
            self.registration.set_state(ClientState::Idle);
            return Ok(true);
        };
        self.request_ready = false;
        if let Some(timers) = self.timers.as_mut() {
            timers.reset();
        }
        let served = if self.entry().mode == PoolMode::Session {
            traced!(self, self.serve_session(up)).await?
        } else {
            self.serve_transaction(up).await?
        };
        let Some(up) = served else {
            return Ok(false);
        };
        if std::mem::take(&mut self.track.unsolicited) {
            self.span()
                .in_scope(|| up.discard(CloseReason::UnsolicitedInput));
        } else if !self.login.cancel.slot.settled_now() {
            traced!(self, self.settle_and_release(up)).await;
        } else if let Some((up, check)) = self.release_now(up) {
            traced!(self, self.finish_release(up, check)).await;
        }
        self.registration.set_state(ClientState::Idle);
        self.flush_client().await?;
        self.deliver_notifications().await?;
        Ok(true)
    }

    /// Checks out an upstream for the buffered request, with the client counted as waiting
    /// only if one is not free at once. `None` when there is none to have (the client was
    /// told why and stays connected).
    async fn check_out(&mut self) -> Result<Option<Checkout>, ClientError> {
        // Read only once the checkout has to wait: one that completes at its first poll
        // waited no time worth a clock read.
        let mut asked = None;
        let got = {
            let (pool, stop) = (&self.login.pool.pool, self.registration.stop());
            let registration = &self.registration;
            let mut checkout = pin!(pool.checkout());
            poll_fn(|cx| {
                if stop.is_killed() {
                    return Poll::Ready(None);
                }
                let polled = checkout.as_mut().poll(cx);
                if let Poll::Ready(got) = polled {
                    return Poll::Ready(Some(got));
                }
                if stop.poll_killed(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if asked.is_none() {
                    asked = Some(Instant::now());
                    registration.set_state(ClientState::Waiting);
                }
                Poll::Pending
            })
            .await
        };
        let Some(got) = got else {
            return Err(traced!(self, self.killed()).await);
        };
        // The pool stamped the checkout as it completed: that is when the wait ended and the
        // request starts upstream, with no clock read of our own.
        let now = match &got {
            Ok(up) => up.checked_out_at(),
            Err(_) => Instant::now(),
        };
        let waited = asked.map_or(Duration::ZERO, |asked| now.saturating_duration_since(asked));
        self.waited(waited, now);
        match got {
            Ok(up) => {
                self.registration.set_state(ClientState::Active);
                Ok(Some(up))
            }
            Err(e) => {
                self.registration.set_state(ClientState::Idle);
                traced!(self, self.fail_request(&e)).await?;
                Ok(None)
            }
        }
    }

    /// Transaction mode: relays on `up` until the transaction ends (`Some(up)` to give back)
    /// or the client is gone (`None`).
    async fn serve_transaction(
        &mut self,
        mut up: Checkout,
    ) -> Result<Option<Checkout>, ClientError> {
        loop {
            self.login.cancel.slot.set(Some(up.upstream().cancel));
            let end = self.relay(&mut up, true, None).await;
            self.login.cancel.slot.set(None);
            if let RelayEnd::Idle = end {
                return Ok(Some(up));
            }
            match traced!(self, self.relay_ended(up, end, false)).await {
                Ended::Relay(next) => up = next,
                Ended::Done(done) => return done,
            }
        }
    }

    /// Session mode: relays on `up`, and on the upstreams the session moves to when its
    /// lease is superseded, until the client is gone or the upstream may go back.
    async fn serve_session(&mut self, mut up: Checkout) -> Result<Option<Checkout>, ClientError> {
        let pool = self.entry().pool.clone();
        // The newest generation this session already looked at, so a pinned session is
        // re-examined at the next rotation, not in a loop.
        let mut examined = up.generation();
        loop {
            self.login.cancel.slot.set(Some(up.upstream().cancel));
            let old = up.upstream().lease.clone();
            let entry = self.registration.entry();
            let watched = pool.clone();
            // Stops at the next idle point to move to a new lease, or to leave at shutdown.
            let mut due = pin!(async move {
                tokio::select! {
                    () = async {
                        watched.credentials().wait_newer_than(examined).await;
                        watched.move_due(&old).await;
                    } => {}
                    () = entry.stop.stopped() => {}
                }
            });
            let end = self.relay(&mut up, false, Some(due.as_mut())).await;
            self.login.cancel.slot.set(None);
            match end {
                RelayEnd::Idle => return Ok(Some(up)),
                RelayEnd::Rotated if !self.registration.stop().is_stopped() => {
                    let current = pool.credentials().generation();
                    let moved = self.move_session(up).await?;
                    up = moved.0;
                    match moved.1 {
                        Move::Moved => examined = up.generation(),
                        Move::Pinned(_) => examined = current,
                        Move::NotYet => {}
                    }
                }
                end => match self.relay_ended(up, end, true).await {
                    Ended::Relay(next) => up = next,
                    Ended::Done(done) => return done,
                },
            }
        }
    }

    /// Session mode: moves the session off `up` to an upstream on the newest lease (or
    /// learns why it stays), with the notifications read meanwhile delivered first.
    async fn move_session(&mut self, up: Checkout) -> Result<(Checkout, Move), ClientError> {
        let pool = &self.login.pool.pool;
        let max = self.shared.max_message_size;
        let forward = &mut self.bufs.u2c;
        let (mut up, moved) = match pool.move_session(up, max, CLEANUP_TIMEOUT, forward).await {
            Ok(next) => next,
            Err(e) => {
                let _ = self.flush_client().await;
                let e = ClientError::refused("08006", e.to_string());
                return Err(self.fatal(e).await);
            }
        };
        // Notifications the move read off either upstream, before any later one.
        if let Err(e) = self.flush_client().await {
            self.cleanup(up).await;
            return Err(e);
        }
        match &moved {
            Move::Moved => {
                // The move recreated the session's settings on the new upstream.
                self.settings.moved_onto(&mut up);
                self.pinned_by = None;
            }
            Move::Pinned(reason) => self.pinned_by = Some(reason.as_str().into()),
            Move::NotYet => {}
        }
        Ok((up, moved))
    }

    /// Deals with a relay run on `up` that ended other than at an idle point (`session`:
    /// the session holds `up` across transactions).
    async fn relay_ended(&mut self, up: Checkout, end: RelayEnd, session: bool) -> Ended {
        match end {
            RelayEnd::TimedOut(Expired::Query) => {
                self.cancel_for_timeout(&up);
                Ended::Relay(up)
            }
            end => Ended::Done(self.end_request(up, end, session).await),
        }
    }

    /// The relay run on `up` ended for good (anything but an idle point, a rotation the
    /// session follows, or a query timeout): the upstream is cleaned up or closed and the
    /// client ended, or told why. `Ok(None)` when the client left on its own.
    async fn end_request(
        &mut self,
        up: Checkout,
        end: RelayEnd,
        session: bool,
    ) -> Result<Option<Checkout>, ClientError> {
        let lost = match end {
            RelayEnd::Idle => return Ok(Some(up)),
            RelayEnd::Rotated => {
                // Only a shutdown stops a session this way without a move following it.
                self.cleanup(up).await;
                let _ = self.flush_client().await;
                return Err(self
                    .fatal(ClientError::refused("57P01", SHUTTING_DOWN))
                    .await);
            }
            RelayEnd::LeaseEnded => return Err(self.lease_ended(up, session).await),
            RelayEnd::TimedOut(expired) => return Err(self.end_timed_out(up, expired).await),
            RelayEnd::ClientClosed => {
                self.cleanup(up).await;
                return Ok(None);
            }
            RelayEnd::Killed => {
                // Cleaned up as if the client had vanished: what it was doing is dropped.
                self.cleanup(up).await;
                let _ = self.flush_client().await;
                return Err(self.killed().await);
            }
            RelayEnd::ClientIo(e) => {
                self.cleanup(up).await;
                return Err(e.into());
            }
            RelayEnd::ClientProtocol(e) => {
                self.cleanup(up).await;
                return Err(self.fatal(ClientError::from(e)).await);
            }
            RelayEnd::UpstreamMismatch(e) => {
                tracing::warn!(error = %e, "upstream replies do not fit the requests sent; closing it");
                up.discard(CloseReason::ReplyMismatch);
                "upstream connection closed: its replies did not match the request"
            }
            RelayEnd::UpstreamClosed | RelayEnd::UpstreamIo(_) | RelayEnd::UpstreamProtocol(_) => {
                tracing::warn!(reason = ?end, "upstream connection lost while serving a client");
                up.discard(CloseReason::UpstreamLost);
                // The client's transaction (if any) is gone with the upstream; it must not
                // carry on as if nothing happened.
                "upstream connection lost"
            }
        };
        let _ = self.flush_client().await;
        Err(self.fatal(ClientError::refused("08006", lost)).await)
    }

    /// Ends the client whose upstream's lease reached its hard deadline (or whose shutdown
    /// ran out of time) with an open transaction or, in session mode, unmovable state.
    async fn lease_ended(&mut self, up: Checkout, session: bool) -> ClientError {
        let reason = up.deadline().reason();
        tracing::warn!(
            generation = up.generation(),
            mode = ?self.entry().mode,
            ?reason,
            "ending a client whose upstream lease ended"
        );
        let shutdown = reason == Some(EndReason::Shutdown);
        up.discard(if shutdown {
            CloseReason::Shutdown
        } else {
            CloseReason::Deadline
        });
        let _ = self.flush_client().await;
        let why = if shutdown {
            "terminating connection: pglease is shutting down and shutdown_timeout has passed; \
             an open transaction was not committed"
                .to_owned()
        } else if let (true, Some(pinned_by)) = (session, &self.pinned_by) {
            format!(
                "terminating connection: its upstream credential lease reached its hard \
                 deadline and the session holds state that cannot move to a new lease \
                 ({pinned_by})"
            )
        } else {
            "terminating connection: its upstream credential lease reached its hard deadline \
             while a transaction was still open; the transaction was not committed"
                .to_owned()
        };
        self.fatal(ClientError::refused("57P01", why)).await
    }

    /// Gives `up` back once no cancel this client sent can reach it any more, or closes it.
    async fn settle_and_release(&mut self, up: Checkout) {
        if self.login.cancel.slot.settle().await {
            self.release(up).await;
        } else {
            // Not handed on while a cancel this client sent may still reach it.
            up.discard(CloseReason::CancelUnsettled);
        }
    }
}
