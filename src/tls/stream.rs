//! A socket that is plain TCP or TLS over TCP, for either side of the relay.
//!
//! # Design
//!
//! An enum rather than a generic: the pool, the relay and the session code keep one concrete
//! type, and the plaintext arm runs exactly the readiness-based fast path the relay always had
//! (`poll_read_ready` + `try_io`, no intermediate buffer). The TLS arm goes through
//! tokio-rustls. rustls may keep encrypted bytes after a write returns, so whoever writes
//! through [`Stream`] must flush: the relay calls [`Stream::poll_flush_tls`] on every pass,
//! and the `AsyncWrite` users (`write_all`) call `flush()` after their request.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;
use tokio_rustls::rustls;

/// Plain TCP, or TLS (client or server side) over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Unencrypted.
    Plain(TcpStream),
    /// Encrypted; boxed because rustls' connection state is large.
    Tls(Box<TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Self {
        Stream::Plain(tcp)
    }
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// True when the bytes on the wire are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The DER certificate the peer presented (for SCRAM's `tls-server-end-point`).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let certs = tls.get_ref().1.peer_certificates()?;
        certs.first().map(|c| c.as_ref())
    }

    /// Writes `bytes` without waiting, as far as the socket takes them now: for a goodbye
    /// from a `Drop`, where nothing can be awaited. Under TLS they are encrypted first.
    pub fn send_now(&mut self, bytes: &[u8]) {
        match self {
            Stream::Plain(tcp) => {
                let _ = tcp.try_write(bytes);
            }
            Stream::Tls(tls) => match &mut **tls {
                TlsStream::Client(c) => {
                    let (tcp, conn) = c.get_mut();
                    encrypt_now(tcp, conn, bytes);
                }
                TlsStream::Server(s) => {
                    let (tcp, conn) = s.get_mut();
                    encrypt_now(tcp, conn, bytes);
                }
            },
        }
    }

    /// Reads whatever is available into `buf` without waiting for more; 0 means end of stream.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(tcp) => poll_read_tcp(tcp, buf, cx),
            Stream::Tls(tls) => tokio_util::io::poll_read_buf(Pin::new(tls), cx, buf),
        }
    }

    /// Writes as much of `data` as the stream takes now. Under TLS, pair with
    /// [`Stream::poll_flush_tls`].
    pub fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(tcp) => poll_write_tcp(tcp, data, cx),
            Stream::Tls(tls) => {
                let n = ready!(Pin::new(&mut **tls).poll_write(cx, data))?;
                // Pushes the records out now; what the socket does not take yet is pushed
                // by the relay's next `poll_flush_tls`.
                if let Poll::Ready(Err(e)) = Pin::new(&mut **tls).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    /// Sends encrypted bytes rustls still holds; always ready for plain TCP.
    pub fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }
}

fn encrypt_now<D>(tcp: &TcpStream, conn: &mut rustls::ConnectionCommon<D>, bytes: &[u8]) {
    if conn.writer().write_all(bytes).is_err() {
        return;
    }
    let mut socket = NonBlocking(tcp);
    while conn.wants_write() {
        if !matches!(conn.write_tls(&mut socket), Ok(n) if n > 0) {
            return;
        }
    }
}

/// `std::io::Write` over a tokio socket that never waits (WouldBlock is an error).
struct NonBlocking<'a>(&'a TcpStream);

impl io::Write for NonBlocking<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.try_write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads whatever the socket has into `buf` without waiting for more.
pub fn poll_read_tcp(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
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
pub fn poll_write_tcp(
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// What the relay needs of each side: non-blocking reads into its buffer, writes of what it
/// has, and a flush of bytes a TLS layer still holds. Implemented for bare TCP (the fast
/// path, unchanged) and for [`Stream`], so either side of a relay can be encrypted.
pub trait RelayIo {
    /// Reads whatever is available into `buf` (which has spare capacity); 0 is end of stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;
    /// Writes as much of `data` as the stream takes now.
    fn poll_write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>>;
    /// Sends bytes an encryption layer holds; ready at once when there is none.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl RelayIo for TcpStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_tcp(self, buf, cx)
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        poll_write_tcp(self, data, cx)
    }

    fn poll_flush_tls(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl RelayIo for Stream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        Stream::poll_read_into(self, cx, buf)
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Stream::poll_write_from(self, cx, data)
    }

    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_flush_tls(self, cx)
    }
}
