//! Transaction mode's LISTEN/NOTIFY: one pglease-held listener connection per pool that holds
//! the union of the channels its clients listen on, and fans each notification out to the
//! clients subscribed to its channel.
//!
//! # Design
//!
//! A client's LISTEN cannot run on a pooled upstream (the next client would get its
//! notifications, and it would get none once it gave the upstream back). Instead the client
//! holds a [`Subscription`]: its channels are added to the listener's wanted set, and its
//! LISTEN is answered only after the listener's own `LISTEN` committed, so every notification
//! committed after the client's LISTEN returned reaches it, as with PostgreSQL. A channel is
//! `UNLISTEN`ed on the listener when its last subscriber leaves (UNLISTEN, `UNLISTEN *`, or the
//! client vanishing, which drops the subscription). With no channel wanted the connection is
//! closed; the first LISTEN opens it again with the pool's current lease.
//!
//! Each subscription has a bounded mailbox ([`MAX_QUEUED_BYTES`]). The session delivers what
//! it holds while the client is idle and after each request, never inside another reply. A
//! client that lets more pile up than that (it never reads, or sits in one transaction while
//! a flood arrives) is ended rather than silently missing notifications: its mailbox is
//! emptied, its channels are let go, and the session ends it with SQLSTATE 54000.
//!
//! The background task ([`task`]) owns the connection: it makes the wanted set true on it
//! (one Query of LISTEN/UNLISTEN statements per change), reads notifications, follows rotation
//! ([`handover`]: a new connection on the new lease takes over without losing or repeating a
//! notification), and reconnects with backoff when PostgreSQL goes away. Notifications sent
//! while no listener connection was up are lost, as they are for a client whose own
//! connection dropped. The connection holds its lease like every upstream does, so a lease is
//! revoked only after the listener left it; it is not counted in the pool's size.

mod conn;
mod handover;
mod task;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::credentials::Credentials;
use crate::upstream::UpstreamTarget;

/// Most notification bytes one client may have waiting; past it the client is ended.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Why a LISTEN could not be made true on the listener connection.
#[derive(Debug, Error)]
pub enum ListenError {
    /// The listener connection could not be opened or its LISTEN failed.
    #[error("the pool's listener connection could not LISTEN (is PostgreSQL up?)")]
    Unavailable,
    /// The pool is closed.
    #[error("pool is closed")]
    Closed,
}

/// The client let more than [`MAX_QUEUED_BYTES`] of notifications pile up.
#[derive(Debug, Error)]
#[error("more than {MAX_QUEUED_BYTES} bytes of notifications waited for this client")]
pub struct Overflowed;

/// A cheap, cloneable handle to one pool's listener.
#[derive(Clone)]
pub struct Listener(Arc<Shared>);

