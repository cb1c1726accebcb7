//! Ending clients from outside their own task: every logged-in client is registered here, so
//! a shutdown can tell each one to leave at its next idle point.
//!
//! # Design
//!
//! A client registers once per connection (one short lock); after that, watching for the
//! signal costs one atomic load and an [`AtomicWaker`] registration per wakeup, with no lock,
//! so transaction mode can afford to watch it between every two transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// One client's "please leave" flag.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    waker: AtomicWaker,
}

impl Stop {
    /// Ready once the client has been told to leave; otherwise arranges a wake-up for then.
    pub fn poll_stopped(&self, cx: &Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Checked again: the signal may have fired between the load and the registration.
        if self.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once the client has been told to leave.
    pub async fn stopped(&self) {
        std::future::poll_fn(|cx| self.poll_stopped(cx)).await
    }

    /// True once the client has been told to leave.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn fire(&self) {
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Every logged-in client's [`Stop`].
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Stop>>>,
    /// Set by [`Clients::stop_all`]: a client registering afterwards is stopped at once.
    closing: AtomicBool,
}

impl Clients {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Stop>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a client for its whole connection; dropping the registration removes it.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Stop::default());
        self.live().insert(id, stop.clone());
        if self.closing.load(Ordering::Acquire) {
            stop.fire();
        }
        Registration {
            clients: self.clone(),
            id,
            stop,
        }
    }

    /// Tells every client, present and future, to leave at its next idle point.
    pub fn stop_all(&self) {
        self.closing.store(true, Ordering::Release);
        let all: Vec<Arc<Stop>> = self.live().values().cloned().collect();
        for stop in all {
            stop.fire();
        }
    }

    /// How many clients are connected.
    pub fn count(&self) -> usize {
        self.live().len()
    }
}

/// A client's place in [`Clients`].
#[derive(Debug)]
pub struct Registration {
    clients: Arc<Clients>,
    id: u64,
    /// This client's signal.
    pub stop: Arc<Stop>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.live().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_all_reaches_present_and_later_clients_and_departures_unregister() {
        let clients = Arc::new(Clients::default());
        let a = clients.register();
        let b = clients.register();
        drop(b);
        assert_eq!(clients.count(), 1);
        let waiting = tokio::spawn({
            let stop = a.stop.clone();
            async move { stop.stopped().await }
        });
        tokio::task::yield_now().await;
        clients.stop_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting client was not woken")
            .unwrap();
        let late = clients.register();
        assert!(late.stop.is_stopped(), "a client arriving during shutdown");
    }
}
