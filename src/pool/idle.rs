//! `idle_timeout`: closing upstreams that sat unused for that long, so a pool shrinks back
//! after a burst without any traffic to notice it.
//!
//! # Design
//!
//! The pool's background task ([`super::drain::maintain`]) sweeps the idle connections every
//! tick with deadpool's `retain`, which removes them from the pool (freeing their slots)
//! under the pool's own short lock. A pool shrinks to zero connections: the first request
//! after a quiet spell pays one login, as with PgBouncer's default `min_pool_size = 0`.
//!
//! Idle time counts from when a connection came back, not from when it was last handed out
//! (deadpool's own metric): a connection returning from a transaction or a session longer
//! than `idle_timeout` has been idle for no time at all, and closing it would make the next
//! client wait for a login. deadpool records no return time, so this clock notes when it
//! first saw a connection idle, and starts over when deadpool's checkout stamp says the
//! connection was handed out since. The pool's own checkouts that move ready replacements
//! in ([`super::Pool::cycle_idle`]) are not a use: [`IdleClock::cycled`] carries the clocks
//! across them. A connection is thus closed between `idle_timeout` and `idle_timeout` plus
//! one tick after it came back.
//!
//! Ready replacements are never handed out, so their age is their idle time:
//! [`Replacements`] closes any ready for longer than `idle_timeout` whenever the task counts
//! them, which it does every tick.
//!
//! [`Replacements`]: super::replacements::Replacements

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics};

use super::checkout::Pooled;
use super::close::CloseReason;
use super::manager::Manager;

/// When each idle connection of one pool was first seen idle. Owned by the pool's background
/// task alone, so it needs no lock of its own.
#[derive(Default)]
pub(super) struct IdleClock {
    /// Keyed by backend pid, which is unique among one PostgreSQL's live backends; the
    /// checkout stamp tells a reused pid (or a later use of the same connection) apart.
    seen: HashMap<i32, Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    /// deadpool's last checkout stamp when the connection was first seen idle.
    handed_out: Instant,
    /// When the connection was first seen idle since that checkout.
    idle_since: Instant,
}

impl IdleClock {
    /// Closes the idle connections of `pool` idle for `timeout` or longer, and those past
    /// their `server_lifetime`, but never below `keep` open connections (`min_pool_size`);
    /// returns how many it closed.
    pub(super) fn sweep(
        &mut self,
        pool: &managed::Pool<Manager>,
        timeout: Duration,
        keep: usize,
    ) -> usize {
        let now = Instant::now();
        let mut seen = HashMap::with_capacity(self.seen.len());
        let mut closable = pool.status().size.saturating_sub(keep);
        let result = pool.retain(|up, metrics| {
            let idle_since = self.idle_since(up, &metrics, now);
            let expired = now.saturating_duration_since(idle_since) >= timeout;
            // An old one goes even below `keep`: the upkeep opens a fresh one in its place.
            if up.past_lifetime() || (expired && closable > 0) {
                closable = closable.saturating_sub(1);
                return false;
            }
            let handed_out = stamp(&metrics);
            seen.insert(
                up.upstream().cancel.pid,
                Seen {
                    handed_out,
                    idle_since,
                },
            );
            true
        });
        // Connections checked out now are forgotten: they start over when they come back.
        self.seen = seen;
        let closed = result.removed.len();
        for mut up in result.removed {
            up.close_as(if up.past_lifetime() {
                CloseReason::Lifetime
            } else {
                CloseReason::IdleTimeout
            });
        }
        closed
    }

    /// Records the checkout stamps the pool's own [`super::Pool::cycle_idle`] just gave the
    /// idle connections, so that cycling them is not taken for a use. Call it right after.
    pub(super) fn cycled(&mut self, pool: &managed::Pool<Manager>) {
        let _ = pool.retain(|up, metrics| {
            if let Some(s) = self.seen.get_mut(&up.upstream().cancel.pid) {
                s.handed_out = stamp(&metrics);
            }
            true
        });
    }

    fn idle_since(&self, up: &Pooled, metrics: &Metrics, now: Instant) -> Instant {
        match self.seen.get(&up.upstream().cancel.pid) {
            Some(s) if s.handed_out == stamp(metrics) => s.idle_since,
            // Not seen idle since its last checkout: it may have come back just now.
            _ => now,
        }
    }
}

/// When deadpool last handed the connection out (or created it, if never).
fn stamp(metrics: &Metrics) -> Instant {
    metrics.recycled.unwrap_or(metrics.created)
}
