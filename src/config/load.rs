//! Reading a TOML document into [`Config`], collecting every syntax, type and unknown-key
//! problem instead of stopping at the first.
//!
//! The document is parsed into a `toml::Table` and each table is read by hand rather than by
//! `serde` derive, for three reasons: serde stops at the first error of a section; its type
//! errors quote the offending value, which for a password would put the secret in the error;
//! and `deny_unknown_fields` does not work with the flattened, `source`-tagged credentials
//! tables. Each getter below removes its key, so whatever is left when a table is finished is
//! an unknown key, reported with its table's path.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::duration::parse_duration;
use super::secret_ref::{EnvLookup, resolve_secret};
use super::{
    AuthType, Config, ConfigError, CredentialsConfig, DatabaseConfig, ExecSourceConfig,
    FileSourceConfig, IssuerConfig, PoolMode, ProxyConfig, SourceConfig, StaticSourceConfig,
    UserConfig, VaultAuth, VaultConfig, VaultKind, validate,
};
use crate::secret::Secret;

/// Config files are a few kilobytes; refuse to read something that is clearly not one.
const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads the file at `path`; relative paths inside it are taken from its directory.
pub(super) fn from_file(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config_file(path).map_err(|problem| ConfigError {
        problems: vec![format!("{}: {problem}", path.display())],
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    from_toml_str(&text, base_dir, &|name| std::env::var(name))
}

fn read_config_file(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(format!("larger than {MAX_CONFIG_FILE_BYTES} bytes"));
    }
    Ok(text)
}

/// Parses, resolves secrets and validates; every problem from every step is returned.
pub(super) fn from_toml_str(
    text: &str,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let root: Table = text.parse().map_err(|error| ConfigError {
        problems: vec![syntax_problem(text, &error)],
    })?;
    let mut loader = Loader {
        base_dir,
        env,
        problems: Vec::new(),
        broken_credentials: BTreeSet::new(),
    };
    let config = read_root(Section::new(String::new(), root, &mut loader));
    let mut problems = loader.problems;
    // A key that failed to load already has its problem; a second one from validation (e.g.
    // "must not be empty" for a password whose `env:` is unset) would only be noise.
    let reported: BTreeSet<String> = problems
        .iter()
        .map(|p| problem_path(p).to_owned())
        .collect();
    problems.extend(
        validate::check(&config, &loader.broken_credentials)
            .into_iter()
            .filter(|p| !reported.contains(problem_path(p))),
    );
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// The key path a problem is about: everything before the first `": "`.
fn problem_path(problem: &str) -> &str {
    problem.split_once(": ").map_or(problem, |(path, _)| path)
}

/// A one-line syntax problem with its position. The parser's own multi-line rendering is not
/// used because it quotes the offending source line, which may hold a literal secret.
fn syntax_problem(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

/// What every table being read shares: where relative paths start, how `env:` is looked up,
/// and the problems found so far.
struct Loader<'a> {
    base_dir: &'a Path,
    env: EnvLookup<'a>,
    problems: Vec<String>,
    /// `[credentials.NAME]` entries that exist but failed to load; databases naming them get
    /// no extra "missing credentials" problem.
    broken_credentials: BTreeSet<String>,
}

/// One TOML table being read. Each getter removes its key and reports a wrong type under the
/// key's full path; [`Section::finish`] reports whatever keys are left as unknown.
struct Section<'s, 'a> {
    path: String,
    table: Table,
    loader: &'s mut Loader<'a>,
}

impl<'s, 'a> Section<'s, 'a> {
    fn new(path: String, table: Table, loader: &'s mut Loader<'a>) -> Self {
        Section {
            path,
            table,
            loader,
        }
    }

    /// A section for a table nested in this one; finish it before using `self` again.
    fn child(&mut self, path: String, table: Table) -> Section<'_, 'a> {
        Section::new(path, table, self.loader)
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn problem(&mut self, key: &str, message: impl Display) {
        let path = self.key_path(key);
        self.loader.problems.push(format!("{path}: {message}"));
    }

    /// Reports `key` as missing if it is absent. A present key of the wrong type gets its own
    /// problem from the getter instead, so nothing is reported twice.
    fn require(&mut self, key: &str) {
        if !self.table.contains_key(key) {
            self.problem(key, "missing (required)");
        }
    }

    /// Reports every key nobody asked for: a typo must not silently fall back to a default.
    fn finish(self) {
        for key in self.table.keys() {
            let problem = if self.path.is_empty() {
                format!("top level: unknown key `{key}`")
            } else {
                format!("{}: unknown key `{key}`", self.path)
            };
            self.loader.problems.push(problem);
        }
    }

    /// Takes `key` and converts it with `convert`; a value of the wrong type is reported
    /// (by its type only, never its content) and read as absent.
    fn get<T>(&mut self, key: &str, expected: &str, convert: fn(Value) -> Option<T>) -> Option<T> {
        let value = self.table.remove(key)?;
        let found = type_name(&value);
        let converted = convert(value);
        if converted.is_none() {
            self.problem(key, format!("expected {expected}, found {found}"));
        }
        converted
    }

    fn table(&mut self, key: &str) -> Option<Table> {
        self.get(key, "a table", |v| match v {
            Value::Table(t) => Some(t),
            _ => None,
        })
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.get(key, "a string", |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    fn string_or(&mut self, key: &str, default: &str) -> String {
        self.string(key).unwrap_or_else(|| default.to_owned())
    }

    fn required_string(&mut self, key: &str) -> String {
        self.require(key);
        self.string(key).unwrap_or_default()
    }

    fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        let items = self.get(key, "an array of strings", |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        })?;
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Value::String(s) => strings.push(s),
                other => {
                    let found = type_name(&other);
                    self.problem(
                        &format!("{key}[{index}]"),
                        format!("expected a string, found {found}"),
                    );
                }
            }
        }
        Some(strings)
    }

    fn integer(&mut self, key: &str) -> Option<i64> {
        self.get(key, "an integer", |v| match v {
            Value::Integer(i) => Some(i),
            _ => None,
        })
    }

    fn opt_usize(&mut self, key: &str) -> Option<usize> {
        let value = self.integer(key)?;
        let converted = usize::try_from(value).ok();
        if converted.is_none() {
            self.problem(key, "must not be negative");
        }
        converted
    }

    fn usize_or(&mut self, key: &str, default: usize) -> usize {
        self.opt_usize(key).unwrap_or(default)
    }

    fn port_or(&mut self, key: &str, default: u16) -> u16 {
        let Some(value) = self.integer(key) else {
            return default;
        };
        u16::try_from(value).unwrap_or_else(|_| {
            self.problem(key, "must be a port number, 1 to 65535");
            default
        })
    }

    fn f64_or(&mut self, key: &str, default: f64) -> f64 {
        self.get(key, "a number", |v| match v {
            Value::Float(f) => Some(f),
            // `rotate_at = 1` is a number too; rejecting it for lacking `.0` helps nobody.
            Value::Integer(i) => Some(i as f64),
            _ => None,
        })
        .unwrap_or(default)
    }

    fn bool_or(&mut self, key: &str, default: bool) -> bool {
        self.get(key, "true or false", |v| match v {
            Value::Boolean(b) => Some(b),
            _ => None,
        })
        .unwrap_or(default)
    }

    fn opt_duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.get(key, "a duration string such as \"30s\"", |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })?;
        parse_duration(&text)
            .map_err(|error| self.problem(key, error))
            .ok()
    }

    fn duration_or(&mut self, key: &str, default: Duration) -> Duration {
        self.opt_duration(key).unwrap_or(default)
    }

    /// One of a fixed set of words (`pool_mode`, `auth_type`, …).
    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
        let Some(word) = self.string(key) else {
            return default;
        };
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == word) {
            return *value;
        }
        let names: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        self.problem(key, format!("`{word}` is not one of {}", names.join(", ")));
        default
    }

    /// A required secret, resolved from `env:`/`file:`. On failure the problem names the
    /// variable or path, and an empty placeholder is returned so reading can go on.
    fn secret(&mut self, key: &str) -> Secret {
        self.require(key);
        let Some(raw) = self.string(key) else {
            return Secret::new(String::new());
        };
        resolve_secret(raw, self.loader.base_dir, self.loader.env).unwrap_or_else(|error| {
            self.problem(key, error);
            Secret::new(String::new())
        })
    }

    /// A path; relative ones are taken from the config file's directory. An empty string
    /// stays empty (rather than becoming the directory) so validation can report it.
    fn opt_path(&mut self, key: &str) -> Option<PathBuf> {
        let path = self.string(key)?;
        Some(if path.is_empty() {
            PathBuf::new()
        } else {
            self.loader.base_dir.join(path)
        })
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Reads `[proxy]`; every key is optional.
fn read_proxy(mut s: Section<'_, '_>) -> ProxyConfig {
    let d = ProxyConfig::default();
    let proxy = ProxyConfig {
        listen: s.string_or("listen", &d.listen),
        admin_listen: s.string("admin_listen"),
        admin_users: s.strings("admin_users").unwrap_or_default(),
        auth_type: s.choice(
            "auth_type",
            &[
                ("scram-sha-256", AuthType::ScramSha256),
                ("md5", AuthType::Md5),
            ],
            d.auth_type,
        ),
        max_message_size: s.usize_or("max_message_size", d.max_message_size),
        query_wait_timeout: s.duration_or("query_wait_timeout", d.query_wait_timeout),
        connect_timeout: s.duration_or("connect_timeout", d.connect_timeout),
        login_timeout: s.duration_or("login_timeout", d.login_timeout),
        idle_timeout: s.duration_or("idle_timeout", d.idle_timeout),
        shutdown_timeout: s.duration_or("shutdown_timeout", d.shutdown_timeout),
        application_name: s.string_or("application_name", &d.application_name),
        workers: s.opt_usize("workers"),
    };
    s.finish();
    proxy
}

/// Reads one `[[users]]` entry.
fn read_user(mut s: Section<'_, '_>) -> UserConfig {
    let name = s.required_string("name");
    let password = s.secret("password");
    s.finish();
    UserConfig { name, password }
}

/// Reads the whole document; sections that are absent get their defaults (or stay empty).
fn read_root(mut root: Section<'_, '_>) -> Config {
    let mut config = Config::default();
    if let Some(table) = root.table("proxy") {
        config.proxy = read_proxy(root.child("proxy".to_owned(), table));
    }
    for (path, table) in array_of_tables(&mut root, "users") {
        config.users.push(read_user(root.child(path, table)));
    }
    for (path, table) in array_of_tables(&mut root, "databases") {
        config
            .databases
            .push(read_database(root.child(path, table)));
    }
    for (name, value) in root.table("credentials").unwrap_or_default() {
        let path = validate::credentials_path(&name);
        let Value::Table(table) = value else {
            let found = type_name(&value);
            root.loader
                .problems
                .push(format!("{path}: expected a table, found {found}"));
            root.loader.broken_credentials.insert(name);
            continue;
        };
        match read_credentials(root.child(path, table)) {
            Some(credentials) => {
                config.credentials.insert(name, credentials);
            }
            None => {
                root.loader.broken_credentials.insert(name);
            }
        }
    }
    root.finish();
    config
}

/// The entries of a `[[key]]` array with their paths (`users[0]`, …). Entries that are not
/// tables are reported and skipped; so is a plain `[key]` table, a common slip.
fn array_of_tables(root: &mut Section<'_, '_>, key: &str) -> Vec<(String, Table)> {
    let Some(items) = root.get(
        key,
        &format!("an array of tables ([[{key}]])"),
        |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        },
    ) else {
        return Vec::new();
    };
    let mut tables = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let path = format!("{key}[{index}]");
        match item {
            Value::Table(table) => tables.push((path, table)),
            other => {
                let found = type_name(&other);
                root.loader
                    .problems
                    .push(format!("{path}: expected a table, found {found}"));
            }
        }
    }
    tables
}

