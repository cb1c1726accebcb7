//! The login phase: the encryption negotiation (SSLRequest, GSSENCRequest), the startup
//! packet or a CancelRequest, client authentication against the local users, and the greeting
//! (parameters, proxy-issued key).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tracing::Span;

use super::ClientError;
use super::cancel::CancelKey;
use super::instruments::AuthFailure;
use super::settings::{ClientSettings, greeting};
use super::shared::{PoolEntry, Shared};
use super::stream::ClientStream;
use crate::auth::{AuthError, ScramExchange, md5_verify};
use crate::config::AuthType;
use crate::protocol::backend;
use crate::protocol::frontend::{self, split_frame};
use crate::protocol::startup::{self, Startup, StartupPacket};

/// Largest message accepted during authentication; SASL messages are tiny.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// The database name that reaches the admin console instead of a pool.
pub const ADMIN_DATABASE: &str = "pglease";

/// What a login led to.
pub enum LoggedIn {
    /// A pool's client, greeted and ready for its session.
    Pool(Login),
    /// An admin user on database [`ADMIN_DATABASE`], authenticated but not yet greeted.
    Console(ConsoleLogin),
}

/// An authenticated admin user for the console (see [`super::shared::ConsoleEntry`]).
pub struct ConsoleLogin {
    /// The startup parameters the client sent.
    pub startup: Startup,
    /// What must go out first (AuthenticationOk, and any protocol-version negotiation);
    /// the console adds its greeting.
    pub greeting: BytesMut,
    /// Bytes the client sent after its last login message.
    pub pending: BytesMut,
}

/// A logged-in client, ready for its session.
pub struct Login {
    /// The startup parameters the client sent.
    pub startup: Startup,
    /// The pool serving the (database, user) the client asked for.
    pub pool: PoolEntry,
    /// The client's proxy-issued cancel key.
    pub cancel: CancelKey,
    /// Bytes the client sent after its last login message (pipelined first query).
    pub pending: BytesMut,
    /// Its settings, from its startup parameters.
    pub settings: ClientSettings,
}

/// Answers the encryption requests that may open a connection: SSLRequest with `S` and a
/// TLS handshake when `client_tls` is on, `N` otherwise; GSSENCRequest always with `N`.
/// Returns the stream to log in on, the bytes already read from it (the startup packet of
/// a plaintext client) and, over TLS, the `tls-server-end-point` data of the certificate it
/// was served (for SCRAM-SHA-256-PLUS; only the login needs it, so the stream does not keep
/// it for the session). Everything happens before `deadline`.
pub async fn open(
    shared: &Shared,
    mut tcp: TcpStream,
    deadline: Instant,
) -> Result<(ClientStream, BytesMut, Option<Arc<[u8]>>), ClientError> {
    let mut buf = BytesMut::with_capacity(1024);
    let wants_tls = timeout_at(deadline, negotiate(shared, &mut tcp, &mut buf))
        .await
        .unwrap_or_else(|_| Err(ClientError::refused("08P01", "login timeout")));
    match wants_tls {
        Ok(false) => return Ok((ClientStream::plain(tcp), buf, None)),
        Ok(true) => {}
        Err(e) => {
            super::refuse(&mut tcp, &e).await;
            return Err(e);
        }
    }
    let Some(tls) = shared.client_tls.as_ref() else {
        return Err(ClientError::refused("08P01", "TLS is not configured"));
    };
    let served = tls.current();
    let stream = timeout_at(deadline, served.acceptor.accept(tcp))
        .await
        .map_err(|_| ClientError::refused("08P01", "login timeout"))??;
    Ok((ClientStream::tls(stream), buf, served.end_point))
}

