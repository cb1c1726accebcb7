//! The collector read at scrape time from the proxy's shared state: every pool's client and
//! upstream counts and totals ([`crate::pool::PoolStats`]), every credentials entry's lease
//! gauges, and readiness. Nothing here runs on the data path; the few locks it takes (a
//! pool's replacement list, a credentials entry's state) are held for a copy.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::{Family, desc};
use super::ready::{Readiness, seconds_to_cliff};
use crate::client::Shared;
use crate::pool::PoolStats;
use crate::pool::waits::WAIT_BOUNDS_MICROS;

/// (name, help, labels) of every family this collector fills.
const FAMILIES: &[(&str, &str, &[&str])] = &[
    (CLIENTS, "Client connections by state.", POOL_STATE),
    (
        UPSTREAMS,
        "Upstream connections by state (retiring ones are also active or idle).",
        POOL_STATE,
    ),
    (
        WAIT,
        "Time a request waited for an upstream connection.",
        POOL,
    ),
    (TRANSACTIONS, "Transactions finished.", POOL),
    (QUERIES, "Queries (Query messages and Syncs).", POOL),
    (RECEIVED, "Bytes read from clients.", POOL),
    (SENT, "Bytes written to clients.", POOL),
    (
        EXPIRY,
        "When the current lease expires (after renewals).",
        CREDS,
    ),
    (GENERATION, "Generation of the current lease.", CREDS),
    (
        CLIFF,
        "Seconds until the current lease's hard deadline: how long pglease can keep serving if the source stays down.",
        CREDS,
    ),
    (READY, "1 while /readyz answers 200.", &[]),
];

const CLIENTS: &str = "pglease_client_connections";
const UPSTREAMS: &str = "pglease_upstream_connections";
const WAIT: &str = "pglease_client_wait_seconds";
const TRANSACTIONS: &str = "pglease_transactions_total";
const QUERIES: &str = "pglease_queries_total";
const RECEIVED: &str = "pglease_bytes_received_total";
const SENT: &str = "pglease_bytes_sent_total";
const EXPIRY: &str = "pglease_lease_expiry_timestamp_seconds";
const GENERATION: &str = "pglease_lease_generation";
const CLIFF: &str = "pglease_lease_seconds_to_cliff";
const READY: &str = "pglease_ready";
const POOL: &[&str] = &["database", "user"];
const POOL_STATE: &[&str] = &["database", "user", "state"];
const CREDS: &[&str] = &["credentials"];

/// Reads pools, leases and readiness when Prometheus scrapes.
pub(super) struct StateCollector {
    shared: Weak<Shared>,
    readiness: Readiness,
    descs: Vec<Desc>,
}

impl StateCollector {
    pub(super) fn new(
        shared: Weak<Shared>,
        readiness: Readiness,
    ) -> Result<StateCollector, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| desc(name, help, labels))
            .collect::<Result<_, _>>()?;
        Ok(StateCollector {
            shared,
            readiness,
            descs,
        })
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut ready = Family::gauge(READY, help(READY));
        let Some(shared) = self.shared.upgrade() else {
            ready.add(&[], 0.0);
            return vec![ready.done()];
        };
        let is_ready = self.readiness.check(&shared).is_ok();
        ready.add(&[], if is_ready { 1.0 } else { 0.0 });
        let mut out = pools(&shared);
        out.extend(leases(&shared));
        out.push(ready.done());
        out
    }
}

fn help(name: &str) -> &'static str {
    FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, h, _)| h)
}

fn pools(shared: &Shared) -> Vec<MetricFamily> {
    let mut clients = Family::gauge(CLIENTS, help(CLIENTS));
    let mut upstreams = Family::gauge(UPSTREAMS, help(UPSTREAMS));
    let mut waits = Family::histogram(WAIT, help(WAIT));
    let mut totals = [TRANSACTIONS, QUERIES, RECEIVED, SENT].map(|n| Family::counter(n, help(n)));
    for (database, user, entry) in shared.pools() {
        let (database, user) = (database.as_str(), user.as_str());
        let s = entry.pool.stats().snapshot();
        let u = entry.pool.upstream_counts();
        let with = |state| [("database", database), ("user", user), ("state", state)];
        clients.add(&with("active"), s.clients_active as f64);
        clients.add(&with("waiting"), s.clients_waiting as f64);
        clients.add(&with("idle"), s.clients_idle as f64);
        upstreams.add(&with("active"), u.active as f64);
        upstreams.add(&with("idle"), u.idle as f64);
        upstreams.add(&with("replacement"), u.replacement as f64);
        upstreams.add(&with("retiring"), u.retiring as f64);
        let labels = [("database", database), ("user", user)];
        add_waits(&mut waits, &labels, entry.pool.stats());
        let values = [s.transactions, s.queries, s.received_bytes, s.sent_bytes];
        for (family, value) in totals.iter_mut().zip(values) {
            family.add(&labels, value as f64);
        }
    }
    let mut out = vec![clients.done(), upstreams.done(), waits.done()];
    out.extend(totals.map(Family::done));
    out
}

/// One pool's `pglease_client_wait_seconds`, from its bucket counts and its total wait.
pub(super) fn add_waits(family: &mut Family, labels: &[(&str, &str)], stats: &PoolStats) {
    let w = stats.waits.snapshot();
    let bounds = WAIT_BOUNDS_MICROS.iter().map(|us| *us as f64 / 1e6);
    let sum = stats.wait_micros.load(Ordering::Relaxed) as f64 / 1e6;
    family.add_histogram(labels, bounds.zip(w.cumulative), w.count, sum);
}

fn leases(shared: &Shared) -> Vec<MetricFamily> {
    let mut expiry = Family::gauge(EXPIRY, help(EXPIRY));
    let mut generation = Family::gauge(GENERATION, help(GENERATION));
    let mut cliff = Family::gauge(CLIFF, help(CLIFF));
    let now = SystemTime::now();
    for (name, creds) in &shared.credentials() {
        let labels = [("credentials", name.as_str())];
        generation.add(&labels, creds.generation() as f64);
        if let Some(at) = creds.state().expires_at {
            let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            expiry.add(&labels, secs.as_secs_f64());
        }
        if let Some(left) = seconds_to_cliff(creds, now) {
            cliff.add(&labels, left);
        }
    }
    vec![expiry.done(), generation.done(), cliff.done()]
}
