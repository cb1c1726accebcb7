//! A client's startup settings judged at login, as PostgreSQL would judge them: a value
//! PostgreSQL refuses ends the login with PostgreSQL's own error, and the greeting reports
//! each parameter the way PostgreSQL reports it (`client_encoding=utf8` is greeted `UTF8`).
//!
//! # Design
//!
//! Only PostgreSQL knows how it spells a value, so each pool keeps a bounded cache of
//! (name, value as sent) → value as reported. Logins that hit it need no upstream: the usual
//! case, since one application's connections send the same parameters. On a miss the login
//! checks out an upstream and sets every parameter there with `set_config` (whose result is
//! the reported form); that upstream's settings map then records them, so the next request
//! finds them in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::{ClientSettings, Map, apply};
use crate::client::ClientError;
use crate::pool::{CloseReason, Pool};
use crate::upstream::UpstreamError;

/// Most entries one pool's cache holds; past it, the cache starts over.
const MAX_ENTRIES: usize = 1024;

/// Most distinct sets of startup settings one pool shares between its clients; a client
/// whose set is not among them keeps its own copy.
const MAX_SHARED_STARTUPS: usize = 64;

/// A setting as a client sent it: (lower-case name, value).
type Sent = (Box<str>, Box<str>);

/// One pool's cache of reported values, by setting as sent, and the sets of startup settings
/// its clients share.
#[derive(Debug, Default)]
pub struct ReportedCache {
    reported: Mutex<HashMap<Sent, Box<str>>>,
    /// One application's connections send the same startup parameters: each distinct set is
    /// kept once and every client with it holds a pointer, not its own three allocations.
    startups: Mutex<Vec<Arc<Map>>>,
}

impl ReportedCache {
    /// `map`, shared with the pool's other clients that sent the same settings.
    fn shared(&self, map: Map) -> Arc<Map> {
        let Ok(mut startups) = self.startups.lock() else {
            return Arc::new(map);
        };
        if let Some(same) = startups.iter().find(|s| ***s == map) {
            return same.clone();
        }
        let map = Arc::new(map);
        if startups.len() < MAX_SHARED_STARTUPS {
            startups.push(map.clone());
        }
        map
    }

    /// The reported value of every setting in `map`, or `None` when any is missing.
    fn lookup(&self, map: &Map) -> Option<Vec<Box<str>>> {
        let cache = self.reported.lock().ok()?;
        map.iter()
            .map(|(n, v)| cache.get(&(n.clone(), v.clone())).cloned())
            .collect()
    }

    fn store(&self, map: &Map, reported: &[Box<str>]) {
        let Ok(mut cache) = self.reported.lock() else {
            return;
        };
        if cache.len() + map.len() > MAX_ENTRIES {
            cache.clear();
        }
        for ((name, value), reported) in map.iter().zip(reported) {
            cache.insert((name.clone(), value.clone()), reported.clone());
        }
    }
}

/// A logged-in client's settings and the values to greet it with.
pub struct Judged {
    /// The client's settings from now on.
    pub settings: ClientSettings,
    /// Each of its settings as (lower-case name, value as PostgreSQL reports it).
    pub reported: Vec<(Box<str>, Box<str>)>,
}

impl Judged {
    /// The reported value of parameter `name` (any letter case), if the client set it.
    pub fn reported(&self, name: &str) -> Option<&str> {
        self.reported
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

/// Judges the startup settings `map` of a client of `pool`.
pub async fn judge(pool: &Pool, cache: &ReportedCache, map: Map) -> Result<Judged, ClientError> {
    let reported = match cache.lookup(&map) {
        Some(reported) => reported,
        None => {
            let reported = ask_postgres(pool, &map).await?;
            cache.store(&map, &reported);
            reported
        }
    };
    let reported = map.iter().map(|(n, _)| n.clone()).zip(reported).collect();
    Ok(Judged {
        settings: ClientSettings::new(cache.shared(map)),
        reported,
    })
}

/// Sets every setting of `map` on an upstream of `pool` and returns the reported values.
async fn ask_postgres(pool: &Pool, map: &Map) -> Result<Vec<Box<str>>, ClientError> {
    let mut up = pool.checkout().await.map_err(|e| {
        warn!(error = %e, "cannot reach the upstream to judge a client's settings");
        ClientError::refused("08006", format!("upstream unavailable: {e}"))
    })?;
    match apply(&mut up, map, true).await {
        Ok(made) => {
            let mut reported = Vec::with_capacity(map.len());
            for (name, _) in map {
                let value = made
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str());
                reported.push(value.unwrap_or_default().into());
            }
            Ok(reported)
        }
        Err(e) => {
            up.discard(CloseReason::SettingsFailed);
            Err(match e {
                UpstreamError::Refused { code, message } => {
                    ClientError::RefusedUpstream { code, message }
                }
                other => ClientError::refused("08006", format!("upstream unavailable: {other}")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(encoding: &str) -> Map {
        vec![("client_encoding".into(), encoding.into())]
    }

    #[test]
    fn clients_that_sent_the_same_settings_share_one_copy_up_to_the_bound() {
        let cache = ReportedCache::default();
        let a = cache.shared(startup("UTF8"));
        let b = cache.shared(startup("UTF8"));
        assert!(Arc::ptr_eq(&a, &b), "the same settings are kept once");
        let other = cache.shared(startup("LATIN1"));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(*other, startup("LATIN1"));
        assert!(Arc::ptr_eq(
            &cache.shared(Map::new()),
            &cache.shared(Map::new())
        ));

        // Past the bound a new set is still the client's, only not kept for others.
        for i in 0..MAX_SHARED_STARTUPS {
            cache.shared(startup(&format!("enc{i}")));
        }
        let late = cache.shared(startup("late"));
        assert_eq!(*late, startup("late"));
        assert!(!Arc::ptr_eq(&late, &cache.shared(startup("late"))));
        assert_eq!(cache.startups.lock().unwrap().len(), MAX_SHARED_STARTUPS);
        assert!(Arc::ptr_eq(&a, &cache.shared(startup("UTF8"))));
    }
}
