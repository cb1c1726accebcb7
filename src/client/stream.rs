//! The client's connection: plain TCP or TLS over TCP.
//!
//! An enum, not a trait object: the plaintext arm keeps the relay's readiness-based TCP reads
//! and writes exactly as they were (one `match` per call, no boxing, no dynamic dispatch),
//! and only the TLS arm goes through tokio-rustls' `AsyncRead`/`AsyncWrite`. The TLS state is
//! boxed once per connection because it is large and would otherwise bloat every plaintext
//! client's stream too.
//! The relay drives it through [`RelayIo`], whose plain-TCP reads and writes live in
//! [`crate::tls::stream`] for both legs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::stream::{RelayIo, poll_read_tcp, poll_write_tcp};

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
}

impl RelayIo for ClientStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            ClientStream::Plain(tcp) => poll_read_tcp(tcp, buf, cx),
            ClientStream::Tls(t) => tokio_util::io::poll_read_buf(Pin::new(&mut t.stream), cx, buf),
        }
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            ClientStream::Plain(tcp) => poll_write_tcp(tcp, data, cx),
            ClientStream::Tls(t) => {
                // Records rustls still holds go first, so its buffer stays bounded.
                ready!(Pin::new(&mut t.stream).poll_flush(cx))?;
                Pin::new(&mut t.stream).poll_write(cx, data)
            }
        }
    }

    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
