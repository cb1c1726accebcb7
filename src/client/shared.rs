//! The state every client task reads: local users, the pools by (database, user), cancel
//! keys, the registry of logged-in clients and the proxy's limits. Built by the wiring
//! (`app`); what a reload may change ([`Serving`]) is swapped whole, the rest is fixed at
//! start.
//!
//! # Design
//!
//! [`Serving`] sits behind a std `RwLock<Arc<_>>`: a login takes the read lock once, for as
//! long as it takes to clone the `Arc`, and works on that snapshot; a reload builds the next
//! snapshot aside and swaps it in under the write lock. The data path never touches the lock:
//! a session keeps the [`PoolEntry`] it logged in with, and only looks again between requests
//! once that entry is retired ([`Tenure`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ClientError;
use super::cancel::CancelRegistry;
use super::handshake::ConsoleLogin;
use super::stop::Clients;
use super::stream::ClientStream;
use crate::auth::LocalPassword;
use crate::config::{AuthType, Config, PoolMode};
use crate::credentials::Credentials;
use crate::pool::Pool;

/// One pool and how clients use it. Every session keeps a clone, so the clone is two
/// pointers: the pool's fixed parts, shared, and the entry's own [`Tenure`] count.
#[derive(Clone)]
pub struct PoolEntry {
    parts: Arc<PoolParts>,
    /// Whether a reload took this pool out of service, and how many still hold it.
    pub tenure: Tenure,
}

/// What every holder of a [`PoolEntry`] shares (reached through it by `Deref`).
pub struct PoolParts {
    /// The upstream connections.
    pub pool: Pool,
    /// Transaction or session pooling.
    pub mode: PoolMode,
    /// Run before a session-mode upstream is reused.
    pub reset_query: Arc<str>,
    /// How PostgreSQL reports the startup settings clients of this pool sent.
    pub reported: Arc<super::settings::greeting::ReportedCache>,
}

impl PoolEntry {
    /// A pool's entry, in service.
    pub fn new(parts: PoolParts) -> PoolEntry {
        PoolEntry {
            parts: Arc::new(parts),
            tenure: Tenure::default(),
        }
    }
}

impl std::ops::Deref for PoolEntry {
    type Target = PoolParts;

    fn deref(&self) -> &PoolParts {
        &self.parts
    }
}

/// A pool entry's standing in the running config. Every clone of the entry (the serving
/// map's, each session's) holds one count, so a retired pool knows when its last client left
/// without any bookkeeping on the data path.
///
/// Retiring is a flag, read with one load; idle sessions do not each wait on it (that would
/// be a waiter added and removed per transaction): whoever retires pools wakes every client
/// once afterwards ([`Clients::nudge_all`]), and an idle session looks at the flag then.
#[derive(Clone, Debug, Default)]
pub struct Tenure(Arc<AtomicBool>);

