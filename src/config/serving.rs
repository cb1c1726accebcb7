//! The serving side of the config: `[proxy]` (listeners, limits, timeouts), `[[users]]` (who
//! may log in to the proxy) and `[[databases]]` (what they may ask for, and where its pool
//! reaches PostgreSQL), with the defaults of every key.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// PgBouncer's default for `max_prepared_statements`: statements kept per upstream.
pub const DEFAULT_MAX_PREPARED_STATEMENTS: usize = 200;

/// Default `max_client_conn` (see [`ProxyConfig::max_client_conn`] for why).
pub const DEFAULT_MAX_CLIENT_CONN: usize = 5000;

/// `[proxy]`: settings of the proxy process itself. Every key has a default, so the section
/// may be left out entirely. The timeouts that are always on must be longer than 0s; those
/// whose default is off (`client_idle_timeout`, `query_timeout`, ...) take `"0s"` for off.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// `host:port` PostgreSQL clients connect to. Kept as text so a host name such as
    /// `localhost:6432` resolves at bind time. Default `127.0.0.1:6432`.
    pub listen: String,
    /// `host:port` of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`); none by default.
    pub admin_listen: Option<String>,
    /// `/readyz` turns 503 when a pool's lease is closer than this to its cliff (its hard
    /// deadline), so traffic moves away before the lease stops working during a source
    /// outage. Capped at a tenth of each lease's lifetime, so a short lease's normal rotation
    /// (at `rotate_at` of its lifetime, well before the cliff) never makes the proxy unready.
    /// Default 30s.
    pub readiness_margin: Duration,
    /// Local users allowed into the admin console (database `pglease`); each must be a
    /// `[[users]]` name.
    pub admin_users: Vec<String>,
    /// How clients prove their password to the proxy. Default SCRAM-SHA-256.
    pub auth_type: AuthType,
    /// Largest message accepted from either side, in bytes; anything larger is a protocol
    /// error, never an allocation. Default 64 MiB, at least 8 KiB, at most 1 GiB.
    pub max_message_size: usize,
    /// Transaction mode: named prepared statements kept per upstream connection (least
    /// recently used ones are closed to make room). Client statement names are mapped to
    /// proxy-chosen names, so clients never see each other's statements. Default 200, like
    /// PgBouncer; 0 turns tracking off and named statements pass through untouched, which is
    /// unsafe in transaction mode (a client may reach another client's statement, or lose
    /// its own between transactions).
    pub max_prepared_statements: usize,
    /// How long a client may wait for an upstream before it gets an error. Default 120s.
    pub query_wait_timeout: Duration,
    /// How long opening and authenticating one upstream may take. Default 5s.
    pub connect_timeout: Duration,
    /// How long a client has to finish startup and authentication (the old key
    /// `login_timeout` is still read, with a warning). Default 60s, as PgBouncer: long enough
    /// for a slow TLS handshake over a bad link, short enough that half-open logins do not
    /// pile up.
    pub client_login_timeout: Duration,
    /// Most client connections open at once (logging in or logged in); clients above it are
    /// refused with PostgreSQL's "too many clients" before any authentication work. Cancel
    /// requests and admin-console logins still get through. Default 5000: web fleets keep
    /// many idle clients open per pool, and PgBouncer's 100 is reached by a few app servers;
    /// each idle client costs a file descriptor and about 5 KiB (`benches/idle_clients.sh`),
    /// so 5000 stays well within a raised `RLIMIT_NOFILE`.
    pub max_client_conn: usize,
    /// A client idle outside a transaction this long is ended (PostgreSQL's
    /// `idle_session_timeout`). Default `0s`, off: a pooled idle client holds no upstream, so
    /// it costs PostgreSQL nothing.
    pub client_idle_timeout: Duration,
    /// A client idle inside a transaction this long is ended and its transaction rolled back
    /// (PostgreSQL's `idle_in_transaction_session_timeout`). Default 300s: such a client pins
    /// one of `pool_size` upstreams and holds its locks and snapshot; five idle minutes inside
    /// a transaction is almost always an application that forgot to commit. `0s` is off.
    pub idle_transaction_timeout: Duration,
    /// A request running longer than this is cancelled upstream (PostgreSQL's
    /// `statement_timeout`, enforced by the proxy). Default `0s`, off: how long a query may
    /// run is the application's business, and PostgreSQL's own setting is finer grained.
    pub query_timeout: Duration,
    /// Upstreams older than about this are closed when they come back to their pool (never
    /// mid-transaction), each with ±10% jitter so connections opened together do not all
    /// retire at once. Default 3600s, as PgBouncer; `0s` is off.
    pub server_lifetime: Duration,
    /// How long a client waits for an upstream before it may get one of the reserve pool's
    /// extra connections (`reserve_pool_size`). Default 5s, as PgBouncer.
    pub reserve_pool_timeout: Duration,
    /// Upstreams idle this long (since they came back to their pool) are closed in the
    /// background, so pools shrink after a burst. Default 600s.
    pub idle_timeout: Duration,
    /// On shutdown, how long clients get to finish before they are cut off. Default 30s.
    pub shutdown_timeout: Duration,
    /// `application_name` sent upstream, so DBAs can tell pglease's sessions apart.
    /// Default `pglease`.
    pub application_name: String,
    /// Tokio worker threads; `None` means one per CPU.
    pub workers: Option<usize>,
    /// Whether clients may (`allow`) or must (`require`) use TLS. Default `disable`: TLS
    /// needs a certificate, which a fresh install does not have.
    pub client_tls: ClientTls,
    /// PEM certificate chain served to clients, leaf first; needed unless `disable`.
    pub client_tls_cert: Option<PathBuf>,
    /// PEM private key of `client_tls_cert`.
    pub client_tls_key: Option<PathBuf>,
    /// How log lines are written on stderr; `pglease --log-format` overrides it. Default
    /// `text`.
    pub log_format: LogFormat,
}

