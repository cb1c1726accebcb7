//! The configuration contract end to end: a file using every key round-trips into the
//! structs, omitted keys take their documented defaults, and a config built in code passes
//! the same validation as a loaded one.

use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::secret::Secret;

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
    readiness_margin = "10s"
    admin_users = ["ops"]
    auth_type = "md5"
    max_message_size = 1048576
    max_prepared_statements = 50
    query_wait_timeout = "1m"
    connect_timeout = "2s"
    client_login_timeout = "45s"
    max_client_conn = 300
    client_idle_timeout = "10m"
    idle_transaction_timeout = "0s"
    query_timeout = "30s"
    server_lifetime = "2h"
    reserve_pool_timeout = "3s"
    idle_timeout = "1h"
    shutdown_timeout = "0s"
    application_name = "proxy-a"
    workers = 2
    log_format = "json"

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
    min_pool_size = 2
    reserve_pool_size = 3
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
    on_revoke = "drop_objects"
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
    env = { VAULT_ADDR = "https://vault:8200", VAULT_TOKEN = "env:PGLEASE_TEST_VAULT_TOKEN" }

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
        readiness_margin: secs(10),
        admin_users: vec!["ops".into()],
        auth_type: AuthType::Md5,
        max_message_size: 1 << 20,
        max_prepared_statements: 50,
        query_wait_timeout: secs(60),
        connect_timeout: secs(2),
        client_login_timeout: secs(45),
        max_client_conn: 300,
        client_idle_timeout: secs(600),
        idle_transaction_timeout: Duration::ZERO,
        query_timeout: secs(30),
        server_lifetime: secs(7200),
        reserve_pool_timeout: secs(3),
        idle_timeout: secs(3600),
        shutdown_timeout: Duration::ZERO,
        application_name: "proxy-a".into(),
        workers: Some(2),
        log_format: LogFormat::Json,
        ..ProxyConfig::default()
    };
    assert_eq!(config.proxy, proxy);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].password.expose(), "md5abc");
    let app = &config.databases[0];
    assert_eq!(app.upstream_dbname(), "app_prod");
    assert_eq!((app.host.as_str(), app.port), ("db.internal", 5433));
    assert_eq!((app.pool_mode, app.pool_size), (PoolMode::Session, 5));
    assert_eq!((app.min_pool_size, app.reserve_pool_size), (2, 3));
    assert_eq!(app.reset_query, "");
    // Every key left out takes the documented default.
    assert_eq!(config.databases[1], DatabaseConfig::new("reports", "vault"));
    assert_eq!(config.databases[1].upstream_dbname(), "reports");

    let issued = &config.credentials["issued"];
    assert_eq!(
        (issued.rotate_at, issued.safety_margin, issued.renew),
        (0.5, Some(secs(60)), false)
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
    assert_eq!(issuer.on_revoke, OnRevoke::DropObjects);
    assert_eq!(issuer.reap_interval, secs(60));

    let vault = &config.credentials["vault"];
    assert_eq!(
        (vault.rotate_at, vault.safety_margin, vault.renew),
        (0.66, None, true)
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
            token_file: None,
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
        env: [
            ("VAULT_ADDR".to_owned(), Secret::from("https://vault:8200")),
            ("VAULT_TOKEN".to_owned(), Secret::from("hvs.token")),
        ]
        .into(),
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
    let expected = CredentialsConfig::new(SourceConfig::Issuer(IssuerConfig::new(Secret::from(
        "postgres://a@b/c",
    ))));
    assert_eq!(config.credentials["app"], expected);
    assert_eq!(expected.rotate_at, 0.66);
    let SourceConfig::Issuer(issuer) = &expected.source else {
        unreachable!()
    };
    assert_eq!(issuer.on_revoke, OnRevoke::Reassign);
    // No act_as: objects belong to each lease's role, which loading says.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("credentials.app.act_as: not set"));
}

#[test]
fn the_retired_drop_owned_key_is_refused_naming_its_replacement() {
    for value in ["true", "false"] {
        let text = format!(
            "[credentials.app]\nsource = \"issuer\"\nadmin_url = \"postgres://a@b/c\"\n\
             act_as = \"owner\"\ndrop_owned = {value}\n"
        );
        let error = Config::from_toml_str_with_env(&text, Path::new("/"), &env).unwrap_err();
        assert!(
            error.problems[0]
                .starts_with("credentials.app.drop_owned: was replaced by `on_revoke`"),
            "{error}"
        );
        // Said once, as a rename, not again as an unknown key.
        assert_eq!(
            error.to_string().matches("drop_owned").count(),
            1,
            "{error}"
        );
    }
    let text = "[credentials.app]\nsource = \"issuer\"\nadmin_url = \"postgres://a@b/c\"\n\
                on_revoke = \"drop\"\n";
    let error = Config::from_toml_str_with_env(text, Path::new("/"), &env).unwrap_err();
    assert!(
        error.problems[0].starts_with(
            "credentials.app.on_revoke: `drop` is not one of \"reassign\", \"drop_objects\""
        ),
        "{error}"
    );
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
fn plain_http_vault_off_loopback_is_a_warning_and_loopback_is_not() {
    let env = |_: &str| Err(std::env::VarError::NotPresent);
    let with_address = |address: &str| {
        format!(
            r#"
            [[users]]
            name = "app"
            password = "pw"
            [[databases]]
            name = "app"
            credentials = "app"
            [credentials.app]
            source = "vault"
            address = "{address}"
            role = "app"
            auth = {{ method = "token", token = "t0k3n" }}
        "#
        )
    };
    let load = |address: &str| {
        Config::from_toml_str_with_env(&with_address(address), Path::new("/"), &env)
            .unwrap()
            .warnings
    };
    let warnings = load("http://vault.internal:8200");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("credentials.app.address: plain http:// to vault.internal"),
        "{warnings:?}"
    );
    assert!(!warnings[0].contains("t0k3n"));
    assert!(load("http://127.0.0.1:8200").is_empty());
    assert!(load("https://vault.internal:8200").is_empty());
}

#[test]
fn untracked_statements_in_transaction_mode_are_a_warning() {
    let env = |_: &str| Err(std::env::VarError::NotPresent);
    let text = |max: usize, mode: &str| {
        format!(
            r#"
            [proxy]
            max_prepared_statements = {max}
            [[users]]
            name = "app"
            password = "pw"
            [[databases]]
            name = "app"
            pool_mode = "{mode}"
            credentials = "app"
            [credentials.app]
            source = "static"
            username = "app"
            password = "pw"
        "#
        )
    };
    let warnings = |max, mode| {
        Config::from_toml_str_with_env(&text(max, mode), Path::new("/"), &env)
            .unwrap()
            .warnings
    };
    let off = warnings(0, "transaction");
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(off[0].starts_with("proxy.max_prepared_statements: 0 turns statement tracking off"));
    assert!(warnings(0, "session").is_empty());
    assert!(warnings(200, "transaction").is_empty());
}
