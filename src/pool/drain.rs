//! The background task that moves a pool onto a new lease: replacements first, then the
//! retirement of the old connections (DESIGN §5.3, make before break).
//!
//! # Design
//!
//! One task per pool. While the pool holds connections on a superseded lease, it opens
//! replacements on the newest lease one login at a time, paced (so a rotation never turns
//! into a reconnect storm against PostgreSQL) and parks up to a quarter of the pool of
//! them. Busy old connections are swapped for a parked one when they come back from their
//! transaction (in [`super::manager`]); idle ones are retired here, each only once a
//! replacement is parked to take its slot. The old lease is thus drained without any client
//! waiting for a login, and its rotator revokes it as soon as the last connection is gone.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Pool;

/// How often the task looks at the pool when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// The least time between two replacement logins of one pool. Each login costs PostgreSQL a
/// new backend (a fork, authentication, cold caches); spacing them spreads that cost over a
/// moment instead of one burst, while a pool of 100 still moves within seconds.
const REPLACEMENT_PACE: Duration = Duration::from_millis(40);

/// How long to wait after a failed replacement login before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: keeps replacing connections on superseded leases.
pub async fn maintain(pool: Pool, shutdown: CancellationToken) {
    let manager = pool.inner.manager();
    let creds = pool.credentials().clone();
    let most_parked = (pool.settings().size / 4).max(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        let current = creds.generation();
        let old = manager.spares.older_than(current);
        let parked = manager.spares.ready(current, manager.idle_timeout());
        if old == 0 {
            if parked > 0 {
                // More replacements than old connections (they closed by themselves): let
                // the pool keep what fits, close the rest.
                pool.prewarm(parked).await;
                manager.spares.clear();
            }
            continue;
        }
        if parked < old.min(most_parked) {
            match manager.open().await {
                Ok(up) => {
                    manager.spares.park(up);
                    busy = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(REPLACEMENT_PACE) => {}
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
        let retired = pool.retire_idle(parked);
        if retired > 0 {
            debug!(credentials = %creds.name(), retired, "idle upstreams on a superseded lease replaced");
            pool.prewarm(retired).await;
            busy = true;
        }
    }
}
