//! `PAUSE` and `RESUME` of one pool: while paused, new checkouts wait; upstreams already
//! checked out finish their work.
//!
//! # Design
//!
//! One atomic flag read on every checkout (a relaxed load when not paused, so the hot path
//! pays nothing else); paused checkouts wait on a [`Notify`] that `RESUME` wakes all at once.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A pool's pause flag.
#[derive(Debug, Default)]
pub struct PauseGate {
    paused: AtomicBool,
    resumed: Notify,
}

impl PauseGate {
    /// New checkouts wait from now on.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Waiting and future checkouts go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
    }

    /// Whether checkouts wait.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Returns at once unless paused; then when resumed.
    pub async fn pass(&self) {
        while self.is_paused() {
            let mut resumed = pin!(self.resumed.notified());
            // Registered before the second look, so a resume in between still wakes us.
            resumed.as_mut().enable();
            if !self.is_paused() {
                return;
            }
            resumed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_paused_gate_holds_until_resumed() {
        let gate = Arc::new(PauseGate::default());
        gate.pass().await;
        gate.pause();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "passed a paused gate");
        gate.resume();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("not released by resume")
            .unwrap();
    }
}
