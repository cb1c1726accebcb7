//! The admin console: an admin user's session on database `pglease`, speaking the
//! simple-query protocol the way PgBouncer's console does, so `psql` and PgBouncer-aware
//! scrapers read it unchanged.
//!
//! # Design
//!
//! The handshake authenticates the user as any other, checks `admin_users`, and hands the
//! stream here through [`Shared::console`] (so `client` never imports `admin`). The session
//! greets, then reads one message at a time: each Query may hold several statements
//! separated by `;`, run in turn and answered with a result table or a CommandComplete; the
//! first error ends that Query. Extended-protocol messages get one clear error until their
//! Sync. Nothing here touches a pool's data path: the SHOW commands read snapshots (atomic
//! counts, the client and upstream registries), and the commands ask the parts that own the
//! state (a pool's pause gate, a rotator's `rotate_now`, the wiring's [`Control`]).
//!
//! [`Control`]: crate::client::control::Control

mod clients;
mod commands;
mod config;
mod leases;
mod show;
mod wire;

use std::sync::Arc;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

use crate::client::handshake::ConsoleLogin;
use crate::client::{ClientError, ClientStream, ConsoleEntry, Shared};
use crate::protocol::frontend::split_frame;

/// Largest message the console accepts: its commands are short.
const MAX_MESSAGE: usize = 1024 * 1024;

/// What the console reports as `server_version`, PgBouncer's way (`<version>/bouncer`).
const SERVER_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "/pglease");

/// The console's entry point, for the wiring to put in [`Shared::console`].
pub fn entry() -> ConsoleEntry {
    Arc::new(|shared, stream, login| Box::pin(serve(shared, stream, login)))
}

/// Why one console statement failed: sent as an ErrorResponse; the session goes on.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct Refusal {
    /// The SQLSTATE.
    pub code: &'static str,
    /// For the operator.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Serves one admin user until it leaves (or the proxy shuts down).
async fn serve(
    shared: Arc<Shared>,
    mut stream: ClientStream,
    mut login: ConsoleLogin,
) -> Result<(), ClientError> {
    let mut out = std::mem::take(&mut login.greeting);
    greet(&mut out, &login);
    send(&mut stream, &mut out).await?;
    info!("admin console session started");
    let mut buf = login.pending;
    // After an extended-protocol message: its error was sent, the rest is skipped to Sync.
    let mut skipping = false;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut stream, &mut buf) => frame?,
            () = shared.shutdown.cancelled() => {
                wire::fatal(&mut out, "57P01", "terminating connection: pglease is shutting down");
                let _ = send(&mut stream, &mut out).await;
                return Ok(());
            }
        };
        let Some((tag, body)) = frame else {
            return Ok(());
        };
        match tag {
            b'Q' => {
                let text = query_text(&body);
                run_query(&shared, &text, &mut out).await;
                wire::ready(&mut out);
            }
            b'X' => return Ok(()),
            b'S' => {
                skipping = false;
                wire::ready(&mut out);
            }
            b'H' => {}
            b'P' | b'B' | b'D' | b'E' | b'C' | b'F' => {
                if !skipping {
                    wire::error(
                        &mut out,
                        "0A000",
                        "the pglease admin console speaks only the simple query protocol; \
                         send its commands as plain queries (psql -c 'SHOW POOLS')",
                    );
                }
                // A function call has no Sync after it: it is answered at once.
                if tag == b'F' {
                    wire::ready(&mut out);
                } else {
                    skipping = true;
                }
            }
            other => {
                let message = format!("unexpected message type 0x{other:02x} on the admin console");
                wire::fatal(&mut out, "08P01", &message);
                let _ = send(&mut stream, &mut out).await;
                return Err(ClientError::refused("08P01", message));
            }
        }
        send(&mut stream, &mut out).await?;
    }
}

