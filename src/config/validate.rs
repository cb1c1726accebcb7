//! Cross-checks on a loaded [`Config`]: names that must exist or be unique, identifier rules,
//! ranges, and the lifecycle arithmetic (a lease must outlive its safety margin).
//!
//! These run on the structs, not the TOML, so a config built in code (`pglease dev`) passes
//! the same rules as a file. Every problem is collected; nothing stops at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::duration::format_duration;
use super::{
    Config, CredentialsConfig, DatabaseConfig, ExecSourceConfig, FileSourceConfig, IssuerConfig,
    ProxyConfig, SourceConfig, VaultAuth, VaultConfig,
};

/// PostgreSQL truncates names longer than this (NAMEDATALEN - 1); we refuse them instead, so a
/// name never silently means something else upstream.
const MAX_IDENTIFIER_BYTES: usize = 63;
/// Short enough that `<prefix>_<random>` stays within [`MAX_IDENTIFIER_BYTES`].
const MAX_PREFIX_BYTES: usize = 20;
/// Smaller than this and ordinary startup packets or error messages would not fit.
const MIN_MESSAGE_SIZE: usize = 8 * 1024;
/// PostgreSQL itself never sends or accepts a message larger than 1 GiB.
const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;
/// The virtual database of the admin console.
const ADMIN_DATABASE: &str = "pglease";
/// The only placeholders (`{{name}}` etc.) statement templates may use; anything else would
/// reach PostgreSQL unreplaced.
const PLACEHOLDERS: [&str; 3] = ["name", "password", "expiration"];

/// Every cross-check problem in `config`. Databases naming a credentials entry listed in
/// `broken_credentials` (present in the file but unreadable) are not reported again.
pub(super) fn check(config: &Config, broken_credentials: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Problems::default();
    check_proxy(&config.proxy, config, &mut problems);
    check_users(config, &mut problems);
    check_databases(config, broken_credentials, &mut problems);
    for (name, credentials) in &config.credentials {
        check_credentials(name, credentials, &mut problems);
    }
    problems.0
}

/// Collected problems, each `"<path>: <message>"`.
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

/// Why `text` is not a usable `host:port`, if it is not. Only the shape is checked: resolving
/// the host is left to bind time, so `localhost:6432` is accepted.
fn address_problem(text: &str) -> Option<&'static str> {
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

