//! `SHOW CLIENTS` and `SHOW SERVERS` (alias `UPSTREAMS`): one row per connection, read from
//! the client registry and each pool's upstream registry. No secret is in either.

use std::net::SocketAddr;

use super::show::sorted_pools;
use super::wire::{Kind, Table, flag, int, text, time};
use crate::client::Shared;

use Kind::{Int, Text};

/// `SHOW CLIENTS`: every logged-in pool client (console sessions are not listed).
pub fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int),
        ("local_addr", Text),
        ("local_port", Int),
        ("connect_time", Text),
        ("wait", Int),
        ("wait_us", Int),
        ("tls", Text),
        ("application_name", Text),
        ("id", Int),
    ]);
    for client in shared.clients.list() {
        let info = &client.info;
        let waited = shared.clients.waited(&client);
        let (local_addr, local_port) = split(info.local);
        t.row(vec![
            text("C"),
            text(info.user()),
            text(info.database()),
            text(client.state().as_str()),
            text(info.peer.ip().to_string()),
            int(info.peer.port()),
            local_addr,
            local_port,
            time(Some(info.connected_at)),
            int(waited.as_secs()),
            int(waited.subsec_micros()),
            text(if info.tls { "TLS" } else { "" }),
            text(info.application_name()),
            int(info.id),
        ]);
    }
    t
}

/// `SHOW SERVERS`: every open upstream connection of every pool. `user` is the pool's local
/// user (as `SHOW POOLS`), `role` the upstream role of its lease.
pub fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int),
        ("local_addr", Text),
        ("local_port", Int),
        ("connect_time", Text),
        ("request_time", Text),
        ("remote_pid", Int),
        ("id", Int),
        ("credentials", Text),
        ("generation", Int),
        ("role", Text),
        ("retiring", Int),
    ]);
    for (db, user, entry) in sorted_pools(shared) {
        let current = entry.pool.credentials().generation();
        for up in entry.pool.upstreams() {
            let (addr, port) = split(up.addr);
            let (local_addr, local_port) = split(up.local);
            t.row(vec![
                text("S"),
                text(&user),
                text(&db),
                text(if up.is_active() { "active" } else { "idle" }),
                addr,
                port,
                local_addr,
                local_port,
                time(Some(up.connected_at)),
                time(up.last_request()),
                int(up.pid),
                int(up.id),
                text(entry.pool.credentials().name()),
                int(up.generation),
                text(&up.role),
                flag(up.generation < current),
            ]);
        }
    }
    t
}

fn split(addr: Option<SocketAddr>) -> (Option<String>, Option<String>) {
    match addr {
        Some(a) => (text(a.ip().to_string()), int(a.port())),
        None => (None, None),
    }
}
