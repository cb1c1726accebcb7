//! Moving a session-mode client to a new upstream when its lease is retired: what session
//! state is read off the old upstream and recreated on the new one (settings, prepared
//! statements, LISTEN channels), and what pins a session to its upstream instead, DESIGN §5.3.
//!
//! # Design
//!
//! A move recreates state from its own definitions and never executes anything else.
//!
//! - **Capture** is one query on the old upstream. It runs under the client's `search_path`,
//!   so every function, relation, type and operator in it is qualified with `pg_catalog`: no
//!   object the client made can stand in for one. Text comes back as hex of its UTF-8 bytes,
//!   so neither the client's `client_encoding` nor `bytea_output` can garble it.
//! - **Settings** are replayed with `pg_catalog.set_config`, every name and value a quoted
//!   literal, `role` after the others (setting some parameters needs the login role's own
//!   privileges) and `client_encoding` after everything else, so all text is sent while the new
//!   upstream still speaks the UTF-8 it logged in with.
//! - **Protocol-level statements** (Parse) are one statement each: recreated with a Parse of the
//!   same name, text and parameter types, after the settings, so they are parsed under the
//!   session's current ones. A text with a `'…'` string holding a backslash means what the
//!   `standard_conforming_strings` in force says; if the session ever SET that, the value its
//!   statements were prepared under is not known, and they pin.
//! - **SQL `PREPARE`**: the catalog holds the whole Query text that ran it, other statements
//!   included. [`find_prepare`] picks out the one `PREPARE` of that name, which is run as the
//!   unnamed statement of an extended-protocol exchange: PostgreSQL refuses more than one
//!   command there, so nothing else can run even if the text were misread. Preparing never
//!   executes the prepared statement.
//! - **Pins**: temporary tables, advisory locks and cursors WITH HOLD cannot move; a `PREPARE`
//!   that cannot be picked out exactly is not guessed at, nor a text whose meaning depends on a
//!   `standard_conforming_strings` the session changed. `SET SESSION AUTHORIZATION` pins: it
//!   changes the identity the upstream logged in as (for a non-superuser, only to that login's
//!   own role, which the next lease is not), and a move must not carry one lease's identity
//!   over to another. For the same reason `SET ROLE` to the old lease's own login role pins.
//!   Any other role (`none` included) is replayed: PostgreSQL checks it against the new
//!   lease's login role, so a move grants nothing the client could not `SET` itself.

mod exchange;
mod notify;
mod prepare_text;

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::message::frontend;

pub use notify::{HandOverError, hand_over};
pub use prepare_text::{Found, depends_on_conforming_strings, find_prepare};

use super::{Upstream, UpstreamError};
use crate::protocol::ProtocolError;
use exchange::{bounded, recreate, simple};

/// Reads one session's state off the old upstream: one row per pin reason, setting, prepared
/// statement and channel, as (kind, hex UTF-8 text, hex UTF-8 text, from_sql, parameter OIDs),
/// and one row with the session user and role. `pg_settings` never lists `role` or
/// `session_authorization`, so those two are read on their own.
const CAPTURE: &str = concat!(
    "\
SELECT 'pin', 'temp', NULL, NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_class
    WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema())
UNION ALL
SELECT 'pin', 'advisory', NULL, NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_locks
    WHERE locktype OPERATOR(pg_catalog.=) 'advisory'
    AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid())
UNION ALL
SELECT 'pin', 'hold', NULL, NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_cursors
    WHERE is_holdable)
UNION ALL
",
    settings_rows!(),
    "
UNION ALL
SELECT 'prepare', pg_catalog.encode(pg_catalog.convert_to(name, 'UTF8'), 'hex'),
    pg_catalog.encode(pg_catalog.convert_to(statement, 'UTF8'), 'hex'),
    from_sql::pg_catalog.text, parameter_types::pg_catalog.oid[]::pg_catalog.text
    FROM pg_catalog.pg_prepared_statements
