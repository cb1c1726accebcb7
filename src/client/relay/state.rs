//! What a session keeps between relay runs: its buffers (empty and unallocated while the
//! client is idle) and where its conversation with PostgreSQL stands.

use std::time::Instant;

use bytes::BytesMut;

use super::spare;
use crate::client::tracked::Filter;
use crate::pool::TransactionTotals;
use crate::protocol::frame::{BackendScanner, FrontendScanner};

/// The session's relay buffers, reused for its whole life.
#[derive(Default)]
pub struct Buffers {
    /// Bytes from the client not yet written upstream.
    pub c2u: BytesMut,
    /// Frame boundaries in `c2u`.
    pub fscan: FrontendScanner,
    /// Bytes for the client (from the upstream or written by the proxy) not yet sent.
    pub u2c: BytesMut,
    /// Frame boundaries in `u2c`.
    pub bscan: BackendScanner,
    /// Statement tracking: a rewritten request, sent before anything else in `c2u`.
    pub send: BytesMut,
    /// Statement tracking: bytes at the front of `c2u` the rewrite left as they are.
    pub approved: usize,
    /// Statement tracking: how far the replies in `u2c` were judged.
    pub filter: Filter,
}

impl Buffers {
    /// Gives the allocations of the buffers that hold nothing back (to the worker's
    /// [`spare`] buffers, or the allocator), so a client between requests keeps no I/O
    /// memory; reads and the relay take one again when bytes arrive (see `poll_read`). A big
    /// request or result so never pins its memory either.
    pub fn release_empty(&mut self) {
        for buf in [&mut self.c2u, &mut self.u2c, &mut self.send] {
            spare::give(buf);
        }
    }

    /// Nothing of the client's is waiting to go upstream.
    pub fn nothing_to_send(&self) -> bool {
        self.fscan.forwardable() == 0 && self.send.is_empty()
    }
}

/// Where the client's conversation with PostgreSQL stands.
#[derive(Debug, Clone, Copy)]
pub struct Tracker {
    /// Query/Sync/FunctionCall messages sent upstream and not yet answered by ReadyForQuery.
    pub pending: u32,
    /// The transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub status: u8,
    /// The client sent Terminate.
    pub terminated: bool,
    /// PostgreSQL sent bytes after the ReadyForQuery that ended the last request; they were
    /// dropped and the upstream must be closed.
    pub unsolicited: bool,
    /// Transaction mode: something relayed may have changed the session's settings
    /// (see [`super::settings`]); the session reads them before the upstream goes back.
    pub settings_changed: bool,
    /// Traffic since the last transaction ended, not yet added to the pool's totals.
    pub totals: TransactionTotals,
    /// When the queries now outstanding started (`pending` went up from 0).
    pub busy_since: Option<Instant>,
    /// When the transaction now open started.
    pub transaction_since: Option<Instant>,
    /// The last scan ended at an idle ReadyForQuery: the relay stops reading upstream there.
    pub(super) idle_point: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            pending: 0,
            status: b'I',
            terminated: false,
            unsolicited: false,
            settings_changed: false,
            totals: TransactionTotals::default(),
            busy_since: None,
            transaction_since: None,
            idle_point: false,
        }
    }
}
