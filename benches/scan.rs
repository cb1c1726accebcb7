//! What the trackers cost per simple-protocol query: the statement checks, the LISTEN check
//! and the `set_config` check over one query text, and the rewrite of a `pgbench -S` Query
//! with its ReadyForQuery through the reply filter. Ordinary texts should cost one short pass;
//! a long text with none of the trackers' words shows the cost per byte.

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use pglease::client::notify::sql::{may_mention_listen, mentions_listen};
use pglease::client::settings::mentions_set_config;
use pglease::client::statements::{ClientStatements, Command, UpstreamStatements, classify};
use postgres_protocol::message::frontend;
use std::hint::black_box;

/// `pgbench -S`'s query, as the simple protocol sends it.
const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 81234;";

/// One statement of pgbench's TPC-B script.
const UPDATE: &str = "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 81234;";

/// An ORM-style query of about 1 KB with none of the trackers' words.
fn long_query() -> String {
    let columns: Vec<String> = (0..40).map(|i| format!("t0.column_{i}")).collect();
    format!(
        "SELECT {} FROM public.orders AS t0 LEFT JOIN public.customers AS t1 ON t1.id = \
         t0.customer_id WHERE t0.created_at > $1 AND t1.region = 'north' ORDER BY t0.id \
         LIMIT 100",
        columns.join(", ")
    )
}

fn checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    let long = long_query();
    for (name, text) in [
        ("select", SELECT),
        ("update", UPDATE),
        ("long", long.as_str()),
    ] {
        let text = text.as_bytes();
        g.bench_function(format!("trackers_{name}"), |b| {
            b.iter(|| {
                let t = black_box(text);
                let found = (classify(t), mentions_listen(t), mentions_set_config(t));
                assert_eq!(found, (Command::Other, false, false));
            })
        });
    }
    g.finish();
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    let long = long_query();
    for (name, text) in [("select", SELECT), ("long", long.as_str())] {
        let mut query = BytesMut::new();
        frontend::query(text, &mut query).expect("query");
        let mut client = ClientStatements::new();
        let mut up = UpstreamStatements::new(200);
        let (mut out, mut to_client) = (BytesMut::new(), BytesMut::new());
        g.bench_function(format!("simple_query_request_{name}"), |b| {
            b.iter(|| {
                // What a transaction-mode session does with the request before its replies come:
                // the LISTEN check on the request, then the rewrite.
                assert!(!may_mention_listen(black_box(&query)));
                let changed = client
                    .rewrite(&query, b'I', &mut up, &mut out, &mut to_client)
                    .expect("rewrite");
                assert!(!changed);
                up.on_reply(b'Z', &mut to_client).expect("reply");
                assert!(up.idle() && to_client.is_empty());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, checks, request);
criterion_main!(benches);
