//! LISTEN/NOTIFY through pglease: in transaction mode through the pool's listener connection
//! (fan-out, UNLISTEN, vanished clients, the refused forms, the extended-protocol form), and
//! in both modes while leases rotate every few seconds (every notification exactly once, in
//! order).

mod common;
#[path = "notify/rotating.rs"]
mod rotating;
#[path = "contract/wire.rs"]
#[allow(dead_code)]
mod wire;

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use common::{TestDb, client_config, connect_app, fresh_db, proxy_toml, start_proxy};
use wire::Wire;

/// Generous bound for a notification to arrive on a busy two-core machine.
const ARRIVES_WITHIN: Duration = Duration::from_secs(20);

/// A client whose notifications come out of a channel, read by the task polling its
/// connection.
pub struct Listening {
    pub client: Client,
    pub notes: mpsc::UnboundedReceiver<Notification>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Connects to `addr` as `db`'s local user, forwarding notifications.
pub async fn listening(addr: std::net::SocketAddr, db: &TestDb) -> Listening {
    let (client, mut conn) = client_config(addr, &db.user, &db.password, &db.name)
        .connect(NoTls)
        .await
        .expect("connecting through the proxy");
    let (tx, notes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n);
            }
        }
    });
    Listening {
        client,
        notes,
        task,
    }
}

impl Listening {
    /// The next notification, within [`ARRIVES_WITHIN`].
    pub async fn next(&mut self) -> Notification {
        tokio::time::timeout(ARRIVES_WITHIN, self.notes.recv())
            .await
            .expect("a notification within the window")
            .expect("the connection is still up")
    }
}

async fn transaction_proxy(tag: &str) -> (pglease::app::Proxy, TestDb) {
    let db = fresh_db(tag).await;
    // md5, so the bare wire client can log in.
    let toml = proxy_toml(&db, "transaction", 2, "auth_type = \"md5\"");
    let proxy = start_proxy(&toml).await;
    (proxy, db)
}

