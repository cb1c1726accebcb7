//! Frame scanning throughput: how fast the relay finds message boundaries in a typical
//! `pgbench -S` response stream and a large result set.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pglease::protocol::frame::{BackendScanner, FrontendScanner};

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// RowDescription, DataRow, CommandComplete, ReadyForQuery: one `SELECT abalance ...` reply.
fn select_reply() -> Vec<u8> {
    let mut v = frame(b'T', &[0u8; 27]);
    v.extend(frame(b'D', &[0, 1, 0, 0, 0, 1, b'0']));
    v.extend(frame(b'C', b"SELECT 1\0"));
    v.extend(frame(b'Z', b"I"));
    v
}

fn bench(c: &mut Criterion) {
    let replies: Vec<u8> = (0..1000).flat_map(|_| select_reply()).collect();
    let mut g = c.benchmark_group("backend");
    g.throughput(Throughput::Bytes(replies.len() as u64));
    g.bench_function("select_replies_x1000", |b| {
        b.iter(|| {
            let mut s = BackendScanner::default();
            let mut n = 0;
            while let Ok(Some(_)) = s.scan(&replies) {
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
    let rows: Vec<u8> = (0..10_000).flat_map(|_| frame(b'D', &[1u8; 100])).collect();
    g.throughput(Throughput::Bytes(rows.len() as u64));
    g.bench_function("datarows_100b_x10000", |b| {
        b.iter(|| {
            let mut s = BackendScanner::default();
            let _ = s.scan(&rows);
            assert_eq!(s.forwardable(), rows.len());
        })
    });
    g.finish();

    let queries: Vec<u8> = (0..1000)
        .flat_map(|_| {
            frame(
                b'Q',
                b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0",
            )
        })
        .collect();
    let mut g = c.benchmark_group("frontend");
    g.throughput(Throughput::Bytes(queries.len() as u64));
    g.bench_function("queries_x1000", |b| {
        b.iter(|| {
            let mut s = FrontendScanner::default();
            let r = s.scan(&queries, true, 1 << 26).unwrap_or_default();
            assert_eq!(r.sync_points, 1000);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
