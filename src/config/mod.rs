//! The TOML configuration contract: every key an operator may write, its type and its default.
//!
//! The key names are part of the contract in DESIGN §4: rename nothing, only add. Loading is
//! split in three steps so that an operator sees every mistake at once, not one per restart:
//! `load` reads each section into these structs (collecting syntax, type and unknown-key
//! problems), `secret_ref` resolves `env:`/`file:` secrets, and `validate` cross-checks
//! the result (names that must exist, ranges, lifecycle arithmetic).
//!
//! The structs are split by topic, and `load` and `validate` follow the same cut: `serving`
//! holds `[proxy]`, `[[users]]` and `[[databases]]`; `credentials` holds `[credentials.NAME]`
//! and the keys of each source. Everything is re-exported here, so users write
//! `config::DatabaseConfig`, never the file it lives in.

mod credentials;
mod duration;
mod load;
mod secret_ref;
mod serving;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use credentials::{
    CredentialsConfig, ExecSourceConfig, FileSourceConfig, IssuerConfig, OnRevoke, SourceConfig,
    StaticSourceConfig, VaultAuth, VaultConfig, VaultKind,
};
pub use duration::{DurationError, format_duration, parse_duration};
pub use secret_ref::{
    EnvLookup, MAX_SECRET_FILE_BYTES, SecretRefError, exposed_mode, resolve_secret, warn_if_exposed,
};
pub use serving::{
    AuthType, ClientTls, DEFAULT_MAX_PREPARED_STATEMENTS, DatabaseConfig, LogFormat, PoolMode,
    ProxyConfig, UpstreamTlsMode, UserConfig,
};
pub use validate::plaintext_remote_host;

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
    /// What loads but an operator should hear about (e.g. a setting that leaves objects the
    /// application creates to each lease's role), one `"<path>: <message>"` per line like a
    /// problem. Filled by loading; `pglease check` prints them and the proxy logs them at
    /// start. Never holds a secret value.
    pub warnings: Vec<String>,
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

#[cfg(test)]
mod tests;
