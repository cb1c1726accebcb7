//! A few plain HTTP/1.1 requests to the proxy's admin endpoint, written by hand so tests see
//! exactly what goes over the wire (and can send what no well-behaved client would).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response: status code, `Content-Type`, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` on `addr`, with `Connection: close`; panics if nothing sensible comes back in
/// 10 s.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: pglease\r\nConnection: close\r\n\r\n");
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange(addr, request.as_bytes()))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer in 10s"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    parse(&raw).unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {raw:?}"))
}

/// Sends `request` and reads until the server closes.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn parse(raw: &str) -> Option<Reply> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Some(Reply {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// The value of the sample `series` (name with its labels, as the text format writes it) in
/// a `/metrics` body.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
