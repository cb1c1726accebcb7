//! Draining a pool that a config reload took out of service, like a rotation drains a lease:
//! nothing in use is cut off.
//!
//! # Design
//!
//! One task per retired pool, on a short tick. A *replaced* pool (its database is still
//! configured, with a changed target, size, mode or credentials) closes its idle connections
//! at every tick: its clients move to the new pool at their next request, so each connection
//! closes as soon as its transaction (or its session-mode client) gives it back. A *removed*
//! pool keeps serving the clients still connected to it, untouched, since they have nowhere
//! else to go. Either way the pool closes, and its upkeep task stops, once no client holds
//! it any more, or at shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Pool;
use super::close::CloseReason;

/// How often a retired pool looks for idle connections and for its last client leaving.
const TICK: Duration = Duration::from_millis(200);

/// What a reload did to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// A new pool serves its (database, user) now.
    Replaced,
    /// Its database or user left the config (or the access list).
    Removed,
}

/// Drains `pool` until `in_use` says no client holds it (or `stop`), then closes it and
/// cancels `upkeep`, which ends its [`super::maintain`] task.
pub async fn retire(
    pool: Pool,
    how: Retired,
    in_use: impl Fn() -> bool + Send,
    upkeep: CancellationToken,
    stop: CancellationToken,
) {
    let credentials = pool.credentials().name().to_owned();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if how == Retired::Replaced {
            let closed = pool.close_idle(CloseReason::Reloaded);
            if closed > 0 {
                debug!(%credentials, closed, "idle upstreams of a replaced pool closed");
            }
        }
        if !in_use() {
            break;
        }
    }
    pool.close();
    upkeep.cancel();
    info!(%credentials, ?how, "retired pool closed");
}
