//! The relay: moves bytes both ways between a client and the upstream serving it, at the same
//! time, inside one task.
//!
//! # Design
//!
//! One `poll_fn` drives four steps until none makes progress: read upstream, write client,
//! read client, write upstream. Reads go straight into the session's two reusable buffers;
//! the frame scanners mark how far whole frames (or passed-through bodies) reach, and
//! everything up to that mark goes out in one write. No message is copied, no body is parsed,
//! nothing is allocated per message, and no channel or lock sits between the two sockets.
//!
//! In transaction mode with statement tracking on, requests go through the rewrite and
//! replies through the filter of [`super::tracked`] on the way; both keep this design (requests
//! that need no change and every reply PostgreSQL sends are not copied).
//!
//! Either side may be TLS: the relay reads and writes through [`RelayIo`], whose plaintext
//! arms are the readiness-based TCP reads and writes it always had and whose TLS arms go
//! through rustls, and each pass also pushes out TLS records rustls still holds, so nothing
//! waits in its buffer while the relay waits on a socket.
//!
//! The pool's totals are counted without a lock or a shared write per message: bytes, queries
//! and query times add up in the session's own [`Tracker`], and go to the pool's
//! [`crate::pool::PoolStats`] in one step when a transaction ends (a ReadyForQuery `I` with nothing
//! outstanding), together with that transaction's histogram observations ([`Meter`]). The
//! clock is read when a query starts from an idle upstream and when it ends, nowhere else.
//!
//! Both directions flow at once, so a client that pipelines more than the socket buffers
//! hold while PostgreSQL is busy writing results cannot deadlock the pair. Each buffer holds
//! at most [`READ_CHUNK`] unsent bytes, so memory per client is bounded whatever the result
//! size.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};

use super::settings::mentions_set_config;
use super::statements::ReplyError;
use super::stop::Stop;
use super::timers::{Expired, Phase, Timers};
use super::tracked::{self, Tracking};
use crate::credentials::LeaseEnd;

mod meter;
pub mod spare;
mod state;

use crate::protocol::ProtocolError;
use crate::tls::stream::RelayIo;
pub use meter::{Meter, micros};
pub use state::{Buffers, Tracker};

/// Most bytes buffered in one direction before reading pauses for the writer to catch up.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why a relay run stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// ReadyForQuery `I` with nothing outstanding (only when releasing on idle): the upstream
    /// can go back to its pool. Bytes may remain in `u2c` for the caller to flush.
    Idle,
    /// The client hung up or sent Terminate.
    ClientClosed,
    /// Reading from or writing to the client failed.
    ClientIo(io::Error),
    /// The client sent invalid framing.
    ClientProtocol(ProtocolError),
    /// PostgreSQL closed the connection.
    UpstreamClosed,
    /// Reading from or writing to the upstream failed.
    UpstreamIo(io::Error),
    /// PostgreSQL sent invalid framing.
    UpstreamProtocol(ProtocolError),
    /// PostgreSQL's replies do not fit the requests the statement tracking sent it.
    UpstreamMismatch(ReplyError),
    /// A newer lease was published and the session is between transactions with nothing in
    /// flight either way: the moment to move it to a new upstream.
    Rotated,
    /// The upstream's lease reached its hard deadline: the session must end now, wherever
    /// it is, before the lease is revoked under it.
    LeaseEnded,
    /// An administrator ended the client (`KILL`): the session ends now, wherever it is.
    Killed,
    /// A session timeout ([`super::timers`]) was reached.
    TimedOut(Expired),
}

/// What the relay watches besides the two sockets.
pub struct Signals<'a, 't, 'm> {
    /// Session mode: resolves when the upstream's lease is superseded; the relay then stops
    /// at the next idle boundary so the session can move.
    pub rotated: Option<Pin<&'a mut (dyn Future<Output = ()> + Send)>>,
    /// Fires when the upstream's lease reaches its hard deadline; the relay stops at once.
    pub deadline: &'a LeaseEnd,
    /// The client's signals: `KILL` stops the relay at once.
    pub stop: &'t Stop,
    /// Transaction mode with `max_prepared_statements` above 0: the statement tracking.
    pub tracking: Option<Tracking<'t>>,
    /// Where finished queries and transactions are recorded.
    pub meter: Meter<'m>,
    /// The session's timeouts, when any is on; asked only when the relay is idle.
    pub timers: Option<&'t mut Timers>,
}

