//! Several pglease replicas on one PostgreSQL: which issuer instance is alive, and what the
//! reaper may do with each expired role it finds.
//!
//! # Design
//!
//! Every issuer instance draws a random [`InstanceId`] when it is built and writes it into the
//! mark of each role it creates ([`super::mark`]). While it lives it holds a session-level
//! advisory lock keyed by that id on its admin connection, taken again whenever the connection
//! is opened again, and retried at every reap while it is not held. PostgreSQL releases the
//! lock when that session ends, however the process died, so "the lock is held" is what
//! "the instance is alive" means. Liveness is read from `pg_locks`, which lists the advisory
//! locks of every database: looking takes nothing, so a reaper never blocks an owner that is
//! re-taking its lock.
//!
//! [`decide`] is the reaper's rule for one expired role of this credentials entry:
//!
//! 1. a role some backend is logged in as is never dropped, whoever's it is. This alone
//!    protects a live replica whose admin connection broke (its lock is gone while its
//!    clients still run on its roles, even ones whose `VALID UNTIL` has passed);
//! 2. a role of this instance is dropped only once the rotator no longer holds its lease
//!    (its revocation failed, or the response to its creation was lost);
//! 3. a role of another instance is dropped only while that instance's lock is free;
//! 4. a role marked before instances existed keeps the old meaning: expired means reapable.
//!
//! Every error leans towards keeping: a lock key that collides with someone else's lock, or a
//! lock that outlives its owner on a half-open connection, only makes a dead instance look
//! alive, and its roles wait. Every condition is checked again inside the dropping transaction
//! ([`reap_guard`]), so a session that logged in, a renewal, or an owner that took its lock
//! back after the reaper looked still stops the drop.

use std::collections::HashSet;

use postgres_protocol::escape::escape_literal;
use tokio_postgres::Client;

use super::mark::{InstanceId, Owner};
use super::{SourceError, map_error};

/// What the reaper knows about one expired role whose name matches the issuer's pattern.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// Whose the mark says it is; `None` when it carries no mark of this entry.
    pub owner: Option<Owner>,
    /// Some backend is logged in as the role.
    pub in_use: bool,
    /// This instance's rotator still holds the role's lease.
    pub held_here: bool,
}

/// What the reaper does with a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not this entry's role: never touched.
    NotOurs,
    /// Dropped (still guarded against backends in the dropping transaction).
    Reap,
    /// Left alone, for this reason.
    Keep(Kept),
}

/// Why an expired role of this entry is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// A backend is logged in as it.
    InUse,
    /// This instance still holds its lease; revocation will end it.
    HeldHere,
    /// Its owner instance holds its lock: alive.
    OwnerAlive,
}

impl Kept {
    /// A short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::InUse => "in_use",
            Kept::HeldHere => "held_here",
            Kept::OwnerAlive => "owner_alive",
        }
    }
}

/// The reaper's rule (see the module docs): `me` is this instance, `alive` the instances
/// whose lock is held now.
pub(super) fn decide(me: InstanceId, facts: Facts, alive: &HashSet<InstanceId>) -> Verdict {
    let Some(owner) = facts.owner else {
        return Verdict::NotOurs;
    };
    if facts.in_use {
        return Verdict::Keep(Kept::InUse);
    }
    match owner {
        Owner::Instance(id) if id == me && facts.held_here => Verdict::Keep(Kept::HeldHere),
        Owner::Instance(id) if id == me => Verdict::Reap,
        Owner::Instance(id) if alive.contains(&id) => Verdict::Keep(Kept::OwnerAlive),
        Owner::Instance(_) | Owner::Unknown => Verdict::Reap,
    }
}

/// Takes `me`'s advisory lock on `client`'s session; false when another session holds it (a
/// half-open earlier connection of ours, or a collision), which only makes us look alive.
pub(super) async fn take_lock(client: &Client, me: InstanceId) -> Result<bool, SourceError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1)",
            &[&me.lock_key()],
        )
        .await
        .map_err(|e| map_error(&e, &[]))?;
    row.try_get(0).map_err(|e| map_error(&e, &[]))
}

/// Every instance whose lock some session holds now, in any database.
pub(super) async fn alive(client: &Client) -> Result<HashSet<InstanceId>, SourceError> {
    let rows = client
        .query(
            "SELECT classid, objid FROM pg_catalog.pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1",
            &[],
        )
        .await
        .map_err(|e| map_error(&e, &[]))?;
    rows.iter()
        .map(|row| {
            let high: u32 = row.try_get(0).map_err(|e| map_error(&e, &[]))?;
            let low: u32 = row.try_get(1).map_err(|e| map_error(&e, &[]))?;
            Ok(InstanceId::from_lock_halves(high, low))
        })
        .collect()
}

