//! One pass over a query text that says which of the words the trackers look for occur in it
//! at all, so the statement checks, the LISTEN check and the `set_config` check are skipped
//! for the texts (almost all of them) that contain none.
//!
//! # Design
//!
//! Every finding of the slower checks needs one of a few words written out in the raw bytes:
//! a keyword is never spelled with escapes, the lexer's words are slices of the text, and the
//! unconfined-state and `set_config` checks already read raw bytes. So "none of these words
//! occurs anywhere, in any ASCII letter case, strings and comments included" is a conservative
//! reject: those checks would find nothing. The one way to name something without writing
//! it out is a `U&"…"` identifier with escapes; its opening is flagged on its own
//! ([`Sketch::unicode`]) and taken as a mention of everything by the callers.
//!
//! Each word is found by its first letters: the 3-byte window at every second byte of the
//! text, ASCII-case folded, is hashed into a 4096-bit table holding each word's letters 0-2
//! and 1-3 (every word has four or more letters, so one of its first two positions is probed
//! and matches one of the two), and only a window that lands on a set bit is compared with
//! the words starting there and one byte before. An ordinary query pays one multiplication
//! and one table probe per two bytes, and allocates nothing.

/// The words found in a text, one bit each ([`Sketch::of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sketch(u16);

/// A word some check needs, as written in lower case, and its bit.
const WORDS: [(&[u8], u16); 10] = [
    (b"prepare", Sketch::PREPARE),
    (b"execute", Sketch::EXECUTE),
    (b"deallocate", Sketch::DEALLOCATE),
    (b"discard", Sketch::DISCARD),
    (b"advisory", Sketch::ADVISORY),
    (b"authorization", Sketch::AUTHORIZATION),
    (b"hold", Sketch::HOLD),
    (b"temp", Sketch::TEMP),
    (b"listen", Sketch::LISTEN),
    (b"set_config", Sketch::SET_CONFIG),
];

/// Three bytes as one number with ASCII letters folded to lower case. Other bytes are folded
/// too (`_` and DEL meet), which only lets more windows through to the exact comparison.
const fn fold(a: u8, b: u8, c: u8) -> u32 {
    u32::from_le_bytes([a, b, c, 0]) | 0x0020_2020
}

/// A folded window's bit in [`TABLE`].
const fn slot(folded: u32) -> usize {
    (folded.wrapping_mul(0x9E37_79B1) >> 20) as usize
}

/// The slots of every word's first four bytes.
const TABLE: [u64; 64] = {
    let mut table = [0u64; 64];
    let mut i = 0;
    while i < WORDS.len() {
        let w = WORDS[i].0;
        let at_start = slot(fold(w[0], w[1], w[2]));
        let one_in = slot(fold(w[1], w[2], w[3]));
        table[at_start / 64] |= 1 << (at_start % 64);
        table[one_in / 64] |= 1 << (one_in % 64);
        i += 1;
    }
    table
};

impl Sketch {
    const PREPARE: u16 = 1 << 0;
    const EXECUTE: u16 = 1 << 1;
    const DEALLOCATE: u16 = 1 << 2;
    const DISCARD: u16 = 1 << 3;
    const ADVISORY: u16 = 1 << 4;
    const AUTHORIZATION: u16 = 1 << 5;
    const HOLD: u16 = 1 << 6;
    const TEMP: u16 = 1 << 7;
    const LISTEN: u16 = 1 << 8;
    const SET_CONFIG: u16 = 1 << 9;
    const UNICODE: u16 = 1 << 10;

    /// The words of [`WORDS`] that occur in `text` as substrings (ASCII case ignored), and
    /// whether a `U&"` identifier opens in it.
    pub fn of(text: &[u8]) -> Sketch {
        let mut found = 0;
        // Probes at 0, 2, 4…, every one a full window: a word at `s` (four letters or more)
        // has its own window at `s` or `s + 1` probed.
        for (half, w) in text.windows(3).step_by(2).enumerate() {
            let s = slot(fold(w[0], w[1], w[2]));
            if TABLE[s / 64] & (1 << (s % 64)) != 0 {
                let at = 2 * half;
                found |= words_at(&text[at..]);
                if at > 0 {
                    found |= words_at(&text[at - 1..]);
                }
            }
        }
        if text.contains(&b'&') && unicode_identifier(text) {
            found |= Self::UNICODE;
        }
        Sketch(found)
    }