/// Relays until one of the [`RelayEnd`] conditions.
pub async fn relay(
    client: &mut impl RelayIo,
    upstream: &mut impl RelayIo,
    bufs: &mut Buffers,
    track: &mut Tracker,
    release_on_idle: bool,
    max_message: usize,
    signals: Signals<'_, '_, '_>,
) -> RelayEnd {
    track.idle_point = false;
    let Signals {
        mut rotated,
        deadline,
        stop,
        mut tracking,
        meter,
        mut timers,
    } = signals;
    let mut rotation_due = false;
    // The lease end's and KILL's wakers are registered once per run (every poll is this
    // task's, so the first waker stays good); later polls only load the two flags.
    let mut watching = false;
    let end = poll_fn(|cx| {
        let (ended, killed) = if watching {
            (deadline.is_ended(), stop.is_killed())
        } else {
            watching = true;
            (deadline.poll_ended(cx), stop.poll_killed(cx).is_ready())
        };
        if ended {
            return Poll::Ready(RelayEnd::LeaseEnded);
        }
        if killed {
            return Poll::Ready(RelayEnd::Killed);
        }
        if !rotation_due {
            if let Some(signal) = rotated.as_mut() {
                rotation_due = signal.as_mut().poll(cx).is_ready();
            }
        }
        if rotation_due && at_idle_boundary(bufs, track) {
            return Poll::Ready(RelayEnd::Rotated);
        }
        let end = poll_relay(
            cx,
            Sockets {
                client: &mut *client,
                upstream: &mut *upstream,
            },
            bufs,
            track,
            tracking.as_mut(),
            Mode {
                release_on_idle,
                max_message,
                meter,
            },
        );
        if end.is_pending() && rotation_due && at_idle_boundary(bufs, track) {
            return Poll::Ready(RelayEnd::Rotated);
        }
        if let (true, Some(timers)) = (end.is_pending(), timers.as_deref_mut()) {
            if let Poll::Ready(expired) = timers.poll(cx, phase(bufs, track)) {
                return Poll::Ready(RelayEnd::TimedOut(expired));
            }
        }
        end
    })
    .await;
    if matches!(end, RelayEnd::Idle | RelayEnd::Rotated) {
        // Over TLS, the last reply may still sit in rustls' buffer; the session may next
        // wait on the client only, so it goes out now.
        if let Err(e) = poll_fn(|cx| client.poll_flush_tls(cx)).await {
            return RelayEnd::ClientIo(e);
        }
    }
    end
}

/// Between transactions, nothing outstanding upstream, nothing buffered either way.
fn at_idle_boundary(b: &Buffers, t: &Tracker) -> bool {
    t.pending == 0
        && t.status == b'I'
        && !t.terminated
        && !b.fscan.open_batch()
        && b.c2u.is_empty()
        && b.send.is_empty()
        && b.u2c.is_empty()
        && b.bscan.at_boundary()
}

/// Where the conversation stands, for the session timeouts: a request is running while any
/// is unanswered or part of one is still to go upstream; the client is idle once everything
/// is answered and delivered (a partial message it is still sending does not stop the clock).
fn phase(b: &Buffers, t: &Tracker) -> Phase {
    if t.pending > 0 || b.fscan.open_batch() || !b.nothing_to_send() {
        Phase::Running
    } else if b.u2c.is_empty() && b.bscan.at_boundary() && !t.terminated {
        Phase::Idle {
            in_transaction: t.status != b'I',
        }
    } else {
        Phase::Other
    }
}

/// The two sockets of a relay run.
struct Sockets<'a, C, U> {
    client: &'a mut C,
    upstream: &'a mut U,
}

/// How a relay run treats what it moves.
#[derive(Clone, Copy)]
struct Mode<'a> {
    release_on_idle: bool,
    max_message: usize,
    meter: Meter<'a>,
}

