//! The extended-query messages a client sends that name a prepared statement (Parse, Bind,
//! Describe, Close) and Execute, read from a frame body with every length checked, and the
//! writers that re-encode them under another statement name.
//!
//! Readers borrow from the body and never allocate, so looking at a message that needs no
//! rewriting (the unnamed statement) costs a few byte comparisons. A body that ends early, lacks
//! a terminator, or carries a negative count is [`ProtocolError::Malformed`]: peer input never
//! panics and no count is trusted before the bytes it describes are known to be there.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::ProtocolError;

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

/// A Parse body: the statement's name, its query text and its parameter type OIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Empty for the unnamed statement.
    pub name: &'a [u8],
    /// The SQL text, without its terminator, as bytes in the client's encoding.
    pub query: &'a [u8],
    /// The parameter type OIDs, 4 bytes each, big-endian; see [`Parse::types`].
    types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Reads a Parse body (after tag and length).
    pub fn read(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const WHAT: ProtocolError = ProtocolError::Malformed("Parse");
        let (name, rest) = cstr(body).ok_or(WHAT)?;
        let (query, rest) = cstr(rest).ok_or(WHAT)?;
        let (count, types) = rest.split_first_chunk::<2>().ok_or(WHAT)?;
        let count = i16::from_be_bytes(*count);
        if count < 0 || types.len() != count as usize * 4 {
            return Err(WHAT);
        }
        Ok(Parse { name, query, types })
    }

    /// The parameter type OIDs (0 means "let PostgreSQL infer it").
    pub fn types(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        self.types
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The raw type list (count times 4 bytes), for hashing without decoding.
    pub fn raw_types(&self) -> &'a [u8] {
        self.types
    }
}

/// A Bind body, read only as far as the two names: what follows (formats, parameter values,
/// result formats) is carried over unread, and PostgreSQL checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// The portal to create; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// The prepared statement to bind; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// Everything after the statement name, verbatim.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Reads a Bind body (after tag and length).
    pub fn read(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const WHAT: ProtocolError = ProtocolError::Malformed("Bind");
        let (portal, rest) = cstr(body).ok_or(WHAT)?;
        let (statement, rest) = cstr(rest).ok_or(WHAT)?;
        Ok(Bind {
            portal,
            statement,
            rest,
        })
    }
}

/// A Describe or Close body: what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Statement or portal.
    pub kind: Kind,
    /// Empty for the unnamed one.
    pub name: &'a [u8],
}

impl<'a> Target<'a> {
    /// Reads a Describe or Close body (after tag and length).
    pub fn read(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const WHAT: ProtocolError = ProtocolError::Malformed("Describe or Close");
        let (&kind, rest) = body.split_first().ok_or(WHAT)?;
        let kind = match kind {
            b'S' => Kind::Statement,
            b'P' => Kind::Portal,
            _ => return Err(WHAT),
        };
        match cstr(rest) {
            Some((name, [])) => Ok(Target { kind, name }),
            _ => Err(WHAT),
        }
    }
}

/// An Execute body: the portal and the row limit (0: all rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// Empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Most rows to return before PortalSuspended; 0 for no limit.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Reads an Execute body (after tag and length).
    pub fn read(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const WHAT: ProtocolError = ProtocolError::Malformed("Execute");
        let (portal, rest) = cstr(body).ok_or(WHAT)?;
        let max_rows: [u8; 4] = rest.try_into().map_err(|_| WHAT)?;
        Ok(Execute {
            portal,
            max_rows: i32::from_be_bytes(max_rows),
        })
    }
}

/// Splits a NUL-terminated string off the front of `buf`.
fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// Writes a whole frame: tag, then a length patched in once `body` has written the contents.
fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a Parse frame. The query is bytes in the client's encoding, which need not be UTF-8,
/// so postgres-protocol's `&str` writer does not fit. `raw_types` is a Parse's type list as
/// read (count times 4 bytes); callers pass what [`Parse::raw_types`] returned, so the count
/// fits an `i16`.
pub fn write_parse(buf: &mut BytesMut, name: &[u8], query: &[u8], raw_types: &[u8]) {
    frame(buf, b'P', |b| {
        b.put_slice(name);
        b.put_u8(0);
        b.put_slice(query);
        b.put_u8(0);
        b.put_i16((raw_types.len() / 4) as i16);
        b.put_slice(raw_types);
    });
}

/// Writes `bind` again with its statement name replaced by `statement`.
pub fn write_bind(buf: &mut BytesMut, bind: &Bind<'_>, statement: &[u8]) {
    frame(buf, b'B', |b| {
        b.put_slice(bind.portal);
        b.put_u8(0);
        b.put_slice(statement);
        b.put_u8(0);
        b.put_slice(bind.rest);
    });
}

