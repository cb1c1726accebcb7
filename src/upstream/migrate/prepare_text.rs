//! Finding, in the query text that created a prepared statement with SQL `PREPARE`, the one
//! statement that created it, so a session move recreates that and runs nothing else.
//!
//! # Design
//!
//! `pg_prepared_statements.statement` holds the whole text of the Query that ran the `PREPARE`,
//! whatever else it held (`INSERT …; PREPARE p AS …`). The text is split at top-level
//! semicolons by a lexer that follows PostgreSQL's scanner wherever it decides what is code and
//! what is not: `'…'` strings (quotes doubled; backslash escapes too when
//! `standard_conforming_strings` is off), `E'…'`, `N'…'`, `B'…'`, `X'…'` and `U&'…'` strings,
//! strings continued across a newline, `"…"` and `U&"…"` identifiers, `$tag$` dollar quotes,
//! `--` and nested `/* */` comments, `$` inside identifiers and `$1` parameters. Semicolons
//! inside parentheses (a rule's action list) do not split; a text with a `BEGIN ATOMIC` body,
//! whose semicolons the lexer cannot place, is refused.
//!
//! Which `standard_conforming_strings` was in force when the text was sent is not known, so
//! the text is split once for each value: both splits must find the same single statement
//! `PREPARE <name> (…) AS …` or `PREPARE <name> AS …` for the name. Whether that statement
//! holds a `'…'` string with a backslash, whose meaning depends on the setting in force when it
//! is parsed, is reported, as [`depends_on_conforming_strings`] reports it for a protocol-level
//! statement's text, for the caller to decide (see [`super`]). Names fold as
//! PostgreSQL folds them: unquoted ASCII to lower case, `""` to `"`, cut at 63 bytes. Anything
//! uncertain (a non-ASCII unquoted name, a `U&"…"` name, two candidates) is a refusal: the
//! session then stays on its lease rather than run a guess. PostgreSQL backs this up: the
//! statement is run through an extended-protocol Parse, which refuses more than one command.

mod lexer;

use std::ops::Range;

use lexer::{Lexer, Token};

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes); longer names are cut.
const MAX_NAME: usize = 63;

/// A `PREPARE` picked out of the text that ran it.
#[derive(Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// The one statement, without the whitespace around it.
    pub statement: &'a str,
    /// It holds a `'…'` string with a backslash, so what it means depends on the
    /// `standard_conforming_strings` in force when it is parsed.
    pub depends_on_conforming_strings: bool,
}

/// Returns the one statement in `text` that prepares `name` with SQL `PREPARE`, or `None` when
/// it cannot be told exactly.
pub fn find_prepare<'a>(text: &'a str, name: &str) -> Option<Found<'a>> {
    let (conforming, depends) = the_prepare(text, name, false)?;
    let (backslashes, depends_too) = the_prepare(text, name, true)?;
    if conforming != backslashes {
        return None;
    }
    let statement = text.get(conforming)?;
    Some(Found {
        statement: statement.trim_matches(|c: char| c.is_ascii_whitespace()),
        depends_on_conforming_strings: depends || depends_too,
    })
}

/// Whether what `text` means depends on `standard_conforming_strings`: it holds a `'…'`
/// string with a backslash, or does not lex at all.
pub fn depends_on_conforming_strings(text: &str) -> bool {
    split(text, false).is_none_or(|split| split.statements.iter().any(|s| s.plain_backslash))
}

/// The text of a token; ranges always fall on ASCII bytes, but peer text never panics.
fn slice<'a>(text: &'a str, range: &Range<usize>) -> &'a str {
    text.get(range.clone()).unwrap_or_default()
}

/// The range of the single statement preparing `name`, lexed with or without backslash
/// escapes in plain strings, and whether it holds a plain string with a backslash.
fn the_prepare(text: &str, name: &str, backslash_quotes: bool) -> Option<(Range<usize>, bool)> {
    let split = split(text, backslash_quotes)?;
    if split.atomic {
        return None;
    }
    let mut found = None;
    for statement in split.statements {
        match prepared_name(text, &statement.head) {
            None => {}
            Some(Name::Uncertain) => return None,
            Some(Name::Known(n)) if n == name => {
                if found.is_some() {
                    return None;
                }
                found = Some((statement.range, statement.plain_backslash));
            }
            Some(Name::Known(_)) => {}
        }
    }
    found
}

