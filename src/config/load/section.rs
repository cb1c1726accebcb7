//! The table reader behind every section: typed getters that take their key out of the table,
//! report a wrong type by its type alone (never the value, which may be a secret), and leave
//! whatever nobody asked for to be reported as an unknown key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::config::duration::parse_duration;
use crate::config::secret_ref::{EnvLookup, resolve_secret};
use crate::secret::Secret;

/// What every table being read shares: where relative paths start, how `env:` is looked up,
/// and the problems found so far.
pub(super) struct Loader<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) env: EnvLookup<'a>,
    pub(super) problems: Vec<String>,
    /// What loads but should be heard about (an old key name), for [`Config::warnings`].
    ///
    /// [`Config::warnings`]: crate::config::Config::warnings
    pub(super) warnings: Vec<String>,
    /// `[credentials.NAME]` entries that exist but failed to load; databases naming them get
    /// no extra "missing credentials" problem.
    pub(super) broken_credentials: BTreeSet<String>,
}

/// One TOML table being read. Each getter removes its key and reports a wrong type under the
/// key's full path; [`Section::finish`] reports whatever keys are left as unknown.
pub(super) struct Section<'s, 'a> {
    path: String,
    table: Table,
    pub(super) loader: &'s mut Loader<'a>,
}

impl<'s, 'a> Section<'s, 'a> {
    pub(super) fn new(path: String, table: Table, loader: &'s mut Loader<'a>) -> Self {
        Section {
            path,
            table,
            loader,
        }
    }

    /// A section for a table nested in this one; finish it before using `self` again.
    pub(super) fn child(&mut self, path: String, table: Table) -> Section<'_, 'a> {
        Section::new(path, table, self.loader)
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn problem(&mut self, key: &str, message: impl Display) {
        let path = self.key_path(key);
        self.loader.problems.push(format!("{path}: {message}"));
    }

    /// Reports `key` as missing if it is absent. A present key of the wrong type gets its own
    /// problem from the getter instead, so nothing is reported twice.
    pub(super) fn require(&mut self, key: &str) {
        if !self.table.contains_key(key) {
            self.problem(key, "missing (required)");
        }
    }

    /// Reports every key nobody asked for: a typo must not silently fall back to a default.
    pub(super) fn finish(self) {
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
    pub(super) fn get<T>(
        &mut self,
        key: &str,
        expected: &str,
        convert: fn(Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.table.remove(key)?;
        let found = type_name(&value);
        let converted = convert(value);
        if converted.is_none() {
            self.problem(key, format!("expected {expected}, found {found}"));
        }
        converted
    }

    pub(super) fn table(&mut self, key: &str) -> Option<Table> {
        self.get(key, "a table", |v| match v {
            Value::Table(t) => Some(t),
            _ => None,
        })
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        self.get(key, "a string", |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    pub(super) fn string_or(&mut self, key: &str, default: &str) -> String {
        self.string(key).unwrap_or_else(|| default.to_owned())
    }

    pub(super) fn required_string(&mut self, key: &str) -> String {
        self.require(key);
        self.string(key).unwrap_or_default()
    }

    pub(super) fn strings(&mut self, key: &str) -> Option<Vec<String>> {
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

    pub(super) fn opt_usize(&mut self, key: &str) -> Option<usize> {
        let value = self.integer(key)?;
        let converted = usize::try_from(value).ok();
        if converted.is_none() {
            self.problem(key, "must not be negative");
        }
        converted
    }

    pub(super) fn usize_or(&mut self, key: &str, default: usize) -> usize {
        self.opt_usize(key).unwrap_or(default)
    }

    pub(super) fn port_or(&mut self, key: &str, default: u16) -> u16 {
        let Some(value) = self.integer(key) else {
            return default;
        };
        u16::try_from(value).unwrap_or_else(|_| {
            self.problem(key, "must be a port number, 1 to 65535");
            default
        })
    }

    pub(super) fn f64_or(&mut self, key: &str, default: f64) -> f64 {
        self.get(key, "a number", |v| match v {
            Value::Float(f) => Some(f),
            // `rotate_at = 1` is a number too; rejecting it for lacking `.0` helps nobody.
            Value::Integer(i) => Some(i as f64),
            _ => None,
        })
        .unwrap_or(default)
    }

    pub(super) fn bool_or(&mut self, key: &str, default: bool) -> bool {
        self.get(key, "true or false", |v| match v {
            Value::Boolean(b) => Some(b),
            _ => None,
        })
        .unwrap_or(default)
    }

    pub(super) fn opt_duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.get(key, "a duration string such as \"30s\"", |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })?;
        parse_duration(&text)
            .map_err(|error| self.problem(key, error))
            .ok()
    }

    pub(super) fn duration_or(&mut self, key: &str, default: Duration) -> Duration {
        self.opt_duration(key).unwrap_or(default)
    }

    /// One of a fixed set of words (`pool_mode`, `auth_type`, …).
    pub(super) fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
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
    pub(super) fn secret(&mut self, key: &str) -> Secret {
        self.require(key);
        let Some(raw) = self.string(key) else {
            return Secret::new(String::new());
        };
        resolve_secret(raw, self.loader.base_dir, self.loader.env).unwrap_or_else(|error| {
            self.problem(key, error);
            Secret::new(String::new())
        })
    }

    /// An optional table whose every value is a secret (`env = { NAME = "value" }`), resolved
    /// as [`Section::secret`] resolves one. Problems name the entry, never its value.
    pub(super) fn secret_table(&mut self, key: &str) -> BTreeMap<String, Secret> {
        let mut secrets = BTreeMap::new();
        let Some(table) = self.table(key) else {
            return secrets;
        };
        for (name, value) in table {
            let entry = format!("{key}.{name}");
            let Value::String(raw) = value else {
                let found = type_name(&value);
                self.problem(&entry, format!("expected a string, found {found}"));
                continue;
            };
            match resolve_secret(raw, self.loader.base_dir, self.loader.env) {
                Ok(secret) => {
                    secrets.insert(name, secret);
                }
                Err(error) => self.problem(&entry, error),
            }
        }
        secrets
    }

    /// For a secret given as `file:PATH`, that file (relative to the config file's
    /// directory), for sources that read it again later; `None` for any other form. Leaves
    /// the key for [`Section::secret`].
    pub(super) fn secret_file(&self, key: &str) -> Option<PathBuf> {
        let raw = self.table.get(key)?.as_str()?;
        let path = raw.strip_prefix("file:").filter(|p| !p.is_empty())?;
        Some(self.loader.base_dir.join(path))
    }

    /// A path; relative ones are taken from the config file's directory. An empty string
    /// stays empty (rather than becoming the directory) so validation can report it.
    pub(super) fn opt_path(&mut self, key: &str) -> Option<PathBuf> {
        let path = self.string(key)?;
        Some(if path.is_empty() {
            PathBuf::new()
        } else {
            self.loader.base_dir.join(path)
        })
    }
}

pub(super) fn type_name(value: &Value) -> &'static str {
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