UNION ALL
SELECT 'listen', pg_catalog.encode(pg_catalog.convert_to(c, 'UTF8'), 'hex'), NULL, NULL, NULL
    FROM pg_catalog.pg_listening_channels() c"
);

/// The part of [`CAPTURE`] that reads the session's settings: one `who` row (session user and
/// role) and one `set` row per setting made in the session, as hex of UTF-8 text. A macro, so
/// [`CAPTURE`] and [`SETTINGS`] are one text, not two copies.
macro_rules! settings_rows {
    () => {
        "SELECT 'who', pg_catalog.encode(pg_catalog.convert_to(SESSION_USER::pg_catalog.text, 'UTF8'), 'hex'),
    pg_catalog.encode(pg_catalog.convert_to(pg_catalog.current_setting('role'), 'UTF8'), 'hex'),
    NULL, NULL
UNION ALL
SELECT 'set', pg_catalog.encode(pg_catalog.convert_to(name, 'UTF8'), 'hex'),
    pg_catalog.encode(pg_catalog.convert_to(pg_catalog.current_setting(name), 'UTF8'), 'hex'),
    NULL, NULL
    FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session'"
    };
}
use settings_rows;

/// Reads only a session's settings (the `who` and `set` rows of [`CAPTURE`]): what a
/// transaction-mode client changed, read at the end of its transaction.
const SETTINGS: &str = settings_rows!();

/// Why a session stays on its upstream instead of moving to a new lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Temporary tables live and die with the backend.
    TemporaryTables,
    /// Advisory locks are held by the backend.
    AdvisoryLocks,
    /// Open cursors WITH HOLD belong to the backend.
    HoldCursors,
    /// `SET SESSION AUTHORIZATION` changed the identity the upstream logged in as.
    SessionAuthorization,
    /// `SET ROLE` to the old lease's own login role, which the new lease cannot take.
    OwnLeaseRole,
    /// A SQL `PREPARE` whose one statement cannot be picked out of its query text exactly.
    UnrecreatableStatements,
}

impl Pin {
    /// The reason as logs and errors name it.
    pub fn reason(self) -> &'static str {
        match self {
            Pin::TemporaryTables => "temporary tables",
            Pin::AdvisoryLocks => "advisory locks",
            Pin::HoldCursors => "cursors WITH HOLD",
            Pin::SessionAuthorization => "SET SESSION AUTHORIZATION",
            Pin::OwnLeaseRole => "SET ROLE to the lease's own login role",
            Pin::UnrecreatableStatements => "prepared statements that cannot be recreated exactly",
        }
    }

    fn from_code(code: &str) -> Option<Pin> {
        Some(match code {
            "temp" => Pin::TemporaryTables,
            "advisory" => Pin::AdvisoryLocks,
            "hold" => Pin::HoldCursors,
            _ => return None,
        })
    }
}

/// How one prepared statement is recreated on the new upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Made with a protocol-level Parse: a Parse of the same name, text and parameter types.
    Protocol {
        name: String,
        text: String,
        types: Vec<u32>,
    },
    /// Made with SQL `PREPARE`: that one statement, picked out of the text that ran it.
    Sql { name: String, statement: String },
}

/// A session's state as read off its upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Why the session cannot move (empty when it can).
    pub pinned_by: Vec<Pin>,
    /// Settings changed with SET in this session, as (name, value).
    pub settings: Vec<(String, String)>,
    /// How to recreate each prepared statement.
    pub prepared: Vec<Prepared>,
    /// Channels the session LISTENs on.
    pub listens: Vec<String>,
    /// Notifications the old upstream delivered while its state was read, whole
    /// NotificationResponse frames for the client.
    pub notifications: BytesMut,
    /// Some statement's text holds a `'…'` string with a backslash.
    depends_on_conforming_strings: bool,
}

