//! The rewrite and the reply filter against a small model of PostgreSQL's extended protocol:
//! whatever a client sends through the proxy, it must hear what a PostgreSQL session of its own
//! would have answered.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::*;
use crate::protocol::backend::{self, Severity};
use crate::protocol::extended::{Bind, Kind, Parse, Target};
use crate::protocol::frame::header;

/// A PostgreSQL session as far as statements go. Execute answers with one DataRow holding the
/// text of the statement that ran, so a test sees whose SQL ran.
#[derive(Default)]
struct Pg {
    statements: HashMap<Vec<u8>, Vec<u8>>,
    unnamed: Option<Vec<u8>>,
    portals: HashMap<Vec<u8>, Vec<u8>>,
    skipping: bool,
    /// Texts whose Parse fails (a syntax error, a dropped table).
    failing: Vec<Vec<u8>>,
    /// Every message received, by tag.
    received: Vec<u8>,
}

fn reply(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

fn error(out: &mut BytesMut, code: &str, msg: String) {
    backend::error_response(out, Severity::Error, code, &msg);
}

fn quoted(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Pg {
    fn run(&mut self, bytes: &[u8]) -> BytesMut {
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

    fn message(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) {
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

    fn statement(&self, name: &[u8], out: &mut BytesMut) -> Option<Vec<u8>> {
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
struct Client {
    statements: ClientStatements,
    /// A PostgreSQL session of the client's own: what it would hear without the proxy.
    direct: Pg,
}

impl Client {
    fn new() -> Self {
        Client {
            statements: ClientStatements::new(),
            direct: Pg::default(),
        }
    }

    /// Sends `request` through the proxy to `up`, returning what the client hears, after
    /// checking that it is what its own session would have said.
    fn send(&mut self, up: &mut Upstream, request: &[u8]) -> BytesMut {
        self.exchange(up, request).0
    }

    /// As [`Client::send`], also returning what went upstream.
    fn exchange(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
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
    fn send_only(&mut self, up: &mut Upstream, request: &[u8]) -> BytesMut {
        self.exchange_only(up, request).0
    }

    fn exchange_only(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
        let (mut heard, sent) = self.rewrite(up, request);
        let replies = up.pg.run(&sent);
        up.filter(&replies, &mut heard);
        if matches!(frames(request).last(), Some(('S' | 'Q', _))) {
            assert!(up.state.idle(), "every reply accounted for");
        }
        (heard, sent)
    }

    /// Rewrites `request` for `up`: what the client hears at once, and what goes upstream.
    fn rewrite(&mut self, up: &mut Upstream, request: &[u8]) -> (BytesMut, BytesMut) {
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

struct Upstream {
    state: UpstreamStatements,
    pg: Pg,
}

impl Upstream {
    fn new(max: usize) -> Self {
        Upstream {
            state: UpstreamStatements::new(max),
            pg: Pg::default(),
        }
    }

    fn filter(&mut self, replies: &[u8], heard: &mut BytesMut) {
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
fn frames(bytes: &[u8]) -> Vec<(char, String)> {
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

fn tags(bytes: &[u8]) -> String {
    frames(bytes).into_iter().map(|(t, _)| t).collect()
}

struct Req(BytesMut);

impl Req {
    fn new() -> Self {
        Req(BytesMut::new())
    }
    fn parse(mut self, name: &str, query: &str) -> Self {
        frontend::parse(name, query, [], &mut self.0).unwrap();
        self
    }
    fn parse_typed(mut self, name: &str, query: &str, types: &[u32]) -> Self {
        frontend::parse(name, query, types.iter().copied(), &mut self.0).unwrap();
        self
    }
    fn bind(mut self, portal: &str, statement: &str) -> Self {
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
    fn describe(mut self, kind: u8, name: &str) -> Self {
        frontend::describe(kind, name, &mut self.0).unwrap();
        self
    }
    fn close(mut self, kind: u8, name: &str) -> Self {
        frontend::close(kind, name, &mut self.0).unwrap();
        self
    }
    fn execute(mut self, portal: &str) -> Self {
        frontend::execute(portal, 0, &mut self.0).unwrap();
        self
    }
    fn sync(mut self) -> BytesMut {
        frontend::sync(&mut self.0);
        self.0
    }
    fn flush(mut self) -> BytesMut {
        frontend::flush(&mut self.0);
        self.0
    }
    fn query(mut self, text: &str) -> BytesMut {
        frontend::query(text, &mut self.0).unwrap();
        self.0
    }
}

/// The DataRow bodies a client heard: the texts of the statements that ran.
fn ran(heard: &[u8]) -> Vec<String> {
    frames(heard)
        .into_iter()
        .filter(|(t, _)| *t == 'D')
        .map(|(_, b)| b)
        .collect()
}

fn name_of(query: &str) -> String {
    StatementId::of(query.as_bytes(), b"")
        .upstream_name()
        .as_str()
        .to_string()
}

#[test]
fn a_named_statement_is_renamed_and_reused_across_upstreams() {
    let mut c = Client::new();
    let (mut one, mut two) = (Upstream::new(10), Upstream::new(10));
    let heard = c.send(&mut one, &Req::new().parse("S_1", "select 1").sync());
    assert_eq!(tags(&heard), "1Z");
    let name = name_of("select 1");
    assert!(one.pg.statements.contains_key(name.as_bytes()));
    assert!(!one.pg.statements.contains_key(&b"S_1"[..]));

    // The next transaction lands on another upstream: the statement is prepared there first,
    // its replies hidden.
    let run = Req::new().bind("", "S_1").execute("").sync();
    let (_, sent) = c.rewrite(&mut two, &run);
    assert_eq!(
        frames(&sent)[..3],
        [
            ('C', format!("S{name}\0")),
            ('P', format!("{name}\0select 1\0\0\0")),
            ('B', format!("\0{name}\0\0\0\0\0\0\0")),
        ]
    );
    two.state = UpstreamStatements::new(10);
    let heard = c.send(&mut two, &run);
    assert_eq!(tags(&heard), "2DCZ");
    assert_eq!(ran(&heard), ["select 1"]);
    // Back on the first upstream, nothing needs preparing.
    let (_, sent) = c.rewrite(&mut one, &run);
    assert_eq!(tags(&sent), "BES");
}

#[test]
fn two_clients_with_one_name_for_different_sql_never_collide() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("S_1", "select 'a'").sync());
    b.send(&mut up, &Req::new().parse("S_1", "select 'b'").sync());
    let run = Req::new().bind("", "S_1").execute("").sync();
    assert_eq!(ran(&a.send(&mut up, &run)), ["select 'a'"]);
    assert_eq!(ran(&b.send(&mut up, &run)), ["select 'b'"]);
    assert_eq!(up.state.len(), 2);
}

#[test]
fn identical_sql_from_two_clients_shares_one_upstream_statement() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("a1", "select 42").sync());
    let (heard, sent) = b.rewrite(&mut up, &Req::new().parse("b7", "select 42").sync());
    // The Parse is answered by the proxy, the upstream only sees the Sync.
    assert_eq!((tags(&heard), tags(&sent)), ("1".into(), "S".into()));
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("a1", "select 42").sync());
    b.send(&mut up, &Req::new().parse("b7", "select 42").sync());
    assert_eq!(up.pg.statements.len(), 1);
    let run = |n| Req::new().bind("", n).execute("").sync();
    assert_eq!(ran(&b.send(&mut up, &run("b7"))), ["select 42"]);
    // Different parameter types are a different statement.
    b.send(
        &mut up,
        &Req::new().parse_typed("b8", "select 42", &[23]).sync(),
    );
    assert_eq!(up.pg.statements.len(), 2);
}

#[test]
fn a_full_upstream_closes_its_least_recently_used_statement() {
    let mut c = Client::new();
    let mut up = Upstream::new(2);
    for (n, q) in [("s1", "select 1"), ("s2", "select 2")] {
        c.send(&mut up, &Req::new().parse(n, q).sync());
    }
    let run = |n| Req::new().bind("", n).execute("").sync();
    c.send(&mut up, &run("s1"));
    let (_, sent) = c.rewrite(
        &mut Upstream::new(2),
        &Req::new().parse("s3", "select 3").sync(),
    );
    assert_eq!(
        tags(&sent),
        "CPS",
        "a fresh upstream closes nothing but the name it prepares"
    );
    let heard = c.send(&mut up, &Req::new().parse("s3", "select 3").sync());
    assert_eq!(tags(&heard), "1Z", "the eviction's CloseComplete is hidden");
    assert_eq!(up.pg.statements.len(), 2);
    assert!(
        !up.pg
            .statements
            .contains_key(name_of("select 2").as_bytes())
    );
    assert!(
        up.pg
            .statements
            .contains_key(name_of("select 1").as_bytes())
    );
    // The evicted statement is prepared again when it is used.
    assert_eq!(ran(&c.send(&mut up, &run("s2"))), ["select 2"]);
    assert_eq!(up.pg.statements.len(), 2);
    assert_eq!(up.state.len(), 2);
}

#[test]
fn unnamed_statements_and_portals_pass_without_a_copy() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let request = Req::new()
        .parse("", "select 1")
        .bind("p", "")
        .describe(b'P', "p")
        .execute("p")
        .close(b'P', "p")
        .sync();
    let (heard, sent) = c.rewrite(&mut up, &request);
    assert!(heard.is_empty());
    assert_eq!(sent, request, "sent as it came");
    let heard = c.send(&mut Upstream::new(10), &request);
    assert_eq!(tags(&heard), "12TDC3Z");
}

#[test]
fn describe_of_a_portal_is_untouched_and_of_a_statement_renamed() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 5").sync());
    let request = Req::new()
        .describe(b'S', "s")
        .bind("p", "s")
        .describe(b'P', "p")
        .sync();
    let (heard, sent) = c.exchange(&mut up, &request);
    let f = frames(&sent);
    assert_eq!(f[0], ('D', format!("S{}\0", name_of("select 5"))));
    assert_eq!(f[2], ('D', "Pp\0".into()));
    assert_eq!(tags(&heard), "tT2TZ");
}

#[test]
fn binding_a_name_the_client_never_prepared_is_26000_never_another_clients() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("S_1", "select secret").sync());
    // b's own session would say 26000; the proxy says the same and nothing of a's runs.
    let request = Req::new().bind("", "S_1").execute("").sync();
    let heard = b.send(&mut up, &request);
    assert_eq!(tags(&heard), "EZ");
    assert!(frames(&heard)[0].1.contains("C26000"));
    assert!(
        frames(&heard)[0]
            .1
            .contains("prepared statement \"S_1\" does not exist")
    );
    assert!(ran(&heard).is_empty());
    // An upstream name is no way in either.
    let heard = b.send(
        &mut up,
        &Req::new()
            .bind("", &name_of("select secret"))
            .execute("")
            .sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    let heard = b.send(&mut up, &Req::new().describe(b'S', "S_1").sync());
    assert_eq!(tags(&heard), "EZ");
}

#[test]
fn after_a_refusal_the_batch_is_skipped_to_sync_as_postgresql_does() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let request = Req::new()
        .bind("", "s")
        .execute("")
        .bind("", "nope")
        .execute("")
        .parse("", "select 2")
        .sync();
    let (_, sent) = c.rewrite(&mut Upstream::new(10), &request);
    assert_eq!(
        tags(&sent),
        "CPBEDS",
        "a probe replaces the Bind, the rest waits for Sync"
    );
    let heard = c.send(&mut up, &request);
    assert_eq!(tags(&heard), "2DCEZ");
    // A batch split by Flush keeps skipping until its Sync.
    let heard = c.send(&mut up, &Req::new().bind("", "nope").flush());
    assert_eq!(tags(&heard), "E");
    let (_, sent) = c.rewrite(&mut up, &Req::new().execute("").sync());
    assert_eq!(tags(&sent), "S");
    c.direct.run(&Req::new().execute("").sync());
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut BytesMut::new());
    assert!(up.state.idle());
    assert_eq!(
        tags(&c.send(&mut up, &Req::new().bind("", "s").execute("").sync())),
        "2DCZ"
    );
}

#[test]
fn another_clients_unnamed_statement_cannot_be_bound() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("", "select secret").sync());
    let heard = b.send(&mut up, &Req::new().bind("", "").execute("").sync());
    assert_eq!(tags(&heard), "EZ");
    assert!(
        frames(&heard)[0]
            .1
            .contains("unnamed prepared statement does not exist")
    );
    // Its own, in a later transaction on the same upstream, it may.
    assert_eq!(
        ran(&a.send(&mut up, &Req::new().bind("", "").execute("").sync())),
        ["select secret"]
    );
}

#[test]
fn close_forgets_the_clients_name_and_keeps_the_shared_statement() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("x", "select 9").sync());
    b.send(&mut up, &Req::new().parse("y", "select 9").sync());
    let (heard, sent) = a.rewrite(&mut up, &Req::new().close(b'S', "x").sync());
    assert_eq!((tags(&heard), tags(&sent)), ("3".into(), "S".into()));
    a.direct.run(&Req::new().close(b'S', "x").sync());
    let mut rest = BytesMut::new();
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut rest);
    assert_eq!(tags(&rest), "Z");
    assert_eq!(
        tags(&a.send(&mut up, &Req::new().bind("", "x").sync())),
        "EZ"
    );
    assert_eq!(
        ran(&b.send(&mut up, &Req::new().bind("", "y").execute("").sync())),
        ["select 9"]
    );
    // Closing a name never prepared is not an error, as in PostgreSQL.
    assert_eq!(
        tags(&a.send(&mut up, &Req::new().close(b'S', "zz").sync())),
        "3Z"
    );
}

