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

/// Asks PostgreSQL to cancel whatever `target` is running. Best effort: a failure only means
/// the query runs to its end on a connection that is being closed anyway.
pub async fn cancel(target: CancelTarget) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16);
    frontend::cancel_request(target.pid, target.secret, &mut buf);
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.write_all(&buf).await?;
    // PostgreSQL closes the connection after reading the request; wait for that so the
    // request is not lost in a reset.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}
