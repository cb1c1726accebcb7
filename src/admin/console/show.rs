//! `SHOW POOLS`, `STATS`, `DATABASES`, `USERS`, `LISTS` and `VERSION`: PgBouncer's columns
//! where the concept is the same, and pglease's own (credentials, generation, paused) after
//! them, so scrapers that map columns by name read both.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::wire::{Kind, Table, flag, int, text};
use crate::client::Shared;
use crate::client::stop::ClientState;
use crate::config::PoolMode;
use crate::pool::StatsSnapshot;

use Kind::{Int, Text};

/// `SHOW POOLS`: one row per (database, user) pool.
pub fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int),
        ("cl_waiting", Int),
        ("cl_idle", Int),
        ("cl_active_cancel_req", Int),
        ("cl_waiting_cancel_req", Int),
        ("sv_active", Int),
        ("sv_active_cancel", Int),
        ("sv_being_canceled", Int),
        ("sv_idle", Int),
        ("sv_used", Int),
        ("sv_tested", Int),
        ("sv_login", Int),
        ("maxwait", Int),
        ("maxwait_us", Int),
        ("pool_mode", Text),
        ("credentials", Text),
        ("generation", Int),
        ("paused", Int),
    ]);
    let waits = longest_waits(shared);
    for (db, user, entry) in sorted_pools(shared) {
        let pool = &entry.pool;
        let s = pool.stats().snapshot();
        let (_, idle, _) = pool.status();
        let wait = waits
            .get(&(db.to_owned(), user.to_owned()))
            .copied()
            .unwrap_or_default();
        t.row(vec![
            text(db),
            text(user),
            int(s.clients_active),
            int(s.clients_waiting),
            int(s.clients_idle),
            int(0),
            int(0),
            int(pool.active_upstreams()),
            int(0),
            int(0),
            int(idle),
            int(0),
            int(0),
            int(0),
            int(wait.as_secs()),
            int(wait.subsec_micros()),
            text(mode(entry.mode)),
            text(pool.credentials().name()),
            int(pool.credentials().generation()),
            flag(pool.is_paused()),
        ]);
    }
    t
}

/// The longest current wait for an upstream per (database, user), from the client registry.
fn longest_waits(shared: &Shared) -> HashMap<(String, String), Duration> {
    let mut waits: HashMap<(String, String), Duration> = HashMap::new();
    for client in shared.clients.list() {
        if client.state() != ClientState::Waiting {
            continue;
        }
        let waited = shared.clients.waited(&client);
        let key = (
            client.info.database().to_owned(),
            client.info.user().to_owned(),
        );
        let longest = waits.entry(key).or_default();
        *longest = (*longest).max(waited);
    }
    waits
}

/// `SHOW STATS`: totals since start per database (its pools added up), and PgBouncer's
/// averages computed over the time since start.
pub fn stats(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("total_xact_count", Int),
        ("total_query_count", Int),
        ("total_received", Int),
        ("total_sent", Int),
        ("total_xact_time", Int),
        ("total_query_time", Int),
        ("total_wait_time", Int),
        ("avg_xact_count", Int),
        ("avg_query_count", Int),
        ("avg_recv", Int),
        ("avg_sent", Int),
        ("avg_xact_time", Int),
        ("avg_query_time", Int),
        ("avg_wait_time", Int),
    ]);
    let mut by_db: BTreeMap<String, StatsSnapshot> = BTreeMap::new();
    for (db, _, entry) in shared.pools() {
        let s = entry.pool.stats().snapshot();
        let sum = by_db.entry(db).or_default();
        sum.transactions += s.transactions;
        sum.queries += s.queries;
        sum.received_bytes += s.received_bytes;
        sum.sent_bytes += s.sent_bytes;
        sum.transaction_micros += s.transaction_micros;
        sum.query_micros += s.query_micros;
        sum.wait_micros += s.wait_micros;
    }
    let seconds = shared.clients.uptime().as_secs().max(1);
    for (db, s) in by_db {
        t.row(vec![
            text(db),
            int(s.transactions),
            int(s.queries),
            int(s.received_bytes),
            int(s.sent_bytes),
            int(s.transaction_micros),
            int(s.query_micros),
            int(s.wait_micros),
            int(s.transactions / seconds),
            int(s.queries / seconds),
            int(s.received_bytes / seconds),
            int(s.sent_bytes / seconds),
            int(per(s.transaction_micros, s.transactions)),
            int(per(s.query_micros, s.queries)),
            int(per(s.wait_micros, s.transactions)),
        ]);
    }
    t
}

/// `total / count`, 0 when nothing was counted.
fn per(total: u64, count: u64) -> u64 {
    total.checked_div(count).unwrap_or(0)
}

/// `SHOW DATABASES`: one row per `[[databases]]` entry.
pub fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int),
        ("min_pool_size", Int),
        ("reserve_pool", Int),
        ("pool_mode", Text),
        ("max_connections", Int),
        ("current_connections", Int),
        ("paused", Int),
        ("disabled", Int),
        ("credentials", Text),
    ]);
    for db in &shared.config().databases {
        let pools: Vec<_> = shared
            .pools()
            .into_iter()
            .filter(|(name, _, _)| *name == db.name)
            .collect();
        let open: usize = pools.iter().map(|(_, _, e)| e.pool.status().0).sum();
        let paused = !pools.is_empty() && pools.iter().all(|(_, _, e)| e.pool.is_paused());
        t.row(vec![
            text(&db.name),
            text(&db.host),
            int(db.port),
            text(db.upstream_dbname()),
            None,
            int(db.pool_size),
            int(db.min_pool_size),
            int(db.reserve_pool_size),
            text(mode(db.pool_mode)),
            int(db.pool_size * pools.len()),
            int(open),
            flag(paused),
            flag(false),
            text(&db.credentials),
        ]);
    }
    t
}

/// `SHOW USERS`: the local users, and which of them may use this console.
pub fn users(shared: &Shared) -> Table {
    let mut t = Table::new(&[("name", Text), ("pool_mode", Text), ("admin", Int)]);
    let admins = &shared.config().proxy.admin_users;
    for user in &shared.config().users {
        t.row(vec![
            text(&user.name),
            None,
            flag(admins.contains(&user.name)),
        ]);
    }
    t
}

/// `SHOW LISTS`: how many of each thing there are, PgBouncer's way (`list`, `items`).
pub fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Text), ("items", Int)]);
    let clients = shared.clients.list();
    let used_clients = clients
        .iter()
        .filter(|c| c.state() != ClientState::Idle)
        .count();
    let (mut open, mut idle) = (0, 0);
    for (_, _, entry) in shared.pools() {
        let (size, available, _) = entry.pool.status();
        open += size;
        idle += available;
    }
    for (list, items) in [
        ("databases", shared.config().databases.len()),
        ("users", shared.config().users.len()),
        ("pools", shared.pools().len()),
        ("free_clients", 0),
        ("used_clients", used_clients),
        ("login_clients", 0),
        ("free_servers", idle),
        ("used_servers", open - idle.min(open)),
    ] {
        t.row(vec![text(list), int(items)]);
    }
    t
}

/// `SHOW VERSION`.
pub fn version() -> Table {
    let mut t = Table::new(&[("version", Text)]);
    t.row(vec![text(concat!("pglease ", env!("CARGO_PKG_VERSION")))]);
    t
}

/// Every pool, sorted by (database, user), so output is stable.
pub fn sorted_pools(shared: &Shared) -> Vec<(String, String, crate::client::PoolEntry)> {
    let mut all = shared.pools();
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

/// A pool mode as the config spells it.
pub fn mode(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}
