//! The server side of one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), as PostgreSQL runs it,
//! with SCRAM-SHA-256-PLUS (`tls-server-end-point` channel binding, RFC 5929) over TLS.
//!
//! PostgreSQL's rules that differ from a generic SCRAM server: the user name in
//! client-first is ignored (the startup packet's user is the one authenticated) and an
//! authorization identity is refused. Channel binding follows PostgreSQL too: PLUS is offered
//! only when the caller gives the binding data (a TLS connection); binding data (`p=`) with
//! the plain mechanism, or none with PLUS, is refused; a `y` flag ("client could bind, thinks
//! the server cannot") is refused when PLUS was offered (a downgrade) and accepted otherwise.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::verifier::{
    DEFAULT_ITERATIONS, KEY_LEN, SALT_LEN, ScramVerifier, decode_key, hmac_sha256, sha256,
};
use super::{AuthError, ct_eq};

/// The SASL mechanism offered on every connection.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The channel-binding variant, offered (first) over TLS.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The only channel-binding type PostgreSQL (and we) support.
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Longest base64 `c=` we decode: the gs2 header with a SHA-512 end-point hash fits.
const MAX_BINDING_B64: usize = 160;

/// Random bytes in our half of the nonce; PostgreSQL uses 18 (24 base64 characters).
const SERVER_NONCE_LEN: usize = 18;

/// Longest client-first or client-final we read. Real ones are about 100 bytes; the cap keeps
/// a client from making us copy and hash a large frame.
const MAX_MESSAGE_LEN: usize = 1024;

/// Server side of one SCRAM-SHA-256 exchange: feed it the client's two messages in order.
///
/// Any error ends the exchange: later calls fail with [`AuthError::Protocol`].
#[derive(Debug)]
pub struct ScramExchange {
    /// The user's verifier, or a fake one for a mock exchange.
    verifier: ScramVerifier,
    /// Our half of the nonce, appended to the client's.
    server_nonce: String,
    /// A mock exchange: it must fail at the proof whatever the client sends.
    doomed: bool,
    /// `tls-server-end-point` data of the connection: PLUS is offered when set.
    end_point: Option<Vec<u8>>,
    /// Where we are in the exchange, with what the next step must check against.
    state: State,
}

#[derive(Debug)]
enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// What the client must send (base64) in `c=`: the gs2 header as sent, followed by
        /// the channel-binding data when it chose PLUS.
        binding: Vec<u8>,
        /// client-first-message-bare: the start of AuthMessage.
        client_first_bare: String,
        /// Our server-first-message: the middle of AuthMessage.
        server_first: String,
        /// Client nonce + server nonce, which client-final must repeat exactly.
        nonce: String,
    },
    Finished,
}

impl ScramExchange {
    /// Starts an exchange for a user with a SCRAM verifier, with a fresh random nonce.
    pub fn new(verifier: &ScramVerifier) -> Self {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::fill(&mut raw);
        Self::with_nonce(verifier, &STANDARD.encode(raw))
    }

    /// Starts an exchange with a chosen server nonce, so a recorded exchange can be replayed.
    /// Never use a fixed nonce for real clients: it would let a recorded login be replayed.
    /// A nonce that is not printable ASCII without `,` makes `client_first` fail.
    pub fn with_nonce(verifier: &ScramVerifier, server_nonce: &str) -> Self {
        ScramExchange {
            verifier: verifier.clone(),
            server_nonce: server_nonce.to_owned(),
            doomed: false,
            end_point: None,
            state: State::AwaitingClientFirst,
        }
    }

    /// Offers SCRAM-SHA-256-PLUS bound to `end_point`, the `tls-server-end-point` data of
    /// the certificate this connection's TLS handshake used. Call before `client_first`.
    pub fn offer_channel_binding(&mut self, end_point: &[u8]) {
        self.end_point = Some(end_point.to_vec());
    }

