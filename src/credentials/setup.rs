//! From `[credentials.NAME]` to a running entry: the source its `source` key names, its
//! lifecycle settings, and the background upkeep a source needs (the issuer's reaper).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::exec_source::ExecSource;
use super::file_source::FileSource;
use super::issuer::IssuerSource;
use super::static_source::StaticSource;
use super::vault::VaultSource;
use super::{Credentials, Lifecycle, Rotator, Source, SourceError};
use crate::config::{CredentialsConfig, SourceConfig};

/// A credentials entry whose rotator is built but not started: the pools take `credentials`,
/// then [`Rotator::start`] runs `rotator` with a prover that can reach those pools.
pub struct Entry {
    /// The handle pools and clients read.
    pub credentials: Credentials,
    /// The task to start once the pools exist.
    pub rotator: Rotator,
    /// Whether new leases are proved with a login before publishing (every source but
    /// `static`, whose password has nothing to fall back to).
    pub proves: bool,
}

/// Builds the source of entry `name` and its rotator. Upkeep the source needs (the issuer's
/// reaper of roles a crash left behind) is started on `tasks` until `stop`.
pub fn build(
    name: &str,
    config: &CredentialsConfig,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Entry, SourceError> {
    let source: Arc<dyn Source> = match &config.source {
        SourceConfig::Static(s) => {
            Arc::new(StaticSource::new(s.username.clone(), s.password.clone()))
        }
        SourceConfig::Issuer(i) => {
            let issuer = Arc::new(IssuerSource::from_config(name, i)?);
            tasks.spawn(reap_loop(name.to_owned(), issuer.clone(), stop.clone()));
            issuer
        }
        SourceConfig::File(f) => Arc::new(FileSource::new(f)),
        SourceConfig::Exec(e) => Arc::new(ExecSource::new(e)),
        SourceConfig::Vault(v) => {
            Arc::new(VaultSource::from_config(v)?.with_upkeep_on(tasks, stop))
        }
    };
    let (credentials, rotator) = Credentials::new(name, source, lifecycle(config));
    Ok(Entry {
        credentials,
        rotator,
        proves: config.source.kind() != "static",
    })
}

/// The lifecycle settings of a credentials entry.
pub fn lifecycle(entry: &CredentialsConfig) -> Lifecycle {
    Lifecycle {
        rotate_at: entry.rotate_at,
        safety_margin: entry.safety_margin,
        renew: entry.renew,
        max_ttl: match &entry.source {
            SourceConfig::Issuer(i) => Some(i.max_ttl),
            _ => None,
        },
    }
}

/// Drops issued roles whose validity has passed and that nobody uses any more (left by a crash,
/// a kill -9, a failed revocation or a dead replica; see the issuer's `liveness`): once at
/// start, then every `reap_interval`. A failure is logged and retried at the next interval.
async fn reap_loop(name: String, issuer: Arc<IssuerSource>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(issuer.reap_interval());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match issuer.reap().await {
            Ok(0) => {}
            Ok(n) => info!(credentials = %name, dropped = n, "reaped expired issued roles"),
            Err(e) => warn!(credentials = %name, error = %e, "reaping expired issued roles failed"),
        }
    }
}
