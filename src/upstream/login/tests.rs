//! The login against a hostile or careless server on a local socket: what it may answer, and
//! what must never leave pglease.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::secret::Secret;
use crate::upstream::{UpstreamTarget, UpstreamTls, connect};

const PASSWORD: &str = "lease-password-never-in-clear";

#[test]
fn iteration_count_is_read_and_bounded() {
    assert_eq!(iterations(b"r=abc,s=c2FsdA==,i=4096"), Some(4096));
    assert_eq!(iterations(b"r=abc,s=c2FsdA=="), None);
    assert_eq!(iterations(b"r=abc,s=c2FsdA==,i=99999999999"), None);
    assert!(iterations(b"r=a,s=b,i=20000000").is_some_and(|i| i > MAX_SCRAM_ITERATIONS));
}

fn lease() -> Arc<Lease> {
    Arc::new(Lease {
        id: "t".into(),
        username: "app".into(),
        password: Secret::from(PASSWORD),
        issued_at: SystemTime::now(),
        expires_at: None,
        renewable: false,
        generation: 1,
    })
}

/// Connects to a fake server (plaintext, `disable`) running `script` on the accepted socket,
/// and returns the login's result with every byte the server received.
async fn login_against<F, Fut>(
    allow_plaintext: bool,
    script: F,
) -> (Result<(), UpstreamError>, Vec<u8>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        script(socket).await
    });
    let target = UpstreamTarget {
        host: "127.0.0.1".into(),
        port,
        dbname: "db".into(),
        application_name: "test".into(),
        connect_timeout: Duration::from_secs(10),
        database: "fake".into(),
        tls: UpstreamTls {
            allow_plaintext_password: allow_plaintext,
            ..UpstreamTls::default()
        },
    };
    let result = connect(&target, lease()).await.map(drop);
    (result, server.await.unwrap())
}

/// An authentication request: 'R', length, code, payload.
fn auth(code: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(b'R');
    out.put_i32(8 + payload.len() as i32);
    out.put_i32(code);
    out.put_slice(payload);
    out.to_vec()
}

/// Reads the startup message (untagged) and returns it.
async fn read_startup(socket: &mut TcpStream) -> Vec<u8> {
    let len = socket.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    socket.read_exact(&mut body).await.unwrap();
    body
}

/// Reads one tagged message, or nothing when the peer closed.
async fn read_message(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let tag = socket.read_u8().await.ok()?;
    let len = socket.read_i32().await.ok()? as usize;
    let mut body = vec![0; len - 4];
    socket.read_exact(&mut body).await.ok()?;
    let mut all = vec![tag];
    all.extend(body);
    Some(all)
}

/// Everything the peer sends until it closes.
async fn drain(socket: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest)).await;
    rest
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn cleartext_and_md5_requests_over_plaintext_get_nothing() {
    for (code, payload, method) in [(3, &[][..], "cleartext"), (5, &b"salt"[..], "md5")] {
        let (result, received) = login_against(false, move |mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&auth(code, payload)).await.unwrap();
            drain(&mut s).await
        })
        .await;
        match result {
            Err(UpstreamError::PlaintextPassword {
                method: m,
                database,
            }) => {
                assert_eq!((m, database.as_str()), (method, "fake"));
            }
            other => panic!("{method}: expected a refusal, got {other:?}"),
        }
        assert!(received.is_empty(), "{method}: sent {received:?}");
    }
}

#[tokio::test]
async fn the_plaintext_opt_in_answers_a_cleartext_request() {
    let (result, received) = login_against(true, |mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(3, &[])).await.unwrap();
        let answer = read_message(&mut s).await.unwrap_or_default();
        s.write_all(&auth(0, &[])).await.unwrap();
        s.write_all(b"Z\0\0\0\x05I").await.unwrap();
        answer
    })
    .await;
    result.expect("login with the opt-in");
    assert!(contains(&received, PASSWORD.as_bytes()));
}

#[tokio::test]
async fn authentication_ok_before_the_scram_signature_is_refused() {
    let (result, _) = login_against(false, |mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let first = read_message(&mut s).await.unwrap_or_default();
        s.write_all(&auth(0, &[])).await.unwrap();
        s.write_all(b"Z\0\0\0\x05I").await.unwrap();
        first
    })
    .await;
    assert!(
        matches!(result, Err(UpstreamError::ScramUnverified { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_wrong_scram_server_signature_is_refused() {
    let (result, _) = login_against(false, |mut s| async move {
        read_startup(&mut s).await;
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let first = read_message(&mut s).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&first).into_owned();
        let nonce = text.split("r=").nth(1).unwrap_or_default().to_owned();
        let server_first = format!("r={nonce}server,s=c2FsdHNhbHRzYWx0,i=4096");
        s.write_all(&auth(11, server_first.as_bytes()))
            .await
            .unwrap();
        let _final = read_message(&mut s).await;
        // A server that does not know the verifier cannot compute this.
        s.write_all(&auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
            .await
            .unwrap();
        s.write_all(&auth(0, &[])).await.unwrap();
        drain(&mut s).await
    })
    .await;
    assert!(
        matches!(result, Err(UpstreamError::ScramUnverified { .. })),
        "{result:?}"
    );
}
