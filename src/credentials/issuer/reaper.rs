//! Dropping issued roles: one lease's role on revocation, and expired roles that a crashed or
//! killed pglease left behind. Every drop goes through the name and mark checks here.
//!
//! # Design
//!
//! - **Whose roles.** A role is touched only when its name matches `^<prefix>_[a-z0-9]+$`
//!   exactly *and* it carries this credentials entry's mark (see [`super::mark`]); a
//!   hand-made role with the same prefix is left alone. Revocation and renewal check the mark
//!   too, just before their statements.
//! - **Reaping.** A role is reaped only when, besides, its `rolvaliduntil` has passed (it can no
//!   longer log in anyway). The SQL narrows by prefix only as a first cut; the exact checks are
//!   made in Rust, by the same functions that guard every other drop. Roles without
//!   `VALID UNTIL` never expire and are never reaped. The issuer reaps once at construction;
//!   its owner calls [`IssuerSource::reap`] every [`IssuerSource::reap_interval`].
//! - **What the role owns.** Nothing the application made is dropped by default
//!   (`on_revoke = "reassign"`): whatever the role still owns in the admin connection's
//!   database (objects made after leaving `act_as`, e.g. with `SET ROLE NONE`, or everything
//!   without `act_as`) is reassigned to `act_as`, or without it to the admin role, then
//!   `DROP OWNED` removes only the privileges granted to the role. `"drop_objects"` skips the
//!   reassignment, so `DROP OWNED` drops those objects. A reaped role gets the same treatment.

use postgres_protocol::escape::escape_literal;
use tracing::{debug, info, warn};

use super::statements::{Values, ident, is_issued_name};
use super::{IssuerSource, map_error, mark, render_all, statement_error};
use crate::config::OnRevoke;
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
        let ours = candidates.iter().filter(|(name, comment)| {
            is_issued_name(&self.config.prefix, name)
                && mark::is_marked(comment.as_deref(), &self.entry)
        });
        for (name, _) in ours {
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

    /// Ends every session of role `name` and drops it, handing what it owns to `act_as` (or
    /// the admin) unless `on_revoke = "drop_objects"`. Succeeds when the role is already
    /// gone, so a retried revoke is harmless; refuses a role without this issuer's mark.
    pub(super) async fn drop_role(&self, name: &str) -> Result<(), SourceError> {
        let name = self.own_role(name)?;
        match self.role_state(name).await? {
            RoleState::Absent => return Ok(()),
            RoleState::Unmarked => return Err(not_marked(name)),
            RoleState::Marked => {}
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
                // the privileges of the role that ending its sessions, REASSIGN OWNED and
                // DROP OWNED need when the admin is not a superuser.
                let prepare = format!("ALTER ROLE {role} NOLOGIN;\nGRANT {role} TO CURRENT_USER");
                self.execute(&prepare, &[]).await?;
                let mut sql = format!(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE usename = {};\n",
                    escape_literal(name)
                );
                if self.config.on_revoke == OnRevoke::Reassign {
                    let target = match &self.config.act_as {
                        Some(act_as) => ident(act_as).map_err(statement_error)?,
                        None => "CURRENT_USER".to_owned(),
                    };
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

    /// Whether role `name` exists now, and if so whether it carries this issuer's mark.
    pub(super) async fn role_state(&self, name: &str) -> Result<RoleState, SourceError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT pg_catalog.shobj_description(oid, 'pg_authid') \
                 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .map_err(|e| map_error(&e, &[]))?;
        let Some(row) = row else {
            return Ok(RoleState::Absent);
        };
        let comment: Option<String> = row.try_get(0).map_err(|e| map_error(&e, &[]))?;
        Ok(if mark::is_marked(comment.as_deref(), &self.entry) {
            RoleState::Marked
        } else {
            RoleState::Unmarked
        })
    }

    /// Expired roles whose name starts with `<prefix>_`, with their comments: a superset of
    /// the ones to reap.
    async fn expired_roles(&self) -> Result<Vec<(String, Option<String>)>, SourceError> {
        let client = self.client().await?;
        let start = format!("{}_", self.config.prefix);
        let rows = client
            .query(
                "SELECT rolname::text, pg_catalog.shobj_description(oid, 'pg_authid') \
                 FROM pg_catalog.pg_roles \
                 WHERE rolvaliduntil < now() \
                   AND left(rolname::text, length($1::text)) = $1::text",
                &[&start],
            )
            .await
            .map_err(|e| map_error(&e, &[]))?;
        rows.iter()
            .map(|row| {
                let name = row.try_get(0).map_err(|e| map_error(&e, &[]))?;
                let comment = row.try_get(1).map_err(|e| map_error(&e, &[]))?;
                Ok((name, comment))
            })
            .collect()
    }
}

/// What [`IssuerSource::role_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoleState {
    /// No role of that name (already dropped: a retried revoke).
    Absent,
    /// The role carries this issuer's mark: one of ours.
    Marked,
    /// A role with our name pattern but not our mark: made by someone else, never touched.
    Unmarked,
}

/// The refusal for a role without this issuer's mark.
pub(super) fn not_marked(name: &str) -> SourceError {
    SourceError::Rejected(format!(
        "refusing to touch role {name:?}: it does not carry this issuer's mark (COMMENT ON ROLE)"
    ))
}
