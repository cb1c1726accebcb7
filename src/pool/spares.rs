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

use tokio::sync::Notify;

use crate::upstream::{Tally, Upstream};

/// Spare connections and connection counts of one pool.
#[derive(Default)]
pub struct Spares {
    parked: Mutex<Vec<Upstream>>,
    /// Woken once per parked connection, so one session-mode client waiting to move takes it.
    pub(super) parked_signal: Notify,
    /// Open connections per generation, counted by the connections' [`Tally`] shares.
    counts: Mutex<Vec<Generation>>,
}

struct Generation {
    id: u64,
    count: Arc<AtomicUsize>,
}

/// The connections still on superseded leases.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Superseded {
    /// How many (in the pool, checked out or parked).
    pub connections: usize,
    /// The oldest of their generations, whose deadline bounds how long replacing may take.
    pub oldest: Option<u64>,
}

impl Spares {
    /// A tally share for a new connection on `generation`.
    pub fn tally(&self, generation: u64) -> Tally {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // Generations whose connections are all gone are forgotten.
        counts.retain(|g| g.id == generation || g.count.load(Ordering::Relaxed) > 0);
        let count = match counts.iter().find(|g| g.id == generation) {
            Some(g) => g.count.clone(),
            None => {
                let count = Arc::new(AtomicUsize::new(0));
                counts.push(Generation {
                    id: generation,
                    count: count.clone(),
                });
                count
            }
        };
        Tally::new(count)
    }

    /// The open connections on leases older than `current`.
    pub fn older_than(&self, current: u64) -> Superseded {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut old = Superseded::default();
        for g in counts.iter().filter(|g| g.id < current) {
            let n = g.count.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            old.connections += n;
            old.oldest = Some(old.oldest.map_or(g.id, |o| o.min(g.id)));
        }
        old
    }

    /// Parks a freshly opened connection.
    pub fn park(&self, up: Upstream) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(up);
        self.parked_signal.notify_one();
    }

    /// A parked connection on `current` that is still fit to use. Parked connections on an
    /// older lease, broken, or parked longer than `max_age` are closed on the way; one on a
    /// lease about to be published stays parked.
    pub fn take(&self, current: u64, max_age: Duration) -> Option<Upstream> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.retain(|up| fit(up, current, max_age));
        let i = parked.iter().rposition(|up| up.generation() == current)?;
        Some(parked.swap_remove(i))
    }

    /// How many parked connections on `current` are fit to use; unfit ones are closed, and
    /// ones on a lease about to be published are kept but not counted.
    pub fn ready(&self, current: u64, max_age: Duration) -> usize {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.retain(|up| fit(up, current, max_age));
        parked
            .iter()
            .filter(|up| up.generation() == current)
            .count()
    }

    /// Closes the parked connections on `current` or older, keeping any on a lease about to
    /// be published.
    pub fn close_up_to(&self, current: u64) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|up| up.generation() > current);
    }

    /// Closes every parked connection (pool shutdown).
    pub fn clear(&self) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A parked connection may stay parked: on the newest lease (or on the one being proved and
/// about to be published), healthy, not stale, and PostgreSQL has not said anything (or hung
/// up) while it waited.
fn fit(up: &Upstream, current: u64, max_age: Duration) -> bool {
    up.generation() >= current
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
        let a = spares.tally(2);
        let b = spares.tally(2);
        let c = spares.tally(1);
        assert_eq!(spares.older_than(2).connections, 1);
        assert_eq!(
            spares.older_than(3),
            Superseded {
                connections: 3,
                oldest: Some(1)
            }
        );
        drop(c);
        assert_eq!(spares.older_than(3).oldest, Some(2));
        drop(a);
        assert_eq!(spares.older_than(3).connections, 1);
        drop(b);
        assert_eq!(spares.older_than(3), Superseded::default());
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
