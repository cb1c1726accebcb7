//! Proxy-issued cancel keys. Each client gets its own (pid, secret); a CancelRequest carrying it
//! is forwarded to whichever upstream is running that client's query at the time, with the
//! upstream's own key. Upstream keys never reach clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::upstream::{CancelTarget, maintenance};

/// One client's cancel slot: its secret, and the upstream serving it right now (if any).
#[derive(Debug)]
pub struct CancelSlot {
    secret: i32,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    /// Records which upstream serves the client (`None` when it has none). Called at each
    /// attach and release: an uncontended lock, twice per transaction.
    pub fn set(&self, target: Option<CancelTarget>) {
        if let Ok(mut t) = self.target.lock() {
            *t = target;
        }
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
    /// exactly as PostgreSQL does, so keys cannot be probed.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = {
            let Ok(slots) = self.slots.lock() else { return };
            match slots.get(&pid) {
                Some(slot) if slot.secret == secret => slot.target.lock().ok().and_then(|t| *t),
                _ => None,
            }
        };
        if let Some(target) = target {
            if let Err(e) = maintenance::cancel(target).await {
                debug!(error = %e, "forwarding cancel request failed");
            }
        }
    }
}
