//! `SHOW CONFIG`: the settings the proxy runs with, as (key, value, default, changeable).
//! Every secret shows as `***`: values are written out key by key here, never through a
//! `Debug` of the config, so a key added later cannot leak by accident.

use std::time::Duration;

use super::show::mode;
use super::wire::{Kind, Table, text};
use crate::config::{AuthType, ClientTls, Config, ProxyConfig};

/// How every secret value is shown.
const HIDDEN: &str = "***";

/// `SHOW CONFIG`.
pub fn config(config: &Config) -> Table {
    let mut t = Table::new(&[
        ("key", Kind::Text),
        ("value", Kind::Text),
        ("default", Kind::Text),
        ("changeable", Kind::Text),
    ]);
    let defaults = ProxyConfig::default();
    for (key, value, default) in proxy_rows(&config.proxy)
        .into_iter()
        .zip(proxy_rows(&defaults))
        .map(|((key, value), (_, default))| (key, value, default))
    {
        t.row(vec![text(key), text(value), text(default), text("no")]);
    }
    for user in &config.users {
        let key = format!("users.{}.password", user.name);
        t.row(vec![text(key), text(HIDDEN), None, text("no")]);
    }
    for db in &config.databases {
        let prefix = format!("databases.{}", db.name);
        for (key, value) in [
            ("host", db.host.clone()),
            ("port", db.port.to_string()),
            ("dbname", db.upstream_dbname().to_owned()),
            ("pool_mode", mode(db.pool_mode).to_owned()),
            ("pool_size", db.pool_size.to_string()),
            ("min_pool_size", db.min_pool_size.to_string()),
            ("reserve_pool_size", db.reserve_pool_size.to_string()),
            ("credentials", db.credentials.clone()),
        ] {
            t.row(vec![
                text(format!("{prefix}.{key}")),
                text(value),
                None,
                text("no"),
            ]);
        }
    }
    for (name, entry) in &config.credentials {
        let key = format!("credentials.{name}.source");
        t.row(vec![text(key), text(entry.source.kind()), None, text("no")]);
    }
    t
}

/// The `[proxy]` keys and their values as text, in the order of the config reference.
fn proxy_rows(p: &ProxyConfig) -> Vec<(&'static str, String)> {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    vec![
        ("listen", p.listen.clone()),
        ("admin_listen", p.admin_listen.clone().unwrap_or_default()),
        ("admin_users", p.admin_users.join(",")),
        ("auth_type", auth_type(p.auth_type).to_owned()),
        ("max_message_size", p.max_message_size.to_string()),
        (
            "max_prepared_statements",
            p.max_prepared_statements.to_string(),
        ),
        ("query_wait_timeout", seconds(p.query_wait_timeout)),
        ("connect_timeout", seconds(p.connect_timeout)),
        ("client_login_timeout", seconds(p.client_login_timeout)),
        ("max_client_conn", p.max_client_conn.to_string()),
        ("client_idle_timeout", seconds(p.client_idle_timeout)),
        (
            "idle_transaction_timeout",
            seconds(p.idle_transaction_timeout),
        ),
        ("query_timeout", seconds(p.query_timeout)),
        ("server_lifetime", seconds(p.server_lifetime)),
        ("reserve_pool_timeout", seconds(p.reserve_pool_timeout)),
        ("idle_timeout", seconds(p.idle_timeout)),
        ("shutdown_timeout", seconds(p.shutdown_timeout)),
        ("application_name", p.application_name.clone()),
        (
            "workers",
            p.workers.map(|w| w.to_string()).unwrap_or_default(),
        ),
        ("client_tls", client_tls(p.client_tls).to_owned()),
        ("client_tls_cert", path(&p.client_tls_cert)),
        // The key file's path is not the key, but it says where the key is: shown like PgBouncer
        // shows its own file settings, the contents never.
        ("client_tls_key", path(&p.client_tls_key)),
    ]
}

fn seconds(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn auth_type(a: AuthType) -> &'static str {
    match a {
        AuthType::ScramSha256 => "scram-sha-256",
        AuthType::Md5 => "md5",
    }
}

fn client_tls(c: ClientTls) -> &'static str {
    match c {
        ClientTls::Disable => "disable",
        ClientTls::Allow => "allow",
        ClientTls::Require => "require",
    }
}
