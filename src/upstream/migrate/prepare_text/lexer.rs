//! A lexer that reads SQL text as PostgreSQL's scanner does, as far as telling code from
//! strings, quoted names and comments: what [`super`] needs to find statement boundaries and
//! the first tokens of each statement.

use std::ops::Range;

/// The tokens that decide where statements end and what a `PREPARE` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// A keyword or unquoted identifier.
    Word(Range<usize>),
    /// A `"…"` identifier (`raw`: between the quotes, `""` not yet undone) or a `U&"…"` one.
    Ident {
        raw: Range<usize>,
        unicode: bool,
    },
    /// A string literal or dollar-quoted string; `plain_backslash` when it is a `'…'` (or
    /// `N'…'`) string with a backslash in it.
    Str {
        plain_backslash: bool,
    },
    Semicolon,
    /// Any other byte (operators, punctuation, digits, `$1`).
    Other(u8),
}

/// The text is not complete SQL: something opened is never closed.
#[derive(Debug)]
pub(super) struct Unterminated;

/// Reads a query text one token at a time, skipping whitespace and comments.
pub(super) struct Lexer<'a> {
    pub(super) text: &'a [u8],
    pub(super) pos: usize,
    /// Where the token last returned starts.
    pub(super) token_start: usize,
    /// Backslash escapes in plain `'…'` strings (`standard_conforming_strings = off`).
    pub(super) backslash_quotes: bool,
}

impl Lexer<'_> {
    fn at(&self, offset: usize) -> Option<u8> {
        self.text.get(self.pos + offset).copied()
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.text[self.pos.min(self.text.len())..].starts_with(s)
    }

    /// The next token, after whitespace and comments; `Ok(None)` at the end.
    pub(super) fn next(&mut self) -> Result<Option<Token>, Unterminated> {
        self.skip_blanks()?;
        self.token_start = self.pos;
        let Some(b) = self.at(0) else {
            return Ok(None);
        };
        let next = self.at(1);
        let token = match b {
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'\'' => self.string(self.backslash_quotes, true)?,
            b'"' => self.quoted(false)?,
            b'$' => self.dollar()?,
            b'e' | b'E' if next == Some(b'\'') => {
                self.pos += 1;
                self.string(true, false)?
            }
            b'n' | b'N' if next == Some(b'\'') => {
                self.pos += 1;
                self.string(self.backslash_quotes, true)?
            }
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                self.pos += 1;
                self.string(false, false)?
            }
            b'u' | b'U' if next == Some(b'&') && self.at(2) == Some(b'\'') => {
                self.pos += 2;
                self.string(false, false)?
            }
            b'u' | b'U' if next == Some(b'&') && self.at(2) == Some(b'"') => {
                self.pos += 2;
                self.quoted(true)?
            }
            b if ident_start(b) => {
                let start = self.pos;
                while self.at(0).is_some_and(ident_cont) {
                    self.pos += 1;
                }
                Token::Word(start..self.pos)
            }
            b => {
                self.pos += 1;
                Token::Other(b)
            }
        };
        Ok(Some(token))
    }

    /// Skips whitespace (vertical tab included, as PostgreSQL 16 reads it), `--` comments and
    /// nested `/* */` comments.
    fn skip_blanks(&mut self) -> Result<(), Unterminated> {
        loop {
            match self.at(0) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) => self.pos += 1,
                Some(b'-') if self.at(1) == Some(b'-') => self.skip_line_comment(),
                Some(b'/') if self.at(1) == Some(b'*') => self.skip_block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn skip_line_comment(&mut self) {
        while !matches!(self.at(0), None | Some(b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), Unterminated> {
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            if self.at(0).is_none() {
                return Err(Unterminated);
            }
            if self.starts_with(b"*/") {
                depth -= 1;
                self.pos += 2;
            } else if self.starts_with(b"/*") {
                depth += 1;
                self.pos += 2;
            } else {
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// A quoted string starting at the quote under `pos`, with its continuations (another
    /// quoted part after whitespace holding a newline continues the same string, in the same
    /// mode). `escapes`: a backslash escapes the next byte. `plain`: a `'…'`/`N'…'` string,
    /// whose backslashes are reported.
    fn string(&mut self, escapes: bool, plain: bool) -> Result<Token, Unterminated> {
        let mut backslash = false;
        loop {
            self.pos += 1;
            loop {
                match self.at(0) {
                    None => return Err(Unterminated),
                    Some(b'\\') => {
                        backslash = true;
                        self.pos += if escapes { 2 } else { 1 };
                    }
                    Some(b'\'') if self.at(1) == Some(b'\'') => self.pos += 2,
                    Some(b'\'') => {
                        self.pos += 1;
                        break;
                    }
                    Some(_) => self.pos += 1,
                }
            }
            match self.continuation() {
                Some(quote) => self.pos = quote,
                None => {
                    return Ok(Token::Str {
                        plain_backslash: plain && backslash,
                    });
                }
            }
        }
    }

    /// Where a string that just closed continues: the position of the next quote when only
    /// whitespace and `--` comments, with at least one newline, stand between.
    fn continuation(&self) -> Option<usize> {
        let mut i = self.pos;
        let mut newline = false;
        loop {
            match self.text.get(i) {
                Some(b'\n' | b'\r') => {
                    newline = true;
                    i += 1;
                }
                Some(b' ' | b'\t' | 0x0b | 0x0c) => i += 1,
                Some(b'-') if self.text.get(i + 1) == Some(&b'-') => {
                    while !matches!(self.text.get(i), None | Some(b'\n' | b'\r')) {
                        i += 1;
                    }
                }
                Some(b'\'') if newline => return Some(i),
                _ => return None,
            }
        }
    }

    /// A `"…"` identifier starting at the quote under `pos`.
    fn quoted(&mut self, unicode: bool) -> Result<Token, Unterminated> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.at(0) {
                None => return Err(Unterminated),
                Some(b'"') if self.at(1) == Some(b'"') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Token::Ident {
                        raw: start..self.pos - 1,
                        unicode,
                    });
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// `$1` (a parameter), `$tag$…$tag$` (a dollar-quoted string), or a lone `$`.
    fn dollar(&mut self) -> Result<Token, Unterminated> {
        let start = self.pos;
        let mut end = start + 1;
        if self.text.get(end).is_some_and(u8::is_ascii_digit) {
            while self.text.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            self.pos = end;
            return Ok(Token::Other(b'$'));
        }
        if self.text.get(end).copied().is_some_and(ident_start) {
            while self
                .text
                .get(end)
                .copied()
                .is_some_and(|b| b != b'$' && ident_cont(b))
            {
                end += 1;
            }
        }
        if self.text.get(end) != Some(&b'$') {
            // Not a dollar quote: PostgreSQL reads the `$` alone and goes on after it.
            self.pos = start + 1;
            return Ok(Token::Other(b'$'));
        }
        let tag = &self.text[start..=end];
        let body = end + 1;
        let close = self.text[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .ok_or(Unterminated)?;
        self.pos = body + close + tag.len();
        Ok(Token::Str {
            plain_backslash: false,
        })
    }
}

/// Bytes that start an identifier (any byte of a multibyte character included).
fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Bytes that continue an identifier.
fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}
