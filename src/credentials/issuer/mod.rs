//! The embedded `issuer` source: each lease is a short-lived PostgreSQL login role that
//! pglease creates, renews and drops itself over an admin connection (DESIGN §5).
//!
//! # Design
//!
//! - **Names and marks.** Every role is `<prefix>_<16 random [a-z0-9]>` and carries a
//!   `COMMENT ON ROLE` naming pglease, the credentials entry, its validity and the issuer
//!   instance that holds it ([`mark`]).
//!   Before any statement that alters or drops a role, the name is checked against exactly
//!   that pattern, and before renewal, revocation and reaping the mark is checked too, so the
//!   issuer never touches a role it did not make, even one with the same prefix.
//! - **Passwords.** 32 random bytes, URL-safe base64. PostgreSQL only ever receives the SCRAM
//!   verifier, so the cleartext cannot reach a server log. Errors are reduced to SQLSTATE and
//!   message, with the verifier scrubbed from them, and never quote the statement.
//!   `tokio_postgres` itself logs every statement at `debug`, so its log level must stay at
//!   `info` or above wherever the issuer runs.
//! - **Creation** runs as one simple-query batch, which PostgreSQL executes as one implicit
//!   transaction: either the role exists with everything set, mark included, or not at all.
//!   `act_as` is added to the roles it is a member of and set as its default role
//!   (`ALTER ROLE … SET role`), so the application's sessions act as `act_as` and everything
//!   they create belongs to that stable owner: each new lease sees what earlier ones made.
//!   Renewal moves `VALID UNTIL` and rewrites the mark in one batch.
//! - **Revocation** first takes LOGIN away (committed, so no new session can start), then
//!   terminates the role's sessions, hands what it still owns to `act_as` (or, without it, to
//!   the admin role) unless `on_revoke = "drop_objects"`, and drops it, in one batch (see
//!   [`reaper`]). `REASSIGN OWNED` and `DROP OWNED` act on the admin connection's database only.
//! - **Privileges.** The admin role needs CREATEROLE and ADMIN on every `member_of` and
//!   `act_as` role, and membership in `act_as` (REASSIGN OWNED needs the privileges of the
//!   role it hands objects to). Before revoking, the issuer grants the issued role to the
//!   admin itself, as ending its sessions and REASSIGN/DROP OWNED require the role's
//!   privileges; the grant goes with the role.
//! - **Connection.** One admin connection, opened lazily and opened again on the next call
//!   after it drops; a failed connect is [`SourceError::Unreachable`], so the rotator retries.
//!   Each new connection first takes the instance's advisory lock, which tells the other
//!   replicas this instance is alive ([`liveness`]); it must therefore be a direct session,
//!   not one behind a transaction-pooling proxy.
//!   TLS follows `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in `admin_url` ([`admin`]).
//!   SQL errors are [`SourceError::Rejected`].
//! - **Templates** (`creation_statements`, …) replace the built-in statements; see
//!   [`statements`] for how placeholders are quoted. `{{password}}` is the verifier on creation
//!   and empty elsewhere; `{{expiration}}` is empty on revocation. The issuer still appends the
//!   mark to creation and renewal templates (and `SET role` for `act_as` to creation), in the
//!   same batch; a creation template must grant `member_of` and `act_as` itself, and a
//!   revocation template alone decides what happens to owned objects (`on_revoke` does not
//!   apply).

mod admin;
mod liveness;
mod mark;
mod reaper;
mod session;
mod statements;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postgres_protocol::escape::escape_literal;
use tracing::debug;

use super::source::SourceFuture;
use super::{Lease, Source, SourceError};
use crate::config::IssuerConfig;
use crate::secret::Secret;
use mark::{InstanceId, Owner};
use reaper::{RoleState, not_ours};
use statements::{StatementError, Values, ident, render, timestamp, whole_seconds};

/// Random characters after `<prefix>_`: 36^16 ≈ 2^82 names, so collisions never matter.
const NAME_RANDOM_CHARS: usize = 16;
/// Random bytes of each password, before base64.
const PASSWORD_BYTES: usize = 32;
/// Longest prefix that keeps `<prefix>_<random>` within PostgreSQL's 63-byte names.
const MAX_PREFIX_BYTES: usize = 20;

/// A source that creates a PostgreSQL role per lease and drops it when the lease ends.
///
/// Cheap to share behind an `Arc`; calls may run concurrently.
pub struct IssuerSource {
    /// The credentials entry's name, written into every role's mark so that the reaper of
    /// one entry never takes another's roles.
    entry: String,
    /// The settings; `admin_url` stays a [`Secret`], and `Debug` is not derived.
    config: IssuerConfig,
    /// Parsed from `admin_url` once (TLS files read too), so a bad URL is a start-up error,
    /// not a retry loop.
    admin: admin::Admin,
    /// This run's identity among replicas: written into every role's mark, and the key of
    /// the advisory lock that says it is alive.
    instance: InstanceId,
    /// Roles whose lease the rotator still holds (issued, revocation not yet asked for): the
    /// reaper leaves these to revocation even once expired.
    held: Mutex<HashSet<String>>,
    /// The admin connection, if one is open. An async lock, held while connecting, so two
    /// calls never open two sessions that would race for the instance's advisory lock.
    admin_session: tokio::sync::Mutex<Option<session::AdminSession>>,
}