    /// The mechanisms to list in AuthenticationSASL, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.end_point.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// An exchange for a user that does not exist (or has no SCRAM verifier).
    ///
    /// It sends what a real exchange would: a salt derived from `user` and the process's
    /// secret `mock_key` (so repeated probes see the same salt, as for a real user), the
    /// default iteration count, and a random nonce. It checks the client's messages the same
    /// way and then fails with the same [`AuthError::WrongPassword`] as a wrong password.
    ///
    /// `mock_key` should be random bytes made once per process (32 is plenty): without it,
    /// anyone could compute the fake salts and tell them from real ones.
    pub fn mock(user: &str, mock_key: &[u8]) -> Self {
        // Hashing first gives `hmac_sha256` the fixed-size key it takes, whatever the input.
        let key = sha256(mock_key);
        let digest = hmac_sha256(&key, &[b"pglease mock salt\0", user.as_bytes()]);
        let mut salt = digest.to_vec();
        salt.truncate(SALT_LEN);
        let mut stored_key = [0u8; KEY_LEN];
        let mut server_key = [0u8; KEY_LEN];
        rand::fill(&mut stored_key);
        rand::fill(&mut server_key);
        let verifier = ScramVerifier::from_parts(DEFAULT_ITERATIONS, salt, stored_key, server_key);
        let mut exchange = Self::new(&verifier);
        exchange.doomed = true;
        exchange
    }

    /// Takes the mechanism and data of SASLInitialResponse; returns server-first-message
    /// (`r=<nonce>,s=<salt>,i=<iterations>`) for AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if !matches!(state, State::AwaitingClientFirst) {
            return Err(AuthError::Protocol("unexpected SASLInitialResponse"));
        }
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if self.end_point.is_some() => true,
            SCRAM_SHA_256_PLUS => {
                return Err(AuthError::Protocol(
                    "SCRAM-SHA-256-PLUS was not offered: channel binding needs TLS",
                ));
            }
            _ => return Err(AuthError::Protocol("unsupported SASL mechanism")),
        };
        let text = message_text(data)?;
        let (gs2_header, bare) = split_gs2_header(text)?;
        self.check_gs2_flag(gs2_header, plus)?;
        let mut binding = gs2_header.as_bytes().to_vec();
        if plus {
            binding.extend_from_slice(self.end_point.as_deref().unwrap_or_default());
        }
        let client_nonce = parse_client_first_bare(bare)?;
        if self.server_nonce.is_empty() || !is_printable(&self.server_nonce) {
            return Err(AuthError::Protocol("server nonce is not printable"));
        }
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(self.verifier.salt()),
            self.verifier.iterations()
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            binding,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// PostgreSQL's channel-binding negotiation rules for the gs2 flag of client-first.
    fn check_gs2_flag(&self, gs2_header: &str, plus: bool) -> Result<(), AuthError> {
        match (gs2_header.as_bytes().first(), plus) {
            (Some(b'p'), true) => {
                let name = gs2_header.get(2..).and_then(|rest| rest.split(',').next());
                if name != Some(TLS_SERVER_END_POINT) {
                    return Err(AuthError::Protocol(
                        "unsupported SCRAM channel-binding type",
                    ));
                }
                Ok(())
            }
            (Some(b'p'), false) => Err(AuthError::Protocol(
                "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM \
                 message includes channel binding data",
            )),
            (_, true) => Err(AuthError::Protocol(
                "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not \
                 include channel binding data",
            )),
            (Some(b'y'), false) if self.end_point.is_some() => Err(AuthError::Protocol(
                "SCRAM channel binding negotiation error: the client supports channel \
                 binding but thinks the server does not; this server does",
            )),
            _ => Ok(()),
        }
    }

    /// Takes the data of SASLResponse (client-final-message); returns server-final-message
    /// (`v=<signature>`) for AuthenticationSASLFinal.
    ///
    /// A wrong proof is [`AuthError::WrongPassword`]; a changed nonce or channel-binding
    /// attribute, or a malformed message, is [`AuthError::Protocol`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFinal {
            binding: expected_binding,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::Protocol("unexpected SASLResponse"));
        };
        let text = message_text(data)?;
        let parsed = parse_client_final(text)?;
        let binding = decode_channel_binding(parsed.channel_binding)?;
        if binding != expected_binding {
            return Err(AuthError::Protocol("SCRAM channel binding check failed"));
        }
        if parsed.nonce != nonce {
            return Err(AuthError::Protocol("nonce does not match"));
        }
        let proof = decode_key(parsed.proof).ok_or(AuthError::Protocol(
            "client proof is not 32 bytes of base64",
        ))?;

        let auth_message = format!(
            "{client_first_bare},{server_first},{}",
            parsed.without_proof
        );
        let signature = hmac_sha256(self.verifier.stored_key(), &[auth_message.as_bytes()]);
        let mut client_key = Zeroizing::new([0u8; KEY_LEN]);
        for ((k, p), s) in client_key.iter_mut().zip(proof.iter()).zip(signature) {
            *k = p ^ s;
        }
        let proof_ok = ct_eq(&sha256(client_key.as_slice()), self.verifier.stored_key());
        if !proof_ok || self.doomed {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac_sha256(self.verifier.server_key(), &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// Checks size and encoding of a SCRAM message; SCRAM messages are UTF-8 by definition.
fn message_text(data: &[u8]) -> Result<&str, AuthError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(AuthError::Protocol("SCRAM message is too long"));
    }
    std::str::from_utf8(data).map_err(|_| AuthError::Protocol("SCRAM message is not UTF-8"))
}

