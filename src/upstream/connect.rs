//! Opening an upstream connection: TCP, TLS as the database entry's `upstream_tls` says
//! (SSLRequest first, as libpq), StartupMessage, the login with a lease ([`super::login`]),
//! then the parameters and key PostgreSQL reports.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::login::Login;
use super::{CancelTarget, Upstream, UpstreamError, UpstreamTarget};
use crate::config::UpstreamTlsMode;
use crate::credentials::Lease;
use crate::protocol::ProtocolError;
use crate::protocol::frame::header;
use crate::tls::client::{describe, server_name};
use crate::tls::stream::Stream;

/// The largest message accepted during login; a login reply is never near this.
pub(super) const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Opens and logs in one upstream connection with `lease`, within the target's connect timeout.
pub async fn connect(
    target: &UpstreamTarget,
    lease: Arc<Lease>,
) -> Result<Upstream, UpstreamError> {
    let result = tokio::time::timeout(target.connect_timeout, connect_inner(target, lease))
        .await
        .map_err(|_| UpstreamError::Timeout)?;
    if let Err(
        e @ (UpstreamError::Tls { .. }
        | UpstreamError::PlaintextPassword { .. }
        | UpstreamError::ScramUnverified { .. }),
    ) = &result
    {
        // The reason an operator must act on; the client is told the same.
        warn!(database = %target.database, host = %target.host, error = %e, "upstream refused");
    }
    if let Ok(up) = &result {
        debug!(
            database = %target.database,
            pid = up.cancel.pid,
            tls = up.stream.is_tls(),
            "upstream logged in"
        );
    }
    result
}

async fn connect_inner(
    target: &UpstreamTarget,
    lease: Arc<Lease>,
) -> Result<Upstream, UpstreamError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let addr = tcp.peer_addr()?;
    let mut stream = negotiate_tls(target, tcp).await?;
    let mut out = BytesMut::with_capacity(256);
    let params = [
        ("user", lease.username.as_str()),
        ("database", target.dbname.as_str()),
        ("application_name", target.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut conn = Login::new(stream, target);
    conn.authenticate(&lease).await?;
    let (params, key) = conn.read_until_ready().await?;
    Ok(Upstream {
        stream: conn.into_stream(),
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

/// Asks PostgreSQL for TLS (SSLRequest) unless the mode is `disable`, and runs the handshake
/// when it agrees. A refusal (`N`) is plaintext under `prefer` and an error otherwise.
async fn negotiate_tls(
    target: &UpstreamTarget,
    mut tcp: TcpStream,
) -> Result<Stream, UpstreamError> {
    let tls = &target.tls;
    let config = match (tls.mode, &tls.config) {
        (UpstreamTlsMode::Disable, _) => return Ok(tcp.into()),
        (_, Some(config)) => config.clone(),
        (_, None) => return Err(tls_error(target, "no TLS configuration was built")),
    };
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    // One byte, read alone: anything after it would be bytes sent before the handshake.
    match tcp.read_u8().await {
        Ok(b'S') => {}
        Ok(b'N') if tls.mode == UpstreamTlsMode::Prefer => return Ok(tcp.into()),
        Ok(b'N') => return Err(tls_error(target, "the server does not accept TLS")),
        Ok(b'E') => {
            return Err(tls_error(
                target,
                "the server answered SSLRequest with an error",
            ));
        }
        Ok(_) => return Err(ProtocolError::Malformed("SSLRequest answer").into()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(UpstreamError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let name = server_name(&target.host)
        .map_err(|_| tls_error(target, "the host is not a valid TLS server name"))?;
    match TlsConnector::from(config).connect(name, tcp).await {
        Ok(tls) => Ok(Stream::Tls(Box::new(tls.into()))),
        Err(e) => {
            let reason = match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
            {
                Some(rustls_error) => describe(rustls_error),
                None => e.to_string(),
            };
            Err(tls_error(target, reason))
        }
    }
}

fn tls_error(target: &UpstreamTarget, reason: impl Into<String>) -> UpstreamError {
    UpstreamError::Tls {
        database: target.database.clone(),
        reason: reason.into(),
    }
}

/// Reads one backend message into `buf`, refusing a length over `max` before buffering it:
/// PostgreSQL's bytes are not trusted either.
pub(crate) async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
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
