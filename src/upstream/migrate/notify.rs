//! A session-mode move of a session that LISTENs: the notifications its old upstream delivers
//! up to the moment the new one took over go to the client, and none twice.
//!
//! # Design
//!
//! Once [`super::replay`] LISTENed on the new upstream, both upstreams deliver the same
//! notifications from some point of PostgreSQL's one commit-ordered queue on; the old one also
//! delivers everything before it. A marker notification on a private channel, sent from the
//! new upstream after its LISTENs committed, is delivered by both at the same place in that
//! order (the same reasoning as the transaction-mode listener's handover,
//! `pool::listener::handover`): the client gets the old upstream's notifications up to the
//! marker, then the new one's after it. The marker channel is UNLISTENed again before the
//! session resumes, so the client's `pg_listening_channels()` is what it was.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use thiserror::Error;

use super::exchange::{next_frame, simple_into};
use crate::protocol::ProtocolError;
use crate::upstream::{Upstream, UpstreamError};

/// Largest notification frame read while waiting for the marker (payloads are at most 8000
/// bytes).
const MAX_NOTIFICATION: usize = 64 * 1024;

/// Which upstream failed during a hand-over.
#[derive(Debug, Error)]
pub enum HandOverError {
    /// The old upstream; the session's state there is unknown.
    #[error("the old upstream failed while handing notifications over: {0}")]
    Old(#[source] UpstreamError),
    /// The new upstream; the old one is as it was (its marker LISTEN undone).
    #[error("the new upstream failed while taking notifications over: {0}")]
    New(#[source] UpstreamError),
}

/// Hands notification delivery over from `old` to `new`, which already LISTENs on the
/// session's channels. What the client must get from `old` is appended to `forward`, then
/// what `new` delivered after the marker; each exchange is bounded by `timeout`.
pub async fn hand_over(
    old: &mut Upstream,
    new: &mut Upstream,
    timeout: Duration,
    forward: &mut BytesMut,
) -> Result<(), HandOverError> {
    let channel = format!("pglease_move_{:016x}", rand::random::<u64>());
    let payload = format!("{:016x}", rand::random::<u64>());
    let listen = format!("LISTEN {}", escape_identifier(&channel));
    let unlisten = format!("UNLISTEN {}", escape_identifier(&channel));
    let marker = Marker {
        channel: channel.as_bytes(),
        payload: payload.as_bytes(),
    };
    simple_into(old, &listen, timeout, forward)
        .await
        .map_err(HandOverError::Old)?;
    let mut from_new = BytesMut::new();
    let notify = format!(
        "SELECT pg_catalog.pg_notify({}, {})",
        escape_literal(&channel),
        escape_literal(&payload)
    );
    let taken = async {
        simple_into(new, &listen, timeout, &mut from_new).await?;
        simple_into(new, &notify, timeout, &mut from_new).await?;
        let mut after = cut_after(&from_new, &marker)?;
        while after.is_none() {
            let frame = tokio::time::timeout(timeout, next_frame(new, MAX_NOTIFICATION))
                .await
                .unwrap_or(Err(UpstreamError::Timeout))?;
            from_new.extend_from_slice(&frame);
            after = cut_after(&from_new, &marker)?;
        }
        Ok(after.unwrap_or_default())
    };
    let after = match taken.await {
        Ok(after) => after,
        Err(e) => {
            new.broken = true;
            simple_into(old, &unlisten, timeout, forward)
                .await
                .map_err(HandOverError::Old)?;
            return Err(HandOverError::New(e));
        }
    };
    // The old upstream's notifications before the marker; the marker ends them.
    let mut from_old = BytesMut::new();
    loop {
        if cut_after(&from_old, &marker)
            .map_err(HandOverError::Old)?
            .is_some()
        {
            let before = before_marker(&from_old, &marker).map_err(HandOverError::Old)?;
            forward.extend_from_slice(&before);
            break;
        }
        let frame = tokio::time::timeout(timeout, next_frame(old, MAX_NOTIFICATION))
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
            .map_err(HandOverError::Old)?;
        from_old.extend_from_slice(&frame);
    }
    forward.extend_from_slice(&after);
    simple_into(new, &unlisten, timeout, forward)
        .await
        .map_err(HandOverError::New)
}

struct Marker<'a> {
    channel: &'a [u8],
    payload: &'a [u8],
}

/// Walks whole frames of `frames`: `Some(bytes after the marker)` once it is among them.
/// Only notifications, notices and parameter changes may be there.
fn cut_after(frames: &[u8], marker: &Marker<'_>) -> Result<Option<BytesMut>, UpstreamError> {
    Ok(split(frames, marker)?.map(|(_, after)| BytesMut::from(after)))
}

/// The notifications of `frames` before the marker (which must be there).
fn before_marker(frames: &[u8], marker: &Marker<'_>) -> Result<BytesMut, UpstreamError> {
    let (before, _) = split(frames, marker)?.ok_or_else(unexpected)?;
    Ok(BytesMut::from(before))
}

/// The frames before the marker and those after it.
type Halves<'f> = (&'f [u8], &'f [u8]);

fn split<'f>(frames: &'f [u8], marker: &Marker<'_>) -> Result<Option<Halves<'f>>, UpstreamError> {
    let mut at = 0;
    while at < frames.len() {
        let (tag, len) = crate::protocol::frame::header(&frames[at..]).ok_or_else(unexpected)?;
        let end = at + 1 + len;
        let frame = frames.get(at..end).ok_or_else(unexpected)?;
        match tag {
            b'A' if is_marker(frame, marker) => return Ok(Some((&frames[..at], &frames[end..]))),
            b'A' | b'N' | b'S' => {}
            _ => return Err(unexpected()),
        }
        at = end;
    }
    Ok(None)
}

/// True for the marker's NotificationResponse: pid, channel NUL, payload NUL.
fn is_marker(frame: &[u8], marker: &Marker<'_>) -> bool {
    let Some(body) = frame.get(9..) else {
        return false;
    };
    let mut fields = body.split(|&b| b == 0);
    fields.next() == Some(marker.channel) && fields.next() == Some(marker.payload)
}

fn unexpected() -> UpstreamError {
    ProtocolError::Malformed("message while handing notifications over").into()
}
