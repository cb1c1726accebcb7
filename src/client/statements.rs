//! Named prepared statements in transaction mode: each client's statements by its own names,
//! the statements present on each upstream under proxy-chosen names, and the rewrite of a
//! client request so that every statement it uses exists on whichever upstream serves it.
//! No I/O here: the relay feeds bytes in and sends what comes out.
//!
//! # Design
//!
//! A client's Parse of a named statement is recorded in its [`ClientStatements`] under the
//! client's name, as (query text, parameter types, content hash). On an upstream the statement
//! is called `pglease_<hash>` ([`UpstreamName`]): the hash covers text and types, so identical
//! SQL from many clients shares one upstream statement, and two clients' `S_1` with different
//! SQL never meet. [`UpstreamStatements`] is the upstream's side: which hashes exist on it,
//! bounded by `max_prepared_statements` with least-recently-used eviction.
//!
//! [`ClientStatements::rewrite`] turns one client request (whole frames, up to Sync or Flush)
//! into what the upstream must receive:
//!
//! - a Parse of a statement the upstream already has is not sent; the client still gets a
//!   ParseComplete, written by the proxy;
//! - a Bind or Describe of a statement the upstream lacks is preceded by a Close and a Parse of
//!   it under its upstream name (the Close makes the Parse succeed even when the cache is wrong
//!   about absence: after a `DISCARD ALL` that failed, an eviction PostgreSQL skipped). Their
//!   replies are swallowed. A full cache first closes its least recently used statement;
//! - client names are replaced by upstream names; a Close of a client statement only forgets
//!   it, and the proxy answers CloseComplete, because other clients may share it upstream;
//! - a Bind or Describe of a name the client never prepared, SQL `PREPARE`, `EXECUTE` and
//!   `DEALLOCATE name`, and session state that would outlive the client's transaction
//!   ([`Unconfined`]: session advisory locks, cursors `WITH HOLD`, temporary objects,
//!   `SET SESSION AUTHORIZATION`) are refused: a probe that fails on the upstream takes their
//!   place, so
//!   the upstream rolls back and skips to Sync exactly as PostgreSQL would for the client's own
//!   error, and the proxy swaps the probe's error for PostgreSQL's 26000 (or for 0A000). The
//!   rest of the batch up to Sync is not sent. The unnamed statement belongs to the client
//!   that last parsed it on that upstream; another client binding it gets 26000 too.
//! - `DISCARD ALL` and `DEALLOCATE ALL` are forwarded and empty both registries.
//!
//! Unnamed statements, portals, Execute, Sync and everything else pass unchanged, and a request
//! with nothing to change is not copied: the caller sends its own bytes.
//!
//! Every message sent upstream is also recorded, in order, with the upstream
//! ([`UpstreamStatements::on_reply`]), which then walks the replies frame by frame: it says
//! which to swallow, writes the replies the proxy owes the client in their place, and, when an
//! error makes PostgreSQL skip to Sync, drops what was skipped and undoes what the cache had
//! assumed (a skipped or failed Parse never created its statement). Effects on the client's own
//! registry are applied when the request is rewritten: a Parse PostgreSQL skipped after an
//! earlier error in the same batch is still recorded, and a second Parse of a recorded name
//! replaces it rather than failing with 42P05, so a driver that prepares again after an error
//! keeps working.
//!
//! # Wiring (transaction mode)
//!
//! - Every client request goes through [`ClientStatements::rewrite`] as whole frames, with the
//!   client's transaction status; the upstream gets `out` when it returns `true`, the request's
//!   own bytes otherwise. Replies to Parse, Bind, Describe and Close need no whole-frame
//!   buffering of their own, but the request does.
//! - Every reply frame's tag goes through [`UpstreamStatements::on_reply`] unless
//!   [`UpstreamStatements::forwards_untouched`]; a swallowed frame is dropped whole, and what it appends goes
//!   to the client right after that frame. A [`ReplyError`] closes the upstream.
//! - The count of ReadyForQuery replies to expect comes from what is sent: after a refusal,
//!   a Query or FunctionCall before the batch's Sync is not sent.
//! - After each rewrite, [`ClientStatements::take_settings_check`] says whether the request
//!   may have changed settings without a `SET` tag (the relay then has them read).
//! - An upstream reset with `DISCARD ALL` calls [`UpstreamStatements::clear`]; one whose
//!   replies are read elsewhere (cleanup after a vanished client) calls
//!   [`UpstreamStatements::abandon_replies`]. Session mode uses none of this.
//! - Before checking out an upstream, a request that only prepares (Parse, Sync) from an idle
//!   client is offered to [`ClientStatements::answer_without_upstream`].
//!
//! The relay side of this lives in [`crate::client::tracked`].