impl IssuerSource {
    /// Checks `config`, connects, and drops expired roles a previous run of credentials entry
    /// `entry` left behind.
    ///
    /// Fails with `Rejected` for a config the issuer cannot use safely and `Unreachable` when
    /// PostgreSQL cannot be reached; use [`IssuerSource::from_config`] to start without it.
    pub async fn new(entry: &str, config: &IssuerConfig) -> Result<IssuerSource, SourceError> {
        let source = IssuerSource::from_config(entry, config)?;
        source.reap().await?;
        Ok(source)
    }

    /// Checks `config` without connecting: the first call opens the admin connection. For a
    /// proxy that must start while PostgreSQL is down; call [`IssuerSource::reap`] later.
    /// `entry` is the `[credentials.NAME]` this issuer serves; its roles are marked with it.
    pub fn from_config(entry: &str, config: &IssuerConfig) -> Result<IssuerSource, SourceError> {
        if entry.contains('\0') {
            return Err(SourceError::Rejected(
                "issuer credentials entry name contains NUL".into(),
            ));
        }
        check_config(config)?;
        let admin = admin::parse(config.admin_url.expose())?;
        Ok(IssuerSource {
            entry: entry.to_owned(),
            config: config.clone(),
            admin,
            instance: InstanceId::random(),
            held: Mutex::new(HashSet::new()),
            admin_session: tokio::sync::Mutex::new(None),
        })
    }

    /// This instance's id, as its roles' marks carry it.
    pub fn instance(&self) -> String {
        self.instance.to_string()
    }

    /// How often the owner should call [`IssuerSource::reap`] (`reap_interval`).
    pub fn reap_interval(&self) -> Duration {
        self.config.reap_interval
    }

    /// Records whether the rotator holds the lease of role `name`.
    fn set_held(&self, name: &str, held: bool) {
        if let Ok(mut set) = self.held.lock() {
            if held {
                set.insert(name.to_owned());
            } else {
                set.remove(name);
            }
        }
    }

    fn is_held(&self, name: &str) -> bool {
        self.held
            .lock()
            .map(|set| set.contains(name))
            .unwrap_or(true)
    }

    async fn issue(&self) -> Result<Lease, SourceError> {
        let name = format!("{}_{}", self.config.prefix, random_suffix());
        let password = Secret::new(random_password());
        let verifier = Secret::new(postgres_protocol::password::scram_sha_256(
            password.expose().as_bytes(),
        ));
        let issued_at = whole_seconds(SystemTime::now());
        let expires_at = issued_at + self.config.ttl;
        let expiration = timestamp(expires_at);
        let sql = Secret::new(self.creation_sql(&name, verifier.expose(), &expiration)?);
        // Held before it exists, so no reaper of ours can see it unheld; let go again if the
        // creation failed, so a role created despite a lost response is reaped once expired.
        self.set_held(&name, true);
        let created = self
            .execute(sql.expose(), &[verifier.expose(), password.expose()])
            .await;
        if let Err(e) = created {
            self.set_held(&name, false);
            return Err(e);
        }
        debug!(role = %name, expires = %expiration, "issued role created");
        Ok(Lease {
            id: name.clone(),
            username: name,
            password,
            issued_at,
            expires_at: Some(expires_at),
            renewable: true,
            generation: 0,
        })
    }

    fn creation_sql(
        &self,
        name: &str,
        verifier: &str,
        expiration: &str,
    ) -> Result<String, SourceError> {
        let mut sql = match &self.config.creation_statements {
            Some(templates) => {
                let values = Values {
                    name,
                    password: verifier,
                    expiration,
                };
                render_all(templates, &values)?
            }
            None => {
                let mut sql = format!(
                    "CREATE ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}",
                    ident(name).map_err(statement_error)?,
                    escape_literal(verifier),
                    escape_literal(expiration)
                );
                let mut roles: Vec<&str> =
                    self.config.member_of.iter().map(String::as_str).collect();
                if let Some(act_as) = self.config.act_as.as_deref() {
                    if !roles.contains(&act_as) {
                        roles.push(act_as);
                    }
                }
                if !roles.is_empty() {
                    let quoted: Result<Vec<String>, _> = roles.into_iter().map(ident).collect();
                    sql.push_str(" IN ROLE ");
                    sql.push_str(&quoted.map_err(statement_error)?.join(", "));
                }
                sql
            }
        };
        // Added after a template too, in the same batch, so every role is marked as ours from
        // the moment it exists and custom templates cannot forget it.
        let role = ident(name).map_err(statement_error)?;
        sql.push_str(";\n");
        sql.push_str(&mark::comment_sql(
            &role,
            &self.entry,
            self.instance,
            expiration,
        ));
        if let Some(act_as) = &self.config.act_as {
            sql.push_str(&format!(
                ";\nALTER ROLE {role} SET role = {}",
                escape_literal(act_as)
            ));
        }
        Ok(sql)
    }

