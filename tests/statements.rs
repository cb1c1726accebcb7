//! Statement tracking against a real PostgreSQL: requests rewritten by
//! `pglease::client::statements` go over real upstream connections, their replies go through
//! the reply filter, and each client must hear what a PostgreSQL session of its own answers to
//! the request as it sent it; this pins the protocol facts the rewrite relies on (probes, skip
//! to Sync, rollback, Close of an absent statement). The last tests go through the proxy
//! itself in transaction mode, with raw protocol clients sharing one upstream.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};
use common::{TestDb, cluster, fresh_db, proxy_toml, start_proxy};
use pglease::client::statements::{ClientStatements, UpstreamStatements, Verdict};
use pglease::credentials::lease::Lease;
use pglease::protocol::frame::header;
use pglease::upstream::{self, UpstreamTarget, UpstreamTls};
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One logged-in upstream connection, as the pool would open it.
async fn open(db: &TestDb) -> upstream::Upstream {
    let target = UpstreamTarget {
        host: "127.0.0.1".into(),
        port: cluster().port(),
        dbname: db.name.clone(),
        application_name: "statements-test".into(),
        connect_timeout: Duration::from_secs(30),
        database: db.name.clone(),
        tls: UpstreamTls::default(),
    };
    let lease = Lease {
        id: "test".into(),
        username: db.role.clone(),
        password: db.role_password.clone(),
        issued_at: SystemTime::now(),
        expires_at: None,
        renewable: false,
        generation: 1,
    };
    upstream::connect(&target, Arc::new(lease))
        .await
        .expect("upstream login")
}

/// How many ReadyForQuery replies `bytes` will get (every Sync and Query is answered once
/// unless skipped, which these tests never do to a Query).
fn sync_points(bytes: &[u8]) -> usize {
    frames(bytes)
        .iter()
        .filter(|(t, _)| *t == 'S' || *t == 'Q')
        .count()
}

/// Sends `bytes` and reads replies through the ReadyForQuery of its last sync point.
async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), bytes: &[u8]) -> BytesMut {
    exchange_n(stream, bytes, sync_points(bytes)).await
}

/// Sends `bytes` and reads replies through the `want`-th ReadyForQuery.
async fn exchange_n(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    bytes: &[u8],
    mut want: usize,
) -> BytesMut {
    stream.write_all(bytes).await.expect("write");
    let mut buf = BytesMut::new();
    let mut scanned = 0;
    while want > 0 {
        while let Some((tag, len)) = header(&buf[scanned..]) {
            if buf.len() < scanned + 1 + len {
                break;
            }
            scanned += 1 + len;
            want -= usize::from(tag == b'Z');
        }
        if want > 0 {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(&mut buf))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(n > 0, "upstream closed");
        }
    }
    buf
}

/// A client: its registry, and a PostgreSQL session of its own to compare with.
struct Client {
    statements: ClientStatements,
    direct: upstream::Upstream,
}

struct Upstream {
    state: UpstreamStatements,
    conn: upstream::Upstream,
}

impl Client {
    async fn new(db: &TestDb) -> Self {
        Client {
            statements: ClientStatements::new(),
            direct: open(db).await,
        }
    }

    /// Sends `request` through the rewrite to `up`; returns what the client hears, checked
    /// against what its own session answers.
    async fn send(&mut self, up: &mut Upstream, request: &[u8], status: u8) -> BytesMut {
        let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
        let changed = self
            .statements
            .rewrite(request, status, &mut up.state, &mut out, &mut heard)
            .expect("rewrite");
        let sent = if changed { &out[..] } else { request };
        let replies = exchange(&mut up.conn.stream, sent).await;
        let mut at = 0;
        while let Some((tag, len)) = header(&replies[at..]) {
            let frame = &replies[at..at + 1 + len];
            at += 1 + len;
            let mut after = BytesMut::new();
            let verdict = up.state.on_reply(tag, &mut after).expect("reply fits");
            if verdict == Verdict::Forward {
                heard.extend_from_slice(frame);
            }
            heard.extend_from_slice(&after);
        }
        assert!(up.state.idle(), "every reply accounted for");
        let direct = exchange(&mut self.direct.stream, request).await;
        assert_eq!(comparable(&heard), comparable(&direct), "proxied vs direct");
        heard
    }
}

