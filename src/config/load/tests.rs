//! Loading a document: every syntax, type, unknown-key and secret problem is reported with
//! its key path, all at once, and never with a secret value in it.

use std::env::VarError;
use std::path::Path;

use super::*;
use crate::config::SourceConfig;

/// A valid config; tests append to it or replace parts of it.
const BASE: &str = r#"
[proxy]
admin_users = ["app"]

[[users]]
name = "app"
password = "pw"

[[databases]]
name = "app"
credentials = "app"

[credentials.app]
source = "static"
username = "app"
password = "upstream-pw"
"#;

fn env(name: &str) -> Result<String, VarError> {
    match name {
        "PGLEASE_TEST_LOAD_PASSWORD" => Ok("from-env".to_owned()),
        _ => Err(VarError::NotPresent),
    }
}

fn problems(text: &str) -> Vec<String> {
    match from_toml_str(text, Path::new("/nowhere"), &env) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(error) => error.problems,
    }
}

#[test]
fn base_config_is_valid() {
    from_toml_str(BASE, Path::new("/"), &env).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn syntax_error_names_the_line_but_not_the_text() {
    let text = "[[users]]\nname = \"app\"\npassword = \"hunter2\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("line 3"), "{found:?}");
    assert!(!found[0].contains("hunter2"), "{found:?}");
}

#[test]
fn unknown_key_is_named_with_its_table_in_every_section() {
    let sections = [
        ("[proxy]", "proxy: unknown key `listn`"),
        ("[[users]]", "users[0]: unknown key `listn`"),
        ("[[databases]]", "databases[0]: unknown key `listn`"),
        ("[credentials.app]", "credentials.app: unknown key `listn`"),
    ];
    for (header, expected) in sections {
        let text = BASE.replacen(header, &format!("{header}\nlistn = 1"), 1);
        assert_eq!(problems(&text), [expected], "{header}");
    }
    let text = format!("listn = 1\n{BASE}");
    assert_eq!(problems(&text), ["top level: unknown key `listn`"]);
    let vault = r#"
[credentials.v]
source = "vault"
address = "http://v"
role = "r"
auth = { method = "token", token = "t", extra = 1 }
"#;
    let text = format!("{BASE}{vault}");
    assert_eq!(problems(&text), ["credentials.v.auth: unknown key `extra`"]);
}

#[test]
fn unknown_keys_of_another_source_are_rejected() {
    let text = BASE.replace("source = \"static\"", "source = \"static\"\nttl = \"15m\"");
    assert_eq!(problems(&text), ["credentials.app: unknown key `ttl`"]);
}

#[test]
fn wrong_types_name_the_type_never_the_value() {
    let text = BASE
        .replace("password = \"pw\"", "password = 31337")
        .replace(
            "name = \"app\"\ncredentials",
            "name = \"app\"\nport = \"5432\"\ncredentials",
        );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "users[0].password: expected a string, found an integer",
            "databases[0].port: expected an integer, found a string",
        ]
    );
    assert!(!found.join("\n").contains("31337"));
}

#[test]
fn three_independent_problems_give_three_messages() {
    let text = format!(
        "{BASE}\n[[databases]]\nname = \"b\"\npool_size = 0\ncredentials = \"nope\"\n\
         [[databases]]\nname = \"c\"\ncredentials = \"app\"\npool_mode = \"statement\"\n"
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "databases[2].pool_mode: `statement` is not one of \"transaction\", \"session\"",
            "databases[1].pool_size: must be at least 1",
            "databases[1].credentials: there is no [credentials.nope] entry",
        ]
    );
}

#[test]
fn an_unknown_log_format_is_a_problem_naming_the_choices() {
    let text = BASE.replace("[proxy]\n", "[proxy]\nlog_format = \"yaml\"\n");
    assert_eq!(
        problems(&text),
        ["proxy.log_format: `yaml` is not one of \"text\", \"json\""]
    );
}

