//! Make before break: connections opened on a new lease ahead of need, and the per-generation
//! counts that say how many are needed.
//!
//! # Design
//!
//! When a rotation publishes lease N+1, the pool's connections on lease N are not closed and
//! reopened on a client's path. A background task ([`super::drain`]) opens replacements on
//! N+1 one at a time and parks them here; a generation-N connection is swapped for a spare
//! when it next comes back to be reused (busy ones, at their transaction's end) or when it
//! sits idle. Until a spare exists the old connection keeps serving, because its lease is
//! still valid: a client never waits for a login during a rotation.
//!
//! The counts are kept by [`Tally`] shares held by the connections themselves, so
//! checked-out connections are counted too without the pool keeping a list of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::upstream::{Tally, Upstream};

/// Spare connections and connection counts of one pool.
#[derive(Default)]
pub struct Spares {
    parked: Mutex<Vec<Upstream>>,
    /// Open connections per generation, counted by the connections' [`Tally`] shares.
    counts: Mutex<Vec<(u64, Arc<AtomicUsize>)>>,
}

impl Spares {
    /// A tally share for a new connection on `generation`.
    pub fn tally(&self, generation: u64) -> Tally {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // Generations whose connections are all gone are forgotten.
        counts.retain(|(g, c)| *g == generation || c.load(Ordering::Relaxed) > 0);
        let count = match counts.iter().find(|(g, _)| *g == generation) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(AtomicUsize::new(0));
                counts.push((generation, c.clone()));
                c
            }
        };
        Tally::new(count)
    }

    /// Open connections (in the pool, checked out or parked) on leases older than `current`.
    pub fn older_than(&self, current: u64) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .filter(|(g, _)| *g < current)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Parks a freshly opened connection.
    pub fn park(&self, up: Upstream) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(up);
    }

    /// A parked connection on `current` that is still fit to use. Parked connections on an
    /// older lease, broken, or parked longer than `max_age` are closed on the way.
    pub fn take(&self, current: u64, max_age: Duration) -> Option<Upstream> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(up) = parked.pop() {
            if fit(&up, current, max_age) {
                return Some(up);
            }
        }
        None
    }

    /// How many parked connections are fit to use; the others are closed.
    pub fn ready(&self, current: u64, max_age: Duration) -> usize {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.retain(|up| fit(up, current, max_age));
        parked.len()
    }

    /// Closes every parked connection (pool shutdown).
    pub fn clear(&self) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A parked connection may be handed out: on the newest lease, healthy, not stale, and
/// PostgreSQL has not said anything (or hung up) while it waited.
fn fit(up: &Upstream, current: u64, max_age: Duration) -> bool {
    up.generation() == current
        && !up.broken
        && up.created_at.elapsed() < max_age
        && !up.has_unsolicited_input()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_connections_that_hold_them() {
        let spares = Spares::default();
        let a = spares.tally(1);
        let b = spares.tally(1);
        let c = spares.tally(2);
        assert_eq!(spares.older_than(2), 2);
        assert_eq!(spares.older_than(3), 3);
        drop(a);
        assert_eq!(spares.older_than(2), 1);
        drop(b);
        drop(c);
        assert_eq!(spares.older_than(3), 0);
    }

    #[test]
    fn empty_generations_are_forgotten() {
        let spares = Spares::default();
        for generation in 1..100 {
            drop(spares.tally(generation));
        }
        let _live = spares.tally(100);
        assert_eq!(spares.counts.lock().unwrap().len(), 1);
    }
}
