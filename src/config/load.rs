//! Reading a TOML document into [`Config`], collecting every syntax, type and unknown-key
//! problem instead of stopping at the first.
//!
//! The document is parsed into a `toml::Table` and each table is read by hand rather than by
//! `serde` derive, for three reasons: serde stops at the first error of a section; its type
//! errors quote the offending value, which for a password would put the secret in the error;
//! and `deny_unknown_fields` does not work with the flattened, `source`-tagged credentials
//! tables. Each getter of [`Section`] removes its key, so whatever is left when a table is
//! finished is an unknown key, reported with its table's path.
//!
//! This file owns the steps around the readers (file, syntax, validation, merging problems)
//! and the top level of the document; `section` is the table reader every section uses, and
//! `serving` and `credentials` read into the structs of `config::serving` and
//! `config::credentials`.

mod credentials;
mod section;
mod serving;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use toml::{Table, Value};

use super::secret_ref::EnvLookup;
use super::{Config, ConfigError, validate};
use section::{Loader, Section, type_name};

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
        warnings: Vec::new(),
        broken_credentials: BTreeSet::new(),
    };
    let mut config = read_root(Section::new(String::new(), root, &mut loader));
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
        config.warnings.extend(loader.warnings);
        config.warnings.extend(validate::warnings(&config));
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

/// Reads the whole document; sections that are absent get their defaults (or stay empty).
fn read_root(mut root: Section<'_, '_>) -> Config {
    let mut config = Config::default();
    if let Some(table) = root.table("proxy") {
        config.proxy = serving::read_proxy(root.child("proxy".to_owned(), table));
    }
    for (path, table) in array_of_tables(&mut root, "users") {
        config
            .users
            .push(serving::read_user(root.child(path, table)));
    }
    for (path, table) in array_of_tables(&mut root, "databases") {
        config
            .databases
            .push(serving::read_database(root.child(path, table)));
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
        match credentials::read_credentials(root.child(path, table)) {
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

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;