impl SessionState {
    /// The pin reasons, comma-separated, for logs.
    pub fn pin_reasons(&self) -> String {
        let reasons: Vec<&str> = self.pinned_by.iter().map(|p| p.reason()).collect();
        reasons.join(", ")
    }

    fn pin(&mut self, pin: Pin) {
        if !self.pinned_by.contains(&pin) {
            self.pinned_by.push(pin);
        }
    }

    /// A statement whose meaning depends on `standard_conforming_strings` is parsed again
    /// under the session's current value. That is the value it was prepared under unless the
    /// session changed it, in which case what it was then is not known.
    fn check_conforming_strings(&mut self) {
        let changed = self
            .settings
            .iter()
            .any(|(name, _)| name == "standard_conforming_strings");
        if self.depends_on_conforming_strings && changed {
            self.pin(Pin::UnrecreatableStatements);
        }
    }

    /// Takes in one row of [`CAPTURE`] read off an upstream that logged in as `login`.
    fn add(&mut self, row: Vec<Option<String>>, login: &str) -> Result<(), UpstreamError> {
        let mut columns = row.into_iter();
        let mut next = || columns.next().flatten();
        let (kind, a, b, from_sql, types) = (next(), next(), next(), next(), next());
        match kind.as_deref() {
            Some("pin") => {
                if let Some(pin) = a.as_deref().and_then(Pin::from_code) {
                    self.pin(pin);
                }
            }
            Some("who") => {
                let (session_user, role) = (unhex(a)?, unhex(b)?);
                if session_user != login {
                    self.pin(Pin::SessionAuthorization);
                } else if role == login {
                    self.pin(Pin::OwnLeaseRole);
                } else {
                    // Always replayed, `none` included: the new lease may log in with a
                    // default role of its own (`ALTER ROLE … SET role`) that the session
                    // has already left.
                    self.settings.push(("role".to_owned(), role));
                }
            }
            Some("set") => self.settings.push((unhex(a)?, unhex(b)?)),
            Some("listen") => self.listens.push(unhex(a)?),
            Some("prepare") => {
                let (name, text) = (unhex(a)?, unhex(b)?);
                if from_sql.as_deref() == Some("true") {
                    match find_prepare(&text, &name) {
                        Some(found) => {
                            self.depends_on_conforming_strings |=
                                found.depends_on_conforming_strings;
                            self.prepared.push(Prepared::Sql {
                                statement: found.statement.to_owned(),
                                name,
                            });
                        }
                        None => self.pin(Pin::UnrecreatableStatements),
                    }
                } else {
                    let types = oids(types.as_deref())?;
                    self.depends_on_conforming_strings |= depends_on_conforming_strings(&text);
                    self.prepared.push(Prepared::Protocol { name, text, types });
                }
            }
            _ => return Err(malformed()),
        }
        Ok(())
    }
}

/// Reads the state of the idle session on `up`. `max_message_size` bounds what a client may
/// have sent, so it also bounds each row (a statement text, hex-encoded).
pub async fn capture(
    up: &mut Upstream,
    max_message_size: usize,
    timeout: Duration,
) -> Result<SessionState, UpstreamError> {
    let limit = max_message_size.saturating_mul(2).saturating_add(64 * 1024);
    let mut request = BytesMut::new();
    frontend::query(CAPTURE, &mut request)?;
    let reply = bounded(up, &request, limit, timeout).await?;
    let mut state = SessionState {
        notifications: reply.notifications,
        ..SessionState::default()
    };
    for row in reply.rows {
        state.add(row, &up.lease.username)?;
    }
    state.check_conforming_strings();
    Ok(state)
}