/// What the task, the subscriptions and the handle share.
struct Shared {
    target: UpstreamTarget,
    credentials: Credentials,
    /// The pool's instruments, where the listener's logins are counted too.
    instruments: super::PoolInstruments,
    state: Mutex<State>,
    /// Woken when the wanted channel set changes.
    changed: Notify,
    /// How far the task got: the newest wanted-set version it made true, and the newest one
    /// it failed to.
    confirmed: watch::Sender<Confirmed>,
    /// Cancelled when the pool closes; the task ends and its connection closes.
    closed: CancellationToken,
    next_id: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Confirmed {
    done: u64,
    failed: u64,
}

#[derive(Default)]
struct State {
    /// Subscriber ids per channel; a channel is here only while someone listens on it.
    channels: HashMap<Arc<str>, HashSet<u64>>,
    mailboxes: HashMap<u64, Arc<Mailbox>>,
    /// Bumped at every change of the channel set.
    version: u64,
    /// The task was started (it runs until the pool closes).
    running: bool,
}

impl Listener {
    /// A listener for the pool logging in to `target` with `credentials`; nothing is opened
    /// until the first LISTEN.
    pub fn new(
        target: UpstreamTarget,
        credentials: Credentials,
        instruments: super::PoolInstruments,
    ) -> Listener {
        Listener(Arc::new(Shared {
            target,
            credentials,
            instruments,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            confirmed: watch::Sender::new(Confirmed::default()),
            closed: CancellationToken::new(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// A subscription with no channel yet, for one client.
    pub fn subscribe(&self) -> Subscription {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        self.0.lock().mailboxes.insert(id, mailbox.clone());
        Subscription {
            id,
            mailbox,
            listener: self.clone(),
        }
    }

    /// Ends the task and closes its connection (the pool is closing).
    pub fn close(&self) {
        self.0.closed.cancel();
    }

    /// The channels the listener is asked to hold, for tests and `SHOW`-style views.
    pub fn channels(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .0
            .lock()
            .channels
            .keys()
            .map(|c| c.to_string())
            .collect();
        all.sort();
        all
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current version and the channels wanted in it.
    fn wanted(&self) -> (u64, Vec<Arc<str>>) {
        let state = self.lock();
        (state.version, state.channels.keys().cloned().collect())
    }

    fn confirm(&self, version: u64) {
        self.confirmed.send_modify(|c| c.done = c.done.max(version));
    }

    fn fail(&self, version: u64) {
        self.confirmed
            .send_modify(|c| c.failed = c.failed.max(version));
    }

    /// Hands one NotificationResponse frame to every subscriber of its channel.
    fn dispatch(&self, channel: &str, frame: &Bytes) {
        let state = self.lock();
        let Some((channel, ids)) = state.channels.get_key_value(channel) else {
            return;
        };
        for id in ids {
            if let Some(mailbox) = state.mailboxes.get(id) {
                mailbox.push(channel, frame);
            }
        }
    }
}

/// One client's channels on the pool's listener and the notifications waiting for it.
/// Dropping it (the client left) lets go of every channel.
pub struct Subscription {
    id: u64,
    mailbox: Arc<Mailbox>,
    listener: Listener,
}

impl Subscription {
    /// Listens on `channel`; returns once the listener connection's LISTEN committed.
    pub async fn listen(&self, channel: &str) -> Result<(), ListenError> {
        let shared = &self.listener.0;
        let (version, fresh) = {
            let mut state = shared.lock();
            let key = match state.channels.get_key_value(channel) {
                Some((k, _)) => k.clone(),
                None => Arc::from(channel),
            };
            let fresh = state.channels.entry(key).or_default().insert(self.id);
            state.version += 1;
            if !state.running {
                state.running = true;
                tokio::spawn(task::run(self.listener.0.clone()));
            }
            (state.version, fresh)
        };
        shared.changed.notify_one();
        let mut confirmed = shared.confirmed.subscribe();
        let wait = confirmed.wait_for(|c| c.done >= version || c.failed >= version);
        let timeout = shared.target.connect_timeout + CONFIRM_MARGIN;
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, wait) => match r {
                Ok(Ok(c)) if c.done >= version => Ok(()),
                _ => Err(ListenError::Unavailable),
            },
            () = shared.closed.cancelled() => Err(ListenError::Closed),
        };
        if outcome.is_err() && fresh {
            self.unlisten(channel);
        }
        outcome
    }

    /// True when this subscription listens on `channel`.
    pub fn listens_on(&self, channel: &str) -> bool {
        let state = self.listener.0.lock();
        state
            .channels
            .get(channel)
            .is_some_and(|ids| ids.contains(&self.id))
    }

    /// Stops listening on `channel` (nothing happens if it was not listened on). What is
    /// already queued for it is dropped, as PostgreSQL does after UNLISTEN.
    pub fn unlisten(&self, channel: &str) {
        self.let_go(|c| c == channel);
    }

    /// Stops listening on every channel (`UNLISTEN *`).
    pub fn unlisten_all(&self) {
        self.let_go(|_| true);
    }

    fn let_go(&self, which: impl Fn(&str) -> bool) {
        let shared = &self.listener.0;
        let mut changed = false;
        {
            let mut state = shared.lock();
            state.channels.retain(|channel, ids| {
                if which(channel) && ids.remove(&self.id) {
                    changed = true;
                }
                !ids.is_empty()
            });
            if changed {
                state.version += 1;
            }
        }
        self.mailbox.drop_channels(&which);
        if changed {
            shared.changed.notify_one();
        }
    }

    /// Appends the waiting notifications (whole NotificationResponse frames) to `out`. After
    /// an overflow the subscription lets go of its channels and only reports it.
    pub fn take(&self, out: &mut BytesMut) -> Result<(), Overflowed> {
        let mut queue = self.mailbox.lock();
        if queue.overflowed {
            drop(queue);
            self.unlisten_all();
            return Err(Overflowed);
        }
        for (_, frame) in queue.items.drain(..) {
            out.extend_from_slice(&frame);
        }
        queue.bytes = 0;
        Ok(())
    }

    /// Resolves when something may be waiting (a notification, or an overflow).
    pub async fn ready(&self) {
        self.mailbox.ready.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unlisten_all();
        self.listener.0.lock().mailboxes.remove(&self.id);
    }
}

/// How much longer than a connect a LISTEN may wait for the listener to confirm it.
const CONFIRM_MARGIN: Duration = Duration::from_secs(5);

/// One client's waiting notifications.
#[derive(Default)]
struct Mailbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Arc<str>, Bytes)>,
    bytes: usize,
    overflowed: bool,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, channel: &Arc<str>, frame: &Bytes) {
        let mut queue = self.lock();
        if queue.overflowed {
            return;
        }
        if queue.bytes + frame.len() > MAX_QUEUED_BYTES {
            warn!(
                queued = queue.items.len(),
                limit = MAX_QUEUED_BYTES,
                "a client let too many notifications pile up; it is ended"
            );
            queue.items.clear();
            queue.bytes = 0;
            queue.overflowed = true;
        } else {
            queue.bytes += frame.len();
            queue.items.push_back((channel.clone(), frame.clone()));
        }
        drop(queue);
        self.ready.notify_one();
    }

    fn drop_channels(&self, which: &impl Fn(&str) -> bool) {
        let mut queue = self.lock();
        let mut bytes = queue.bytes;
        queue.items.retain(|(channel, frame)| {
            let keep = !which(channel);
            if !keep {
                bytes -= frame.len();
            }
            keep
        });
        queue.bytes = bytes;
    }
}
