//! The upstream login with a lease: SCRAM-SHA-256 (with `tls-server-end-point` channel binding,
//! SCRAM-SHA-256-PLUS, when TLS is up and the server offers it), or md5 and cleartext, which
//! are answered only over TLS or when the database entry allows them.
//!
//! SCRAM is finished only by a valid server signature (AuthenticationSASLFinal): an
//! AuthenticationOk that arrives before it is refused, since anything that answers on the
//! upstream port can send one without knowing the lease's verifier.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::connect::{MAX_LOGIN_MESSAGE, read_message, refused};
use super::{UpstreamError, UpstreamTarget};
use crate::credentials::Lease;
use crate::protocol::ProtocolError;
use crate::tls::binding::end_point_hash;
use crate::tls::stream::Stream;

/// Where a SCRAM exchange stands.
enum Scram {
    /// Not started (or not used).
    None,
    /// Client-first sent, or client-final sent: waiting for the server.
    Running(ScramSha256),
    /// The server signature was verified.
    Verified,
}

/// One upstream connection between its StartupMessage and ReadyForQuery.
pub(super) struct Login<'t> {
    stream: Stream,
    target: &'t UpstreamTarget,
    buf: BytesMut,
    out: BytesMut,
}

impl<'t> Login<'t> {
    /// A login on `stream`, whose StartupMessage was sent.
    pub(super) fn new(stream: Stream, target: &'t UpstreamTarget) -> Self {
        Login {
            stream,
            target,
            buf: BytesMut::with_capacity(1024),
            out: BytesMut::with_capacity(256),
        }
    }

    /// The stream, once the login is over.
    pub(super) fn into_stream(self) -> Stream {
        self.stream
    }

    /// Answers PostgreSQL's authentication requests until AuthenticationOk.
    pub(super) async fn authenticate(&mut self, lease: &Lease) -> Result<(), UpstreamError> {
        let password = lease.password.expose().as_bytes();
        let mut scram = Scram::None;
        loop {
            self.out.clear();
            match self.read().await? {
                Message::AuthenticationOk => {
                    if let Scram::Running(_) = scram {
                        return Err(
                            self.unverified("AuthenticationOk before the SCRAM exchange ended")
                        );
                    }
                    return Ok(());
                }
                Message::AuthenticationCleartextPassword => {
                    self.check_plaintext_allowed("cleartext")?;
                    frontend::password_message(password, &mut self.out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    self.check_plaintext_allowed("md5")?;
                    let hash = md5_hash(lease.username.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<&str> = body.mechanisms().collect()?;
                    scram = Scram::Running(self.scram_first(password, &offered)?);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let Scram::Running(s) = std::mem::replace(&mut scram, Scram::None) else {
                        return Err(ProtocolError::Malformed("SASL continue").into());
                    };
                    let s = salted_proof(s, body.data()).await?;
                    frontend::sasl_response(s.message(), &mut self.out)?;
                    scram = Scram::Running(s);
                }
                Message::AuthenticationSaslFinal(body) => {
                    let Scram::Running(mut s) = std::mem::replace(&mut scram, Scram::None) else {
                        return Err(ProtocolError::Malformed("SASL final").into());
                    };
                    if s.finish(body.data()).is_err() {
                        return Err(self.unverified("the SCRAM server signature does not match"));
                    }
                    scram = Scram::Verified;
                }
                Message::ErrorResponse(body) => return Err(refused(&body)),
                Message::NoticeResponse(_) => {}
                _ => return Err(UpstreamError::UnsupportedAuth("unknown request".into())),
            }
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.stream.flush().await?;
            }
        }
    }

    /// Starts SCRAM: SCRAM-SHA-256-PLUS bound to the server's certificate when TLS is up and
    /// the server offers it, plain SCRAM-SHA-256 otherwise.
    fn scram_first(
        &mut self,
        password: &[u8],
        offered: &[&str],
    ) -> Result<ScramSha256, UpstreamError> {
        let binding = offered
            .contains(&SCRAM_SHA_256_PLUS)
            .then(|| self.stream.peer_certificate().and_then(end_point_hash))
            .flatten();
        let (mechanism, scram) = match binding {
            Some(hash) => (
                SCRAM_SHA_256_PLUS,
                ScramSha256::new(password, ChannelBinding::tls_server_end_point(hash)),
            ),
            None if offered.contains(&SCRAM_SHA_256) => (
                SCRAM_SHA_256,
                ScramSha256::new(password, ChannelBinding::unsupported()),
            ),
            None => return Err(UpstreamError::UnsupportedAuth(offered.join(","))),
        };
        debug!(database = %self.target.database, mechanism, "upstream SCRAM");
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.out)?;
        Ok(scram)
    }

    /// Cleartext and md5 expose the lease (md5: a hash that logs in as well as the password)
    /// to whoever reads or answers on the wire; only TLS or an explicit opt-in lets them out.
    fn check_plaintext_allowed(&self, method: &'static str) -> Result<(), UpstreamError> {
        if self.stream.is_tls() || self.target.tls.allow_plaintext_password {
            return Ok(());
        }
        Err(UpstreamError::PlaintextPassword {
            database: self.target.database.clone(),
            method,
        })
    }

    fn unverified(&self, reason: &'static str) -> UpstreamError {
        UpstreamError::ScramUnverified {
            database: self.target.database.clone(),
            reason,
        }
    }

    /// Reads the rest of the login: ParameterStatus values and the cancel key, until
    /// ReadyForQuery.
    pub(super) async fn read_until_ready(
        &mut self,
    ) -> Result<(Vec<(String, String)>, (i32, i32)), UpstreamError> {
        let mut params = Vec::new();
        let mut key = (0, 0);
        loop {
            match self.read().await? {
                Message::ParameterStatus(p) => {
                    params.push((p.name()?.to_owned(), p.value()?.to_owned()))
                }
                Message::BackendKeyData(k) => key = (k.process_id(), k.secret_key()),
                Message::ReadyForQuery(_) => return Ok((params, key)),
                Message::ErrorResponse(body) => return Err(refused(&body)),
                Message::NoticeResponse(_) => {}
                _ => return Err(ProtocolError::Malformed("login reply").into()),
            }
        }
    }

    async fn read(&mut self) -> Result<Message, UpstreamError> {
        read_message(&mut self.stream, &mut self.buf, MAX_LOGIN_MESSAGE).await
    }
}

/// Runs SCRAM's key derivation (thousands of HMAC rounds, as many as PostgreSQL asks for)
/// on the blocking pool, so a burst of upstream logins never stalls the relay tasks.
async fn salted_proof(
    mut scram: ScramSha256,
    server_first: &[u8],
) -> Result<ScramSha256, UpstreamError> {
    if iterations(server_first).is_none_or(|i| i > MAX_SCRAM_ITERATIONS) {
        return Err(ProtocolError::Malformed("SCRAM iteration count missing or too large").into());
    }
    let server_first = server_first.to_vec();
    let derived = tokio::task::spawn_blocking(move || {
        let result = scram.update(&server_first);
        result.map(|()| scram)
    })
    .await;
    match derived {
        Ok(r) => Ok(r?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(UpstreamError::Io(std::io::Error::other(
            "runtime shutting down",
        ))),
    }
}

/// The most SCRAM rounds an upstream may ask for: far above any real setting (PostgreSQL's
/// default is 4096), low enough that a hostile server cannot pin a thread for minutes.
const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// The `i=` attribute of a SCRAM server-first message.
fn iterations(server_first: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(server_first).ok()?;
    text.split(',')
        .find_map(|attr| attr.strip_prefix("i="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