#[test]
fn owed_replies_wait_for_the_replies_before_them() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("s", "select 1").sync());
    // Two pipelined requests: the second's ParseComplete is the proxy's, and must come after
    // the first's replies.
    let first = Req::new()
        .parse("", "select 0")
        .bind("", "")
        .execute("")
        .sync();
    let second = Req::new()
        .parse("t", "select 1")
        .bind("", "t")
        .execute("")
        .sync();
    let (mut heard, sent1) = b.rewrite(&mut up, &first);
    let (more, sent2) = b.rewrite(&mut up, &second);
    assert!(heard.is_empty() && more.is_empty());
    let mut sent = sent1;
    sent.extend_from_slice(&sent2);
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut heard);
    let mut both = first.clone();
    both.extend_from_slice(&second);
    assert_eq!(frames(&heard), frames(&b.direct.run(&both)));
    assert_eq!(tags(&heard), "12DCZ12DCZ");
}

#[test]
fn a_failed_parse_is_not_counted_as_present() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    up.pg.failing.push(b"select broken".to_vec());
    c.direct.failing.push(b"select broken".to_vec());
    let heard = c.send(
        &mut up,
        &Req::new().parse("s", "select broken").bind("", "s").sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    assert!(!up.state.contains(&StatementId::of(b"select broken", b"")));
    // A statement the upstream cannot prepare any more (its table was dropped): the added
    // Parse's error reaches the client, and the statement is not counted as present.
    c.send(
        &mut Upstream::new(10),
        &Req::new().parse("ok", "select t").sync(),
    );
    let mut other = Upstream::new(10);
    other.pg.failing.push(b"select t".to_vec());
    let heard = c.send_only(&mut other, &Req::new().bind("", "ok").execute("").sync());
    assert_eq!(tags(&heard), "EZ");
    assert!(other.state.is_empty());
    // Skipped after an error: a later Parse in the batch is not present either.
    let request = Req::new().bind("", "missing").parse("q", "select q").sync();
    let mut up = Upstream::new(10);
    c.send(&mut up, &request);
    assert!(up.state.is_empty());
    assert!(up.pg.statements.is_empty());
}

