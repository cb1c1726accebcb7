//! The SCRAM-SHA-256 verifier a user's password is stored as, and the hash primitives on it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AuthError;

/// The prefix PostgreSQL (and `pglease hash-password`) puts on a SCRAM-SHA-256 verifier.
pub(super) const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Iteration count of the verifiers we derive ourselves; PostgreSQL's default.
pub(super) const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of the verifiers and fake salts we make ourselves; PostgreSQL's default.
pub(super) const SALT_LEN: usize = 16;

/// Length of a SHA-256 output: StoredKey, ServerKey, proofs and signatures.
pub(super) const KEY_LEN: usize = 32;

/// Base64 text of [`KEY_LEN`] bytes; checked before decoding so nothing oversized is allocated.
pub(super) const KEY_B64_LEN: usize = 44;

/// Longest salt we accept in a verifier (base64 text); real ones are 24 characters.
const MAX_SALT_B64_LEN: usize = 1024;

/// What the server needs to check a SCRAM-SHA-256 login without knowing the password:
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
///
/// StoredKey lets anyone who also sees an exchange log in, and ServerKey lets anyone act as
/// the server, so both are zeroized on drop and `Debug` prints them as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 rounds the client must run; sent in server-first, never run by us.
    iterations: u32,
    /// Public per-user salt; sent in server-first.
    salt: Vec<u8>,
    /// H(ClientKey): a client proof is right when it hashes back to this.
    stored_key: Zeroizing<[u8; KEY_LEN]>,
    /// Signs server-final, so the client knows we hold the verifier.
    server_key: Zeroizing<[u8; KEY_LEN]>,
}

impl ScramVerifier {
    /// Parses a verifier in PostgreSQL's text form. Every part must be present and
    /// well-formed: a truncated or mangled verifier is an error, never a plaintext password.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let bad = AuthError::InvalidStored;
        let rest = text
            .strip_prefix(SCRAM_PREFIX)
            .ok_or(bad("SCRAM verifier must start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(bad("SCRAM verifier lacks the $StoredKey:ServerKey part"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(bad("SCRAM verifier lacks the iterations:salt part"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(bad("SCRAM verifier lacks the ServerKey"))?;

        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("SCRAM verifier iteration count is not a number"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("SCRAM verifier iteration count is out of range"))?;
        if iterations == 0 {
            return Err(bad("SCRAM verifier iteration count is zero"));
        }
        if salt.len() > MAX_SALT_B64_LEN {
            return Err(bad("SCRAM verifier salt is too long"));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("SCRAM verifier salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("SCRAM verifier salt is empty"));
        }
        let stored_key = decode_key(stored_key)
            .ok_or(bad("SCRAM verifier StoredKey is not 32 bytes of base64"))?;
        let server_key = decode_key(server_key)
            .ok_or(bad("SCRAM verifier ServerKey is not 32 bytes of base64"))?;
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Builds a verifier from its parts; used for mock exchanges and tests.
    pub(super) fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Self {
        ScramVerifier {
            iterations,
            salt,
            stored_key: Zeroizing::new(stored_key),
            server_key: Zeroizing::new(server_key),
        }
    }

    /// The PBKDF2 iteration count the client is told to use.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt the client is told to use (public: it is sent to every client).
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub(super) fn stored_key(&self) -> &[u8; KEY_LEN] {
        &self.stored_key
    }

    pub(super) fn server_key(&self) -> &[u8; KEY_LEN] {
        &self.server_key
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("stored_key", &"***")
            .field("server_key", &"***")
            .finish()
    }
}

/// Decodes base64 that must hold exactly one SHA-256 output.
pub(super) fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    if text.len() != KEY_B64_LEN {
        return None;
    }
    let bytes = Zeroizing::new(STANDARD.decode(text).ok()?);
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().ok()?;
    Some(Zeroizing::new(key))
}

/// HMAC-SHA-256 keyed by a 32-byte key.
///
/// RFC 2104 pads a key shorter than the 64-byte block with zeros, so padding it here and
/// using the infallible block-sized constructor computes the same MAC without an error path
/// that can never be taken.
pub(super) fn hmac_sha256(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub(super) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn parses_a_postgresql_verifier() {
        let v = ScramVerifier::parse(GOOD).unwrap();
        assert_eq!(v.iterations(), 4096);
        assert_eq!(v.salt().len(), 16);
        assert_eq!(v.stored_key()[0], 0x58);
        assert_eq!(v.server_key()[0], 0xc1);
    }

    #[test]
    fn rejects_malformed_verifiers() {
        let k = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
        let cases = [
            String::new(),
            "SCRAM-SHA-256$".to_owned(),
            format!("SCRAM-SHA-1$4096:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${k}"),
            format!("SCRAM-SHA-256$4096c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$0:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$-1:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$+4096:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$99999999999:c2FsdA==${k}:{k}"),
            format!("SCRAM-SHA-256$4096:${k}:{k}"),
            format!("SCRAM-SHA-256$4096:c2Fs!A==${k}:{k}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${k}:c2FsdA=="),
            format!("SCRAM-SHA-256$4096:c2FsdA==$:{k}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${k}:{}", &k[..43]),
            format!("SCRAM-SHA-256$4096:c2FsdA==${k}:{k}x"),
            format!("SCRAM-SHA-256$4096:c2FsdA==$!{}:{k}", &k[1..]),
            format!("SCRAM-SHA-256$4096:{}${k}:{k}", "A".repeat(2000)),
        ];
        for case in cases {
            let err = ScramVerifier::parse(&case).unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidStored(_)),
                "{case}: {err:?}"
            );
        }
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::parse(GOOD).unwrap();
        let shown = format!("{v:?}");
        assert!(shown.contains("4096"), "{shown}");
        assert!(!shown.contains("WG5d"), "{shown}");
        assert!(!shown.contains("88"), "raw key bytes leaked: {shown}");
    }

    #[test]
    fn padded_hmac_matches_the_variable_key_constructor() {
        let key = [7u8; KEY_LEN];
        let mut reference = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        reference.update(b"Client Key");
        let expected: [u8; KEY_LEN] = reference.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, &[b"Client ", b"Key"]), expected);
        assert_ne!(hmac_sha256(&[8u8; KEY_LEN], &[b"Client Key"]), expected);
    }
}
