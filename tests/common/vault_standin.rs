//! An in-process stand-in for a Vault (or OpenBao) server, answering the endpoints pglease uses
//! the way Vault's HTTP API documents them, so the `vault` source is tested end to end.
//!
//! Like Vault's database secrets engine it acts on the test cluster for real: a dynamic lease
//! is a `CREATE ROLE … LOGIN PASSWORD … VALID UNTIL …` (as the superuser), a renewal moves
//! `VALID UNTIL` (never past the role's max_ttl), a revocation drops the role, and a static
//! role rotation is an `ALTER ROLE … PASSWORD`. Tokens have TTLs, renew-self moves them (capped
//! at their max), and AppRole/Kubernetes logins issue new ones. A lease belongs to the token
//! that created it and is revoked when that token expires or is revoked, as in Vault. Every
//! request is recorded (with its arrival time) so tests can assert what pglease sent.
//!
//! [`Mode`] switches the whole server at run time between answering, the ways Vault fails
//! (sealed, rate limited, hanging, port closed) and redirecting like a standby.

mod endpoints;
mod leases;
mod server;
mod tls;
mod tokens;

pub use server::Mode;

// Each test binary compiles the stand-in; only tests/vault.rs uses this.
#[allow(unused_imports)]
pub use endpoints::rfc3339;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `sys/leases/revoke`.
    Revoked,
    /// The token that created it expired.
    TokenExpired,
    /// The token that created it was revoked (`revoke-self` or by an operator).
    TokenRevoked,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// HTTP method, e.g. `PUT`.
    pub method: String,
    /// Path including `/v1/`.
    pub path: String,
    /// The `X-Vault-Namespace` header, if sent.
    pub namespace: Option<String>,
    /// Whether an `X-Vault-Token` header was sent.
    pub token_sent: bool,
    /// The JSON body (`Null` when there was none).
    pub body: serde_json::Value,
}

/// A `sys/leases/renew` the stand-in granted: what was asked and what was given (seconds).
#[derive(Debug, Clone)]
pub struct Renewal {
    pub lease_id: String,
    pub increment: u64,
    pub granted: u64,
}

/// A dynamic lease the stand-in issued.
#[derive(Debug, Clone)]
pub struct LeaseRecord {
    /// The PostgreSQL role created for it.
    pub role: String,
    pub issued: SystemTime,
    /// Current `VALID UNTIL`.
    pub expires: SystemTime,
    /// `issued + max_ttl`: no renewal goes past it.
    pub max_until: SystemTime,
    pub revoked: bool,
    /// Accessor of the token whose request created it.
    pub token_accessor: Option<String>,
    /// Set when its ending began.
    pub ended_by: Option<Ended>,
}

/// The lifetime of tokens the stand-in issues. `ttl` zero means a token that never expires.
#[derive(Debug, Clone, Copy)]
pub struct TokenSpec {
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub renewable: bool,
}

impl TokenSpec {
    /// A token that never expires (like a root token).
    pub fn forever() -> TokenSpec {
        TokenSpec {
            ttl: Duration::ZERO,
            max_ttl: Duration::ZERO,
            renewable: false,
        }
    }

    /// A renewable token living `ttl`, renewable up to `max_ttl` after issue.
    pub fn renewable(ttl: Duration, max_ttl: Duration) -> TokenSpec {
        TokenSpec {
            ttl,
            max_ttl,
            renewable: true,
        }
    }
}

struct Token {
    accessor: String,
    spec: TokenSpec,
    /// `None` for a token that never expires.
    expires: Option<Instant>,
    max_expires: Option<Instant>,
}

struct DynamicRole {
    member_of: String,
    default_ttl: Duration,
    max_ttl: Duration,
}

struct StaticRole {
    username: String,
    password: String,
    rotation_period: Duration,
    rotated_at: Instant,
    last_rotation: String,
}

struct AppRole {
    role_id: String,
    secret_id: String,
    spec: TokenSpec,
}