/// Reads one `[[databases]]` entry.
fn read_database(mut s: Section<'_, '_>) -> DatabaseConfig {
    let mut d = DatabaseConfig::new(s.required_string("name"), s.required_string("credentials"));
    d.host = s.string_or("host", &d.host);
    d.port = s.port_or("port", d.port);
    d.dbname = s.string("dbname");
    d.pool_mode = s.choice(
        "pool_mode",
        &[
            ("transaction", PoolMode::Transaction),
            ("session", PoolMode::Session),
        ],
        d.pool_mode,
    );
    d.pool_size = s.usize_or("pool_size", d.pool_size);
    d.reset_query = s.string_or("reset_query", &d.reset_query);
    s.finish();
    d
}

/// Reads one `[credentials.NAME]` table: the lifecycle keys plus the keys of its `source`.
/// `None` when the source (or a required part of it) could not be read; the problems are
/// already recorded.
fn read_credentials(mut s: Section<'_, '_>) -> Option<CredentialsConfig> {
    let source = match s.required_string("source").as_str() {
        "static" => Some(SourceConfig::Static(StaticSourceConfig {
            username: s.required_string("username"),
            password: s.secret("password"),
        })),
        "issuer" => Some(SourceConfig::Issuer(read_issuer(&mut s))),
        "vault" => read_vault(&mut s).map(SourceConfig::Vault),
        "file" => Some(SourceConfig::File(FileSourceConfig {
            path: {
                s.require("path");
                s.opt_path("path").unwrap_or_default()
            },
            poll_interval: s.duration_or("poll_interval", Duration::from_secs(5)),
        })),
        "exec" => Some(SourceConfig::Exec(ExecSourceConfig {
            command: {
                s.require("command");
                s.strings("command").unwrap_or_default()
            },
            timeout: s.duration_or("timeout", Duration::from_secs(10)),
            refresh_interval: s.opt_duration("refresh_interval"),
        })),
        // Already reported as missing or mistyped; which keys belong is unknowable.
        "" => return None,
        other => {
            let message =
                format!("unknown source `{other}`; expected issuer, vault, file, exec or static");
            s.problem("source", message);
            return None;
        }
    };
    // Read the lifecycle keys even when the source failed, so their mistakes are reported too.
    let rotate_at = s.f64_or("rotate_at", super::DEFAULT_ROTATE_AT);
    let safety_margin = s.duration_or("safety_margin", super::DEFAULT_SAFETY_MARGIN);
    let renew = s.bool_or("renew", true);
    s.finish();
    let mut credentials = CredentialsConfig::new(source?);
    credentials.rotate_at = rotate_at;
    credentials.safety_margin = safety_margin;
    credentials.renew = renew;
    Some(credentials)
}

