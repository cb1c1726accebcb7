//! The PostgreSQL wire protocol as far as the proxy needs it: framing (tag + length, never the
//! body, on the hot path), the startup packet, the few client messages it reads, and the backend
//! messages it writes itself. No I/O here, so everything is tested on byte slices.
//!
//! The client half of the protocol (what pglease sends to PostgreSQL) comes from
//! `postgres_protocol::message::frontend`; this module writes the other half.

pub mod backend;
pub mod extended;
pub mod frame;
pub mod frontend;
pub mod startup;

use thiserror::Error;

/// A peer sent bytes that are not valid protocol. The offending connection is closed; nothing
/// else is affected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length field below the minimum (4) or otherwise inconsistent with its message type.
    #[error("invalid length {len} for message '{}'", char::from(*tag))]
    BadLength { tag: u8, len: usize },
    /// A message longer than the configured `max_message_size`.
    #[error("message '{}' of {len} bytes exceeds the limit of {max} bytes", char::from(*tag))]
    TooLarge { tag: u8, len: usize, max: usize },
    /// A message body that does not parse (missing terminator, short field, bad value).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A startup packet with a protocol version the proxy does not speak.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
}
