//! The login phase: startup packet (with the SSL/GSSENC/cancel special requests), client
//! authentication against the local users, and the greeting (parameters, proxy-issued key).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Span;

use super::ClientError;
use super::cancel::CancelKey;
use super::settings::{ClientSettings, greeting};
use super::shared::{PoolEntry, Shared};
use crate::auth::{AuthError, SCRAM_SHA_256, ScramExchange, md5_verify};
use crate::config::AuthType;
use crate::protocol::backend;
use crate::protocol::frontend::{self, split_frame};
use crate::protocol::startup::{self, Startup, StartupPacket};

/// Largest message accepted during authentication; SASL messages are tiny.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

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

/// Runs the login phase. `Ok(None)` for a connection that only carried a CancelRequest.
pub async fn login(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
) -> Result<Option<Login>, ClientError> {
    let mut buf = BytesMut::with_capacity(1024);
    let startup = loop {
        match read_startup(stream, &mut buf).await? {
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                if !buf.is_empty() {
                    // Bytes sent before our answer could be injected plaintext riding in front
                    // of a TLS handshake; PostgreSQL refuses this too.
                    return Err(ClientError::refused(
                        "08P01",
                        "unexpected data after encryption request",
                    ));
                }
                stream.write_all(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                shared.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            StartupPacket::Startup(s) => break s,
        }
    };
    let mut out = BytesMut::with_capacity(1024);
    if startup.minor > 0 || startup.protocol_options().next().is_some() {
        backend::negotiate_protocol_version(&mut out, startup.protocol_options());
    }
    let user = startup
        .user()
        .ok_or_else(|| {
            ClientError::refused(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            )
        })?
        .to_owned();
    let database = startup.database().unwrap_or_default().to_owned();
    Span::current().record("user", user.as_str());
    Span::current().record("db", database.as_str());

    authenticate(shared, stream, &mut buf, &mut out, &user).await?;

    let pool = shared.pool(&database, &user).ok_or_else(|| {
        ClientError::refused("3D000", format!("database \"{database}\" does not exist"))
    })?;
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
    stream.write_all(&out).await?;
    Ok(Some(Login {
        startup,
        pool,
        cancel,
        pending: buf,
        settings: judged.settings,
    }))
}

async fn read_startup(
    stream: &mut TcpStream,
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
    stream: &mut TcpStream,
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
    stream: &mut TcpStream,
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
    stream: &mut TcpStream,
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
    let known = shared.users.get(user);
    let use_md5 = match known {
        Some(p) => p.scram().is_none() || (shared.auth_type == AuthType::Md5 && p.md5().is_some()),
        None => shared.auth_type == AuthType::Md5,
    };
    if use_md5 {
        let salt: [u8; 4] = rand::random();
        backend::auth_md5(out, salt);
        stream.write_all(out).await?;
        out.clear();
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
    backend::auth_sasl(out, &[SCRAM_SHA_256]);
    stream.write_all(out).await?;
    out.clear();
    let body = read_password_frame(stream, buf).await?;
    let (mechanism, data) = frontend::sasl_initial(&body)?;
    let server_first = exchange
        .client_first(mechanism, data)
        .map_err(|e| auth_failed(e, &wrong))?;
    backend::auth_sasl_continue(out, &server_first);
    stream.write_all(out).await?;
    out.clear();
    let body = read_password_frame(stream, buf).await?;
    let server_final = exchange
        .client_final(&body)
        .map_err(|e| auth_failed(e, &wrong))?;
    backend::auth_sasl_final(out, &server_final);
    Ok(())
}

fn auth_failed(e: AuthError, wrong: &dyn Fn() -> ClientError) -> ClientError {
    match e {
        AuthError::WrongPassword => wrong(),
        other => ClientError::refused(other.sqlstate(), other.to_string()),
    }
}
