//! A bare protocol client for the contract tests: it sees every message pglease sends, also
//! after the first FATAL, where drivers stop reading.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection that logs in with md5 and reads messages one by one.
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    /// The ParameterStatus values of the greeting, as (name, value).
    pub params: Vec<(String, String)>,
}

impl Wire {
    pub async fn login(addr: SocketAddr, user: &str, password: &str, db: &str) -> Wire {
        Wire::try_login(addr, &[("user", user), ("database", db)], password)
            .await
            .unwrap_or_else(|(_, code, message)| panic!("login refused: {code} {message}"))
    }

    /// Logs in with startup parameters `params` (`user` among them); a refusal is returned as
    /// (severity, SQLSTATE, message).
    pub async fn try_login(
        addr: SocketAddr,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<Wire, (String, String, String)> {
        let user = params
            .iter()
            .find(|(k, _)| *k == "user")
            .map_or("", |(_, v)| *v);
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).unwrap();
        let mut wire = Wire {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            params: Vec::new(),
        };
        wire.stream.write_all(&out).await.unwrap();
        loop {
            match wire.next().await.expect("login reply") {
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    out.clear();
                    frontend::password_message(hash.as_bytes(), &mut out).unwrap();
                    wire.stream.write_all(&out).await.unwrap();
                }
                Message::ErrorResponse(body) => {
                    let (severity, code) = severity_and_code(&body);
                    let mut fields = body.fields();
                    let mut message = String::new();
                    while let Some(f) = fields.next().unwrap() {
                        if f.type_() == b'M' {
                            message = String::from_utf8_lossy(f.value_bytes()).into_owned();
                        }
                    }
                    return Err((severity, code, message));
                }
                Message::ParameterStatus(body) => {
                    let (name, value) = (body.name().unwrap(), body.value().unwrap());
                    wire.params.push((name.to_owned(), value.to_owned()));
                }
                Message::ReadyForQuery(_) => return Ok(wire),
                _ => {}
            }
        }
    }

    /// Writes raw frontend messages.
    #[allow(dead_code)]
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next message, or `None` at end of file.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).unwrap() {
                return Some(message);
            }
            let read = self.stream.read_buf(&mut self.buf);
            let n = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("pglease answered within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Sends a simple query and reads through its ReadyForQuery.
    pub async fn query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
        loop {
            match self.next().await.expect("a reply") {
                Message::ErrorResponse(_) => panic!("{sql} failed"),
                Message::ReadyForQuery(_) => return,
                _ => {}
            }
        }
    }
}

/// The (severity, SQLSTATE) of an ErrorResponse.
pub fn severity_and_code(body: &ErrorResponseBody) -> (String, String) {
    let mut fields = body.fields();
    let (mut severity, mut code) = (String::new(), String::new());
    while let Some(field) = fields.next().expect("well-formed fields") {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => severity = value,
            b'C' => code = value,
            _ => {}
        }
    }
    (severity, code)
}
