//! Checks of the serving sections: listen addresses, proxy limits and timeouts, and the
//! `[[users]]` and `[[databases]]` entries (unique names, reserved names, credentials that
//! exist).

use std::collections::{BTreeMap, BTreeSet};

use super::{MAX_IDENTIFIER_BYTES, Problems, credentials_path};
use crate::config::{ClientTls, Config, DatabaseConfig, ProxyConfig, UpstreamTlsMode};

/// Smaller than this and ordinary startup packets or error messages would not fit.
const MIN_MESSAGE_SIZE: usize = 8 * 1024;
/// PostgreSQL itself never sends or accepts a message larger than 1 GiB.
const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;
/// The virtual database of the admin console.
const ADMIN_DATABASE: &str = "pglease";

/// Why `text` is not a usable `host:port`, if it is not. Only the shape is checked: resolving
/// the host is left to bind time, so `localhost:6432` is accepted.
pub(super) fn address_problem(text: &str) -> Option<&'static str> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Some("must be host:port, e.g. \"127.0.0.1:6432\"");
    };
    if port.parse::<u16>().is_err() {
        return Some("the port after the last `:` must be a number from 0 to 65535");
    }
    if host.is_empty() {
        return Some("the host before the port is missing");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Some("an IPv6 address must be in brackets, e.g. \"[::1]:6432\"");
    }
    None
}

pub(super) fn check_proxy(proxy: &ProxyConfig, config: &Config, problems: &mut Problems) {
    if let Some(message) = address_problem(&proxy.listen) {
        problems.add("proxy.listen", message);
    }
    if let Some(message) = proxy.admin_listen.as_deref().and_then(address_problem) {
        problems.add("proxy.admin_listen", message);
    }
    for (index, admin) in proxy.admin_users.iter().enumerate() {
        if !config.users.iter().any(|user| &user.name == admin) {
            problems.add(
                format_args!("proxy.admin_users[{index}]"),
                format_args!("`{admin}` is not the name of any [[users]] entry"),
            );
        }
    }
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&proxy.max_message_size) {
        problems.add(
            "proxy.max_message_size",
            format_args!("must be between {MIN_MESSAGE_SIZE} and {MAX_MESSAGE_SIZE} bytes"),
        );
    }
    problems.nonzero("proxy.query_wait_timeout", proxy.query_wait_timeout);
    problems.nonzero("proxy.connect_timeout", proxy.connect_timeout);
    problems.nonzero("proxy.client_login_timeout", proxy.client_login_timeout);
    problems.nonzero("proxy.idle_timeout", proxy.idle_timeout);
    problems.nonzero("proxy.reserve_pool_timeout", proxy.reserve_pool_timeout);
    // client_idle_timeout, idle_transaction_timeout, query_timeout and server_lifetime take
    // "0s" for off; any other value is a real limit.
    if proxy.max_client_conn == 0 {
        problems.add(
            "proxy.max_client_conn",
            "must be at least 1 (every client would be refused)",
        );
    }
    // shutdown_timeout = "0s" is a legitimate choice: cut clients off at once.
    if proxy.application_name.contains('\0') || proxy.application_name.len() > MAX_IDENTIFIER_BYTES
    {
        problems.add(
            "proxy.application_name",
            format_args!("must be at most {MAX_IDENTIFIER_BYTES} bytes, with no NUL byte"),
        );
    }
    check_client_tls(proxy, problems);
    if proxy.workers == Some(0) {
        problems.add(
            "proxy.workers",
            "must be at least 1 (leave it out for one per CPU)",
        );
    }
}

/// `allow` and `require` need a certificate and key that load, checked now so a broken file
/// stops the start instead of the first TLS client.
fn check_client_tls(proxy: &ProxyConfig, problems: &mut Problems) {
    if proxy.client_tls == ClientTls::Disable {
        return;
    }
    let (Some(cert), Some(key)) = (&proxy.client_tls_cert, &proxy.client_tls_key) else {
        for (key, value) in [
            ("proxy.client_tls_cert", &proxy.client_tls_cert),
            ("proxy.client_tls_key", &proxy.client_tls_key),
        ] {
            if value.is_none() {
                problems.add(
                    key,
                    "must be set when client_tls is \"allow\" or \"require\"",
                );
            }
        }
        return;
    };
    if let Err(e) = crate::tls::server::load_files(cert, key) {
        problems.add("proxy.client_tls", e);
    }
}

/// Reports every name after the first that repeats an earlier one.
fn check_unique<'c>(section: &str, names: impl Iterator<Item = &'c str>, problems: &mut Problems) {
    let mut first_use: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, name) in names.enumerate() {
        if let Some(first) = first_use.get(name) {
            problems.add(
                format_args!("{section}[{index}].name"),
                format_args!("`{name}` is already used by {section}[{first}]"),
            );
        } else {
            first_use.insert(name, index);
        }
    }
}