/// Writes a Describe of the statement `name` (a proxy-chosen ASCII name).
pub fn write_describe_statement(buf: &mut BytesMut, name: &str) {
    // Only fails for a name with a NUL in it, which proxy-chosen names never have.
    let _ = frontend::describe(b'S', name, buf);
}

/// Writes a Close of the statement `name` (a proxy-chosen ASCII name).
pub fn write_close_statement(buf: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, buf);
}

/// Writes a simple Query (a proxy-chosen ASCII text).
pub fn write_query(buf: &mut BytesMut, text: &str) {
    let _ = frontend::query(text, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        &frame[5..]
    }

    #[test]
    fn parse_round_trips_and_matches_the_reference_writer() {
        let mut reference = BytesMut::new();
        frontend::parse("s1", "select $1::int + $2", [23, 20], &mut reference).unwrap();
        let p = Parse::read(body(&reference)).unwrap();
        assert_eq!((p.name, p.query), (&b"s1"[..], &b"select $1::int + $2"[..]));
        assert_eq!(p.types().collect::<Vec<_>>(), [23, 20]);
        let mut again = BytesMut::new();
        write_parse(&mut again, p.name, p.query, p.raw_types());
        assert_eq!(again, reference);
    }

    #[test]
    fn bind_is_renamed_and_keeps_its_tail() {
        let mut reference = BytesMut::new();
        frontend::bind(
            "portal",
            "s1",
            [1],
            [7i32],
            |v, buf| {
                buf.put_i32(v);
                Ok(postgres_protocol::IsNull::No)
            },
            [1],
            &mut reference,
        )
        .map_err(|_| ())
        .unwrap();
        let b = Bind::read(body(&reference)).unwrap();
        assert_eq!((b.portal, b.statement), (&b"portal"[..], &b"s1"[..]));
        let mut renamed = BytesMut::new();
        write_bind(&mut renamed, &b, b"pglease_x");
        let r = Bind::read(body(&renamed)).unwrap();
        assert_eq!(
            (r.portal, r.statement, r.rest),
            (b.portal, &b"pglease_x"[..], b.rest)
        );
        assert_eq!(renamed.len(), reference.len() + "pglease_x".len() - 2);
        assert_eq!(&renamed[1..5], &(renamed.len() as u32 - 1).to_be_bytes());
    }

    #[test]
    fn describe_close_and_execute_bodies() {
        let mut buf = BytesMut::new();
        write_describe_statement(&mut buf, "pglease_a");
        assert_eq!(
            Target::read(body(&buf)),
            Ok(Target {
                kind: Kind::Statement,
                name: b"pglease_a"
            })
        );
        assert_eq!(
            Target::read(b"P\0"),
            Ok(Target {
                kind: Kind::Portal,
                name: b""
            })
        );
        assert_eq!(
            Execute::read(b"p\0\0\0\0\x05"),
            Ok(Execute {
                portal: b"p",
                max_rows: 5
            })
        );
    }

    #[test]
    fn short_or_inconsistent_bodies_are_errors_never_panics() {
        for bad in [
            &b""[..],
            b"s1",
            b"s1\0select",
            b"s1\0select\0",
            b"s1\0select\0\0",
            b"s1\0select\0\0\x01",
            b"s1\0select\0\0\x01\0\0\0",
            b"s1\0select\0\0\x01\0\0\0\x17\0",
            b"s1\0select\0\xff\xff",
            b"s1\0select\0\x7f\xff",
        ] {
            assert!(Parse::read(bad).is_err(), "{bad:?}");
        }
        for bad in [&b""[..], b"p", b"p\0s"] {
            assert!(Bind::read(bad).is_err(), "{bad:?}");
        }
        for bad in [&b""[..], b"S", b"Xname\0", b"Sname", b"Sname\0\0"] {
            assert!(Target::read(bad).is_err(), "{bad:?}");
        }
        for bad in [&b""[..], b"p\0", b"p\0\0\0\0", b"p\0\0\0\0\0\0"] {
            assert!(Execute::read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_truncation_of_valid_bodies_is_an_error() {
        let mut buf = BytesMut::new();
        frontend::parse("n", "select $1", [25], &mut buf).unwrap();
        let parse = body(&buf).to_vec();
        for end in 0..parse.len() {
            assert!(Parse::read(&parse[..end]).is_err(), "{end}");
        }
        let target = b"Sname\0";
        for end in 0..target.len() {
            assert!(Target::read(&target[..end]).is_err(), "{end}");
        }
    }
}
