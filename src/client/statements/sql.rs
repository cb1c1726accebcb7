//! What a query text (a simple Query, or the text of a Parse) asks for that transaction mode
//! must see before it runs: SQL `PREPARE`, `EXECUTE`, `DEALLOCATE` and `DISCARD ALL`, which
//! touch prepared statements, and the session state that cannot follow a client from upstream
//! to upstream ([`Unconfined`]).
//!
//! # Design
//!
//! Only the first words of each statement matter, so the text is cut at top-level semicolons by
//! a small lexer ([`lexer`]) that knows where PostgreSQL's scanner sees code and where it does
//! not: `'…'` strings (quotes doubled, backslash escapes in `E'…'`), `"…"` identifiers, `$tag$`
//! dollar quotes, `--` and nested `/* */` comments, `$1` parameters, `$` inside identifiers.
//! Semicolons inside parentheses (a rule's action list) do not start a statement. Whether
//! backslashes escape in plain `'…'` strings depends on `standard_conforming_strings`, which
//! the proxy does not know, so the text is lexed both ways and the stronger finding wins: a
//! command hidden from one reading is still found by the other. Nothing is allocated, and a
//! text without a semicolon (most of them) is only read as far as its first two words.
//!
//! Before any of that, one byte pass ([`Sketch`]) says whether the text holds the words any
//! finding needs (`prepare`, `execute`, `deallocate`, `discard`, or those of unconfined
//! state); a text without them is [`Command::Other`] and the lexer never runs. The same pass
//! serves the LISTEN and `set_config` checks of the rewrite.
//!
//! The checks for [`Unconfined`] state run only when their words occur somewhere in the text
//! ([`Mentions`]); then every token of every statement is read (an advisory lock function may
//! be called anywhere in a statement) in the same lexer pass. `EXPLAIN [ANALYZE]` is looked
//! through, as it runs the statement it explains.

#[cfg(test)]
mod fast_path;
pub(crate) mod lexer;
pub(crate) mod sketch;
#[cfg(test)]
mod tests;
mod unconfined;

use lexer::{Lexer, Token};
pub use sketch::Sketch;
pub use unconfined::{Mentions, Unconfined};

/// What a text asks for, weakest first; a text with several statements is classified by its
/// strongest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// Nothing that concerns prepared statements or unconfined state (including
    /// `PREPARE TRANSACTION`).
    Other,
    /// `DISCARD ALL` or `DEALLOCATE [PREPARE] ALL`: drops every prepared statement of the
    /// session it runs on.
    DropsAll,
    /// SQL `PREPARE`, `EXECUTE` or `DEALLOCATE name`: names a statement in the upstream's
    /// namespace, which transaction mode shares between clients.
    Named,
    /// Session state that would stay on the upstream after the client's transaction.
    Unconfined(Unconfined),
}

/// Classifies a query text (bytes in the client's encoding).
pub fn classify(text: &[u8]) -> Command {
    examine(text).0
}

/// Classifies a query text, and says whether it mentions the words of unconfined state
/// anywhere (strings and bodies included), which the lexer may not have seen in use.
pub fn examine(text: &[u8]) -> (Command, bool) {
    examine_sketched(text, Sketch::of(text))
}

/// [`examine`] for a text already sketched (`sketch` must be [`Sketch::of`] the same text).
pub fn examine_sketched(text: &[u8], sketch: Sketch) -> (Command, bool) {
    // Every finding below needs one of the sketched words in the text's bytes (a keyword is
    // a slice of them; the unconfined checks run only on a mention): without one there is
    // nothing to find.
    if !sketch.commands() && !sketch.unconfined() && !sketch.unicode() {
        return (Command::Other, false);
    }
    let mentions = Mentions::sketched(text, sketch);
    // Without a backslash both readings are one; without a semicolon or a mention only the
    // first statement's first words matter (a string in EXPLAIN's options may end elsewhere
    // in the other reading, hence no backslash either).
    let command = if !mentions.any() && !text.contains(&b';') && !text.contains(&b'\\') {
        first_statement(text)
    } else if !text.contains(&b'\\') {
        classify_as(text, false, mentions)
    } else {
        classify_as(text, false, mentions).max(classify_as(text, true, mentions))
    };
    (command, mentions.any())
}

/// The finding for a text that holds one statement and mentions no unconfined state.
fn first_statement(text: &[u8]) -> Command {
    let mut s = Scan::new(text, false, Mentions::default());
    match s.next() {
        Token::Word(first) => statement(first, &mut s).0,
        _ => Command::Other,
    }
}