#[test]
fn secrets_resolve_from_env_and_files() {
    let path = std::env::temp_dir().join(format!("pglease-load-test-{}", std::process::id()));
    std::fs::write(&path, "from-file\n").unwrap();
    let text = BASE
        .replace("\"pw\"", "\"env:PGLEASE_TEST_LOAD_PASSWORD\"")
        .replace("\"upstream-pw\"", &format!("\"file:{}\"", path.display()));
    let config = from_toml_str(&text, Path::new("/"), &env).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(config.users[0].password.expose(), "from-env");
    let SourceConfig::Static(source) = &config.credentials["app"].source else {
        panic!("not static")
    };
    assert_eq!(source.password.expose(), "from-file");
}

#[test]
fn unresolvable_secrets_name_the_variable_or_path_only() {
    let text = BASE
        .replace("\"pw\"", "\"env:PGLEASE_TEST_LOAD_UNSET\"")
        .replace("\"upstream-pw\"", "\"file:missing-secret\"");
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        "users[0].password: environment variable `PGLEASE_TEST_LOAD_UNSET` is not set"
    );
    assert!(
        found[1].starts_with(
            "credentials.app.password: cannot read secret file `/nowhere/missing-secret`"
        ),
        "{found:?}"
    );
}

#[test]
fn secret_values_never_appear_in_problems() {
    // Every field of this config is wrong in some way around a literal secret.
    let text = BASE
        .replace("\"upstream-pw\"", "\"s3cr3t-value\"\nrotate_at = 2")
        .replace("[[users]]", "[[users]]\nbogus = \"s3cr3t-value\"");
    let found = problems(&text).join("\n");
    assert!(
        found.contains("rotate_at") && found.contains("bogus"),
        "{found}"
    );
    assert!(!found.contains("s3cr3t-value"), "{found}");
}

#[test]
fn missing_required_keys_are_reported_once() {
    let text = BASE
        .replace("username = \"app\"\n", "")
        .replace("password = \"pw\"\n", "");
    assert_eq!(
        problems(&text),
        [
            "users[0].password: missing (required)",
            "credentials.app.username: missing (required)",
        ]
    );
}

#[test]
fn a_mistyped_required_key_is_not_also_reported_missing() {
    let text = format!(
        "{BASE}\n[credentials.f]\nsource = \"file\"\n\n[credentials.x]\nsource = \"exec\"\ncommand = \"get-creds\"\n"
    );
    assert_eq!(
        problems(&text),
        [
            "credentials.f.path: missing (required)",
            "credentials.x.command: expected an array of strings, found a string",
        ]
    );
}

#[test]
fn unknown_source_and_plain_users_table_are_explained() {
    let text = BASE
        .replace("source = \"static\"", "source = \"ldap\"")
        .replace("[[users]]", "[users]");
    let found = problems(&text);
    assert!(
        found.contains(&"users: expected an array of tables ([[users]]), found a table".into()),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("credentials.app.source: unknown source `ldap`")),
        "{found:?}"
    );
    // The broken entry is not reported again as missing.
    assert!(
        !found.iter().any(|p| p.contains("no [credentials.app]")),
        "{found:?}"
    );
}