fn poll_relay(
    cx: &mut Context<'_>,
    io: Sockets<'_, impl RelayIo, impl RelayIo>,
    b: &mut Buffers,
    t: &mut Tracker,
    mut tracking: Option<&mut Tracking<'_>>,
    mode: Mode<'_>,
) -> Poll<RelayEnd> {
    let Sockets { client, upstream } = io;
    let max_message = mode.max_message;
    loop {
        let mut progress = false;
        // TLS may hold records from an earlier write; pending here only means the socket is
        // full, and its waker is registered.
        if let Poll::Ready(Err(e)) = upstream.poll_flush_tls(cx) {
            return Poll::Ready(RelayEnd::UpstreamIo(e));
        }
        if let Poll::Ready(Err(e)) = client.poll_flush_tls(cx) {
            return Poll::Ready(RelayEnd::ClientIo(e));
        }

        if !t.idle_point && b.u2c.len() < READ_CHUNK {
            match poll_read(upstream, &mut b.u2c, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::UpstreamClosed),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if let Some(tr) = tracking.as_deref_mut() {
                        if let Err(e) = tracked::filter_replies(b, tr.upstream) {
                            return Poll::Ready(RelayEnd::UpstreamMismatch(e));
                        }
                    }
                    if let Err(e) = scan_backend(b, t, mode, tracking.is_some()) {
                        return Poll::Ready(RelayEnd::UpstreamProtocol(e));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::UpstreamIo(e)),
                Poll::Pending => {}
            }
        }

        let n = b.bscan.forwardable();
        if n > 0 {
            match poll_write(client, &b.u2c[..n], cx) {
                Poll::Ready(Ok(w)) => {
                    t.totals.sent_bytes += w as u64;
                    b.u2c.advance(w);
                    b.bscan.consumed(w);
                    b.filter.consumed(w);
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientIo(e)),
                Poll::Pending => {}
            }
        }
        if t.idle_point {
            return Poll::Ready(RelayEnd::Idle);
        }

        // Tracking rewrites whole frames only, so a frame larger than the usual chunk is
        // read in full (bounded by `max_message`, which the scanner checks).
        let room = b.c2u.len() < READ_CHUNK || (tracking.is_some() && b.nothing_to_send());
        if !t.terminated && room {
            match poll_read(client, &mut b.c2u, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::ClientClosed),
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    t.totals.received_bytes += n as u64;
                    match b.fscan.scan(&b.c2u, tracking.is_some(), max_message) {
                        Ok(s) => {
                            t.requested(s.sync_points);
                            t.terminated |= s.terminate;
                        }
                        Err(e) => return Poll::Ready(RelayEnd::ClientProtocol(e)),
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientIo(e)),
                Poll::Pending => {}
            }
        }

        match poll_send(cx, upstream, b, t, tracking.as_deref_mut(), mode) {
            Poll::Ready(Ok(())) => progress = true,
            Poll::Ready(Err(end)) => return Poll::Ready(end),
            Poll::Pending => {}
        }
        if t.terminated && b.nothing_to_send() {
            return Poll::Ready(RelayEnd::ClientClosed);
        }

        if !progress {
            return Poll::Pending;
        }
    }
}

