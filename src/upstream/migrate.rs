//! Moving a session-mode client to a new upstream when its lease is retired: what session
//! state can be read off the old upstream and replayed on the new one (settings, prepared
//! statements, LISTEN channels), and what pins a session to its upstream (temporary tables,
//! advisory locks, cursors WITH HOLD), DESIGN §5.3.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::connect::{read_message, refused};
use super::{Upstream, UpstreamError};
use crate::protocol::ProtocolError;

/// Largest single reply message read while capturing state.
const MAX_MESSAGE: usize = 1 << 20;

/// Reads one session's movable state off the old upstream, or why it cannot move.
const CAPTURE: &str = "\
SELECT 'pin', concat_ws(', ',
    CASE WHEN EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = pg_my_temp_schema()) THEN 'temporary tables' END,
    CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) THEN 'advisory locks' END,
    CASE WHEN EXISTS (SELECT 1 FROM pg_cursors WHERE is_holdable) THEN 'cursors WITH HOLD' END), NULL
UNION ALL
SELECT 'set', name, current_setting(name) FROM pg_settings WHERE source = 'session'
UNION ALL
SELECT 'prepare', name, CASE WHEN from_sql THEN statement
    ELSE format('PREPARE %I (%s) AS %s', name, array_to_string(parameter_types::text[], ','), statement) END
    FROM pg_prepared_statements
UNION ALL
SELECT 'listen', pg_listening_channels(), NULL";

/// A session's state as read off its upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Why the session cannot move (empty when it can): temporary tables, advisory locks, ...
    pub pinned_by: String,
    /// Settings changed with SET in this session, as (name, value).
    pub settings: Vec<(String, String)>,
    /// One statement per prepared statement that recreates it.
    pub prepared: Vec<String>,
    /// Channels the session LISTENs on.
    pub listens: Vec<String>,
}

/// Reads the state of the idle session on `up`.
pub async fn capture(up: &mut Upstream, timeout: Duration) -> Result<SessionState, UpstreamError> {
    let rows = query_rows(up, CAPTURE, timeout).await?;
    let mut state = SessionState::default();
    for row in rows {
        let mut it = row.into_iter();
        let (kind, a, b) = (
            it.next().flatten(),
            it.next().flatten(),
            it.next().flatten(),
        );
        match (kind.as_deref(), a, b) {
            (Some("pin"), Some(reason), _) => state.pinned_by = reason,
            (Some("set"), Some(name), Some(value)) => state.settings.push((name, value)),
            (Some("prepare"), Some(_), Some(sql)) => state.prepared.push(sql),
            (Some("listen"), Some(channel), _) => state.listens.push(channel),
            _ => {}
        }
    }
    Ok(state)
}

/// Replays `state` on a fresh upstream. Settings go through `set_config`, so every value is
/// a quoted literal whatever its type.
pub async fn replay(
    up: &mut Upstream,
    state: &SessionState,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let mut sql = String::new();
    for (name, value) in &state.settings {
        sql.push_str(&format!(
            "SELECT set_config({}, {}, false);",
            escape_literal(name),
            escape_literal(value)
        ));
    }
    for channel in &state.listens {
        sql.push_str(&format!("LISTEN {};", escape_identifier(channel)));
    }
    if !sql.is_empty() {
        query_rows(up, &sql, timeout).await?;
    }
    // PREPARE statements one by one: each is a whole statement text of its own.
    for prepare in &state.prepared {
        query_rows(up, prepare, timeout).await?;
    }
    Ok(())
}

/// Runs a simple query and returns its rows as text; an ErrorResponse becomes an error and
/// the connection is marked broken on any failure.
pub async fn query_rows(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    let result = tokio::time::timeout(timeout, query_rows_inner(up, sql))
        .await
        .unwrap_or(Err(UpstreamError::Timeout));
    if result.is_err() {
        up.broken = true;
    }
    result
}

async fn query_rows_inner(
    up: &mut Upstream,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    let mut buf = BytesMut::with_capacity(1024);
    frontend::query(sql, &mut buf)?;
    up.stream.write_all(&buf).await?;
    buf.clear();
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let message = read_message(&mut up.stream, &mut buf, MAX_MESSAGE).await?;
        match message {
            Message::DataRow(row) => {
                let data = row.buffer();
                let mut values = Vec::new();
                let mut ranges = row.ranges();
                while let Some(range) = fallible_iterator::FallibleIterator::next(&mut ranges)? {
                    values.push(range.map(|r| String::from_utf8_lossy(&data[r]).into_owned()));
                }
                rows.push(values);
            }
            Message::ErrorResponse(body) => error = Some(refused(&body)),
            Message::ReadyForQuery(r) => {
                return match (error, r.status()) {
                    (Some(e), _) => Err(e),
                    (None, b'I') => Ok(rows),
                    (None, _) => {
                        Err(ProtocolError::Malformed("session left in a transaction").into())
                    }
                };
            }
            _ => {}
        }
    }
}
