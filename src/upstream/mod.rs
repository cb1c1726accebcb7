//! Connections from pglease to PostgreSQL: opening one with a lease ([`connect`]), the few
//! things the proxy itself runs on one ([`maintenance`]: rollback and reset; [`leftover`]:
//! session state a client left), and recreating a session's state on another when its lease is
//! retired ([`migrate`]).

pub mod connect;
pub mod leftover;
pub mod maintenance;
pub mod migrate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpStream;

use crate::credentials::Lease;
use crate::protocol::ProtocolError;

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
    /// The socket; owned by whichever client holds this upstream, relayed without buffering here.
    pub stream: TcpStream,
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
        let _ = self.stream.try_write(&TERMINATE);
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
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
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
}
