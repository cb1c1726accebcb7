//! One upstream's side of statement tracking: the statements present on it, by content
//! identity, bounded with least-recently-used eviction; who owns its unnamed statement; and the
//! replies it still owes.

use std::collections::HashMap;

use bytes::BytesMut;

use super::StatementId;
use super::replies::{ReplyError, ReplyFilter, Verdict};

/// What one upstream connection holds and owes. Lives with the upstream, not with any client:
/// it is true for whoever is served next.
#[derive(Debug)]
pub struct UpstreamStatements {
    pub(super) present: Present,
    pub(super) replies: ReplyFilter,
}

impl UpstreamStatements {
    /// The state of a fresh upstream keeping at most `max` statements
    /// (`max_prepared_statements`; at least one, so a request can prepare what it uses).
    pub fn new(max: usize) -> Self {
        UpstreamStatements {
            present: Present::new(max),
            replies: ReplyFilter::default(),
        }
    }

    /// How many statements the upstream holds.
    pub fn len(&self) -> usize {
        self.present.present.len()
    }

    /// True when the upstream holds no statement of the proxy's.
    pub fn is_empty(&self) -> bool {
        self.present.present.is_empty()
    }

    /// Whether the statement is present.
    pub fn contains(&self, id: &StatementId) -> bool {
        self.present.present.contains_key(id)
    }

    /// Every statement present, e.g. to recreate them on the upstream that replaces this one.
    pub fn iter(&self) -> impl Iterator<Item = &StatementId> {
        self.present.present.keys()
    }

    /// Forgets the statements: something outside the rewrite dropped them (a reset query with
    /// `DISCARD ALL`). Replies still owed are kept.
    pub fn clear(&mut self) {
        self.present.clear();
    }

    /// Forgets the replies still owed: they will never be read through
    /// [`UpstreamStatements::on_reply`] (the client vanished and the upstream is being cleaned
    /// up, or it is closed). The statements present stay counted.
    pub fn abandon_replies(&mut self) {
        self.replies = ReplyFilter::default();
    }

    /// True when no reply is outstanding: every frame now is forwarded as is, so the relay may
    /// skip [`UpstreamStatements::on_reply`] and keep its zero-copy path.
    #[inline]
    pub fn idle(&self) -> bool {
        self.replies.idle()
    }

    /// True when a reply frame tagged `tag` needs no [`UpstreamStatements::on_reply`]: it is
    /// forwarded and changes nothing (no reply outstanding, a DataRow, anything before an
    /// awaited ReadyForQuery). A superset of [`UpstreamStatements::idle`].
    #[inline]
    pub fn forwards_untouched(&self, tag: u8) -> bool {
        self.replies.forwards_untouched(tag)
    }

    /// Writes into `to_client` the replies the proxy owes whose turn has come; call after each
    /// rewrite, and send them before anything the upstream says later.
    pub fn write_due(&mut self, to_client: &mut BytesMut) {
        self.replies.write_due(to_client);
    }

    /// Decides about one reply frame, by its tag, as soon as its header is seen. Replies the
    /// proxy owes right after this frame are appended to `to_client`, to be sent after it (or
    /// in its place when it is swallowed). Only small frames are swallowed: bodiless
    /// completions and a probe's ErrorResponse or description.
    pub fn on_reply(&mut self, tag: u8, to_client: &mut BytesMut) -> Result<Verdict, ReplyError> {
        self.replies.on_frame(tag, &mut self.present, to_client)
    }
}

/// The statements present on an upstream.
#[derive(Debug)]
pub(super) struct Present {
    /// Most statements kept (`max_prepared_statements`).
    max: usize,
    /// Present statements and when each was last used (a tick of `clock`).
    present: HashMap<StatementId, u64>,
    clock: u64,
    /// The client (by [`super::ClientStatements`]' id) whose Parse made the unnamed statement
    /// now on the upstream: only that client may bind it.
    pub(super) unnamed_owner: Option<u64>,
}

impl Present {
    pub(super) fn new(max: usize) -> Self {
        Present {
            max: max.max(1),
            present: HashMap::new(),
            clock: 0,
            unnamed_owner: None,
        }
    }

    /// Forgets everything: the upstream's statements were dropped.
    pub(super) fn clear(&mut self) {
        self.present.clear();
        self.unnamed_owner = None;
    }

    /// Marks the statement as just used; false when it is not present.
    pub(super) fn touch(&mut self, id: &StatementId) -> bool {
        self.clock += 1;
        match self.present.get_mut(id) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records the statement as present (about to be prepared), returning the least recently
    /// used one that must be closed first to make room.
    pub(super) fn insert(&mut self, id: StatementId) -> Option<StatementId> {
        self.clock += 1;
        let evicted = if self.present.len() >= self.max && !self.present.contains_key(&id) {
            let oldest = self
                .present
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.present.remove(&oldest);
            }
            oldest
        } else {
            None
        };
        self.present.insert(id, self.clock);
        evicted
    }

    /// Forgets one statement: its Parse failed or was skipped.
    pub(super) fn forget(&mut self, id: &StatementId) {
        self.present.remove(id);
    }
}