struct KubeRole {
    role: String,
    jwt: String,
    spec: TokenSpec,
}

#[derive(Default)]
struct State {
    mode: Mode,
    refuse_renewals: bool,
    tokens: HashMap<String, Token>,
    /// Keyed by `mount/name`.
    dynamic_roles: HashMap<String, DynamicRole>,
    static_roles: HashMap<String, StaticRole>,
    leases: HashMap<String, LeaseRecord>,
    /// Keyed by auth mount.
    approles: HashMap<String, AppRole>,
    kube_roles: HashMap<String, KubeRole>,
    requests: Vec<Recorded>,
    renewals: Vec<Renewal>,
}

impl State {
    fn issue_token(&mut self, spec: TokenSpec) -> (String, String) {
        let token = format!("hvs.{}", random(24));
        let accessor = random(24);
        let now = Instant::now();
        let forever = spec.ttl.is_zero();
        self.tokens.insert(
            token.clone(),
            Token {
                accessor: accessor.clone(),
                spec,
                expires: (!forever).then(|| now + spec.ttl),
                max_expires: (!forever).then(|| now + spec.max_ttl.max(spec.ttl)),
            },
        );
        (token, accessor)
    }
}

struct Inner {
    state: Mutex<State>,
    /// Superuser connection that creates, alters and drops roles, as Vault's plugin would.
    admin: tokio_postgres::Client,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running stand-in; stops when dropped.
pub struct VaultStandin {
    addr: SocketAddr,
    ca_pem: Option<String>,
    tls: Option<TlsAcceptor>,
    inner: Arc<Inner>,
    /// The accept loop, which owns every connection; `None` while the port is closed.
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    reaper: tokio::task::JoinHandle<()>,
}

impl Drop for VaultStandin {
    fn drop(&mut self) {
        if let Some(task) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        self.reaper.abort();
    }
}

impl VaultStandin {
    /// Plain HTTP on 127.0.0.1:0.
    pub async fn start() -> VaultStandin {
        Self::start_with(None).await
    }