//! # Cost per request
//!
//! One pass over the frame headers and, for Parse, Bind, Describe and Close, over the names,
//! plus one byte pass over each Query and Parse text ([`sql::Sketch`]) shared by every check
//! of it: the commands above, unconfined state, LISTEN and `set_config`. Only a text holding
//! one of their words is lexed. The unnamed statement path allocates nothing and copies
//! nothing; a named statement costs one
//! hash map lookup per use and a SHA-256 of its text per Parse. The reply side costs one match
//! per reply frame that may change what is owed (not a DataRow, nor anything before an
//! awaited ReadyForQuery: [`UpstreamStatements::forwards_untouched`] says when it may be
//! skipped).

mod detached;
mod hasher;
mod replies;
mod rewrite;
pub(crate) mod sql;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::hash_map::Entry;

use hasher::Map;

use sha2::{Digest, Sha256};

pub use replies::{ReplyError, Verdict};
pub use rewrite::Refusal;
pub use sql::{Command, Unconfined, classify};
pub use upstream::UpstreamStatements;

pub use crate::config::DEFAULT_MAX_PREPARED_STATEMENTS;

/// Most named statements one client may hold, so a client that keeps preparing new names
/// cannot grow the proxy's memory without bound; past it a new name is refused (53400).
pub const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// The start of every name the proxy gives a statement on an upstream.
pub const UPSTREAM_PREFIX: &str = "pglease_";

/// A statement's identity on upstreams: the first 128 bits of SHA-256 over its parameter types
/// and text, so a collision (one client running another's SQL) is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatementId([u8; 16]);

impl StatementId {
    /// The identity of a statement with this text and raw type list (see
    /// [`crate::protocol::extended::Parse::raw_types`]).
    pub fn of(query: &[u8], raw_types: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update((raw_types.len() as u64).to_be_bytes());
        h.update(raw_types);
        h.update(query);
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        StatementId(id)
    }

    /// The statement's name on every upstream.
    pub fn upstream_name(&self) -> UpstreamName {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut name = [0u8; NAME_LEN];
        name[..UPSTREAM_PREFIX.len()].copy_from_slice(UPSTREAM_PREFIX.as_bytes());
        for (i, b) in self.0.iter().enumerate() {
            name[UPSTREAM_PREFIX.len() + 2 * i] = HEX[usize::from(b >> 4)];
            name[UPSTREAM_PREFIX.len() + 2 * i + 1] = HEX[usize::from(b & 15)];
        }
        UpstreamName(name)
    }
}

const NAME_LEN: usize = UPSTREAM_PREFIX.len() + 32;

/// `pglease_` and 32 hex digits: 40 bytes, within PostgreSQL's 63, held inline so naming a
/// statement on the hot path allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamName([u8; NAME_LEN]);

impl UpstreamName {
    /// The name as text (always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// One statement a client prepared: what is needed to prepare it again on any upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text, bytes in the client's encoding.
    pub query: Box<[u8]>,
    /// The parameter type OIDs as the Parse carried them (count times 4 bytes, big-endian).
    pub raw_types: Box<[u8]>,
    /// Content identity, and so the upstream name.
    pub id: StatementId,
}

