//! A client's session settings (its startup parameters, and in transaction mode what its own
//! `SET`, `RESET` and `set_config` changed), which follow it onto whichever upstream serves it
//! and reach no other client.
//!
//! # Design
//!
//! Both sides keep a map, sorted by lower-case name: the client's [`ClientSettings`], and each
//! upstream's `UpstreamState::params` (what was set on it away from its login values). Before
//! a request runs, the two are compared (a slice comparison, no allocation); when they differ,
//! one hidden simple query ([`apply`]) makes them equal: `RESET` for names only the upstream
//! has, `pg_catalog.set_config` for the others, in the order session moves replay settings
//! (`crate::upstream::migrate::setting_rank`). It runs as one implicit transaction, so a
//! refusal changes nothing; the request then fails with PostgreSQL's error and the upstream is
//! closed. Its replies (ParameterStatus included: they only repeat the client's own values)
//! never reach the client.
//!
//! In transaction mode the relay notes, at almost no cost, that a request may have changed
//! settings: a CommandComplete `SET`/`RESET`/`DISCARD ALL` or any ParameterStatus (the backend
//! scanner's one check per such frame), or `set_config` in what the client sent (the statement
//! tracking's rewrite notes it from the pass it makes over every query text anyway, also when
//! a prepared statement that mentions it runs again: `take_settings_check` on
//! [`crate::client::statements::ClientStatements`]; without the tracking the relay reads the
//! request, [`mentions_set_config`]). Only then, at the idle ReadyForQuery, one hidden query reads the
//! session's settings ([`ClientSettings::learn`]) and both maps are taken from it. A `RESET` of
//! a startup parameter returns to the startup value, as in PostgreSQL: it is put back at once,
//! and the client told with a ParameterStatus when the parameter is a reported one.

pub mod greeting;
pub mod startup;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::escape::escape_identifier;

use crate::client::statements::sql::Sketch;
use crate::pool::Checkout;
use crate::protocol::backend;
use crate::upstream::UpstreamError;
use crate::upstream::migrate::{self, set_config_result, set_config_sql, setting_rank};

/// Settings as (lower-case name, value), sorted by name, one entry per name.
pub type Map = Vec<(Box<str>, Box<str>)>;

/// How long the hidden settings queries may take before the upstream is closed instead.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(5);

/// The parameters PostgreSQL 15 reports with ParameterStatus (`GUC_REPORT`), by their
/// reported names.
pub const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// The reported name of a lower-case parameter name, when it is a reported parameter.
pub fn reported_name(name: &str) -> Option<&'static str> {
    REPORTED
        .iter()
        .copied()
        .find(|r| r.eq_ignore_ascii_case(name))
}

/// One client's settings.
#[derive(Debug, Default)]
pub struct ClientSettings {
    /// Its startup parameters: what a `RESET` returns to (shared with the pool's clients
    /// that sent the same, see [`greeting::ReportedCache`]).
    startup: Arc<Map>,
    /// What it has now, once that differs from `startup`: the startup values overlaid by its
    /// own changes. `None` while it changed nothing, so a client that never sets anything
    /// keeps one copy of its settings, not two.
    changed: Option<Map>,
}

/// Why what a client changed could not be learned; the upstream is closed.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Reading or restoring the settings failed.
    #[error("reading the session's settings failed: {0}")]
    Upstream(#[from] UpstreamError),
    /// The session user is no longer the login role (`SET SESSION AUTHORIZATION`).
    #[error("the session user was changed")]
    SessionUser,
}

impl ClientSettings {
    /// Settings that start as `startup` (as [`startup::settings`] gives them).
    pub fn new(startup: Arc<Map>) -> ClientSettings {
        ClientSettings {
            startup,
            changed: None,
        }
    }

    /// What the client has now.
    fn current(&self) -> &Map {
        self.changed.as_ref().unwrap_or(&*self.startup)
    }

    /// True when `up` already holds exactly these settings: the hot path, one comparison.
    pub fn applied_on(&self, up: &Checkout) -> bool {
        *self.current() == up.state().params
    }

    /// Records that a session move recreated these settings on `up`.
    pub fn moved_onto(&self, up: &mut Checkout) {
        up.state_mut().params = self.current().clone();
    }

    /// Makes `up`'s settings the client's, unless they already are.
    pub async fn apply(&self, up: &mut Checkout) -> Result<(), UpstreamError> {
        if !self.applied_on(up) {
            apply(up, self.current(), false).await?;
        }
        Ok(())
    }