impl Tenure {
    /// Takes the pool out of service: sessions on it move to its successor (if any) at their
    /// next request, and it closes once nobody holds it. Idle sessions notice when woken by
    /// [`Clients::nudge_all`], which must follow.
    pub fn retire(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once a reload retired the pool.
    pub fn is_retired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Whether two entries are the same pool (one carried over by a reload).
    pub fn same(&self, other: &Tenure) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many entries (map, sessions, the drain) hold this pool.
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

/// The pools by database name, then local user name.
#[derive(Clone, Default)]
pub struct Pools(HashMap<String, HashMap<String, PoolEntry>>);

impl Pools {
    /// Adds the pool serving `user` on `database`.
    pub fn insert(&mut self, database: &str, user: &str, entry: PoolEntry) {
        self.0
            .entry(database.to_owned())
            .or_default()
            .insert(user.to_owned(), entry);
    }

    /// The pool for a (database, user) pair, if the config defines one.
    pub fn get(&self, database: &str, user: &str) -> Option<&PoolEntry> {
        self.0.get(database)?.get(user)
    }

    /// Records a database that clients may ask for, even if no local user may use it (its
    /// access list), so such a login is refused as "no privilege", not "no such database".
    pub fn add_database(&mut self, database: &str) {
        self.0.entry(database.to_owned()).or_default();
    }

    /// Whether the config defines `database` (whoever may use it).
    pub fn has_database(&self, database: &str) -> bool {
        self.0.contains_key(database)
    }

    /// The pools of one database, by local user name.
    pub fn of_database(&self, database: &str) -> impl Iterator<Item = &PoolEntry> {
        self.0.get(database).into_iter().flat_map(|p| p.values())
    }

    /// Every pool, as (database, user, entry).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &PoolEntry)> {
        self.0
            .iter()
            .flat_map(|(db, users)| users.iter().map(move |(u, e)| (db.as_str(), u.as_str(), e)))
    }
}

/// The admin console's entry point: serves an authenticated admin user on database
/// `pglease` until it leaves. Defined here so `client` needs no `admin` import; the `admin`
/// folder implements it and the wiring sets it in [`Shared::console`].
pub type ConsoleEntry = Arc<
    dyn Fn(
            Arc<Shared>,
            ClientStream,
            ConsoleLogin,
        ) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>
        + Send
        + Sync,
>;

/// What a reload may change, swapped whole (see the module's design).
#[derive(Clone, Default)]
pub struct Serving {
    /// Local users, their passwords already turned into verifiers.
    pub users: HashMap<String, LocalPassword>,
    /// The pools clients are served from; a (database, user) pair the access list refuses has
    /// none.
    pub pools: Pools,
    /// Each credentials entry's rotator handle: current lease, state, `rotate_now`.
    pub credentials: HashMap<String, Credentials>,
    /// The config in service (`admin_users`, `SHOW CONFIG`); keys that need a restart keep
    /// their running values here.
    pub config: Arc<Config>,
}

/// State every client task reads: fixed after start, except [`Serving`] (swapped by a
/// reload) and what sits behind its own handles (cancel registry, clients).
pub struct Shared {
    /// Users, pools and credentials of the running config; read through [`Shared::serving`].
    pub serving: RwLock<Arc<Serving>>,
    /// Proxy-issued cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Every logged-in client, so a shutdown can tell each one to leave.
    pub clients: Arc<Clients>,
    /// Keys the fake SCRAM salt of unknown users, so probing cannot tell users apart.
    pub mock_key: [u8; 32],
    /// The preferred client authentication method.
    pub auth_type: AuthType,
    /// Largest client message accepted.
    pub max_message_size: usize,
    /// `max_prepared_statements`: statements tracked per upstream in transaction mode; 0 is
    /// off (named statements pass through untracked).
    pub max_prepared_statements: usize,
    /// Time a client has to finish logging in (`client_login_timeout`).
    pub client_login_timeout: Duration,
    /// Open client connections against `max_client_conn`.
    pub admission: Arc<super::admission::Admission>,
    /// The idle and query timeouts every session watches.
    pub timeouts: super::timers::Timeouts,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
    /// The certificate served to clients that ask for TLS; `None` answers SSLRequest `N`.
    pub client_tls: Option<Arc<crate::tls::server::ServerTls>>,
    /// `client_tls = "require"`: plaintext logins are refused.
    pub client_tls_required: bool,
    /// How the admin console asks for a reload or a shutdown.
    pub control: super::control::Control,
    /// The admin console; `None` refuses database `pglease` with a clear error.
    pub console: Option<ConsoleEntry>,
    /// Failed logins and errors sent to clients, for `/metrics`.
    pub instruments: super::instruments::ClientInstruments,
}

impl Shared {
    /// The running config's users, pools and credentials, as one consistent snapshot.
    pub fn serving(&self) -> Arc<Serving> {
        // A poisoned lock still holds a whole snapshot: swaps replace the Arc in one store.
        match self.serving.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `next` in service; returns the snapshot it replaced.
    pub fn replace_serving(&self, next: Serving) -> Arc<Serving> {
        let mut slot = match self.serving.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *slot, Arc::new(next))
    }

    /// The pool for a (database, user) pair, if the config defines one.
    pub fn pool(&self, database: &str, user: &str) -> Option<PoolEntry> {
        self.serving().pools.get(database, user).cloned()
    }

    /// Every pool in service, as (database, user, entry): a snapshot, so a reload while the
    /// caller walks it changes nothing under it.
    pub fn pools(&self) -> Vec<(String, String, PoolEntry)> {
        let serving = self.serving();
        serving
            .pools
            .iter()
            .map(|(db, user, entry)| (db.to_owned(), user.to_owned(), entry.clone()))
            .collect()
    }

    /// The config in service.
    pub fn config(&self) -> Arc<Config> {
        self.serving().config.clone()
    }

    /// Each credentials entry's rotator handle, by name.
    pub fn credentials(&self) -> HashMap<String, Credentials> {
        self.serving().credentials.clone()
    }
}
