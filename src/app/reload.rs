//! Applying a config to the running proxy: the whole config at start, the changes at each
//! reload (SIGHUP, the console's `RELOAD`, [`super::Proxy::reload`]).
//!
//! # Design
//!
//! A reload reads and validates the file with the same code as `pglease check`; an invalid
//! file changes nothing. Then everything that can fail is built aside (new credentials
//! entries, upstream targets, local users' verifiers), still changing nothing on failure.
//! Last, the infallible part: new pools are built, unchanged ones (same database entry, same
//! credentials, same pool-wide `[proxy]` keys) are carried over as the same [`PoolEntry`],
//! new rotators start, and the new [`Serving`] snapshot is swapped in under one short write
//! lock. Clients that log in after the swap see only the new config.
//!
//! What the swap took out drains in the background, like a rotation drains a lease
//! ([`crate::pool::retire`]): a replaced pool's sessions move to its successor at their next
//! request, a removed one keeps serving its connected clients until they leave. A credentials
//! entry that was changed or removed keeps its rotator until the pools that used it are
//! closed, and then stops it, which revokes its leases.
//!
//! `[proxy]` keys bound at start (the listen address, worker threads, TLS files, ...) are
//! reported as needing a restart and keep their running value.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::AppError;
use super::build::{self, NewEntry};
use super::diff::{self, same_pool};
use crate::client::{Pools, Serving, Shared};
use crate::config::{Config, ConfigError, DatabaseConfig};
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::pool::{Retired, retire};
use crate::upstream::UpstreamTarget;

pub use super::diff::ReloadSummary;

/// Why a reload was refused; the running config stays as it was.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The proxy was started from a config built in code, with no file to read again.
    #[error("this proxy was not started from a config file, so there is nothing to reload")]
    NoFile,
    /// The file does not load or does not validate (every problem, one per line).
    #[error("invalid config {}: {}", .path.display(), .source.problems.join("; "))]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    /// The file is valid but part of it could not be built (a TLS file, a credentials
    /// source, a password).
    #[error("config {} cannot be applied: {source}", .path.display())]
    Apply {
        path: PathBuf,
        #[source]
        source: AppError,
    },
}

/// A credentials entry in service: what stops it.
struct RunningEntry {
    /// Stops its rotator, which then revokes every lease it holds.
    rotator: CancellationToken,
    /// Stops its source's upkeep (reaper, token keeper).
    upkeep: CancellationToken,
}

/// What the reloader keeps between reloads.
struct Running {
    /// The config in service (`None` until the first apply).
    config: Option<Config>,
    entries: HashMap<String, RunningEntry>,
    /// Per (database, user) pool in service: what stops its upkeep task.
    upkeep: HashMap<(String, String), CancellationToken>,
}

/// Applies configs to one proxy; shared with the task that answers the console's reloads.
pub(super) struct Reloader {
    shared: Arc<Shared>,
    /// Where the config came from, read again at each reload.
    path: Option<PathBuf>,
    /// Rotators, pool upkeep and drains run here (the proxy's background group).
    background: TaskTracker,
    /// Parent of every rotator's stop, cancelled at shutdown once no client needs a lease.
    credentials_stop: CancellationToken,
    /// The proxy's registry: each pool and rotator built gets its instruments here.
    metrics: Metrics,
    /// One reload at a time; held across the build, never on the data path.
    running: tokio::sync::Mutex<Running>,
}

impl Reloader {
    pub(super) fn new(
        shared: Arc<Shared>,
        path: Option<PathBuf>,
        background: TaskTracker,
        credentials_stop: CancellationToken,
        metrics: Metrics,
    ) -> Reloader {
        Reloader {
            shared,
            path,
            background,
            credentials_stop,
            metrics,
            running: tokio::sync::Mutex::new(Running {
                config: None,
                entries: HashMap::new(),
                upkeep: HashMap::new(),
            }),
        }
    }