    /// Nothing the checks look for is in the text.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `prepare`, `execute`, `deallocate` or `discard` occurs: the statement checks may find
    /// a command that touches prepared statements.
    pub fn commands(self) -> bool {
        self.0 & (Self::PREPARE | Self::EXECUTE | Self::DEALLOCATE | Self::DISCARD) != 0
    }

    /// A word of unconfined session state occurs (`advisory`, `authorization`, `hold`,
    /// `temp`); [`super::Mentions`] reads which, as words.
    pub fn unconfined(self) -> bool {
        self.0 & (Self::ADVISORY | Self::AUTHORIZATION | Self::HOLD | Self::TEMP) != 0
    }

    /// `listen` occurs (so does every `unlisten`).
    pub fn listen(self) -> bool {
        self.0 & Self::LISTEN != 0
    }

    /// `set_config` occurs.
    pub fn set_config(self) -> bool {
        self.0 & Self::SET_CONFIG != 0
    }

    /// A `U&"…"` identifier opens: with escapes it may spell any name without its letters.
    pub fn unicode(self) -> bool {
        self.0 & Self::UNICODE != 0
    }
}

/// The bits of the words that start at the front of `rest`.
fn words_at(rest: &[u8]) -> u16 {
    let mut found = 0;
    for (word, bit) in WORDS {
        if rest
            .get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            found |= bit;
        }
    }
    found
}

/// True when `U&"` (either case of the `U`) occurs in `text`.
fn unicode_identifier(text: &[u8]) -> bool {
    text.windows(3)
        .any(|w| w[0] | 0x20 == b'u' && w[1] == b'&' && w[2] == b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same finding, the slow way: every word searched for at every position.
    fn naive(text: &[u8]) -> Sketch {
        let mut found = 0;
        for at in 0..text.len() {
            found |= words_at(&text[at..]);
        }
        if unicode_identifier(text) {
            found |= Sketch::UNICODE;
        }
        Sketch(found)
    }

    #[test]
    fn every_word_is_found_in_any_case_and_anywhere() {
        for (word, bit) in WORDS {
            let lower = std::str::from_utf8(word).unwrap_or_default();
            for text in [
                lower.to_string(),
                lower.to_ascii_uppercase(),
                format!("x{}y", lower.to_ascii_uppercase()),
                format!("'{lower}'"),
                format!("/*{lower}*/"),
                format!("E'\\{lower}"),
            ] {
                assert_eq!(Sketch::of(text.as_bytes()).0 & bit, bit, "{text}");
            }
            // One letter short is not the word.
            assert_eq!(Sketch::of(&word[..word.len() - 1]).0 & bit, 0, "{lower}");
        }
        assert!(Sketch::of(b"select U&\"d\\0061ta\"").unicode());
        assert!(Sketch::of(b"u&\"").unicode());
        assert!(!Sketch::of(b"select 1 & 2, U&'x'").unicode());
    }

    #[test]
    fn ordinary_queries_find_nothing() {
        for text in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 2;",
            "BEGIN",
            "COMMIT;",
            "",
            "abc",
        ] {
            assert!(Sketch::of(text.as_bytes()).is_empty(), "{text}");
        }
    }

    #[test]
    fn the_table_agrees_with_a_search_at_every_position() {
        // Texts built from pieces of the words, glued in every order a small generator
        // gives, so partial words, overlaps and case changes all occur.
        const PIECES: [&str; 16] = [
            "pre", "PARE", "exe", "cute", "deal", "LOC", "ate", "disc", "ard", "advi", "sory",
            "auth", "hold", "TEMP", "lis", "ten",
        ];
        const GLUE: [&str; 6] = ["", "_", " ", "u&\"", "set_", "CONFIG"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(next() % 6) {
                text.push_str(PIECES[(next() % 16) as usize]);
                text.push_str(GLUE[(next() % 6) as usize]);
            }
            assert_eq!(
                Sketch::of(text.as_bytes()),
                naive(text.as_bytes()),
                "{text}"
            );
        }
    }
}
