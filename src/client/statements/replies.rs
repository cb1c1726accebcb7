//! Walking an upstream's replies against what was sent to it: which reply frames reach the
//! client, which the proxy swallows, and which the proxy writes itself.
//!
//! # Design
//!
//! Every message sent upstream leaves a [`Step`]. All but Flush and the copy messages are
//! answered by exactly one frame that ends their reply: ParseComplete, BindComplete,
//! CloseComplete, RowDescription or NoData (Describe, after any ParameterDescription),
//! CommandComplete, EmptyQueryResponse or PortalSuspended (Execute), ReadyForQuery (Sync,
//! Query, FunctionCall), or an ErrorResponse. Runs of plain messages are counted in one step,
//! so a pipelined batch costs no allocation once the queue has grown.
//!
//! An ErrorResponse to an extended-protocol message makes PostgreSQL ignore everything up to
//! the next Sync (a Query too). The filter then drops the steps of what was ignored, undoing
//! what the cache assumed of them, and passes the Sync's ReadyForQuery. Replies the proxy owes
//! the client (a ParseComplete for a statement already upstream, a CloseComplete, a refusal's
//! ErrorResponse) are written in their place in the stream, and dropped when PostgreSQL would
//! have skipped their message. NoticeResponse, NotificationResponse and ParameterStatus may
//! come at any time and always pass.

use std::collections::VecDeque;

use bytes::BytesMut;
use thiserror::Error;

use super::StatementId;
use super::rewrite::Refusal;
use super::upstream::Present;
use crate::protocol::backend::{self, Severity};

/// What to do with one reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to the client.
    Forward,
    /// Drop it: it answers a message the proxy added.
    Swallow,
}

/// The upstream answered something that fits nothing sent to it: its state is unknown and it
/// must be closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplyError {
    /// A frame that cannot answer the message it should answer.
    #[error("upstream sent '{}' where the reply to a '{expected}' was due", char::from(*tag))]
    Unexpected { tag: u8, expected: &'static str },
}

/// What one message sent upstream expects back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// This many messages (Bind, Describe, Execute, Close of the unnamed statement or a
    /// portal) answered by one ending frame each, all forwarded.
    Pass(u32),
    /// A Parse: of the unnamed statement (`None`), or of a statement the cache now counts as
    /// present; its ParseComplete is swallowed when the proxy added the Parse.
    Parse {
        id: Option<StatementId>,
        swallow: bool,
    },
    /// A Close the proxy added (eviction, or the one before an added Parse).
    AddedClose,
    /// A bodiless reply (`1` ParseComplete, `3` CloseComplete) the proxy owes the client.
    Owed(u8),
    /// A probe standing in for a refused message: its reply is swallowed and this error
    /// written instead. `extended`: the probe was an extended-protocol message.
    Refused { refusal: Refusal, extended: bool },
    /// A Query or FunctionCall: everything through its ReadyForQuery is forwarded.
    Ready,
    /// A Sync: its ReadyForQuery is forwarded and ends any skipping.
    Sync,
}

/// The replies one upstream still owes, in order.
#[derive(Debug, Default)]
pub(super) struct ReplyFilter {
    steps: VecDeque<Step>,
    /// PostgreSQL reported an error in an extended-protocol batch and ignores everything up to
    /// the next Sync.
    skipping: bool,
}

/// Whether a frame ends the reply to a Bind, Describe, Execute or Close.
fn ends_reply(tag: u8) -> bool {
    matches!(tag, b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's')
}

/// Frames PostgreSQL may send at any moment, outside any reply.
fn asynchronous(tag: u8) -> bool {
    matches!(tag, b'N' | b'A' | b'S')
}

impl ReplyFilter {
    /// True when nothing is outstanding: every frame now is forwarded.
    pub(super) fn idle(&self) -> bool {
        self.steps.is_empty() && !self.skipping
    }

