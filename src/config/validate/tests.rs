//! Validation, one broken thing at a time on an otherwise valid config, plus the example
//! files shipped in `config/`, which must always load.

use std::collections::BTreeSet;
use std::env::VarError;
use std::path::Path;
use std::time::Duration;

use super::credentials::{prefix_problem, template_problem};
use super::serving::address_problem;
use super::*;
use crate::config::{
    CredentialsConfig, DatabaseConfig, ExecSourceConfig, IssuerConfig, OnRevoke, ProxyConfig,
    SourceConfig, UserConfig, VaultAuth, VaultConfig, VaultKind,
};
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
    let reference = example(include_str!("../../../config/pglease.toml"));
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
    let minimal = example(include_str!("../../../config/static.toml"));
    assert_eq!(minimal.credentials["app"].source.kind(), "static");
    let issuer = example(include_str!("../../../config/issuer.toml"));
    assert_eq!(issuer.credentials["app"].source.kind(), "issuer");
    for config in [&reference, &minimal, &issuer] {
        assert_eq!(
            config.databases[0].upstream_tls,
            crate::config::UpstreamTlsMode::VerifyFull
        );
    }
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
fn client_tls_needs_a_certificate_and_key_that_load() {
    let found = problems_after(|c| c.proxy.client_tls = crate::config::ClientTls::Require);
    assert_eq!(
        found,
        [
            "proxy.client_tls_cert: must be set when client_tls is \"allow\" or \"require\"",
            "proxy.client_tls_key: must be set when client_tls is \"allow\" or \"require\"",
        ]
    );
    let found = problems_after(|c| {
        c.proxy.client_tls = crate::config::ClientTls::Allow;
        c.proxy.client_tls_cert = Some("/nonexistent/pglease-test.crt".into());
        c.proxy.client_tls_key = Some("/nonexistent/pglease-test.key".into());
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("proxy.client_tls: cannot read /nonexistent/pglease-test.crt"),
        "{found:?}"
    );
    // Files are only looked at when TLS is on.
    assert!(problems_after(|c| c.proxy.client_tls_cert = Some("/nonexistent".into())).is_empty());
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
fn short_leases_pass_with_the_default_margins() {
    for ttl in [10, 20, 60] {
        let found = problems_after(|c| {
            let issuer = issuer(c);
            issuer.ttl = Duration::from_secs(ttl);
            issuer.max_ttl = Duration::from_secs(ttl * 4);
        });
        assert!(found.is_empty(), "ttl {ttl}s: {found:?}");
    }
}

#[test]
fn lifecycle_arithmetic_is_checked() {
    let found = problems_after(|c| {
        let credentials = c.credentials.get_mut("app").unwrap();
        credentials.rotate_at = 1.0;
        credentials.safety_margin = Some(Duration::from_secs(600));
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
    assert!(found[2].starts_with("credentials.app.safety_margin: must be shorter than ttl (10m)"));
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

fn warnings_after(change: impl FnOnce(&mut Config)) -> Vec<String> {
    let mut config = valid();
    change(&mut config);
    warnings(&config)
}

#[test]
fn settings_that_strand_or_drop_objects_are_warned_about() {
    let found = warnings_after(|_| {});
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("credentials.app.act_as: not set: tables and other objects"),
        "{found:?}"
    );
    let set_act_as = |c: &mut Config| issuer(c).act_as = Some("app_owner".into());
    assert_eq!(warnings_after(set_act_as), Vec::<String>::new());
    let found = warnings_after(|c| {
        set_act_as(c);
        issuer(c).on_revoke = OnRevoke::DropObjects;
        issuer(c).revocation_statements = Some(vec!["drop  owned by {{name}}".into()]);
    });
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("credentials.app.on_revoke: \"drop_objects\""));
    assert!(found[1].starts_with("credentials.app.revocation_statements: run DROP OWNED"));
    // Warnings never make a config invalid.
    assert!(problems_after(|c| issuer(c).on_revoke = OnRevoke::DropObjects).is_empty());
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
            token_file: None,
        },
    });
    let exec = SourceConfig::Exec(ExecSourceConfig {
        command: Vec::new(),
        timeout: Duration::ZERO,
        refresh_interval: None,
        env: [
            ("A=B".to_owned(), Secret::from("x")),
            ("OK".to_owned(), Secret::from("nul\0byte")),
        ]
        .into(),
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
            "credentials.x.env: `A=B` is not a variable name (empty, or has `=` or NUL)",
            "credentials.x.env.OK: must not contain a NUL character",
        ]
    );
}

#[test]
fn credentials_paths_quote_unusual_names() {
    assert_eq!(credentials_path("app-1"), "credentials.app-1");
    assert_eq!(credentials_path("a.b"), "credentials.\"a.b\"");
}

#[test]
fn upstream_tls_files_are_consistent() {
    use crate::config::UpstreamTlsMode;
    use std::path::PathBuf;
    let found = problems_after(|c| c.databases[0].upstream_tls_cert = Some("/c.pem".into()));
    assert!(found.iter().any(|p| p.contains("go together")), "{found:?}");
    let found = problems_after(|c| c.databases[0].upstream_tls_ca = Some(PathBuf::new()));
    assert!(
        found
            .iter()
            .any(|p| p.contains("upstream_tls_ca: must not be empty")),
        "{found:?}"
    );
    let found = problems_after(|c| {
        c.databases[0].upstream_tls = UpstreamTlsMode::Disable;
        c.databases[0].upstream_tls_ca = Some("/ca.pem".into());
    });
    assert!(
        found.iter().any(|p| p.contains("never be used")),
        "{found:?}"
    );
    assert!(
        problems_after(|c| {
            c.databases[0].upstream_tls = UpstreamTlsMode::VerifyFull;
            c.databases[0].upstream_tls_cert = Some("/c.pem".into());
            c.databases[0].upstream_tls_key = Some("/k.pem".into());
        })
        .is_empty()
    );
}