fn classify_as(text: &[u8], backslash_quotes: bool, mentions: Mentions) -> Command {
    let mut s = Scan::new(text, backslash_quotes, mentions);
    let mut found = Command::Other;
    loop {
        s.begin_statement();
        let mut token = s.next();
        if let Token::Word(first) = token {
            let (finding, last) = statement(first, &mut s);
            found = found.max(finding);
            token = last;
        }
        while !s.ends(token) {
            token = s.next();
        }
        if s.locks {
            found = found.max(Command::Unconfined(Unconfined::AdvisoryLock));
        }
        if token == Token::End {
            return found;
        }
    }
}

/// True when `t` is the word `k` (any case).
fn is(t: Token<'_>, k: &str) -> bool {
    matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k.as_bytes()))
}

/// The finding for a statement that starts with the word `first`, and the last token read.
fn statement<'a>(first: &'a [u8], s: &mut Scan<'a>) -> (Command, Token<'a>) {
    let second = s.next();
    let first_token = Token::Word(first);
    if is(first_token, "explain") {
        return explain(second, s);
    }
    if is(first_token, "prepare") {
        let finding = if is(second, "transaction") {
            Command::Other
        } else {
            Command::Named
        };
        return (finding, second);
    }
    if is(first_token, "execute") {
        return (Command::Named, second);
    }
    if is(first_token, "discard") {
        let finding = if is(second, "all") {
            Command::DropsAll
        } else {
            Command::Other
        };
        return (finding, second);
    }
    if is(first_token, "deallocate") {
        let (all, last) = if is(second, "prepare") {
            let third = s.next();
            (is(third, "all"), third)
        } else {
            (is(second, "all"), second)
        };
        let finding = if all {
            Command::DropsAll
        } else {
            Command::Named
        };
        return (finding, last);
    }
    unconfined::statement(first, second, s)
}

/// `EXPLAIN [(options)] [ANALYZE] [VERBOSE] statement`: ANALYZE runs the statement, so it is
/// judged as if it came alone (one level: EXPLAIN does not nest).
fn explain<'a>(mut t: Token<'a>, s: &mut Scan<'a>) -> (Command, Token<'a>) {
    if t == Token::Open {
        while s.depth > 0 && !s.ends(t) {
            t = s.next();
        }
        t = s.next();
    }
    while is(t, "analyze") || is(t, "analyse") || is(t, "verbose") {
        t = s.next();
    }
    match t {
        Token::Word(w) if !is(t, "explain") => statement(w, s),
        _ => (Command::Other, t),
    }
}

/// The lexer as the statement checks read it: parentheses counted, the end of the statement
/// sticky (reading past it returns it again), and calls of the session advisory lock
/// functions noted on the way when the text mentions them.
struct Scan<'a> {
    lexer: Lexer<'a>,
    mentions: Mentions,
    /// Parentheses open in the current statement.
    depth: u32,
    /// The statement's end, once read: a top-level semicolon or the end of the text.
    ended: Option<Token<'a>>,
    /// The last token named a session advisory lock function.
    lock_name: bool,
    /// Such a function is called (its name followed by a parenthesis).
    locks: bool,
}

impl<'a> Scan<'a> {
    fn new(text: &'a [u8], backslash_quotes: bool, mentions: Mentions) -> Self {
        Scan {
            lexer: Lexer::new(text, backslash_quotes),
            mentions,
            depth: 0,
            ended: None,
            lock_name: false,
            locks: false,
        }
    }

    fn begin_statement(&mut self) {
        self.depth = 0;
        self.ended = None;
        self.lock_name = false;
    }

    fn next(&mut self) -> Token<'a> {
        if let Some(end) = self.ended {
            return end;
        }
        let t = self.lexer.next();
        match t {
            Token::Open => {
                self.locks |= self.lock_name;
                self.depth += 1;
            }
            Token::Close => self.depth = self.depth.saturating_sub(1),
            Token::Semicolon if self.depth == 0 => self.ended = Some(t),
            Token::End => self.ended = Some(t),
            _ => {}
        }
        if self.mentions.advisory {
            self.lock_name = unconfined::is_lock_function(t);
        }
        t
    }

    /// True when `t` ends the current statement.
    fn ends(&self, t: Token<'_>) -> bool {
        t == Token::End || (t == Token::Semicolon && self.depth == 0)
    }
}
