//! Reading the serving sections, `[proxy]`, `[[users]]` and `[[databases]]`, into their
//! structs; every key left out keeps the default the struct itself defines.

use super::section::Section;
use crate::config::{
    AuthType, ClientTls, DatabaseConfig, LogFormat, PoolMode, ProxyConfig, UpstreamTlsMode,
    UserConfig,
};

/// Reads `[proxy]`; every key is optional.
pub(super) fn read_proxy(mut s: Section<'_, '_>) -> ProxyConfig {
    let d = ProxyConfig::default();
    let proxy = ProxyConfig {
        listen: s.string_or("listen", &d.listen),
        admin_listen: s.string("admin_listen"),
        readiness_margin: s.duration_or("readiness_margin", d.readiness_margin),
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
        max_prepared_statements: s.usize_or("max_prepared_statements", d.max_prepared_statements),
        query_wait_timeout: s.duration_or("query_wait_timeout", d.query_wait_timeout),
        connect_timeout: s.duration_or("connect_timeout", d.connect_timeout),
        client_login_timeout: login_timeout(&mut s, d.client_login_timeout),
        max_client_conn: s.usize_or("max_client_conn", d.max_client_conn),
        client_idle_timeout: s.duration_or("client_idle_timeout", d.client_idle_timeout),
        idle_transaction_timeout: s
            .duration_or("idle_transaction_timeout", d.idle_transaction_timeout),
        query_timeout: s.duration_or("query_timeout", d.query_timeout),
        server_lifetime: s.duration_or("server_lifetime", d.server_lifetime),
        reserve_pool_timeout: s.duration_or("reserve_pool_timeout", d.reserve_pool_timeout),
        idle_timeout: s.duration_or("idle_timeout", d.idle_timeout),
        shutdown_timeout: s.duration_or("shutdown_timeout", d.shutdown_timeout),
        application_name: s.string_or("application_name", &d.application_name),
        workers: s.opt_usize("workers"),
        client_tls: s.choice(
            "client_tls",
            &[
                ("disable", ClientTls::Disable),
                ("allow", ClientTls::Allow),
                ("require", ClientTls::Require),
            ],
            d.client_tls,
        ),
        client_tls_cert: s.opt_path("client_tls_cert"),
        client_tls_key: s.opt_path("client_tls_key"),
        log_format: s.choice("log_format", &LogFormat::NAMES, d.log_format),
    };
    s.finish();
    proxy
}

/// `client_login_timeout`, or its old name `login_timeout` (with a warning naming the new
/// one, so configs written for earlier releases keep working); both at once is a problem.
fn login_timeout(s: &mut Section<'_, '_>, default: std::time::Duration) -> std::time::Duration {
    let new = s.opt_duration("client_login_timeout");
    let old = s.opt_duration("login_timeout");
    match (new, old) {
        (Some(_), Some(_)) => {
            s.problem(
                "login_timeout",
                "is the old name of client_login_timeout; set only client_login_timeout",
            );
            default
        }
        (None, Some(old)) => {
            let path = s.key_path("login_timeout");
            s.loader.warnings.push(format!(
                "{path}: renamed to client_login_timeout; the old name still works for now"
            ));
            old
        }
        (new, None) => new.unwrap_or(default),
    }
}

/// Reads one `[[users]]` entry.
pub(super) fn read_user(mut s: Section<'_, '_>) -> UserConfig {
    let name = s.required_string("name");
    let password = s.secret("password");
    s.finish();
    UserConfig { name, password }
}

/// Reads one `[[databases]]` entry.
pub(super) fn read_database(mut s: Section<'_, '_>) -> DatabaseConfig {
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
    d.min_pool_size = s.usize_or("min_pool_size", d.min_pool_size);
    d.reserve_pool_size = s.usize_or("reserve_pool_size", d.reserve_pool_size);
    d.reset_query = s.string_or("reset_query", &d.reset_query);
    d.upstream_tls = s.choice(
        "upstream_tls",
        &[
            ("disable", UpstreamTlsMode::Disable),
            ("prefer", UpstreamTlsMode::Prefer),
            ("require", UpstreamTlsMode::Require),
            ("verify-ca", UpstreamTlsMode::VerifyCa),
            ("verify-full", UpstreamTlsMode::VerifyFull),
        ],
        d.upstream_tls,
    );
    d.upstream_tls_ca = s.opt_path("upstream_tls_ca");
    d.upstream_tls_cert = s.opt_path("upstream_tls_cert");
    d.upstream_tls_key = s.opt_path("upstream_tls_key");
    d.allow_plaintext_password = s.bool_or("allow_plaintext_password", false);
    d.users = s.strings("users");
    s.finish();
    d
}
