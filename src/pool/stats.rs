//! One pool's running counts and totals, shared by the admin plane's readers (`/metrics`,
//! `SHOW POOLS`, `SHOW STATS`) and written by the client tasks that use the pool.
//!
//! # Design
//!
//! Plain relaxed atomics: the data path adds to them without a lock, and readers take a
//! [`StatsSnapshot`] at scrape or `SHOW` time. Gauges (`clients_*`) go up and down as clients
//! change state; totals only grow. A client adds its transaction's bytes, queries and times
//! once per transaction ([`PoolStats::add_transaction`]), not per message.
//!
//! The wait histogram is counted here too ([`WaitCounts`], one relaxed add per checkout)
//! and exported at scrape time. The other histograms and the login and close counters are
//! prometheus instruments ([`PoolInstruments`]) resolved to their labels when the pool is
//! built.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter};

use super::CloseReason;
use super::waits::WaitCounts;
use crate::upstream::UpstreamError;

/// Counts and totals of one pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Clients of this pool holding an upstream (PgBouncer's `cl_active`).
    pub clients_active: AtomicI64,
    /// Clients with a complete request waiting for an upstream (`cl_waiting`).
    pub clients_waiting: AtomicI64,
    /// Logged-in clients holding no upstream and waiting for none (`cl_idle`).
    pub clients_idle: AtomicI64,
    /// Transactions finished (transaction mode: upstream given back; session mode: each
    /// ReadyForQuery `I` after a request).
    pub transactions: AtomicU64,
    /// Queries: each simple Query message and each extended-protocol Sync.
    pub queries: AtomicU64,
    /// Bytes read from clients.
    pub received_bytes: AtomicU64,
    /// Bytes written to clients.
    pub sent_bytes: AtomicU64,
    /// Microseconds spent in transactions.
    pub transaction_micros: AtomicU64,
    /// Microseconds spent in queries.
    pub query_micros: AtomicU64,
    /// Microseconds clients spent waiting for an upstream (also the wait histogram's sum).
    pub wait_micros: AtomicU64,
    /// Each wait for an upstream by histogram bucket (`pglease_client_wait_seconds`).
    pub waits: WaitCounts,
}

/// A copy of [`PoolStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub clients_active: i64,
    pub clients_waiting: i64,
    pub clients_idle: i64,
    pub transactions: u64,
    pub queries: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub transaction_micros: u64,
    pub query_micros: u64,
    pub wait_micros: u64,
}

/// What one transaction (or, in session mode, one stretch between idle points) added.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransactionTotals {
    /// Bytes read from the client.
    pub received_bytes: u64,
    /// Bytes written to the client.
    pub sent_bytes: u64,
    /// Queries (Query messages and Syncs).
    pub queries: u64,
    /// Microseconds spent in those queries.
    pub query_micros: u64,
}

impl PoolStats {
    /// Adds one finished transaction that took `micros` on its upstream.
    pub fn add_transaction(&self, totals: &TransactionTotals, micros: u64) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.transactions, 1);
        add(&self.transaction_micros, micros);
        self.add_traffic(totals);
    }

    /// Counts one wait for an upstream (a checkout that ended, with an upstream or not):
    /// one relaxed add into its bucket, and one into the total unless under a microsecond.
    pub fn record_wait(&self, waited: Duration) {
        self.waits.record(waited);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        if micros > 0 {
            self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// Adds traffic that finished no transaction (a client that left mid-transaction).
    pub fn add_traffic(&self, totals: &TransactionTotals) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.received_bytes, totals.received_bytes);
        add(&self.sent_bytes, totals.sent_bytes);
        add(&self.queries, totals.queries);
        add(&self.query_micros, totals.query_micros);
    }

    /// Reads every field (each one atomically; the set is not one instant, which scrapes do
    /// not need).
    pub fn snapshot(&self) -> StatsSnapshot {
        let i = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0);
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            clients_active: i(&self.clients_active),
            clients_waiting: i(&self.clients_waiting),
            clients_idle: i(&self.clients_idle),
            transactions: u(&self.transactions),
            queries: u(&self.queries),
            received_bytes: u(&self.received_bytes),
            sent_bytes: u(&self.sent_bytes),
            transaction_micros: u(&self.transaction_micros),
            query_micros: u(&self.query_micros),
            wait_micros: u(&self.wait_micros),
        }
    }
}

