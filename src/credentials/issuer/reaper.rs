//! Dropping issued roles: one lease's role on revocation, and expired roles that a crashed or
//! killed pglease (or a replica that died) left behind. Every drop goes through the name and
//! mark checks here.
//!
//! # Design
//!
//! - **Whose roles.** A role is touched only when its name matches `^<prefix>_[a-z0-9]+$`
//!   exactly *and* it carries this credentials entry's mark (see [`super::mark`]); a
//!   hand-made role with the same prefix is left alone. Renewal and revocation act only on a
//!   role whose mark names this instance, checked just before their statements: they never
//!   touch another replica's role.
//! - **Reaping.** A role is reaped only when, besides, its `rolvaliduntil` has passed (it can no
//!   longer log in anyway), no backend is logged in as it, and its owner is done with it: this
//!   instance's rotator let go of it, or the owning replica is dead (see [`super::liveness`]).
//!   The SQL narrows by prefix only as a first cut; the exact checks are made in Rust, by the
//!   same functions that guard every other drop. Roles without `VALID UNTIL` never expire and
//!   are never reaped. A reaped role's sessions are never terminated: the dropping transaction
//!   first fails if any exist. The issuer reaps once at construction; its owner calls
//!   [`IssuerSource::reap`] every [`IssuerSource::reap_interval`].
//! - **What the role owns.** Nothing the application made is dropped by default
//!   (`on_revoke = "reassign"`): whatever the role still owns in the admin connection's
//!   database (objects made after leaving `act_as`, e.g. with `SET ROLE NONE`, or everything
//!   without `act_as`) is reassigned to `act_as`, or without it to the admin role, then
//!   `DROP OWNED` removes only the privileges granted to the role. `"drop_objects"` skips the
//!   reassignment, so `DROP OWNED` drops those objects. A reaped role gets the same treatment.

use postgres_protocol::escape::escape_literal;
use tracing::{debug, info, warn};

use super::liveness::{self, Facts, Verdict};
use super::mark::{self, Owner};
use super::statements::{Values, ident, is_issued_name};
use super::{IssuerSource, map_error, render_all, statement_error};
use crate::config::OnRevoke;
use crate::credentials::SourceError;

/// An expired role with our prefix, as the reaper's first query finds it.
struct Expired {
    name: String,
    comment: Option<String>,
    in_use: bool,
}

impl IssuerSource {
    /// Drops the expired roles of this entry that nobody uses and whose owner is done with
    /// them (see the module docs); returns how many were dropped.
    ///
    /// One role that cannot be dropped (say, it still owns objects in another database, or a
    /// session logged in as it meanwhile) is logged and skipped, so it does not keep the
    /// others alive; failing to list the roles at all is an error.
    pub async fn reap(&self) -> Result<usize, SourceError> {
        let candidates = self.expired_roles().await?;
        let ours: Vec<(&Expired, Owner)> = candidates
            .iter()
            .filter(|r| is_issued_name(&self.config.prefix, &r.name))
            .filter_map(|r| Some((r, mark::owner(r.comment.as_deref(), &self.entry)?)))
            .collect();
        if ours.is_empty() {
            return Ok(0);
        }
        let alive = liveness::alive(self.client().await?.as_ref()).await?;
        let mut dropped = 0;
        for (role, owner) in ours {
            let facts = Facts {
                owner: Some(owner),
                in_use: role.in_use,
                held_here: self.is_held(&role.name),
            };
            match liveness::decide(self.instance, facts, &alive) {
                Verdict::NotOurs => {}
                Verdict::Keep(why) => {
                    debug!(role = %role.name, reason = why.as_str(), "expired issued role kept")
                }
                Verdict::Reap => match self.reap_role(&role.name, owner).await {
                    Ok(()) => dropped += 1,
                    // Another replica's reaper got there first.
                    Err(_) if self.role_state(&role.name).await? == RoleState::Absent => {}
                    Err(error) => {
                        warn!(role = %role.name, %error, "could not reap expired issued role")
                    }
                },
            }
        }
        if dropped > 0 {
            info!(prefix = %self.config.prefix, dropped, "reaped expired issued roles");
        }
        Ok(dropped)
    }