pub(super) fn check_users(config: &Config, problems: &mut Problems) {
    if config.users.is_empty() {
        problems.add("users", "at least one [[users]] entry is needed");
    }
    for (index, user) in config.users.iter().enumerate() {
        problems.identifier(format_args!("users[{index}].name"), &user.name);
        if user.password.is_empty() {
            problems.add(format_args!("users[{index}].password"), "must not be empty");
        }
    }
    check_unique(
        "users",
        config.users.iter().map(|u| u.name.as_str()),
        problems,
    );
}

pub(super) fn check_databases(
    config: &Config,
    broken_credentials: &BTreeSet<String>,
    problems: &mut Problems,
) {
    if config.databases.is_empty() {
        problems.add("databases", "at least one [[databases]] entry is needed");
    }
    for (index, database) in config.databases.iter().enumerate() {
        check_database(
            &format!("databases[{index}]"),
            database,
            config,
            broken_credentials,
            problems,
        );
    }
    check_unique(
        "databases",
        config.databases.iter().map(|d| d.name.as_str()),
        problems,
    );
}

fn check_database(
    path: &str,
    database: &DatabaseConfig,
    config: &Config,
    broken_credentials: &BTreeSet<String>,
    problems: &mut Problems,
) {
    problems.identifier(format_args!("{path}.name"), &database.name);
    if database.name == ADMIN_DATABASE {
        problems.add(
            format_args!("{path}.name"),
            format_args!("`{ADMIN_DATABASE}` is reserved for the admin console"),
        );
    }
    if database.host.is_empty() || database.host.contains('\0') {
        problems.add(
            format_args!("{path}.host"),
            "must be a non-empty host name or address",
        );
    }
    if database.port == 0 {
        problems.add(
            format_args!("{path}.port"),
            "must be a port number, 1 to 65535",
        );
    }
    if let Some(dbname) = &database.dbname {
        problems.identifier(format_args!("{path}.dbname"), dbname);
    }
    if database.pool_size == 0 {
        problems.add(format_args!("{path}.pool_size"), "must be at least 1");
    }
    if database.min_pool_size > database.pool_size {
        problems.add(
            format_args!("{path}.min_pool_size"),
            format_args!(
                "must not exceed pool_size ({}): it is counted within it",
                database.pool_size
            ),
        );
    }
    let name = &database.credentials;
    if !config.credentials.contains_key(name) && !broken_credentials.contains(name) {
        problems.add(
            format_args!("{path}.credentials"),
            format_args!("there is no [{}] entry", credentials_path(name)),
        );
    }
    if database.reset_query.contains('\0') {
        problems.add(
            format_args!("{path}.reset_query"),
            "must not contain a NUL byte",
        );
    }
    check_upstream_tls(path, database, problems);
    check_access(path, database, config, problems);
}

/// Each name on an access list must be a local user: a typo would otherwise lock that user
/// out silently.
fn check_access(path: &str, database: &DatabaseConfig, config: &Config, problems: &mut Problems) {
    for (index, name) in database.users.iter().flatten().enumerate() {
        if !config.users.iter().any(|user| &user.name == name) {
            problems.add(
                format_args!("{path}.users[{index}]"),
                format_args!("`{name}` is not the name of any [[users]] entry"),
            );
        }
    }
}

/// The TLS files of a database entry: a client certificate comes with its key, and no path is
/// empty. Whether the files parse is found when the proxy builds the TLS configuration.
fn check_upstream_tls(path: &str, database: &DatabaseConfig, problems: &mut Problems) {
    let files = [
        ("upstream_tls_ca", &database.upstream_tls_ca),
        ("upstream_tls_cert", &database.upstream_tls_cert),
        ("upstream_tls_key", &database.upstream_tls_key),
    ];
    for (key, file) in files {
        if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            problems.add(format_args!("{path}.{key}"), "must not be empty");
        }
    }
    if database.upstream_tls_cert.is_some() != database.upstream_tls_key.is_some() {
        problems.add(
            format_args!("{path}.upstream_tls_cert"),
            "upstream_tls_cert and upstream_tls_key go together",
        );
    }
    if database.upstream_tls == UpstreamTlsMode::Disable
        && (database.upstream_tls_ca.is_some() || database.upstream_tls_cert.is_some())
    {
        problems.add(
            format_args!("{path}.upstream_tls"),
            "is \"disable\", so upstream_tls_ca/upstream_tls_cert would never be used",
        );
    }
}
