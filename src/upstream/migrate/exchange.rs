//! The few exchanges a session move has with an upstream: a simple query, a prepared
//! statement's recreation through the extended protocol, each reply read to its
//! ReadyForQuery with every message's length checked.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend::{self, BindError};
use tokio::io::AsyncWriteExt;

use super::{Prepared, malformed};
use crate::protocol::ProtocolError;
use crate::upstream::connect::{read_message, refused};
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
    let mut buf = BytesMut::with_capacity(1024);
    let mut reply = Reply::default();
    let mut error = None;
    loop {
        match read_message(&mut up.stream, &mut buf, limit).await? {
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
