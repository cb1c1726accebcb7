//! The few exchanges a session move has with an upstream: a simple query, a prepared
//! statement's recreation through the extended protocol, each reply read to its
//! ReadyForQuery with every message's length checked.
//!
//! Messages are read one by one, never past the last one asked for: what PostgreSQL sends
//! after a ReadyForQuery (a notification for a session that LISTENs) stays in the socket for
//! whoever reads next. Notifications read during an exchange are kept whole, for the client.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend::{self, BindError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Prepared, malformed};
use crate::protocol::ProtocolError;
use crate::protocol::frame::header;
use crate::upstream::connect::refused;
use crate::upstream::{Upstream, UpstreamError};

/// Largest reply message read while recreating state (errors and command tags only).
const MAX_REPLY: usize = 1 << 20;

/// Runs `sql` (when there is any) as a simple query.
pub(super) async fn simple(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    if sql.is_empty() {
        return Ok(());
    }
    let mut request = BytesMut::new();
    frontend::query(sql, &mut request)?;
    bounded(up, &request, MAX_REPLY, timeout).await.map(drop)
}

/// Runs `sql` as a simple query and returns its rows.
pub(super) async fn rows(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    let mut request = BytesMut::new();
    frontend::query(sql, &mut request)?;
    Ok(bounded(up, &request, MAX_REPLY, timeout).await?.rows)
}

/// Recreates one prepared statement through the extended protocol.
pub(super) async fn recreate(
    up: &mut Upstream,
    prepared: &Prepared,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let mut request = BytesMut::new();
    match prepared {
        Prepared::Protocol { name, text, types } => {
            frontend::parse(name, text, types.iter().copied(), &mut request)?;
            frontend::sync(&mut request);
            bounded(up, &request, MAX_REPLY, timeout).await.map(drop)
        }
        Prepared::Sql { statement, .. } => {
            frontend::parse("", statement, [], &mut request)?;
            frontend::bind(
                "",
                "",
                [],
                std::iter::empty::<()>(),
                |_, _| Ok(IsNull::No),
                [],
                &mut request,
            )
            .map_err(bind_error)?;
            frontend::execute("", 0, &mut request)?;
            frontend::sync(&mut request);
            let reply = bounded(up, &request, MAX_REPLY, timeout).await?;
            if reply.tags != ["PREPARE"] {
                up.broken = true;
                return Err(ProtocolError::Malformed("reply to a recreated PREPARE").into());
            }
            Ok(())
        }
    }
}

fn bind_error(e: BindError) -> UpstreamError {
    match e {
        BindError::Serialization(e) => e.into(),
        BindError::Conversion(_) => ProtocolError::Malformed("Bind without parameters").into(),
    }
}

/// What PostgreSQL answered up to its ReadyForQuery.
#[derive(Default)]
pub(super) struct Reply {
    pub(super) rows: Vec<Vec<Option<String>>>,
    tags: Vec<String>,
    /// NotificationResponse frames read before the ReadyForQuery, whole.
    pub(super) notifications: BytesMut,
}

/// Sends `request` and reads the reply, each message at most `limit` bytes, within `timeout`.
/// An ErrorResponse becomes an error; on any failure the connection is marked broken.
pub(super) async fn bounded(
    up: &mut Upstream,
    request: &[u8],
    limit: usize,
    timeout: Duration,
) -> Result<Reply, UpstreamError> {
    let result = tokio::time::timeout(timeout, round_trip(up, request, limit))
        .await
        .unwrap_or(Err(UpstreamError::Timeout));
    if result.is_err() {
        up.broken = true;
    }
    result
}

async fn round_trip(
    up: &mut Upstream,
    request: &[u8],
    limit: usize,
) -> Result<Reply, UpstreamError> {
    up.stream.write_all(request).await?;
    up.stream.flush().await?;
    let mut reply = Reply::default();
    let mut error = None;
    loop {
        let mut frame = next_frame(up, limit).await?;
        if frame.first() == Some(&b'A') {
            reply.notifications.extend_from_slice(&frame);
            continue;
        }
        match Message::parse(&mut frame)?.ok_or_else(malformed)? {
            Message::DataRow(row) => reply.rows.push(values(&row)?),
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(|_| malformed())?;
                reply.tags.push(tag.to_owned());
            }
            Message::ErrorResponse(body) => {
                error.get_or_insert_with(|| refused(&body));
            }
            Message::ReadyForQuery(r) => {
                return match (error, r.status()) {
                    (Some(e), _) => Err(e),
                    (None, b'I') => Ok(reply),
                    (None, _) => {
                        Err(ProtocolError::Malformed("session left in a transaction").into())
                    }
                };
            }
            _ => {}
        }
    }
}

/// Reads exactly one whole message, its length checked against `limit` first.
pub(super) async fn next_frame(up: &mut Upstream, limit: usize) -> Result<BytesMut, UpstreamError> {
    let mut head = [0u8; 5];
    up.stream.read_exact(&mut head).await?;
    let (tag, len) = header(&head).ok_or_else(malformed)?;
    if !(4..=limit).contains(&len) {
        return Err(ProtocolError::TooLarge {
            tag,
            len,
            max: limit,
        }
        .into());
    }
    let mut frame = BytesMut::with_capacity(1 + len);
    frame.extend_from_slice(&head);
    frame.resize(1 + len, 0);
    up.stream.read_exact(&mut frame[5..]).await?;
    Ok(frame)
}

/// Runs `sql` as a simple query; notifications read meanwhile are appended to `into`.
pub(super) async fn simple_into(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
    into: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let mut request = BytesMut::new();
    frontend::query(sql, &mut request)?;
    let reply = bounded(up, &request, MAX_REPLY, timeout).await?;
    into.extend_from_slice(&reply.notifications);
    Ok(())
}

fn values(row: &DataRowBody) -> Result<Vec<Option<String>>, UpstreamError> {
    let data = row.buffer();
    let mut values = Vec::new();
    let mut ranges = row.ranges();
    while let Some(range) = ranges.next().map_err(|_| malformed())? {
        let value = match range {
            Some(r) => {
                Some(String::from_utf8_lossy(data.get(r).ok_or_else(malformed)?).into_owned())
            }
            None => None,
        };
        values.push(value);
    }
    Ok(values)
}
