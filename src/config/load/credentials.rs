//! Reading one `[credentials.NAME]` table: its `source` decides which keys belong, then the
//! lifecycle keys every entry shares are read, so a broken source still gets them checked.

use std::path::PathBuf;
use std::time::Duration;

use super::section::Section;
use crate::config::credentials::DEFAULT_ROTATE_AT;
use crate::config::{
    CredentialsConfig, ExecSourceConfig, FileSourceConfig, IssuerConfig, OnRevoke, SourceConfig,
    StaticSourceConfig, VaultAuth, VaultConfig, VaultKind,
};

/// Reads one `[credentials.NAME]` table: the lifecycle keys plus the keys of its `source`.
/// `None` when the source (or a required part of it) could not be read; the problems are
/// already recorded.
pub(super) fn read_credentials(mut s: Section<'_, '_>) -> Option<CredentialsConfig> {
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
            env: s.secret_table("env"),
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
    let rotate_at = s.f64_or("rotate_at", DEFAULT_ROTATE_AT);
    let safety_margin = s.opt_duration("safety_margin");
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
    c.on_revoke = s.choice(
        "on_revoke",
        &[
            ("reassign", OnRevoke::Reassign),
            ("drop_objects", OnRevoke::DropObjects),
        ],
        c.on_revoke,
    );
    // The old key's `true` default dropped application objects; a config still naming it
    // must not load as if it meant either choice.
    if s.get("drop_owned", "any value", Some).is_some() {
        s.problem(
            "drop_owned",
            "was replaced by `on_revoke`: \"reassign\" (the default; what the role owns goes to \
             act_as) or \"drop_objects\"",
        );
    }
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
            token_file: s.secret_file("token"),
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