/// A statement's name as PostgreSQL stores it, when that can be told.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    Known(String),
    Uncertain,
}

/// The name a statement prepares, when its first tokens are `PREPARE <name> (` or
/// `PREPARE <name> AS`; `None` for any other statement (`PREPARE TRANSACTION 'x'` included).
fn prepared_name(text: &str, head: &[Token]) -> Option<Name> {
    let [Token::Word(keyword), name, next] = head else {
        return None;
    };
    let word = |r: &Range<usize>, w: &str| slice(text, r).eq_ignore_ascii_case(w);
    let opens_body = match next {
        Token::Other(b'(') => true,
        Token::Word(r) => word(r, "as"),
        _ => false,
    };
    if !word(keyword, "prepare") || !opens_body {
        return None;
    }
    Some(match name {
        Token::Word(r) if slice(text, r).is_ascii() => {
            Name::Known(cut(slice(text, r).to_ascii_lowercase()))
        }
        Token::Ident {
            raw,
            unicode: false,
        } => {
            let unquoted = slice(text, raw).replace("\"\"", "\"");
            if unquoted.len() > MAX_NAME && !unquoted.is_ascii() {
                Name::Uncertain
            } else {
                Name::Known(cut(unquoted))
            }
        }
        Token::Word(_) | Token::Ident { .. } => Name::Uncertain,
        _ => return None,
    })
}

/// Cuts an ASCII name to the length PostgreSQL keeps.
fn cut(mut name: String) -> String {
    if name.len() > MAX_NAME && name.is_ascii() {
        name.truncate(MAX_NAME);
    }
    name
}

/// A text split into top-level statements.
struct Split {
    statements: Vec<Statement>,
    /// The text holds a `BEGIN ATOMIC` body, whose inner semicolons do not end statements.
    atomic: bool,
}

/// One top-level statement: where it is, its first tokens, and whether it holds a plain
/// string with a backslash in it.
struct Statement {
    range: Range<usize>,
    head: Vec<Token>,
    plain_backslash: bool,
}

/// Splits `text` at top-level semicolons; `None` when a string, identifier, dollar quote or
/// comment is not closed (the text is not what PostgreSQL ran).
fn split(text: &str, backslash_quotes: bool) -> Option<Split> {
    let mut lexer = Lexer {
        text: text.as_bytes(),
        pos: 0,
        token_start: 0,
        backslash_quotes,
    };
    let mut split = Split {
        statements: Vec::new(),
        atomic: false,
    };
    let mut current = Statement::at(0);
    let (mut depth, mut after_begin) = (0usize, false);
    loop {
        let Some(token) = lexer.next().ok()? else {
            current.range.end = text.len();
            split.push(current);
            return Some(split);
        };
        if token == Token::Semicolon && depth == 0 {
            // The semicolon belongs to neither statement.
            current.range.end = lexer.pos - 1;
            split.push(std::mem::replace(&mut current, Statement::at(lexer.pos)));
            after_begin = false;
            continue;
        }
        match &token {
            Token::Other(b'(') => depth += 1,
            Token::Other(b')') => depth = depth.saturating_sub(1),
            Token::Str { plain_backslash } => current.plain_backslash |= plain_backslash,
            _ => {}
        }
        let is_word =
            |w: &str| matches!(&token, Token::Word(r) if slice(text, r).eq_ignore_ascii_case(w));
        split.atomic |= after_begin && is_word("atomic");
        after_begin = is_word("begin");
        if current.head.is_empty() {
            // A statement starts at its first token, after any comment before it.
            current.range.start = lexer.token_start;
        }
        if current.head.len() < 3 {
            current.head.push(token);
        }
    }
}

impl Split {
    /// Keeps a statement unless it is empty (`;;`, a trailing semicolon, only comments).
    fn push(&mut self, statement: Statement) {
        if !statement.head.is_empty() {
            self.statements.push(statement);
        }
    }
}

impl Statement {
    fn at(start: usize) -> Statement {
        Statement {
            range: start..start,
            head: Vec::new(),
            plain_backslash: false,
        }
    }
}

#[cfg(test)]
mod tests;
