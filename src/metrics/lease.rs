//! The lease families a rotator writes (counters and histograms labelled by `credentials`);
//! the lease gauges are read at scrape time in [`super::scrape`].

use std::sync::Arc;

use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{LEASE_BUCKETS, counter, histogram};
use crate::credentials::instruments::{LeaseInstruments, Outcome, SourceErrorKind};

/// The registered lease families.
pub(super) struct LeaseFamilies {
    issued: IntCounterVec,
    rotations: IntCounterVec,
    renewals: IntCounterVec,
    revocations: IntCounterVec,
    deadline_closes: IntCounterVec,
    drain: HistogramVec,
    lifetime: HistogramVec,
    source_errors: IntCounterVec,
}

impl LeaseFamilies {
    pub(super) fn register(r: &Registry) -> Result<LeaseFamilies, prometheus::Error> {
        let c = &["credentials"];
        let cr = &["credentials", "result"];
        Ok(LeaseFamilies {
            issued: counter(
                r,
                "pglease_lease_issued_total",
                "Leases the credential source handed out.",
                c,
            )?,
            rotations: counter(
                r,
                "pglease_lease_rotations_total",
                "Attempts to replace the current lease, by result.",
                cr,
            )?,
            renewals: counter(
                r,
                "pglease_lease_renewals_total",
                "Leases the source extended.",
                c,
            )?,
            revocations: counter(
                r,
                "pglease_lease_revocations_total",
                "Leases revoked at the source, by result.",
                cr,
            )?,
            deadline_closes: counter(
                r,
                "pglease_lease_deadline_closes_total",
                "Connections still on a lease when it reached its hard deadline, ended there.",
                c,
            )?,
            drain: histogram(
                r,
                "pglease_lease_drain_seconds",
                "Time from a lease's supersession until no connection used it.",
                c,
                LEASE_BUCKETS,
            )?,
            lifetime: histogram(
                r,
                "pglease_lease_lifetime_seconds",
                "Time from a lease's issue to its revocation: each credential's exposure.",
                c,
                LEASE_BUCKETS,
            )?,
            source_errors: counter(
                r,
                "pglease_source_errors_total",
                "Failed calls to the credential source, by kind.",
                &["credentials", "kind"],
            )?,
        })
    }

    /// The instruments of entry `name`, every label child resolved now.
    pub(super) fn instruments(&self, name: &str) -> LeaseInstruments {
        let one = |v: &IntCounterVec| v.with_label_values(&[name]);
        let outcomes = |v: &IntCounterVec| {
            Arc::new(Outcome::ALL.map(|o| v.with_label_values(&[name, o.as_str()])))
        };
        LeaseInstruments {
            issued: one(&self.issued),
            rotations: outcomes(&self.rotations),
            renewals: one(&self.renewals),
            revocations: outcomes(&self.revocations),
            deadline_closes: one(&self.deadline_closes),
            drain: self.drain.with_label_values(&[name]),
            lifetime: self.lifetime.with_label_values(&[name]),
            source_errors: Arc::new(
                SourceErrorKind::ALL
                    .map(|k| self.source_errors.with_label_values(&[name, k.as_str()])),
            ),
        }
    }
}