#[test]
fn a_parse_the_upstream_skipped_does_not_make_the_unnamed_statement_ours() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("", "select secret").sync());
    // b's Parse comes after an error, so PostgreSQL skips it: a's unnamed statement stays.
    b.direct.failing.push(b"select bad".to_vec());
    up.pg.failing.push(b"select bad".to_vec());
    b.send(
        &mut up,
        &Req::new()
            .parse("", "select bad")
            .parse("", "select mine")
            .sync(),
    );
    let heard = b.send(&mut up, &Req::new().bind("", "").execute("").sync());
    assert!(ran(&heard).is_empty());
    assert_eq!(tags(&heard), "EZ");
}

#[test]
fn sql_prepare_execute_deallocate_are_refused_with_0a000() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    for request in [
        Req::new().query("PREPARE p AS SELECT 1"),
        Req::new().query("select 1; EXECUTE p"),
        Req::new().query("deallocate p"),
    ] {
        let heard = c.send_only(&mut up, &request);
        assert_eq!(tags(&heard), "EZ");
        assert!(
            frames(&heard)[0].1.contains("C0A000"),
            "{:?}",
            frames(&heard)
        );
    }
    let heard = c.send_only(
        &mut up,
        &Req::new()
            .parse("", "execute p")
            .bind("", "")
            .execute("")
            .sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    assert!(frames(&heard)[0].1.contains("C0A000"));
    assert!(up.pg.received.iter().all(|&t| t != b'B' && t != b'E'));
    // PREPARE TRANSACTION is not a statement.
    assert_eq!(
        tags(&c.send_only(&mut up, &Req::new().query("PREPARE TRANSACTION 'x'"))),
        "CZ"
    );
}

