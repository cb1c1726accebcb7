//! The prometheus instruments a rotator writes beside its audit lines (issued, rotated,
//! renewed, revoked, ended at a deadline, source failures), built once per credentials entry
//! by the metrics registry (`crate::metrics`) with the `credentials` label resolved. A rotator
//! built without one gets [`LeaseInstruments::default`], registered nowhere. The gauges
//! (generation, expiry, time to the cliff) are not here: they are read from the
//! [`super::Credentials`] handle at scrape time.

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounter};

use super::SourceError;

/// A success/failure pair, indexed by [`Outcome`].
pub type Outcomes = [IntCounter; 2];

/// The `result` label of rotations and revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It failed (and is retried, or left to the lease's expiry).
    Failed,
}

impl Outcome {
    /// Both outcomes, in index order.
    pub const ALL: [Outcome; 2] = [Outcome::Ok, Outcome::Failed];

    /// The stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        }
    }
}

/// The `kind` label of `pglease_source_errors_total`: which way the source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// It could not be reached.
    Unreachable,
    /// It answered and refused.
    Rejected,
    /// It cannot do what was asked (renew a static password).
    Unsupported,
}

impl SourceErrorKind {
    /// Every kind, in index order.
    pub const ALL: [SourceErrorKind; 3] = [
        SourceErrorKind::Unreachable,
        SourceErrorKind::Rejected,
        SourceErrorKind::Unsupported,
    ];

    /// The kind of `error`.
    pub fn of(error: &SourceError) -> SourceErrorKind {
        match error {
            SourceError::Unreachable(_) => SourceErrorKind::Unreachable,
            SourceError::Rejected(_) => SourceErrorKind::Rejected,
            SourceError::Unsupported(_) => SourceErrorKind::Unsupported,
        }
    }

    /// The stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceErrorKind::Unreachable => "unreachable",
            SourceErrorKind::Rejected => "rejected",
            SourceErrorKind::Unsupported => "unsupported",
        }
    }
}

/// One credentials entry's lease counters and histograms. Cheap to clone.
#[derive(Clone)]
pub struct LeaseInstruments {
    /// Leases the source handed out.
    pub issued: IntCounter,
    /// Rotation attempts by [`Outcome`].
    pub rotations: Arc<Outcomes>,
    /// Successful renewals.
    pub renewals: IntCounter,
    /// Revocations by [`Outcome`].
    pub revocations: Arc<Outcomes>,
    /// Connections still on a lease when it reached its hard deadline (ended there).
    pub deadline_closes: IntCounter,
    /// From a lease's supersession to its last connection gone.
    pub drain: Histogram,
    /// From a lease's issue to its revocation: the real exposure window of each credential.
    pub lifetime: Histogram,
    /// Source failures by [`SourceErrorKind`], in its `ALL` order.
    pub source_errors: Arc<[IntCounter; 3]>,
}

impl LeaseInstruments {
    /// Counts one rotation attempt.
    pub fn rotation(&self, outcome: Outcome) {
        self.rotations[outcome as usize].inc();
    }

    /// Counts one revocation.
    pub fn revocation(&self, outcome: Outcome) {
        self.revocations[outcome as usize].inc();
    }

    /// Counts one failed source call.
    pub fn source_error(&self, error: &SourceError) {
        self.source_errors[SourceErrorKind::of(error) as usize].inc();
    }
}

impl Default for LeaseInstruments {
    fn default() -> Self {
        let counter = || {
            IntCounter::new("unregistered", "unregistered")
                .unwrap_or_else(|_| unreachable!("a fixed valid name"))
        };
        let histogram = || {
            Histogram::with_opts(HistogramOpts::new("unregistered", "unregistered"))
                .unwrap_or_else(|_| unreachable!("a fixed valid name and default buckets"))
        };
        LeaseInstruments {
            issued: counter(),
            rotations: Arc::new([counter(), counter()]),
            renewals: counter(),
            revocations: Arc::new([counter(), counter()]),
            deadline_closes: counter(),
            drain: histogram(),
            lifetime: histogram(),
            source_errors: Arc::new([counter(), counter(), counter()]),
        }
    }
}
