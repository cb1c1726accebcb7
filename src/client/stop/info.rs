//! What the registry keeps about each client for `SHOW CLIENTS`.

use std::net::SocketAddr;
use std::time::SystemTime;

/// Facts of one client connection, fixed at login.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The registry's id: in the client's log span, `SHOW CLIENTS` and `KILL`.
    pub id: u64,
    /// The local user it logged in as.
    pub user: String,
    /// The database it asked for.
    pub database: String,
    /// Its address.
    pub peer: SocketAddr,
    /// The proxy's address on that connection.
    pub local: Option<SocketAddr>,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Whether it uses TLS.
    pub tls: bool,
    /// The `application_name` it sent, empty when none.
    pub application_name: String,
}

/// What a client is doing, with PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Holding an upstream (`cl_active`).
    Active = 0,
    /// A complete request waits for an upstream (`cl_waiting`).
    Waiting = 1,
    /// Neither (`cl_idle`).
    Idle = 2,
}

impl ClientState {
    pub(super) fn from_u8(n: u8) -> ClientState {
        match n {
            0 => ClientState::Active,
            1 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// Its name in `SHOW CLIENTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
            ClientState::Idle => "idle",
        }
    }
}
