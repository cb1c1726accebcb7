//! Make before break: connections opened on a new lease ahead of need (replacements), and the
//! per-generation counts that say how many are needed.
//!
//! # Design
//!
//! When a rotation publishes lease N+1, the pool's connections on lease N are not closed and
//! reopened on a client's path. A background task ([`super::drain`]) opens replacements on
//! N+1 one at a time and keeps them here, ready; a generation-N connection is swapped for a
//! replacement when it next comes back to be reused (busy ones, at their transaction's end) or
//! when it sits idle. Until a replacement is ready the old connection keeps serving, because
//! its lease is still valid: a client never waits for a login during a rotation.
//!
//! The counts are kept by [`Tally`] shares held by the connections themselves, so
//! checked-out connections are counted too without the pool keeping a list of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::checkout::Pooled;
use super::close::CloseReason;

/// Ready replacements and connection counts of one pool.
#[derive(Default)]
pub struct Replacements {
    ready: Mutex<Vec<Pooled>>,
    /// Woken once per replacement made ready, so one session-mode client waiting to move
    /// takes it.
    pub(super) added: Notify,
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
    /// How many (in the pool, checked out or ready as replacements).
    pub connections: usize,
    /// The oldest of their generations, whose deadline bounds how long replacing may take.
    pub oldest: Option<u64>,
}

/// A share of a counter that lasts as long as the connection holding it: a pool counts its
/// connections per generation, checked-out ones included, without keeping a list of them.
#[derive(Debug)]
pub struct Tally(Arc<AtomicUsize>);

impl Tally {
    fn new(count: Arc<AtomicUsize>) -> Tally {
        count.fetch_add(1, Ordering::Relaxed);
        Tally(count)
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Replacements {
    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

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

    /// Keeps a freshly opened replacement ready.
    pub fn add(&self, replacement: Pooled) {
        self.ready().push(replacement);
        self.added.notify_one();
    }

    /// A ready replacement on `current` that is still fit to use. Ready ones on an older
    /// lease, broken, or ready for longer than `max_age` are closed on the way; one on a
    /// lease about to be published stays.
    pub fn take(&self, current: u64, max_age: Duration) -> Option<Pooled> {
        let mut ready = self.ready();
        ready.retain_mut(|p| keep(p, current, max_age));
        let i = ready.iter().rposition(|p| p.generation() == current)?;
        Some(ready.swap_remove(i))
    }

    /// How many ready replacements on `current` are fit to use; unfit ones are closed, and
    /// ones on a lease about to be published are kept but not counted.
    pub fn count_ready(&self, current: u64, max_age: Duration) -> usize {
        let mut ready = self.ready();
        ready.retain_mut(|p| keep(p, current, max_age));
        ready.iter().filter(|p| p.generation() == current).count()
    }

    /// Closes the ready replacements on `current` or older, keeping any on a lease about to
    /// be published.
    pub fn close_up_to(&self, current: u64) {
        self.ready().retain_mut(|p| {
            let keep = p.generation() > current;
            if !keep {
                p.close_as(CloseReason::NotNeeded);
            }
            keep
        });
    }

    /// Closes every ready replacement (pool shutdown).
    pub fn clear(&self) {
        for mut p in self.ready().drain(..) {
            p.close_as(CloseReason::PoolClosed);
        }
    }
}

/// A ready replacement may stay: on the newest lease (or on the one being proved and about to
/// be published), healthy, not stale, and PostgreSQL has not said anything (or hung up) while
/// it waited. One that may not is marked with why it closes.
fn keep(p: &mut Pooled, current: u64, max_age: Duration) -> bool {
    let up = p.upstream();
    let reason = if up.generation() < current {
        CloseReason::LeaseRetired
    } else if up.broken {
        CloseReason::Broken
    } else if up.created_at.elapsed() >= max_age {
        CloseReason::IdleTimeout
    } else if up.has_unsolicited_input() {
        CloseReason::UnsolicitedInput
    } else {
        return true;
    };
    p.close_as(reason);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_connections_that_hold_them() {
        let replacements = Replacements::default();
        let a = replacements.tally(2);
        let b = replacements.tally(2);
        let c = replacements.tally(1);
        assert_eq!(replacements.older_than(2).connections, 1);
        assert_eq!(
            replacements.older_than(3),
            Superseded {
                connections: 3,
                oldest: Some(1)
            }
        );
        drop(c);
        assert_eq!(replacements.older_than(3).oldest, Some(2));
        drop(a);
        assert_eq!(replacements.older_than(3).connections, 1);
        drop(b);
        assert_eq!(replacements.older_than(3), Superseded::default());
    }

    #[test]
    fn empty_generations_are_forgotten() {
        let replacements = Replacements::default();
        for generation in 1..100 {
            drop(replacements.tally(generation));
        }
        let _live = replacements.tally(100);
        assert_eq!(replacements.counts.lock().unwrap().len(), 1);
    }
}
