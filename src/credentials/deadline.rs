//! Each generation's hard deadline, and the signal that tells a connection its lease is over
//! (DESIGN §5.6).
//!
//! # Design
//!
//! Every pooled upstream holds one [`LeaseEnd`], registered with its credentials entry when
//! the connection opens. The client task relaying on that upstream polls it on every wakeup:
//! one atomic load and an [`AtomicWaker`] registration, with no lock and no allocation, so
//! even transaction mode can afford to watch for the deadline on every transaction. The
//! rotator fires all signals of a generation just before it revokes that lease, so a client
//! still on it ends with an error naming the reason instead of being cut off by PostgreSQL;
//! a shutdown fires every signal, with its own reason.
//!
//! The registry also holds each generation's current hard deadline. The rotator sets it when
//! it publishes a lease and moves it when a renewal extends the lease, so everything that
//! times its work by a lease's deadline (recycling, session moves, the drain's pace) reads the
//! one value that holds now, never the lease's original expiry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::time::SystemTime;

use futures_util::task::AtomicWaker;

/// Why a connection's lease ended under it: decides what its client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The lease reached its hard deadline with the connection still on it.
    Deadline,
    /// pglease is shutting down and `shutdown_timeout` has passed.
    Shutdown,
}

const NOT_ENDED: u8 = 0;
const ENDED_DEADLINE: u8 = 1;
const ENDED_SHUTDOWN: u8 = 2;

/// One connection's "your lease is over" flag.
#[derive(Debug, Default)]
pub struct LeaseEnd {
    /// [`NOT_ENDED`], or which [`EndReason`] ended it.
    ended: AtomicU8,
    waker: AtomicWaker,
}

impl LeaseEnd {
    /// A signal nobody fires: for a connection outside any credentials entry (tests).
    pub fn never() -> Arc<LeaseEnd> {
        Arc::default()
    }

    /// True once the lease has ended; otherwise arranges for the task polling to be woken
    /// when it does.
    pub fn poll_ended(&self, cx: &Context<'_>) -> bool {
        if self.is_ended() {
            return true;
        }
        self.waker.register(cx.waker());
        // Checked again: the end may have fired between the load and the registration.
        self.is_ended()
    }

    /// True once the lease has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire) != NOT_ENDED
    }

    /// Why the lease ended, once it has.
    pub fn reason(&self) -> Option<EndReason> {
        match self.ended.load(Ordering::Acquire) {
            ENDED_DEADLINE => Some(EndReason::Deadline),
            ENDED_SHUTDOWN => Some(EndReason::Shutdown),
            _ => None,
        }
    }

    fn fire(&self, reason: EndReason) {
        let code = match reason {
            EndReason::Deadline => ENDED_DEADLINE,
            EndReason::Shutdown => ENDED_SHUTDOWN,
        };
        // The first reason stays: a client told of the deadline is not told again.
        let _ = self
            .ended
            .compare_exchange(NOT_ENDED, code, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }
}

/// Where a generation stands against its hard deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The lease never expires (or is not published yet).
    Never,
    /// Nothing may use the lease after this instant.
    At(SystemTime),
    /// The lease has already ended (revoked), or was never known.
    Over,
}

impl Deadline {
    /// True when the deadline is less than `margin` away, or past.
    pub fn within(self, margin: std::time::Duration, now: SystemTime) -> bool {
        match self {
            Deadline::Never => false,
            Deadline::At(at) => now + margin >= at,
            Deadline::Over => true,
        }
    }
}

/// One generation's open connections and current hard deadline.
#[derive(Debug, Default)]
struct Generation {
    ends: Vec<Weak<LeaseEnd>>,
    /// `None` until published, and for leases that never expire.
    deadline: Option<SystemTime>,
}

/// The signals of every open connection and the deadline of every live lease, by generation.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    by_generation: Mutex<HashMap<u64, Generation>>,
}