/// A statement that fails the transaction it runs in (SQLSTATE 55006, object in use) unless
/// role `name` may still be reaped: no backend is logged in as it, it is still expired (its
/// owner did not renew it meanwhile), and the lock of `owner` (another instance), if given, is
/// still free. Put first in the batch that drops a reaped role, so what [`decide`] saw is
/// checked again where it counts. `name` must already have passed
/// [`super::statements::is_issued_name`].
pub(super) fn reap_guard(name: &str, owner: Option<InstanceId>) -> String {
    let literal = escape_literal(name);
    let owner_alive = match owner {
        Some(id) => {
            let (high, low) = id.lock_halves();
            format!(
                "EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
                 AND granted AND objsubid = 1 AND classid = {high} AND objid = {low})"
            )
        }
        None => "false".to_owned(),
    };
    format!(
        "DO $pglease_guard$ BEGIN \
         IF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE usename = {literal}) THEN \
         RAISE EXCEPTION USING ERRCODE = '55006', MESSAGE = 'issued role is in use'; END IF; \
         IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {literal} \
         AND NOT rolvaliduntil < now()) THEN \
         RAISE EXCEPTION USING ERRCODE = '55006', MESSAGE = 'issued role was renewed'; END IF; \
         IF {owner_alive} THEN \
         RAISE EXCEPTION USING ERRCODE = '55006', MESSAGE = 'owner of issued role is alive'; \
         END IF; END $pglease_guard$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> InstanceId {
        InstanceId::from_lock_halves(1, 1)
    }

    fn other() -> InstanceId {
        InstanceId::from_lock_halves(2, 2)
    }

    fn facts(owner: Option<Owner>, in_use: bool, held_here: bool) -> Facts {
        Facts {
            owner,
            in_use,
            held_here,
        }
    }

    #[test]
    fn a_role_in_use_is_never_reaped_whoever_owns_it() {
        let nobody_alive = HashSet::new();
        for owner in [
            Owner::Instance(me()),
            Owner::Instance(other()),
            Owner::Unknown,
        ] {
            for held_here in [false, true] {
                assert_eq!(
                    decide(me(), facts(Some(owner), true, held_here), &nobody_alive),
                    Verdict::Keep(Kept::InUse),
                    "{owner:?}"
                );
            }
        }
    }

    #[test]
    fn another_instances_role_is_reaped_only_while_its_lock_is_free() {
        let alive = HashSet::from([other()]);
        let unused = facts(Some(Owner::Instance(other())), false, false);
        assert_eq!(
            decide(me(), unused, &alive),
            Verdict::Keep(Kept::OwnerAlive)
        );
        assert_eq!(decide(me(), unused, &HashSet::new()), Verdict::Reap);
        // Only the owner's own lock counts: some other live instance proves nothing.
        let someone = HashSet::from([me(), InstanceId::from_lock_halves(3, 3)]);
        assert_eq!(decide(me(), unused, &someone), Verdict::Reap);
    }

    #[test]
    fn this_instances_role_is_reaped_only_once_its_lease_is_let_go() {
        // Our own lock is always held; it is the rotator's hold that decides.
        let alive = HashSet::from([me()]);
        let held = facts(Some(Owner::Instance(me())), false, true);
        assert_eq!(decide(me(), held, &alive), Verdict::Keep(Kept::HeldHere));
        let let_go = facts(Some(Owner::Instance(me())), false, false);
        assert_eq!(decide(me(), let_go, &alive), Verdict::Reap);
    }

    #[test]
    fn an_old_mark_without_an_owner_is_reaped_when_unused_and_unmarked_roles_never() {
        let alive = HashSet::from([me(), other()]);
        let old = facts(Some(Owner::Unknown), false, false);
        assert_eq!(decide(me(), old, &alive), Verdict::Reap);
        for (in_use, held_here) in [(false, false), (true, true)] {
            assert_eq!(
                decide(me(), facts(None, in_use, held_here), &HashSet::new()),
                Verdict::NotOurs
            );
        }
    }

    #[test]
    fn the_guard_names_the_role_as_a_literal_and_the_owners_lock() {
        let guard = reap_guard("pglease_abc", Some(other()));
        assert!(guard.contains("WHERE usename = 'pglease_abc')"), "{guard}");
        assert!(guard.contains("WHERE rolname = 'pglease_abc' "), "{guard}");
        assert!(guard.contains("classid = 2 AND objid = 2)"), "{guard}");
        assert!(guard.starts_with("DO $pglease_guard$") && guard.ends_with("$pglease_guard$"));
        assert!(reap_guard("pglease_abc", None).contains("IF false THEN"));
    }
}
