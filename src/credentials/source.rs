//! The one trait every credential source implements: acquire, renew where possible, revoke.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use thiserror::Error;

use super::Lease;

/// The future a source method returns; boxed so sources can live behind `dyn Source`.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// Why a source call failed. The variant decides what the rotator does next: retry with
/// backoff (unreachable), report and keep the current lease (rejected), or give up on the call.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The source could not be reached (network, timeout, store down): retry with backoff.
    #[error("credential source unreachable: {0}")]
    Unreachable(String),
    /// The source answered but refused (permission denied, bad role, bad request).
    #[error("credential source refused: {0}")]
    Rejected(String),
    /// The source does not support this operation (e.g. renewing a static password).
    #[error("credential source cannot {0}")]
    Unsupported(&'static str),
}

/// A place leases come from. Implementations must never put a secret into an error.
pub trait Source: Send + Sync + 'static {
    /// The source kind for logs and `SHOW LEASES` (`static`, `issuer`, `vault`, ...).
    fn kind(&self) -> &'static str;

    /// Obtains a new lease. Its `generation` is set by the rotator, not the source.
    fn acquire(&self) -> SourceFuture<'_, Lease>;

    /// Extends a renewable lease to at most `until`; returns the new expiry.
    fn renew<'a>(&'a self, lease: &'a Lease, until: SystemTime) -> SourceFuture<'a, SystemTime> {
        let _ = (lease, until);
        Box::pin(async { Err(SourceError::Unsupported("renew")) })
    }

    /// Ends a lease that no connection uses any more.
    fn revoke<'a>(&'a self, lease: &'a Lease) -> SourceFuture<'a, ()>;

    /// Ends what the source itself holds once every lease is revoked at shutdown (a Vault
    /// token pglease logged in for). Most sources hold nothing.
    fn close(&self) -> SourceFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Resolves when the source has a credential newer than `current` (a file rewritten, a
    /// password rotated by the store), which starts a rotation. Sources that only change when
    /// asked never resolve.
    fn changed<'a>(&'a self, current: &'a Lease) -> SourceFuture<'a, ()> {
        let _ = current;
        Box::pin(std::future::pending())
    }
}
