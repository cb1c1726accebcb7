//! What a reload changes: which `[proxy]` keys need a restart, which credentials entries and
//! pools are rebuilt, and the summary the operator reads.

use std::collections::BTreeSet;
use std::fmt;

use crate::client::Pools;
use crate::config::{Config, DatabaseConfig, ProxyConfig};

/// What a reload did, for the log line, the console's `RELOAD` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Pools carried over with their connections.
    pub pools_kept: usize,
    /// (database, user) pools that did not exist before.
    pub pools_added: Vec<(String, String)>,
    /// (database, user) pools rebuilt for a changed entry; the old ones drain.
    pub pools_replaced: Vec<(String, String)>,
    /// (database, user) pools no longer configured (or no longer on the access list).
    pub pools_removed: Vec<(String, String)>,
    /// Local users added, removed, or with a new password (it applies to new logins).
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
    pub passwords_changed: Vec<String>,
    /// Credentials entries started, rebuilt (their old rotator stops once drained) and
    /// removed (their leases are revoked once their pools drained).
    pub credentials_added: Vec<String>,
    pub credentials_replaced: Vec<String>,
    pub credentials_removed: Vec<String>,
    /// `[proxy]` keys whose new value waits for a restart; the running value stays.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadSummary {
    /// Fills in every list from the old and new configs and pool maps.
    pub(super) fn count(
        &mut self,
        old: Option<&Config>,
        new: &Config,
        old_pools: &Pools,
        new_pools: &Pools,
        rebuilt: &BTreeSet<String>,
    ) {
        for (db, user, entry) in new_pools.iter() {
            let pair = (db.to_owned(), user.to_owned());
            match old_pools.get(db, user) {
                Some(o) if o.tenure.same(&entry.tenure) => self.pools_kept += 1,
                Some(_) => self.pools_replaced.push(pair),
                None => self.pools_added.push(pair),
            }
        }
        for (db, user, _) in old_pools.iter() {
            if new_pools.get(db, user).is_none() {
                self.pools_removed.push((db.to_owned(), user.to_owned()));
            }
        }
        let Some(old) = old else {
            self.credentials_added = rebuilt.iter().cloned().collect();
            self.users_added = new.users.iter().map(|u| u.name.clone()).collect();
            self.sort();
            return;
        };
        for user in &new.users {
            match old.users.iter().find(|u| u.name == user.name) {
                None => self.users_added.push(user.name.clone()),
                Some(o) if o.password != user.password => {
                    self.passwords_changed.push(user.name.clone())
                }
                Some(_) => {}
            }
        }
        self.users_removed = old
            .users
            .iter()
            .filter(|o| !new.users.iter().any(|u| u.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        for name in rebuilt {
            if old.credentials.contains_key(name) {
                self.credentials_replaced.push(name.clone());
            } else {
                self.credentials_added.push(name.clone());
            }
        }
        self.credentials_removed = old
            .credentials
            .keys()
            .filter(|n| !new.credentials.contains_key(*n))
            .cloned()
            .collect();
        self.sort();
    }

    fn sort(&mut self) {
        self.pools_added.sort();
        self.pools_replaced.sort();
        self.pools_removed.sort();
        self.users_added.sort();
        self.users_removed.sort();
        self.passwords_changed.sort();
    }
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .map(|(db, user)| format!("{db}/{user}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(f, "pools: {} kept", self.pools_kept)?;
        for (what, list) in [
            ("added", &self.pools_added),
            ("replaced", &self.pools_replaced),
            ("removed", &self.pools_removed),
        ] {
            if !list.is_empty() {
                write!(f, ", {what} {}", pairs(list))?;
            }
        }
        for (what, list) in [
            ("users added", &self.users_added),
            ("users removed", &self.users_removed),
            ("passwords changed", &self.passwords_changed),
            ("credentials added", &self.credentials_added),
            ("credentials replaced", &self.credentials_replaced),
            ("credentials removed", &self.credentials_removed),
        ] {
            if !list.is_empty() {
                write!(f, "; {what}: {}", list.join(" "))?;
            }
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; needs restart (old value kept): {}",
                self.needs_restart.join(" ")
            )?;
        }
        Ok(())
    }
}

/// The `[proxy]` section to run with after a reload, and the keys that need a restart. Keys
/// that only feed the pools (timeouts, `application_name`) take their new value, and every
/// pool rebuilds with it; the others keep the running value.
pub(super) fn proxy_keys(old: &ProxyConfig, new: &ProxyConfig) -> (ProxyConfig, Vec<&'static str>) {
    let mut kept = old.clone();
    kept.query_wait_timeout = new.query_wait_timeout;
    kept.connect_timeout = new.connect_timeout;
    kept.idle_timeout = new.idle_timeout;
    kept.application_name = new.application_name.clone();
    let mut restart = Vec::new();
    // `probe` takes each named key's new value, so what still differs from `new` afterwards
    // is a key this list does not know (one added later), reported as such.
    let mut probe = kept.clone();
    macro_rules! bound_at_start {
        ($($key:ident),* $(,)?) => {$(
            if old.$key != new.$key {
                restart.push(stringify!($key));
                probe.$key = new.$key.clone();
            }
        )*};
    }
    bound_at_start!(
        listen,
        admin_listen,
        admin_users,
        auth_type,
        max_message_size,
        max_prepared_statements,
        client_login_timeout,
        max_client_conn,
        client_idle_timeout,
        idle_transaction_timeout,
        query_timeout,
        server_lifetime,
        reserve_pool_timeout,
        shutdown_timeout,
        workers,
        client_tls,
        client_tls_cert,
        client_tls_key,
    );
    if probe != *new {
        restart.push("other [proxy] keys");
    }
    (kept, restart)
}

/// Credentials entries of `new` to build: added ones and those whose section changed.
pub(super) fn rebuilt_credentials(old: Option<&Config>, new: &Config) -> BTreeSet<String> {
    new.credentials
        .iter()
        .filter(|(name, cfg)| old.and_then(|o| o.credentials.get(*name)) != Some(*cfg))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `db`'s pools carry over: the entry is the same apart from its access list, its
/// credentials entry is not rebuilt, and the pool-wide `[proxy]` keys did not change.
pub(super) fn same_pool(
    old: Option<&Config>,
    new: &Config,
    db: &DatabaseConfig,
    rebuilt: &BTreeSet<String>,
) -> bool {
    let Some(old) = old else {
        return false;
    };
    let Some(before) = old.databases.iter().find(|d| d.name == db.name) else {
        return false;
    };
    let without_access = |d: &DatabaseConfig| DatabaseConfig {
        users: None,
        ..d.clone()
    };
    let (a, b) = (&old.proxy, &new.proxy);
    without_access(before) == without_access(db)
        && !rebuilt.contains(&db.credentials)
        && a.query_wait_timeout == b.query_wait_timeout
        && a.connect_timeout == b.connect_timeout
        && a.idle_timeout == b.idle_timeout
        && a.application_name == b.application_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_bound_at_start_keep_their_value_and_are_named() {
        let old = ProxyConfig::default();
        let new = ProxyConfig {
            listen: "127.0.0.1:7000".to_owned(),
            workers: Some(2),
            idle_timeout: Duration::from_secs(5),
            ..ProxyConfig::default()
        };
        let (kept, restart) = proxy_keys(&old, &new);
        assert_eq!(restart, ["listen", "workers"]);
        assert_eq!(kept.listen, old.listen);
        assert_eq!(kept.workers, None);
        assert_eq!(kept.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unchanged_proxy_needs_no_restart() {
        let old = ProxyConfig::default();
        let (kept, restart) = proxy_keys(&old, &old.clone());
        assert!(restart.is_empty());
        assert_eq!(kept, old);
    }

    #[test]
    fn an_access_list_change_keeps_the_pool() {
        let mut old = Config::default();
        old.databases.push(DatabaseConfig::new("app", "c"));
        let mut new = old.clone();
        new.databases[0].users = Some(vec!["a".to_owned()]);
        let db = &new.databases[0];
        assert!(same_pool(Some(&old), &new, db, &BTreeSet::new()));
        let rebuilt = BTreeSet::from(["c".to_owned()]);
        assert!(!same_pool(Some(&old), &new, db, &rebuilt));
        new.databases[0].pool_size = 3;
        let db = &new.databases[0];
        assert!(!same_pool(Some(&old), &new, db, &BTreeSet::new()));
    }
}
