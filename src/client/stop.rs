//! The registry of logged-in clients: what the admin console shows about each one (`SHOW
//! CLIENTS`), its state (active, waiting, idle), and the signals that end it from outside its
//! own task (a shutdown tells each one to leave at its next idle point; `KILL` ends one now).
//!
//! # Design
//!
//! A client registers once per connection (one short lock); after that, watching for the
//! signals costs one atomic load and an [`AtomicWaker`] registration per wakeup, with no lock,
//! so transaction mode can afford to watch them between every two transactions. A state
//! change is one atomic swap on the client's entry plus one add on each of the two pool
//! gauges it moves between ([`PoolStats`]), also without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;

use crate::pool::PoolStats;

mod info;

pub use info::{ClientInfo, ClientState, Names};

/// One client's "please leave" flag (a shutdown) and its "end now" flag (`KILL`).
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    killed: AtomicBool,
    /// Both signals are watched from the client's own task only, so one waker serves both.
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

    /// Ready once an administrator ended the client; otherwise arranges a wake-up for then.
    pub fn poll_killed(&self, cx: &Context<'_>) -> Poll<()> {
        if self.is_killed() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_killed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once an administrator ended the client.
    pub async fn killed(&self) {
        std::future::poll_fn(|cx| self.poll_killed(cx)).await
    }

    /// True once an administrator ended the client.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Ready with the first signal that ends an idle wait for the client: `KILL`, a
    /// shutdown (only when `idle`, between transactions) or `look_again()` (a retired pool,
    /// see [`crate::client::Tenure`]); otherwise arranges a wake-up for any of them (and for
    /// [`Clients::nudge_all`]), with one waker registration for all three.
    pub fn poll_idle(
        &self,
        cx: &Context<'_>,
        idle: bool,
        look_again: impl Fn() -> bool,
    ) -> Poll<Signal> {
        let check = || {
            if self.is_killed() {
                Some(Signal::Killed)
            } else if idle && self.is_stopped() {
                Some(Signal::Stopped)
            } else if look_again() {
                Some(Signal::LookAgain)
            } else {
                None
            }
        };
        if let Some(signal) = check() {
            return Poll::Ready(signal);
        }
        self.waker.register(cx.waker());
        // Checked again: a signal may have fired between the loads and the registration.
        check().map_or(Poll::Pending, Poll::Ready)
    }

    fn fire(&self) {
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// What ended a session's idle wait from outside its task (see [`Stop::poll_idle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An administrator ended the client.
    Killed,
    /// The proxy shuts down.
    Stopped,
    /// Something the session watches changed (its pool was retired): it looks again.
    LookAgain,
}

/// One registered client: what `SHOW CLIENTS` lists and the signals that end it.
#[derive(Debug)]
pub struct ClientEntry {
    /// Fixed facts of the connection.
    pub info: ClientInfo,
    /// Its signals (kept in the entry: one allocation per client, not two).
    pub stop: Stop,
    /// A [`ClientState`] as its number.
    state: AtomicU8,
    /// Since when it waits for an upstream, in microseconds after [`Clients`]' epoch; read
    /// only while the state is waiting (`maxwait`).
    waiting_since: AtomicU64,
}

impl ClientEntry {
    /// Its state now.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }
}

/// Every logged-in client's entry.
#[derive(Debug)]
pub struct Clients {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ClientEntry>>>,
    /// Set by [`Clients::stop_all`]: a client registering afterwards is stopped at once.
    closing: AtomicBool,
    /// What `waiting_since` counts from.
    epoch: Instant,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            next_id: AtomicU64::new(1),
            live: Mutex::default(),
            closing: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Clients {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ClientEntry>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new client id, taken when the connection is accepted so its log span carries it
    /// from the start; the same id is registered at login, shown by `SHOW CLIENTS` and taken
    /// by `KILL`.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a client for its whole connection, idle and counted in `stats`' idle gauge;
    /// dropping the registration removes it (and its count).
    pub fn register(self: &Arc<Self>, info: ClientInfo, stats: Arc<PoolStats>) -> Registration {
        let id = info.id;
        let entry = Arc::new(ClientEntry {
            info,
            stop: Stop::default(),
            state: AtomicU8::new(ClientState::Idle as u8),
            waiting_since: AtomicU64::new(0),
        });
        stats.clients_idle.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, entry.clone());
        if self.closing.load(Ordering::Acquire) {
            entry.stop.fire();
        }
        Registration {
            clients: self.clone(),
            entry,
            stats,
        }
    }

    /// Ends client `id` now (`KILL`): it gets FATAL 57P01 and its upstream is cleaned up as
    /// if it had vanished. False when no such client is connected.
    pub fn kill(&self, id: u64) -> bool {
        let Some(entry) = self.live().get(&id).cloned() else {
            return false;
        };
        entry.stop.kill();
        true
    }

    /// Every registered client, ordered by id.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<Arc<ClientEntry>> = self.live().values().cloned().collect();
        all.sort_by_key(|e| e.info.id);
        all
    }

    /// How long since the registry was made (the proxy started).
    pub fn uptime(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }

    /// How long `entry` has waited for an upstream; zero unless it is waiting.
    pub fn waited(&self, entry: &ClientEntry) -> std::time::Duration {
        if entry.state() != ClientState::Waiting {
            return std::time::Duration::ZERO;
        }
        let since = entry.waiting_since.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        std::time::Duration::from_micros(now.saturating_sub(since))
    }

    /// Tells every client, present and future, to leave at its next idle point.
    pub fn stop_all(&self) {
        self.closing.store(true, Ordering::Release);
        for entry in self.list() {
            entry.stop.fire();
        }
    }

    /// Wakes every client once, so each idle one looks again at what it watches (a reload
    /// retired pools: [`crate::client::Tenure::retire`]). Costs one wake-up per client.
    pub fn nudge_all(&self) {
        for entry in self.list() {
            entry.stop.waker.wake();
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
    entry: Arc<ClientEntry>,
    /// The gauges of the client's pool, moved with its state.
    stats: Arc<PoolStats>,
}

impl Registration {
    /// This client's signals.
    pub fn stop(&self) -> &Stop {
        &self.entry.stop
    }

    /// The client's entry, for a future that watches its signals while the session is
    /// borrowed elsewhere.
    pub fn entry(&self) -> Arc<ClientEntry> {
        self.entry.clone()
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.entry.info.id
    }

    /// The client's fixed facts (who it logged in as, from where).
    pub fn info(&self) -> &ClientInfo {
        &self.entry.info
    }

    /// Records a state transition: the entry's state and the pool's gauges move together.
    pub fn set_state(&self, state: ClientState) {
        if state == ClientState::Waiting {
            let now = u64::try_from(self.clients.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.entry.waiting_since.store(now, Ordering::Relaxed);
        }
        let old = ClientState::from_u8(self.entry.state.swap(state as u8, Ordering::Relaxed));
        if old != state {
            gauge(&self.stats, old).fetch_sub(1, Ordering::Relaxed);
            gauge(&self.stats, state).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The client moved to another pool (a reload replaced its own): its count goes with it.
    pub fn move_to(&mut self, stats: Arc<PoolStats>) {
        let state = self.entry.state();
        gauge(&self.stats, state).fetch_sub(1, Ordering::Relaxed);
        gauge(&stats, state).fetch_add(1, Ordering::Relaxed);
        self.stats = stats;
    }
}

fn gauge(stats: &PoolStats, state: ClientState) -> &AtomicI64 {
    match state {
        ClientState::Active => &stats.clients_active,
        ClientState::Waiting => &stats.clients_waiting,
        ClientState::Idle => &stats.clients_idle,
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        gauge(&self.stats, self.entry.state()).fetch_sub(1, Ordering::Relaxed);
        self.clients.live().remove(&self.entry.info.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_all_reaches_present_and_later_clients_and_departures_unregister() {
        let clients = Arc::new(Clients::default());
        let stats = Arc::new(PoolStats::default());
        let a = clients.register(info(clients.next_id()), stats.clone());
        let b = clients.register(info(clients.next_id()), stats.clone());
        drop(b);
        assert_eq!(clients.count(), 1);
        let waiting = tokio::spawn({
            let entry = a.entry();
            async move { entry.stop.stopped().await }
        });
        tokio::task::yield_now().await;
        clients.stop_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting client was not woken")
            .unwrap();
        let late = clients.register(info(clients.next_id()), stats);
        assert!(
            late.stop().is_stopped(),
            "a client arriving during shutdown"
        );
    }

    fn info(id: u64) -> ClientInfo {
        ClientInfo {
            id,
            names: Names::new("u", "d", ""),
            peer: ([127, 0, 0, 1], 5000).into(),
            local: None,
            connected_at: std::time::SystemTime::now(),
            tls: false,
        }
    }

    #[test]
    fn state_changes_move_the_pool_gauges_and_kill_reaches_only_its_client() {
        let clients = Arc::new(Clients::default());
        let stats = Arc::new(PoolStats::default());
        let a = clients.register(info(clients.next_id()), stats.clone());
        let b = clients.register(info(clients.next_id()), stats.clone());
        a.set_state(ClientState::Waiting);
        a.set_state(ClientState::Active);
        b.set_state(ClientState::Waiting);
        let s = stats.snapshot();
        assert_eq!(
            (s.clients_active, s.clients_waiting, s.clients_idle),
            (1, 1, 0)
        );
        assert!(clients.kill(b.id()));
        assert!(b.stop().is_killed() && !a.stop().is_killed());
        assert!(!clients.kill(9999), "no such client");
        drop(b);
        a.set_state(ClientState::Idle);
        let s = stats.snapshot();
        assert_eq!(
            (s.clients_active, s.clients_waiting, s.clients_idle),
            (0, 0, 1)
        );
        drop(a);
        assert_eq!(stats.snapshot().clients_idle, 0);
    }
}