#[test]
fn discard_all_forgets_the_clients_statements_and_the_upstreams() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    c.send(&mut up, &Req::new().query("DISCARD ALL"));
    assert!(c.statements.is_empty() && up.state.is_empty());
    assert_eq!(
        tags(&c.send(&mut up, &Req::new().bind("", "s").sync())),
        "EZ"
    );
    // Prepared again on the same upstream: the Close before the Parse makes it work even if
    // the upstream had kept it.
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    up.state.clear();
    assert_eq!(
        ran(&c.send(&mut up, &Req::new().bind("", "s").execute("").sync())),
        ["select 1"]
    );
}

#[test]
fn bad_frames_are_protocol_errors_and_change_nothing() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let good = Req::new().parse("t", "select 2").sync();
    let bad: Vec<Vec<u8>> = vec![
        [&good[..], b"P\0\0\0\x05x"].concat(),
        [&good[..], b"B\0\0\0\x06p\0"].concat(),
        [&good[..], b"D\0\0\0\x06Qx\0"].concat(),
        [&good[..], b"E\0\0\0\x06\0\0"].concat(),
        [&good[..], b"S\0\0\0\x03"].concat(),
        [&good[..], b"S\0\0\0\x09"].concat(),
        [&good[..], b"S\0\0"].concat(),
        [&good[..], b"P\0\0\0\x0bs\0q\0\xff\xff"].concat(),
    ];
    for request in bad {
        let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
        let r = c
            .statements
            .rewrite(&request, b'I', &mut up.state, &mut out, &mut heard);
        assert!(r.is_err(), "{request:?}");
        assert!(heard.is_empty());
        assert!(c.statements.get(b"t").is_none() && c.statements.len() == 1);
        assert!(up.state.idle() && up.state.len() == 1);
    }
}