/// Splits client-first into the gs2 header (with both commas) and the bare message.
fn split_gs2_header(text: &str) -> Result<(&str, &str), AuthError> {
    let malformed = AuthError::Protocol("malformed gs2 header in client-first-message");
    let rest = match text.as_bytes().first() {
        Some(b'n' | b'y') => text.get(1..).ok_or(malformed.clone())?,
        // `p=<cb-name>`; the name is checked by the caller, which knows what was offered.
        Some(b'p') => {
            let after = text.strip_prefix("p=").ok_or(malformed.clone())?;
            let name_len = after.find(',').ok_or(malformed.clone())?;
            after.get(name_len..).ok_or(malformed.clone())?
        }
        _ => return Err(malformed),
    };
    let authzid_and_bare = rest.strip_prefix(',').ok_or(malformed.clone())?;
    let (authzid, bare) = authzid_and_bare.split_once(',').ok_or(malformed)?;
    if !authzid.is_empty() {
        return Err(AuthError::Protocol(
            "authorization identity is not supported",
        ));
    }
    let header_len = text.len() - bare.len();
    let header = text.get(..header_len).unwrap_or_default();
    Ok((header, bare))
}

/// Reads client-first-message-bare and returns the client nonce. The user name is read
/// only to be skipped: the startup packet's user is the one being authenticated.
fn parse_client_first_bare(bare: &str) -> Result<&str, AuthError> {
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(AuthError::Protocol("unsupported SCRAM extension"));
    }
    if first.strip_prefix("n=").is_none() {
        return Err(AuthError::Protocol(
            "client-first-message lacks the user name",
        ));
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(AuthError::Protocol("client-first-message lacks the nonce"))?;
    if nonce.is_empty() || !is_printable(nonce) {
        return Err(AuthError::Protocol("client nonce is not printable"));
    }
    check_extensions(attrs)?;
    Ok(nonce)
}

/// The attributes of client-final-message that the check needs.
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    proof: &'a str,
    /// client-final-message-without-proof: the end of AuthMessage.
    without_proof: &'a str,
}

/// Splits client-final-message: `c=`, `r=`, optional extensions, and `p=` last.
fn parse_client_final(text: &str) -> Result<ClientFinal<'_>, AuthError> {
    let (without_proof, proof) = text
        .rsplit_once(',')
        .and_then(|(head, last)| Some((head, last.strip_prefix("p=")?)))
        .ok_or(AuthError::Protocol("client-final-message lacks the proof"))?;
    let mut attrs = without_proof.split(',');
    let channel_binding =
        attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(AuthError::Protocol(
                "client-final-message lacks the channel binding",
            ))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(AuthError::Protocol("client-final-message lacks the nonce"))?;
    check_extensions(attrs)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// Decodes `c=`: a base64 gs2 header, with an end-point hash after it for PLUS.
fn decode_channel_binding(text: &str) -> Result<Vec<u8>, AuthError> {
    if text.len() > MAX_BINDING_B64 {
        return Err(AuthError::Protocol("SCRAM channel binding check failed"));
    }
    STANDARD
        .decode(text)
        .map_err(|_| AuthError::Protocol("channel binding attribute is not base64"))
}

/// Optional extensions are ignored, as PostgreSQL does, but must be `<letter>=<value>`.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for attr in attrs {
        let well_formed = matches!(attr.as_bytes(), [name, b'=', ..] if name.is_ascii_alphabetic());
        if !well_formed {
            return Err(AuthError::Protocol("malformed SCRAM attribute"));
        }
    }
    Ok(())
}

/// RFC 5802 `printable`: visible ASCII except `,`, which separates attributes.
fn is_printable(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod plus_tests;
