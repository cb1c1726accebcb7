//! Session state that cannot follow a client from upstream to upstream, as a query text asks
//! for it: session advisory locks, cursors `WITH HOLD`, temporary objects that outlive their
//! transaction, `SET SESSION AUTHORIZATION`.
//!
//! # Design
//!
//! [`Mentions`] reads the raw bytes, strings and comments included, for the few words these
//! need (`advisory`, `hold`, `temp`, `authorization`), once the text's [`Sketch`] found one of
//! them. A text that has none (almost all of them) is never looked at further, so the statement checks below cost ordinary
//! queries nothing beyond that pass. The same finding tells the release-time check that a
//! text, seen or not by the lexer (a `DO` body, a function's), may have left such state.

use super::lexer::Token;
use super::{Command, Scan, Sketch, is};

/// What a client asked for that transaction mode cannot confine to it; each is refused with
/// SQLSTATE 0A000 and [`Unconfined::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unconfined {
    /// `pg_advisory_lock`, `pg_advisory_lock_shared`, `pg_try_advisory_lock`,
    /// `pg_try_advisory_lock_shared`: held by the upstream until unlocked or closed.
    AdvisoryLock,
    /// `DECLARE … WITH HOLD`: the cursor outlives its transaction.
    HoldCursor,
    /// `CREATE TEMP TABLE` (without `ON COMMIT DROP`), `… VIEW`, `… SEQUENCE`, the same in
    /// schema `pg_temp`, or `SELECT … INTO TEMP`.
    TempObject,
    /// `SET [SESSION] SESSION AUTHORIZATION` to a role (`DEFAULT` and `RESET` are harmless).
    SessionAuthorization,
}

impl Unconfined {
    /// What the client hears: the feature, and what to use instead.
    pub fn message(self) -> &'static str {
        match self {
            Unconfined::AdvisoryLock => {
                "session advisory locks are not supported in transaction mode: use \
                 pg_advisory_xact_lock, or a session-mode pool"
            }
            Unconfined::HoldCursor => {
                "cursors WITH HOLD are not supported in transaction mode: use a cursor \
                 WITHOUT HOLD inside a transaction, or a session-mode pool"
            }
            Unconfined::TempObject => {
                "temporary tables, views and sequences that outlive their transaction are not \
                 supported in transaction mode: use CREATE TEMP TABLE ... ON COMMIT DROP inside \
                 a transaction, or a session-mode pool"
            }
            Unconfined::SessionAuthorization => {
                "SET SESSION AUTHORIZATION is not supported in transaction mode: use SET LOCAL \
                 SESSION AUTHORIZATION inside a transaction, or a session-mode pool"
            }
        }
    }

    /// A stable label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unconfined::AdvisoryLock => "advisory_lock",
            Unconfined::HoldCursor => "hold_cursor",
            Unconfined::TempObject => "temp_object",
            Unconfined::SessionAuthorization => "session_authorization",
        }
    }
}

/// Which of the words the statement checks need occur anywhere in a text, as words (or, for
/// `advisory` and `temp`, after an underscore: `pg_advisory_lock`, `pg_temp`). A superset of
/// what the lexer can find, so a text without any needs no check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mentions {
    pub(super) advisory: bool,
    pub(super) hold: bool,
    pub(super) temp: bool,
    pub(super) authorization: bool,
}

impl Mentions {
    /// Reads `text`, bytes as they are (strings, comments and bodies included), word by word
    /// only when its sketch (`sketch` is [`Sketch::of`] the same text) found one of the four
    /// words. A `U&"…"` identifier may spell any of them (a lock function's
    /// name, `pg_temp`) with escapes, so it counts as a mention of all four.
    pub fn sketched(text: &[u8], sketch: Sketch) -> Self {
        if sketch.unicode() {
            return Mentions {
                advisory: true,
                hold: true,
                temp: true,
                authorization: true,
            };
        }
        if !sketch.unconfined() {
            return Mentions::default();
        }
        Self::by_words(text)
    }

    pub(super) fn by_words(text: &[u8]) -> Self {
        let mut m = Mentions::default();
        let mut prev_letter = false;
        for (at, &b) in text.iter().enumerate() {
            let letter = b.is_ascii_alphabetic();
            if letter && !prev_letter {
                let rest = &text[at..];
                match b | 0x20 {
                    b'a' => {
                        m.advisory |= starts_with(rest, b"advisory");
                        m.authorization |= starts_with(rest, b"authorization");
                    }
                    b'h' => m.hold |= starts_with(rest, b"hold") && !letter_at(rest, 4),
                    b't' => {
                        m.temp |= starts_with(rest, b"temp")
                            && (!letter_at(rest, 4) || starts_with(&rest[4..], b"orary"));
                    }
                    _ => {}
                }
            }
            prev_letter = letter;
        }
        m
    }

    /// True when the text may ask for state transaction mode cannot confine.
    pub fn any(self) -> bool {
        self.advisory || self.hold || self.temp || self.authorization
    }
}

fn starts_with(text: &[u8], word: &[u8]) -> bool {
    text.get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
}

fn letter_at(text: &[u8], at: usize) -> bool {
    text.get(at).is_some_and(u8::is_ascii_alphabetic)
}

