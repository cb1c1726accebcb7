//! The background task that moves a pool onto a new lease: replacements first, then the
//! retirement of the old connections (DESIGN §5.3, make before break).
//!
//! # Design
//!
//! One task per pool. While the pool holds connections on a superseded lease, it opens
//! replacements on the newest lease one login at a time, spread over half the time left before
//! the old lease's hard deadline (so a rotation never turns into a reconnect storm against
//! PostgreSQL) and keeps up to a quarter of the pool of them ready; the login that proved the
//! new lease is the first ([`super::Pool::offer_replacement`]). An old connection is swapped
//! for a ready replacement when it is next checked out (in [`super::manager`]'s recycle): busy
//! ones at their transaction's end, idle ones when this task cycles the idle connections
//! through a checkout; a session-mode client is woken for each ready one
//! ([`super::Pool::move_due`]) and swaps it into its own slot ([`super::Checkout::swap`]).
//! The old lease is thus drained without any client waiting for a login and without the pool
//! shrinking, and its rotator revokes it as soon as the last connection is gone.
//!
//! The same task closes connections idle for `idle_timeout` ([`super::idle`]) at every turn.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Pool;
use super::idle::IdleClock;
use super::replacements::Superseded;
use crate::credentials::{Credentials, Deadline};

/// How often the task looks at the pool when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// The longest pause between two replacement logins of one pool. Each login costs PostgreSQL
/// a new backend (a fork, authentication, cold caches); spacing them spreads that cost
/// instead of one burst that every client feels at once.
const MAX_PACE: Duration = Duration::from_millis(250);

/// The pause when the old lease never expires (nothing hurries the move).
const UNHURRIED_PACE: Duration = Duration::from_millis(100);

/// How long to wait after a failed replacement login before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: keeps replacing connections on superseded leases, and closes
/// connections idle for `idle_timeout`.
pub async fn maintain(pool: Pool, shutdown: CancellationToken) {
    let manager = pool.inner.manager();
    let creds = pool.credentials().clone();
    let most_ready = super::most_ready(pool.settings());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = IdleClock::default();
    let mut busy = false;
    loop {
        if !busy {
            let seen = creds.generation();
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                () = manager.wanted.notified() => {}
                () = creds.wait_newer_than(seen) => {}
            }
        }
        busy = false;
        let closed = idle.sweep(&pool.inner, manager.idle_timeout());
        if closed > 0 {
            debug!(credentials = %creds.name(), closed, "idle upstreams closed after idle_timeout");
        }
        let current = creds.generation();
        let superseded = manager.replacements.older_than(current);
        let old = superseded.connections;
        let ready = manager
            .replacements
            .count_ready(current, manager.idle_timeout());
        if old == 0 {
            if ready > 0 {
                // More replacements than old connections (they closed by themselves): let
                // the pool keep what fits, close the rest.
                pool.cycle_idle().await;
                idle.cycled(&pool.inner);
                manager.replacements.close_up_to(current);
            }
            continue;
        }
        if ready < old.min(most_ready) {
            match manager.open().await {
                Ok(up) => {
                    manager.replacements.add(up);
                    busy = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pace(&creds, superseded)) => {}
                    }
                }
                Err(e) => {
                    warn!(credentials = %creds.name(), error = %e, "opening a replacement upstream failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                }
            }
            continue;
        }
        pool.cycle_idle().await;
        idle.cycled(&pool.inner);
        let left = manager
            .replacements
            .count_ready(current, manager.idle_timeout());
        let used = ready.saturating_sub(left);
        if used > 0 {
            debug!(credentials = %creds.name(), replaced = used, "idle upstreams on a superseded lease replaced");
            busy = true;
        } else {
            // A session-mode client woken for a ready replacement may be mid-transaction for
            // a while; let every waiting session try for it rather than leave it unused.
            manager.replacements.added.notify_waiters();
        }
    }
}

/// The pause after a replacement login: the remaining replacements spread over half the time
/// left before the old lease's hard deadline, so they are all done well before it.
fn pace(creds: &Credentials, old: Superseded) -> Duration {
    let deadline = old.oldest.map(|g| creds.deadline(g));
    let left = match deadline {
        None | Some(Deadline::Never) => return UNHURRIED_PACE,
        Some(Deadline::Over) => Duration::ZERO,
        Some(Deadline::At(at)) => at.duration_since(SystemTime::now()).unwrap_or_default(),
    };
    let per_login = left / 2 / u32::try_from(old.connections.max(1)).unwrap_or(u32::MAX);
    per_login.min(MAX_PACE)
}
