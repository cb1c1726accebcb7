//! Proxy-issued cancel keys. Each client gets its own (pid, secret); a CancelRequest carrying it
//! is forwarded to whichever upstream is running that client's query at the time, with the
//! upstream's own key. Upstream keys never reach clients.
//!
//! # Design
//!
//! A cancel is forwarded on its own connection to PostgreSQL, so it can arrive after the
//! client's query has finished. Were the upstream already serving another client by then, the
//! cancel would interrupt *that* client's query. Each forward is therefore counted in the
//! client's [`CancelSlot`] from the moment it reads the slot's upstream until PostgreSQL has
//! acted on it; it is counted under the slot's lock, so a session detaching at that moment
//! either sees the count or detached first, and then the forward finds no upstream. A session giving its upstream back first waits for its own
//! forwards ([`CancelSlot::settle`]); once PostgreSQL has acted, the signal is pending on the
//! backend, which drops it while it waits for its next command. A forward whose outcome is
//! unknown makes the session close the upstream instead. When no cancel is in flight, giving
//! an upstream back costs one atomic load.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::debug;

use crate::upstream::CancelTarget;
use crate::upstream::maintenance::{self, CANCEL_TIMEOUT, CancelSent};

/// In [`CancelSlot::forwards`]: a forward ended without PostgreSQL confirming it acted.
const DOUBTFUL: usize = 1;
/// In [`CancelSlot::forwards`]: one forward in flight (the count sits above the flag bit).
const ONE_FORWARD: usize = 2;

/// How long a session waits for its cancels before closing the upstream instead: a forward
/// ends within [`CANCEL_TIMEOUT`], so this only guards against a forward never scheduled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2 * CANCEL_TIMEOUT.as_secs());

/// One client's cancel slot: its secret, the upstream serving it right now (if any), and the
/// cancels forwarded to an upstream it held that PostgreSQL has not yet acted on.
#[derive(Debug)]
pub struct CancelSlot {
    secret: i32,
    target: Mutex<Option<CancelTarget>>,
    /// Forwards in flight times [`ONE_FORWARD`], plus [`DOUBTFUL`]; one word, so the release
    /// of an upstream with no cancel in flight is a single load.
    forwards: AtomicUsize,
    /// Woken whenever a forward ends.
    forward_ended: Notify,
}

impl CancelSlot {
    /// Records which upstream serves the client (`None` when it has none). Called at each
    /// attach and release: an uncontended lock, twice per transaction.
    pub fn set(&self, target: Option<CancelTarget>) {
        if let Ok(mut t) = self.target.lock() {
            *t = target;
        }
    }

    /// True when no cancel this client sent is in flight or in doubt, so the upstream it is
    /// giving back can go at once (one atomic load; [`CancelSlot::settle`] otherwise).
    pub fn settled_now(&self) -> bool {
        self.forwards.load(Ordering::Acquire) == 0
    }

    /// Waits until no cancel this client sent can still reach the upstream it is giving back.
    /// Call after `set(None)`, so no new forward can start. `false` means one still might (its
    /// outcome is unknown), and the upstream must be closed, not reused.
    pub async fn settle(&self) -> bool {
        if self.forwards.load(Ordering::Acquire) == 0 {
            return true;
        }
        let ended = tokio::time::timeout(SETTLE_TIMEOUT, async {
            loop {
                let mut woken = pin!(self.forward_ended.notified());
                woken.as_mut().enable();
                if self.forwards.load(Ordering::Acquire) < ONE_FORWARD {
                    return;
                }
                woken.await;
            }
        })
        .await
        .is_ok();
        // The doubt belonged to this upstream, which is now either reused safely or closed.
        let was = self.forwards.fetch_and(!DOUBTFUL, Ordering::AcqRel);
        let settled = ended && was & DOUBTFUL == 0;
        debug!(
            settled,
            "waited for forwarded cancel requests before release"
        );
        settled
    }
}

/// A forward counted in its slot; dropping it ends the count, as doubtful unless
/// [`Forward::confirm`] was called (a forward dropped midway may still reach PostgreSQL).
struct Forward {
    slot: Arc<CancelSlot>,
    confirmed: bool,
}

