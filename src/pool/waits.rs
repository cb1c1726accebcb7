//! How long requests waited for an upstream, counted per histogram bucket: the data behind
//! `pglease_client_wait_seconds`, recorded once per checkout.
//!
//! # Design
//!
//! A prometheus `Histogram::observe` per transaction costs several atomic read-modify-writes
//! (its hot/cold shard swap, the count, a compare-and-swap loop on the float sum) and a
//! bucket search in floats. Here a wait costs one relaxed add into its bucket's counter, and
//! one more into the pool's `wait_micros` total when it lasted a microsecond or more; the
//! histogram's count (the sum of the buckets) and sum (`wait_micros`) are put together when
//! `/metrics` is scraped (`crate::metrics`). A sum counted in whole microseconds is exact
//! enough for waits measured in fractions of a millisecond and up.
//!
//! The bounds are the request-path histograms' buckets (`crate::metrics`, checked by its
//! tests), inclusive as in prometheus (`le`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the wait buckets, in microseconds (a last, unbounded bucket follows).
pub const WAIT_BOUNDS_MICROS: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The same bounds as durations, for the per-wait search (compared without a division).
const BOUNDS: [Duration; 18] = {
    let mut out = [Duration::ZERO; 18];
    let mut i = 0;
    while i < out.len() {
        out[i] = Duration::from_micros(WAIT_BOUNDS_MICROS[i]);
        i += 1;
    }
    out
};

/// One pool's wait counts: each bucket counts the waits in it alone (not cumulatively), the
/// last one those longer than every bound.
#[derive(Debug, Default)]
pub struct WaitCounts {
    buckets: [AtomicU64; BOUNDS.len() + 1],
}

/// A copy of [`WaitCounts`] for a scrape, with prometheus's cumulative bucket counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitSnapshot {
    /// Waits at or under each of [`WAIT_BOUNDS_MICROS`], in its order.
    pub cumulative: [u64; 18],
    /// Every wait counted (the `+Inf` bucket and the histogram's count).
    pub count: u64,
}

impl WaitCounts {
    /// Counts one wait in its bucket.
    pub fn record(&self, waited: Duration) {
        // The first bucket is where checkouts that found an upstream free land: one compare.
        let i = BOUNDS
            .iter()
            .position(|bound| waited <= *bound)
            .unwrap_or(BOUNDS.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now, cumulated (each bucket read atomically; the set is not one instant,
    /// which a scrape does not need).
    pub fn snapshot(&self) -> WaitSnapshot {
        let mut cumulative = [0; 18];
        let mut running = 0u64;
        for (out, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running = running.saturating_add(bucket.load(Ordering::Relaxed));
            *out = running;
        }
        let last = self.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        WaitSnapshot {
            cumulative,
            count: running.saturating_add(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let w = WaitCounts::default();
        w.record(Duration::ZERO);
        w.record(Duration::from_micros(100));
        w.record(Duration::from_nanos(100_001));
        w.record(Duration::from_millis(3));
        w.record(Duration::from_secs(61));
        let s = w.snapshot();
        assert_eq!(s.cumulative[0], 2, "0 and exactly 100 us are le=0.0001");
        assert_eq!(s.cumulative[1], 3, "just over 100 us is le=0.00025");
        assert_eq!(s.cumulative[4], 3, "3 ms is not le=0.0025");
        assert_eq!(s.cumulative[5], 4, "3 ms is le=0.005");
        assert_eq!(s.cumulative[17], 4, "61 s is over every bound");
        assert_eq!(s.count, 5);
    }
}
