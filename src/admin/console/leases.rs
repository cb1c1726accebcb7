//! `SHOW LEASES`: one row per credentials entry, about its published lease and how long
//! pglease can keep serving on it if the source stays down (`seconds_to_cliff`).

use std::time::SystemTime;

use super::wire::{Kind, Table, flag, int, text, time};
use crate::client::Shared;

use Kind::{Int, Text};

/// `SHOW LEASES`.
pub fn leases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("credentials", Text),
        ("source", Text),
        ("generation", Int),
        ("role", Text),
        ("lease_id", Text),
        ("issued", Text),
        ("expires", Text),
        ("renewable", Int),
        ("connections", Int),
        ("retiring_connections", Int),
        ("state", Text),
        ("rotations", Int),
        ("next_rotation", Text),
        ("last_error", Text),
        ("seconds_to_cliff", Int),
    ]);
    let all = shared.credentials();
    let pools = shared.pools();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let now = SystemTime::now();
    for name in names {
        let creds = &all[name];
        let state = creds.state();
        let lease = creds.current();
        let generation = state.generation;
        let connections: usize = pools
            .iter()
            .filter(|(_, _, e)| e.pool.credentials().name() == name.as_str())
            .flat_map(|(_, _, e)| e.pool.upstreams())
            .filter(|u| u.generation == generation)
            .count();
        let retiring: usize = state.retiring.iter().map(|(_, _, n)| n).sum();
        let phase = if lease.is_none() {
            "pending"
        } else if state.current_expired {
            "expired"
        } else if state.last_error.is_some() {
            "failing"
        } else if retiring > 0 {
            "rotating"
        } else {
            "active"
        };
        let cliff = state
            .expires_at
            .map(|at| at.duration_since(now).map(|d| d.as_secs()).unwrap_or(0));
        t.row(vec![
            text(name.as_str()),
            text(creds.kind()),
            int(generation),
            state.username.clone(),
            state.lease_id.clone(),
            time(lease.as_ref().map(|l| l.issued_at)),
            time(state.expires_at),
            lease.as_ref().and_then(|l| flag(l.renewable)),
            int(connections),
            int(retiring),
            text(phase),
            int(state.rotations),
            time(state.next_rotation),
            state.last_error.clone(),
            cliff.and_then(int),
        ]);
    }
    t
}
