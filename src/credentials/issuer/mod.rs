//! The embedded `issuer` source: each lease is a short-lived PostgreSQL login role that
//! pglease creates, renews and drops itself over an admin connection (DESIGN §5).
//!
//! # Design
//!
//! - **Names.** Every role is `<prefix>_<16 random [a-z0-9]>`. Before any statement that alters
//!   or drops a role, the name is checked against exactly that pattern, so the issuer can never
//!   touch a role it did not make, even one with a similar name.
//! - **Passwords.** 32 random bytes, URL-safe base64. PostgreSQL only ever receives the SCRAM
//!   verifier, so the cleartext cannot reach a server log. Errors are reduced to SQLSTATE and
//!   message, with the verifier scrubbed from them, and never quote the statement.
//!   `tokio_postgres` itself logs every statement at `debug`, so its log level must stay at
//!   `info` or above wherever the issuer runs.
//! - **Creation** runs as one simple-query batch, which PostgreSQL executes as one implicit
//!   transaction: either the role exists with everything set, or not at all. `act_as` is added
//!   to the roles it is a member of (so `SET role` works at login) and set as its default role.
//! - **Revocation** first takes LOGIN away (committed, so no new session can start), then
//!   terminates the role's sessions, drops or reassigns what it owns and drops it, in one batch.
//!   `DROP OWNED` and `REASSIGN OWNED` act on the admin connection's database only.
//! - **Privileges.** The admin role needs CREATEROLE and ADMIN on every `member_of` and
//!   `act_as` role (and, for `drop_owned = false`, membership in `act_as`). Before revoking,
//!   the issuer grants the issued role to the admin itself, as ending its sessions and
//!   `DROP OWNED` require the role's privileges; the grant goes with the role.
//! - **Connection.** One admin connection, opened lazily and opened again on the next call
//!   after it drops; a failed connect is [`SourceError::Unreachable`], so the rotator retries.
//!   SQL errors are [`SourceError::Rejected`].
//! - **Templates** (`creation_statements`, …) replace the built-in statements; see
//!   [`statements`] for how placeholders are quoted. `{{password}}` is the verifier on creation
//!   and empty elsewhere; `{{expiration}}` is empty on revocation.

mod reaper;
mod statements;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postgres_protocol::escape::escape_literal;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use super::source::SourceFuture;
use super::{Lease, Source, SourceError};
use crate::config::IssuerConfig;
use crate::secret::Secret;
use statements::{StatementError, Values, ident, render, timestamp, whole_seconds};

/// Random characters after `<prefix>_`: 36^16 ≈ 2^82 names, so collisions never matter.
const NAME_RANDOM_CHARS: usize = 16;
/// Random bytes of each password, before base64.
const PASSWORD_BYTES: usize = 32;
/// Longest wait for the admin connection before the source counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest prefix that keeps `<prefix>_<random>` within PostgreSQL's 63-byte names.
const MAX_PREFIX_BYTES: usize = 20;

/// A source that creates a PostgreSQL role per lease and drops it when the lease ends.
///
/// Cheap to share behind an `Arc`; calls may run concurrently.
pub struct IssuerSource {
    /// The settings; `admin_url` stays a [`Secret`], and `Debug` is not derived.
    config: IssuerConfig,
    /// Parsed from `admin_url` once, so a bad URL is a start-up error, not a retry loop.
    admin: tokio_postgres::Config,
    /// The admin connection, if one is open; the lock is only held to read or swap it.
    client: Mutex<Option<Arc<Client>>>,
}

impl IssuerSource {
    /// Checks `config`, connects, and drops expired roles a previous run left behind.
    ///
    /// Fails with `Rejected` for a config the issuer cannot use safely and `Unreachable` when
    /// PostgreSQL cannot be reached; use [`IssuerSource::from_config`] to start without it.
    pub async fn new(config: &IssuerConfig) -> Result<IssuerSource, SourceError> {
        let source = IssuerSource::from_config(config)?;
        source.reap().await?;
        Ok(source)
    }

    /// Checks `config` without connecting: the first call opens the admin connection. For a
    /// proxy that must start while PostgreSQL is down; call [`IssuerSource::reap`] later.
    pub fn from_config(config: &IssuerConfig) -> Result<IssuerSource, SourceError> {
        check_config(config)?;
        let admin = config
            .admin_url
            .expose()
            .parse::<tokio_postgres::Config>()
            .map_err(|_| SourceError::Rejected("admin_url is not a valid PostgreSQL URL".into()))?;
        Ok(IssuerSource {
            config: config.clone(),
            admin,
            client: Mutex::new(None),
        })
    }

