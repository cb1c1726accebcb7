//! Which statements of a query text are `LISTEN`, `UNLISTEN` or `UNLISTEN *`, and the channel
//! each names, with PostgreSQL's identifier rules.
//!
//! # Design
//!
//! The text is cut at top-level semicolons by a lexer that knows where PostgreSQL's scanner
//! sees code: `'…'` strings, `"…"` identifiers, `$tag$` quotes, `--` and nested `/* */`
//! comments. Whether backslashes escape in plain strings depends on
//! `standard_conforming_strings`, which the proxy does not know: the text is read both ways,
//! and if the readings disagree about where a LISTEN is, the text counts as mixed (refused),
//! never as one of them guessed. A channel name is folded as PostgreSQL folds identifiers: an
//! unquoted one to ASCII lower case, a quoted one kept with `""` as `"`, both cut to 63 bytes
//! (NAMEDATALEN - 1) at a character boundary.

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
    may_mention_listen(text) && find(text) != Finding::None
}

/// False when `bytes` cannot hold the word `listen` in any letter case, so the lexer (which
/// allocates per statement) need not run: ordinary queries pay one pass over their bytes.
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
    let mut lexer = Lexer {
        text,
        at: 0,
        backslash_quotes,
    };
    let mut found = Vec::new();
    let mut other = false;
    let mut unreadable = false;
    loop {
        let tokens = lexer.statement();
        match tokens.first() {
            None => {}
            Some(Token::Word(w))
                if w.eq_ignore_ascii_case(b"listen") || w.eq_ignore_ascii_case(b"unlisten") =>
            {
                match statement(&tokens) {
                    Some(s) => found.push(s),
                    None => unreadable = true,
                }
            }
            Some(_) => other = true,
        }
        if lexer.done() {
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
        Token::Quoted(q) => truncate(q.clone()),
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a [u8]),
    /// A `"…"` identifier's content; `None` inside when it is not UTF-8 or a `U&"…"` form.
    Quoted(String),
    Star,
    /// Anything else: a string, a number, an operator, a parenthesis.
    Other,
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

    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    /// The tokens up to the next top-level semicolon (consumed) or the end. Only the first
    /// few are kept: a LISTEN has two.
    fn statement(&mut self) -> Vec<Token<'a>> {
        let mut tokens = Vec::new();
        let mut depth = 0u32;
        loop {
            self.skip_space_and_comments();
            let Some(b) = self.peek(0) else {
                return tokens;
            };
            let from = self.at;
            self.at += 1;
            let token = match b {
                b';' if depth == 0 => return tokens,
                b'(' => {
                    depth += 1;
                    Token::Other
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    Token::Other
                }
                b'*' => Token::Star,
                b'\'' => {
                    self.quoted(b'\'', self.backslash_quotes);
                    Token::Other
                }
                b'"' => {
                    self.quoted(b'"', false);
                    let inner = &self.text[from + 1..self.at.saturating_sub(1).max(from + 1)];
                    match std::str::from_utf8(inner) {
                        Ok(s) if self.text.get(self.at - 1) == Some(&b'"') => {
                            Token::Quoted(s.replace("\"\"", "\""))
                        }
                        _ => Token::Other,
                    }
                }
                b'$' => {
                    self.dollar();
                    Token::Other
                }
                _ if word_start(b) => self.word(from),
                _ => Token::Other,
            };
            if tokens.len() < 3 {
                tokens.push(token);
            }
        }
    }

    fn word(&mut self, from: usize) -> Token<'a> {
        while self.peek(0).is_some_and(word_part) {
            self.at += 1;
        }
        let word = &self.text[from..self.at];
        match self.peek(0) {
            Some(b'\'') => {
                // A prefixed string: only E'…' takes backslash escapes whatever the setting.
                self.at += 1;
                self.quoted(
                    b'\'',
                    word.eq_ignore_ascii_case(b"e") || self.backslash_quotes,
                );
                Token::Other
            }
            Some(b'&') if word.eq_ignore_ascii_case(b"u") => Token::Other,
            _ => Token::Word(word),
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

    /// After an opening `quote`: to the closing one (doubled quotes stay inside).
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
        let tag_from = self.at - 1;
        let mut end = self.at;
        while self
            .text
            .get(end)
            .is_some_and(|&b| word_part(b) && b != b'$')
        {
            end += 1;
        }
        if self.text.get(end) != Some(&b'$')
            || self.text.get(tag_from + 1).is_some_and(u8::is_ascii_digit)
        {
            self.at = end;
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
