//! Redirects are refused: reqwest would resend `X-Vault-Token` to wherever a `Location` points.

use super::*;

/// A listener that answers every request `503` and records whether it carried a Vault token.
async fn token_recorder() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (requests, with_token) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (seen, tokens) = (requests.clone(), with_token.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.fetch_add(1, Ordering::Relaxed);
            if String::from_utf8_lossy(&head)
                .to_ascii_lowercase()
                .contains("x-vault-token:")
            {
                tokens.fetch_add(1, Ordering::Relaxed);
            }
            let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (address, requests, with_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_refused_and_the_token_stays_home() {
    let db = fresh_db("vredir").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let token = vault.issue_token(TokenSpec::forever());
    let (elsewhere, requests, with_token) = token_recorder().await;
    // A standby with request forwarding off sends every request to the active node.
    vault.set_mode(Mode::Redirect(elsewhere.clone())).await;
    let source = source(&source_config(&vault, "app", token_auth(&token)));
    match source.acquire().await {
        Err(SourceError::Rejected(msg)) => {
            assert!(msg.contains("HTTP 307 Temporary Redirect"), "{msg}");
            assert!(msg.contains(&elsewhere), "{msg}");
            assert!(!msg.contains(&token), "token leaked: {msg}");
        }
        other => panic!("expected a refusal naming the redirect, got {other:?}"),
    }
    assert_eq!(
        with_token.load(Ordering::Relaxed),
        0,
        "the token was sent elsewhere"
    );
    assert_eq!(
        requests.load(Ordering::Relaxed),
        0,
        "the redirect was followed"
    );
    assert_eq!(vault.requests().len(), 1, "{:?}", vault.requests());
}
