//! Which statements of a query text are `LISTEN`, `UNLISTEN` or `UNLISTEN *`, and the channel
//! each names, with PostgreSQL's identifier rules.
//!
//! # Design
//!
//! The text is cut at top-level semicolons by the statement tracker's lexer
//! ([`crate::client::statements::sql::lexer`]), which knows where PostgreSQL's scanner sees
//! code: `'…'` strings, `"…"` identifiers, `$tag$` quotes, `--` and nested `/* */` comments. Whether backslashes escape in plain strings depends on
//! `standard_conforming_strings`, which the proxy does not know: the text is read both ways,
//! and if the readings disagree about where a LISTEN is, the text counts as mixed (refused),
//! never as one of them guessed. A channel name is folded as PostgreSQL folds identifiers: an
//! unquoted one to ASCII lower case, a quoted one kept with `""` as `"`, both cut to 63 bytes
//! (NAMEDATALEN - 1) at a character boundary.

use crate::client::statements::sql::Sketch;
use crate::client::statements::sql::lexer::{Lexer, Token};

/// PostgreSQL's longest identifier, in bytes.
const MAX_IDENTIFIER: usize = 63;

/// One statement the proxy answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`.
    Unlisten(String),
    /// `UNLISTEN *`.
    UnlistenAll,
}

impl Statement {
    /// The command tag PostgreSQL answers it with.
    pub fn tag(&self) -> &'static str {
        match self {
            Statement::Listen(_) => "LISTEN",
            Statement::Unlisten(_) | Statement::UnlistenAll => "UNLISTEN",
        }
    }
}

/// What a query text holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// No LISTEN or UNLISTEN at all.
    None,
    /// Only LISTEN / UNLISTEN statements (and empty ones), in order.
    Only(Vec<Statement>),
    /// A LISTEN or UNLISTEN beside other statements, or one the proxy cannot read exactly.
    Mixed,
}

/// Reads a query text (bytes in the client's encoding; channel names must be UTF-8).
pub fn find(text: &[u8]) -> Finding {
    let plain = find_as(text, false);
    if !text.contains(&b'\\') {
        return plain;
    }
    let escaped = find_as(text, true);
    if plain == escaped {
        plain
    } else if plain == Finding::None && escaped == Finding::None {
        Finding::None
    } else {
        Finding::Mixed
    }
}

/// True when any statement of the text is a LISTEN or UNLISTEN.
pub fn mentions_listen(text: &[u8]) -> bool {
    listens(text, Sketch::of(text))
}

/// [`mentions_listen`] for a text already sketched (`sketch` is [`Sketch::of`] the same
/// text): the lexer runs only when the word `listen` occurs.
pub fn listens(text: &[u8], sketch: Sketch) -> bool {
    sketch.listen() && find(text) != Finding::None
}

/// False when `bytes` cannot hold the word `listen` in any letter case, so the lexer (which
/// allocates per statement) need not run: ordinary queries pay one pass over their bytes.
/// The same finding as [`Sketch::listen`], by a search of its own that is cheaper per byte
/// (a session asks it of every request before the rewrite sketches the texts).
pub fn may_mention_listen(bytes: &[u8]) -> bool {
    const WORD: &[u8] = b"listen";
    let mut at = 2;
    while let Some(i) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b | 0x20 == b's'))
    {
        let s = at + i;
        if bytes
            .get(s - 2..s + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(WORD))
        {
            return true;
        }
        at = s + 1;
    }
    false
}

fn find_as(text: &[u8], backslash_quotes: bool) -> Finding {
    let mut lexer = Lexer::new(text, backslash_quotes);
    let mut found = Vec::new();
    let mut other = false;
    let mut unreadable = false;
    loop {
        // One statement, to the next top-level semicolon or the end; a LISTEN has two tokens,
        // so only the first three are kept (a third means it is not one).
        let mut tokens = [Token::End; 3];
        let mut kept = 0;
        let mut depth = 0u32;
        let last = loop {
            let token = lexer.next();
            match token {
                Token::End => break token,
                Token::Semicolon if depth == 0 => break token,
                Token::Open => depth += 1,
                Token::Close => depth = depth.saturating_sub(1),
                _ => {}
            }
            if kept < tokens.len() {
                tokens[kept] = token;
                kept += 1;
            }
        };
        match tokens[..kept] {
            [] => {}
            [Token::Word(w), ..]
                if w.eq_ignore_ascii_case(b"listen") || w.eq_ignore_ascii_case(b"unlisten") =>
            {
                match statement(&tokens[..kept]) {
                    Some(s) => found.push(s),
                    None => unreadable = true,
                }
            }
            _ => other = true,
        }
        if last == Token::End {
            break;
        }
    }
    match (found.is_empty() && !unreadable, other || unreadable) {
        (true, _) => Finding::None,
        (false, false) => Finding::Only(found),
        (false, true) => Finding::Mixed,
    }
}