    /// True when a frame tagged `tag` would be forwarded by [`ReplyFilter::on_frame`] and
    /// change nothing: no reply is outstanding; or it is a frame PostgreSQL may send at any
    /// time; or only a ReadyForQuery is awaited and this is not one; or a run of plain
    /// messages is answered and this frame neither ends nor fails one (a DataRow). The relay
    /// then skips the filter for it, so the rows of a result cost no call each.
    #[inline]
    pub(super) fn forwards_untouched(&self, tag: u8) -> bool {
        if asynchronous(tag) {
            return true;
        }
        match self.steps.front() {
            None => !self.skipping,
            Some(Step::Ready | Step::Sync) => tag != b'Z',
            Some(Step::Pass(_)) => !ends_reply(tag) && !matches!(tag, b'E' | b'Z' | b'1'),
            Some(_) => false,
        }
    }

    /// Records one more message sent upstream (or one owed reply), merging counted runs.
    pub(super) fn push(&mut self, step: Step, cache: &mut Present) {
        if self.skipping && self.steps.is_empty() && step != Step::Sync {
            // Sent while PostgreSQL ignores everything up to a Sync: it never runs.
            undo(&step, cache);
            return;
        }
        if let (Step::Pass(n), Some(Step::Pass(last))) = (&step, self.steps.back_mut()) {
            *last += n;
            return;
        }
        self.steps.push_back(step);
    }

    /// Writes the owed replies whose turn has come.
    pub(super) fn write_due(&mut self, to_client: &mut BytesMut) {
        while let Some(Step::Owed(tag)) = self.steps.front() {
            to_client.extend_from_slice(&[*tag, 0, 0, 0, 4]);
            self.steps.pop_front();
        }
    }

    /// Decides about one reply frame; see [`super::UpstreamStatements::on_reply`].
    pub(super) fn on_frame(
        &mut self,
        tag: u8,
        cache: &mut Present,
        to_client: &mut BytesMut,
    ) -> Result<Verdict, ReplyError> {
        if asynchronous(tag) {
            return Ok(Verdict::Forward);
        }
        self.write_due(to_client);
        let Some(step) = self.steps.front_mut() else {
            if self.skipping {
                return Err(ReplyError::Unexpected {
                    tag,
                    expected: "Sync",
                });
            }
            // Nothing planned: the relay's own checks decide about unsolicited bytes.
            return Ok(Verdict::Forward);
        };
        let unexpected = |expected| Err(ReplyError::Unexpected { tag, expected });
        let verdict = match (step, tag) {
            (Step::Pass(n), b'E') => {
                *n -= 1;
                self.pop_if_done();
                self.skip_to_sync(cache);
                Verdict::Forward
            }
            (Step::Pass(n), t) if ends_reply(t) => {
                *n -= 1;
                self.pop_if_done();
                Verdict::Forward
            }
            (Step::Pass(_), b'Z' | b'1') => return unexpected("Bind, Describe, Execute or Close"),
            (Step::Pass(_), _) => Verdict::Forward,
            (Step::Parse { swallow, .. }, b'1') => {
                let swallow = *swallow;
                self.steps.pop_front();
                if swallow {
                    Verdict::Swallow
                } else {
                    Verdict::Forward
                }
            }
            (Step::Parse { .. }, b'E') | (Step::AddedClose, b'E') => {
                if let Some(step) = self.steps.pop_front() {
                    undo(&step, cache);
                }
                self.skip_to_sync(cache);
                Verdict::Forward
            }
            (Step::Parse { .. }, _) => return unexpected("Parse"),
            (Step::AddedClose, b'3') => {
                self.steps.pop_front();
                Verdict::Swallow
            }
            (Step::AddedClose, _) => return unexpected("Close"),
            (Step::Refused { .. }, b't') => Verdict::Swallow,
            (Step::Refused { .. }, t) if t == b'E' || ends_reply(t) => {
                if let Some(Step::Refused { refusal, extended }) = self.steps.pop_front() {
                    backend::error_response(
                        to_client,
                        Severity::Error,
                        refusal.code(),
                        &refusal.message(),
                    );
                    if extended {
                        self.skip_to_sync(cache);
                    }
                }
                Verdict::Swallow
            }
            (Step::Refused { .. }, _) => return unexpected("probe"),
            (Step::Ready | Step::Sync, b'Z') => {
                self.steps.pop_front();
                self.skipping = false;
                Verdict::Forward
            }
            (Step::Ready | Step::Sync, _) => Verdict::Forward,
            // Written above: an owed reply is never at the front here.
            (Step::Owed(_), _) => Verdict::Forward,
        };
        self.write_due(to_client);
        Ok(verdict)
    }