#[test]
fn load_takes_relative_paths_from_the_file_directory() {
    let dir = std::env::temp_dir().join(format!("pglease-load-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("upstream.secret"), "from-dir").unwrap();
    std::fs::write(dir.join("vault.token"), "hvs.from-file\n").unwrap();
    let vault = r#"
[credentials.v]
source = "vault"
address = "http://v"
role = "r"
auth = { method = "token", token = "file:vault.token" }
"#;
    let text = BASE.replace("\"upstream-pw\"", "\"file:upstream.secret\"") + vault;
    std::fs::write(dir.join("pglease.toml"), text).unwrap();
    let loaded = Config::load(&dir.join("pglease.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
    let config = loaded.unwrap_or_else(|e| panic!("{e}"));
    let SourceConfig::Static(source) = &config.credentials["app"].source else {
        panic!("not static")
    };
    assert_eq!(source.password.expose(), "from-dir");
    // A token from a file remembers the file, to read it again when the token is replaced.
    let SourceConfig::Vault(vault) = &config.credentials["v"].source else {
        panic!("not vault")
    };
    let crate::config::VaultAuth::Token { token, token_file } = &vault.auth else {
        panic!("not token auth")
    };
    assert_eq!(token.expose(), "hvs.from-file");
    assert_eq!(
        token_file.as_deref(),
        Some(dir.join("vault.token").as_path())
    );
    let missing = Config::load(Path::new("/nowhere/pglease.toml")).unwrap_err();
    assert!(missing.problems[0].starts_with("/nowhere/pglease.toml: cannot read"));
}

#[test]
fn exec_env_values_are_secrets_and_their_problems_name_the_entry() {
    let text = format!(
        "{BASE}\n[credentials.x]\nsource = \"exec\"\ncommand = [\"get-creds\"]\n\
         env = {{ GOOD = \"env:PGLEASE_TEST_LOAD_PASSWORD\", NUMBER = 7, GONE = \"env:PGLEASE_TEST_UNSET_9\" }}\n"
    );
    assert_eq!(
        problems(&text),
        [
            "credentials.x.env.GONE: environment variable `PGLEASE_TEST_UNSET_9` is not set",
            "credentials.x.env.NUMBER: expected a string, found an integer",
        ]
    );
    let fine = format!(
        "{BASE}\n[credentials.x]\nsource = \"exec\"\ncommand = [\"get-creds\"]\n\
         env = {{ GOOD = \"env:PGLEASE_TEST_LOAD_PASSWORD\" }}\n"
    );
    let config = from_toml_str(&fine, Path::new("/"), &env).unwrap_or_else(|e| panic!("{e}"));
    let SourceConfig::Exec(exec) = &config.credentials["x"].source else {
        panic!("not exec");
    };
    assert_eq!(exec.env["GOOD"].expose(), "from-env");
    assert!(!format!("{exec:?}").contains("from-env"), "{exec:?}");
}

#[test]
fn upstream_tls_keys_are_read_with_libpq_names_and_paths_from_the_config_dir() {
    use crate::config::UpstreamTlsMode;
    let defaults = from_toml_str(BASE, Path::new("/etc/pglease"), &env).unwrap();
    assert_eq!(defaults.databases[0].upstream_tls, UpstreamTlsMode::Prefer);
    assert!(!defaults.databases[0].allow_plaintext_password);
    let text = BASE.replace(
        "credentials = \"app\"\n",
        "credentials = \"app\"\nupstream_tls = \"verify-full\"\nupstream_tls_ca = \"ca.pem\"\n\
         upstream_tls_cert = \"/abs/c.pem\"\nupstream_tls_key = \"k.pem\"\n\
         allow_plaintext_password = true\n",
    );
    let config = from_toml_str(&text, Path::new("/etc/pglease"), &env).unwrap();
    let db = &config.databases[0];
    assert_eq!(db.upstream_tls, UpstreamTlsMode::VerifyFull);
    assert_eq!(
        db.upstream_tls_ca.as_deref(),
        Some(Path::new("/etc/pglease/ca.pem"))
    );
    assert_eq!(
        db.upstream_tls_cert.as_deref(),
        Some(Path::new("/abs/c.pem"))
    );
    assert_eq!(
        db.upstream_tls_key.as_deref(),
        Some(Path::new("/etc/pglease/k.pem"))
    );
    assert!(db.allow_plaintext_password);
    let bad = BASE.replace(
        "credentials = \"app\"\n",
        "credentials = \"app\"\nupstream_tls = \"verify\"\n",
    );
    let found = problems(&bad);
    assert!(
        found
            .iter()
            .any(|p| p.contains("databases[0].upstream_tls")),
        "{found:?}"
    );
}