    async fn extend(&self, lease: &Lease, until: SystemTime) -> Result<SystemTime, SourceError> {
        let name = self.own_role(&lease.id)?;
        if self.role_state(name).await? != RoleState::Marked(Owner::Instance(self.instance)) {
            return Err(not_ours(name));
        }
        let cap = lease.issued_at + self.config.max_ttl;
        let until = whole_seconds(until.min(cap));
        let expiration = timestamp(until);
        let mut sql = match &self.config.renew_statements {
            Some(templates) => {
                let values = Values {
                    name,
                    password: "",
                    expiration: &expiration,
                };
                render_all(templates, &values)?
            }
            None => format!(
                "ALTER ROLE {} VALID UNTIL {}",
                ident(name).map_err(statement_error)?,
                escape_literal(&expiration)
            ),
        };
        // The mark carries the validity, so a DBA reading it sees the renewed one.
        sql.push_str(";\n");
        let role = ident(name).map_err(statement_error)?;
        sql.push_str(&mark::comment_sql(
            &role,
            &self.entry,
            self.instance,
            &expiration,
        ));
        self.execute(&sql, &[]).await?;
        debug!(role = %name, expires = %expiration, "issued role renewed");
        Ok(until)
    }
}

impl Source for IssuerSource {
    fn kind(&self) -> &'static str {
        "issuer"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        Box::pin(self.issue())
    }

    fn renew<'a>(&'a self, lease: &'a Lease, until: SystemTime) -> SourceFuture<'a, SystemTime> {
        Box::pin(self.extend(lease, until))
    }

    fn revoke<'a>(&'a self, lease: &'a Lease) -> SourceFuture<'a, ()> {
        Box::pin(self.revoke_role(&lease.id))
    }
}

/// The checks the issuer's safety rests on, repeated here so a config built in code cannot
/// skip them: the prefix pattern and names PostgreSQL would not cut short.
fn check_config(config: &IssuerConfig) -> Result<(), SourceError> {
    let prefix = &config.prefix;
    let prefix_ok = prefix.len() <= MAX_PREFIX_BYTES
        && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !prefix_ok {
        return Err(SourceError::Rejected(format!(
            "issuer prefix {prefix:?} must match [a-z_][a-z0-9_]* and be at most \
             {MAX_PREFIX_BYTES} bytes"
        )));
    }
    let roles = config.member_of.iter().chain(config.act_as.as_ref());
    for role in roles {
        if role.is_empty() || role.contains('\0') || role.len() > 63 {
            return Err(SourceError::Rejected(format!(
                "issuer role name {:?} is empty, too long or contains NUL",
                role.replace('\0', "\\0")
            )));
        }
    }
    if config.ttl.is_zero() || config.max_ttl < config.ttl {
        return Err(SourceError::Rejected(
            "issuer ttl must be positive and at most max_ttl".into(),
        ));
    }
    Ok(())
}

fn render_all(templates: &[String], values: &Values<'_>) -> Result<String, SourceError> {
    let rendered: Result<Vec<String>, _> = templates.iter().map(|t| render(t, values)).collect();
    Ok(rendered.map_err(statement_error)?.join(";\n"))
}

fn statement_error(e: StatementError) -> SourceError {
    SourceError::Rejected(e.to_string())
}

/// SQLSTATE and message only (never detail or the statement), with `secrets` scrubbed in
/// case PostgreSQL quoted part of the statement back, e.g. in a syntax error.
fn map_error(e: &tokio_postgres::Error, secrets: &[&str]) -> SourceError {
    let redact = |mut text: String| {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret, "***");
        }
        text
    };
    match e.as_db_error() {
        Some(db) => {
            SourceError::Rejected(redact(format!("{}: {}", db.code().code(), db.message())))
        }
        None => SourceError::Unreachable(redact(with_causes(e))),
    }
}

/// tokio-postgres' message with its causes: "error performing TLS handshake" alone does not
/// say that the certificate was refused, nor why.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<tokio_rustls::rustls::Error>());
        match inner.or_else(|| c.downcast_ref::<tokio_rustls::rustls::Error>()) {
            Some(tls) => text.push_str(&format!(": {}", crate::tls::client::describe(tls))),
            None => text.push_str(&format!(": {c}")),
        }
        cause = c.source();
    }
    text
}

fn random_suffix() -> String {
    (0..NAME_RANDOM_CHARS)
        .filter_map(|_| char::from_digit(rand::random_range(0..36), 36))
        .collect()
}

fn random_password() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::fill(&mut bytes);
    let password = URL_SAFE_NO_PAD.encode(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    password
}

#[cfg(test)]
mod tests;
