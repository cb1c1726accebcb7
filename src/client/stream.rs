//! The client's connection: plain TCP or TLS over TCP ([`Stream`], the type pool
//! connections use too). The relay drives it through [`RelayIo`], whose plaintext arm is the
//! readiness-based TCP fast path. (What channel binding needs of the certificate a TLS client
//! was shown goes to the login alone: [`super::handshake::open`].)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsStream, server};

use crate::tls::stream::{RelayIo, Stream};

/// A client connection after the SSLRequest exchange.
pub struct ClientStream {
    stream: Stream,
}

impl ClientStream {
    /// A client that speaks plaintext.
    pub fn plain(tcp: TcpStream) -> Self {
        ClientStream {
            stream: Stream::Plain(tcp),
        }
    }

    /// A client that negotiated TLS.
    pub fn tls(stream: server::TlsStream<TcpStream>) -> Self {
        ClientStream {
            stream: Stream::Tls(Box::new(TlsStream::Server(stream))),
        }
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }
}

impl RelayIo for ClientStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.stream.poll_read_into(cx, buf)
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_write_from(cx, data)
    }

    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_flush_tls(cx)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
