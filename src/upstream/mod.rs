//! Connections from pglease to PostgreSQL: opening one with a lease ([`connect`]), the few
//! things the proxy itself runs on one ([`maintenance`]: rollback and reset; [`leftover`]:
//! session state a client left), and recreating a session's state on another when its lease is
//! retired ([`migrate`]).

pub mod connect;
pub mod leftover;
mod login;
pub mod maintenance;
pub mod migrate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_rustls::rustls::ClientConfig;

use crate::config::UpstreamTlsMode;
use crate::credentials::Lease;
use crate::protocol::ProtocolError;
use crate::tls::stream::Stream;

pub use connect::connect;

/// The ParameterStatus values an upstream reported at login, shared with every client it greets.
pub type ServerParams = Arc<[(String, String)]>;

/// Where and how a pool's upstream connections log in.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// PostgreSQL host name or address.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// The upstream database name.
    pub dbname: String,
    /// Sent as `application_name`, so upstream sessions are recognisable in pg_stat_activity.
    pub application_name: String,
    /// Bound on TCP connect plus login.
    pub connect_timeout: Duration,
    /// The `[[databases]]` entry these connections serve, named in TLS and login errors.
    pub database: String,
    /// Whether and how the connection is encrypted, and what the login may send without it.
    pub tls: UpstreamTls,
}

/// A database entry's TLS settings, built once when the proxy starts. The `Default` is
/// plaintext (`disable`), for targets built in code; configs default to `prefer`.
#[derive(Clone)]
pub struct UpstreamTls {
    /// `upstream_tls`.
    pub mode: UpstreamTlsMode,
    /// The rustls configuration for `mode`; `None` only under `disable`.
    pub config: Option<Arc<ClientConfig>>,
    /// `allow_plaintext_password`: cleartext and md5 password requests are answered even
    /// when the connection is not encrypted.
    pub allow_plaintext_password: bool,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            mode: UpstreamTlsMode::Disable,
            config: None,
            allow_plaintext_password: false,
        }
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode)
            .field("allow_plaintext_password", &self.allow_plaintext_password)
            .finish_non_exhaustive()
    }
}

/// The key PostgreSQL gave an upstream connection, and where to send a cancel for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// The upstream's address (the cancel goes to the same PostgreSQL).
    pub addr: SocketAddr,
    /// The upstream backend's process id.
    pub pid: i32,
    /// The upstream backend's cancel secret.
    pub secret: i32,
}

/// One logged-in connection to PostgreSQL. What a pool keeps with it (its deadline signal,
/// what clients left on it, why it closes) is the pool's: see `pool::Pooled`.
#[derive(Debug)]
pub struct Upstream {
    /// The socket, plain or TLS; owned by whichever client holds this upstream, relayed
    /// without buffering here.
    pub stream: Stream,
    /// The lease this connection logged in with; its generation decides when it is retired.
    pub lease: Arc<Lease>,
    /// ParameterStatus values PostgreSQL reported at login (server_version, TimeZone, ...).
    pub params: ServerParams,
    /// Cancel key and address for this backend.
    pub cancel: CancelTarget,
    /// When the connection was opened, for lifetime limits and `SHOW UPSTREAMS`.
    pub created_at: Instant,
    /// Set when the connection's protocol state is unknown; it is closed, never reused.
    pub broken: bool,
}

impl Drop for Upstream {
    /// Says goodbye with a Terminate message when the socket has room for it, so PostgreSQL
    /// logs a clean disconnect rather than an unexpected EOF for every retired connection.
    fn drop(&mut self) {
        const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
        self.stream.send_now(&TERMINATE);
    }
}

impl Upstream {
    /// The generation of the lease this connection logged in with.
    pub fn generation(&self) -> u64 {
        self.lease.generation
    }

    /// True when PostgreSQL sent something, or hung up, while nobody was using the
    /// connection: it cannot be handed to a client in a known state.
    pub fn has_unsolicited_input(&self) -> bool {
        // Under TLS the probe reads raw record bytes; any at all mean the same thing.
        let mut probe = [0u8; 1];
        !matches!(self.stream.tcp().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Why an upstream connection could not be opened or used. Says which side failed, because
/// that decides what the client is told and whether the lease is suspect.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// TCP connect or I/O failed.
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Connect plus login took longer than `connect_timeout`.
    #[error("upstream connect timed out")]
    Timeout,
    /// PostgreSQL refused the login; `code` is its SQLSTATE (28P01: the lease's password is bad).
    #[error("upstream login refused: {code} {message}")]
    Refused { code: String, message: String },
    /// PostgreSQL sent bytes that are not valid protocol.
    #[error("upstream protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// PostgreSQL asked for an authentication method pglease does not implement.
    #[error("upstream asks for unsupported authentication ({0})")]
    UnsupportedAuth(String),
    /// No lease has been published yet for this pool's credentials.
    #[error("no credentials available yet for `{0}`")]
    NoLease(String),
    /// The connection closed during login or maintenance.
    #[error("upstream closed the connection")]
    Closed,
    /// TLS could not be set up with the upstream of `database` (refused, unverifiable
    /// certificate, failed handshake).
    #[error("TLS to the upstream of database `{database}` failed: {reason}")]
    Tls { database: String, reason: String },
    /// The upstream asked for the lease's password in cleartext or as md5 over a connection
    /// that is not encrypted, and `allow_plaintext_password` is off: nothing was sent.
    #[error(
        "upstream of database `{database}` asks for a {method} password over an unencrypted \
         connection; refused without sending it (use TLS, or set allow_plaintext_password)"
    )]
    PlaintextPassword {
        database: String,
        method: &'static str,
    },
    /// The upstream ended SCRAM without a valid server signature (or skipped to
    /// AuthenticationOk before it): it did not prove it knows the lease's verifier.
    #[error("upstream of database `{database}` did not prove its identity: {reason}")]
    ScramUnverified {
        database: String,
        reason: &'static str,
    },
}