#[tokio::test]
async fn subscribed_idle_clients_get_each_notification_and_nobody_else_does() {
    let (proxy, db) = transaction_proxy("fanout").await;
    let addr = proxy.local_addr();
    let mut a = listening(addr, &db).await;
    let mut b = listening(addr, &db).await;
    let mut other = listening(addr, &db).await;
    a.client.batch_execute("LISTEN Chan").await.expect("LISTEN");
    b.client
        .batch_execute("listen \"chan\"")
        .await
        .expect("LISTEN");
    other
        .client
        .batch_execute("LISTEN elsewhere")
        .await
        .expect("LISTEN");
    let sender = connect_app(&proxy, &db).await;
    sender
        .batch_execute("NOTIFY chan, 'first'; SELECT pg_notify('chan', 'second')")
        .await
        .expect("NOTIFY");
    sender
        .batch_execute("NOTIFY elsewhere, 'last'")
        .await
        .expect("NOTIFY");
    // Both listeners sent nothing since their LISTEN: delivered while idle.
    for l in [&mut a, &mut b] {
        let (one, two) = (l.next().await, l.next().await);
        assert_eq!((one.channel(), one.payload()), ("chan", "first"));
        assert_eq!((two.channel(), two.payload()), ("chan", "second"));
    }
    // Committed after the `chan` ones: had they reached `other`, they would come first.
    let n = other.next().await;
    assert_eq!((n.channel(), n.payload()), ("elsewhere", "last"));
    assert!(a.notes.try_recv().is_err() && b.notes.try_recv().is_err());
    // The sender never listened; its upstreams are pooled and carry no LISTEN either.
    let rows = sender
        .query("SELECT count(*) FROM pg_listening_channels()", &[])
        .await
        .expect("pg_listening_channels");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn unlisten_stops_delivery_and_a_vanished_client_lets_go() {
    let (proxy, db) = transaction_proxy("unlisten").await;
    let addr = proxy.local_addr();
    let mut a = listening(addr, &db).await;
    a.client
        .batch_execute("LISTEN one; LISTEN two")
        .await
        .expect("LISTEN");
    a.client
        .batch_execute("UNLISTEN one")
        .await
        .expect("UNLISTEN");
    let sender = connect_app(&proxy, &db).await;
    sender
        .batch_execute("NOTIFY one, 'x'")
        .await
        .expect("NOTIFY");
    sender
        .batch_execute("NOTIFY two, 'y'")
        .await
        .expect("NOTIFY");
    let n = a.next().await;
    assert_eq!(
        (n.channel(), n.payload()),
        ("two", "y"),
        "UNLISTEN one was ignored"
    );
    a.client
        .batch_execute("UNLISTEN *")
        .await
        .expect("UNLISTEN *");
    sender
        .batch_execute("NOTIFY two, 'z'")
        .await
        .expect("NOTIFY");
    a.client
        .batch_execute("LISTEN three")
        .await
        .expect("LISTEN");
    sender
        .batch_execute("NOTIFY three, 'w'")
        .await
        .expect("NOTIFY");
    let n = a.next().await;
    assert_eq!(
        (n.channel(), n.payload()),
        ("three", "w"),
        "UNLISTEN * was ignored"
    );

    // A client that vanishes (no Terminate) lets go of its channels on the listener.
    let entry = proxy.shared().pool(&db.name, &db.user).expect("the pool");
    assert_eq!(entry.pool.listener().channels(), ["three"]);
    a.task.abort();
    drop(a);
    let gone = async {
        while !entry.pool.listener().channels().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(ARRIVES_WITHIN, gone)
        .await
        .expect("the vanished client's channel was let go");
    proxy.shutdown().await;
}

#[tokio::test]
async fn listen_where_it_cannot_be_exact_is_refused() {
    let (proxy, db) = transaction_proxy("refused").await;
    let client = connect_app(&proxy, &db).await;
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let e = client
        .batch_execute("LISTEN chan")
        .await
        .expect_err("LISTEN inside BEGIN");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("0A000"),
        "{e:?}"
    );
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    for mixed in ["BEGIN; LISTEN chan; COMMIT", "SELECT 1; LISTEN chan"] {
        let e = client.batch_execute(mixed).await.expect_err(mixed);
        assert_eq!(
            e.as_db_error().map(|d| d.code().code()),
            Some("0A000"),
            "{mixed}: {e:?}"
        );
    }
    // tokio-postgres prepares by name (as asyncpg does): answered by the proxy too.
    client
        .execute("LISTEN chan", &[])
        .await
        .expect("a named LISTEN");
    let row = client
        .query_one("SELECT 1", &[])
        .await
        .expect("still usable");
    assert_eq!(row.get::<_, i32>(0), 1);
    let rows = client
        .query("SELECT count(*) FROM pg_listening_channels()", &[])
        .await
        .expect("pg_listening_channels");
    assert_eq!(
        rows[0].get::<_, i64>(0),
        0,
        "a refused LISTEN reached an upstream"
    );
    proxy.shutdown().await;
}

/// pgjdbc's form: Parse, Bind, Describe portal, Execute, Sync with the unnamed statement.
#[tokio::test]
async fn extended_protocol_listen_gets_postgres_replies() {
    let (proxy, db) = transaction_proxy("extended").await;
    let mut wire = Wire::login(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    let mut out = BytesMut::new();
    frontend::parse("", "LISTEN jdbc_chan", [], &mut out).unwrap();
    frontend::bind(
        "",
        "",
        [],
        std::iter::empty::<()>(),
        |_, _| Ok(postgres_protocol::IsNull::No),
        [],
        &mut out,
    )
    .unwrap_or_else(|_| panic!("Bind"));
    frontend::describe(b'S', "", &mut out).unwrap();
    frontend::describe(b'P', "", &mut out).unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    wire.send(&out).await;
    let mut got = Vec::new();
    loop {
        let m = wire.next().await.expect("a reply");
        got.push(match m {
            Message::ParseComplete => "ParseComplete".to_owned(),
            Message::BindComplete => "BindComplete".to_owned(),
            Message::ParameterDescription(p) => {
                format!("ParameterDescription({})", p.parameters().count().unwrap())
            }
            Message::NoData => "NoData".to_owned(),
            Message::CommandComplete(c) => format!("CommandComplete({})", c.tag().unwrap()),
            Message::ReadyForQuery(_) => break,
            _ => "other".to_owned(),
        });
    }
    assert_eq!(
        got,
        [
            "ParseComplete",
            "BindComplete",
            "ParameterDescription(0)",
            "NoData",
            "NoData",
            "CommandComplete(LISTEN)"
        ]
    );
    let sender = connect_app(&proxy, &db).await;
    sender
        .batch_execute("NOTIFY jdbc_chan, 'hi'")
        .await
        .expect("NOTIFY");
    match wire.next().await.expect("a notification") {
        Message::NotificationResponse(n) => {
            assert_eq!(
                (n.channel().unwrap(), n.message().unwrap()),
                ("jdbc_chan", "hi")
            );
        }
        _ => panic!("expected a NotificationResponse"),
    }
    proxy.shutdown().await;
}
