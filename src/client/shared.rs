//! The state every client task reads: local users, the pools by (database, user), cancel
//! keys, the registry of logged-in clients and the proxy's limits. Built once by the wiring
//! (`app`), immutable after start except what sits behind its own handles.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

/// One pool and how clients use it.
#[derive(Clone)]
pub struct PoolEntry {
    /// The upstream connections.
    pub pool: Pool,
    /// Transaction or session pooling.
    pub mode: PoolMode,
    /// Run before a session-mode upstream is reused.
    pub reset_query: Arc<str>,
    /// How PostgreSQL reports the startup settings clients of this pool sent.
    pub reported: Arc<super::settings::greeting::ReportedCache>,
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

/// State every client task reads: immutable after start, except what sits behind its own
/// handles (pools, cancel registry, clients).
pub struct Shared {
    /// Local users, their passwords already turned into verifiers.
    pub users: HashMap<String, LocalPassword>,
    /// The pools clients are served from.
    pub pools: Pools,
    /// Each credentials entry's rotator handle: current lease, state, `rotate_now`.
    pub credentials: HashMap<String, Credentials>,
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
    /// Time a client has to finish logging in.
    pub login_timeout: Duration,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
    /// The certificate served to clients that ask for TLS; `None` answers SSLRequest `N`.
    pub client_tls: Option<Arc<crate::tls::server::ServerTls>>,
    /// `client_tls = "require"`: plaintext logins are refused.
    pub client_tls_required: bool,
    /// How the admin console asks for a reload or a shutdown.
    pub control: super::control::Control,
    /// The config the proxy started from (`admin_users`, `SHOW CONFIG`).
    pub config: Arc<Config>,
    /// The admin console; `None` refuses database `pglease` with a clear error.
    pub console: Option<ConsoleEntry>,
    /// Failed logins and errors sent to clients, for `/metrics`.
    pub instruments: super::instruments::ClientInstruments,
}

impl Shared {
    /// The pool for a (database, user) pair, if the config defines one.
    pub fn pool(&self, database: &str, user: &str) -> Option<PoolEntry> {
        self.pools.get(database, user).cloned()
    }

    /// Every pool, as (database, user, entry).
    pub fn pools(&self) -> impl Iterator<Item = (&str, &str, &PoolEntry)> {
        self.pools.iter()
    }
}