impl Forward {
    fn confirm(mut self) {
        self.confirmed = true;
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if !self.confirmed {
            self.slot.forwards.fetch_or(DOUBTFUL, Ordering::AcqRel);
        }
        self.slot.forwards.fetch_sub(ONE_FORWARD, Ordering::AcqRel);
        self.slot.forward_ended.notify_waiters();
    }
}

/// All live clients' cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
}

/// A registered key; dropping it unregisters the key, so a stale key cancels nothing.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The proxy-issued process id sent to the client.
    pub pid: i32,
    /// The proxy-issued secret sent to the client.
    pub secret: i32,
    /// Where the session records its current upstream.
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.registry.slots.lock() {
            slots.remove(&self.pid);
        }
    }
}

impl CancelRegistry {
    /// Issues a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let secret = rand::random::<i32>();
        let slot = Arc::new(CancelSlot {
            secret,
            target: Mutex::new(None),
            forwards: AtomicUsize::new(0),
            forward_ended: Notify::new(),
        });
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let pid = loop {
            // Positive, like a real pid, and unique among live clients.
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid != 0 && !slots.contains_key(&pid) {
                break pid;
            }
        };
        slots.insert(pid, slot.clone());
        CancelKey {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Handles a client's CancelRequest: a wrong key or an idle client is silently ignored,
    /// exactly as PostgreSQL does, so keys cannot be probed. Returns once PostgreSQL has acted
    /// on the request (or the attempt ended), like PostgreSQL closing a cancel connection.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let Some((target, forward)) = self.claim(pid, secret) else {
            return;
        };
        match maintenance::cancel(target).await {
            CancelSent::Acted => forward.confirm(),
            CancelSent::NotSent(e) => {
                debug!(error = %e, "forwarding cancel request failed");
                forward.confirm();
            }
            CancelSent::Unconfirmed => {
                debug!("PostgreSQL did not confirm a forwarded cancel request");
                drop(forward);
            }
        }
    }

    /// The upstream a cancel with this key is for, counted as in flight in its slot.
    fn claim(&self, pid: i32, secret: i32) -> Option<(CancelTarget, Forward)> {
        let slots = self.slots.lock().ok()?;
        let slot = slots.get(&pid).filter(|slot| slot.secret == secret)?;
        let target = slot.target.lock().ok()?;
        let target = (*target)?;
        // Counted before the target lock is released: a session detaching now sees it.
        slot.forwards.fetch_add(ONE_FORWARD, Ordering::AcqRel);
        let forward = Forward {
            slot: slot.clone(),
            confirmed: false,
        };
        Some((target, forward))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
            pid: 42,
            secret: 7,
        }
    }

    #[tokio::test]
    async fn only_the_right_key_of_an_attached_client_claims_its_upstream() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        assert!(registry.claim(key.pid, key.secret).is_none(), "idle client");
        key.slot.set(Some(target()));
        assert!(
            registry
                .claim(key.pid, key.secret.wrapping_add(1))
                .is_none()
        );
        assert!(
            registry
                .claim(key.pid.wrapping_add(1), key.secret)
                .is_none()
        );
        let (claimed, forward) = registry.claim(key.pid, key.secret).expect("claimed");
        assert_eq!(claimed, target());
        forward.confirm();
        key.slot.set(None);
        assert!(key.slot.settle().await);
    }

    #[tokio::test]
    async fn release_waits_for_a_forward_in_flight() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        key.slot.set(Some(target()));
        let (_, forward) = registry.claim(key.pid, key.secret).expect("claimed");
        key.slot.set(None);
        let mut settle = pin!(key.slot.settle());
        // Not finishing is what is asserted, so a slow machine cannot make this flake.
        let early = tokio::time::timeout(Duration::from_millis(100), settle.as_mut()).await;
        assert!(early.is_err(), "released with a cancel in flight");
        forward.confirm();
        assert!(settle.await);
        // Nothing left over for the next upstream.
        assert_eq!(key.slot.forwards.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn an_unconfirmed_forward_closes_the_upstream_once() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        key.slot.set(Some(target()));
        let (_, forward) = registry.claim(key.pid, key.secret).expect("claimed");
        key.slot.set(None);
        drop(forward);
        assert!(
            !key.slot.settle().await,
            "reused after an unconfirmed cancel"
        );
        assert!(key.slot.settle().await, "the doubt outlived its upstream");
    }
}
