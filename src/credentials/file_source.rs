//! The `file` source: a JSON credential document that another program keeps up to date.
//!
//! # Design
//!
//! Vault Agent, Kubernetes secret mounts and external-secrets all deliver credentials by
//! rewriting a file, so this source reads it on `acquire` and polls it in `changed`. Polling
//! (rather than inotify) works the same on every filesystem, including the symlink swaps of
//! a Kubernetes secret volume, and a poll every few seconds costs one `stat`.
//!
//! Each poll compares the file's modification time and length with the previous poll and
//! only reads it when they moved, or when the previous read was so close to the modification
//! time that a second write in the same timestamp tick could hide behind an unchanged stamp.
//! A content digest then skips re-parsing bytes already seen. A change is signalled only once
//! the new content parses and describes a credential other than the current lease, so a file
//! caught half-written, briefly missing, or reformatted without new values never starts a
//! rotation.
//!
//! The document holds a password: each `acquire` warns when the file is readable by users
//! other than its owner ([`crate::config::warn_if_exposed`]); polls do not, or the warning
//! would repeat every few seconds.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use super::json::{Credential, MAX_DOCUMENT_BYTES, parse_document};
use super::source::SourceFuture;
use super::{Lease, Source, SourceError};
use crate::config::{FileSourceConfig, warn_if_exposed};

/// Shortest poll period, whatever the config says, so a zero interval cannot spin a core.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A modification time this close to the moment the file was read is not trusted to reveal a
/// later write: filesystems with coarse timestamps give both writes the same mtime.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Reads leases from a JSON file (`source = "file"`).
pub struct FileSource {
    path: PathBuf,
    poll_interval: Duration,
}

impl FileSource {
    /// A source for the configured file. Nothing is read until the first `acquire`, so a
    /// file that appears after start-up (an agent still rendering it) is fine.
    pub fn new(config: &FileSourceConfig) -> Self {
        FileSource {
            path: config.path.clone(),
            poll_interval: config.poll_interval.max(MIN_POLL_INTERVAL),
        }
    }

    async fn poll_loop(&self, current: &Lease) {
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen: Option<Seen> = None;
        loop {
            ticker.tick().await;
            if self.poll_once(current, &mut seen).await {
                return;
            }
        }
    }

    /// One look at the file; true when it now holds a credential other than `current`.
    async fn poll_once(&self, current: &Lease, seen: &mut Option<Seen>) -> bool {
        // Missing or unreadable: not a change; the current lease stays in use.
        let Ok(metadata) = tokio::fs::metadata(&self.path).await else {
            return false;
        };
        let stamp = (metadata.modified().ok(), metadata.len());
        if seen.as_ref().is_some_and(|s| s.stamp == stamp && !s.racy()) {
            return false;
        }
        let read_at = SystemTime::now();
        let Ok(bytes) = read_bounded(&self.path).await else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let new_content = seen.as_ref().is_none_or(|s| s.digest != digest);
        *seen = Some(Seen {
            stamp,
            digest,
            read_at,
        });
        if !new_content {
            return false;
        }
        match parse_document(&bytes) {
            Ok(credential) => differs(&credential, current),
            Err(error) => {
                debug!(path = %self.path.display(), %error, "credential file not valid yet");
                false
            }
        }
    }
}

impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        Box::pin(async move {
            let bytes = read_bounded(&self.path).await.map_err(|e| match e {
                ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                    SourceError::Unreachable(format!("file {}: not found", self.path.display()))
                }
                ReadError::Io(e) => {
                    SourceError::Unreachable(format!("file {}: {e}", self.path.display()))
                }
                ReadError::TooLarge => SourceError::Rejected(format!(
                    "file {}: larger than {MAX_DOCUMENT_BYTES} bytes",
                    self.path.display()
                )),
            })?;
            if let Ok(metadata) = tokio::fs::metadata(&self.path).await {
                warn_if_exposed(&self.path, &metadata);
            }
            let credential = parse_document(&bytes)
                .map_err(|e| SourceError::Rejected(format!("file {}: {e}", self.path.display())))?;
            let id = lease_id(&self.path, &credential);
            Ok(credential.into_lease(id))
        })
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> SourceFuture<'a, ()> {
        // The writer of the file owns the credential's lifetime; there is nothing to end here.
        Box::pin(async { Ok(()) })
    }

    fn changed<'a>(&'a self, current: &'a Lease) -> SourceFuture<'a, ()> {
        Box::pin(async move {
            self.poll_loop(current).await;
            Ok(())
        })
    }
}

