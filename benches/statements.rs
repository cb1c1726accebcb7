//! Statement tracking per request: what the rewrite and the reply filter add to a
//! transaction-mode request, for `pgbench -M extended` (unnamed statement: nothing may be
//! copied) and `-M prepared` (a named statement already on the upstream: the Bind is renamed).

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use pglease::client::statements::{ClientStatements, UpstreamStatements, Verdict};
use pglease::protocol::frame::header;
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;

const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

/// Bind (one text parameter), Describe portal, Execute, Sync: one `pgbench -S` transaction.
fn run(statement: &str, out: &mut BytesMut) {
    frontend::bind(
        "",
        statement,
        [0i16],
        ["12345"],
        |v, buf| {
            buf.extend_from_slice(v.as_bytes());
            Ok(IsNull::No)
        },
        [0i16],
        out,
    )
    .map_err(|_| ())
    .expect("bind");
    frontend::describe(b'P', "", out).expect("describe");
    frontend::execute("", 0, out).expect("execute");
    frontend::sync(out);
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The replies to [`run`]: BindComplete, RowDescription, DataRow, CommandComplete, ReadyForQuery.
fn replies() -> Vec<u8> {
    let mut v = frame(b'2', b"");
    v.extend(frame(b'T', &[0u8; 27]));
    v.extend(frame(b'D', &[0, 1, 0, 0, 0, 1, b'0']));
    v.extend(frame(b'C', b"SELECT 1\0"));
    v.extend(frame(b'Z', b"I"));
    v
}

/// One request through the rewrite and its replies through the filter.
fn once(
    client: &mut ClientStatements,
    up: &mut UpstreamStatements,
    request: &[u8],
    replies: &[u8],
    bufs: &mut (BytesMut, BytesMut),
) -> usize {
    let changed = client
        .rewrite(request, b'I', up, &mut bufs.0, &mut bufs.1)
        .expect("rewrite");
    let mut forwarded = 0;
    let mut at = 0;
    while let Some((tag, len)) = header(&replies[at..]) {
        if up.on_reply(tag, &mut bufs.1).expect("reply") == Verdict::Forward {
            forwarded += 1;
        }
        at += 1 + len;
    }
    bufs.1.clear();
    forwarded + usize::from(changed)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("statements");
    let mut bufs = (BytesMut::with_capacity(4096), BytesMut::with_capacity(4096));

    let mut extended = BytesMut::new();
    frontend::parse("", SELECT, [], &mut extended).expect("parse");
    run("", &mut extended);
    let mut unnamed_replies = frame(b'1', b"");
    unnamed_replies.extend(replies());
    let mut client = ClientStatements::new();
    let mut up = UpstreamStatements::new(200);
    g.bench_function("extended_unnamed_request", |b| {
        b.iter(|| {
            let n = once(&mut client, &mut up, &extended, &unnamed_replies, &mut bufs);
            assert_eq!(n, 6, "unchanged, every reply forwarded");
        })
    });

    let mut prepare = BytesMut::new();
    frontend::parse("P0_1", SELECT, [], &mut prepare).expect("parse");
    frontend::sync(&mut prepare);
    let mut client = ClientStatements::new();
    let mut up = UpstreamStatements::new(200);
    let mut sink = (BytesMut::new(), BytesMut::new());
    let prepared_replies = [frame(b'3', b""), frame(b'1', b""), frame(b'Z', b"I")].concat();
    once(&mut client, &mut up, &prepare, &prepared_replies, &mut sink);
    let mut prepared = BytesMut::new();
    run("P0_1", &mut prepared);
    let replies = replies();
    g.bench_function("prepared_named_request", |b| {
        b.iter(|| {
            let n = once(&mut client, &mut up, &prepared, &replies, &mut bufs);
            assert_eq!(n, 6, "rewritten, every reply forwarded");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
