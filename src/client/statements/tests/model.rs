//! A small model of a PostgreSQL session's extended protocol, and the client and upstream
//! the tests drive through the rewrite.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::super::*;
use crate::protocol::backend::{self, Severity};
use crate::protocol::extended::{Bind, Kind, Parse, Target};
use crate::protocol::frame::header;

/// A PostgreSQL session as far as statements go. Execute answers with one DataRow holding the
/// text of the statement that ran, so a test sees whose SQL ran.
#[derive(Default)]
pub struct Pg {
    pub statements: HashMap<Vec<u8>, Vec<u8>>,
    pub unnamed: Option<Vec<u8>>,
    pub portals: HashMap<Vec<u8>, Vec<u8>>,
    pub skipping: bool,
    /// Texts whose Parse fails (a syntax error, a dropped table).
    pub failing: Vec<Vec<u8>>,
    /// Every message received, by tag.
    pub received: Vec<u8>,
}

pub fn reply(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

pub fn error(out: &mut BytesMut, code: &str, msg: String) {
    backend::error_response(out, Severity::Error, code, &msg);
}

pub fn quoted(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Pg {
    pub fn run(&mut self, bytes: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut at = 0;
        while let Some((tag, len)) = header(&bytes[at..]) {
            let body = &bytes[at + 5..at + 1 + len];
            at += 1 + len;
            self.received.push(tag);
            if tag == b'S' {
                self.skipping = false;
                self.portals.clear();
                reply(&mut out, b'Z', b"I");
                continue;
            }
            if self.skipping {
                continue;
            }
            let before = out.len();
            self.message(tag, body, &mut out);
            if out.get(before) == Some(&b'E') && tag != b'Q' {
                self.skipping = true;
            }
        }
        out
    }

    pub fn message(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) {
        match tag {
            b'P' => {
                let p = Parse::read(body).unwrap();
                if self.failing.iter().any(|f| f == p.query) {
                    return error(out, "42601", "syntax error".into());
                }
                if p.name.is_empty() {
                    self.unnamed = Some(p.query.to_vec());
                } else if self.statements.contains_key(p.name) {
                    return error(
                        out,
                        "42P05",
                        format!("prepared statement \"{}\" already exists", quoted(p.name)),
                    );
                } else {
                    self.statements.insert(p.name.to_vec(), p.query.to_vec());
                }
                reply(out, b'1', b"");
            }
            b'B' => {
                let b = Bind::read(body).unwrap();
                if let Some(text) = self.statement(b.statement, out) {
                    self.portals.insert(b.portal.to_vec(), text);
                    reply(out, b'2', b"");
                }
            }
            b'D' => match Target::read(body).unwrap() {
                Target {
                    kind: Kind::Statement,
                    name,
                } => {
                    if let Some(text) = self.statement(name, out) {
                        reply(out, b't', b"\0\0");
                        reply(out, b'T', &text);
                    }
                }
                Target { name, .. } => match self.portals.get(name) {
                    Some(text) => reply(out, b'T', &text.clone()),
                    None => error(
                        out,
                        "34000",
                        format!("portal \"{}\" does not exist", quoted(name)),
                    ),
                },
            },
            b'C' => {
                let t = Target::read(body).unwrap();
                match (t.kind, t.name) {
                    (Kind::Statement, []) => self.unnamed = None,
                    (Kind::Statement, name) => drop(self.statements.remove(name)),
                    (Kind::Portal, name) => drop(self.portals.remove(name)),
                }
                reply(out, b'3', b"");
            }
            b'E' => {
                let portal = &body[..body.iter().position(|&b| b == 0).unwrap()];
                match self.portals.get(portal) {
                    Some(text) => {
                        reply(out, b'D', &text.clone());
                        reply(out, b'C', b"SELECT 1\0");
                    }
                    None => error(out, "34000", "portal does not exist".into()),
                }
            }
            b'Q' => {
                self.unnamed = None;
                let text = &body[..body.len() - 1];
                if text.starts_with(b"pglease refused") {
                    error(out, "42601", "syntax error at or near \"pglease\"".into());
                } else {
                    if text.eq_ignore_ascii_case(b"discard all") {
                        self.statements.clear();
                    }
                    reply(out, b'C', b"OK\0");
                }
                reply(out, b'Z', b"I");
            }
            _ => {}
        }
    }

    pub fn statement(&self, name: &[u8], out: &mut BytesMut) -> Option<Vec<u8>> {
        let found = if name.is_empty() {
            self.unnamed.clone()
        } else {
            self.statements.get(name).cloned()
        };
        if found.is_none() {
            let msg = if name.is_empty() {
                "unnamed prepared statement does not exist".to_string()
            } else {
                format!("prepared statement \"{}\" does not exist", quoted(name))
            };
            error(out, "26000", msg);
        }
        found
    }
}

/// A client of the proxy, its upstreams, and the PostgreSQL session each upstream is.
pub struct Client {
    pub statements: ClientStatements,
    /// A PostgreSQL session of the client's own: what it would hear without the proxy.
    pub direct: Pg,
}

impl Client {
    pub fn new() -> Self {
        Client {
            statements: ClientStatements::new(),
            direct: Pg::default(),
        }
    }

    /// Sends `request` through the proxy to `up`, returning what the client hears, after
    /// checking that it is what its own session would have said.
    pub fn send(&mut self, up: &mut Upstream, request: &[u8]) -> BytesMut {
        self.exchange(up, request).0
    }

    /// As [`Client::send`], also returning what went upstream.
    pub fn exchange(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
        let (heard, sent) = self.exchange_only(up, request);
        let expected = self.direct.run(request);
        assert_eq!(
            frames(&heard),
            frames(&expected),
            "through the proxy vs direct"
        );
        (heard, sent)
    }

    /// Through the proxy only, for what a session of its own would answer differently.
    pub fn send_only(&mut self, up: &mut Upstream, request: &[u8]) -> BytesMut {
        self.exchange_only(up, request).0
    }

    pub fn exchange_only(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
        let (mut heard, sent) = self.rewrite(up, request);
        let replies = up.pg.run(&sent);
        up.filter(&replies, &mut heard);
        if matches!(frames(request).last(), Some(('S' | 'Q', _))) {
            assert!(up.state.idle(), "every reply accounted for");
        }
        (heard, sent)
    }

    /// Rewrites `request` for `up`: what the client hears at once, and what goes upstream.
    pub fn rewrite(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
        let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
        let changed = self
            .statements
            .rewrite(request, b'I', &mut up.state, &mut out, &mut heard)
            .unwrap();
        let sent = if changed {
            out
        } else {
            assert!(out.is_empty());
            BytesMut::from(request)
        };
        (heard, sent)
    }
}

pub struct Upstream {
    pub state: UpstreamStatements,
    pub pg: Pg,
}

impl Upstream {
    pub fn new(max: usize) -> Self {
        Upstream {
            state: UpstreamStatements::new(max),
            pg: Pg::default(),
        }
    }

    pub fn filter(&mut self, replies: &[u8], heard: &mut BytesMut) {
        let mut at = 0;
        while let Some((tag, len)) = header(&replies[at..]) {
            let frame = &replies[at..at + 1 + len];
            at += 1 + len;
            let mut after = BytesMut::new();
            if self.state.on_reply(tag, &mut after).unwrap() == Verdict::Forward {
                heard.extend_from_slice(frame);
            }
            heard.extend_from_slice(&after);
        }
    }
}

/// Frames as (tag, body) for readable comparisons.
pub fn frames(bytes: &[u8]) -> Vec<(char, String)> {
    let mut v = Vec::new();
    let mut at = 0;
    while let Some((tag, len)) = header(&bytes[at..]) {
        v.push((
            char::from(tag),
            String::from_utf8_lossy(&bytes[at + 5..at + 1 + len]).into_owned(),
        ));
        at += 1 + len;
    }
    assert_eq!(at, bytes.len(), "whole frames");
    v
}

pub fn tags(bytes: &[u8]) -> String {
    frames(bytes).into_iter().map(|(t, _)| t).collect()
}

pub struct Req(BytesMut);

impl Req {
    pub fn new() -> Self {
        Req(BytesMut::new())
    }
    pub fn parse(mut self, name: &str, query: &str) -> Self {
        frontend::parse(name, query, [], &mut self.0).unwrap();
        self
    }
    pub fn parse_typed(mut self, name: &str, query: &str, types: &[u32]) -> Self {
        frontend::parse(name, query, types.iter().copied(), &mut self.0).unwrap();
        self
    }
    pub fn bind(mut self, portal: &str, statement: &str) -> Self {
        let no: [i16; 0] = [];
        let values: [i32; 0] = [];
        frontend::bind(
            portal,
            statement,
            no,
            values,
            |_: i32, _| Ok(postgres_protocol::IsNull::No),
            no,
            &mut self.0,
        )
        .map_err(|_| ())
        .unwrap();
        self
    }
    pub fn describe(mut self, kind: u8, name: &str) -> Self {
        frontend::describe(kind, name, &mut self.0).unwrap();
        self
    }
    pub fn close(mut self, kind: u8, name: &str) -> Self {
        frontend::close(kind, name, &mut self.0).unwrap();
        self
    }
    pub fn execute(mut self, portal: &str) -> Self {
        frontend::execute(portal, 0, &mut self.0).unwrap();
        self
    }
    pub fn sync(mut self) -> BytesMut {
        frontend::sync(&mut self.0);
        self.0
    }
    pub fn flush(mut self) -> BytesMut {
        frontend::flush(&mut self.0);
        self.0
    }
    pub fn query(mut self, text: &str) -> BytesMut {
        frontend::query(text, &mut self.0).unwrap();
        self.0
    }
}

/// The DataRow bodies a client heard: the texts of the statements that ran.
pub fn ran(heard: &[u8]) -> Vec<String> {
    frames(heard)
        .into_iter()
        .filter(|(t, _)| *t == 'D')
        .map(|(_, b)| b)
        .collect()
}

pub fn name_of(query: &str) -> String {
    StatementId::of(query.as_bytes(), b"")
        .upstream_name()
        .as_str()
        .to_string()
}