/// The prometheus instruments a pool writes on its own data path, built once per pool by the
/// metrics registry (`crate::metrics`) with their labels already resolved, so recording is
/// an atomic add: no label lookup and no lock per transaction. A pool built without a
/// registry gets [`PoolInstruments::default`], whose instruments are registered nowhere.
#[derive(Clone)]
pub struct PoolInstruments {
    /// Each transaction's time on its upstream (`pglease_transaction_duration_seconds`).
    pub transaction: Histogram,
    /// Each query's time from its request to its ReadyForQuery
    /// (`pglease_query_duration_seconds`).
    pub query: Histogram,
    /// Upstream logins by [`ConnectResult`], indexed by [`ConnectResult::index`].
    pub connects: Arc<[IntCounter]>,
    /// Upstream closes by [`CloseReason`], indexed by [`CloseReason::index`].
    pub closes: Arc<[IntCounter]>,
}

impl PoolInstruments {
    /// Counts the outcome of one upstream login.
    pub fn connected<T>(&self, result: &Result<T, UpstreamError>) {
        if let Some(c) = self.connects.get(ConnectResult::of(result).index()) {
            c.inc();
        }
    }

    /// Counts one upstream close.
    pub fn closed(&self, reason: CloseReason) {
        if let Some(c) = self.closes.get(reason.index()) {
            c.inc();
        }
    }
}

impl Default for PoolInstruments {
    fn default() -> Self {
        let histogram = |name: &str| {
            Histogram::with_opts(HistogramOpts::new(name, "unregistered"))
                .unwrap_or_else(|_| unreachable!("a fixed valid name and default buckets"))
        };
        let counters = |n: usize| {
            (0..n)
                .map(|_| IntCounter::new("unregistered", "unregistered"))
                .collect::<Result<Arc<[_]>, _>>()
                .unwrap_or_else(|_| unreachable!("a fixed valid name"))
        };
        PoolInstruments {
            transaction: histogram("transaction"),
            query: histogram("query"),
            connects: counters(ConnectResult::ALL.len()),
            closes: counters(CloseReason::ALL.len()),
        }
    }
}

/// How an upstream login ended: the `result` label of `pglease_upstream_connects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// Logged in.
    Ok,
    /// PostgreSQL refused the login (a bad lease password, an unknown role).
    Refused,
    /// Connect plus login took longer than `connect_timeout`.
    Timeout,
    /// PostgreSQL could not be reached, or hung up during the login.
    Unreachable,
    /// No lease was published for the pool's credentials yet.
    NoLease,
    /// TLS, protocol or authentication-method failures.
    Failed,
}

impl ConnectResult {
    /// Every result, in [`ConnectResult::index`] order.
    pub const ALL: [ConnectResult; 6] = [
        ConnectResult::Ok,
        ConnectResult::Refused,
        ConnectResult::Timeout,
        ConnectResult::Unreachable,
        ConnectResult::NoLease,
        ConnectResult::Failed,
    ];

    /// The result of one login attempt.
    pub fn of<T>(result: &Result<T, UpstreamError>) -> ConnectResult {
        match result {
            Ok(_) => ConnectResult::Ok,
            Err(UpstreamError::Refused { .. }) => ConnectResult::Refused,
            Err(UpstreamError::Timeout) => ConnectResult::Timeout,
            Err(UpstreamError::Io(_) | UpstreamError::Closed) => ConnectResult::Unreachable,
            Err(UpstreamError::NoLease(_)) => ConnectResult::NoLease,
            Err(_) => ConnectResult::Failed,
        }
    }

    /// The stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectResult::Ok => "ok",
            ConnectResult::Refused => "refused",
            ConnectResult::Timeout => "timeout",
            ConnectResult::Unreachable => "unreachable",
            ConnectResult::NoLease => "no_lease",
            ConnectResult::Failed => "failed",
        }
    }

    /// Position in [`ConnectResult::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