    /// Revokes this instance's lease on role `name`: ends every session of the role and drops
    /// it, handing what it owns to `act_as` (or the admin) unless `on_revoke =
    /// "drop_objects"`. Succeeds when the role is already gone, so a retried revoke is
    /// harmless; refuses a role whose mark does not name this instance.
    pub(super) async fn revoke_role(&self, name: &str) -> Result<(), SourceError> {
        let name = self.own_role(name)?;
        // The rotator is done with it whatever happens next: if this fails, the reaper takes
        // the role once it has expired and nobody uses it.
        self.set_held(name, false);
        match self.role_state(name).await? {
            RoleState::Absent => return Ok(()),
            RoleState::Marked(Owner::Instance(id)) if id == self.instance => {}
            RoleState::Marked(_) | RoleState::Unmarked => return Err(not_ours(name)),
        }
        let role = ident(name).map_err(statement_error)?;
        let sql = match self.template_sql(name)? {
            Some(sql) => sql,
            None => {
                // Committed before the rest: no new session can start, and the admin gains
                // the privileges of the role that ending its sessions, REASSIGN OWNED and
                // DROP OWNED need when the admin is not a superuser.
                let prepare = format!("ALTER ROLE {role} NOLOGIN;\nGRANT {role} TO CURRENT_USER");
                self.execute(&prepare, &[]).await?;
                format!(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE usename = {};\n{}",
                    escape_literal(name),
                    self.drop_sql(&role)?
                )
            }
        };
        self.execute(&sql, &[]).await?;
        debug!(role = %name, "issued role dropped");
        Ok(())
    }

    /// Drops expired role `name` that [`liveness::decide`] gave up, in one transaction that
    /// first checks again that nobody uses it, that it is still expired, and that its owner
    /// (if another instance) is still dead: no session is ever cut by the reaper.
    async fn reap_role(&self, name: &str, owner: Owner) -> Result<(), SourceError> {
        let name = self.own_role(name)?;
        let role = ident(name).map_err(statement_error)?;
        let body = match self.template_sql(name)? {
            Some(sql) => sql,
            None => format!("GRANT {role} TO CURRENT_USER;\n{}", self.drop_sql(&role)?),
        };
        let other = match owner {
            Owner::Instance(id) if id != self.instance => Some(id),
            _ => None,
        };
        let sql = format!("{};\n{body}", liveness::reap_guard(name, other));
        self.execute(&sql, &[]).await?;
        debug!(role = %name, "expired issued role reaped");
        Ok(())
    }

    /// The `revocation_statements` for role `name`, if configured.
    fn template_sql(&self, name: &str) -> Result<Option<String>, SourceError> {
        let Some(templates) = &self.config.revocation_statements else {
            return Ok(None);
        };
        let values = Values {
            name,
            password: "",
            expiration: "",
        };
        render_all(templates, &values).map(Some)
    }

    /// The built-in end of a role whose quoted name is `role`: what it owns handed over (or
    /// dropped with `on_revoke = "drop_objects"`), then the role itself.
    fn drop_sql(&self, role: &str) -> Result<String, SourceError> {
        let mut sql = String::new();
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
        Ok(sql)
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

    /// Whether role `name` exists now, and if so whether it carries this entry's mark, and
    /// whose.
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
        Ok(match mark::owner(comment.as_deref(), &self.entry) {
            Some(owner) => RoleState::Marked(owner),
            None => RoleState::Unmarked,
        })
    }

    /// Expired roles whose name starts with `<prefix>_`, with their comments and whether a
    /// backend is logged in as them: a superset of the ones to reap.
    async fn expired_roles(&self) -> Result<Vec<Expired>, SourceError> {
        let client = self.client().await?;
        let start = format!("{}_", self.config.prefix);
        let rows = client
            .query(
                "SELECT r.rolname::text, pg_catalog.shobj_description(r.oid, 'pg_authid'), \
                   EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
                           WHERE a.usesysid = r.oid) \
                 FROM pg_catalog.pg_roles r \
                 WHERE r.rolvaliduntil < now() \
                   AND left(r.rolname::text, length($1::text)) = $1::text",
                &[&start],
            )
            .await
            .map_err(|e| map_error(&e, &[]))?;
        rows.iter()
            .map(|row| {
                let get = |e: tokio_postgres::Error| map_error(&e, &[]);
                Ok(Expired {
                    name: row.try_get(0).map_err(get)?,
                    comment: row.try_get(1).map_err(get)?,
                    in_use: row.try_get(2).map_err(get)?,
                })
            })
            .collect()
    }
}

/// What [`IssuerSource::role_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoleState {
    /// No role of that name (already dropped: a retried revoke).
    Absent,
    /// The role carries this entry's mark, naming this owner.
    Marked(Owner),
    /// A role with our name pattern but not our mark: made by someone else, never touched.
    Unmarked,
}

/// The refusal to renew or revoke a role whose mark does not name this issuer instance.
pub(super) fn not_ours(name: &str) -> SourceError {
    SourceError::Rejected(format!(
        "refusing to touch role {name:?}: its mark (COMMENT ON ROLE) does not name this \
         issuer instance"
    ))
}
