//! Building the running parts from a validated config: credentials entries, upstream
//! targets, local users' verifiers and pools. Used at start and by every reload, which builds
//! only what changed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppError;
use crate::auth::LocalPassword;
use crate::client::{PoolEntry, PoolParts, Pools};
use crate::config::{ClientTls, Config, DatabaseConfig, UpstreamTlsMode};
use crate::credentials::{Credentials, setup};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolSettings};
use crate::tls::client::{ClientTlsFiles, client_config};
use crate::upstream::{UpstreamTarget, UpstreamTls};

/// A credentials entry built but whose rotator has not started, with what stops its source's
/// upkeep (the issuer's reaper, Vault's token keeper).
pub(super) struct NewEntry {
    pub entry: setup::Entry,
    pub upkeep: CancellationToken,
}

/// Builds the credentials entries named in `names`; on a failure, stops the upkeep of those
/// already built and names the entry that failed.
pub(super) fn entries<'a>(
    config: &Config,
    names: impl IntoIterator<Item = &'a String>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<HashMap<String, NewEntry>, AppError> {
    let mut built: HashMap<String, NewEntry> = HashMap::new();
    for name in names {
        let Some(cfg) = config.credentials.get(name) else {
            continue;
        };
        let upkeep = shutdown.child_token();
        match setup::build(name, cfg, tasks, &upkeep) {
            Ok(entry) => {
                built.insert(name.clone(), NewEntry { entry, upkeep });
            }
            Err(source) => {
                upkeep.cancel();
                for entry in built.values() {
                    entry.upkeep.cancel();
                }
                return Err(AppError::Source {
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(built)
}

/// The pool of `user` on `db`, logging in with `credentials`, its upkeep task running until `upkeep`.
// Each argument is a different part of the wiring this one call joins; a struct holding them
// would only be built here.
#[allow(clippy::too_many_arguments)]
pub(super) fn pool_entry(
    config: &Config,
    db: &DatabaseConfig,
    user: &str,
    target: &UpstreamTarget,
    credentials: &Credentials,
    metrics: &Metrics,
    tasks: &TaskTracker,
    upkeep: &CancellationToken,
) -> PoolEntry {
    let settings = PoolSettings {
        size: db.pool_size,
        wait_timeout: config.proxy.query_wait_timeout,
        idle_timeout: config.proxy.idle_timeout,
        min_size: db.min_pool_size,
        reserve_size: db.reserve_pool_size,
        reserve_timeout: config.proxy.reserve_pool_timeout,
        lifetime: Some(config.proxy.server_lifetime).filter(|d| !d.is_zero()),
    };
    let instruments = metrics.pool(&db.name, user);
    let pool = Pool::new(target.clone(), credentials.clone(), settings, instruments);
    tasks.spawn(crate::pool::maintain(pool.clone(), upkeep.clone()));
    PoolEntry::new(PoolParts {
        pool,
        mode: db.pool_mode,
        reset_query: db.reset_query.as_str().into(),
        reported: Arc::default(),
    })
}

/// Where a credentials entry proves its leases: the first database that uses it, and that
/// database's pools, which take the proving login as their first replacement.
pub(super) fn proving_pools(
    config: &Config,
    targets: &HashMap<String, UpstreamTarget>,
    credentials: &str,
    pools: &Pools,
) -> Option<(UpstreamTarget, Vec<Pool>)> {
    let db = config
        .databases
        .iter()
        .find(|d| d.credentials == credentials)?;
    let takers = pools
        .of_database(&db.name)
        .map(|e| e.pool.clone())
        .collect();
    Some((targets.get(&db.name)?.clone(), takers))
}

/// Turns each user's configured password into verifiers, off the async threads: deriving a
/// SCRAM verifier from a plaintext password costs thousands of hash rounds. A user whose
/// password is the same as in `old` keeps the verifiers already in `known`.
pub(super) async fn local_users(
    config: &Config,
    old: Option<&Config>,
    known: &HashMap<String, LocalPassword>,
) -> Result<HashMap<String, LocalPassword>, AppError> {
    let mut kept = HashMap::new();
    let mut fresh = Vec::new();
    for user in &config.users {
        let unchanged = old.is_some_and(|o| o.users.iter().any(|u| u == user));
        match known.get(&user.name) {
            Some(p) if unchanged => {
                kept.insert(user.name.clone(), p.clone());
            }
            _ => fresh.push((user.name.clone(), user.password.clone())),
        }
    }
    let parsed = tokio::task::spawn_blocking(move || {
        fresh
            .into_iter()
            .map(|(name, pw)| match LocalPassword::parse(&name, &pw) {
                Ok(p) => Ok((name, p)),
                Err(source) => Err(AppError::BadPassword { user: name, source }),
            })
            .collect::<Result<HashMap<_, _>, _>>()
    })
    .await;
    let mut users = parsed.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    users.extend(kept);
    Ok(users)
}

/// The client-facing certificate, when `client_tls` is on (validation made sure both files
/// are named).
pub(super) fn client_tls(
    proxy: &crate::config::ProxyConfig,
) -> Result<Option<Arc<crate::tls::server::ServerTls>>, AppError> {
    match (
        proxy.client_tls,
        &proxy.client_tls_cert,
        &proxy.client_tls_key,
    ) {
        (ClientTls::Disable, _, _) | (_, None, _) | (_, _, None) => Ok(None),
        (_, Some(cert), Some(key)) => Ok(Some(Arc::new(crate::tls::server::ServerTls::load(
            cert, key,
        )?))),
    }
}

/// Where a database's upstream connections go, with its TLS configuration built (CA and
/// client certificate files read) once here.
pub(super) fn upstream_target(
    config: &Config,
    db: &DatabaseConfig,
) -> Result<UpstreamTarget, AppError> {
    let config_for = |mode| {
        let files = ClientTlsFiles {
            ca: db.upstream_tls_ca.clone(),
            cert: db.upstream_tls_cert.clone(),
            key: db.upstream_tls_key.clone(),
        };
        client_config(mode, &files).map_err(|source| AppError::UpstreamTls {
            database: db.name.clone(),
            source,
        })
    };
    let tls_config = match db.upstream_tls {
        UpstreamTlsMode::Disable => None,
        mode => Some(config_for(mode)?),
    };
    Ok(UpstreamTarget {
        host: db.host.clone(),
        port: db.port,
        dbname: db.upstream_dbname().to_owned(),
        application_name: config.proxy.application_name.clone(),
        connect_timeout: config.proxy.connect_timeout,
        database: db.name.clone(),
        tls: UpstreamTls {
            mode: db.upstream_tls,
            config: tls_config,
            allow_plaintext_password: db.allow_plaintext_password,
        },
    })
}
