//! The mark that makes a role recognisably pglease's own: a `COMMENT ON ROLE` naming pglease,
//! the credentials entry and the role's validity, written in the transaction that creates the
//! role and again at every renewal.
//!
//! # Design
//!
//! A name prefix alone is not proof: a DBA may well call a hand-made role `pglease_abc123`.
//! The comment is, because only a role with CREATEROLE could forge it, and such a role could
//! drop the role anyway. It also tells a DBA reading `\du+` who made the role and until when
//! it is meant to live. The entry name is quoted as an identifier (`"` doubled), so no entry's
//! mark is a prefix of another's: the reaper of entry `a` never takes `a", x`'s roles.

use postgres_protocol::escape::{escape_identifier, escape_literal};

/// The words every mark starts with.
const MARK_START: &str = "pglease issued role for credentials ";

/// The comment text for a role of credentials entry `entry`, valid until `expiration` (as
/// [`super::statements::timestamp`] writes it).
pub fn text(entry: &str, expiration: &str) -> String {
    format!("{}{expiration}", start(entry))
}

/// Whether `comment` (the role's `shobj_description`, if any) is the mark of `entry`.
pub fn is_marked(comment: Option<&str>, entry: &str) -> bool {
    comment.is_some_and(|c| c.starts_with(&start(entry)))
}

/// The statement that (re)writes the mark on the role whose quoted name is `role`.
pub fn comment_sql(role: &str, entry: &str, expiration: &str) -> String {
    format!(
        "COMMENT ON ROLE {role} IS {}",
        escape_literal(&text(entry, expiration))
    )
}

fn start(entry: &str) -> String {
    format!("{MARK_START}{}, valid until ", escape_identifier(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_names_pglease_the_entry_and_the_expiry() {
        let text = text("app", "2030-01-01T00:00:00Z");
        assert_eq!(
            text,
            "pglease issued role for credentials \"app\", valid until 2030-01-01T00:00:00Z"
        );
        assert!(is_marked(Some(&text), "app"));
    }

    #[test]
    fn other_comments_and_other_entries_are_not_our_mark() {
        let ours = text("a", "2030-01-01T00:00:00Z");
        for (comment, entry) in [
            (None, "a"),
            (Some("pglease_abc123: made by hand"), "a"),
            (Some(""), "a"),
            (Some(ours.as_str()), "b"),
            (Some(ours.as_str()), "A"),
            (Some(ours.as_str()), ""),
        ] {
            assert!(!is_marked(comment, entry), "{comment:?} for {entry:?}");
        }
        // An entry whose name starts like another's still has a mark of its own.
        let longer = text("a\", x", "2030-01-01T00:00:00Z");
        assert!(!is_marked(Some(&longer), "a"));
        assert!(is_marked(Some(&longer), "a\", x"));
    }

    #[test]
    fn the_comment_statement_quotes_the_entry_name() {
        assert_eq!(
            comment_sql("\"pglease_x\"", "it's", "2030-01-01T00:00:00Z"),
            "COMMENT ON ROLE \"pglease_x\" IS 'pglease issued role for credentials \"it''s\", \
             valid until 2030-01-01T00:00:00Z'"
        );
    }
}
