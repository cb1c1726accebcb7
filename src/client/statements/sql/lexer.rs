//! The tokens of a query text as PostgreSQL's scanner would see them: code words, quoted
//! identifiers, and everything it does not read as code (strings, dollar quotes, comments)
//! folded into one opaque token.

/// One token; the text of words and quoted identifiers is borrowed from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// A keyword or unquoted identifier (case as written).
    Word(&'a [u8]),
    /// A `"…"` identifier, without its quotes (doubled quotes left as they are).
    Quoted(&'a [u8]),
    Semicolon,
    Open,
    Close,
    Dot,
    /// `*` (`UNLISTEN *`).
    Star,
    /// Anything else: a string, a number, an operator.
    Other,
    End,
}

/// Reads tokens from the front of a text; never panics, whatever the bytes.
pub(crate) struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
    /// Read `'…'` strings with backslash escapes (`standard_conforming_strings = off`).
    backslash_quotes: bool,
}

fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Bytes that continue a word (so a keyword is never the middle of a longer word).
pub(super) fn word_part(b: u8) -> bool {
    word_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a [u8], backslash_quotes: bool) -> Self {
        Lexer {
            text,
            at: 0,
            backslash_quotes,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.at + ahead).copied()
    }

    pub(crate) fn next(&mut self) -> Token<'a> {
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
            b'.' => Token::Dot,
            b'*' => Token::Star,
            b'\'' => {
                self.string(self.backslash_quotes);
                Token::Other
            }
            b'"' => {
                // An unterminated identifier is a syntax error to PostgreSQL: nothing runs.
                if self.quoted(b'"', false) {
                    Token::Quoted(&self.text[from + 1..self.at - 1])
                } else {
                    Token::Other
                }
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

    /// After an opening `quote`: to the closing one (doubled quotes stay inside); true when it
    /// was closed. An unterminated string runs to the end, as PostgreSQL's scanner would
    /// refuse the rest.
    fn quoted(&mut self, quote: u8, backslash: bool) -> bool {
        while let Some(b) = self.peek(0) {
            self.at += 1;
            if backslash && b == b'\\' {
                self.at += 1;
            } else if b == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                } else {
                    return true;
                }
            }
        }
        self.at = self.at.min(self.text.len());
        false
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
