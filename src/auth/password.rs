//! What a local user's configured password becomes at config load, and `hash-password`.

use postgres_protocol::password;
use zeroize::Zeroizing;

use super::AuthError;
use super::md5::Md5Hash;
use super::verifier::{SCRAM_PREFIX, ScramVerifier};
use crate::secret::Secret;

/// The ways a local user can prove its password, prepared at config load time so that no
/// PBKDF2 runs on a client's login path. At least one of the two is always present.
#[derive(Debug, Clone)]
pub struct LocalPassword {
    /// Present for a configured verifier or plaintext.
    scram: Option<ScramVerifier>,
    /// Present for a configured md5 hash or plaintext.
    md5: Option<Md5Hash>,
}

impl LocalPassword {
    /// Interprets the config's `password` for `user`:
    ///
    /// - `SCRAM-SHA-256$…`: a verifier; SCRAM only. A malformed one is an error rather than
    ///   a plaintext password, so a truncated paste is caught at load time.
    /// - `md5` + 32 hex digits: an md5 hash of password || `user`; md5 only.
    /// - anything else: a plaintext password, from which both a SCRAM verifier (random salt,
    ///   4096 iterations) and the md5 hash are derived.
    ///
    /// An empty password is refused, as PostgreSQL refuses it.
    pub fn parse(user: &str, stored: &Secret) -> Result<LocalPassword, AuthError> {
        let text = stored.expose();
        if text.is_empty() {
            return Err(AuthError::InvalidStored("password is empty"));
        }
        if text.starts_with(SCRAM_PREFIX) {
            return Ok(LocalPassword {
                scram: Some(ScramVerifier::parse(text)?),
                md5: None,
            });
        }
        if let Ok(md5) = Md5Hash::parse(text) {
            return Ok(LocalPassword {
                scram: None,
                md5: Some(md5),
            });
        }
        let verifier = Zeroizing::new(password::scram_sha_256(text.as_bytes()));
        let md5 = Zeroizing::new(password::md5(text.as_bytes(), user));
        Ok(LocalPassword {
            scram: Some(ScramVerifier::parse(&verifier)?),
            md5: Some(Md5Hash::parse(&md5)?),
        })
    }

    /// The SCRAM-SHA-256 verifier, if this user can log in with SCRAM.
    pub fn scram(&self) -> Option<&ScramVerifier> {
        self.scram.as_ref()
    }

    /// The md5 hash, if this user can log in with md5.
    pub fn md5(&self) -> Option<&Md5Hash> {
        self.md5.as_ref()
    }
}

/// `pglease hash-password`: a SCRAM-SHA-256 verifier for the config (random salt, 4096
/// iterations), so the plaintext need not be stored. The password is SASLprep-normalised
/// as PostgreSQL and its clients do. Callers should refuse an empty password first.
pub fn hash_password(password: &str) -> String {
    password::scram_sha_256(password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ScramExchange, md5_verify};
    use postgres_protocol::authentication::md5_hash;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs a whole exchange with the real client implementation.
    fn scram_login(verifier: &ScramVerifier, password: &str) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut server = ScramExchange::new(verifier);
        let first = server.client_first("SCRAM-SHA-256", client.message())?;
        client.update(&first).unwrap();
        let last = server.client_final(client.message())?;
        client.finish(&last).unwrap();
        Ok(())
    }

    #[test]
    fn plaintext_yields_both_methods_for_the_same_password() {
        let local = LocalPassword::parse("app", &Secret::from("s3cret")).unwrap();
        let verifier = local.scram().unwrap();
        assert_eq!(verifier.iterations(), 4096);
        scram_login(verifier, "s3cret").unwrap();
        assert_eq!(
            scram_login(verifier, "wrong"),
            Err(AuthError::WrongPassword)
        );

        let salt = [5, 6, 7, 8];
        let md5 = local.md5().unwrap();
        assert!(md5_verify(
            md5,
            salt,
            md5_hash(b"app", b"s3cret", salt).as_bytes()
        ));
        assert!(!md5_verify(
            md5,
            salt,
            md5_hash(b"other", b"s3cret", salt).as_bytes()
        ));
    }

    #[test]
    fn verifier_yields_scram_only() {
        let stored = Secret::new(hash_password("s3cret"));
        let local = LocalPassword::parse("app", &stored).unwrap();
        assert!(local.md5().is_none());
        scram_login(local.scram().unwrap(), "s3cret").unwrap();
    }

    #[test]
    fn md5_hash_yields_md5_only() {
        let stored = Secret::new(password::md5(b"s3cret", "app"));
        let local = LocalPassword::parse("app", &stored).unwrap();
        assert!(local.scram().is_none());
        let salt = [1, 1, 2, 3];
        let reply = md5_hash(b"app", b"s3cret", salt);
        assert!(md5_verify(local.md5().unwrap(), salt, reply.as_bytes()));
    }

    #[test]
    fn md5_prefixed_plaintext_is_plaintext() {
        let local = LocalPassword::parse("app", &Secret::from("md5isweak")).unwrap();
        assert!(local.scram().is_some() && local.md5().is_some());
    }

    #[test]
    fn rejects_empty_and_malformed_verifiers() {
        for bad in ["", "SCRAM-SHA-256$4096:c2FsdA==$abc:def", "SCRAM-SHA-256$"] {
            let err = LocalPassword::parse("app", &Secret::from(bad)).unwrap_err();
            assert!(matches!(err, AuthError::InvalidStored(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn hash_password_output_parses_verifies_and_is_salted() {
        let a = hash_password("pässword");
        let b = hash_password("pässword");
        assert_ne!(a, b, "each verifier must get its own salt");
        let verifier = ScramVerifier::parse(&a).unwrap();
        assert_eq!(verifier.salt().len(), 16);
        scram_login(&verifier, "pässword").unwrap();
        scram_login(&ScramVerifier::parse(&b).unwrap(), "pässword").unwrap();
    }

    #[test]
    fn debug_never_shows_the_secrets() {
        let local = LocalPassword::parse("app", &Secret::from("s3cret")).unwrap();
        let md5_text = password::md5(b"s3cret", "app");
        let shown = format!("{local:?}");
        assert!(!shown.contains(&md5_text[3..]), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
