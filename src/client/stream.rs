//! The client's connection: plain TCP or TLS over TCP.
//!
//! An enum, not a trait object: the plaintext arm keeps the relay's readiness-based TCP reads
//! and writes exactly as they were (one `match` per call, no boxing, no dynamic dispatch),
//! and only the TLS arm goes through tokio-rustls' `AsyncRead`/`AsyncWrite`. The TLS state is
//! boxed once per connection because it is large and would otherwise bloat every plaintext
//! client's stream too.
//!
//! The readiness-based socket reads and writes the relay uses for plain TCP (both legs) live
//! here too.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::relay::READ_CHUNK;

/// A client connection after the SSLRequest exchange.
pub enum ClientStream {
    /// No encryption.
    Plain(TcpStream),
    /// TLS, with what channel binding needs of the certificate it was shown.
    Tls(Box<TlsClient>),
}

/// A client that negotiated TLS.
pub struct TlsClient {
    /// The encrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// `tls-server-end-point` data of the certificate this client was served.
    pub end_point: Option<Arc<[u8]>>,
}

impl ClientStream {
    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The channel-binding data to offer SCRAM-SHA-256-PLUS with, over TLS only.
    pub fn end_point(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(t) => t.end_point.as_deref(),
            ClientStream::Plain(_) => None,
        }
    }

    /// Reads what is available into `buf`'s spare capacity without waiting for more
    /// (the relay's read step).
    pub fn poll_read_into(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            ClientStream::Plain(tcp) => poll_read(tcp, buf, cx),
            ClientStream::Tls(t) => {
                reserve_chunk(buf);
                tokio_util::io::poll_read_buf(Pin::new(&mut t.stream), cx, buf)
            }
        }
    }

    /// Writes as much of `data` as the connection takes now (the relay's write step).
    pub fn poll_write_from(
        &mut self,
        data: &[u8],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            ClientStream::Plain(tcp) => poll_write(tcp, data, cx),
            ClientStream::Tls(t) => {
                // Records rustls still holds go first, so its buffer stays bounded.
                ready!(Pin::new(&mut t.stream).poll_flush(cx))?;
                Pin::new(&mut t.stream).poll_write(cx, data)
            }
        }
    }

    /// Pushes out TLS records rustls accepted but the socket did not take yet; plain TCP has
    /// none. Pending registers for the socket's writability.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ClientStream::Plain(_) => Poll::Ready(Ok(())),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_flush(cx),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_shutdown(cx),
        }
    }
}

/// Makes room for a read of up to a chunk.
pub(crate) fn reserve_chunk(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        // Reclaims the consumed front of the same allocation when it can.
        buf.reserve(READ_CHUNK);
    }
}

/// Reads whatever the socket has into `buf` without waiting for more.
pub(crate) fn poll_read(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    reserve_chunk(buf);
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let space = buf.capacity() - buf.len();
        let mut drained = None;
        // A read that does not fill the buffer emptied the socket, so its readiness is
        // cleared right away (by answering WouldBlock to `try_io`): the next poll waits for
        // the next event instead of spending a syscall to learn there is nothing to read.
        let read = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            if n > 0 && n < space {
                drained = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, drained) {
            (_, Some(n)) => return Poll::Ready(Ok(n)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (other, None) => return Poll::Ready(other),
        }
    }
}

/// Writes as much of `data` as the socket takes now.
pub(crate) fn poll_write(
    stream: &TcpStream,
    data: &[u8],
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}