/// A client's prepared statements, by the names it chose. Lives as long as the client.
#[derive(Debug)]
pub struct ClientStatements {
    /// Tells this client apart on an upstream that remembers who parsed its unnamed statement
    /// (random, so no counter is shared between sessions).
    id: u64,
    by_name: Map<Box<[u8]>, Statement>,
    /// A refusal was answered and the rest of the batch is not sent until the client's Sync.
    skipping: bool,
    /// Since the last [`ClientStatements::take_state_check`], a request ran text that mentions
    /// unconfined session state (see [`sql::Mentions`]) or a fast-path function call: state the
    /// lexer did not see may be left on the upstream.
    check_state: bool,
    /// Since the last [`ClientStatements::take_settings_check`], a request ran text that
    /// mentions `set_config` (or may name it: a `U&"…"` identifier, a fast-path function
    /// call), which changes settings without a `SET` command tag.
    check_settings: bool,
    /// The client's statements whose text mentions unconfined session state or `set_config`:
    /// running one later, in another transaction, calls for the same checks again.
    mentioning: Map<Box<[u8]>, Marks>,
    /// The same for the unnamed statement the client parsed last.
    unnamed_marks: Marks,
}

/// What a statement's text mentions that calls for a check after it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    /// Unconfined session state (see [`ClientStatements::take_state_check`]).
    state: bool,
    /// `set_config` (see [`ClientStatements::take_settings_check`]).
    settings: bool,
}

impl Marks {
    fn any(self) -> bool {
        self.state || self.settings
    }
}

impl Default for ClientStatements {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStatements {
    /// An empty registry for a new client.
    pub fn new() -> Self {
        ClientStatements {
            id: rand::random(),
            by_name: Map::default(),
            skipping: false,
            check_state: false,
            check_settings: false,
            mentioning: Map::default(),
            unnamed_marks: Marks::default(),
        }
    }

    /// The statement the client calls `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Statement> {
        self.by_name.get(name)
    }

    /// How many named statements the client holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when the client holds no named statement.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every statement with the client's name for it, e.g. to recreate them elsewhere.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Statement)> {
        self.by_name.iter().map(|(n, s)| (&n[..], s))
    }

    /// True (once) when the requests since the last call ran text that may have left session
    /// state on the upstream where the lexer could not see it: a `DO` block or function body
    /// mentioning advisory locks, `WITH HOLD`, temporary objects or `SESSION AUTHORIZATION`,
    /// or a fast-path function call. The upstream is then checked before it is handed on.
    pub fn take_state_check(&mut self) -> bool {
        std::mem::take(&mut self.check_state)
    }

    /// True (once) when the requests since the last call ran text that may change settings
    /// without a `SET` command tag: `set_config` in a query or in a prepared statement run
    /// (again), a `U&"…"` identifier that may spell it, or a fast-path function call (which
    /// may call it by OID). The relay then has the session's settings read at the idle
    /// ReadyForQuery (see [`crate::client::settings`]).
    pub fn take_settings_check(&mut self) -> bool {
        std::mem::take(&mut self.check_settings)
    }

    /// Notes that a statement with these marks runs.
    fn runs(&mut self, marks: Marks) {
        self.check_state |= marks.state;
        self.check_settings |= marks.settings;
    }

    /// Forgets what statement `name`'s text mentions (it was closed or replaced); free while
    /// no statement mentions anything.
    fn forget_mention(&mut self, name: &[u8]) {
        if !self.mentioning.is_empty() {
            self.mentioning.remove(name);
        }
    }

    /// True when recording `name` would take the client past [`MAX_CLIENT_STATEMENTS`].
    fn full_for(&self, name: &[u8]) -> bool {
        self.by_name.len() >= MAX_CLIENT_STATEMENTS && !self.by_name.contains_key(name)
    }

    fn insert(&mut self, name: &[u8], query: &[u8], raw_types: &[u8]) -> &Statement {
        self.forget_mention(name);
        let statement = Statement {
            query: query.into(),
            raw_types: raw_types.into(),
            id: StatementId::of(query, raw_types),
        };
        match self.by_name.entry(name.into()) {
            Entry::Occupied(mut e) => {
                e.insert(statement);
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(statement),
        }
    }
}