    /// Reads the file again and applies it; the outcome is logged either way.
    pub(super) async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let outcome = self.reload_file().await;
        match &outcome {
            Ok(summary) => info!(%summary, "config reloaded"),
            Err(e) => warn!(error = %e, "config reload refused; the running config stays"),
        }
        outcome
    }

    async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let config = Config::load(&path).map_err(|source| ReloadError::Invalid {
            path: path.clone(),
            source,
        })?;
        for warning in &config.warnings {
            warn!(%warning, "config warning");
        }
        self.apply(config)
            .await
            .map_err(|source| ReloadError::Apply { path, source })
    }

    /// Puts `config` in service (see the module's design).
    pub(super) async fn apply(&self, mut config: Config) -> Result<ReloadSummary, AppError> {
        let mut running = self.running.lock().await;
        let running = &mut *running;
        let old = running.config.as_ref();
        let mut summary = ReloadSummary::default();
        if let Some(old) = old {
            let (kept, restart) = diff::proxy_keys(&old.proxy, &config.proxy);
            config.proxy = kept;
            summary.needs_restart = restart;
        }
        let current = self.shared.serving();
        let rebuilt = diff::rebuilt_credentials(old, &config);
        let shutdown = &self.shared.shutdown;
        let built = build::entries(&config, &rebuilt, &self.background, shutdown)?;
        let (targets, users) = match self.prepare(&config, old, &current, &rebuilt).await {
            Ok(p) => p,
            Err(e) => {
                built.values().for_each(|b| b.upkeep.cancel());
                return Err(e);
            }
        };
        let mut credentials = HashMap::new();
        for name in config.credentials.keys() {
            let handle = built
                .get(name)
                .map(|b| b.entry.credentials.clone())
                .or_else(|| current.credentials.get(name).cloned());
            if let Some(handle) = handle {
                credentials.insert(name.clone(), handle);
            }
        }
        let keep = |db: &DatabaseConfig| same_pool(old, &config, db, &rebuilt);
        let (pools, new_upkeep) = self.pools(&config, &current, &credentials, &targets, keep);
        summary.count(old, &config, &current.pools, &pools, &rebuilt);
        drop(current);
        // Out of service from here on; stopped once their old pools are drained.
        let going_names: Vec<String> = running
            .entries
            .keys()
            .filter(|name| rebuilt.contains(*name) || !config.credentials.contains_key(*name))
            .cloned()
            .collect();
        let going: Vec<(String, RunningEntry)> = going_names
            .into_iter()
            .filter_map(|name| running.entries.remove(&name).map(|e| (name, e)))
            .collect();
        for (name, new) in built {
            let running_entry = self.start_rotator(&config, &targets, &pools, &name, new);
            running.entries.insert(name, running_entry);
        }
        let replaced = self.shared.replace_serving(Serving {
            users,
            pools,
            credentials,
            config: Arc::new(config.clone()),
        });
        // The old pools' upkeep goes to their drains before the new pools' takes its place.
        let drains = self.retire_pools(&replaced.pools, &mut running.upkeep);
        running.upkeep.extend(new_upkeep);
        drop(replaced);
        self.retire_entries(going, drains);
        running.config = Some(config);
        Ok(summary)
    }

    /// Builds what can still fail: the targets of databases whose pools are rebuilt, and the
    /// local users.
    async fn prepare(
        &self,
        config: &Config,
        old: Option<&Config>,
        current: &Serving,
        rebuilt: &BTreeSet<String>,
    ) -> Result<
        (
            HashMap<String, UpstreamTarget>,
            HashMap<String, crate::auth::LocalPassword>,
        ),
        AppError,
    > {
        let mut targets = HashMap::new();
        for db in &config.databases {
            let kept = same_pool(old, config, db, rebuilt);
            let gains_pool = config
                .users
                .iter()
                .any(|u| db.admits(&u.name) && current.pools.get(&db.name, &u.name).is_none());
            if !kept || gains_pool {
                targets.insert(db.name.clone(), build::upstream_target(config, db)?);
            }
        }
        let users = build::local_users(config, old, &current.users).await?;
        Ok((targets, users))
    }

    /// The pools of `config`: the unchanged ones carried over (the same entry, connections
    /// and all), the others new, with what stops each new one's upkeep.
    fn pools(
        &self,
        config: &Config,
        current: &Serving,
        credentials: &HashMap<String, Credentials>,
        targets: &HashMap<String, UpstreamTarget>,
        keep: impl Fn(&DatabaseConfig) -> bool,
    ) -> (Pools, HashMap<(String, String), CancellationToken>) {
        let mut pools = Pools::default();
        let mut upkeep = HashMap::new();
        for db in &config.databases {
            pools.add_database(&db.name);
            let Some(creds) = credentials.get(&db.credentials) else {
                continue;
            };
            let kept = keep(db);
            for user in config.users.iter().filter(|u| db.admits(&u.name)) {
                let old = kept
                    .then(|| current.pools.get(&db.name, &user.name))
                    .flatten();
                if let Some(entry) = old {
                    pools.insert(&db.name, &user.name, entry.clone());
                    continue;
                }
                // `prepare` built a target for every database that gets a new pool.
                let Some(target) = targets.get(&db.name) else {
                    continue;
                };
                let stop = self.shared.shutdown.child_token();
                let entry = build::pool_entry(
                    config,
                    db,
                    &user.name,
                    target,
                    creds,
                    &self.metrics,
                    &self.background,
                    &stop,
                );
                upkeep.insert((db.name.clone(), user.name.clone()), stop);
                pools.insert(&db.name, &user.name, entry);
            }
        }
        (pools, upkeep)
    }

    /// Starts the rotator of a newly built entry, proving its leases through the pools of
    /// the first database that uses it.
    fn start_rotator(
        &self,
        config: &Config,
        targets: &HashMap<String, UpstreamTarget>,
        pools: &Pools,
        name: &str,
        new: NewEntry,
    ) -> RunningEntry {
        let prove = new
            .entry
            .proves
            .then(|| build::proving_pools(config, targets, name, pools))
            .flatten()
            .map(|(target, pools)| crate::pool::prover(target, pools));
        let rotator = self.credentials_stop.child_token();
        new.entry
            .rotator
            .instrumented(self.metrics.lease(name))
            .start(prove, &self.background, rotator.clone());
        RunningEntry {
            rotator,
            upkeep: new.upkeep,
        }
    }

    /// Retires every pool of `old` that the new snapshot does not carry over; returns the
    /// drains by credentials entry name.
    fn retire_pools(
        &self,
        old: &Pools,
        upkeep: &mut HashMap<(String, String), CancellationToken>,
    ) -> HashMap<String, TaskTracker> {
        let serving = self.shared.serving();
        let mut drains: HashMap<String, TaskTracker> = HashMap::new();
        for (db, user, entry) in old.iter() {
            let successor = serving.pools.get(db, user);
            if successor.is_some_and(|s| s.tenure.same(&entry.tenure)) {
                continue;
            }
            let how = if successor.is_some() {
                Retired::Replaced
            } else {
                Retired::Removed
            };
            entry.tenure.retire();
            info!(
                database = db,
                user,
                ?how,
                "pool retired by reload; draining"
            );
            let key = (db.to_owned(), user.to_owned());
            let stop = upkeep.remove(&key).unwrap_or_default();
            let tenure = entry.tenure.clone();
            let in_use = move || tenure.holders() > 1;
            let drain = retire(
                entry.pool.clone(),
                how,
                in_use,
                stop,
                self.credentials_stop.clone(),
            );
            let name = entry.pool.credentials().name().to_owned();
            let tracker = drains.entry(name).or_default();
            self.background.spawn(tracker.track_future(drain));
        }
        // Idle sessions on the retired pools look at them again now (see `Tenure`).
        self.shared.clients.nudge_all();
        drains
    }

    /// Stops the credentials entries that were changed or removed, each once the pools that
    /// used it are drained.
    fn retire_entries(
        &self,
        going: Vec<(String, RunningEntry)>,
        mut drains: HashMap<String, TaskTracker>,
    ) {
        for (name, entry) in going {
            let drained = drains.remove(&name).unwrap_or_default();
            drained.close();
            self.background.spawn(async move {
                drained.wait().await;
                info!(credentials = %name, "credentials entry out of service; revoking its leases");
                entry.rotator.cancel();
                entry.upkeep.cancel();
            });
        }
    }
}
