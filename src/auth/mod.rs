//! The server half of client authentication: SCRAM-SHA-256 and md5 checks, with no I/O.
//!
//! pglease authenticates its clients against the stable local users of the config. The
//! client session reads the SASL and password frames and writes the authentication
//! replies; this module only decides what goes in them.
//!
//! # Design
//!
//! - Config load turns each user's password into a [`LocalPassword`] once, so no PBKDF2
//!   runs on a client's login path: a login costs a few HMACs, whatever the iteration count.
//! - [`ScramExchange`] is a two-step state machine (`client_first`, `client_final`). Any error
//!   ends the exchange; PostgreSQL does the same, so clients never expect to retry within one.
//! - An unknown user gets [`ScramExchange::mock`]: the same messages, a stable fake salt, and
//!   the same [`AuthError::WrongPassword`] at the end, so probing cannot tell which users exist.
//! - Error messages are `&'static str`: no client input, and therefore no secret, can reach
//!   an error, a log line or a reply through them.

mod md5;
mod password;
mod scram;
mod verifier;

pub use self::md5::{Md5Hash, md5_verify};
pub use self::password::{LocalPassword, hash_password};
pub use self::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramExchange};
pub use self::verifier::ScramVerifier;

/// Why an authentication step failed; the variant decides what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client proved knowledge of the wrong password (or the user does not exist).
    /// Deliberately carries nothing, so both cases look the same from outside.
    #[error("password authentication failed")]
    WrongPassword,
    /// The client broke the SASL/SCRAM rules (malformed message, tampered nonce, channel
    /// binding we did not offer, steps out of order).
    #[error("authentication protocol violation: {0}")]
    Protocol(&'static str),
    /// A password in the config is not a usable verifier, md5 hash or plaintext. Only
    /// returned at config load time, never on a client's login path.
    #[error("invalid stored password: {0}")]
    InvalidStored(&'static str),
}

impl AuthError {
    /// The SQLSTATE to put in the ErrorResponse sent to the client, as PostgreSQL would.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::WrongPassword => "28P01",
            AuthError::Protocol(_) => "08P01",
            AuthError::InvalidStored(_) => "XX000",
        }
    }
}

/// Equality whose running time depends only on the lengths, so that comparing a client's
/// proof or md5 response leaks nothing about how many leading bytes were right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_whole_slices() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"xbc"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn sqlstates_follow_postgresql() {
        assert_eq!(AuthError::WrongPassword.sqlstate(), "28P01");
        assert_eq!(AuthError::Protocol("x").sqlstate(), "08P01");
    }
}
