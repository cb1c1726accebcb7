//! The TOML configuration contract: every key an operator may write, its type and its default.
//!
//! The key names are part of the contract in DESIGN §4: rename nothing, only add. Loading is
//! split in three steps so that an operator sees every mistake at once, not one per restart:
//! `load` reads each section into these structs (collecting syntax, type and unknown-key
//! problems), `secret_ref` resolves `env:`/`file:` secrets, and `validate` cross-checks
//! the result (names that must exist, ranges, lifecycle arithmetic).

mod duration;
mod load;
mod secret_ref;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub use duration::{DurationError, format_duration, parse_duration};
pub use secret_ref::{EnvLookup, MAX_SECRET_FILE_BYTES, SecretRefError, resolve_secret};

/// The whole configuration: one proxy, the local users who may connect, the databases they may
/// ask for, and the named upstream credential sources those databases log in with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[proxy]`: listeners, limits and timeouts shared by every pool.
    pub proxy: ProxyConfig,
    /// `[[users]]`: the stable local credentials clients authenticate with.
    pub users: Vec<UserConfig>,
    /// `[[databases]]`: what clients may ask for and where each one lives upstream.
    pub databases: Vec<DatabaseConfig>,
    /// `[credentials.NAME]`: one rotator per entry, keyed by NAME (sorted, so iteration and
    /// `SHOW LEASES` are stable).
    pub credentials: BTreeMap<String, CredentialsConfig>,
}

impl Config {
    /// Parses `text`, resolves its `env:`/`file:` secrets from the process environment and
    /// validates it. Relative `file:` paths (and other relative paths) are relative to
    /// `base_dir`. On failure the error lists every problem found.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_toml_str_with_env(text, base_dir, &|name| std::env::var(name))
    }

    /// [`Config::from_toml_str`] with `env:` references looked up through `env` instead of the
    /// process environment, so tests (which run in parallel, in a crate that forbids `unsafe`)
    /// can supply variables without touching global state.
    pub fn from_toml_str_with_env(
        text: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        load::from_toml_str(text, base_dir, env)
    }

    /// Reads and loads the config file at `path`; relative paths inside it are taken from the
    /// file's own directory, so the result does not depend on the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load::from_file(path)
    }

    /// Re-checks a config built in code (as `pglease dev` does) with the same rules a loaded
    /// file passes through.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_problems(validate::check(self, &Default::default()))
    }
}

/// Every problem found in a config, not just the first, so one `pglease check` run is enough.
///
/// Each problem starts with the key path it is about (`"databases[1].pool_size: must be at
/// least 1"`, `"proxy: unknown key `listn`"`) and never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem, in document order of the sections.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn from_problems(problems: Vec<String>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// `[proxy]`: settings of the proxy process itself. Every key has a default, so the section
/// may be left out entirely. Every timeout except `shutdown_timeout` must be longer than 0s.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// `host:port` PostgreSQL clients connect to. Kept as text so a host name such as
    /// `localhost:6432` resolves at bind time. Default `127.0.0.1:6432`.
    pub listen: String,
    /// `host:port` of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`); none by default.
    pub admin_listen: Option<String>,
    /// Local users allowed into the admin console (database `pglease`); each must be a
    /// `[[users]]` name.
    pub admin_users: Vec<String>,
    /// How clients prove their password to the proxy. Default SCRAM-SHA-256.
    pub auth_type: AuthType,
    /// Largest message accepted from either side, in bytes; anything larger is a protocol
    /// error, never an allocation. Default 64 MiB, at least 8 KiB, at most 1 GiB.
    pub max_message_size: usize,
    /// How long a client may wait for an upstream before it gets an error. Default 120s.
    pub query_wait_timeout: Duration,
    /// How long opening and authenticating one upstream may take. Default 5s.
    pub connect_timeout: Duration,
    /// How long a client has to finish startup and authentication. Default 60s.
    pub login_timeout: Duration,
    /// Idle upstreams older than this are closed, so pools shrink after a burst. Default 600s.
    pub idle_timeout: Duration,
    /// On shutdown, how long clients get to finish before they are cut off. Default 30s.
    pub shutdown_timeout: Duration,
    /// `application_name` sent upstream, so DBAs can tell pglease's sessions apart.
    /// Default `pglease`.
    pub application_name: String,
    /// Tokio worker threads; `None` means one per CPU.
    pub workers: Option<usize>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".to_owned(),
            admin_listen: None,
            admin_users: Vec::new(),
            auth_type: AuthType::ScramSha256,
            max_message_size: 64 * 1024 * 1024,
            query_wait_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(30),
            application_name: "pglease".to_owned(),
            workers: None,
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
    /// Name of the `[credentials.NAME]` entry whose lease logs in upstream.
    pub credentials: String,
    /// Run on an upstream before it is reused after a session-mode client, so no session
    /// state leaks to the next client. Default `DISCARD ALL`; empty disables it.
    pub reset_query: String,
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
            credentials: credentials.into(),
            reset_query: "DISCARD ALL".to_owned(),
        }
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