/// Reads encryption requests until the client asks for TLS that we offer (`true`) or sends
/// something else (`false`, left unread in `buf`).
async fn negotiate(
    shared: &Shared,
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<bool, ClientError> {
    loop {
        if let Some((packet, used)) = startup::parse(buf)? {
            let ssl = match packet {
                StartupPacket::Ssl => true,
                StartupPacket::GssEnc => false,
                StartupPacket::Cancel { .. } | StartupPacket::Startup(_) => return Ok(false),
            };
            let _ = buf.split_to(used);
            if !buf.is_empty() {
                // Bytes sent before our answer could be injected plaintext riding in front
                // of a TLS handshake (CVE-2021-3935); PostgreSQL refuses them too. Anything
                // arriving later goes to rustls as handshake records, never to the login.
                return Err(ClientError::refused(
                    "08P01",
                    "received unencrypted data after SSL request",
                ));
            }
            if ssl && shared.client_tls.is_some() {
                tcp.write_all(b"S").await?;
                return Ok(true);
            }
            tcp.write_all(b"N").await?;
        } else if tcp.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Runs the login phase on a stream [`open`] returned, with the bytes it already read.
/// `Ok(None)` for a connection that only carried a CancelRequest. Database
/// [`ADMIN_DATABASE`] leads to the console, for `admin_users` only.
pub async fn login(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    mut buf: BytesMut,
    end_point: Option<&[u8]>,
) -> Result<Option<LoggedIn>, ClientError> {
    let Some(startup) = read_login_startup(shared, stream, &mut buf).await? else {
        return Ok(None);
    };
    let mut out = BytesMut::with_capacity(1024);
    if startup.minor > 0 || startup.protocol_options().next().is_some() {
        backend::negotiate_protocol_version(&mut out, startup.protocol_options());
    }
    let failed = |reason| shared.instruments.auth_failed(reason);
    let user = startup
        .user()
        .ok_or_else(|| {
            failed(AuthFailure::NoUser);
            ClientError::refused(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            )
        })?
        .to_owned();
    let database = startup.database().unwrap_or_default().to_owned();
    Span::current().record("user", user.as_str());
    Span::current().record("db", database.as_str());
    if shared.client_tls_required && !stream.is_tls() {
        failed(AuthFailure::TlsRequired);
        return Err(plaintext_refused(&user, &database));
    }

    authenticate(shared, stream, end_point, &mut buf, &mut out, &user)
        .await
        .inspect_err(|e| match e.sqlstate() {
            Some("28P01") => failed(AuthFailure::WrongPassword),
            Some(_) => failed(AuthFailure::Protocol),
            // The client hung up: nothing was refused.
            None => {}
        })?;
    if database == ADMIN_DATABASE {
        return admin_login(shared, startup, out, buf, &user).map(Some);
    }

    let pool = find_pool(shared, &database, &user)
        .inspect_err(|_| failed(AuthFailure::UnknownDatabase))?;
    let wanted = super::settings::startup::settings(&startup)?;
    let judged = greeting::judge(&pool.pool, &pool.reported, wanted).await?;
    let params = pool.pool.server_params().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot reach the upstream to greet a client");
        ClientError::refused("08006", format!("upstream unavailable: {e}"))
    })?;
    let cancel = shared.cancels.register();
    backend::auth_ok(&mut out);
    for (name, value) in params.iter() {
        // What the client set for itself, as PostgreSQL reports it; the rest is the pool's.
        let value = judged.reported(name).unwrap_or(value);
        backend::parameter_status(&mut out, name, value);
    }
    backend::backend_key_data(&mut out, cancel.pid, cancel.secret);
    backend::ready_for_query(&mut out, b'I');
    send(stream, &mut out).await?;
    Ok(Some(LoggedIn::Pool(Login {
        startup,
        pool,
        cancel,
        pending: buf,
        settings: judged.settings,
    })))
}

/// An authenticated user asked for the admin console: only `admin_users` get in.
fn admin_login(
    shared: &Shared,
    startup: Startup,
    mut greeting: BytesMut,
    pending: BytesMut,
    user: &str,
) -> Result<LoggedIn, ClientError> {
    if !shared.config().proxy.admin_users.iter().any(|u| u == user) {
        tracing::warn!(
            user,
            "refused a user not in admin_users on the admin console"
        );
        return Err(ClientError::refused(
            "42501",
            format!(
                "permission denied for the admin console: user \"{user}\" is not in \
                 admin_users"
            ),
        ));
    }
    backend::auth_ok(&mut greeting);
    Ok(LoggedIn::Console(ConsoleLogin {
        startup,
        greeting,
        pending,
    }))
}

/// The pool of the running config for an authenticated (database, user): PostgreSQL's
/// errors for a database that does not exist, and for one the user may not use.
fn find_pool(shared: &Shared, database: &str, user: &str) -> Result<PoolEntry, ClientError> {
    let serving = shared.serving();
    match serving.pools.get(database, user) {
        Some(entry) => Ok(entry.clone()),
        None if serving.pools.has_database(database) => Err(ClientError::NoConnectPrivilege {
            database: database.to_owned(),
        }),
        None => Err(ClientError::refused(
            "3D000",
            format!("database \"{database}\" does not exist"),
        )),
    }
}

/// The startup packet after [`open`]; `None` when it was a CancelRequest (now handled).
async fn read_login_startup(
    shared: &Shared,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<Startup>, ClientError> {
    match read_startup(stream, buf).await? {
        // `open` answered every request on the plaintext leg, so this one came over TLS.
        StartupPacket::Ssl | StartupPacket::GssEnc => Err(ClientError::refused(
            "08P01",
            "encryption request on an already encrypted connection",
        )),
        StartupPacket::Cancel { pid, secret } => {
            shared.cancels.cancel(pid, secret).await;
            Ok(None)
        }
        StartupPacket::Startup(s) => Ok(Some(s)),
    }
}

/// `client_tls = "require"` and a plaintext login: PostgreSQL's answer when only `hostssl`
/// lines match, worded for the proxy.
fn plaintext_refused(user: &str, database: &str) -> ClientError {
    ClientError::refused(
        "28000",
        format!(
            "no encryption: pglease accepts only TLS connections (client_tls = \"require\"), \
             refused user \"{user}\", database \"{database}\"; connect with sslmode=require"
        ),
    )
}

async fn read_startup(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<StartupPacket, ClientError> {
    loop {
        if let Some((packet, used)) = startup::parse(buf)? {
            let _ = buf.split_to(used);
            return Ok(packet);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Reads one whole frame of the login phase.
async fn read_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<(u8, bytes::Bytes), ClientError> {
    loop {
        if let Some(frame) = split_frame(buf, MAX_AUTH_MESSAGE)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Reads the next password-type message (`p`); anything else ends the login.
async fn read_password_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<bytes::Bytes, ClientError> {
    match read_frame(stream, buf).await? {
        (b'p', body) => Ok(body),
        (b'X', _) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
        _ => Err(ClientError::refused("08P01", "expected password response")),
    }
}

/// Authenticates `user` with SCRAM-SHA-256 or md5. An unknown user goes through the same
/// exchange and gets the same error as a wrong password.
async fn authenticate(
    shared: &Shared,
    stream: &mut ClientStream,
    end_point: Option<&[u8]>,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
) -> Result<(), ClientError> {
    let wrong = || {
        ClientError::refused(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    };
    let serving = shared.serving();
    let known = serving.users.get(user);
    let use_md5 = match known {
        Some(p) => p.scram().is_none() || (shared.auth_type == AuthType::Md5 && p.md5().is_some()),
        None => shared.auth_type == AuthType::Md5,
    };
    if use_md5 {
        let salt: [u8; 4] = rand::random();
        backend::auth_md5(out, salt);
        send(stream, out).await?;
        let body = read_password_frame(stream, buf).await?;
        let response = frontend::password(&body)?;
        return match known.and_then(|p| p.md5()) {
            Some(hash) if md5_verify(hash, salt, response) => Ok(()),
            _ => Err(wrong()),
        };
    }

    let mut exchange = match known.and_then(|p| p.scram()) {
        Some(verifier) => ScramExchange::new(verifier),
        None => ScramExchange::mock(user, &shared.mock_key),
    };
    if let Some(end_point) = end_point {
        exchange.offer_channel_binding(end_point);
    }
    backend::auth_sasl(out, exchange.mechanisms());
    send(stream, out).await?;
    let body = read_password_frame(stream, buf).await?;
    let (mechanism, data) = frontend::sasl_initial(&body)?;
    let server_first = exchange
        .client_first(mechanism, data)
        .map_err(|e| auth_failed(e, &wrong))?;
    backend::auth_sasl_continue(out, &server_first);
    send(stream, out).await?;
    let body = read_password_frame(stream, buf).await?;
    let server_final = exchange
        .client_final(&body)
        .map_err(|e| auth_failed(e, &wrong))?;
    backend::auth_sasl_final(out, &server_final);
    Ok(())
}

/// Writes and flushes `out` (over TLS, rustls holds records until flushed), then empties it.
async fn send(stream: &mut ClientStream, out: &mut BytesMut) -> std::io::Result<()> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}

fn auth_failed(e: AuthError, wrong: &dyn Fn() -> ClientError) -> ClientError {
    match e {
        AuthError::WrongPassword => wrong(),
        other => ClientError::refused(other.sqlstate(), other.to_string()),
    }
}
