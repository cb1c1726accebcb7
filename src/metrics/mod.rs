//! Prometheus metrics: one registry per proxy, every `pglease_*` family, and the text the
//! admin endpoint serves at `/metrics`.
//!
//! # Design
//!
//! [`Metrics`] is a cheap cloneable handle on an own [`Registry`] (never the process-global
//! one, so tests run many proxies in parallel, each with its own numbers). It is built first,
//! then hands out the instruments the data path writes, with their labels resolved once:
//! [`PoolInstruments`] per pool (histograms of transactions and queries; logins and closes),
//! [`LeaseInstruments`] per credentials entry (issued, rotations, renewals, revocations,
//! deadline closes, drain and lifetime), [`ClientInstruments`] once (failed logins, errors
//! sent). Recording is then an atomic add or one histogram observation: no label lookup
//! and no lock per transaction, and none per message.
//!
//! Everything else is read when Prometheus scrapes, by collectors registered last, once the
//! proxy's shared state exists ([`Metrics::watch`]): the pools' [`crate::pool::PoolStats`]
//! (client states, transactions, queries, bytes, and the wait histogram, counted there per
//! bucket because it is written on every checkout) and upstream counts, each credentials
//! entry's lease (generation, expiry, seconds to its cliff), readiness ([`ready`]), and the
//! process itself (`process`: build, start time, memory, file descriptors). The collectors
//! hold the shared state weakly, so a stopped proxy is not kept alive by its registry.
//!
//! Labels are `database`, `user`, `credentials` and small fixed enums (`state`, `reason`,
//! `result`, `kind`, `sqlstate`); never a client address, lease id or role name.

mod family;
mod lease;
mod process;
pub mod ready;
mod scrape;

use std::sync::{Arc, Weak};

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::client::Shared;
use crate::client::instruments::{AuthFailure, ClientInstruments};
use crate::credentials::instruments::LeaseInstruments;
use crate::pool::{CloseReason, ConnectResult, PoolInstruments};

pub use ready::Readiness;

/// The content type of the text exposition format `/metrics` serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of the request-path histograms (waits, transactions, queries), in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Buckets of the lease histograms (drain, lifetime), in seconds: seconds to a day.
const LEASE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// A proxy's metrics. Cheap to clone; no global state.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

/// The families the data path writes, registered on `registry`.
struct Families {
    registry: Registry,
    transaction: HistogramVec,
    query: HistogramVec,
    auth_failures: IntCounterVec,
    connects: IntCounterVec,
    closes: IntCounterVec,
    client_errors: IntCounterVec,
    lease: lease::LeaseFamilies,
}

/// A family could not be registered: only possible through a programming error (a name used
/// twice), so it is reported, not handled.
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// A fresh registry with every written family and the process collector registered.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let pool_labels = &["database", "user"];
        let inner = Families {
            transaction: histogram(
                &registry,
                "pglease_transaction_duration_seconds",
                "Time each transaction held its upstream connection.",
                pool_labels,
                LATENCY_BUCKETS,
            )?,
            query: histogram(
                &registry,
                "pglease_query_duration_seconds",
                "Time from a query's request to its ReadyForQuery.",
                pool_labels,
                LATENCY_BUCKETS,
            )?,
            auth_failures: counter(
                &registry,
                "pglease_auth_failures_total",
                "Client logins refused, by reason.",
                &["reason"],
            )?,
            connects: counter(
                &registry,
                "pglease_upstream_connects_total",
                "Upstream logins, by result.",
                &["result"],
            )?,
            closes: counter(
                &registry,
                "pglease_upstream_closes_total",
                "Upstream connections closed, by reason.",
                &["reason"],
            )?,
            client_errors: counter(
                &registry,
                "pglease_client_errors_total",
                "Errors pglease itself sent to clients, by SQLSTATE.",
                &["sqlstate"],
            )?,
            lease: lease::LeaseFamilies::register(&registry)?,
            registry,
        };
        // Every fixed label value exists from the start, so rates and alerts see zeros.
        for r in AuthFailure::ALL {
            inner.auth_failures.with_label_values(&[r.as_str()]);
        }
        for r in ConnectResult::ALL {
            inner.connects.with_label_values(&[r.as_str()]);
        }
        for r in CloseReason::ALL {
            inner.closes.with_label_values(&[r.as_str()]);
        }
        inner
            .registry
            .register(Box::new(process::ProcessCollector::new()?))?;
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    /// The instruments of the pool serving `user` on `database`.
    pub fn pool(&self, database: &str, user: &str) -> PoolInstruments {
        let f = &self.inner;
        let labels = &[database, user];
        PoolInstruments {
            transaction: f.transaction.with_label_values(labels),
            query: f.query.with_label_values(labels),
            connects: ConnectResult::ALL
                .iter()
                .map(|r| f.connects.with_label_values(&[r.as_str()]))
                .collect(),
            closes: CloseReason::ALL
                .iter()
                .map(|r| f.closes.with_label_values(&[r.as_str()]))
                .collect(),
        }
    }

    /// The instruments of credentials entry `name`'s rotator.
    pub fn lease(&self, name: &str) -> LeaseInstruments {
        self.inner.lease.instruments(name)
    }

    /// The instruments every client task writes.
    pub fn clients(&self) -> ClientInstruments {
        let f = &self.inner;
        ClientInstruments {
            auth_failures: AuthFailure::ALL
                .iter()
                .map(|r| f.auth_failures.with_label_values(&[r.as_str()]))
                .collect(),
            errors: f.client_errors.clone(),
        }
    }

    /// Registers the collectors read at scrape time from the proxy's shared state: pools,
    /// leases and readiness. Called once, when that state exists.
    pub fn watch(&self, shared: Weak<Shared>, readiness: Readiness) -> Result<(), MetricsError> {
        let collector = scrape::StateCollector::new(shared, readiness)?;
        self.inner.registry.register(Box::new(collector))?;
        Ok(())
    }

    /// Every family in the text exposition format (version 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> Vec<u8> {
        let families = self.inner.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec fails only on a family with no name, which none has.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let vec = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()) as Box<dyn Collector>)?;
    Ok(vec)
}

#[cfg(test)]
mod tests;
