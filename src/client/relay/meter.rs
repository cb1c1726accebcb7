//! What the relay measures as it goes: the session's traffic and query times, added to the
//! serving pool's totals and histograms once per transaction (see the parent's `# Design`).

use std::time::Instant;

use super::Tracker;
use crate::pool::{PoolInstruments, PoolStats, TransactionTotals};

impl Tracker {
    /// A request starts on an upstream at `now` (just checked out): its query, and a
    /// transaction unless one is already open, are timed from here.
    pub fn begin(&mut self, now: Instant) {
        self.busy_since = Some(now);
        if self.status == b'I' || self.transaction_since.is_none() {
            self.transaction_since = Some(now);
        }
    }

    /// Client requests were scanned: `syncs` more queries outstanding. The clock is read only
    /// when the upstream goes from idle to busy.
    pub(super) fn requested(&mut self, syncs: u32) {
        if syncs == 0 {
            return;
        }
        self.totals.queries += u64::from(syncs);
        if self.pending == 0 {
            let now = Instant::now();
            self.busy_since = Some(now);
            if self.status == b'I' {
                self.transaction_since = Some(now);
            }
        }
        self.pending += syncs;
    }

    /// The last outstanding query was answered with transaction status `status`: observes
    /// its time, and when the transaction is over adds it to the pool's totals.
    pub(super) fn answered(&mut self, status: u8, meter: &Meter<'_>) {
        let now = Instant::now();
        if let Some(since) = self.busy_since.take() {
            let took = now.saturating_duration_since(since);
            self.totals.query_micros += micros(took);
            meter.instruments.query.observe(took.as_secs_f64());
        }
        if status != b'I' {
            return;
        }
        let took = self
            .transaction_since
            .take()
            .map(|since| now.saturating_duration_since(since))
            .unwrap_or_default();
        meter.stats.add_transaction(&self.totals, micros(took));
        meter.instruments.transaction.observe(took.as_secs_f64());
        self.totals = TransactionTotals::default();
    }
}

/// Whole microseconds of `d`, saturating.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the relay records the queries and transactions it sees end: the serving pool's
/// totals and histograms.
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    /// The pool's running totals.
    pub stats: &'a PoolStats,
    /// The pool's histograms.
    pub instruments: &'a PoolInstruments,
}
