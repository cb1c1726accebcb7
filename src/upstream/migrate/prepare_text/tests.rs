//! The lexer that picks a `PREPARE` out of a query text: every construct that can hide a
//! semicolon or a fake `PREPARE`, the name folding, and the cases that must be refused.

use super::{depends_on_conforming_strings, find_prepare};

/// The statement picked out, if any.
fn found<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    find_prepare(text, name).map(|f| f.statement)
}

#[test]
fn the_prepare_is_picked_out_of_a_batch() {
    assert_eq!(
        found(
            "INSERT INTO t VALUES (1); PREPARE p (int) AS SELECT $1 + 1",
            "p"
        ),
        Some("PREPARE p (int) AS SELECT $1 + 1")
    );
    assert_eq!(
        found("PREPARE p AS SELECT 1;\nDELETE FROM t;;", "p"),
        Some("PREPARE p AS SELECT 1")
    );
    assert_eq!(
        found("prepare p(int, text[]) as select $1, $2", "p"),
        Some("prepare p(int, text[]) as select $1, $2")
    );
    assert_eq!(found("PREPARE q AS SELECT 1", "p"), None);
}

#[test]
fn semicolons_in_strings_and_quoted_names_do_not_split() {
    assert_eq!(
        found(
            "SELECT 'a; PREPARE p AS DELETE FROM t'; PREPARE p AS SELECT ';' || 'it''s'",
            "p"
        ),
        Some("PREPARE p AS SELECT ';' || 'it''s'")
    );
    let text = r#"SELECT "x;"; PREPARE "We;ird""Name" (text) AS SELECT $1"#;
    assert_eq!(
        found(text, r#"We;ird"Name"#),
        Some(r#"PREPARE "We;ird""Name" (text) AS SELECT $1"#)
    );
    // Bit strings and national strings are strings too.
    assert_eq!(
        found("SELECT B'1;', X'2;', N'3;'; PREPARE p AS SELECT 1", "p"),
        Some("PREPARE p AS SELECT 1")
    );
}

#[test]
fn dollar_quotes_hide_semicolons_and_dollars_in_names_are_not_quotes() {
    assert_eq!(
        found(
            "DO $$BEGIN PERFORM 1; END$$; PREPARE p AS SELECT $q$ ; $$ $q$, $1::int",
            "p"
        ),
        Some("PREPARE p AS SELECT $q$ ; $$ $q$, $1::int")
    );
    // A different tag inside does not close the quote.
    assert_eq!(
        found(
            "SELECT $a$ $b$ ; PREPARE p AS SELECT 1 $b$ $a$; PREPARE p AS SELECT 2",
            "p"
        ),
        Some("PREPARE p AS SELECT 2")
    );
    // `a$b$` is an identifier, not the start of a dollar quote.
    assert_eq!(
        found("SELECT 1 AS a$b$; PREPARE p AS SELECT 2 AS c$b$", "p"),
        Some("PREPARE p AS SELECT 2 AS c$b$")
    );
    assert_eq!(found("PREPARE p AS SELECT $x$ open", "p"), None);
}

#[test]
fn comments_hide_statements_and_nest() {
    assert_eq!(
        found(
            "-- PREPARE p AS SELECT 0;\nPREPARE p AS SELECT 1 /* ; PREPARE p AS SELECT 2 /* ; */ ; */",
            "p"
        ),
        Some("PREPARE p AS SELECT 1 /* ; PREPARE p AS SELECT 2 /* ; */ ; */")
    );
    // A comment may start inside an operator; the quote after it is commented out.
    assert_eq!(
        found("SELECT 1 +-- '\n; PREPARE p AS SELECT 2", "p"),
        Some("PREPARE p AS SELECT 2")
    );
    assert_eq!(
        found("/* open ; PREPARE p AS SELECT 1", "p"),
        None,
        "an unclosed comment is not SQL PostgreSQL ran"
    );
}

#[test]
fn escape_strings_and_their_continuations_hide_quotes() {
    // E'\'…' does not end at the escaped quote.
    assert_eq!(
        found(
            r"SELECT E'\'; PREPARE p AS DELETE FROM t; --'; PREPARE p AS SELECT 1",
            "p"
        ),
        Some("PREPARE p AS SELECT 1")
    );
    assert_eq!(
        found(r"SELECT E'\\'; PREPARE p AS SELECT 1", "p"),
        Some("PREPARE p AS SELECT 1")
    );
    // A string continued on the next line keeps the E'' rules.
    assert_eq!(
        found(
            "SELECT E'a' -- c\n  '\\'; PREPARE p AS DELETE FROM t; --'; PREPARE p AS SELECT 1",
            "p"
        ),
        Some("PREPARE p AS SELECT 1")
    );
}

#[test]
fn what_depends_on_standard_conforming_strings_is_refused_or_reported() {
    // Ends at `\'` with the setting on, runs to the last quote with it off: the split itself
    // depends on the setting.
    assert_eq!(
        found(r"SELECT 'a\'; PREPARE p AS SELECT 1; -- '", "p"),
        None
    );
    // Splits the same way either way, but the statement's own string means different things
    // under the two settings: reported.
    let dir = find_prepare(r"PREPARE p AS SELECT 'C:\dir'", "p").unwrap();
    assert!(dir.depends_on_conforming_strings);
    // A backslash elsewhere that splits the same way either way is fine, and E'' is exact.
    let newline = find_prepare(r"SELECT 'C:\dir'; PREPARE p AS SELECT E'\n'", "p").unwrap();
    assert_eq!(newline.statement, r"PREPARE p AS SELECT E'\n'");
    assert!(!newline.depends_on_conforming_strings);
    assert!(depends_on_conforming_strings(r"SELECT $1 ~ '\d+'"));
    assert!(!depends_on_conforming_strings(
        r"SELECT $1 ~ E'\\d+', $$\$$"
    ));
    assert!(depends_on_conforming_strings("SELECT 'open"));
}

#[test]
fn names_fold_as_postgresql_folds_them() {
    assert!(found("PREPARE MyStmt AS SELECT 1", "mystmt").is_some());
    assert!(found("PREPARE MyStmt AS SELECT 1", "MyStmt").is_none());
    assert!(found(r#"PREPARE "MyStmt" AS SELECT 1"#, "MyStmt").is_some());
    assert!(found(r#"PREPARE "MyStmt" AS SELECT 1"#, "mystmt").is_none());
    let long = format!("PREPARE {} AS SELECT 1", "A".repeat(70));
    assert!(found(&long, &"a".repeat(63)).is_some());
    // Unquoted non-ASCII folds by the server's encoding and locale: not guessed.
    assert!(found("PREPARE größe AS SELECT 1", "größe").is_none());
    assert!(found(r#"PREPARE U&"d\0061t" AS SELECT 1"#, "dat").is_none());
    // PREPARE TRANSACTION is another statement; `transaction` is still a valid name.
    assert!(found("PREPARE TRANSACTION 'transaction'", "transaction").is_none());
    assert!(found("PREPARE transaction AS SELECT 1", "transaction").is_some());
}

#[test]
fn two_candidates_and_atomic_bodies_are_refused() {
    assert_eq!(
        found(
            "PREPARE p AS SELECT 1; DEALLOCATE p; PREPARE p AS SELECT 2",
            "p"
        ),
        None
    );
    assert_eq!(
        found(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; PREPARE p AS SELECT f()",
            "p"
        ),
        None
    );
    // A name whose folding is unknown might be the same statement.
    assert_eq!(
        found(r#"PREPARE U&"p" AS SELECT 1; PREPARE p AS SELECT 2"#, "p"),
        None
    );
}

#[test]
fn semicolons_inside_parentheses_do_not_split() {
    assert_eq!(
        found(
            "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b); PREPARE p AS SELECT 1",
            "p"
        ),
        Some("PREPARE p AS SELECT 1")
    );
}

#[test]
fn any_text_is_lexed_without_panicking() {
    let alphabet = [
        ";", "'", "\"", "$", "$a$", "-", "/", "*", "\\", "E", "U&", "(", ")", "p", " ", "\n", "é",
        "PREPARE ", " AS ", "x",
    ];
    let mut seed = 0x2545_f491_u64;
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..(seed % 24) {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            text.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
        }
        if let Some(found) = found(&text, "p") {
            assert!(
                found.to_ascii_lowercase().starts_with("prepare"),
                "{text:?}"
            );
            assert!(text.contains(found));
        }
    }
}
