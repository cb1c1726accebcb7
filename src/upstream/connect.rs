//! Opening an upstream connection: TCP, StartupMessage, authentication with a lease
//! (SCRAM-SHA-256, md5 or cleartext), then the parameters and key PostgreSQL reports.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{CancelTarget, Upstream, UpstreamError, UpstreamTarget};
use crate::credentials::Lease;
use crate::protocol::ProtocolError;
use crate::protocol::frame::header;

/// The largest message accepted during login; a login reply is never near this.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Opens and logs in one upstream connection with `lease`, within the target's connect timeout.
pub async fn connect(
    target: &UpstreamTarget,
    lease: Arc<Lease>,
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, connect_inner(target, lease))
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

async fn connect_inner(
    target: &UpstreamTarget,
    lease: Arc<Lease>,
) -> Result<Upstream, UpstreamError> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    let addr = stream.peer_addr()?;
    let mut out = BytesMut::with_capacity(256);
    let params = [
        ("user", lease.username.as_str()),
        ("database", target.dbname.as_str()),
        ("application_name", target.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;

    let mut conn = Login {
        stream,
        buf: BytesMut::with_capacity(1024),
        out,
    };
    conn.authenticate(&lease).await?;
    let (params, key) = conn.read_until_ready().await?;
    Ok(Upstream {
        stream: conn.stream,
        lease,
        params: params.into(),
        cancel: CancelTarget {
            addr,
            pid: key.0,
            secret: key.1,
        },
        created_at: Instant::now(),
        broken: false,
    })
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

struct Login {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Login {
    async fn authenticate(&mut self, lease: &Lease) -> Result<(), UpstreamError> {
        let password = lease.password.expose().as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            self.out.clear();
            match self.read().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(lease.username.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<&str> = body.mechanisms().collect()?;
                    if !offered.contains(&SCRAM_SHA_256) {
                        return Err(UpstreamError::UnsupportedAuth(offered.join(",")));
                    }
                    let s = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .take()
                        .ok_or(ProtocolError::Malformed("SASL continue"))?;
                    let s = salted_proof(s, body.data()).await?;
                    frontend::sasl_response(s.message(), &mut self.out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or(ProtocolError::Malformed("SASL final"))?;
                    s.finish(body.data())?;
                }
                Message::ErrorResponse(body) => return Err(refused(&body)),
                Message::NoticeResponse(_) => {}
                _ => return Err(UpstreamError::UnsupportedAuth("unknown request".into())),
            }
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
            }
        }
    }

    async fn read_until_ready(
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

/// Reads one backend message into `buf`, refusing a length over `max` before buffering it:
/// PostgreSQL's bytes are not trusted either.
pub(crate) async fn read_message(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Message, UpstreamError> {
    loop {
        if let Some((tag, len)) = header(buf) {
            if len > max {
                return Err(ProtocolError::TooLarge { tag, len, max }.into());
            }
        }
        if let Some(msg) = Message::parse(buf)? {
            return Ok(msg);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// Turns an ErrorResponse into an error carrying its SQLSTATE and message (never a password:
/// PostgreSQL does not echo them).
pub(crate) fn refused(body: &ErrorResponseBody) -> UpstreamError {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    UpstreamError::Refused { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_count_is_read_and_bounded() {
        assert_eq!(iterations(b"r=abc,s=c2FsdA==,i=4096"), Some(4096));
        assert_eq!(iterations(b"r=abc,s=c2FsdA=="), None);
        assert_eq!(iterations(b"r=abc,s=c2FsdA==,i=99999999999"), None);
        assert!(iterations(b"r=a,s=b,i=20000000").is_some_and(|i| i > MAX_SCRAM_ITERATIONS));
    }
}