/// `client_tls`: TLS between clients and the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTls {
    /// `"disable"`: SSLRequest is answered `N`; the default.
    #[default]
    Disable,
    /// `"allow"`: TLS for clients that ask for it, plaintext for the others.
    Allow,
    /// `"require"`: plaintext logins are refused (cancel requests still work).
    Require,
}

/// `log_format`: one human-readable line per event, or one JSON object per line for a log
/// pipeline (which can route audit events on their `audit` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `"text"`: the default.
    #[default]
    Text,
    /// `"json"`: one JSON object per line, the event's fields at its top level.
    Json,
}

impl LogFormat {
    /// Every format with the word that names it in the config and on the command line.
    pub const NAMES: [(&'static str, LogFormat); 2] =
        [("text", LogFormat::Text), ("json", LogFormat::Json)];

    /// The format a config or command-line word names, if any.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, format)| format)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".to_owned(),
            admin_listen: None,
            readiness_margin: Duration::from_secs(30),
            admin_users: Vec::new(),
            auth_type: AuthType::ScramSha256,
            max_message_size: 64 * 1024 * 1024,
            max_prepared_statements: DEFAULT_MAX_PREPARED_STATEMENTS,
            query_wait_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            client_login_timeout: Duration::from_secs(60),
            max_client_conn: DEFAULT_MAX_CLIENT_CONN,
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::from_secs(300),
            query_timeout: Duration::ZERO,
            server_lifetime: Duration::from_secs(3600),
            reserve_pool_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(30),
            application_name: "pglease".to_owned(),
            workers: None,
            client_tls: ClientTls::Disable,
            client_tls_cert: None,
            client_tls_key: None,
            log_format: LogFormat::Text,
        }
    }
}

/// How clients authenticate to the proxy (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthType {
    /// `"scram-sha-256"`: the default; the password never crosses the wire.
    #[default]
    ScramSha256,
    /// `"md5"`: for old drivers only; weaker, and needs an md5 hash or plaintext password.
    Md5,
}

/// `[[users]]`: one stable local login that applications use.
#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    /// The user name clients send in their startup message.
    pub name: String,
    /// A SCRAM-SHA-256 verifier, an md5 hash or a plaintext password, already resolved from
    /// `env:`/`file:`; the auth module decides which it is.
    pub password: Secret,
}

