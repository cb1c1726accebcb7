//! Tests of the Vault HTTP client: status mapping, messages, scrubbing, and the request and
//! response handling against a raw TCP peer that answers with canned bytes.

use super::*;

fn status(code: u16, errors: &[&str]) -> CallError {
    CallError::Status {
        request: "GET /v1/database/creds/app".into(),
        status: StatusCode::from_u16(code).unwrap(),
        errors: errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn statuses_map_to_retry_or_refusal() {
    let cases = [
        (403, false),
        (400, false),
        (404, false),
        (429, true),
        (500, true),
        (503, true),
    ];
    for (code, retry) in cases {
        let mapped = SourceError::from(status(code, &["x"]));
        assert_eq!(
            matches!(mapped, SourceError::Unreachable(_)),
            retry,
            "{code}"
        );
        assert_eq!(matches!(mapped, SourceError::Rejected(_)), !retry, "{code}");
    }
    let malformed = CallError::Malformed {
        request: "GET /v1/x".into(),
        detail: "response has no `data`".into(),
    };
    assert!(matches!(
        SourceError::from(malformed),
        SourceError::Rejected(_)
    ));
    let transport = CallError::Transport {
        request: "GET /v1/x".into(),
        detail: "connection refused".into(),
    };
    assert!(matches!(
        SourceError::from(transport),
        SourceError::Unreachable(_)
    ));
}

#[test]
fn messages_name_request_status_and_vault_errors() {
    let e = status(403, &["permission denied"]);
    assert!(e.is_permission_denied());
    assert_eq!(
        SourceError::from(e).to_string(),
        "credential source refused: vault GET /v1/database/creds/app: HTTP 403 Forbidden: permission denied"
    );
    let sealed = status(503, &["Vault is sealed"]);
    assert!(!sealed.is_permission_denied());
    assert_eq!(
        sealed.to_string(),
        "vault GET /v1/database/creds/app: HTTP 503 Service Unavailable: Vault is sealed"
    );
    assert_eq!(
        status(502, &[]).to_string(),
        "vault GET /v1/database/creds/app: HTTP 502 Bad Gateway"
    );
}

#[test]
fn scrubbing_removes_every_secret() {
    let token = Secret::from("hvs.TOPSECRET");
    let sid = Secret::from("sid-1");
    let empty = Secret::from("");
    let text = "token hvs.TOPSECRET and sid-1, hvs.TOPSECRET again";
    assert_eq!(
        scrubbed(text, &[&token, &sid, &empty]),
        "token *** and ***, *** again"
    );
}

/// Serves one connection: reads the request head, answers `response`, returns the head.
async fn one_answer(response: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
        String::from_utf8_lossy(&head).into_owned()
    });
    (address, task)
}

fn client(address: &str, namespace: Option<&str>) -> VaultClient {
    VaultClient::new(&VaultConfig {
        address: format!("{address}/"),
        mount: "database".into(),
        role: "app".into(),
        kind: crate::config::VaultKind::Dynamic,
        namespace: namespace.map(str::to_owned),
        ca_file: None,
        auth: crate::config::VaultAuth::Token {
            token: Secret::from("unused"),
            token_file: None,
        },
    })
    .unwrap()
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn requests_carry_token_and_namespace_and_answers_parse() {
    let (address, peer) = one_answer(http("200 OK", r#"{"data":{"ttl":5}}"#)).await;
    let token = Secret::from("hvs.header-token");
    let reply = client(&address, Some("team-a"))
        .call(
            Method::GET,
            "auth/token/lookup-self",
            None,
            Some(&token),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.unwrap()["data"]["ttl"], 5);
    let head = peer.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /v1/auth/token/lookup-self http/1.1"),
        "{head}"
    );
    assert!(head.contains("x-vault-token: hvs.header-token"), "{head}");
    assert!(head.contains("x-vault-namespace: team-a"), "{head}");

    let (address, _) = one_answer(http("204 No Content", "")).await;
    let reply = client(&address, None)
        .call(Method::PUT, "sys/leases/revoke", None, Some(&token), &[])
        .await
        .unwrap();
    assert!(reply.is_none());
}

#[tokio::test]
async fn error_answers_are_scrubbed_and_oversized_ones_refused() {
    let body =
        r#"{"errors":["token hvs.echoed-back is not valid for sid-7"],"data":{"password":"pw"}}"#;
    let (address, _) = one_answer(http("400 Bad Request", body)).await;
    let token = Secret::from("hvs.echoed-back");
    let sid = Secret::from("sid-7");
    let err = client(&address, None)
        .call(
            Method::POST,
            "auth/approle/login",
            None,
            Some(&token),
            &[&sid],
        )
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "vault POST /v1/auth/approle/login: HTTP 400 Bad Request: token *** is not valid for ***"
    );

    let huge = format!(r#"{{"data":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let (address, _) = one_answer(http("200 OK", &huge)).await;
    let err = client(&address, None)
        .call(Method::GET, "database/creds/app", None, None, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");

    // No length announced: the cap applies while reading.
    let mut unannounced = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    unannounced.extend(huge.as_bytes());
    let (address, _) = one_answer(unannounced).await;
    let err = client(&address, None)
        .call(Method::GET, "database/creds/app", None, None, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");

    let (address, _) = one_answer(http("200 OK", "<html>")).await;
    let err = client(&address, None)
        .call(Method::GET, "database/creds/app", None, None, &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vault GET /v1/database/creds/app: response is not JSON (line 1, column 1)"
    );
}

#[test]
fn only_plain_http_off_this_host_is_flagged() {
    for quiet in [
        "https://vault.example.com:8200",
        "http://127.0.0.1:8200",
        "http://127.3.4.5",
        "http://127.1:8200",
        "http://[::1]:8200/",
        "http://localhost:8200",
        "http://LOCALHOST.",
        "HTTPS://10.0.0.5",
    ] {
        assert_eq!(plaintext_remote_host(quiet), None, "{quiet}");
    }
    for (loud, host) in [
        ("http://vault.example.com:8200", "vault.example.com"),
        ("http://10.0.0.5:8200", "10.0.0.5"),
        ("http://128.0.0.1", "128.0.0.1"),
        ("http://[2001:db8::1]:8200", "[2001:db8::1]"),
        ("http://[::ffff:10.0.0.1]", "[::ffff:a00:1]"),
        ("http://localhost.example.com", "localhost.example.com"),
        ("HTTP://Vault:8200", "vault"),
    ] {
        assert_eq!(plaintext_remote_host(loud).as_deref(), Some(host), "{loud}");
    }
}

#[tokio::test]
async fn a_redirect_is_refused_with_its_status_and_target_but_never_followed() {
    // A second peer that would answer, and record, a followed redirect.
    let (elsewhere, followed) = one_answer(http("200 OK", r#"{"data":{"ttl":5}}"#)).await;
    let head = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/v1/database/creds/app?x=1\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (address, _) = one_answer(head.into_bytes()).await;
    let token = Secret::from("hvs.must-stay-home");
    let err = client(&address, None)
        .call(Method::GET, "database/creds/app", None, Some(&token), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Redirect { .. }), "{err}");
    let text = SourceError::from(err).to_string();
    assert!(text.starts_with("credential source refused: "), "{text}");
    assert!(text.contains("HTTP 307 Temporary Redirect"), "{text}");
    assert!(text.contains(&format!("to {elsewhere}:")), "{text}");
    assert!(!text.contains("x=1") && !text.contains("hvs."), "{text}");
    // Nothing reached the other peer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!followed.is_finished());
    followed.abort();
}