/// `[credentials.NAME]`: one source of upstream leases and the rules for rotating them.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialsConfig {
    /// Where leases come from (the `source` key and its own keys).
    pub source: SourceConfig,
    /// Fraction of a lease's lifetime after which its successor is obtained. Default 0.66,
    /// strictly between 0 and 1.
    pub rotate_at: f64,
    /// Connections still on a lease this long before it expires are closed (the hard
    /// deadline). Default 30s.
    pub safety_margin: Duration,
    /// Whether a renewable lease that still has busy connections is renewed. Default true.
    pub renew: bool,
}

/// Default `rotate_at`: about two thirds, leaving a third of the lease to rotate in.
const DEFAULT_ROTATE_AT: f64 = 0.66;
/// Default `safety_margin`.
const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_secs(30);

impl CredentialsConfig {
    /// An entry with the default lifecycle, for configs built in code.
    pub fn new(source: SourceConfig) -> Self {
        CredentialsConfig {
            source,
            rotate_at: DEFAULT_ROTATE_AT,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            renew: true,
        }
    }
}

/// The `source` of a credentials entry, with the keys that only make sense for it.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `source = "static"`: one fixed login that never rotates.
    Static(StaticSourceConfig),
    /// `source = "issuer"`: pglease creates short-lived roles itself.
    Issuer(IssuerConfig),
    /// `source = "vault"`: HashiCorp Vault's database secrets engine.
    Vault(VaultConfig),
    /// `source = "file"`: a JSON file another program keeps up to date.
    File(FileSourceConfig),
    /// `source = "exec"`: a command that prints the credentials as JSON.
    Exec(ExecSourceConfig),
}

impl SourceConfig {
    /// The `source` value as written in the config; a stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Static(_) => "static",
            SourceConfig::Issuer(_) => "issuer",
            SourceConfig::Vault(_) => "vault",
            SourceConfig::File(_) => "file",
            SourceConfig::Exec(_) => "exec",
        }
    }
}

/// `source = "static"`.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticSourceConfig {
    /// Upstream role name.
    pub username: String,
    /// Upstream password (resolved from `env:`/`file:`).
    pub password: Secret,
}

