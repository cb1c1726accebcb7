//! The `static` source: one fixed username and password from the config, for development and
//! for persistent accounts whose password is managed elsewhere.

use std::time::SystemTime;

use super::source::SourceFuture;
use super::{Lease, Source};
use crate::secret::Secret;

/// A source that always returns the same credential and never expires it.
pub struct StaticSource {
    username: String,
    password: Secret,
}

impl StaticSource {
    /// A source for the configured account.
    pub fn new(username: String, password: Secret) -> Self {
        StaticSource { username, password }
    }
}

impl Source for StaticSource {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        let lease = Lease {
            id: format!("static:{}", self.username),
            username: self.username.clone(),
            password: self.password.clone(),
            issued_at: SystemTime::now(),
            expires_at: None,
            renewable: false,
            generation: 0,
        };
        Box::pin(async move { Ok(lease) })
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> SourceFuture<'a, ()> {
        // Nothing to revoke: the account outlives pglease by design.
        Box::pin(async { Ok(()) })
    }
}