fn check_proxy(proxy: &ProxyConfig, config: &Config, problems: &mut Problems) {
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
    problems.nonzero("proxy.login_timeout", proxy.login_timeout);
    problems.nonzero("proxy.idle_timeout", proxy.idle_timeout);
    // shutdown_timeout = "0s" is a legitimate choice: cut clients off at once.
    if proxy.application_name.contains('\0') || proxy.application_name.len() > MAX_IDENTIFIER_BYTES
    {
        problems.add(
            "proxy.application_name",
            format_args!("must be at most {MAX_IDENTIFIER_BYTES} bytes, with no NUL byte"),
        );
    }
    if proxy.workers == Some(0) {
        problems.add(
            "proxy.workers",
            "must be at least 1 (leave it out for one per CPU)",
        );
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

fn check_users(config: &Config, problems: &mut Problems) {
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

fn check_databases(
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
}

fn check_credentials(name: &str, credentials: &CredentialsConfig, problems: &mut Problems) {
    let path = credentials_path(name);
    if let Some(message) = identifier_problem(name) {
        problems.add(&path, format_args!("the entry's name {message}"));
    }
    let rotate_at = credentials.rotate_at;
    if !(rotate_at.is_finite() && rotate_at > 0.0 && rotate_at < 1.0) {
        problems.add(
            format_args!("{path}.rotate_at"),
            "must be between 0 and 1, exclusive (e.g. 0.66: rotate at two thirds of a lease)",
        );
    }
    match &credentials.source {
        SourceConfig::Static(source) => {
            problems.identifier(format_args!("{path}.username"), &source.username);
            if source.password.is_empty() {
                problems.add(format_args!("{path}.password"), "must not be empty");
            }
        }
        SourceConfig::Issuer(issuer) => check_issuer(&path, issuer, credentials, problems),
        SourceConfig::Vault(vault) => check_vault(&path, vault, problems),
        SourceConfig::File(file) => check_file(&path, file, problems),
        SourceConfig::Exec(exec) => check_exec(&path, exec, problems),
    }
}

fn check_issuer(
    path: &str,
    issuer: &IssuerConfig,
    credentials: &CredentialsConfig,
    problems: &mut Problems,
) {
    let url = issuer.admin_url.expose();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.add(
            format_args!("{path}.admin_url"),
            "must be a postgres:// or postgresql:// URL",
        );
    }
    for (index, role) in issuer.member_of.iter().enumerate() {
        problems.identifier(format_args!("{path}.member_of[{index}]"), role);
    }
    problems.nonzero(format_args!("{path}.ttl"), issuer.ttl);
    let ttl = format_duration(issuer.ttl);
    if issuer.max_ttl < issuer.ttl {
        problems.add(
            format_args!("{path}.max_ttl"),
            format_args!("must be at least ttl ({ttl})"),
        );
    }
    if credentials.safety_margin >= issuer.ttl {
        problems.add(
            format_args!("{path}.safety_margin"),
            format_args!(
                "must be shorter than ttl ({ttl}), or every lease is past its deadline at once"
            ),
        );
    }
    if let Some(message) = prefix_problem(&issuer.prefix) {
        problems.add(format_args!("{path}.prefix"), message);
    }
    let templates = [
        ("creation_statements", &issuer.creation_statements),
        ("renew_statements", &issuer.renew_statements),
        ("revocation_statements", &issuer.revocation_statements),
    ];
    for (key, statements) in templates {
        if let Some(statements) = statements {
            check_statements(&format!("{path}.{key}"), statements, problems);
        }
    }
    if let Some(statements) = &issuer.creation_statements {
        for needed in ["{{name}}", "{{password}}"] {
            if !statements.iter().any(|s| s.contains(needed)) {
                problems.add(
                    format_args!("{path}.creation_statements"),
                    format_args!("must use {needed}, or the issued role cannot log in"),
                );
            }
        }
    }
    if let Some(role) = &issuer.act_as {
        problems.identifier(format_args!("{path}.act_as"), role);
    } else if !issuer.drop_owned {
        problems.add(
            format_args!("{path}.drop_owned"),
            "false reassigns owned objects to `act_as`, which is not set",
        );
    }
    problems.nonzero(format_args!("{path}.reap_interval"), issuer.reap_interval);
}

fn prefix_problem(prefix: &str) -> Option<String> {
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(first_ok && rest_ok) {
        Some("must match [a-z_][a-z0-9_]* (it is part of every issued role name)".to_owned())
    } else if prefix.len() > MAX_PREFIX_BYTES {
        Some(format!("must be at most {MAX_PREFIX_BYTES} bytes"))
    } else {
        None
    }
}

fn check_statements(path: &str, statements: &[String], problems: &mut Problems) {
    if statements.is_empty() {
        problems.add(
            path,
            "must not be empty (leave the key out for the built-in statements)",
        );
    }
    for (index, statement) in statements.iter().enumerate() {
        if let Some(message) = template_problem(statement) {
            problems.add(format_args!("{path}[{index}]"), message);
        }
    }
}

/// Why a statement template would reach PostgreSQL with something left unreplaced, if so.
fn template_problem(statement: &str) -> Option<String> {
    if statement.trim().is_empty() {
        return Some("must not be empty".to_owned());
    }
    let mut rest = statement;
    while let Some((_, after_open)) = rest.split_once("{{") {
        let Some((inner, after_close)) = after_open.split_once("}}") else {
            return Some("has a `{{` with no closing `}}`".to_owned());
        };
        if !PLACEHOLDERS.contains(&inner) {
            let known: Vec<String> = PLACEHOLDERS
                .iter()
                .map(|p| format!("{{{{{p}}}}}"))
                .collect();
            return Some(format!(
                "unknown placeholder `{{{{{inner}}}}}`; only {} are replaced",
                known.join(", ")
            ));
        }
        rest = after_close;
    }
    None
}

fn check_vault(path: &str, vault: &VaultConfig, problems: &mut Problems) {
    let has_host = ["http://", "https://"].iter().any(|scheme| {
        vault
            .address
            .strip_prefix(scheme)
            .is_some_and(|host| !host.is_empty())
    });
    if !has_host {
        problems.add(
            format_args!("{path}.address"),
            "must be an http:// or https:// URL",
        );
    }
    let mut non_empty = |key: &str, value: &str| {
        if value.is_empty() {
            problems.add(format_args!("{path}.{key}"), "must not be empty");
        }
    };
    non_empty("mount", &vault.mount);
    non_empty("role", &vault.role);
    if let Some(namespace) = &vault.namespace {
        non_empty("namespace", namespace);
    }
    if let Some(ca_file) = &vault.ca_file {
        non_empty("ca_file", &ca_file.to_string_lossy());
    }
    match &vault.auth {
        VaultAuth::Token { token } => non_empty("auth.token", token.expose()),
        VaultAuth::AppRole {
            role_id,
            secret_id,
            mount,
        } => {
            non_empty("auth.role_id", role_id.expose());
            non_empty("auth.secret_id", secret_id.expose());
            non_empty("auth.mount", mount);
        }
        VaultAuth::Kubernetes {
            role,
            jwt_path,
            mount,
        } => {
            non_empty("auth.role", role);
            non_empty("auth.jwt_path", &jwt_path.to_string_lossy());
            non_empty("auth.mount", mount);
        }
    }
}

fn check_file(path: &str, file: &FileSourceConfig, problems: &mut Problems) {
    if file.path.as_os_str().is_empty() {
        problems.add(format_args!("{path}.path"), "must not be empty");
    }
    problems.nonzero(format_args!("{path}.poll_interval"), file.poll_interval);
}

fn check_exec(path: &str, exec: &ExecSourceConfig, problems: &mut Problems) {
    if exec
        .command
        .first()
        .is_none_or(|program| program.is_empty())
    {
        problems.add(
            format_args!("{path}.command"),
            "must name a program, e.g. [\"/usr/local/bin/get-db-creds\", \"app\"]",
        );
    }
    problems.nonzero(format_args!("{path}.timeout"), exec.timeout);
    if let Some(interval) = exec.refresh_interval {
        problems.nonzero(format_args!("{path}.refresh_interval"), interval);
    }
}

#[cfg(test)]
mod tests {
    use std::env::VarError;
    use std::path::Path;

    use super::*;
    use crate::config::{UserConfig, VaultKind};
    use crate::secret::Secret;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "PGLEASE_ADMIN_URL" => Ok("postgres://pglease_admin:pw@127.0.0.1/app".to_owned()),
            "PGLEASE_ADMIN_PASSWORD" | "APP_DB_PASSWORD" => Ok("example".to_owned()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn example(text: &str) -> Config {
        Config::from_toml_str_with_env(text, Path::new("/etc/pglease"), &env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn example_files_parse() {
        let reference = example(include_str!("../../config/pglease.toml"));
        assert_eq!(reference.users.len(), 2);
        assert_eq!(
            reference.proxy,
            ProxyConfig {
                admin_listen: Some("127.0.0.1:9930".into()),
                admin_users: vec!["admin".into()],
                ..ProxyConfig::default()
            }
        );
        assert_eq!(reference.credentials["app"].source.kind(), "issuer");
        let minimal = example(include_str!("../../config/static.toml"));
        assert_eq!(minimal.credentials["app"].source.kind(), "static");
        let issuer = example(include_str!("../../config/issuer.toml"));
        assert_eq!(issuer.credentials["app"].source.kind(), "issuer");
    }

    /// A valid config with one issuer entry, for tests that break one thing at a time.
    fn valid() -> Config {
        let mut config = Config::default();
        config.proxy.admin_users = vec!["app".into()];
        config.users.push(UserConfig {
            name: "app".into(),
            password: Secret::from("pw"),
        });
        config.databases.push(DatabaseConfig::new("app", "app"));
        let mut issuer = IssuerConfig::new(Secret::from("postgres://admin@db/app"));
        issuer.member_of = vec!["app_rw".into()];
        let source = SourceConfig::Issuer(issuer);
        config
            .credentials
            .insert("app".into(), CredentialsConfig::new(source));
        config
    }

    fn problems_after(change: impl FnOnce(&mut Config)) -> Vec<String> {
        let mut config = valid();
        change(&mut config);
        check(&config, &BTreeSet::new())
    }

    fn issuer(config: &mut Config) -> &mut IssuerConfig {
        match config.credentials.get_mut("app").map(|c| &mut c.source) {
            Some(SourceConfig::Issuer(issuer)) => issuer,
            other => panic!("not an issuer: {other:?}"),
        }
    }

    #[test]
    fn valid_config_has_no_problems() {
        assert!(problems_after(|_| {}).is_empty());
    }

    #[test]
    fn names_must_be_unique_and_exist() {
        let found = problems_after(|c| {
            c.users.push(c.users[0].clone());
            c.databases.push(DatabaseConfig::new("app", "missing"));
            c.proxy.admin_users.push("root".into());
        });
        assert_eq!(
            found,
            [
                "proxy.admin_users[1]: `root` is not the name of any [[users]] entry",
                "users[1].name: `app` is already used by users[0]",
                "databases[1].credentials: there is no [credentials.missing] entry",
                "databases[1].name: `app` is already used by databases[0]",
            ]
        );
    }

    #[test]
    fn identifiers_are_checked_everywhere() {
        let found = problems_after(|c| {
            c.users[0].name = String::new();
            c.proxy.admin_users.clear();
            c.databases[0].name = "x".repeat(64);
            c.databases[0].dbname = Some("a\0b".into());
            issuer(c).member_of.push(String::new());
            issuer(c).act_as = Some("y".repeat(70));
        });
        assert_eq!(
            found,
            [
                "users[0].name: must not be empty",
                "databases[0].name: is 64 bytes long; PostgreSQL names are at most 63",
                "databases[0].dbname: must not contain a NUL byte",
                "credentials.app.member_of[1]: must not be empty",
                "credentials.app.act_as: is 70 bytes long; PostgreSQL names are at most 63",
            ]
        );
    }

    #[test]
    fn admin_database_name_is_reserved() {
        let found = problems_after(|c| c.databases[0].name = "pglease".into());
        assert_eq!(
            found,
            ["databases[0].name: `pglease` is reserved for the admin console"]
        );
    }

    #[test]
    fn lifecycle_arithmetic_is_checked() {
        let found = problems_after(|c| {
            let credentials = c.credentials.get_mut("app").unwrap();
            credentials.rotate_at = 1.0;
            credentials.safety_margin = Duration::from_secs(600);
            let issuer = issuer(c);
            issuer.ttl = Duration::from_secs(600);
            issuer.max_ttl = Duration::from_secs(300);
        });
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("credentials.app.rotate_at: must be between 0 and 1"));
        assert_eq!(
            found[1],
            "credentials.app.max_ttl: must be at least ttl (10m)"
        );
        assert!(
            found[2].starts_with("credentials.app.safety_margin: must be shorter than ttl (10m)")
        );
        for bad in [0.0, -0.5, f64::NAN] {
            let found = problems_after(|c| c.credentials.get_mut("app").unwrap().rotate_at = bad);
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
        }
    }

    #[test]
    fn prefix_rules() {
        for good in ["pglease", "_x", "a1_b"] {
            assert_eq!(prefix_problem(good), None, "{good}");
        }
        for bad in ["", "1abc", "Pglease", "pg-lease", "a_very_long_prefix_name"] {
            assert!(prefix_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn statement_templates_allow_only_known_placeholders() {
        assert_eq!(template_problem("DROP ROLE \"{{name}}\""), None);
        let unknown = template_problem("GRANT {{role}} TO \"{{name}}\"").unwrap();
        assert!(
            unknown.starts_with("unknown placeholder `{{role}}`"),
            "{unknown}"
        );
        assert!(template_problem("DROP ROLE {{ name }}").is_some());
        assert!(template_problem("DROP ROLE {{name").is_some());
        assert!(template_problem("  ").is_some());
        let found = problems_after(|c| {
            issuer(c).creation_statements = Some(vec!["CREATE ROLE \"{{name}}\"".into()]);
            issuer(c).revocation_statements = Some(Vec::new());
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("credentials.app.revocation_statements: must not be empty"));
        assert!(found[1].starts_with("credentials.app.creation_statements: must use {{password}}"));
    }

    #[test]
    fn drop_owned_false_needs_act_as() {
        let found = problems_after(|c| issuer(c).drop_owned = false);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("credentials.app.drop_owned:"),
            "{found:?}"
        );
        assert!(
            problems_after(|c| {
                issuer(c).drop_owned = false;
                issuer(c).act_as = Some("owner".into());
            })
            .is_empty()
        );
    }

    #[test]
    fn addresses_must_be_host_port() {
        for good in [
            "127.0.0.1:6432",
            "localhost:0",
            "[::1]:6432",
            "0.0.0.0:65535",
        ] {
            assert_eq!(address_problem(good), None, "{good}");
        }
        for bad in ["127.0.0.1", ":6432", "host:port", "::1:6432", "h:65536", ""] {
            assert!(address_problem(bad).is_some(), "{bad}");
        }
        let found = problems_after(|c| c.proxy.admin_listen = Some("9930".into()));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("proxy.admin_listen: must be host:port"));
    }

    #[test]
    fn proxy_limits() {
        let found = problems_after(|c| {
            c.proxy.max_message_size = 1024;
            c.proxy.connect_timeout = Duration::ZERO;
            c.proxy.workers = Some(0);
        });
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("proxy.max_message_size: must be between 8192"));
        assert_eq!(found[1], "proxy.connect_timeout: must be longer than 0s");
        assert!(found[2].starts_with("proxy.workers: must be at least 1"));
    }

    #[test]
    fn other_sources_are_checked() {
        let vault = SourceConfig::Vault(VaultConfig {
            address: "vault:8200".into(),
            mount: "database".into(),
            role: String::new(),
            kind: VaultKind::Dynamic,
            namespace: None,
            ca_file: None,
            auth: VaultAuth::Token {
                token: Secret::from(""),
            },
        });
        let exec = SourceConfig::Exec(ExecSourceConfig {
            command: Vec::new(),
            timeout: Duration::ZERO,
            refresh_interval: None,
        });
        let found = problems_after(|c| {
            c.credentials
                .insert("v".into(), CredentialsConfig::new(vault));
            c.credentials
                .insert("x".into(), CredentialsConfig::new(exec));
        });
        assert_eq!(
            found,
            [
                "credentials.v.address: must be an http:// or https:// URL",
                "credentials.v.role: must not be empty",
                "credentials.v.auth.token: must not be empty",
                "credentials.x.command: must name a program, e.g. [\"/usr/local/bin/get-db-creds\", \"app\"]",
                "credentials.x.timeout: must be longer than 0s",
            ]
        );
    }

    #[test]
    fn credentials_paths_quote_unusual_names() {
        assert_eq!(credentials_path("app-1"), "credentials.app-1");
        assert_eq!(credentials_path("a.b"), "credentials.\"a.b\"");
    }
}