impl Deadlines {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Generation>> {
        self.by_generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (at publish) or moves (after a renewal) the hard deadline of `generation`.
    pub(super) fn set_deadline(&self, generation: u64, deadline: Option<SystemTime>) {
        self.map().entry(generation).or_default().deadline = deadline;
    }

    /// The hard deadline of `generation` as it stands now.
    pub(super) fn deadline(&self, generation: u64) -> Deadline {
        match self.map().get(&generation) {
            Some(Generation {
                deadline: Some(at), ..
            }) => Deadline::At(*at),
            Some(_) => Deadline::Never,
            None => Deadline::Over,
        }
    }

    /// A new signal for a connection on `generation`.
    pub(super) fn register(&self, generation: u64) -> Arc<LeaseEnd> {
        let end = Arc::new(LeaseEnd::default());
        let mut map = self.map();
        let list = &mut map.entry(generation).or_default().ends;
        // Connections come and go for the life of a lease; forget the closed ones so the
        // list stays as long as the pool, not as long as the lease's history.
        if list.len() >= 64 && list.len().is_power_of_two() {
            list.retain(|w| w.strong_count() > 0);
        }
        list.push(Arc::downgrade(&end));
        end
    }

    /// Forgets `generation`; with a reason, first tells every connection still on it.
    pub(super) fn end(&self, generation: u64, fire: Option<EndReason>) {
        let gone = self.map().remove(&generation);
        if let (Some(gone), Some(reason)) = (gone, fire) {
            for end in gone.ends.iter().filter_map(Weak::upgrade) {
                end.fire(reason);
            }
        }
    }

    /// Tells every connection of every generation that its lease is over (the end of a
    /// shutdown), keeping the generations for the rotator to revoke.
    pub(super) fn fire_all(&self, reason: EndReason) {
        let ends: Vec<Arc<LeaseEnd>> = self
            .map()
            .values()
            .flat_map(|g| g.ends.iter().filter_map(Weak::upgrade))
            .collect();
        for end in ends {
            end.fire(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
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
        d.end(1, Some(EndReason::Deadline));
        assert!(
            woken.0.load(Ordering::SeqCst),
            "the waiting task was not woken"
        );
        assert!(old.poll_ended(&cx));
        assert_eq!(old.reason(), Some(EndReason::Deadline));
        assert!(!new.is_ended());
    }

    #[test]
    fn a_shutdown_ends_every_generation_and_keeps_its_deadlines() {
        let d = Deadlines::default();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5);
        d.set_deadline(1, Some(at));
        let (a, b) = (d.register(1), d.register(2));
        d.fire_all(EndReason::Shutdown);
        assert_eq!(a.reason(), Some(EndReason::Shutdown));
        assert_eq!(b.reason(), Some(EndReason::Shutdown));
        // A later deadline does not overwrite the first reason.
        d.end(1, Some(EndReason::Deadline));
        assert_eq!(a.reason(), Some(EndReason::Shutdown));
        assert_eq!(d.deadline(2), Deadline::Never);
        assert_eq!(d.deadline(1), Deadline::Over);
    }

    #[test]
    fn a_renewal_moves_the_deadline_everyone_reads() {
        let d = Deadlines::default();
        let end = d.register(4);
        let first = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        d.set_deadline(4, Some(first));
        assert_eq!(d.deadline(4), Deadline::At(first));
        let later = first + std::time::Duration::from_secs(60);
        d.set_deadline(4, Some(later));
        assert_eq!(d.deadline(4), Deadline::At(later));
        assert!(!end.is_ended(), "setting a deadline must not end anything");
    }

    #[test]
    fn a_drained_generation_is_forgotten_without_firing() {
        let d = Deadlines::default();
        let end = d.register(3);
        d.end(3, None);
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
        let len = d.by_generation.lock().unwrap()[&1].ends.len();
        assert!(len < 100, "closed connections piled up: {len}");
        d.end(1, Some(EndReason::Deadline));
        assert!(kept.is_ended());
    }
}