    fn pop_if_done(&mut self) {
        if self.steps.front() == Some(&Step::Pass(0)) {
            self.steps.pop_front();
        }
    }

    /// PostgreSQL now ignores everything up to the next Sync: drop those steps.
    fn skip_to_sync(&mut self, cache: &mut Present) {
        self.skipping = true;
        while let Some(step) = self.steps.front() {
            if *step == Step::Sync {
                return;
            }
            if let Some(step) = self.steps.pop_front() {
                undo(&step, cache);
            }
        }
    }
}

/// Takes back what the cache assumed of a message that never ran or failed.
fn undo(step: &Step, cache: &mut Present) {
    match step {
        Step::Parse { id: Some(id), .. } => cache.forget(id),
        Step::Parse { id: None, .. } => cache.unnamed_owner = None,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame tag the reply side may meet, and some it should not.
    const TAGS: &[u8] = b"123ACDEGHINSTWZcdnst\0";

    fn states() -> Vec<ReplyFilter> {
        let refused = Step::Refused {
            refusal: Refusal::Listen,
            extended: false,
        };
        let fronts = [
            vec![],
            vec![Step::Pass(1), Step::Sync],
            vec![Step::Pass(3)],
            vec![Step::Ready],
            vec![Step::Ready, Step::Owed(b'1')],
            vec![Step::Sync, Step::Owed(b'3')],
            vec![
                Step::Parse {
                    id: None,
                    swallow: false,
                },
                Step::Sync,
            ],
            vec![Step::AddedClose, Step::Sync],
            vec![Step::Owed(b'1'), Step::Sync],
            vec![refused, Step::Ready],
        ];
        let mut all = Vec::new();
        for steps in fronts {
            for skipping in [false, true] {
                all.push(ReplyFilter {
                    steps: steps.clone().into(),
                    skipping,
                });
            }
        }
        all
    }

    #[test]
    fn a_frame_let_through_untouched_is_one_the_filter_forwards_without_a_change() {
        let mut untouched = 0;
        for state in states() {
            for &tag in TAGS {
                if !state.forwards_untouched(tag) {
                    continue;
                }
                untouched += 1;
                let mut filter = ReplyFilter {
                    steps: state.steps.clone(),
                    skipping: state.skipping,
                };
                let mut cache = Present::new(4);
                let mut out = BytesMut::new();
                let verdict = filter.on_frame(tag, &mut cache, &mut out);
                let what = format!("{:?} {}", state, char::from(tag));
                assert_eq!(verdict, Ok(Verdict::Forward), "{what}");
                assert_eq!(filter.steps, state.steps, "{what}");
                assert_eq!(filter.skipping, state.skipping, "{what}");
                assert!(out.is_empty(), "{what}");
            }
        }
        // The shortcut is taken where the hot path needs it: rows, and a query's replies.
        assert!(untouched > 50, "{untouched}");
        let only_ready = ReplyFilter {
            steps: vec![Step::Ready].into(),
            skipping: false,
        };
        assert!(b"TDCN".iter().all(|&t| only_ready.forwards_untouched(t)));
        assert!(!only_ready.forwards_untouched(b'Z'));
        let bound = ReplyFilter {
            steps: vec![Step::Pass(2), Step::Sync].into(),
            skipping: false,
        };
        assert!(bound.forwards_untouched(b'D'));
        assert!(!bound.forwards_untouched(b'C') && !bound.forwards_untouched(b'E'));
    }
}