/// Writes the client's next bytes upstream: untracked, every whole frame scanned; tracked,
/// what the rewrite made of them. Ready when something was written.
fn poll_send(
    cx: &mut Context<'_>,
    upstream: &mut impl RelayIo,
    b: &mut Buffers,
    t: &mut Tracker,
    tracking: Option<&mut Tracking<'_>>,
    mode: Mode<'_>,
) -> Poll<Result<(), RelayEnd>> {
    let release_on_idle = mode.release_on_idle;
    let Some(tr) = tracking else {
        let n = b.fscan.forwardable();
        if n == 0 {
            return Poll::Pending;
        }
        t.settings_changed |= release_on_idle && mentions_set_config(&b.c2u[..n]);
        let w = ready!(poll_write(upstream, &b.c2u[..n], cx)).map_err(RelayEnd::UpstreamIo)?;
        b.c2u.advance(w);
        b.fscan.consumed(w);
        return Poll::Ready(Ok(()));
    };
    match tracked::rewrite_request(b, tr, t.status) {
        Ok(dropped) => t.pending = t.pending.saturating_sub(dropped),
        Err(e) => return Poll::Ready(Err(RelayEnd::ClientProtocol(e))),
    }
    // The rewrite read every query text it let through (and knows the prepared ones).
    let settings = tr.client.take_settings_check();
    t.settings_changed |= release_on_idle && settings;
    // Replies the proxy owes at once are placed, and shown to the client, now.
    tracked::filter_replies(b, tr.upstream).map_err(RelayEnd::UpstreamMismatch)?;
    scan_backend(b, t, mode, true).map_err(RelayEnd::UpstreamProtocol)?;
    if !b.send.is_empty() {
        let w = ready!(poll_write(upstream, &b.send, cx)).map_err(RelayEnd::UpstreamIo)?;
        b.send.advance(w);
        return Poll::Ready(Ok(()));
    }
    if b.approved == 0 {
        return Poll::Pending;
    }
    let w = ready!(poll_write(upstream, &b.c2u[..b.approved], cx)).map_err(RelayEnd::UpstreamIo)?;
    b.c2u.advance(w);
    b.fscan.consumed(w);
    b.approved -= w;
    Poll::Ready(Ok(()))
}

/// Advances the backend scanner over newly read bytes (tracked: only over those the filter
/// judged), noting each ReadyForQuery, and stops at the one that makes the upstream free to
/// go back to its pool.
fn scan_backend(
    b: &mut Buffers,
    t: &mut Tracker,
    mode: Mode<'_>,
    tracked: bool,
) -> Result<(), ProtocolError> {
    let release_on_idle = mode.release_on_idle;
    loop {
        let judged = if tracked {
            &b.u2c[..b.filter.checked]
        } else {
            &b.u2c[..]
        };
        let scanned = b.bscan.scan(judged);
        t.settings_changed |= b.bscan.take_settings_changed();
        let Some(status) = scanned? else {
            return Ok(());
        };
        t.pending = t.pending.saturating_sub(1);
        t.status = status;
        if t.pending == 0 {
            t.answered(status, &mode.meter);
        }
        let nothing_outstanding = t.pending == 0 && !b.fscan.open_batch() && b.nothing_to_send();
        if release_on_idle && status == b'I' && nothing_outstanding {
            t.idle_point = true;
            let end = b.bscan.forwardable();
            if end != b.u2c.len() || (tracked && !b.filter.settled()) {
                // PostgreSQL spoke after the reply that ended the request: whatever it is, it
                // belongs to nobody, and the upstream's state is no longer known.
                b.u2c.truncate(end);
                t.unsolicited = true;
            }
            return Ok(());
        }
    }
}

/// Reads whatever the side has into `buf` without waiting for more.
fn poll_read(
    stream: &mut impl RelayIo,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // A released buffer takes a spare first; otherwise this reclaims the consumed front of
    // the same allocation when it can.
    if buf.capacity() - buf.len() < READ_CHUNK / 4 && !spare::refill(buf) {
        buf.reserve(READ_CHUNK);
    }
    stream.poll_read_into(cx, buf)
}

/// Writes as much of `data` as the side takes now.
fn poll_write(
    stream: &mut impl RelayIo,
    data: &[u8],
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    stream.poll_write_from(cx, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a session waiting between requests keeps: nothing for an empty buffer, and every
    /// byte of one that still holds some (a pipelined request, say).
    #[test]
    fn release_empty_frees_empty_buffers_and_keeps_bytes() {
        let mut b = Buffers::default();
        b.c2u.reserve(READ_CHUNK);
        b.c2u.extend_from_slice(b"Q\0\0\0\x0dSELECT 1\0");
        b.u2c.reserve(READ_CHUNK);
        b.u2c.extend_from_slice(b"Z\0\0\0\x05I");
        b.u2c.advance(6);
        b.send.reserve(1024);
        b.release_empty();
        assert_eq!(&b.c2u[..], b"Q\0\0\0\x0dSELECT 1\0");
        assert!(b.c2u.capacity() >= READ_CHUNK);
        assert_eq!(b.u2c.capacity(), 0);
        assert_eq!(b.send.capacity(), 0);
    }
}
