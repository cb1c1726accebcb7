//! One pool's running counts and totals, shared by the admin plane's readers (`/metrics`,
//! `SHOW POOLS`, `SHOW STATS`) and written by the client tasks that use the pool.
//!
//! # Design
//!
//! Plain relaxed atomics: the data path adds to them without a lock, and readers take a
//! [`StatsSnapshot`] at scrape or `SHOW` time. Gauges (`clients_*`) go up and down as clients
//! change state; totals only grow.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    /// Microseconds clients spent waiting for an upstream.
    pub wait_micros: AtomicU64,
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

impl PoolStats {
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
