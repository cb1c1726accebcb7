//! Checks of one `[credentials.NAME]` entry: its name, `rotate_at`, and the keys of its
//! source, including the issuer's lifecycle arithmetic and statement templates.

use super::{Problems, credentials_path, identifier_problem};
use crate::config::duration::format_duration;
use crate::config::{
    CredentialsConfig, ExecSourceConfig, FileSourceConfig, IssuerConfig, OnRevoke, SourceConfig,
    VaultAuth, VaultConfig,
};

/// Short enough that `<prefix>_<random>` stays within [`super::MAX_IDENTIFIER_BYTES`].
const MAX_PREFIX_BYTES: usize = 20;
/// The only placeholders (`{{name}}` etc.) statement templates may use; anything else would
/// reach PostgreSQL unreplaced.
const PLACEHOLDERS: [&str; 3] = ["name", "password", "expiration"];

pub(super) fn check_credentials(
    name: &str,
    credentials: &CredentialsConfig,
    problems: &mut Problems,
) {
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
    if credentials.safety_margin.is_some_and(|m| m >= issuer.ttl) {
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
    }
    problems.nonzero(format_args!("{path}.reap_interval"), issuer.reap_interval);
}

/// Settings that load but would leave objects the application creates unreachable by later
/// leases, or drop them at revocation: each is said once, at `pglease check` and at start.
pub(super) fn issuer_warnings(path: &str, issuer: &IssuerConfig, warnings: &mut Problems) {
    if issuer.act_as.is_none() {
        warnings.add(
            format_args!("{path}.act_as"),
            "not set: tables and other objects the application creates belong to each lease's \
             own role, so the next lease cannot use them, and at revocation they are reassigned \
             to the admin role; set act_as to a stable role that owns the application's objects",
        );
    }
    if issuer.on_revoke == OnRevoke::DropObjects {
        warnings.add(
            format_args!("{path}.on_revoke"),
            "\"drop_objects\": every object an issued role still owns is dropped when its lease \
             is revoked (objects owned by act_as are kept)",
        );
    }
    let drops = issuer
        .revocation_statements
        .iter()
        .flatten()
        .any(|statement| {
            let words: Vec<String> = statement
                .split_whitespace()
                .map(str::to_ascii_uppercase)
                .collect();
            words
                .windows(2)
                .any(|pair| pair[0] == "DROP" && pair[1] == "OWNED")
        });
    if drops {
        warnings.add(
            format_args!("{path}.revocation_statements"),
            "run DROP OWNED: objects an issued role owns are dropped when its lease is revoked",
        );
    }
}

pub(super) fn prefix_problem(prefix: &str) -> Option<String> {
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
pub(super) fn template_problem(statement: &str) -> Option<String> {
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
        VaultAuth::Token { token, .. } => non_empty("auth.token", token.expose()),
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
    for (name, value) in &exec.env {
        // Either would fail only when the command is first run, long after start-up.
        if name.is_empty() || name.contains(['=', '\0']) {
            problems.add(
                format_args!("{path}.env"),
                format_args!("`{name}` is not a variable name (empty, or has `=` or NUL)"),
            );
        }
        if value.expose().contains('\0') {
            problems.add(
                format_args!("{path}.env.{name}"),
                "must not contain a NUL character",
            );
        }
    }
}

/// The host of `address` when it is plain `http://` to somewhere other than this machine,
/// `None` for `https://` and for loopback (127.0.0.0/8, ::1, `localhost`). Tokens and
/// passwords sent in clear over loopback never leave the host; anywhere else they do.
pub fn plaintext_remote_host(address: &str) -> Option<String> {
    let url = reqwest::Url::parse(address).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| host.to_owned())
}