/// Recreates `state` on a fresh upstream, in the order the module doc gives.
pub async fn replay(
    up: &mut Upstream,
    state: &SessionState,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let rank = setting_rank;
    let mut settings: Vec<&(String, String)> = state.settings.iter().collect();
    settings.sort_by_key(|(name, _)| rank(name));
    let (early, late): (Vec<_>, Vec<_>) = settings.into_iter().partition(|(n, _)| rank(n) < 2);
    simple(up, &set_configs(&early), timeout).await?;
    for prepared in &state.prepared {
        recreate(up, prepared, timeout).await?;
    }
    let mut sql = String::new();
    for channel in &state.listens {
        sql.push_str(&format!("LISTEN {};", escape_identifier(channel)));
    }
    sql.push_str(&set_configs(&late));
    simple(up, &sql, timeout).await
}

/// Where a setting goes in a replay: `role` after the others (setting some parameters needs
/// the login role's own privileges), `client_encoding` last (all text is sent while the
/// upstream still speaks UTF-8). Sort settings by it.
pub fn setting_rank(name: &str) -> u8 {
    match name {
        "role" => 1,
        "client_encoding" => 2,
        _ => 0,
    }
}

/// One `pg_catalog.set_config` call setting `name` to `value` for the session, both quoted
/// literals; it returns the value as PostgreSQL reports it, as hex of its UTF-8 bytes (so no
/// `client_encoding` set in the same query can garble it).
pub fn set_config_sql(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.encode(pg_catalog.convert_to(\
         pg_catalog.set_config({}, {}, false), 'UTF8'), 'hex');",
        escape_literal(name),
        escape_literal(value)
    )
}

/// One `pg_catalog.set_config` call per setting.
fn set_configs(settings: &[&(String, String)]) -> String {
    settings
        .iter()
        .map(|(name, value)| set_config_sql(name, value))
        .collect()
}

/// A session's settings as [`read_settings`] finds them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `SESSION_USER`: the login role unless `SET SESSION AUTHORIZATION` changed it.
    pub session_user: String,
    /// `current_setting('role')`: `none` unless `SET ROLE` changed it.
    pub role: String,
    /// Every setting made in the session (source `session`), as (name, value).
    pub settings: Vec<(String, String)>,
}

/// Reads the settings of the idle session on `up` ([`SETTINGS`]).
pub async fn read_settings(
    up: &mut Upstream,
    timeout: Duration,
) -> Result<Settings, UpstreamError> {
    let mut found = Settings::default();
    for row in query(up, SETTINGS, timeout).await? {
        let mut columns = row.into_iter();
        let mut next = || columns.next().flatten();
        let (kind, a, b) = (next(), next(), next());
        match kind.as_deref() {
            Some("who") => (found.session_user, found.role) = (unhex(a)?, unhex(b)?),
            Some("set") => found.settings.push((unhex(a)?, unhex(b)?)),
            _ => return Err(malformed()),
        }
    }
    Ok(found)
}

/// Runs `sql` as a simple query and returns its rows, each value as text; every
/// `set_config_sql` result decoded from hex.
pub async fn query(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    exchange::rows(up, sql, timeout).await
}

/// Decodes one [`set_config_sql`] result.
pub fn set_config_result(value: Option<String>) -> Result<String, UpstreamError> {
    unhex(value)
}

/// A row of the capture that does not have the shape the capture query gives it.
pub(super) fn malformed() -> UpstreamError {
    ProtocolError::Malformed("session state").into()
}

/// Decodes hex of UTF-8 text.
fn unhex(hex: Option<String>) -> Result<String, UpstreamError> {
    let hex = hex.ok_or_else(malformed)?;
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(malformed());
    }
    let nibble = |d: u8| char::from(d).to_digit(16).ok_or_else(malformed);
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        let byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        bytes.push(u8::try_from(byte).map_err(|_| malformed())?);
    }
    String::from_utf8(bytes).map_err(|_| malformed())
}

/// Parses an `oid[]` in its text form, `{23,25}`.
fn oids(text: Option<&str>) -> Result<Vec<u32>, UpstreamError> {
    let inner = text
        .and_then(|t| t.strip_prefix('{'))
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(malformed)?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|oid| oid.parse().map_err(|_| malformed()))
        .collect()
}

#[cfg(test)]
mod tests;
