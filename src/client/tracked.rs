//! The relay's two statement-tracking steps in transaction mode: the rewrite of each client
//! request before it goes upstream, and the reply filter over what comes back (see
//! [`super::statements`] for what they change and why).
//!
//! # Design
//!
//! Requests: whole frames are handed to [`ClientStatements::rewrite`]. When it changes
//! nothing, the client's own bytes are sent (`approved` of them, from the front of `c2u`:
//! nothing is copied); otherwise its output is sent from `send` and the request's bytes are
//! dropped.
//!
//! Replies stay where they were read, in `u2c`: the filter walks frame headers past a cursor
//! (`checked`) and the backend scanner only sees bytes before it, so a swallowed frame is
//! never forwarded. A swallowed frame is cut out of the buffer and replies the proxy writes
//! are spliced in at the cursor, both small (bodiless completions, a probe's error), so the
//! frames PostgreSQL sends, results included, are never copied. While the upstream owes
//! nothing ([`UpstreamStatements::idle`]), and for every frame that could not change what it
//! owes (a DataRow, the replies before an awaited ReadyForQuery:
//! [`UpstreamStatements::forwards_untouched`]), the filter is not consulted, only headers are
//! walked.

use bytes::BytesMut;

use super::relay::Buffers;
use super::statements::{ClientStatements, ReplyError, UpstreamStatements, Verdict};
use crate::protocol::ProtocolError;
use crate::protocol::frame::header;

/// One client's statements and the statements of the upstream serving it, for one relay run.
pub struct Tracking<'a> {
    /// The client's registry.
    pub client: &'a mut ClientStatements,
    /// The serving upstream's registry and owed replies.
    pub upstream: &'a mut UpstreamStatements,
}

/// Where the reply filter stands inside `u2c`.
#[derive(Debug, Default)]
pub struct Filter {
    /// Bytes at the front of `u2c` already judged (forwarded frames, or the part of one that
    /// has arrived); only these are shown to the backend scanner.
    pub checked: usize,
    /// The frame at the cursor, when only part of it has arrived.
    current: Option<Partial>,
    /// Replies written by the proxy, to be spliced in at the next frame boundary.
    owed: BytesMut,
}

#[derive(Debug, Clone, Copy)]
enum Partial {
    /// Bytes of a forwarded frame still to come.
    Forward(usize),
    /// Bytes of a swallowed frame still to come.
    Swallow(usize),
}

impl Filter {
    /// Forgets all state, for a buffer that starts on a frame boundary again.
    pub fn reset(&mut self) {
        self.checked = 0;
        self.current = None;
        self.owed.clear();
    }

    /// True when nothing is half judged and no written reply waits to be placed.
    pub fn settled(&self) -> bool {
        self.current.is_none() && self.owed.is_empty()
    }

    /// Records that `n` judged bytes were written to the client and removed from the front.
    pub fn consumed(&mut self, n: usize) {
        self.checked -= n.min(self.checked);
    }
}

/// Rewrites the whole frames the client scanner released, when nothing rewritten earlier is
/// still waiting to go out. Returns how many Query/Sync/FunctionCall frames the rewrite left
/// out, whose ReadyForQuery will not come.
pub fn rewrite_request(
    b: &mut Buffers,
    track: &mut Tracking<'_>,
    status: u8,
) -> Result<u32, ProtocolError> {
    let n = b.fscan.forwardable();
    if n == 0 || b.approved > 0 || !b.send.is_empty() {
        return Ok(0);
    }
    let request = &b.c2u[..n];
    let changed = track.client.rewrite(
        request,
        status,
        track.upstream,
        &mut b.send,
        &mut b.filter.owed,
    )?;
    if !changed {
        b.approved = n;
        return Ok(0);
    }
    let dropped = sync_points(request).saturating_sub(sync_points(&b.send));
    bytes::Buf::advance(&mut b.c2u, n);
    b.fscan.consumed(n);
    Ok(dropped)
}

/// Query, Sync and FunctionCall frames in whole frames `bytes`.
fn sync_points(bytes: &[u8]) -> u32 {
    let mut at = 0;
    let mut count = 0;
    while let Some((tag, len)) = header(&bytes[at..]) {
        count += u32::from(matches!(tag, b'Q' | b'S' | b'F'));
        at += 1 + len;
    }
    count
}

/// Judges the reply frames read into `u2c` past the cursor: forwarded ones stay, swallowed
/// ones are cut out, the proxy's own replies are spliced in where they are due.
pub fn filter_replies(
    b: &mut Buffers,
    upstream: &mut UpstreamStatements,
) -> Result<(), ReplyError> {
    let f = &mut b.filter;
    let buf = &mut b.u2c;
    loop {
        match f.current {
            Some(Partial::Forward(rest)) => {
                let take = rest.min(buf.len() - f.checked);
                f.checked += take;
                if take < rest {
                    f.current = Some(Partial::Forward(rest - take));
                    return Ok(());
                }
                f.current = None;
            }
            Some(Partial::Swallow(rest)) => {
                let take = rest.min(buf.len() - f.checked);
                cut(buf, f.checked, take);
                if take < rest {
                    f.current = Some(Partial::Swallow(rest - take));
                    return Ok(());
                }
                f.current = None;
            }
            None => {}
        }
        if !f.owed.is_empty() {
            splice(buf, f.checked, &f.owed);
            f.checked += f.owed.len();
            f.owed.clear();
        }
        let Some((tag, len)) = header(&buf[f.checked..]) else {
            return Ok(());
        };
        // A length below 4 is the backend scanner's to report; judged as forwarded here.
        let frame = 1 + len.max(4);
        let verdict = if upstream.forwards_untouched(tag) {
            Verdict::Forward
        } else {
            upstream.on_reply(tag, &mut f.owed)?
        };
        f.current = Some(match verdict {
            Verdict::Forward => Partial::Forward(frame),
            Verdict::Swallow => Partial::Swallow(frame),
        });
    }
}

/// Removes `n` bytes at `at`.
fn cut(buf: &mut BytesMut, at: usize, n: usize) {
    if n == 0 {
        return;
    }
    let len = buf.len();
    buf.copy_within(at + n..len, at);
    buf.truncate(len - n);
}

/// Inserts `bytes` at `at`.
fn splice(buf: &mut BytesMut, at: usize, bytes: &[u8]) {
    buf.extend_from_slice(bytes);
    buf[at..].rotate_right(bytes.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_and_splice_keep_the_rest_in_order() {
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        cut(&mut buf, 1, 2);
        assert_eq!(&buf[..], b"adef");
        splice(&mut buf, 1, b"XY");
        assert_eq!(&buf[..], b"aXYdef");
        cut(&mut buf, 6, 0);
        assert_eq!(&buf[..], b"aXYdef");
    }

    #[test]
    fn sync_points_counts_query_sync_and_function_call() {
        let mut bytes = BytesMut::new();
        for tag in [b'P', b'S', b'Q', b'H', b'F'] {
            bytes.extend_from_slice(&[tag, 0, 0, 0, 4]);
        }
        assert_eq!(sync_points(&bytes), 3);
    }
}
