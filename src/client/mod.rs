//! A client connection: handshake and authentication ([`handshake`]), then the session loop
//! ([`session`]) that checks out upstreams and relays ([`relay`]) between the two sockets.
//! What every client task reads lives here too ([`shared`]): the wiring builds it, clients
//! use it.

pub mod admission;
pub mod cancel;
pub mod control;
pub mod descriptors;
pub mod handshake;
pub mod instruments;
pub mod notify;
pub mod relay;
pub mod session;
pub mod settings;
pub mod shared;
pub mod statements;
pub mod stop;
pub mod stream;
pub mod timers;
pub mod tracked;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, Span, debug, info_span};

use crate::protocol::ProtocolError;
use crate::protocol::backend::{self, Severity};

pub use admission::Seat;
pub use shared::{ConsoleEntry, PoolEntry, PoolParts, Pools, Serving, Shared, Tenure};

use instruments::AuthFailure;
pub use stream::ClientStream;

/// Why a client connection ended abnormally; a clean hang-up is not an error.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The client's socket failed.
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that are not valid protocol.
    #[error("client protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client was refused with a FATAL error (already sent to it).
    #[error("{code}: {message}")]
    Refused { code: &'static str, message: String },
    /// The client's user is not on the access list of the database it asked for: refused as
    /// PostgreSQL refuses a role without CONNECT on a database.
    #[error("42501: permission denied for database \"{database}\"")]
    NoConnectPrivilege { database: String },
    /// The client was refused with a FATAL error PostgreSQL itself gave (its startup
    /// settings were refused), passed on as PostgreSQL worded it.
    #[error("{code}: {message}")]
    RefusedUpstream { code: String, message: String },
}

impl ClientError {
    /// The SQLSTATE the client is sent for this error, if it is sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            ClientError::RefusedUpstream { code, .. } => Some(code),
            ClientError::Protocol(_) => Some("08P01"),
            ClientError::NoConnectPrivilege { .. } => Some(NO_PRIVILEGE),
            ClientError::Io(_) => None,
        }
    }

    /// A FATAL error to send before closing.
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        ClientError::Refused {
            code,
            message: message.into(),
        }
    }
}

/// SQLSTATE insufficient_privilege, PostgreSQL's code for a login to a database the role
/// may not connect to.
const NO_PRIVILEGE: &str = "42501";

/// PostgreSQL's DETAIL for that refusal (`postinit.c`), word for word.
const NO_CONNECT_DETAIL: &str = "User does not have CONNECT privilege.";

/// Serves one accepted client connection until it ends, holding its `seat` against
/// `max_client_conn` all along. Never panics on client input; an error here closes this
/// client only.
///
/// A plain function, not an `async fn`, so the task holds no second generator around the
/// client's future (which would keep room for both). The client's log span is entered by
/// each phase where it may log: the whole login, but only the rare paths of a session (see
/// [`session`]), so no span is entered on every poll of the data path, and a logged-in
/// client does not keep one (its session makes one with the same fields when it logs).
pub fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    seat: Seat,
) -> impl Future<Output = ()> + Send {
    let id = shared.clients.next_id();
    let span = info_span!(
        "client",
        id,
        %peer,
        user = tracing::field::Empty,
        db = tracing::field::Empty
    );
    let _ = stream.set_nodelay(true);
    let accepted = Accepted {
        id,
        peer,
        local: stream.local_addr().ok(),
        connected_at: std::time::SystemTime::now(),
    };
    // The login is boxed, and takes everything only it needs, before the task's own future is
    // made: that future is the task's room for as long as the client stays, so it holds only
    // what every phase needs (the pool registry, the seat) and the phase's box.
    let overflow = seat.overflow;
    let login =
        Box::pin(log_in(shared.clone(), stream, accepted, overflow).instrument(span.clone()));
    async move {
        let Some((stream, login, accepted)) = login.await else {
            return;
        };
        serve_logged_in(shared, stream, login, accepted, span).await;
        drop(seat);
    }
}

/// What a connection is, fixed when it is accepted.
struct Accepted {
    id: u64,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    connected_at: std::time::SystemTime,
}

