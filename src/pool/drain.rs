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
//! The same task closes connections idle for `idle_timeout` or past `server_lifetime`
//! ([`super::idle`]) and idle reserve connections ([`super::reserve`]) at every turn, and,
//! while no rotation is under way, opens connections up to `min_pool_size`, one per turn,
//! through the same ready list replacements use.

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
        let min_size = pool.settings().min_size;
        let closed = idle.sweep(&pool.inner, manager.idle_timeout(), min_size);
        if closed > 0 {
            debug!(credentials = %creds.name(), closed, "idle upstreams closed (idle_timeout or server_lifetime)");
        }
        let released = pool.release_reserve();
        if released > 0 {
            debug!(credentials = %creds.name(), released, "idle reserve upstreams closed");
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
                continue;
            }
            if pool.inner.status().size < min_size {
                // Opened as a replacement on the current lease, so the next turn moves it
                // into the pool the way every upkeep login gets there.
                busy = open_one(&pool, &shutdown).await;
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

/// Opens one connection on the newest lease for `min_pool_size` and leaves it ready for the
/// next turn; true when it did. A failure waits [`RETRY_AFTER_FAILURE`].
async fn open_one(pool: &Pool, shutdown: &CancellationToken) -> bool {
    let manager = pool.inner.manager();
    match manager.open().await {
        Ok(up) => {
            manager.replacements.add(up);
            true
        }
        Err(e) => {
            warn!(credentials = %pool.credentials().name(), error = %e, "opening an upstream for min_pool_size failed");
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
            }
            false
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
