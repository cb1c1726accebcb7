//! md5 password authentication: the stored `md5<hex>` hash and the check of a client's reply.
//!
//! md5 is weak and kept only for old clients; SCRAM-SHA-256 is the default.

use std::fmt;

use md5::{Digest, Md5};

use super::{AuthError, ct_eq};
use crate::secret::Secret;

/// Length of `md5` + 32 hex digits, both in the config and in a client's reply.
const MD5_TEXT_LEN: usize = 35;

/// A user's md5 hash: `md5` + lowercase hex of md5(password || user name).
///
/// Knowing it is enough to log in with md5 authentication, so it is kept as a [`Secret`]
/// and `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(Secret);

impl Md5Hash {
    /// Accepts `md5` followed by exactly 32 hex digits. Uppercase digits are lowered,
    /// because clients always hash the lowercase form.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let hex = text
            .strip_prefix("md5")
            .ok_or(AuthError::InvalidStored("md5 hash must start with md5"))?;
        if hex.len() != MD5_TEXT_LEN - 3 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidStored(
                "md5 hash must be md5 followed by 32 hex digits",
            ));
        }
        Ok(Md5Hash(Secret::new(format!(
            "md5{}",
            hex.to_ascii_lowercase()
        ))))
    }

    /// The 32 lowercase hex digits, which the client's reply is computed from.
    fn hex(&self) -> &[u8] {
        self.0.expose().as_bytes().get(3..).unwrap_or_default()
    }
}

impl fmt::Debug for Md5Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Hash(***)")
    }
}

/// Checks a client's md5 reply.
///
/// `salt` is the 4 bytes we sent in AuthenticationMD5Password; `response` is the
/// PasswordMessage body without its trailing NUL, which a client computes as
/// `md5` + hex(md5(hex part of the stored hash || salt)). The comparison is constant-time.
pub fn md5_verify(stored: &Md5Hash, salt: [u8; 4], response: &[u8]) -> bool {
    let mut hasher = Md5::new();
    hasher.update(stored.hex());
    hasher.update(salt);
    let digest = hasher.finalize();

    let mut expected = [0u8; MD5_TEXT_LEN];
    expected[..3].copy_from_slice(b"md5");
    for (pair, byte) in expected[3..].chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
    ct_eq(&expected, response)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;
    use postgres_protocol::password;

    fn stored(user: &str, pass: &str) -> Md5Hash {
        Md5Hash::parse(&password::md5(pass.as_bytes(), user)).unwrap()
    }

    #[test]
    fn accepts_the_reply_of_a_real_client() {
        let salt = [1, 2, 3, 4];
        let reply = md5_hash(b"app", b"s3cret", salt);
        assert!(md5_verify(&stored("app", "s3cret"), salt, reply.as_bytes()));
    }

    #[test]
    fn rejects_wrong_password_salt_and_shape() {
        let salt = [1, 2, 3, 4];
        let hash = stored("app", "s3cret");
        let wrong_pass = md5_hash(b"app", b"s3cret!", salt);
        assert!(!md5_verify(&hash, salt, wrong_pass.as_bytes()));
        let right = md5_hash(b"app", b"s3cret", salt);
        assert!(!md5_verify(&hash, [4, 3, 2, 1], right.as_bytes()));
        assert!(!md5_verify(&hash, salt, right.to_uppercase().as_bytes()));
        assert!(!md5_verify(&hash, salt, &right.as_bytes()[..34]));
        assert!(!md5_verify(&hash, salt, b""));
        let mut longer = right.into_bytes();
        longer.push(0);
        assert!(!md5_verify(&hash, salt, &longer));
    }

    #[test]
    fn uppercase_stored_hash_is_normalised() {
        let salt = [9, 9, 9, 9];
        let lower = password::md5(b"pw", "u");
        let upper = format!("md5{}", lower[3..].to_uppercase());
        let reply = md5_hash(b"u", b"pw", salt);
        assert!(md5_verify(
            &Md5Hash::parse(&upper).unwrap(),
            salt,
            reply.as_bytes()
        ));
    }

    #[test]
    fn parse_rejects_malformed_hashes() {
        let good = password::md5(b"pw", "u");
        for bad in [
            String::new(),
            "md5".to_owned(),
            good[3..].to_owned(),
            good[..34].to_owned(),
            format!("{good}0"),
            format!("md5{}", "g".repeat(32)),
            format!("MD5{}", &good[3..]),
        ] {
            assert!(Md5Hash::parse(&bad).is_err(), "{bad}");
        }
        assert!(Md5Hash::parse(&good).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let hash = stored("app", "s3cret");
        let shown = format!("{hash:?}");
        assert_eq!(shown, "Md5Hash(***)");
    }
}
