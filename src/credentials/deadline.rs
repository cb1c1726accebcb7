//! The signal that tells a connection its lease reached its hard deadline (DESIGN §5.6).
//!
//! # Design
//!
//! Every pooled upstream holds one [`LeaseEnd`], registered with its credentials entry when
//! the connection opens. The client task relaying on that upstream polls it on every wakeup:
//! one atomic load and an [`AtomicWaker`] registration, with no lock and no allocation, so
//! even transaction mode can afford to watch for the deadline on every transaction. The
//! rotator fires all signals of a generation just before it revokes that lease, so a client
//! still on it ends with an error naming the reason instead of being cut off by PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;

use futures_util::task::AtomicWaker;

/// One connection's "your lease is over" flag.
#[derive(Debug, Default)]
pub struct LeaseEnd {
    ended: AtomicBool,
    waker: AtomicWaker,
}

impl LeaseEnd {
    /// A signal nobody fires, for connections outside any pool (logins that prove a lease).
    pub fn never() -> Arc<LeaseEnd> {
        Arc::default()
    }

    /// True once the lease has ended; otherwise arranges for the task polling to be woken
    /// when it does.
    pub fn poll_ended(&self, cx: &Context<'_>) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        // Checked again: the end may have fired between the load and the registration.
        self.ended.load(Ordering::Acquire)
    }

    /// True once the lease has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn fire(&self) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The signals of every open connection, by generation.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    by_generation: Mutex<HashMap<u64, Vec<Weak<LeaseEnd>>>>,
}

impl Deadlines {
    /// A new signal for a connection on `generation`.
    pub(super) fn register(&self, generation: u64) -> Arc<LeaseEnd> {
        let end = Arc::new(LeaseEnd::default());
        let mut map = self.by_generation.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(generation).or_default();
        // Connections come and go for the life of a lease; forget the closed ones so the
        // list stays as long as the pool, not as long as the lease's history.
        if list.len() >= 64 && list.len().is_power_of_two() {
            list.retain(|w| w.strong_count() > 0);
        }
        list.push(Arc::downgrade(&end));
        end
    }

    /// Forgets `generation`; with `fire`, first tells every connection still on it.
    pub(super) fn end(&self, generation: u64, fire: bool) {
        let list = self
            .by_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&generation);
        if let (Some(list), true) = (list, fire) {
            for end in list.iter().filter_map(Weak::upgrade) {
                end.fire();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Wake, Waker};

    use super::*;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn firing_a_generation_wakes_its_connections_only() {
        let d = Deadlines::default();
        let old = d.register(1);
        let new = d.register(2);
        let woken = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(woken.clone());
        let cx = Context::from_waker(&waker);
        assert!(!old.poll_ended(&cx));
        d.end(1, true);
        assert!(
            woken.0.load(Ordering::SeqCst),
            "the waiting task was not woken"
        );
        assert!(old.poll_ended(&cx));
        assert!(!new.is_ended());
    }

    #[test]
    fn a_drained_generation_is_forgotten_without_firing() {
        let d = Deadlines::default();
        let end = d.register(3);
        d.end(3, false);
        assert!(!end.is_ended());
        assert!(d.by_generation.lock().unwrap().is_empty());
    }

    #[test]
    fn closed_connections_are_pruned() {
        let d = Deadlines::default();
        let kept = d.register(1);
        for _ in 0..200 {
            drop(d.register(1));
        }
        let len = d.by_generation.lock().unwrap()[&1].len();
        assert!(len < 100, "closed connections piled up: {len}");
        d.end(1, true);
        assert!(kept.is_ended());
    }
}
