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
}

impl Wire {
    pub async fn login(addr: SocketAddr, user: &str, password: &str, db: &str) -> Wire {
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", db)], &mut out).unwrap();
        let mut wire = Wire {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
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
                Message::ErrorResponse(_) => panic!("login refused"),
                Message::ReadyForQuery(_) => return wire,
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