/// The ParameterStatus set psql and drivers expect, a BackendKeyData (cancelling a console
/// command does nothing) and the first ReadyForQuery.
fn greet(out: &mut BytesMut, login: &ConsoleLogin) {
    let application_name = login.startup.get("application_name").unwrap_or_default();
    for (name, value) in [
        ("server_version", SERVER_VERSION),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "off"),
        ("application_name", application_name),
    ] {
        wire::parameter_status(out, name, value);
    }
    wire::backend_key_data(out, rand::random(), rand::random());
    wire::ready(out);
}

/// Runs every statement of one Query in turn; the first error ends it.
async fn run_query(shared: &Shared, text: &str, out: &mut BytesMut) {
    let statements: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if statements.is_empty() {
        wire::empty_query(out);
        return;
    }
    for statement in statements {
        debug!(statement, "admin console command");
        if let Err(e) = run(shared, statement, out).await {
            wire::error(out, e.code, &e.message);
            return;
        }
    }
}

/// Runs one statement, writing its reply to `out`.
async fn run(shared: &Shared, statement: &str, out: &mut BytesMut) -> Result<(), Refusal> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let Some(verb) = words.first().map(|w| w.to_ascii_uppercase()) else {
        return Err(unknown(statement));
    };
    let arg = words.get(1).map(|w| unquote(w));
    if words.len() > 2 {
        return Err(unknown(statement));
    }
    match (verb.as_str(), arg) {
        ("SHOW", Some(what)) => show(shared, &what.to_ascii_uppercase(), statement, out),
        ("RELOAD", None) => commands::reload(&shared.control, out).await,
        ("PAUSE", db) => commands::pause(shared, db.as_deref(), out).await,
        ("RESUME", db) => commands::resume(shared, db.as_deref(), out),
        ("ROTATE", entry) => commands::rotate(shared, entry.as_deref(), out).await,
        ("KILL", Some(id)) => commands::kill(shared, &id, out),
        ("SHUTDOWN", None) => commands::shutdown(shared, out),
        _ => Err(unknown(statement)),
    }
}

fn show(shared: &Shared, what: &str, statement: &str, out: &mut BytesMut) -> Result<(), Refusal> {
    let table = match what {
        "POOLS" => show::pools(shared),
        "STATS" => show::stats(shared),
        "DATABASES" => show::databases(shared),
        "USERS" => show::users(shared),
        "LISTS" => show::lists(shared),
        "VERSION" => show::version(),
        "CLIENTS" => clients::clients(shared),
        "SERVERS" | "UPSTREAMS" => clients::servers(shared),
        "LEASES" => leases::leases(shared),
        "CONFIG" => config::config(&shared.config()),
        _ => return Err(unknown(statement)),
    };
    table.write(out);
    Ok(())
}

/// The error for anything the console does not know, naming what it does.
fn unknown(statement: &str) -> Refusal {
    let shown: String = statement.chars().take(200).collect();
    Refusal::new(
        "42601",
        format!(
            "unknown admin console command: \"{shown}\"; the console knows SHOW POOLS | CLIENTS \
             | SERVERS | UPSTREAMS | STATS | DATABASES | USERS | LEASES | CONFIG | VERSION | \
             LISTS, RELOAD, PAUSE [db], RESUME [db], ROTATE [credentials], KILL <client id>, \
             SHUTDOWN"
        ),
    )
}

/// A name as typed: `"app"` and `app` are the same.
fn unquote(word: &str) -> String {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
        .to_owned()
}

/// A Query's text: up to its terminating NUL, invalid UTF-8 replaced.
fn query_text(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The next whole message; `None` when the client hung up.
async fn read_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<(u8, bytes::Bytes)>, ClientError> {
    loop {
        if let Some(frame) = split_frame(buf, MAX_MESSAGE)? {
            return Ok(Some(frame));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn send(stream: &mut ClientStream, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_may_be_quoted_and_query_text_stops_at_its_nul() {
        assert_eq!(unquote("\"app\""), "app");
        assert_eq!(unquote("app"), "app");
        assert_eq!(query_text(b"SHOW POOLS\0junk"), "SHOW POOLS");
        assert!(unknown("FROB").message.contains("\"FROB\""));
    }
}
