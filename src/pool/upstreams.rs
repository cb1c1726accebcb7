//! The registry of a pool's open upstream connections, for `SHOW SERVERS`: each one's id,
//! addresses, lease generation, when it connected and was last handed out, and whether a
//! client holds it now.
//!
//! # Design
//!
//! A connection is listed once when it is made part of the pool and unlisted when it is
//! dropped (one short lock each, off the per-transaction path). Being handed out and given
//! back are relaxed stores on the connection's own entry ([`InUse`]), with no lock and no
//! clock read: the time handed out is the checkout stamp deadpool already took, kept as
//! microseconds since a process-wide base and turned into wall-clock time only when
//! `SHOW SERVERS` asks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::upstream::Upstream;

/// What `SHOW SERVERS` shows about one upstream connection. Holds no secret.
#[derive(Debug)]
pub struct UpstreamInfo {
    /// Unique in the process.
    pub id: u64,
    /// The generation of the lease it logged in with.
    pub generation: u64,
    /// The upstream role it logged in as (never its password).
    pub role: String,
    /// PostgreSQL's address.
    pub addr: Option<SocketAddr>,
    /// The proxy's end of the socket.
    pub local: Option<SocketAddr>,
    /// PostgreSQL's backend process id.
    pub pid: i32,
    /// When it was opened.
    pub connected_at: SystemTime,
    active: AtomicBool,
    /// When it was last handed out, in microseconds since [`BASE`] plus one; 0 never.
    last_request: AtomicU64,
}

impl UpstreamInfo {
    /// True while a client holds it.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// When it was last handed to a client.
    pub fn last_request(&self) -> Option<SystemTime> {
        match self.last_request.load(Ordering::Relaxed) {
            0 => None,
            us => Some(BASE.1 + Duration::from_micros(us - 1)),
        }
    }
}

/// Every open connection of one pool.
#[derive(Debug, Default)]
pub struct Upstreams {
    live: Mutex<HashMap<u64, Arc<UpstreamInfo>>>,
}

/// One instant on both clocks, taken when the first connection is listed: checkout stamps
/// (monotonic) are stored relative to it and shown as wall-clock time.
static BASE: LazyLock<(Instant, SystemTime)> =
    LazyLock::new(|| (Instant::now(), SystemTime::now()));

/// Ids across every pool, so `SHOW SERVERS` rows are unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Upstreams {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<UpstreamInfo>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists `up` until the returned [`Listed`] is dropped.
    pub(super) fn list(self: &Arc<Self>, up: &Upstream) -> Listed {
        // Taken before any checkout stamp of this connection, so none is earlier than it.
        LazyLock::force(&BASE);
        let tcp = up.stream.tcp();
        let info = Arc::new(UpstreamInfo {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: up.generation(),
            role: up.lease.username.clone(),
            addr: tcp.peer_addr().ok(),
            local: tcp.local_addr().ok(),
            pid: up.cancel.pid,
            connected_at: SystemTime::now(),
            active: AtomicBool::new(false),
            last_request: AtomicU64::new(0),
        });
        self.live().insert(info.id, info.clone());
        Listed {
            registry: self.clone(),
            info,
        }
    }

    /// Every open connection, ordered by id.
    pub fn all(&self) -> Vec<Arc<UpstreamInfo>> {
        let mut all: Vec<Arc<UpstreamInfo>> = self.live().values().cloned().collect();
        all.sort_by_key(|i| i.id);
        all
    }
}

/// A connection's place in [`Upstreams`]; dropping it unlists the connection.
#[derive(Debug)]
pub struct Listed {
    registry: Arc<Upstreams>,
    info: Arc<UpstreamInfo>,
}

impl Listed {
    /// The connection's entry.
    pub fn info(&self) -> &UpstreamInfo {
        &self.info
    }

    /// Marks the connection handed out at `at` (a monotonic stamp already taken) until the
    /// returned guard is dropped.
    pub(super) fn in_use(&self, at: Instant) -> InUse {
        let since = at.saturating_duration_since(BASE.0).as_micros();
        let stamp = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
        self.info.last_request.store(stamp, Ordering::Relaxed);
        self.info.active.store(true, Ordering::Relaxed);
        InUse(self.info.clone())
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.registry.live().remove(&self.info.id);
    }
}

/// Held beside a checked-out connection: it shows as active until given back.
#[derive(Debug)]
pub struct InUse(Arc<UpstreamInfo>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.active.store(false, Ordering::Relaxed);
    }
}
