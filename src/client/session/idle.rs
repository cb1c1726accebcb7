//! The wait between two requests: reading until a complete request is buffered (nothing is
//! checked out before then, and the wait holds no I/O buffer), and what may end or interrupt
//! that wait: the client leaving, `client_idle_timeout`, a shutdown or `KILL`, a reload that
//! retired the pool, notifications for a client that LISTENs.

use std::future::{Future, poll_fn};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

use super::Session;
use crate::client::ClientError;
use crate::client::relay::spare;
use crate::client::stop::Signal;
use crate::client::stream::ClientStream;
use crate::tls::stream::RelayIo;

/// Most bytes one read takes from an idle client (on the stack, see [`poll_read_client`]): a
/// typical request arrives whole, a larger one continues into its heap buffer.
const IDLE_READ: usize = 4096;

/// What ended one wait for the client's bytes.
enum Woke {
    Read(std::io::Result<usize>),
    IdleOver,
    Signal(Signal),
    Notified,
}

/// How a wait between requests ended.
pub(super) enum Next {
    Request,
    Closed,
    /// Told to leave while idle.
    Stopped,
    /// Ended by an administrator.
    Killed,
    /// Idle between transactions for `client_idle_timeout`.
    IdleTimeout,
}

impl Session {
    /// Reads from the client until a complete request is buffered (or it leaves). Nothing is
    /// checked out before then, so a slow client never holds an upstream while it types.
    pub(super) async fn read_request(&mut self) -> Result<Next, ClientError> {
        // `client_idle_timeout`'s timer runs: armed once the client is first seen idle.
        let mut idle_armed = false;
        loop {
            let max = self.shared.max_message_size;
            let scan = self.bufs.fscan.scan(&self.bufs.c2u, true, max)?;
            self.track.pending += scan.sync_points;
            self.track.totals.queries += u64::from(scan.sync_points);
            self.request_ready |= scan.request_ready;
            if scan.terminate && self.bufs.fscan.forwardable() == 0 {
                return Ok(Next::Closed);
            }
            if self.request_ready {
                return Ok(Next::Request);
            }
            if self.bufs.c2u.len() > max {
                return Err(ClientError::refused(
                    "54000",
                    "request exceeds max_message_size",
                ));
            }
            if let Some(frame) = self.bufs.fscan.pending_frame_len(&self.bufs.c2u) {
                let unscanned = self.bufs.c2u.len() - self.bufs.fscan.forwardable();
                self.bufs.c2u.reserve(frame.saturating_sub(unscanned));
            }
            let idle = self.bufs.c2u.is_empty() && self.track.status == b'I';
            // Between requests, outside a transaction: where notifications are delivered.
            let deliverable = self.track.status == b'I' && self.track.pending == 0;
            if !idle {
                idle_armed = false;
            } else if let Some(limit) = self.shared.timeouts.client_idle.filter(|_| !idle_armed) {
                let at = tokio::time::Instant::now() + limit;
                match self.idle_sleep.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.idle_sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                idle_armed = true;
            }
            // Nothing to hold while waiting: empty buffers go back to the worker's spares.
            self.bufs.release_empty();
            // Idle between transactions: the moment a shutdown may end the session, and the
            // one where a client whose pool a reload retired lets go of it (not at its next
            // request), so the old pool can close.
            let watch_retired = idle && !self.stays_on_retired;
            let woke = {
                let (client, buf) = (&mut self.client, &mut self.bufs.c2u);
                let (stop, tenure) = (self.registration.stop(), &self.login.pool.tenure);
                let mut idle_sleep = self.idle_sleep.as_mut().filter(|_| idle_armed);
                // Boxed: only a client that LISTENs holds the wait's room.
                let mut notified = self
                    .notify
                    .as_ref()
                    .and_then(|n| n.subscription())
                    .filter(|_| deliverable)
                    .map(|s| Box::pin(s.ready()));
                // One hand-written poll, in the order a `biased` select would take them: the
                // wait so keeps a few references, not four futures side by side, in every
                // idle client's task.
                poll_fn(|cx| {
                    if let Poll::Ready(r) = poll_read_client(client, buf, cx) {
                        return Poll::Ready(Woke::Read(r));
                    }
                    if let Some(sleep) = idle_sleep.as_mut() {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::IdleOver);
                        }
                    }
                    let look_again = || watch_retired && tenure.is_retired();
                    if let Poll::Ready(signal) = stop.poll_idle(cx, idle, look_again) {
                        return Poll::Ready(Woke::Signal(signal));
                    }
                    match notified.as_mut().map(|n| n.as_mut().poll(cx)) {
                        Some(Poll::Ready(())) => Poll::Ready(Woke::Notified),
                        _ => Poll::Pending,
                    }
                })
                .await
            };
            let n = match woke {
                Woke::Read(r) => r?,
                Woke::IdleOver => return Ok(Next::IdleTimeout),
                Woke::Signal(Signal::Killed) => return Ok(Next::Killed),
                Woke::Signal(Signal::Stopped) => return Ok(Next::Stopped),
                Woke::Signal(Signal::LookAgain) => {
                    self.span().in_scope(|| self.follow_reload());
                    continue;
                }
                Woke::Notified => {
                    let span = self.span();
                    Box::pin(self.deliver_notifications())
                        .instrument(span)
                        .await?;
                    continue;
                }
            };
            if n == 0 {
                return Ok(Next::Closed);
            }
            self.track.totals.received_bytes += n as u64;
        }
    }

    /// Transaction mode: writes the notifications waiting for the client. A client that let
    /// too many pile up is ended (see [`crate::pool::listener`]).
    pub(super) async fn deliver_notifications(&mut self) -> Result<(), ClientError> {
        let Some(notify) = &self.notify else {
            return Ok(());
        };
        if let Err(e) = notify.deliver(&mut self.bufs.u2c) {
            let e = ClientError::refused("54000", format!("terminating connection: {e}"));
            return Err(self.fatal(e).await);
        }
        self.flush_client().await
    }
}

/// Reads the client's next bytes into `buf`. A buffer without an allocation (an idle
/// client's, see [`Buffers::release_empty`]) gets one only once bytes are there: each poll
/// borrows one of the worker's [`spare`] buffers and gives it back if nothing arrived, or,
/// with no spare at hand, reads through a stack buffer inside the poll and copies the bytes
/// into an allocation sized for them (the relay reserves its own room when it starts). The
/// wait so holds no heap memory.
fn poll_read_client(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() > 0 {
        return client.poll_read_into(cx, buf);
    }
    if spare::refill(buf) {
        let read = client.poll_read_into(cx, buf);
        if read.is_pending() {
            spare::give(buf);
        }
        return read;
    }
    let mut stack = [0u8; IDLE_READ];
    let mut read = ReadBuf::new(&mut stack);
    std::task::ready!(std::pin::Pin::new(&mut *client).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}
