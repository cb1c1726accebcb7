//! The listener's connection: its own read buffer (notifications arrive at any time, also in
//! the middle of the replies to pglease's own LISTEN statements), the channels LISTENed on
//! it, and the one exchange it runs (a simple Query read to its ReadyForQuery).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::escape::escape_identifier;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::credentials::{Credentials, LeaseEnd};
use crate::pool::PoolInstruments;
use crate::protocol::ProtocolError;
use crate::protocol::frame::header;
use crate::upstream::connect::refused;
use crate::upstream::{self, Upstream, UpstreamError, UpstreamTarget};

/// Largest message read from the listener connection (a notification's payload is at most
/// 8000 bytes; errors are short).
const MAX_MESSAGE: usize = 1 << 20;

/// Bound on one exchange with the listener connection.
pub(super) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One NotificationResponse as read: its channel, and the whole frame for the clients.
pub(super) struct Notification {
    pub(super) channel: String,
    pub(super) payload: String,
    pub(super) frame: Bytes,
}

/// A logged-in listener connection.
pub(super) struct Conn {
    up: Upstream,
    buf: BytesMut,
    /// Channels whose LISTEN committed on this connection.
    pub(super) active: BTreeSet<Arc<str>>,
    /// Fires when the connection's lease reaches its hard deadline.
    pub(super) deadline: Arc<LeaseEnd>,
}

impl Conn {
    /// Opens a connection with the current lease of `credentials`.
    pub(super) async fn open(
        target: &UpstreamTarget,
        credentials: &Credentials,
        instruments: &PoolInstruments,
    ) -> Result<Conn, UpstreamError> {
        let lease = match credentials.current() {
            Some(lease) => lease,
            None => credentials
                .wait_current(target.connect_timeout)
                .await
                .ok_or_else(|| UpstreamError::NoLease(credentials.name().to_owned()))?,
        };
        let deadline = credentials.watch_deadline(lease.generation);
        let login = upstream::connect(target, lease).await;
        instruments.connected(&login);
        let up = login?;
        Ok(Conn {
            up,
            buf: BytesMut::with_capacity(4096),
            active: BTreeSet::new(),
            deadline,
        })
    }

    /// The generation of the lease this connection logged in with.
    pub(super) fn generation(&self) -> u64 {
        self.up.generation()
    }

    /// Makes the set of channels LISTENed on this connection `wanted`, in one Query (one
    /// transaction). Notifications read meanwhile go to `sink`.
    pub(super) async fn apply(
        &mut self,
        wanted: &BTreeSet<Arc<str>>,
        sink: &mut impl FnMut(Notification),
    ) -> Result<(), UpstreamError> {
        let mut sql = String::new();
        for channel in wanted.difference(&self.active) {
            sql.push_str(&format!("LISTEN {};", escape_identifier(channel)));
        }
        for channel in self.active.difference(wanted) {
            sql.push_str(&format!("UNLISTEN {};", escape_identifier(channel)));
        }
        if sql.is_empty() {
            return Ok(());
        }
        self.exchange(&sql, sink).await?;
        self.active = wanted.clone();
        Ok(())
    }

    /// Runs `sql` as a simple Query and reads to its ReadyForQuery, within
    /// [`EXCHANGE_TIMEOUT`]; notifications read meanwhile go to `sink`.
    pub(super) async fn exchange(
        &mut self,
        sql: &str,
        sink: &mut impl FnMut(Notification),
    ) -> Result<(), UpstreamError> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange_inner(sql, sink))
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    async fn exchange_inner(
        &mut self,
        sql: &str,
        sink: &mut impl FnMut(Notification),
    ) -> Result<(), UpstreamError> {
        let mut request = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut request)?;
        self.up.stream.write_all(&request).await?;
        self.up.stream.flush().await?;
        let mut error = None;
        loop {
            let (tag, body) = self.next_message().await?;
            match tag {
                b'A' => sink(notification(body)?),
                b'E' => {
                    error.get_or_insert_with(|| error_of(&body));
                }
                b'Z' => return error.map_or(Ok(()), Err),
                _ => {}
            }
        }
    }

    /// Reads notifications until the connection fails (which is the only way this returns).
    /// Cancel-safe: a partly read message stays in the buffer.
    pub(super) async fn notifications(
        &mut self,
        sink: &mut impl FnMut(Notification),
    ) -> UpstreamError {
        loop {
            match self.next_notification().await {
                Ok(n) => sink(n),
                Err(e) => return e,
            }
        }
    }

    /// The next notification; anything else but a notice or a parameter change is an error,
    /// since nothing else is outstanding on this connection.
    pub(super) async fn next_notification(&mut self) -> Result<Notification, UpstreamError> {
        loop {
            match self.next_message().await? {
                (b'A', frame) => return notification(frame),
                (b'N' | b'S', _) => {}
                _ => return Err(ProtocolError::Malformed("listener: unexpected message").into()),
            }
        }
    }

    /// The next whole message as (tag, frame), each length checked before it is buffered.
    async fn next_message(&mut self) -> Result<(u8, Bytes), UpstreamError> {
        loop {
            if let Some((tag, len)) = header(&self.buf) {
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(ProtocolError::TooLarge {
                        tag,
                        len,
                        max: MAX_MESSAGE,
                    }
                    .into());
                }
                if self.buf.len() > len {
                    let frame = self.buf.split_to(1 + len).freeze();
                    return Ok((tag, frame));
                }
                self.buf.reserve(1 + len - self.buf.len());
            }
            if self.up.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }
}

/// Reads a NotificationResponse frame: process id, channel, payload.
fn notification(frame: Bytes) -> Result<Notification, UpstreamError> {
    let bad = || UpstreamError::from(ProtocolError::Malformed("NotificationResponse"));
    let mut body = frame.get(5..).ok_or_else(bad)?;
    if body.len() < 4 {
        return Err(bad());
    }
    body.advance(4);
    let mut fields = body.split(|&b| b == 0);
    let channel = fields.next().ok_or_else(bad)?;
    let payload = fields.next().ok_or_else(bad)?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
    Ok(Notification {
        channel: text(channel)?,
        payload: text(payload)?,
        frame,
    })
}

/// The error an ErrorResponse frame carries.
fn error_of(frame: &[u8]) -> UpstreamError {
    let mut buf = BytesMut::from(frame);
    match Message::parse(&mut buf) {
        Ok(Some(Message::ErrorResponse(body))) => refused(&body),
        _ => ProtocolError::Malformed("ErrorResponse").into(),
    }
}