fn read_issuer(s: &mut Section<'_, '_>) -> IssuerConfig {
    let mut c = IssuerConfig::new(s.secret("admin_url"));
    c.member_of = s.strings("member_of").unwrap_or_default();
    c.ttl = s.duration_or("ttl", c.ttl);
    c.max_ttl = s.duration_or("max_ttl", c.max_ttl);
    c.prefix = s.string_or("prefix", &c.prefix);
    c.creation_statements = s.strings("creation_statements");
    c.renew_statements = s.strings("renew_statements");
    c.revocation_statements = s.strings("revocation_statements");
    c.act_as = s.string("act_as");
    c.drop_owned = s.bool_or("drop_owned", c.drop_owned);
    c.reap_interval = s.duration_or("reap_interval", c.reap_interval);
    c
}

fn read_vault(s: &mut Section<'_, '_>) -> Option<VaultConfig> {
    let address = s.required_string("address");
    let mount = s.string_or("mount", "database");
    let role = s.required_string("role");
    let kind = s.choice(
        "kind",
        &[
            ("dynamic", VaultKind::Dynamic),
            ("static", VaultKind::Static),
        ],
        VaultKind::Dynamic,
    );
    let namespace = s.string("namespace");
    let ca_file = s.opt_path("ca_file");
    s.require("auth");
    let table = s.table("auth")?;
    let path = s.key_path("auth");
    let auth = read_vault_auth(s.child(path, table))?;
    Some(VaultConfig {
        address,
        mount,
        role,
        kind,
        namespace,
        ca_file,
        auth,
    })
}