/// The handshake and authentication, within `client_login_timeout` (shorter for a client
/// above `max_client_conn`, on its `overflow` seat). `None` when the connection ended before
/// a login could even be judged.
async fn log_in(
    shared: Arc<Shared>,
    stream: TcpStream,
    accepted: Accepted,
    overflow: bool,
) -> Option<(
    ClientStream,
    Result<Option<handshake::LoggedIn>, ClientError>,
    Accepted,
)> {
    let shared = &shared;
    let budget = if overflow {
        admission::OVERFLOW_TIMEOUT.min(shared.client_login_timeout)
    } else {
        shared.client_login_timeout
    };
    let deadline = tokio::time::Instant::now() + budget;
    let (mut stream, mut buf, end_point) = match handshake::open(shared, stream, deadline).await {
        Ok(opened) => opened,
        Err(e) => {
            debug!(error = %e, "client connection ended before login");
            return None;
        }
    };
    if overflow {
        let allowed = admission::refuse_unless_allowed(&mut stream, &mut buf);
        let allowed = tokio::time::timeout_at(deadline, allowed)
            .await
            .unwrap_or_else(|_| Err(ClientError::refused("08P01", "login timeout")));
        if let Err(e) = allowed {
            debug!(error = %e, "client refused: max_client_conn reached");
            if let Some(code) = e.sqlstate() {
                shared.instruments.error_sent(code);
            }
            refuse(&mut stream, &e).await;
            return None;
        }
    }
    let login = tokio::time::timeout_at(
        deadline,
        handshake::login(shared, &mut stream, buf, end_point.as_deref()),
    )
    .await
    .unwrap_or_else(|_| {
        shared.instruments.auth_failed(AuthFailure::Timeout);
        Err(ClientError::refused("08P01", "login timeout"))
    });
    Some((stream, login, accepted))
}

/// What serving a client after its login is: a boxed future, so it holds exactly its own
/// state (a session's, the console's or a refusal's).
type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A client's log span once it logged in: its registry id (as `SHOW CLIENTS` and `KILL` name
/// it), its address, and who it is. The span made at accept has the same fields, the last two
/// recorded at login.
pub(crate) fn client_span(id: u64, peer: SocketAddr, user: &str, db: &str) -> Span {
    info_span!("client", id, %peer, user, db)
}

/// `served` inside `span`, with why it ended logged there.
fn in_span(
    served: impl Future<Output = Result<(), ClientError>> + Send + 'static,
    span: Span,
) -> Served {
    Box::pin(async move {
        if let Err(e) = served.instrument(span.clone()).await {
            span.in_scope(|| debug!(error = %e, "client connection ended"));
        }
    })
}

/// Serves a client whose login was judged: its session, the admin console, or the error it
/// is refused with. Not an `async fn`: one would keep its arguments (the whole login) beside
/// the session made of them for as long as the session runs.
fn serve_logged_in(
    shared: Arc<Shared>,
    mut stream: ClientStream,
    login: Result<Option<handshake::LoggedIn>, ClientError>,
    accepted: Accepted,
    span: Span,
) -> Served {
    match login {
        Ok(Some(handshake::LoggedIn::Pool(login))) => {
            let startup = &login.startup;
            let info = stop::ClientInfo {
                id: accepted.id,
                names: stop::Names::new(
                    startup.user().unwrap_or_default(),
                    startup.database().unwrap_or_default(),
                    startup.get("application_name").unwrap_or_default(),
                ),
                peer: accepted.peer,
                local: accepted.local,
                connected_at: accepted.connected_at,
                tls: stream.is_tls(),
            };
            // The login's span ends here; the session makes its own when it logs.
            drop(span);
            Box::pin(session::Session::new(shared, stream, login, info).run())
        }
        Ok(Some(handshake::LoggedIn::Console(admin))) => match shared.console.clone() {
            Some(console) => in_span(console(shared, stream, admin), span),
            None => in_span(
                async move {
                    let e = ClientError::refused("08004", "the admin console is not available");
                    refuse(&mut stream, &e).await;
                    Err(e)
                },
                span,
            ),
        },
        Ok(None) => Box::pin(std::future::ready(())),
        Err(e) => in_span(
            async move {
                if let Some(code) = e.sqlstate() {
                    shared.instruments.error_sent(code);
                }
                refuse(&mut stream, &e).await;
                Err(e)
            },
            span,
        ),
    }
}

/// Sends a FATAL ErrorResponse for errors the client should hear about.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, e: &ClientError) {
    let denied;
    let (code, message, detail) = match e {
        ClientError::Refused { code, message } => (*code, message.as_str(), None),
        ClientError::RefusedUpstream { code, message } => (code.as_str(), message.as_str(), None),
        ClientError::NoConnectPrivilege { database } => {
            denied = format!("permission denied for database \"{database}\"");
            (NO_PRIVILEGE, denied.as_str(), Some(NO_CONNECT_DETAIL))
        }
        ClientError::Protocol(_) => ("08P01", "invalid frontend message", None),
        ClientError::Io(_) => return,
    };
    let mut out = BytesMut::with_capacity(128);
    backend::error_response_detail(&mut out, Severity::Fatal, code, message, detail);
    if stream.write_all(&out).await.is_ok() {
        let _ = stream.flush().await;
    }
}
