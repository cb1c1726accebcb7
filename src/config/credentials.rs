//! The `[credentials.NAME]` entries: the lease lifecycle keys every entry shares, and the keys
//! of each `source` (static, issuer, vault, file, exec), with their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// `[credentials.NAME]`: one source of upstream leases and the rules for rotating them.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialsConfig {
    /// Where leases come from (the `source` key and its own keys).
    pub source: SourceConfig,
    /// Fraction of a lease's lifetime after which its successor is obtained. Default 0.66,
    /// strictly between 0 and 1.
    pub rotate_at: f64,
    /// Connections still on a lease this long before it expires are closed (the hard
    /// deadline). Default `None`: a tenth of each lease's lifetime, at most 30s, so leases
    /// from seconds to days work unchanged.
    pub safety_margin: Option<Duration>,
    /// Whether a renewable lease that still has busy connections is renewed. Default true.
    pub renew: bool,
}

/// Default `rotate_at`: about two thirds, leaving a third of the lease to rotate in.
pub(super) const DEFAULT_ROTATE_AT: f64 = 0.66;

impl CredentialsConfig {
    /// An entry with the default lifecycle, for configs built in code.
    pub fn new(source: SourceConfig) -> Self {
        CredentialsConfig {
            source,
            rotate_at: DEFAULT_ROTATE_AT,
            safety_margin: None,
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
    /// Lifetime of each issued role. Default 15m; longer than `safety_margin` when that is set.
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
    /// The stable owner of what the application creates: each issued role is a member of it
    /// and logs in acting as it (`SET role`), so objects outlive every lease. Without it,
    /// objects belong to the lease's own role (a `pglease check` warning).
    pub act_as: Option<String>,
    /// What revocation does with objects the issued role still owns. Default
    /// [`OnRevoke::Reassign`]: nothing is dropped unless the operator chose so.
    pub on_revoke: OnRevoke,
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
            on_revoke: OnRevoke::Reassign,
            reap_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// `on_revoke`: what happens to objects an issued role still owns when it is dropped (those
/// it created after leaving `act_as`, e.g. with `SET ROLE NONE`, or all of them without
/// `act_as`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRevoke {
    /// `"reassign"`, the default: `REASSIGN OWNED` to `act_as` or, without it, to the admin
    /// role, so no application object is ever lost to a rotation.
    #[default]
    Reassign,
    /// `"drop_objects"`: `DROP OWNED`, objects and all. Only ever the operator's explicit
    /// choice, and warned about by `pglease check`.
    DropObjects,
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
        /// The Vault token (as read at load).
        token: Secret,
        /// Where a `file:` token came from. The file is read again whenever the token needs
        /// replacing (renewal refused, max TTL near, a 403), because Vault Agent's token sink
        /// rewrites it when it logs in again.
        token_file: Option<PathBuf>,
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
    /// `env = { NAME = "value" }`: the command's whole environment, besides a default `PATH`
    /// ([`crate::credentials::exec_source::DEFAULT_PATH`], unless set here). Nothing of
    /// pglease's own environment is passed on, so what the command sees is in the config.
    /// Values are resolved like secrets (`env:NAME` passes one of pglease's variables on
    /// explicitly), because they often carry tokens.
    pub env: BTreeMap<String, Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_kind_matches_the_config_word() {
        let exec = SourceConfig::Exec(ExecSourceConfig {
            command: vec!["x".into()],
            timeout: Duration::from_secs(1),
            refresh_interval: None,
            env: BTreeMap::new(),
        });
        assert_eq!(exec.kind(), "exec");
        let issuer = SourceConfig::Issuer(IssuerConfig::new(Secret::from("postgres://")));
        assert_eq!(issuer.kind(), "issuer");
    }
}