/// One LISTEN / UNLISTEN statement's tokens, read exactly, or `None`.
fn statement(tokens: &[Token<'_>]) -> Option<Statement> {
    let [Token::Word(verb), target] = tokens else {
        return None;
    };
    let listen = verb.eq_ignore_ascii_case(b"listen");
    let channel = match target {
        Token::Star if !listen => return Some(Statement::UnlistenAll),
        Token::Word(w) => fold(w)?,
        Token::Quoted(q) => truncate(std::str::from_utf8(q).ok()?.replace("\"\"", "\"")),
        _ => return None,
    };
    Some(if listen {
        Statement::Listen(channel)
    } else {
        Statement::Unlisten(channel)
    })
}

/// An unquoted identifier: ASCII letters to lower case, as PostgreSQL's `downcase_identifier`
/// does for a multi-byte encoding.
fn fold(word: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(word).ok()?;
    Some(truncate(text.to_ascii_lowercase()))
}

fn truncate(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER {
        let mut end = MAX_IDENTIFIER;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> Finding {
        find(text.as_bytes())
    }

    fn only(s: &[Statement]) -> Finding {
        Finding::Only(s.to_vec())
    }

    #[test]
    fn the_prefilter_lets_every_listen_through_and_stops_ordinary_queries() {
        for text in ["LISTEN a", "unlisten *", "select 1; LiStEn x", "ls\0listen"] {
            assert!(may_mention_listen(text.as_bytes()), "{text}");
        }
        for text in [
            "",
            "s",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "liste",
            "isten",
        ] {
            assert!(!may_mention_listen(text.as_bytes()), "{text}");
            assert!(!mentions_listen(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn channels_follow_postgres_identifier_rules() {
        use Statement::*;
        assert_eq!(
            f("LISTEN Compat_Chan"),
            only(&[Listen("compat_chan".into())])
        );
        assert_eq!(
            f("listen \"Compat_Chan\";"),
            only(&[Listen("Compat_Chan".into())])
        );
        assert_eq!(f("LISTEN \"a\"\"b\""), only(&[Listen("a\"b".into())]));
        assert_eq!(f("unlisten *"), only(&[UnlistenAll]));
        assert_eq!(
            f(" /* c */ UNLISTEN x -- bye"),
            only(&[Unlisten("x".into())])
        );
        let long = "a".repeat(70);
        assert_eq!(
            f(&format!("LISTEN {long}")),
            only(&[Listen("a".repeat(63))])
        );
        // Cut at a character boundary, never inside one.
        let wide = format!("\"{}\"", "é".repeat(40));
        assert_eq!(
            f(&format!("LISTEN {wide}")),
            only(&[Listen("é".repeat(31))])
        );
        assert_eq!(
            f("LISTEN a; LISTEN b;; UNLISTEN a"),
            only(&[Listen("a".into()), Listen("b".into()), Unlisten("a".into())])
        );
    }

    #[test]
    fn mixed_and_unreadable_texts_are_refused() {
        assert_eq!(f("BEGIN; LISTEN a; COMMIT"), Finding::Mixed);
        assert_eq!(f("select 1; listen a"), Finding::Mixed);
        assert_eq!(f("LISTEN"), Finding::Mixed);
        assert_eq!(f("LISTEN a b"), Finding::Mixed);
        assert_eq!(f("LISTEN *"), Finding::Mixed);
        assert_eq!(f("LISTEN U&\"a\""), Finding::Mixed);
        // The two readings of a backslash disagree on whether LISTEN is code.
        assert_eq!(f(r"select '\'; listen a; --'"), Finding::Mixed);
    }

    #[test]
    fn other_texts_are_not_ours() {
        assert_eq!(f("select 1"), Finding::None);
        assert_eq!(f("NOTIFY a, 'LISTEN b'"), Finding::None);
        assert_eq!(f("select 'x; listen a'"), Finding::None);
        assert_eq!(f("do $$ begin; listen a; end $$"), Finding::None);
        assert_eq!(f("select $1; select 2"), Finding::None);
        assert_eq!(f(""), Finding::None);
        for t in ["'", "\"", "$", "$a$", "/*", "listen \"", "(((;", "\u{ff}"] {
            let _ = f(t);
        }
    }
}