/// `source = "issuer"`: the embedded issuer (DESIGN §5).
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// PostgreSQL URL of a role with CREATEROLE; a secret because it usually holds a password.
    pub admin_url: Secret,
    /// Roles each issued role is made a member of: what it may do.
    pub member_of: Vec<String>,
    /// Lifetime of each issued role. Default 15m; longer than `safety_margin`.
    pub ttl: Duration,
    /// Renewal never extends a role past this age. Default 1h; at least `ttl`.
    pub max_ttl: Duration,
    /// Issued roles are named `<prefix>_<random>`; only roles with this prefix are ever
    /// dropped. Default `pglease`; `[a-z_][a-z0-9_]*`, at most 20 bytes.
    pub prefix: String,
    /// Replaces the built-in CREATE ROLE; templates with `{{name}}`, `{{password}}`,
    /// `{{expiration}}`.
    pub creation_statements: Option<Vec<String>>,
    /// Replaces the built-in renewal (ALTER ROLE … VALID UNTIL); same placeholders.
    pub renew_statements: Option<Vec<String>>,
    /// Replaces the built-in revocation (terminate, drop owned, drop role); same placeholders.
    pub revocation_statements: Option<Vec<String>>,
    /// Role that owns what issued roles create, so objects outlive each lease.
    pub act_as: Option<String>,
    /// On revocation, drop objects the issued role owns (true, the default) or, when false,
    /// reassign them to `act_as`, which must then be set.
    pub drop_owned: bool,
    /// How often expired roles with our prefix (left by a crash) are dropped. Default 5m.
    pub reap_interval: Duration,
}

impl IssuerConfig {
    /// An issuer with every default, for configs built in code (`pglease dev`).
    pub fn new(admin_url: Secret) -> Self {
        IssuerConfig {
            admin_url,
            member_of: Vec::new(),
            ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(60 * 60),
            prefix: "pglease".to_owned(),
            creation_statements: None,
            renew_statements: None,
            revocation_statements: None,
            act_as: None,
            drop_owned: true,
            reap_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// `source = "vault"`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultConfig {
    /// Vault's base URL, `http://` or `https://`.
    pub address: String,
    /// Mount path of the database secrets engine. Default `database`.
    pub mount: String,
    /// The Vault database role to read credentials for.
    pub role: String,
    /// Dynamic roles (`creds/`, new user per lease) or static roles (`static-creds/`).
    pub kind: VaultKind,
    /// Vault Enterprise namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// How pglease logs in to Vault (the `auth` table).
    pub auth: VaultAuth,
}

/// Which kind of Vault database role `role` is (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaultKind {
    /// `"dynamic"`: each read creates a new user with its own lease. The default.
    #[default]
    Dynamic,
    /// `"static"`: Vault rotates one existing user's password.
    Static,
}

/// `auth = { method = "…", … }`: how pglease obtains its Vault token.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultAuth {
    /// `method = "token"`: a token given directly.
    Token {
        /// The Vault token.
        token: Secret,
    },
    /// `method = "approle"`.
    AppRole {
        /// The AppRole role_id.
        role_id: Secret,
        /// The AppRole secret_id.
        secret_id: Secret,
        /// Mount path of the AppRole auth method. Default `approle`.
        mount: String,
    },
    /// `method = "kubernetes"`: the pod's service-account token.
    Kubernetes {
        /// The Vault role bound to the service account.
        role: String,
        /// Where the service-account JWT is read from (re-read at each login, as it rotates).
        jwt_path: PathBuf,
        /// Mount path of the Kubernetes auth method. Default `kubernetes`.
        mount: String,
    },
}

/// `source = "file"`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSourceConfig {
    /// JSON file with `username`, `password` and optional `expires_at`.
    pub path: PathBuf,
    /// How often the file is checked for changes. Default 5s.
    pub poll_interval: Duration,
}

