//! What the proxy itself runs on an upstream between clients: rolling back what a vanished
//! client left open, the reset query before reuse, and cancelling a query nobody waits for.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{CancelTarget, Upstream, UpstreamError};
use crate::protocol::frame::BackendScanner;

/// Runs `sql` as a simple query, discards its results, and returns the transaction status of
/// the ReadyForQuery that ends it. On any failure the connection is marked broken.
pub async fn run_simple(
    up: &mut Upstream,
    sql: &str,
    timeout: Duration,
) -> Result<u8, UpstreamError> {
    let result = tokio::time::timeout(timeout, run_simple_inner(up, sql)).await;
    let status = match result {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout),
    };
    if status.is_err() {
        up.broken = true;
    }
    status
}

async fn run_simple_inner(up: &mut Upstream, sql: &str) -> Result<u8, UpstreamError> {
    let mut buf = BytesMut::with_capacity(512);
    frontend::query(sql, &mut buf)?;
    up.stream.write_all(&buf).await?;
    up.stream.flush().await?;
    buf.clear();
    let mut scan = BackendScanner::default();
    loop {
        if up.stream.read_buf(&mut buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
        if let Some(status) = scan.scan(&buf)? {
            if scan.forwardable() != buf.len() {
                // Bytes after the reply that ends our own query: state unknown.
                return Err(UpstreamError::Closed);
            }
            return Ok(status);
        }
        let done = scan.forwardable();
        bytes::Buf::advance(&mut buf, done);
        scan.consumed(done);
    }
}

/// Bound on forwarding one cancel request (connect, write, and seeing PostgreSQL close).
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How far a cancel request got. It decides whether the upstream may serve anyone else: until
/// PostgreSQL has acted on the request, it may still interrupt whatever runs there next.
#[derive(Debug)]
pub enum CancelSent {
    /// PostgreSQL read the request and closed the connection. Its postmaster signals the
    /// backend before closing, so the signal is already pending there: it interrupts the
    /// query running now, or, if the backend is idle, is dropped before the next command.
    Acted,
    /// The request never reached PostgreSQL (connecting failed): nothing can come of it.
    NotSent(std::io::Error),
    /// The request may have reached PostgreSQL, but its closing was not seen within
    /// [`CANCEL_TIMEOUT`]: it may still act on it at any later moment.
    Unconfirmed,
}

/// Asks PostgreSQL to cancel whatever `target` is running, and waits (at most
/// [`CANCEL_TIMEOUT`]) until PostgreSQL has acted on the request, as libpq's `PQcancel` does.
pub async fn cancel(target: CancelTarget) -> CancelSent {
    let mut buf = BytesMut::with_capacity(16);
    frontend::cancel_request(target.pid, target.secret, &mut buf);
    let deadline = tokio::time::Instant::now() + CANCEL_TIMEOUT;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(target.addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return CancelSent::NotSent(e),
        Err(_) => {
            return CancelSent::NotSent(std::io::ErrorKind::TimedOut.into());
        }
    };
    if stream.write_all(&buf).await.is_err() {
        return CancelSent::Unconfirmed;
    }
    // PostgreSQL sends nothing back: its end of file is the only sign the request was read.
    let mut sink = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
        Ok(Ok(0)) => CancelSent::Acted,
        _ => CancelSent::Unconfirmed,
    }
}
