//! Which SQL commands in a query text touch prepared statements: `PREPARE`, `EXECUTE`,
//! `DEALLOCATE` and `DISCARD ALL` in a simple Query or in the text of a Parse.
//!
//! # Design
//!
//! Only the first words of each statement matter, so the text is cut at top-level semicolons by
//! a small lexer that knows where PostgreSQL's scanner sees code and where it does not: `'…'`
//! strings (quotes doubled, backslash escapes in `E'…'`), `"…"` identifiers, `$tag$` dollar
//! quotes, `--` and nested `/* */` comments, `$1` parameters, `$` inside identifiers.
//! Semicolons inside parentheses (a rule's action list) do not start a statement. Whether
//! backslashes escape in plain `'…'` strings depends on `standard_conforming_strings`, which
//! the proxy does not know, so the text is lexed both ways and the stronger finding wins: a
//! command hidden from one reading is still found by the other. Nothing is allocated, and a
//! text without a semicolon (most of them) is only read as far as its first two words.

/// What a text does to prepared statements, weakest first; a text with several statements is
/// classified by its strongest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// Nothing that concerns prepared statements (including `PREPARE TRANSACTION`).
    Other,
    /// `DISCARD ALL` or `DEALLOCATE [PREPARE] ALL`: drops every prepared statement of the
    /// session it runs on.
    DropsAll,
    /// SQL `PREPARE`, `EXECUTE` or `DEALLOCATE name`: names a statement in the upstream's
    /// namespace, which transaction mode shares between clients.
    Named,
}

/// Classifies a query text (bytes in the client's encoding).
pub fn classify(text: &[u8]) -> Command {
    // Without a backslash both readings are one; without a semicolon only the first statement
    // exists (a semicolon inside a string just takes the long way). Most texts take neither.
    if !text.contains(&b';') {
        return first_statement(text);
    }
    if !text.contains(&b'\\') {
        return classify_as(text, false);
    }
    classify_as(text, false).max(classify_as(text, true))
}

/// The finding for a text that holds one statement.
fn first_statement(text: &[u8]) -> Command {
    let mut lexer = Lexer {
        text,
        at: 0,
        backslash_quotes: false,
    };
    match lexer.next() {
        Token::Word(first) => statement(first, &mut lexer).0,
        _ => Command::Other,
    }
}

fn classify_as(text: &[u8], backslash_quotes: bool) -> Command {
    let mut lexer = Lexer {
        text,
        at: 0,
        backslash_quotes,
    };
    let mut found = Command::Other;
    loop {
        let mut token = lexer.next();
        if let Token::Word(first) = token {
            let (finding, last) = statement(first, &mut lexer);
            found = found.max(finding);
            token = last;
        }
        let mut depth = 0u32;
        loop {
            match token {
                Token::End => return found,
                Token::Semicolon if depth == 0 => break,
                Token::Open => depth += 1,
                Token::Close => depth = depth.saturating_sub(1),
                _ => {}
            }
            token = lexer.next();
        }
    }
}

/// The finding for a statement that starts with the word `first`, and the last token read.
fn statement<'a>(first: &[u8], lexer: &mut Lexer<'a>) -> (Command, Token<'a>) {
    let is =
        |t: Token<'_>, k: &str| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k.as_bytes()));
    let first = Token::Word(first);
    let second = lexer.next();
    let finding = if is(first, "prepare") {
        if is(second, "transaction") {
            Command::Other
        } else {
            Command::Named
        }
    } else if is(first, "execute") {
        Command::Named
    } else if is(first, "discard") {
        if is(second, "all") {
            Command::DropsAll
        } else {
            Command::Other
        }
    } else if is(first, "deallocate") {
        if is(second, "prepare") {
            let third = lexer.next();
            let finding = if is(third, "all") {
                Command::DropsAll
            } else {
                Command::Named
            };
            return (finding, third);
        }
        if is(second, "all") {
            Command::DropsAll
        } else {
            Command::Named
        }
    } else {
        Command::Other
    };
    (finding, second)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a [u8]),
    Semicolon,
    Open,
    Close,
    /// Anything else: a string, a number, an operator.
    Other,
    End,
}

struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
    backslash_quotes: bool,
}

fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn word_part(b: u8) -> bool {
    word_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.at + ahead).copied()
    }

    fn next(&mut self) -> Token<'a> {
        self.skip_space_and_comments();
        let Some(b) = self.peek(0) else {
            return Token::End;
        };
        let from = self.at;
        self.at += 1;
        match b {
            b';' => Token::Semicolon,
            b'(' => Token::Open,
            b')' => Token::Close,
            b'\'' => {
                self.string(self.backslash_quotes);
                Token::Other
            }
            b'"' => {
                self.quoted(b'"', false);
                Token::Other
            }
            b'$' => {
                self.dollar();
                Token::Other
            }
            _ if word_start(b) => {
                while self.peek(0).is_some_and(word_part) {
                    self.at += 1;
                }
                let word = &self.text[from..self.at];
                if self.peek(0) == Some(b'\'') {
                    // A prefixed string (E'…', B'…', X'…', N'…', U&'…' has its own path):
                    // only E'…' takes backslash escapes whatever the setting.
                    self.at += 1;
                    self.string(word.eq_ignore_ascii_case(b"e") || self.backslash_quotes);
                    return Token::Other;
                }
                Token::Word(word)
            }
            _ => Token::Other,
        }
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.at += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.peek(0).is_some_and(|b| b != b'\n') {
                        self.at += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    self.at += 2;
                    let mut depth = 1u32;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => return,
                            (Some(b'*'), Some(b'/')) => (depth, self.at) = (depth - 1, self.at + 2),
                            (Some(b'/'), Some(b'*')) => (depth, self.at) = (depth + 1, self.at + 2),
                            _ => self.at += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// After an opening `'`: to the closing one.
    fn string(&mut self, backslash: bool) {
        self.quoted(b'\'', backslash);
    }

    /// After an opening `quote`: to the closing one (doubled quotes stay inside). An
    /// unterminated string runs to the end, as PostgreSQL's scanner would refuse the rest.
    fn quoted(&mut self, quote: u8, backslash: bool) {
        while let Some(b) = self.peek(0) {
            self.at += 1;
            if backslash && b == b'\\' {
                self.at += 1;
            } else if b == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                } else {
                    return;
                }
            }
        }
        self.at = self.at.min(self.text.len());
    }

    /// After a `$` that starts a token: a `$1` parameter, a `$tag$` quote, or a lone `$`.
    fn dollar(&mut self) {
        if self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.at += 1;
            }
            return;
        }
        let tag_from = self.at - 1;
        let mut end = self.at;
        if self.text.get(end).copied().is_some_and(word_start) {
            while self
                .text
                .get(end)
                .is_some_and(|&b| word_part(b) && b != b'$')
            {
                end += 1;
            }
        }
        if self.text.get(end) != Some(&b'$') {
            return;
        }
        let tag = &self.text[tag_from..=end];
        let body = &self.text[end + 1..];
        self.at = match body.windows(tag.len()).position(|w| w == tag) {
            Some(at) => end + 1 + at + tag.len(),
            None => self.text.len(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Command {
        classify(text.as_bytes())
    }

    #[test]
    fn first_words_of_each_statement_decide() {
        assert_eq!(c("select 1"), Command::Other);
        assert_eq!(c("PREPARE p (int) AS SELECT $1"), Command::Named);
        assert_eq!(
            c("  /* hi /* nested */ */ -- x\n prepare p as select 1"),
            Command::Named
        );
        assert_eq!(c("execute p(1)"), Command::Named);
        assert_eq!(c("DEALLOCATE p"), Command::Named);
        assert_eq!(c("deallocate prepare p"), Command::Named);
        assert_eq!(c("DEALLOCATE ALL"), Command::DropsAll);
        assert_eq!(c("deallocate prepare all;"), Command::DropsAll);
        assert_eq!(c("DISCARD ALL"), Command::DropsAll);
        assert_eq!(c("discard plans"), Command::Other);
        assert_eq!(c("PREPARE TRANSACTION 'x'"), Command::Other);
        assert_eq!(c("select 1; execute p"), Command::Named);
        assert_eq!(c(";;discard all; select 1"), Command::DropsAll);
        assert_eq!(c("discard all; execute p"), Command::Named);
    }

    #[test]
    fn words_inside_strings_comments_and_bodies_do_not_count() {
        assert_eq!(c("select 'a; execute p'"), Command::Other);
        assert_eq!(c("select \"x; execute p\""), Command::Other);
        assert_eq!(c("do $$ begin execute 'x'; end $$"), Command::Other);
        assert_eq!(c("do $f$ begin; execute 'x'; end $f$"), Command::Other);
        assert_eq!(c("select $1; select a$b$c; select 2"), Command::Other);
        assert_eq!(c("select 1 -- ; execute p"), Command::Other);
        assert_eq!(c("select /* ; execute p */ 1"), Command::Other);
        assert_eq!(
            c("create rule r as on insert to t do also (notify a; notify b)"),
            Command::Other
        );
        assert_eq!(c("grant execute on function f() to x"), Command::Other);
        assert_eq!(c("select 'it''s'; select 1"), Command::Other);
    }

    #[test]
    fn backslash_readings_are_both_considered() {
        // With backslash escapes the string ends at the second quote and EXECUTE is code.
        assert_eq!(c(r"select '\'; execute p; --'"), Command::Named);
        // E'' strings always escape, so this is one statement in both readings.
        assert_eq!(c(r"select e'\'; execute p; --'"), Command::Other);
    }

    #[test]
    fn odd_texts_never_panic() {
        for t in [
            "",
            "'",
            "$",
            "$a",
            "$a$",
            "/*",
            "e'",
            "\"",
            "deallocate prepare",
            "(((;",
        ] {
            let _ = c(t);
        }
        assert_eq!(classify(b"\xff\xfe; prepare x as select 1"), Command::Named);
    }
}