/// `source = "exec"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSourceConfig {
    /// Program and arguments (no shell); prints the same JSON as the file source. Non-empty.
    pub command: Vec<String>,
    /// The command is killed if it runs longer than this. Default 10s.
    pub timeout: Duration,
    /// Run again after this long even without `expires_at`; `None` means only when the lease
    /// asks for it (rotate_at of its lifetime) or on `ROTATE`.
    pub refresh_interval: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "PGLEASE_TEST_ADMIN_URL" => Ok("postgres://admin:pw@db:5432/app".to_owned()),
            "PGLEASE_TEST_VAULT_TOKEN" => Ok("hvs.token".to_owned()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const FULL: &str = r#"
        [proxy]
        listen = "localhost:7000"
        admin_listen = "[::1]:9930"
        admin_users = ["ops"]
        auth_type = "md5"
        max_message_size = 1048576
        query_wait_timeout = "1m"
        connect_timeout = "2s"
        login_timeout = "45s"
        idle_timeout = "1h"
        shutdown_timeout = "0s"
        application_name = "proxy-a"
        workers = 2

        [[users]]
        name = "ops"
        password = "md5abc"

        [[databases]]
        name = "app"
        host = "db.internal"
        port = 5433
        dbname = "app_prod"
        pool_mode = "session"
        pool_size = 5
        credentials = "issued"
        reset_query = ""

        [[databases]]
        name = "reports"
        credentials = "vault"

        [credentials.issued]
        source = "issuer"
        admin_url = "env:PGLEASE_TEST_ADMIN_URL"
        member_of = ["app_rw", "app_ro"]
        ttl = "10m"
        max_ttl = "2h30m"
        prefix = "lease_"
        creation_statements = ["CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"]
        renew_statements = ["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}'"]
        revocation_statements = ["DROP ROLE \"{{name}}\""]
        act_as = "app_owner"
        drop_owned = false
        reap_interval = "1m"
        rotate_at = 0.5
        safety_margin = "1m"
        renew = false

        [credentials.vault]
        source = "vault"
        address = "https://vault:8200"
        role = "reports"
        kind = "static"
        namespace = "team"
        ca_file = "ca.pem"
        auth = { method = "token", token = "env:PGLEASE_TEST_VAULT_TOKEN" }

        [credentials.file]
        source = "file"
        path = "/run/secrets/db.json"
        poll_interval = "500ms"

        [credentials.exec]
        source = "exec"
        command = ["get-creds", "app"]
        timeout = "3s"
        refresh_interval = "1d"

        [credentials.fixed]
        source = "static"
        username = "app"
        password = "literal"
    "#;

    #[test]
    fn full_config_round_trips_including_defaults() {
        let config = Config::from_toml_str_with_env(FULL, Path::new("/etc/pglease"), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        let proxy = ProxyConfig {
            listen: "localhost:7000".into(),
            admin_listen: Some("[::1]:9930".into()),
            admin_users: vec!["ops".into()],
            auth_type: AuthType::Md5,
            max_message_size: 1 << 20,
            query_wait_timeout: secs(60),
            connect_timeout: secs(2),
            login_timeout: secs(45),
            idle_timeout: secs(3600),
            shutdown_timeout: Duration::ZERO,
            application_name: "proxy-a".into(),
            workers: Some(2),
        };
        assert_eq!(config.proxy, proxy);
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].password.expose(), "md5abc");
        let app = &config.databases[0];
        assert_eq!(app.upstream_dbname(), "app_prod");
        assert_eq!((app.host.as_str(), app.port), ("db.internal", 5433));
        assert_eq!((app.pool_mode, app.pool_size), (PoolMode::Session, 5));
        assert_eq!(app.reset_query, "");
        // Every key left out takes the documented default.
        assert_eq!(config.databases[1], DatabaseConfig::new("reports", "vault"));
        assert_eq!(config.databases[1].upstream_dbname(), "reports");

        let issued = &config.credentials["issued"];
        assert_eq!(
            (issued.rotate_at, issued.safety_margin, issued.renew),
            (0.5, secs(60), false)
        );
        let SourceConfig::Issuer(issuer) = &issued.source else {
            panic!("not an issuer: {issued:?}")
        };
        assert_eq!(issuer.admin_url.expose(), "postgres://admin:pw@db:5432/app");
        assert_eq!(issuer.member_of, ["app_rw", "app_ro"]);
        assert_eq!((issuer.ttl, issuer.max_ttl), (secs(600), secs(9000)));
        assert_eq!(issuer.prefix, "lease_");
        assert_eq!(issuer.creation_statements.as_ref().map(Vec::len), Some(1));
        assert_eq!(issuer.renew_statements.as_ref().map(Vec::len), Some(1));
        assert_eq!(issuer.revocation_statements.as_ref().map(Vec::len), Some(1));
        assert_eq!(issuer.act_as.as_deref(), Some("app_owner"));
        assert!(!issuer.drop_owned);
        assert_eq!(issuer.reap_interval, secs(60));

        let vault = &config.credentials["vault"];
        assert_eq!(
            (vault.rotate_at, vault.safety_margin, vault.renew),
            (0.66, secs(30), true)
        );
        let expected_vault = SourceConfig::Vault(VaultConfig {
            address: "https://vault:8200".into(),
            mount: "database".into(),
            role: "reports".into(),
            kind: VaultKind::Static,
            namespace: Some("team".into()),
            ca_file: Some(PathBuf::from("/etc/pglease/ca.pem")),
            auth: VaultAuth::Token {
                token: Secret::from("hvs.token"),
            },
        });
        assert_eq!(vault.source, expected_vault);
        let expected_file = SourceConfig::File(FileSourceConfig {
            path: "/run/secrets/db.json".into(),
            poll_interval: Duration::from_millis(500),
        });
        assert_eq!(config.credentials["file"].source, expected_file);
        let expected_exec = SourceConfig::Exec(ExecSourceConfig {
            command: vec!["get-creds".into(), "app".into()],
            timeout: secs(3),
            refresh_interval: Some(secs(86_400)),
        });
        assert_eq!(config.credentials["exec"].source, expected_exec);
        let SourceConfig::Static(fixed) = &config.credentials["fixed"].source else {
            panic!("not static")
        };
        assert_eq!(
            (fixed.username.as_str(), fixed.password.expose()),
            ("app", "literal")
        );
    }

    #[test]
    fn omitted_sections_and_keys_take_their_defaults() {
        let text = r#"
            [[users]]
            name = "app"
            password = "pw"
            [[databases]]
            name = "app"
            credentials = "app"
            [credentials.app]
            source = "issuer"
            admin_url = "postgres://a@b/c"
        "#;
        let config = Config::from_toml_str_with_env(text, Path::new("/"), &env).unwrap();
        assert_eq!(config.proxy, ProxyConfig::default());
        assert_eq!(config.proxy.listen, "127.0.0.1:6432");
        assert_eq!(config.proxy.max_message_size, 64 * 1024 * 1024);
        assert_eq!(config.proxy.query_wait_timeout, secs(120));
        let expected = CredentialsConfig::new(SourceConfig::Issuer(IssuerConfig::new(
            Secret::from("postgres://a@b/c"),
        )));
        assert_eq!(config.credentials["app"], expected);
        assert_eq!(expected.rotate_at, 0.66);
    }

    #[test]
    fn code_built_config_is_validated_by_the_same_rules() {
        let mut config = Config::default();
        config.users.push(UserConfig {
            name: "app".into(),
            password: Secret::from("pw"),
        });
        config.databases.push(DatabaseConfig::new("app", "app"));
        let source = SourceConfig::Issuer(IssuerConfig::new(Secret::from("postgres://a@b/c")));
        config
            .credentials
            .insert("app".into(), CredentialsConfig::new(source));
        assert_eq!(config.validate(), Ok(()));

        config.databases[0].pool_size = 0;
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.problems,
            ["databases[0].pool_size: must be at least 1"]
        );
        assert_eq!(
            error.to_string(),
            "databases[0].pool_size: must be at least 1"
        );
    }

    #[test]
    fn error_display_is_one_problem_per_line() {
        let error = ConfigError {
            problems: vec!["a: one".into(), "b: two".into()],
        };
        assert_eq!(error.to_string(), "a: one\nb: two");
    }

    #[test]
    fn source_kind_matches_the_config_word() {
        let exec = SourceConfig::Exec(ExecSourceConfig {
            command: vec!["x".into()],
            timeout: secs(1),
            refresh_interval: None,
        });
        assert_eq!(exec.kind(), "exec");
        let issuer = SourceConfig::Issuer(IssuerConfig::new(Secret::from("postgres://")));
        assert_eq!(issuer.kind(), "issuer");
    }
}