/// `[[databases]]`: a database clients may ask for, and how its pool reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The database name clients ask for. `pglease` is reserved for the admin console.
    pub name: String,
    /// Upstream host. Default `127.0.0.1`.
    pub host: String,
    /// Upstream port. Default 5432.
    pub port: u16,
    /// Upstream database name, when it differs from `name`; see [`Self::upstream_dbname`].
    pub dbname: Option<String>,
    /// When an upstream goes back to the pool. Default transaction.
    pub pool_mode: PoolMode,
    /// Most upstream connections per (database, user) pool. Default 20, at least 1.
    pub pool_size: usize,
    /// Upstreams the pool upkeep keeps open (on the current lease) even when idle, counted
    /// within `pool_size`, so the first requests after a quiet spell pay no login. Default 0,
    /// as PgBouncer: an idle pool costs PostgreSQL nothing.
    pub min_pool_size: usize,
    /// Extra upstreams beyond `pool_size` a pool may open for clients that waited
    /// `reserve_pool_timeout`; they close as soon as they are idle. Default 0, none: the
    /// reserve is for absorbing bursts on purpose, sized against `max_connections`.
    pub reserve_pool_size: usize,
    /// Name of the `[credentials.NAME]` entry whose lease logs in upstream.
    pub credentials: String,
    /// Run on an upstream before it is reused after a session-mode client, so no session
    /// state leaks to the next client. Default `DISCARD ALL`; empty disables it.
    pub reset_query: String,
    /// How pool connections use TLS (`upstream_tls`). Default `prefer`, as libpq.
    pub upstream_tls: UpstreamTlsMode,
    /// PEM file of the CAs an upstream's certificate must chain to; the system roots when
    /// absent. Used by `verify-ca` and `verify-full`.
    pub upstream_tls_ca: Option<PathBuf>,
    /// PEM client certificate chain presented to PostgreSQL (with `upstream_tls_key`).
    pub upstream_tls_cert: Option<PathBuf>,
    /// PEM private key of `upstream_tls_cert`.
    pub upstream_tls_key: Option<PathBuf>,
    /// Lets the upstream login answer a cleartext or md5 password request without TLS.
    /// Off by default: either exposes the lease (or a replayable hash) to the network.
    pub allow_plaintext_password: bool,
    /// The access list (`users`): the `[[users]]` names that may use this database. `None`
    /// (the key left out) lets every local user in; a user not on a list is refused after
    /// authentication, with PostgreSQL's error for a missing CONNECT privilege.
    pub users: Option<Vec<String>>,
}

impl DatabaseConfig {
    /// A database with every default, for configs built in code.
    pub fn new(name: impl Into<String>, credentials: impl Into<String>) -> Self {
        DatabaseConfig {
            name: name.into(),
            host: "127.0.0.1".to_owned(),
            port: 5432,
            dbname: None,
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            credentials: credentials.into(),
            reset_query: "DISCARD ALL".to_owned(),
            upstream_tls: UpstreamTlsMode::default(),
            upstream_tls_ca: None,
            upstream_tls_cert: None,
            upstream_tls_key: None,
            allow_plaintext_password: false,
            users: None,
        }
    }

    /// Whether local user `user` may use this database (its access list, if any).
    pub fn admits(&self, user: &str) -> bool {
        self.users
            .as_ref()
            .is_none_or(|list| list.iter().any(|u| u == user))
    }

    /// The database to connect to upstream: `dbname` if set, else the name clients use.
    pub fn upstream_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }
}

/// When a client gives its upstream back (`pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// `"transaction"`: at each ReadyForQuery with status Idle. The default.
    #[default]
    Transaction,
    /// `"session"`: when the client disconnects.
    Session,
}

/// Whether and how a pool connection is encrypted (`upstream_tls`), with libpq's `sslmode`
/// meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTlsMode {
    /// `"disable"`: plaintext only.
    Disable,
    /// `"prefer"`: TLS when the server accepts it, without verifying the certificate; plaintext
    /// when it declines. The default, as in libpq.
    #[default]
    Prefer,
    /// `"require"`: TLS or no connection; the certificate is not verified.
    Require,
    /// `"verify-ca"`: TLS with a certificate chaining to a trusted CA; the name is not checked.
    VerifyCa,
    /// `"verify-full"`: as `verify-ca`, and the certificate must name `host`.
    VerifyFull,
}