/// What the previous poll saw, so the next one can skip work.
struct Seen {
    /// Modification time and length when last read.
    stamp: (Option<SystemTime>, u64),
    /// SHA-256 of the bytes last read; kept only in memory, never logged.
    digest: [u8; 32],
    /// When those bytes were read, to judge whether `stamp` can be trusted.
    read_at: SystemTime,
}

impl Seen {
    /// True when the stamp cannot prove the file is unchanged (see [`RACY_WINDOW`]).
    fn racy(&self) -> bool {
        match self.stamp.0 {
            Some(mtime) => mtime
                .checked_add(RACY_WINDOW)
                .is_none_or(|limit| limit >= self.read_at),
            None => true,
        }
    }
}

enum ReadError {
    Io(io::Error),
    TooLarge,
}

/// Reads at most one byte past the limit, so an oversized file costs no more than that.
async fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = tokio::fs::File::open(path).await.map_err(ReadError::Io)?;
    let limit = MAX_DOCUMENT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .await
        .map_err(ReadError::Io)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

fn differs(credential: &Credential, current: &Lease) -> bool {
    credential.username != current.username
        || credential.password != current.password
        || credential.expires_at != current.expires_at
}

/// `file:<path>#<hash>`: the hash covers the username and expiry only. Hashing the password,
/// even truncated, would let anyone who sees a log line test guesses of a weak password.
fn lease_id(path: &Path, credential: &Credential) -> String {
    let mut hasher = Sha256::new();
    hasher.update(credential.username.as_bytes());
    hasher.update([0]);
    if let Some(expires) = credential.expires_at {
        let since_epoch = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.update(since_epoch.as_nanos().to_be_bytes());
    }
    let digest = hasher.finalize();
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("file:{}#{short}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn credential(username: &str, password: &str, expires: Option<u64>) -> Credential {
        Credential {
            username: username.into(),
            password: Secret::from(password),
            expires_at: expires.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    #[test]
    fn lease_id_ignores_the_password_but_not_username_or_expiry() {
        let path = Path::new("/run/secrets/db.json");
        let a = lease_id(path, &credential("app", "one", Some(100)));
        assert!(a.starts_with("file:/run/secrets/db.json#"), "{a}");
        assert_eq!(a.len(), "file:/run/secrets/db.json#".len() + 12);
        assert_eq!(a, lease_id(path, &credential("app", "two", Some(100))));
        assert_ne!(a, lease_id(path, &credential("app", "one", Some(101))));
        assert_ne!(a, lease_id(path, &credential("app2", "one", Some(100))));
        assert_ne!(a, lease_id(path, &credential("app", "one", None)));
    }

    #[test]
    fn stamp_is_trusted_only_well_after_the_write() {
        let now = SystemTime::now();
        let seen = |mtime: Option<SystemTime>| Seen {
            stamp: (mtime, 1),
            digest: [0; 32],
            read_at: now,
        };
        assert!(seen(Some(now)).racy());
        assert!(seen(Some(now - Duration::from_secs(1))).racy());
        assert!(seen(None).racy());
        assert!(!seen(Some(now - Duration::from_secs(3))).racy());
    }

    #[test]
    fn differs_compares_every_field() {
        let lease = Lease {
            id: "x".into(),
            username: "app".into(),
            password: Secret::from("pw"),
            issued_at: SystemTime::now(),
            expires_at: None,
            renewable: false,
            generation: 1,
        };
        assert!(!differs(&credential("app", "pw", None), &lease));
        assert!(differs(&credential("app", "pw2", None), &lease));
        assert!(differs(&credential("app2", "pw", None), &lease));
        assert!(differs(&credential("app", "pw", Some(5)), &lease));
    }
}