    /// How often the owner should call [`IssuerSource::reap`] (`reap_interval`).
    pub fn reap_interval(&self) -> Duration {
        self.config.reap_interval
    }

    /// The open admin connection, or a new one.
    async fn client(&self) -> Result<Arc<Client>, SourceError> {
        if let Some(client) = self.cached().filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let connect = self.admin.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(map_error(&e, &[])),
            Err(_) => {
                return Err(SourceError::Unreachable(
                    "admin connection timed out".into(),
                ));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "issuer admin connection ended");
            }
        });
        let client = Arc::new(client);
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(Arc::clone(&client));
        }
        Ok(client)
    }

    fn cached(&self) -> Option<Arc<Client>> {
        self.client.lock().ok().and_then(|slot| slot.clone())
    }

    /// Runs `sql` as one simple-query batch (one implicit transaction). `secrets` are scrubbed
    /// from any error text.
    async fn execute(&self, sql: &str, secrets: &[&str]) -> Result<(), SourceError> {
        let client = self.client().await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| map_error(&e, secrets))
    }

    /// Whether role `name` exists now.
    async fn role_exists(&self, name: &str) -> Result<bool, SourceError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .map_err(|e| map_error(&e, &[]))?;
        Ok(row.is_some())
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
        self.execute(sql.expose(), &[verifier.expose(), password.expose()])
            .await?;
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
        if let Some(act_as) = &self.config.act_as {
            sql.push_str(&format!(
                ";\nALTER ROLE {} SET role = {}",
                ident(name).map_err(statement_error)?,
                escape_literal(act_as)
            ));
        }
        Ok(sql)
    }

    async fn extend(&self, lease: &Lease, until: SystemTime) -> Result<SystemTime, SourceError> {
        let name = self.own_role(&lease.id)?;
        let cap = lease.issued_at + self.config.max_ttl;
        let until = whole_seconds(until.min(cap));
        let expiration = timestamp(until);
        let sql = match &self.config.renew_statements {
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
        Box::pin(self.drop_role(&lease.id))
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
    if !config.drop_owned && config.act_as.is_none() {
        return Err(SourceError::Rejected(
            "issuer drop_owned = false needs act_as to reassign objects to".into(),
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
        None => SourceError::Unreachable(redact(e.to_string())),
    }
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
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        let mut config = IssuerConfig::new(Secret::from("postgres://admin:hunter2@127.0.0.1/db"));
        config.member_of = vec!["app_rw".into(), "x\"; DROP ROLE victim; --".into()];
        config
    }

    #[test]
    fn names_and_passwords_have_the_promised_shape() {
        let suffix = random_suffix();
        assert_eq!(suffix.len(), NAME_RANDOM_CHARS);
        assert!(statements::is_issued_name(
            "pglease",
            &format!("pglease_{suffix}")
        ));
        let password = random_password();
        assert_eq!(password.len(), 43);
        assert!(
            password
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(random_password(), password);
    }

    #[test]
    fn default_creation_quotes_every_name() {
        let mut config = config();
        config.act_as = Some("owner's".into());
        let source = IssuerSource::from_config(&config).unwrap();
        let sql = source
            .creation_sql("pglease_abc", "SCRAM-SHA-256$v", "2030-01-01T00:00:00Z")
            .unwrap();
        assert_eq!(
            sql,
            "CREATE ROLE \"pglease_abc\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$v' VALID UNTIL \
             '2030-01-01T00:00:00Z' IN ROLE \"app_rw\", \"x\"\"; DROP ROLE victim; --\", \
             \"owner's\";\nALTER ROLE \"pglease_abc\" SET role = 'owner''s'"
        );
    }

    #[test]
    fn unsafe_configs_are_refused() {
        for prefix in ["", "Pg", "p-g", "a_very_long_prefix_over_20"] {
            let mut c = config();
            c.prefix = prefix.into();
            assert!(IssuerSource::from_config(&c).is_err(), "{prefix}");
        }
        let mut c = config();
        c.member_of.push("a\0b".into());
        assert!(IssuerSource::from_config(&c).is_err());
        let mut c = config();
        c.drop_owned = false;
        assert!(IssuerSource::from_config(&c).is_err());
        let mut c = config();
        c.admin_url = Secret::from("postgres://u:hunter2@[bad");
        let err = IssuerSource::from_config(&c).err().unwrap().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn roles_of_others_are_refused_before_any_sql() {
        let source = IssuerSource::from_config(&config()).unwrap();
        for name in ["postgres", "pgleasex_1", "pglease_Upper", "other_pglease_1"] {
            assert!(matches!(
                source.own_role(name),
                Err(SourceError::Rejected(_))
            ));
        }
        assert_eq!(source.own_role("pglease_a1").ok(), Some("pglease_a1"));
    }
}
