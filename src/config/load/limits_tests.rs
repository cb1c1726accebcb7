//! The limits and timeouts keys: the old `login_timeout` name still loads (with a warning),
//! `"0s"` means off where the default is off, and the cross-checks on pool sizes.

use std::path::Path;
use std::time::Duration;

use super::from_toml_str;
use crate::config::Config;

/// `proxy_lines` into `[proxy]`, `db_lines` into the one `[[databases]]` entry.
fn text(proxy_lines: &str, db_lines: &str) -> String {
    format!(
        "[proxy]\n{proxy_lines}\n[[users]]\nname = \"app\"\npassword = \"pw\"\n\
         [[databases]]\nname = \"app\"\ncredentials = \"app\"\npool_size = 4\n{db_lines}\n\
         [credentials.app]\nsource = \"static\"\nusername = \"app\"\npassword = \"pw\"\n"
    )
}

fn load(proxy_lines: &str, db_lines: &str) -> Result<Config, Vec<String>> {
    from_toml_str(&text(proxy_lines, db_lines), Path::new("/"), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .map_err(|e| e.problems)
}

#[test]
fn the_old_login_timeout_name_loads_with_a_warning_and_both_names_at_once_do_not() {
    let config = load("login_timeout = \"7s\"", "").unwrap();
    assert_eq!(config.proxy.client_login_timeout, Duration::from_secs(7));
    assert_eq!(
        config.warnings,
        ["proxy.login_timeout: renamed to client_login_timeout; the old name still works for now"]
    );
    let config = load("client_login_timeout = \"8s\"", "").unwrap();
    assert_eq!(config.proxy.client_login_timeout, Duration::from_secs(8));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let problems = load("login_timeout = \"7s\"\nclient_login_timeout = \"8s\"", "").unwrap_err();
    assert_eq!(
        problems,
        [
            "proxy.login_timeout: is the old name of client_login_timeout; set only client_login_timeout"
        ]
    );
}

#[test]
fn zero_is_off_for_the_timeouts_that_default_to_off_and_refused_for_the_others() {
    let off = "client_idle_timeout = \"0s\"\nidle_transaction_timeout = \"0s\"\n\
               query_timeout = \"0s\"\nserver_lifetime = \"0s\"";
    let config = load(off, "").unwrap();
    assert!(config.proxy.idle_transaction_timeout.is_zero());
    for key in ["client_login_timeout", "reserve_pool_timeout"] {
        let problems = load(&format!("{key} = \"0s\""), "").unwrap_err();
        assert_eq!(problems, [format!("proxy.{key}: must be longer than 0s")]);
    }
    let problems = load("max_client_conn = 0", "").unwrap_err();
    assert!(
        problems[0].starts_with("proxy.max_client_conn: must be at least 1"),
        "{problems:?}"
    );
}

#[test]
fn min_pool_size_is_counted_within_pool_size() {
    let config = load("", "min_pool_size = 4\nreserve_pool_size = 2").unwrap();
    let db = &config.databases[0];
    assert_eq!((db.min_pool_size, db.reserve_pool_size), (4, 2));
    let problems = load("", "min_pool_size = 5").unwrap_err();
    assert_eq!(
        problems,
        ["databases[0].min_pool_size: must not exceed pool_size (4): it is counted within it"]
    );
}