#[test]
fn replies_that_fit_nothing_sent_are_errors() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let (_, _) = c.rewrite(&mut up, &Req::new().parse("s", "select 1").sync());
    // A BindComplete where the added Close's CloseComplete is due.
    let mut heard = BytesMut::new();
    assert!(up.state.on_reply(b'2', &mut heard).is_err());
    let mut up = Upstream::new(10);
    let _ = c.rewrite(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert!(up.state.on_reply(b'Z', &mut heard).is_err());
    // Asynchronous messages are fine anywhere.
    assert_eq!(up.state.on_reply(b'N', &mut heard), Ok(Verdict::Forward));
}

#[test]
fn refusal_messages_are_postgresqls() {
    assert_eq!(Refusal::Missing(b"S_1"[..].into()).code(), "26000");
    assert_eq!(
        Refusal::Missing(b"S_1"[..].into()).message(),
        "prepared statement \"S_1\" does not exist"
    );
    assert_eq!(Refusal::SqlCommand.code(), "0A000");
}

#[test]
fn a_second_parse_of_a_recorded_name_replaces_it() {
    // PostgreSQL would refuse it with 42P05; the proxy records Parses PostgreSQL may have
    // skipped after an error, so a driver that prepares again after an error must not fail.
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let heard = c.send_only(&mut up, &Req::new().parse("s", "select 2").sync());
    assert_eq!(tags(&heard), "1Z");
    let heard = c.send_only(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert_eq!(ran(&heard), ["select 2"]);
}

#[test]
fn in_a_failed_transaction_a_parse_goes_upstream_to_be_refused() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
    let request = Req::new().parse("t", "select 1").sync();
    assert!(
        b.statements
            .rewrite(&request, b'E', &mut up.state, &mut out, &mut heard)
            .unwrap()
    );
    assert!(heard.is_empty(), "no ParseComplete of the proxy's");
    assert_eq!(tags(&out), "CPS");
    // PostgreSQL refuses it there (25P02): the statement the Close dropped is not counted.
    let mut refused = BytesMut::new();
    reply(&mut refused, b'3', b"");
    error(
        &mut refused,
        "25P02",
        "current transaction is aborted".into(),
    );
    reply(&mut refused, b'Z', b"E");
    let mut heard = BytesMut::new();
    up.filter(&refused, &mut heard);
    assert_eq!(tags(&heard), "EZ");
    assert!(up.state.is_empty() && up.state.idle());
}

#[test]
fn abandoned_replies_leave_the_upstream_idle() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let _ = c.rewrite(&mut up, &Req::new().bind("", "s").execute("").sync());
    assert!(!up.state.idle());
    up.state.abandon_replies();
    assert!(up.state.idle() && up.state.len() == 1);
}
