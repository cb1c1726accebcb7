//! Proxy-issued cancel keys. Each client gets its own (pid, secret); a CancelRequest carrying it
//! is forwarded to whichever upstream is running that client's query at the time, with the
//! upstream's own key. Upstream keys never reach clients.
//!
//! # Design
//!
//! A cancel is forwarded on its own connection to PostgreSQL, so it can arrive after the
//! client's query has finished. Were the upstream already serving another client by then, the
//! cancel would interrupt *that* client's query. Each forward is therefore counted in the
//! client's [`CancelSlot`] from before it reads the slot's upstream until PostgreSQL has acted
//! on it. A session detaching at that moment either sees the count or detached first, and then
//! the forward finds no upstream (and takes its count back): the forward counts and then reads
//! the upstream, the session clears the upstream and then reads the count, each with a
//! sequentially consistent fence between, so at least one sees the other. The slot's upstream
//! is written only by its session, under a sequence count that forwards read around it, so
//! attaching and detaching take no lock: the per-transaction cost is a few plain stores and
//! the detach's fence. A session giving its upstream back first waits for its own
//! forwards ([`CancelSlot::settle`]); once PostgreSQL has acted, the signal is pending on the
//! backend, which drops it while it waits for its next command. A forward whose outcome is
//! unknown makes the session close the upstream instead. When no cancel is in flight, giving
//! an upstream back costs one atomic load.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
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
    target: Attached,
    /// Forwards in flight times [`ONE_FORWARD`], plus [`DOUBTFUL`]; one word, so the release
    /// of an upstream with no cancel in flight is a single load.
    forwards: AtomicUsize,
}

/// Woken whenever any slot's forward ends. One for the process, not one per slot: every
/// client has a slot, and a forward ending is rare, so a waiter woken for another slot's
/// forward just looks at its own count again.
static FORWARD_ENDED: Notify = Notify::const_new();

impl CancelSlot {
    /// Records which upstream serves the client (`None` when it has none). Called at each
    /// attach and release, by the client's session only (the slot has one writer): no lock.
    pub fn set(&self, target: Option<CancelTarget>) {
        self.target.write(target);
        if target.is_none() {
            // Orders the detach before the session's next look at the count
            // ([`CancelSlot::settled_now`]): see the module's `# Design`.
            fence(Ordering::SeqCst);
        }
    }

    /// True when no cancel this client sent is in flight or in doubt, so the upstream it is
    /// giving back can go at once (one atomic load; [`CancelSlot::settle`] otherwise).
    pub fn settled_now(&self) -> bool {
        self.forwards.load(Ordering::SeqCst) == 0
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
                let mut woken = pin!(FORWARD_ENDED.notified());
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
        FORWARD_ENDED.notify_waiters();
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
            target: Attached::default(),
            forwards: AtomicUsize::new(0),
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
        // Counted before the upstream is read: a session detaching now either sees the count
        // or detached before the read, which then finds no upstream.
        slot.forwards.fetch_add(ONE_FORWARD, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let Some(target) = slot.target.read() else {
            slot.forwards.fetch_sub(ONE_FORWARD, Ordering::SeqCst);
            FORWARD_ENDED.notify_waiters();
            return None;
        };
        let forward = Forward {
            slot: slot.clone(),
            confirmed: false,
        };
        Some((target, forward))
    }
}

/// A slot's upstream, written by its session alone and read by forwards without a lock: a
/// sequence lock, odd while the session writes, that a reader checks around its read.
#[derive(Debug, Default)]
struct Attached {
    seq: AtomicU64,
    present: AtomicBool,
    /// The backend's pid (high half) and secret (low half).
    key: AtomicU64,
    /// The address: the IP's bits (IPv4 in the low half of the first word).
    ip: [AtomicU64; 2],
    /// The port, bit 16 set for IPv6, and IPv6's flow info in the high half.
    port: AtomicU64,
    scope: AtomicU32,
}

impl Attached {
    /// Called by the slot's one writer only.
    fn write(&self, target: Option<CancelTarget>) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.present.store(target.is_some(), Ordering::Relaxed);
        if let Some(t) = target {
            let key = (u64::from(t.pid as u32) << 32) | u64::from(t.secret as u32);
            self.key.store(key, Ordering::Relaxed);
            let (ip, port) = encode(&t.addr);
            self.ip[0].store((ip >> 64) as u64, Ordering::Relaxed);
            self.ip[1].store(ip as u64, Ordering::Relaxed);
            self.port.store(port, Ordering::Relaxed);
            let scope = match t.addr {
                SocketAddr::V6(a) => a.scope_id(),
                SocketAddr::V4(_) => 0,
            };
            self.scope.store(scope, Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The upstream as of one write, never a mix of two.
    fn read(&self) -> Option<CancelTarget> {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                // The session is between two stores: it finishes without awaiting anything.
                std::thread::yield_now();
                continue;
            }
            let present = self.present.load(Ordering::Relaxed);
            let key = self.key.load(Ordering::Relaxed);
            let ip = (u128::from(self.ip[0].load(Ordering::Relaxed)) << 64)
                | u128::from(self.ip[1].load(Ordering::Relaxed));
            let port = self.port.load(Ordering::Relaxed);
            let scope = self.scope.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            return present.then(|| CancelTarget {
                addr: decode(ip, port, scope),
                pid: (key >> 32) as u32 as i32,
                secret: key as u32 as i32,
            });
        }
    }
}

/// An address as its IP's bits and a word of port, family and flow info.
fn encode(addr: &SocketAddr) -> (u128, u64) {
    match addr {
        SocketAddr::V4(a) => (u128::from(a.ip().to_bits()), u64::from(a.port())),
        SocketAddr::V6(a) => {
            let word = u64::from(a.port()) | 1 << 16 | u64::from(a.flowinfo()) << 32;
            (a.ip().to_bits(), word)
        }
    }
}

/// The address [`encode`] made those words of.
fn decode(ip: u128, word: u64, scope: u32) -> SocketAddr {
    let port = word as u16;
    if word & 1 << 16 == 0 {
        let ip = Ipv4Addr::from_bits(ip as u32);
        return SocketAddr::V4(SocketAddrV4::new(ip, port));
    }
    let ip = Ipv6Addr::from_bits(ip);
    SocketAddr::V6(SocketAddrV6::new(ip, port, (word >> 32) as u32, scope))
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

    #[test]
    fn a_forward_reads_the_upstream_of_one_attach_never_a_mix_of_two() {
        let a = target();
        let b = CancelTarget {
            addr: SocketAddr::V6(SocketAddrV6::new("fe80::1:2".parse().unwrap(), 6432, 9, 3)),
            pid: -5,
            secret: i32::MIN,
        };
        let slot = Arc::new(CancelSlot {
            secret: 1,
            target: Attached::default(),
            forwards: AtomicUsize::new(0),
        });
        let writer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                for i in 0..200_000 {
                    slot.set(if i % 3 == 2 {
                        None
                    } else if i % 2 == 0 {
                        Some(a)
                    } else {
                        Some(b)
                    });
                }
            })
        };
        // Bounded by the writer's loop, not by time: a torn read fails whenever it happens.
        while !writer.is_finished() {
            if let Some(t) = slot.target.read() {
                assert!(t == a || t == b, "a torn read: {t:?}");
            }
        }
        writer.join().unwrap();
        slot.set(Some(b));
        assert_eq!(slot.target.read(), Some(b));
        slot.set(None);
        assert_eq!(slot.target.read(), None);
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