    /// HTTPS on 127.0.0.1:0 with a certificate from a fresh test CA; see [`Self::ca_pem`].
    pub async fn start_tls() -> VaultStandin {
        let (acceptor, ca_pem) = tls::server_with_test_ca();
        let mut standin = Self::start_with(Some(acceptor)).await;
        standin.ca_pem = Some(ca_pem);
        standin
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> VaultStandin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            admin: super::superuser().await,
        });
        let server = tokio::spawn(server::serve(listener, tls.clone(), inner.clone()));
        let reaper = tokio::spawn(tokens::reap(Arc::downgrade(&inner)));
        VaultStandin {
            addr,
            ca_pem: None,
            tls,
            inner,
            server: Mutex::new(Some(server)),
            reaper,
        }
    }

    /// The `address` for pglease's config.
    pub fn address(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The test CA's certificate (PEM) of a TLS stand-in.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Issues a token directly (as `vault token create` would).
    pub fn issue_token(&self, spec: TokenSpec) -> String {
        self.inner.lock().issue_token(spec).0
    }

    /// A dynamic role whose users are members of `member_of`.
    pub fn add_dynamic_role(
        &self,
        mount: &str,
        name: &str,
        member_of: &str,
        default_ttl: Duration,
        max_ttl: Duration,
    ) {
        let role = DynamicRole {
            member_of: member_of.to_owned(),
            default_ttl,
            max_ttl,
        };
        self.inner
            .lock()
            .dynamic_roles
            .insert(format!("{mount}/{name}"), role);
    }

    /// A static role managing `username`; like Vault, its password is rotated at creation.
    pub async fn add_static_role(&self, mount: &str, name: &str, username: &str) {
        let role = StaticRole {
            username: username.to_owned(),
            password: String::new(),
            rotation_period: Duration::from_secs(3600),
            rotated_at: Instant::now(),
            last_rotation: String::new(),
        };
        self.inner
            .lock()
            .static_roles
            .insert(format!("{mount}/{name}"), role);
        self.rotate_static(mount, name).await;
    }

    /// Rotates a static role's password now, as `POST {mount}/rotate-role/{name}` does.
    pub async fn rotate_static(&self, mount: &str, name: &str) {
        endpoints::rotate_static(&self.inner, &format!("{mount}/{name}"))
            .await
            .expect("static rotation");
    }

    /// The password a static role currently has.
    pub fn static_password(&self, mount: &str, name: &str) -> String {
        let state = self.inner.lock();
        state.static_roles[&format!("{mount}/{name}")]
            .password
            .clone()
    }

    /// An AppRole login at `auth/{mount}/login`.
    pub fn add_approle(&self, mount: &str, role_id: &str, secret_id: &str, spec: TokenSpec) {
        let role = AppRole {
            role_id: role_id.to_owned(),
            secret_id: secret_id.to_owned(),
            spec,
        };
        self.inner.lock().approles.insert(mount.to_owned(), role);
    }

    /// A Kubernetes login at `auth/{mount}/login` accepting `role` with `jwt`.
    pub fn add_kubernetes_role(&self, mount: &str, role: &str, jwt: &str, spec: TokenSpec) {
        let role = KubeRole {
            role: role.to_owned(),
            jwt: jwt.to_owned(),
            spec,
        };
        self.inner.lock().kube_roles.insert(mount.to_owned(), role);
    }

    /// From now on the Kubernetes login accepts only `jwt` (the service account token rotated).
    pub fn set_kubernetes_jwt(&self, mount: &str, jwt: &str) {
        if let Some(role) = self.inner.lock().kube_roles.get_mut(mount) {
            role.jwt = jwt.to_owned();
        }
    }

    /// Revokes `token` and the leases it created, as `vault token revoke` does; the next
    /// request with it is answered 403.
    pub async fn revoke_token(&self, token: &str) {
        tokens::revoke_token(&self.inner, token, Ended::TokenRevoked).await;
    }

    /// Revokes every token and so every lease they created.
    pub async fn revoke_all_tokens(&self) {
        let all: Vec<String> = self.inner.lock().tokens.keys().cloned().collect();
        for token in all {
            self.revoke_token(&token).await;
        }
    }

    /// Whether `token` is still known (not expired, not revoked).
    pub fn token_alive(&self, token: &str) -> bool {
        let state = self.inner.lock();
        state
            .tokens
            .get(token)
            .is_some_and(|t| t.expires.is_none_or(|e| Instant::now() < e))
    }

    /// Accessors of the tokens still known (not expired, not revoked).
    pub fn live_accessors(&self) -> Vec<String> {
        let state = self.inner.lock();
        let now = Instant::now();
        state
            .tokens
            .values()
            .filter(|t| t.expires.is_none_or(|e| now < e))
            .map(|t| t.accessor.clone())
            .collect()
    }

    /// While set, `sys/leases/renew` is refused with 400.
    pub fn refuse_renewals(&self, refuse: bool) {
        self.inner.lock().refuse_renewals = refuse;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// Requests to `path` (with `/v1/`).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let state = self.inner.lock();
        state
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every granted lease renewal so far.
    pub fn renewals(&self) -> Vec<Renewal> {
        self.inner.lock().renewals.clone()
    }

    /// A dynamic lease by id.
    pub fn lease(&self, lease_id: &str) -> Option<LeaseRecord> {
        self.inner.lock().leases.get(lease_id).cloned()
    }

    /// Every dynamic lease issued so far, by id.
    pub fn leases(&self) -> HashMap<String, LeaseRecord> {
        self.inner.lock().leases.clone()
    }
}

/// A response body for hyper.
fn full(bytes: Vec<u8>) -> Full<Bytes> {
    Full::new(Bytes::from(bytes))
}

fn random(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}