impl Upstream {
    async fn new(db: &TestDb, max: usize) -> Self {
        Upstream {
            state: UpstreamStatements::new(max),
            conn: open(db).await,
        }
    }
}

fn frames(bytes: &[u8]) -> Vec<(char, Vec<u8>)> {
    let mut v = Vec::new();
    let mut at = 0;
    while let Some((tag, len)) = header(&bytes[at..]) {
        v.push((char::from(tag), bytes[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    v
}

/// Frames as the client would judge them: an ErrorResponse by its SQLSTATE and message
/// (PostgreSQL adds source file and line, which the proxy does not know).
fn comparable(bytes: &[u8]) -> Vec<(char, String)> {
    frames(bytes)
        .into_iter()
        .map(|(tag, body)| {
            if tag != 'E' {
                return (tag, String::from_utf8_lossy(&body).into_owned());
            }
            let fields: Vec<String> = body
                .split(|&b| b == 0)
                .filter(|f| matches!(f.first(), Some(b'C' | b'M')))
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            (tag, fields.join("|"))
        })
        .collect()
}

fn tags(bytes: &[u8]) -> String {
    frames(bytes).iter().map(|(t, _)| *t).collect()
}

fn rows(bytes: &[u8]) -> Vec<String> {
    frames(bytes)
        .into_iter()
        .filter(|(t, _)| *t == 'D')
        .map(|(_, b)| String::from_utf8_lossy(b.get(6..).unwrap_or_default()).into_owned())
        .collect()
}

fn parse(out: &mut BytesMut, name: &str, query: &str) {
    frontend::parse(name, query, [], out).expect("parse");
}

fn bind_execute(out: &mut BytesMut, statement: &str) {
    let none: [i16; 0] = [];
    let values: [i32; 0] = [];
    frontend::bind(
        "",
        statement,
        none,
        values,
        |_: i32, _: &mut BytesMut| Ok(IsNull::No),
        none,
        out,
    )
    .map_err(|_| ())
    .expect("bind");
    frontend::execute("", 0, out).expect("execute");
}

fn with_sync(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    f(&mut out);
    frontend::sync(&mut out);
    out
}

fn query(text: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::query(text, &mut out).expect("query");
    out
}

#[tokio::test]
async fn clients_hear_what_their_own_session_would_say() {
    let db = fresh_db("stmts").await;
    let (mut a, mut b) = (Client::new(&db).await, Client::new(&db).await);
    let (mut one, mut two) = (Upstream::new(&db, 200).await, Upstream::new(&db, 200).await);

    // pgjdbc-style names: the same name, different SQL, one upstream.
    let prep = |sql: &'static str| with_sync(move |o| parse(o, "S_1", sql));
    a.send(&mut one, &prep("select 'a'::text"), b'I').await;
    b.send(&mut one, &prep("select 'b'::text"), b'I').await;
    let run = with_sync(|o| bind_execute(o, "S_1"));
    // On an upstream that has never seen them, each is prepared first, replies hidden.
    assert_eq!(rows(&a.send(&mut two, &run, b'I').await), ["a"]);
    assert_eq!(rows(&b.send(&mut two, &run, b'I').await), ["b"]);
    assert_eq!(rows(&b.send(&mut one, &run, b'I').await), ["b"]);
    assert_eq!(two.state.len(), 2);

    // A name never prepared: PostgreSQL's 26000, also for an upstream name.
    let c = &mut Client::new(&db).await;
    let heard = c.send(&mut one, &run, b'I').await;
    assert_eq!(tags(&heard), "EZ");
    let upstream_name = {
        let mut names = one.state.iter().map(|id| id.upstream_name());
        names.next().expect("a statement").as_str().to_string()
    };
    let heard = c
        .send(
            &mut one,
            &with_sync(|o| bind_execute(o, &upstream_name)),
            b'I',
        )
        .await;
    assert_eq!(tags(&heard), "EZ");

    // Close forgets only the client's name; the other client's shared statement stays.
    let close = with_sync(|o| frontend::close(b'S', "S_1", o).expect("close"));
    assert_eq!(tags(&a.send(&mut one, &close, b'I').await), "3Z");
    assert_eq!(tags(&a.send(&mut one, &run, b'I').await), "EZ");
    assert_eq!(rows(&b.send(&mut one, &run, b'I').await), ["b"]);
}

#[tokio::test]
async fn a_refused_message_rolls_the_batch_back_like_postgresqls_own_error() {
    let db = fresh_db("stmtsrb").await;
    let mut a = Client::new(&db).await;
    let mut up = Upstream::new(&db, 200).await;
    // One table for both sessions (a temporary one is refused through the rewrite).
    exchange(&mut up.conn.stream, &query("create table t (x int)")).await;
    let batch = with_sync(|o| {
        parse(o, "", "insert into t values (1)");
        bind_execute(o, "");
        bind_execute(o, "nope");
        parse(o, "", "insert into t values (2)");
        bind_execute(o, "");
    });
    let heard = a.send(&mut up, &batch, b'I').await;
    assert_eq!(tags(&heard), "12CEZ");
    let count = a
        .send(&mut up, &query("select count(*) from t"), b'I')
        .await;
    assert_eq!(
        rows(&count),
        ["0"],
        "the implicit transaction was rolled back"
    );

    // SQL PREPARE is refused; inside a transaction block the block is failed, as for any
    // error PostgreSQL reports there.
    let mut up2 = Upstream::new(&db, 200).await;
    let mut out = BytesMut::new();
    let mut heard = BytesMut::new();
    for (text, status) in [("begin", b'I'), ("prepare p as select 1", b'T')] {
        out.clear();
        heard.clear();
        let request = query(text);
        let changed = a
            .statements
            .rewrite(&request, status, &mut up2.state, &mut out, &mut heard)
            .expect("rewrite");
        let sent = if changed { &out[..] } else { &request[..] };
        let replies = exchange(&mut up2.conn.stream, sent).await;
        for (tag, body) in frames(&replies) {
            let mut after = BytesMut::new();
            if up2.state.on_reply(tag as u8, &mut after).expect("fits") == Verdict::Forward {
                heard.put_u8(tag as u8);
                heard.put_u32(body.len() as u32 + 4);
                heard.put_slice(&body);
            }
            heard.extend_from_slice(&after);
        }
    }
    let last = frames(&heard);
    assert_eq!(tags(&heard), "EZ");
    assert!(String::from_utf8_lossy(&last[0].1).contains("C0A000"));
    assert_eq!(last[1].1, b"E", "the transaction block is failed");
}

#[tokio::test]
async fn a_small_cache_evicts_and_prepares_again() {
    let db = fresh_db("stmtsev").await;
    let mut a = Client::new(&db).await;
    let mut up = Upstream::new(&db, 1).await;
    for (name, sql) in [("s1", "select 1"), ("s2", "select 2")] {
        a.send(&mut up, &with_sync(|o| parse(o, name, sql)), b'I')
            .await;
    }
    for name in ["s1", "s2", "s1", "s2"] {
        let heard = a
            .send(&mut up, &with_sync(|o| bind_execute(o, name)), b'I')
            .await;
        assert_eq!(rows(&heard), [&name[1..]]);
    }
    // The upstream holds only the one statement it may keep.
    assert_eq!(up.state.len(), 1);
    let count = query("select count(*) from pg_prepared_statements");
    let replies = exchange(&mut up.conn.stream, &count).await;
    assert_eq!(rows(&replies), ["1"]);
}

#[tokio::test]
async fn a_query_inside_a_failed_batch_is_ignored_until_sync() {
    // The reply filter drops a Query's step when PostgreSQL skips to Sync, and the rewrite
    // does not send one after a refusal: both rest on PostgreSQL ignoring a Query there.
    let db = fresh_db("stmtsq").await;
    let mut a = Client::new(&db).await;
    let mut up = Upstream::new(&db, 200).await;
    let mut request = with_sync(|o| {
        bind_execute(o, "nope");
        frontend::query("select 1", o).expect("query");
    });
    request.extend_from_slice(&query("select 2"));
    let direct = exchange_n(&mut a.direct.stream, &request, 2).await;
    assert_eq!(
        tags(&direct),
        "EZTDCZ",
        "the Query before Sync got no reply"
    );
    assert_eq!(rows(&direct), ["2"]);

    let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
    let changed = a
        .statements
        .rewrite(&request, b'I', &mut up.state, &mut out, &mut heard)
        .expect("rewrite");
    assert!(changed);
    assert_eq!(sync_points(&out), 2, "the skipped Query is not sent");
    let replies = exchange(&mut up.conn.stream, &out).await;
    for (tag, body) in frames(&replies) {
        let mut after = BytesMut::new();
        if up.state.on_reply(tag as u8, &mut after).expect("fits") == Verdict::Forward {
            heard.put_u8(tag as u8);
            heard.put_u32(body.len() as u32 + 4);
            heard.put_slice(&body);
        }
        heard.extend_from_slice(&after);
    }
    assert_eq!(comparable(&heard), comparable(&direct));
    assert!(up.state.idle());
}

/// A raw protocol client of the proxy, logged in with md5.
async fn login(proxy: &pglease::app::Proxy, db: &TestDb) -> TcpStream {
    let mut out = BytesMut::new();
    frontend::startup_message([("user", &*db.user), ("database", &*db.name)], &mut out)
        .expect("startup");
    let mut stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    stream.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(&mut buf))
            .await
            .expect("login reply in time")
            .expect("read");
        assert!(n > 0, "proxy closed during login");
        let mut complete = 0;
        while let Some((_, len)) = header(&buf[complete..]) {
            if buf.len() < complete + 1 + len {
                break;
            }
            complete += 1 + len;
        }
        let all = frames(&buf.split_to(complete));
        for (tag, body) in all {
            match tag {
                'R' if body.get(..4) == Some(&[0, 0, 0, 5]) => {
                    let salt: [u8; 4] = body[4..8].try_into().expect("salt");
                    let hash = postgres_protocol::authentication::md5_hash(
                        db.user.as_bytes(),
                        db.password.as_bytes(),
                        salt,
                    );
                    out.clear();
                    frontend::password_message(hash.as_bytes(), &mut out).expect("password");
                    stream.write_all(&out).await.expect("write");
                }
                'E' => panic!("login refused: {}", String::from_utf8_lossy(&body)),
                'Z' => return stream,
                _ => {}
            }
        }
    }
}

/// The SQLSTATE of the first ErrorResponse in `bytes`.
fn first_error_code(bytes: &[u8]) -> Option<String> {
    let (_, body) = frames(bytes).into_iter().find(|(t, _)| *t == 'E')?;
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'C'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

/// A transaction-mode proxy over one upstream, so every client shares it.
async fn one_upstream_proxy(tag: &str) -> (TestDb, pglease::app::Proxy) {
    let db = fresh_db(tag).await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 1, "auth_type = \"md5\"")).await;
    (db, proxy)
}

#[tokio::test]
async fn through_the_proxy_two_clients_one_name_never_collide() {
    // Untracked, the second Parse of S_1 on the shared upstream fails with 42P05, or a Bind
    // runs the other client's SQL.
    let (db, proxy) = one_upstream_proxy("stmtsp1").await;
    let (mut a, mut b) = (login(&proxy, &db).await, login(&proxy, &db).await);
    let prep = |sql: &'static str| with_sync(move |o| parse(o, "S_1", sql));
    assert_eq!(
        tags(&exchange(&mut a, &prep("select 'a'::text")).await),
        "1Z"
    );
    assert_eq!(
        tags(&exchange(&mut b, &prep("select 'b'::text")).await),
        "1Z"
    );
    let run = with_sync(|o| bind_execute(o, "S_1"));
    for _ in 0..3 {
        assert_eq!(rows(&exchange(&mut a, &run).await), ["a"]);
        assert_eq!(rows(&exchange(&mut b, &run).await), ["b"]);
    }
    // Preparing again after its own transactions keeps working (drivers re-prepare).
    assert_eq!(
        tags(&exchange(&mut a, &prep("select 'a'::text")).await),
        "1Z"
    );
    assert_eq!(rows(&exchange(&mut a, &run).await), ["a"]);
}

#[tokio::test]
async fn through_the_proxy_a_bind_to_a_name_never_prepared_gets_26000() {
    // Untracked, b's Bind of S_1 runs a's statement on the shared upstream and reads its row.
    let (db, proxy) = one_upstream_proxy("stmtsp2").await;
    let (mut a, mut b) = (login(&proxy, &db).await, login(&proxy, &db).await);
    let prep = with_sync(|o| parse(o, "S_1", "select 'a secret'::text"));
    assert_eq!(tags(&exchange(&mut a, &prep).await), "1Z");
    let run = with_sync(|o| bind_execute(o, "S_1"));
    assert_eq!(rows(&exchange(&mut a, &run).await), ["a secret"]);
    let heard = exchange(&mut b, &run).await;
    assert_eq!(tags(&heard), "EZ", "{heard:?}");
    assert_eq!(first_error_code(&heard).as_deref(), Some("26000"));
    // b stays usable, and a keeps its statement.
    assert_eq!(
        rows(&exchange(&mut b, &query("select 'b'::text")).await),
        ["b"]
    );
    assert_eq!(rows(&exchange(&mut a, &run).await), ["a secret"]);
}

#[tokio::test]
async fn through_the_proxy_sql_prepare_is_refused_with_0a000() {
    // Untracked, SQL PREPARE succeeds and leaves a statement on the shared upstream.
    let (db, proxy) = one_upstream_proxy("stmtsp3").await;
    let mut a = login(&proxy, &db).await;
    let heard = exchange(&mut a, &query("prepare p as select 1")).await;
    assert_eq!(first_error_code(&heard).as_deref(), Some("0A000"));
    assert_eq!(
        rows(&exchange(&mut a, &query("select 'ok'::text")).await),
        ["ok"]
    );
}

#[tokio::test]
async fn through_the_proxy_a_client_vanishing_mid_request_leaves_nothing_owed() {
    // The vanished client's request had replies for the proxy to swallow and to write (its
    // Parse of a statement already there). Were its upstream handed on with those still
    // owed, the next client's replies would be judged against them: frames swallowed, or
    // the upstream closed under it as mismatched.
    let (db, proxy) = one_upstream_proxy("stmtsp4").await;
    let prep = with_sync(|o| parse(o, "S_1", "select pg_sleep(0.5)::text"));
    let mut a = login(&proxy, &db).await;
    assert_eq!(tags(&exchange(&mut a, &prep).await), "1Z");
    let mut request = BytesMut::new();
    parse(&mut request, "S_1", "select pg_sleep(0.5)::text");
    bind_execute(&mut request, "S_1");
    frontend::sync(&mut request);
    a.write_all(&request).await.expect("write");
    drop(a);
    let mut b = login(&proxy, &db).await;
    let prep = with_sync(|o| parse(o, "S_1", "select 'b'::text"));
    let run = with_sync(|o| bind_execute(o, "S_1"));
    for _ in 0..3 {
        assert_eq!(tags(&exchange(&mut b, &prep).await), "1Z");
        let heard = exchange(&mut b, &run).await;
        assert_eq!(tags(&heard), "2DCZ", "{heard:?}");
        assert_eq!(rows(&heard), ["b"]);
    }
}
