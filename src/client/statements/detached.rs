//! Requests answered without an upstream: a client outside any transaction that only
//! prepares named statements (libpq's `PQprepare`: Parse, Sync) needs nothing of PostgreSQL
//! yet, so it gets its replies at once and holds no upstream while it waits for one.
//!
//! This matters for clients that prepare synchronously in the middle of other work: pgbench
//! `-M prepared` prepares one client's statements while the same thread's other clients hold
//! upstreams inside open transactions, so waiting for an upstream there deadlocks the thread
//! once the pool is smaller than the client count. The cost: an error in the statement's SQL
//! is reported at its first Bind or Describe (where the proxy prepares it upstream), not at
//! the Parse.

use bytes::BytesMut;

use super::ClientStatements;
use super::sql::{Command, Sketch, examine_sketched};
use crate::protocol::backend;
use crate::protocol::extended::Parse;
use crate::protocol::frame::header;

impl ClientStatements {
    /// Answers `request` (whole frames) itself when it is only Parses of named statements and
    /// Syncs, ending with a Sync, from a client whose transaction status is idle: records the
    /// statements, appends ParseComplete and ReadyForQuery to `to_client` and returns how many
    /// Syncs it answered. Returns `None`, changing nothing, for any other request.
    pub fn answer_without_upstream(
        &mut self,
        request: &[u8],
        status: u8,
        to_client: &mut BytesMut,
    ) -> Option<u32> {
        if status != b'I' || self.skipping || !only_named_parses(request) {
            return None;
        }
        // Near the limit the request takes the upstream path, which refuses a name too many.
        if self.len() + request.len() / 5 >= super::MAX_CLIENT_STATEMENTS {
            return None;
        }
        let mut syncs = 0;
        let mut at = 0;
        while let Some((tag, len)) = header(&request[at..]) {
            let body = &request[at + 5..at + 1 + len];
            at += 1 + len;
            if tag == b'S' {
                syncs += 1;
                backend::ready_for_query(to_client, b'I');
            } else if let Ok(parse) = Parse::read(body) {
                self.insert(parse.name, parse.query, parse.raw_types());
                to_client.extend_from_slice(&[b'1', 0, 0, 0, 4]);
            }
        }
        Some(syncs)
    }
}

/// True when `request` is whole, well-formed Parse frames of named statements that touch no
/// SQL-level prepared statement nor mention unconfined state, and Syncs, the last frame a Sync.
fn only_named_parses(request: &[u8]) -> bool {
    let mut at = 0;
    let mut last = 0;
    while let Some((tag, len)) = header(&request[at..]) {
        let Some(body) = request.get(at + 5..at + 1 + len).filter(|_| len >= 4) else {
            return false;
        };
        match tag {
            b'S' => {}
            b'P' => match Parse::read(body) {
                Ok(p) if !p.name.is_empty() && quiet(p.query) => {}
                _ => return false,
            },
            _ => return false,
        }
        last = tag;
        at += 1 + len;
    }
    at == request.len() && last == b'S'
}

/// True when a text holds nothing the rewrite refuses or notes: a text mentioning unconfined
/// state or `set_config` is recorded by the rewrite, which notes it for the checks after it
/// runs, and a LISTEN is refused there.
fn quiet(text: &[u8]) -> bool {
    let sketch = Sketch::of(text);
    sketch.is_empty()
        || (!sketch.set_config()
            && !sketch.unicode()
            && !sketch.listen()
            && examine_sketched(text, sketch) == (Command::Other, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn parse(name: &str, query: &str) -> Vec<u8> {
        let body = [name.as_bytes(), b"\0", query.as_bytes(), b"\0", &[0, 0]].concat();
        frame(b'P', &body)
    }

    #[test]
    fn a_bare_prepare_is_answered_and_recorded() {
        let mut c = ClientStatements::new();
        let request = [parse("P_0", "select 1"), frame(b'S', b"")].concat();
        let mut heard = BytesMut::new();
        assert_eq!(
            c.answer_without_upstream(&request, b'I', &mut heard),
            Some(1)
        );
        assert_eq!(&heard[..], b"1\0\0\0\x04Z\0\0\0\x05I");
        assert!(c.get(b"P_0").is_some());
    }

    #[test]
    fn anything_else_needs_an_upstream() {
        let mut c = ClientStatements::new();
        let mut heard = BytesMut::new();
        let sync = frame(b'S', b"");
        for request in [
            [parse("", "select 1"), sync.clone()].concat(),
            [parse("P_0", "prepare p as select 1"), sync.clone()].concat(),
            // Noted or refused by the rewrite, which must see them.
            [
                parse("P_0", "select set_config('a', 'b', false)"),
                sync.clone(),
            ]
            .concat(),
            [parse("P_0", "select U&\"d\\0061ta\""), sync.clone()].concat(),
            [
                parse("P_0", "select pg_advisory_xact_lock(1)"),
                sync.clone(),
            ]
            .concat(),
            [parse("P_0", "LISTEN a"), sync.clone()].concat(),
            [parse("P_0", "select 1"), frame(b'H', b"")].concat(),
            [
                parse("P_0", "select 1"),
                frame(b'D', b"SP_0\0"),
                sync.clone(),
            ]
            .concat(),
        ] {
            assert_eq!(c.answer_without_upstream(&request, b'I', &mut heard), None);
        }
        let request = [parse("P_0", "select 1"), sync].concat();
        assert_eq!(c.answer_without_upstream(&request, b'T', &mut heard), None);
        assert!(heard.is_empty() && c.is_empty());
    }
}