fn read_vault_auth(mut s: Section<'_, '_>) -> Option<VaultAuth> {
    let auth = match s.required_string("method").as_str() {
        "token" => VaultAuth::Token {
            token: s.secret("token"),
        },
        "approle" => VaultAuth::AppRole {
            role_id: s.secret("role_id"),
            secret_id: s.secret("secret_id"),
            mount: s.string_or("mount", "approle"),
        },
        "kubernetes" => VaultAuth::Kubernetes {
            role: s.required_string("role"),
            jwt_path: s
                .opt_path("jwt_path")
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBERNETES_JWT_PATH)),
            mount: s.string_or("mount", "kubernetes"),
        },
        "" => return None,
        other => {
            let message = format!(
                "unknown method `{other}`; expected \"token\", \"approle\" or \"kubernetes\""
            );
            s.problem("method", message);
            return None;
        }
    };
    s.finish();
    Some(auth)
}

/// Where Kubernetes mounts a pod's service-account token.
const DEFAULT_KUBERNETES_JWT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::*;

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
        let text = BASE.replace("\"upstream-pw\"", "\"file:upstream.secret\"");
        std::fs::write(dir.join("pglease.toml"), text).unwrap();
        let loaded = Config::load(&dir.join("pglease.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
        let config = loaded.unwrap_or_else(|e| panic!("{e}"));
        let SourceConfig::Static(source) = &config.credentials["app"].source else {
            panic!("not static")
        };
        assert_eq!(source.password.expose(), "from-dir");
        let missing = Config::load(Path::new("/nowhere/pglease.toml")).unwrap_err();
        assert!(missing.problems[0].starts_with("/nowhere/pglease.toml: cannot read"));
    }
}