    /// Transaction mode, after a request that may have changed settings: reads them off
    /// `up`, takes the client's and the upstream's maps from them, and puts back startup
    /// values the client reset. ParameterStatus for the reported ones put back go to `out`.
    pub async fn learn(&mut self, up: &mut Checkout, out: &mut BytesMut) -> Result<(), LearnError> {
        let found = migrate::read_settings(up.upstream_mut(), SETTINGS_TIMEOUT).await?;
        if found.session_user != up.upstream().lease.username {
            return Err(LearnError::SessionUser);
        }
        let mut on_upstream: Map = found
            .settings
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase().into(), value.into()))
            .collect();
        if found.role != "none" {
            on_upstream.push(("role".into(), found.role.into()));
        }
        on_upstream.sort_by(|a, b| a.0.cmp(&b.0));
        on_upstream.dedup_by(|a, b| a.0 == b.0);
        let mut current = on_upstream.clone();
        for (name, value) in self.startup.iter() {
            if let Err(at) = current.binary_search_by(|(n, _)| n.cmp(name)) {
                current.insert(at, (name.clone(), value.clone()));
            }
        }
        up.state_mut().params = on_upstream;
        self.changed = (current != *self.startup).then_some(current);
        if !self.applied_on(up) {
            for (name, value) in apply(up, self.current(), false).await? {
                if let Some(reported) = reported_name(&name) {
                    backend::parameter_status(out, reported, &value);
                }
            }
        }
        Ok(())
    }
}

/// Makes `up`'s settings `wanted` with one simple query and records them on `up` (`all`: every
/// one of them set again, also those `up` already has). Returns each setting made, with its
/// value as PostgreSQL reports it.
pub async fn apply(
    up: &mut Checkout,
    wanted: &Map,
    all: bool,
) -> Result<Vec<(Box<str>, String)>, UpstreamError> {
    let (sql, set) = prelude(&up.state().params, wanted, all);
    let rows = migrate::query(up.upstream_mut(), &sql, SETTINGS_TIMEOUT).await?;
    if rows.len() != set.len() {
        up.upstream_mut().broken = true;
        return Err(crate::protocol::ProtocolError::Malformed("reply to set_config").into());
    }
    let mut made = Vec::with_capacity(set.len());
    for (name, row) in set.into_iter().zip(rows) {
        made.push((name, set_config_result(row.into_iter().next().flatten())?));
    }
    up.state_mut().params = wanted.clone();
    Ok(made)
}

/// The query that turns settings `have` into `wanted`, and the names it sets (one row each),
/// in order. `RESET role` comes first when the upstream has a role, so everything else runs
/// with the login role's privileges; a role to take comes after the other settings and
/// `client_encoding` last.
fn prelude(have: &Map, wanted: &Map, all: bool) -> (String, Vec<Box<str>>) {
    let mut sql = String::new();
    let had_role = have.iter().any(|(n, _)| &**n == "role");
    if had_role {
        sql.push_str("RESET role;");
    }
    let mut changes: Vec<(&str, Option<&str>)> = Vec::new();
    for (name, value) in wanted {
        let same = have.iter().any(|(n, v)| n == name && v == value);
        if all || !same || (had_role && &**name == "role") {
            changes.push((name, Some(value)));
        }
    }
    for (name, _) in have {
        if &**name != "role" && !wanted.iter().any(|(n, _)| n == name) {
            changes.push((name, None));
        }
    }
    changes.sort_by_key(|(name, _)| setting_rank(name));
    let mut set = Vec::new();
    for (name, value) in changes {
        match value {
            Some(value) => {
                sql.push_str(&set_config_sql(name, value));
                set.push(name.into());
            }
            None => {
                sql.push_str("RESET ");
                sql.push_str(&escape_identifier(name));
                sql.push(';');
            }
        }
    }
    (sql, set)
}

/// True when `bytes` (a request's frames, or one query text) may change settings without a
/// `SET` command tag: they mention `set_config` in any letter case (`SELECT set_config(...)`),
/// or open a `U&"…"` identifier, which may spell it with escapes. One pass ([`Sketch`]).
pub fn mentions_set_config(bytes: &[u8]) -> bool {
    let sketch = Sketch::of(bytes);
    sketch.set_config() || sketch.unicode()
}

#[cfg(test)]
mod tests;
