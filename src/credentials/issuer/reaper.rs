//! Dropping issued roles: one lease's role on revocation, and expired roles that a crashed or
//! killed pglease left behind. Every drop goes through the name check here.
//!
//! # Design
//!
//! A role is reaped only when both hold: its `rolvaliduntil` has passed (it can no longer log
//! in anyway), and its name matches `^<prefix>_[a-z0-9]+$` exactly. The SQL narrows by prefix
//! only as a first cut; the exact match is made in Rust, by the same function that guards
//! every other drop. Roles without `VALID UNTIL` never expire and are never reaped.
//! The issuer reaps once at construction; its owner calls [`IssuerSource::reap`] every
//! [`IssuerSource::reap_interval`].

use postgres_protocol::escape::escape_literal;
use tracing::{debug, info, warn};

use super::statements::{Values, ident, is_issued_name};
use super::{IssuerSource, map_error, render_all, statement_error};
use crate::credentials::SourceError;

impl IssuerSource {
    /// Drops this issuer's expired roles; returns how many were dropped.
    ///
    /// One role that cannot be dropped (say, it still owns objects in another database) is
    /// logged and skipped, so it does not keep the others alive; failing to list the roles at
    /// all is an error.
    pub async fn reap(&self) -> Result<usize, SourceError> {
        let candidates = self.expired_roles().await?;
        let mut dropped = 0;
        for name in candidates
            .iter()
            .filter(|name| is_issued_name(&self.config.prefix, name))
        {
            match self.drop_role(name).await {
                Ok(()) => dropped += 1,
                Err(error) => warn!(role = %name, %error, "could not reap expired issued role"),
            }
        }
        if dropped > 0 {
            info!(prefix = %self.config.prefix, dropped, "reaped expired issued roles");
        }
        Ok(dropped)
    }

    /// Ends every session of role `name` and drops it with what it owns (or hands that to
    /// `act_as`). Succeeds when the role is already gone, so a retried revoke is harmless.
    pub(super) async fn drop_role(&self, name: &str) -> Result<(), SourceError> {
        let name = self.own_role(name)?;
        if !self.role_exists(name).await? {
            return Ok(());
        }
        let role = ident(name).map_err(statement_error)?;
        let sql = match &self.config.revocation_statements {
            Some(templates) => {
                let values = Values {
                    name,
                    password: "",
                    expiration: "",
                };
                render_all(templates, &values)?
            }
            None => {
                // Committed before the rest: no new session can start, and the admin gains
                // the privileges of the role that ending its sessions and DROP OWNED need
                // when the admin is not a superuser.
                let prepare = format!("ALTER ROLE {role} NOLOGIN;\nGRANT {role} TO CURRENT_USER");
                self.execute(&prepare, &[]).await?;
                let mut sql = format!(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE usename = {};\n",
                    escape_literal(name)
                );
                if let (false, Some(act_as)) = (self.config.drop_owned, &self.config.act_as) {
                    let target = ident(act_as).map_err(statement_error)?;
                    sql.push_str(&format!("REASSIGN OWNED BY {role} TO {target};\n"));
                }
                sql.push_str(&format!(
                    "DROP OWNED BY {role};\nDROP ROLE IF EXISTS {role}"
                ));
                sql
            }
        };
        self.execute(&sql, &[]).await?;
        debug!(role = %name, "issued role dropped");
        Ok(())
    }

    /// `name` if it is one of this issuer's roles; otherwise a refusal, so no statement is
    /// ever sent for a role another party owns.
    pub(super) fn own_role<'a>(&self, name: &'a str) -> Result<&'a str, SourceError> {
        if is_issued_name(&self.config.prefix, name) {
            Ok(name)
        } else {
            Err(SourceError::Rejected(format!(
                "refusing to touch role {name:?}: not a `{}_…` role of this issuer",
                self.config.prefix
            )))
        }
    }

    /// Expired roles whose name starts with `<prefix>_`, a superset of the ones to reap.
    async fn expired_roles(&self) -> Result<Vec<String>, SourceError> {
        let client = self.client().await?;
        let start = format!("{}_", self.config.prefix);
        let rows = client
            .query(
                "SELECT rolname::text FROM pg_catalog.pg_roles \
                 WHERE rolvaliduntil < now() \
                   AND left(rolname::text, length($1::text)) = $1::text",
                &[&start],
            )
            .await
            .map_err(|e| map_error(&e, &[]))?;
        rows.iter()
            .map(|row| row.try_get::<_, String>(0).map_err(|e| map_error(&e, &[])))
            .collect()
    }
}
