//! The mark that makes a role recognisably pglease's own: a `COMMENT ON ROLE` naming pglease,
//! the credentials entry, the role's validity and the issuer instance that holds it, written
//! in the transaction that creates the role and again at every renewal.
//!
//! # Design
//!
//! A name prefix alone is not proof: a DBA may well call a hand-made role `pglease_abc123`.
//! The comment is, because only a role with CREATEROLE could forge it, and such a role could
//! drop the role anyway. It also tells a DBA reading `\du+` who made the role and until when
//! it is meant to live. The entry name is quoted as an identifier (`"` doubled), so no entry's
//! mark is a prefix of another's: the reaper of entry `a` never takes `a", x`'s roles.
//!
//! The instance comes last (`…, valid until <t>, instance <16 hex>`), so a mark written before
//! instances existed (`…, valid until <t>`) still reads as this entry's, with no owner
//! ([`Owner::Unknown`]), and older pglease versions still recognise the new marks. A mark
//! whose tail is neither is not ours: nothing is ever done to it.

use std::fmt;

use postgres_protocol::escape::{escape_identifier, escape_literal};

/// The words every mark starts with.
const MARK_START: &str = "pglease issued role for credentials ";
/// What separates the validity from the instance id.
const INSTANCE_SEP: &str = ", instance ";

/// One running issuer: chosen at random when it is built, written into the mark of every
/// role it creates, and the key of the advisory lock that says it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(u64);

impl InstanceId {
    /// A fresh random id: 64 bits, so two replicas never draw the same one.
    pub fn random() -> InstanceId {
        InstanceId(rand::random())
    }

    /// The session-level advisory lock key (`pg_advisory_lock(bigint)`) the instance holds on
    /// its admin connection while it lives: the id's bits, reinterpreted as signed.
    pub fn lock_key(self) -> i64 {
        i64::from_be_bytes(self.0.to_be_bytes())
    }

    /// The two halves `pg_locks` shows for [`InstanceId::lock_key`] (`classid`, `objid`;
    /// `objsubid` is 1 for the bigint form).
    pub fn lock_halves(self) -> (u32, u32) {
        let high = u32::try_from(self.0 >> 32).unwrap_or(u32::MAX);
        let low = u32::try_from(self.0 & u64::from(u32::MAX)).unwrap_or(u32::MAX);
        (high, low)
    }

    /// The id whose lock `pg_locks` shows with these halves.
    pub fn from_lock_halves(high: u32, low: u32) -> InstanceId {
        InstanceId((u64::from(high) << 32) | u64::from(low))
    }

    fn parse(text: &str) -> Option<InstanceId> {
        let hex_lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if text.len() != 16 || !text.bytes().all(hex_lower) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(InstanceId)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Whose a role of this entry is, as its mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The issuer instance that created it.
    Instance(InstanceId),
    /// A mark from before instances were written: no owner is known.
    Unknown,
}

/// The comment text for a role of credentials entry `entry` held by `instance`, valid until
/// `expiration` (as [`super::statements::timestamp`] writes it).
pub fn text(entry: &str, instance: InstanceId, expiration: &str) -> String {
    format!("{}{expiration}{INSTANCE_SEP}{instance}", start(entry))
}

/// Whose role `comment` (the role's `shobj_description`, if any) marks it as, if it is a mark
/// of `entry` at all.
pub fn owner(comment: Option<&str>, entry: &str) -> Option<Owner> {
    let start = start(entry);
    let tail = comment?.strip_prefix(start.as_str())?;
    match tail.split_once(INSTANCE_SEP) {
        Some((expiration, id)) if is_expiration(expiration) => {
            InstanceId::parse(id).map(Owner::Instance)
        }
        Some(_) => None,
        None => is_expiration(tail).then_some(Owner::Unknown),
    }
}

/// The statement that (re)writes the mark on the role whose quoted name is `role`.
pub fn comment_sql(role: &str, entry: &str, instance: InstanceId, expiration: &str) -> String {
    format!(
        "COMMENT ON ROLE {role} IS {}",
        escape_literal(&text(entry, instance, expiration))
    )
}

fn start(entry: &str) -> String {
    format!("{MARK_START}{}, valid until ", escape_identifier(entry))
}

/// What [`super::statements::timestamp`] writes: digits, `-`, `:`, `T` and `Z`, nothing else.
fn is_expiration(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'T' | b'Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: InstanceId = InstanceId(0x0123_4567_89ab_cdef);

    #[test]
    fn the_mark_names_pglease_the_entry_the_expiry_and_the_instance() {
        let text = text("app", ID, "2030-01-01T00:00:00Z");
        assert_eq!(
            text,
            "pglease issued role for credentials \"app\", valid until 2030-01-01T00:00:00Z, \
             instance 0123456789abcdef"
        );
        assert_eq!(owner(Some(&text), "app"), Some(Owner::Instance(ID)));
    }

    #[test]
    fn a_mark_without_an_instance_is_ours_with_no_known_owner() {
        let old = "pglease issued role for credentials \"app\", valid until 2030-01-01T00:00:00Z";
        assert_eq!(owner(Some(old), "app"), Some(Owner::Unknown));
    }

    #[test]
    fn other_comments_other_entries_and_odd_tails_are_not_our_mark() {
        let ours = text("a", ID, "2030-01-01T00:00:00Z");
        let base = "pglease issued role for credentials \"a\", valid until ";
        let odd = [
            format!("{base}2030-01-01T00:00:00Z, instance 0123456789ABCDEF"),
            format!("{base}2030-01-01T00:00:00Z, instance 0123"),
            format!("{base}2030-01-01T00:00:00Z, instance 0123456789abcdef, more"),
            format!("{base}2030-01-01T00:00:00Z; hand-edited"),
            format!("{base}, instance 0123456789abcdef"),
            base.to_owned(),
        ];
        let mut cases = vec![
            (None, "a"),
            (Some("pglease_abc123: made by hand"), "a"),
            (Some(""), "a"),
            (Some(ours.as_str()), "b"),
            (Some(ours.as_str()), "A"),
            (Some(ours.as_str()), ""),
        ];
        cases.extend(odd.iter().map(|c| (Some(c.as_str()), "a")));
        for (comment, entry) in cases {
            assert_eq!(owner(comment, entry), None, "{comment:?} for {entry:?}");
        }
        // An entry whose name starts like another's still has a mark of its own.
        let longer = text("a\", x", ID, "2030-01-01T00:00:00Z");
        assert_eq!(owner(Some(&longer), "a"), None);
        assert_eq!(owner(Some(&longer), "a\", x"), Some(Owner::Instance(ID)));
    }

    #[test]
    fn the_comment_statement_quotes_the_entry_name() {
        assert_eq!(
            comment_sql("\"pglease_x\"", "it's", ID, "2030-01-01T00:00:00Z"),
            "COMMENT ON ROLE \"pglease_x\" IS 'pglease issued role for credentials \"it''s\", \
             valid until 2030-01-01T00:00:00Z, instance 0123456789abcdef'"
        );
    }

    #[test]
    fn lock_keys_and_pg_locks_halves_round_trip() {
        for id in [ID, InstanceId(0), InstanceId(u64::MAX), InstanceId(1 << 63)] {
            let (high, low) = id.lock_halves();
            assert_eq!(InstanceId::from_lock_halves(high, low), id);
            assert_eq!(id.lock_key().to_be_bytes(), id.0.to_be_bytes());
        }
        assert_eq!(InstanceId(u64::MAX).lock_key(), -1);
        assert_eq!(InstanceId::parse(&ID.to_string()), Some(ID));
    }
}
