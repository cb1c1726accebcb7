//! Whether an idle upstream still holds session state a transaction-mode client left behind
//! where the proxy's lexer could not see it (a `DO` block, a function): one query, run only
//! when the client's requests mentioned such state, so the upstream is closed rather than
//! handed to the next client.
//!
//! # Design
//!
//! The query runs under whatever `search_path` the client left, so every function, relation
//! and operator in it is qualified with `pg_catalog`. Any failure (an error, a timeout, a reply
//! that fits nothing) is the caller's cue to close the upstream as well: it is never trusted
//! to be clean without an answer.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::escape::escape_literal;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::connect::{read_message, refused};
use super::{Upstream, UpstreamError};
use crate::protocol::ProtocolError;

/// Largest reply message read (one row of four booleans, or an error).
const MAX_REPLY: usize = 64 * 1024;

/// What a session kept past its transaction, by the first column of the check that saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// A session-level advisory lock (at an idle point every advisory lock is one).
    AdvisoryLock,
    /// An open cursor (at an idle point, only a cursor WITH HOLD can be).
    HoldCursor,
    /// A relation or function in the session's temporary schema.
    TempObject,
    /// `SESSION_USER` is no longer the role the upstream logged in as.
    SessionAuthorization,
}

impl Leftover {
    /// A stable label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Leftover::AdvisoryLock => "advisory_lock",
            Leftover::HoldCursor => "hold_cursor",
            Leftover::TempObject => "temp_object",
            Leftover::SessionAuthorization => "session_authorization",
        }
    }
}

const ORDER: [Leftover; 4] = [
    Leftover::AdvisoryLock,
    Leftover::HoldCursor,
    Leftover::TempObject,
    Leftover::SessionAuthorization,
];

/// The check, one boolean per [`Leftover`] in [`ORDER`]; `login` is the upstream's login role.
fn query(login: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks \
             WHERE locktype OPERATOR(pg_catalog.=) 'advisory' \
             AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()), \
         EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable), \
         EXISTS (SELECT FROM pg_catalog.pg_class \
             WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) \
         OR EXISTS (SELECT FROM pg_catalog.pg_proc \
             WHERE pronamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()), \
         SESSION_USER::pg_catalog.text OPERATOR(pg_catalog.<>) {}",
        escape_literal(login)
    )
}

/// Asks the idle upstream `up` what session state it still holds; `None` when none. On an
/// error the upstream is marked broken.
pub async fn find(up: &mut Upstream, timeout: Duration) -> Result<Option<Leftover>, UpstreamError> {
    let sql = query(&up.lease.username);
    let result = tokio::time::timeout(timeout, round_trip(up, &sql))
        .await
        .unwrap_or(Err(UpstreamError::Timeout));
    if result.is_err() {
        up.broken = true;
    }
    result
}

async fn round_trip(up: &mut Upstream, sql: &str) -> Result<Option<Leftover>, UpstreamError> {
    let mut buf = BytesMut::with_capacity(512);
    frontend::query(sql, &mut buf)?;
    up.stream.write_all(&buf).await?;
    up.stream.flush().await?;
    buf.clear();
    let mut found: Option<Option<Leftover>> = None;
    let mut error = None;
    loop {
        match read_message(&mut up.stream, &mut buf, MAX_REPLY).await? {
            Message::DataRow(row) => found = Some(first_true(&row)?),
            Message::ErrorResponse(body) => {
                error.get_or_insert_with(|| refused(&body));
            }
            Message::ReadyForQuery(r) => {
                return match (error, found, r.status()) {
                    (Some(e), _, _) => Err(e),
                    (None, Some(found), b'I') => Ok(found),
                    _ => Err(ProtocolError::Malformed("reply to the session state check").into()),
                };
            }
            _ => {}
        }
    }
}

/// The first column that says `t`, as its [`Leftover`].
fn first_true(
    row: &postgres_protocol::message::backend::DataRowBody,
) -> Result<Option<Leftover>, UpstreamError> {
    use fallible_iterator::FallibleIterator;
    let malformed = || UpstreamError::from(ProtocolError::Malformed("session state check row"));
    let buffer = row.buffer();
    let mut ranges = row.ranges();
    let mut i = 0;
    let mut first = None;
    while let Some(range) = ranges.next().map_err(|_| malformed())? {
        let value = range.and_then(|r| buffer.get(r)).ok_or_else(malformed)?;
        let kind = ORDER.get(i).ok_or_else(malformed)?;
        if value == b"t" && first.is_none() {
            first = Some(*kind);
        }
        i += 1;
    }
    if i != ORDER.len() {
        return Err(malformed());
    }
    Ok(first)
}