/// The session-level advisory lock functions, by name (unquoted: any case; quoted: exact).
pub(super) fn is_lock_function(token: Token<'_>) -> bool {
    const NAMES: [&[u8]; 4] = [
        b"pg_advisory_lock",
        b"pg_advisory_lock_shared",
        b"pg_try_advisory_lock",
        b"pg_try_advisory_lock_shared",
    ];
    match token {
        Token::Word(w) => NAMES.iter().any(|n| w.eq_ignore_ascii_case(n)),
        Token::Quoted(q) => NAMES.contains(&q),
        _ => false,
    }
}

/// The statement checks for one statement starting `first second`, when the text mentions
/// their words; returns the finding and the last token read.
pub(super) fn statement<'a>(
    first: &[u8],
    second: Token<'a>,
    s: &mut Scan<'a>,
) -> (Command, Token<'a>) {
    let first = Token::Word(first);
    if s.mentions.authorization && is(first, "set") {
        set(second, s)
    } else if s.mentions.hold && is(first, "declare") && !s.ends(second) {
        declare(s)
    } else if s.mentions.temp && is(first, "create") {
        create(second, s)
    } else if s.mentions.temp && (is(first, "select") || is(first, "with")) {
        select_into(second, s)
    } else {
        (Command::Other, second)
    }
}

fn refused(what: Unconfined, last: Token<'_>) -> (Command, Token<'_>) {
    (Command::Unconfined(what), last)
}

/// `SET [SESSION] SESSION AUTHORIZATION role`; `SET LOCAL` ends with its transaction.
fn set<'a>(second: Token<'a>, s: &mut Scan<'a>) -> (Command, Token<'a>) {
    if !is(second, "session") {
        return (Command::Other, second);
    }
    let mut t = s.next();
    if is(t, "session") {
        t = s.next();
    }
    if !is(t, "authorization") {
        return (Command::Other, t);
    }
    let role = s.next();
    if is(role, "default") {
        (Command::Other, role)
    } else {
        refused(Unconfined::SessionAuthorization, role)
    }
}

/// `DECLARE name [options] CURSOR WITH HOLD FOR …` (the name is the second token).
fn declare<'a>(s: &mut Scan<'a>) -> (Command, Token<'a>) {
    let mut t = s.next();
    while !is(t, "cursor") {
        if s.ends(t) || is(t, "for") {
            return (Command::Other, t);
        }
        t = s.next();
    }
    let with = s.next();
    if !is(with, "with") {
        return (Command::Other, with);
    }
    let hold = s.next();
    if is(hold, "hold") {
        refused(Unconfined::HoldCursor, hold)
    } else {
        (Command::Other, hold)
    }
}

/// `pg_temp` or `pg_temp_N` as a schema name (the caller checks for the dot after it).
fn temp_schema(t: Token<'_>) -> bool {
    let name = match t {
        Token::Word(w) => w,
        Token::Quoted(q) => q,
        _ => return false,
    };
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"pg_temp"))
        && (name.len() == 7 || name[7] == b'_')
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY [RECURSIVE] TABLE|VIEW|SEQUENCE`, or
/// the same without TEMP on a name in `pg_temp`; a table may have `ON COMMIT DROP`.
fn create<'a>(second: Token<'a>, s: &mut Scan<'a>) -> (Command, Token<'a>) {
    let mut t = second;
    if is(t, "or") {
        s.next();
        t = s.next();
    }
    if is(t, "global") || is(t, "local") {
        t = s.next();
    }
    let mut temp = is(t, "temp") || is(t, "temporary");
    if temp {
        t = s.next();
    }
    if is(t, "unlogged") || is(t, "recursive") {
        t = s.next();
    }
    let table = is(t, "table");
    if !table && !is(t, "view") && !is(t, "sequence") {
        return (Command::Other, t);
    }
    t = s.next();
    if is(t, "if") {
        s.next();
        s.next();
        t = s.next();
    }
    if !temp && temp_schema(t) {
        t = s.next();
        temp = t == Token::Dot;
    }
    if !temp {
        return (Command::Other, t);
    }
    if !table {
        return refused(Unconfined::TempObject, t);
    }
    // ON COMMIT comes after the column list and before AS (CREATE TABLE … AS).
    loop {
        if s.ends(t) || (s.depth == 0 && is(t, "as")) {
            return refused(Unconfined::TempObject, t);
        }
        if s.depth == 0 && is(t, "on") {
            t = s.next();
            if is(t, "commit") {
                t = s.next();
                if is(t, "drop") {
                    return (Command::Other, t);
                }
            }
            continue;
        }
        t = s.next();
    }
}

/// `SELECT … INTO [LOCAL|GLOBAL] TEMP|TEMPORARY …` or `… INTO pg_temp.name`, at the top level
/// of a SELECT or WITH statement (not `INSERT INTO` or `MERGE INTO` after a WITH).
fn select_into<'a>(second: Token<'a>, s: &mut Scan<'a>) -> (Command, Token<'a>) {
    let mut t = second;
    let mut after_insert = false;
    loop {
        if s.ends(t) {
            return (Command::Other, t);
        }
        if s.depth == 0 && is(t, "into") && !after_insert {
            t = s.next();
            if is(t, "local") || is(t, "global") {
                t = s.next();
            }
            if is(t, "temp") || is(t, "temporary") {
                return refused(Unconfined::TempObject, t);
            }
            if is(t, "unlogged") {
                t = s.next();
            }
            if is(t, "table") {
                t = s.next();
            }
            if temp_schema(t) {
                t = s.next();
                if t == Token::Dot {
                    return refused(Unconfined::TempObject, t);
                }
            }
            continue;
        }
        after_insert = is(t, "insert") || is(t, "merge");
        t = s.next();
    }
}
