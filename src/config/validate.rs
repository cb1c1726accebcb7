//! Cross-checks on a loaded [`Config`]: names that must exist or be unique, identifier rules,
//! ranges, and the lifecycle arithmetic (a lease must outlive its safety margin).
//!
//! These run on the structs, not the TOML, so a config built in code (`pglease dev`) passes
//! the same rules as a file. Every problem is collected; nothing stops at the first.
//!
//! Warnings (a config that loads but would strand or drop objects) are collected the same way,
//! by [`warnings`], into [`Config::warnings`].
//!
//! This file owns the entry point and the rules every section shares (identifiers, key paths);
//! `serving` checks `[proxy]`, `[[users]]` and `[[databases]]`, and `credentials` checks each
//! `[credentials.NAME]` entry and its source.

mod credentials;
mod serving;

pub use credentials::plaintext_remote_host;

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Config, SourceConfig};

/// PostgreSQL truncates names longer than this (NAMEDATALEN - 1); we refuse them instead, so a
/// name never silently means something else upstream.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Every cross-check problem in `config`. Databases naming a credentials entry listed in
/// `broken_credentials` (present in the file but unreadable) are not reported again.
pub(super) fn check(config: &Config, broken_credentials: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Problems::default();
    serving::check_proxy(&config.proxy, config, &mut problems);
    serving::check_users(config, &mut problems);
    serving::check_databases(config, broken_credentials, &mut problems);
    for (name, credentials) in &config.credentials {
        credentials::check_credentials(name, credentials, &mut problems);
    }
    problems.0
}

/// What loads but should be heard about (see [`Config::warnings`]), each `"<path>: <message>"`.
pub(super) fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Problems::default();
    let transaction_mode = config
        .databases
        .iter()
        .any(|d| d.pool_mode == super::PoolMode::Transaction);
    if config.proxy.max_prepared_statements == 0 && transaction_mode {
        warnings.add(
            "proxy.max_prepared_statements",
            "0 turns statement tracking off: in transaction mode a client's named prepared \
             statements then reach other clients' upstreams, where they can collide or be run \
             by another client",
        );
    }
    for (name, entry) in &config.credentials {
        let path = credentials_path(name);
        match &entry.source {
            SourceConfig::Issuer(issuer) => {
                credentials::issuer_warnings(&path, issuer, &mut warnings);
            }
            SourceConfig::Vault(vault) => {
                if let Some(host) = plaintext_remote_host(&vault.address) {
                    warnings.add(
                        format_args!("{path}.address"),
                        format_args!(
                            "plain http:// to {host}, which is not loopback: the Vault token and \
                             database passwords would cross the network unencrypted; use https://"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    warnings.0
}

/// Collected problems (or warnings), each `"<path>: <message>"`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    /// A name PostgreSQL (or the protocol) will see: not empty, no NUL, at most 63 bytes.
    fn identifier(&mut self, path: impl std::fmt::Display, name: &str) {
        if let Some(message) = identifier_problem(name) {
            self.add(path, message);
        }
    }

    fn nonzero(&mut self, path: impl std::fmt::Display, value: Duration) {
        if value.is_zero() {
            self.add(path, "must be longer than 0s");
        }
    }
}

fn identifier_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.contains('\0') {
        Some("must not contain a NUL byte".to_owned())
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "is {} bytes long; PostgreSQL names are at most {MAX_IDENTIFIER_BYTES}",
            name.len()
        ))
    } else {
        None
    }
}

/// The key path of a credentials entry, quoting names that are not bare TOML keys so the path
/// can be pasted back into the file.
pub(super) fn credentials_path(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        format!("credentials.{name}")
    } else {
        format!("credentials.{name:?}")
    }
}

#[cfg(test)]
mod tests;
