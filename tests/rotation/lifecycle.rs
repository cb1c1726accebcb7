//! The edges of a lease's life seen from outside: a clean shutdown revokes what it holds, the
//! hard deadline ends a transaction on time and loses its write, short leases work with the
//! default margins, a source that hands out nearly expired leases cannot make pglease spin,
//! and an issuer that cannot be reached leaves traffic on the current lease until it returns.

use std::path::Path;

use tokio::net::TcpListener;

use super::*;

/// Issued leases that only rotate when asked (10 minutes of life), with `shutdown_timeout`.
fn long_lived(db: &TestDb, prefix: &str, shutdown_timeout: &str) -> String {
    issuer_toml(db, prefix, "transaction")
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"")
        .replace(
            "shutdown_timeout = \"2s\"",
            &format!("shutdown_timeout = \"{shutdown_timeout}\""),
        )
}

/// A table `doomed` made by the database's owner (returned, for looking), and a client
/// through the proxy at `addr` with a transaction open that has written one row to it, with
/// that client's connection task.
async fn doomed_transaction(
    db: &TestDb,
    addr: std::net::SocketAddr,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let setup = owner(db).await;
    setup
        .batch_execute("CREATE TABLE doomed (n int)")
        .await
        .expect("create table");
    let (stuck, stuck_conn) = client_config(addr, &db.user, &db.password, &db.name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("client");
    let stuck_task = tokio::spawn(stuck_conn);
    stuck
        .batch_execute("BEGIN; INSERT INTO doomed VALUES (1)")
        .await
        .expect("begin");
    (setup, stuck, stuck_task)
}

/// Runs `client`'s connection task and returns how it ended: the FATAL error text, if any.
async fn ended_with(task: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    match tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the client was never closed")
        .expect("connection task")
    {
        Err(e) => describe(&e),
        Ok(()) => "closed without an error".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_lets_transactions_finish_ends_idle_clients_and_revokes_every_role() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("stop").await;
    let admin = superuser().await;
    let prefix = "stopx";
    let proxy = start_proxy(&long_lived(&db, prefix, "10s")).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let addr = proxy.local_addr();
    let setup = owner(&db).await;
    setup
        .batch_execute("CREATE TABLE kept (n int)")
        .await
        .expect("create table");

    let (idle, idle_conn) = client_config(addr, &db.user, &db.password, &db.name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("idle client");
    let idle_task = tokio::spawn(idle_conn);
    first_value(&idle, "SELECT 1").await;

    // A transaction open on lease 1 while lease 2 is published: both leases are held.
    let busy = connect(addr, &db.user, &db.password, &db.name).await;
    busy.batch_execute("BEGIN; INSERT INTO kept VALUES (1)")
        .await
        .expect("begin");
    let generation = creds.generation();
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(10);
    while creds.generation() == generation {
        assert!(Instant::now() < until, "no rotation: {:?}", creds.state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(prefixed_roles(&admin, prefix).await.len(), 2);

    let stopping = tokio::spawn(proxy.shutdown());
    // The idle client is told at once, with PostgreSQL's code for an administrator's shutdown.
    let error = ended_with(idle_task).await;
    assert!(
        error.contains("57P01") && error.contains("shutting down"),
        "idle client: {error}"
    );
    // The open transaction may still finish within shutdown_timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    busy.batch_execute("INSERT INTO kept VALUES (2); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("the transaction could not finish: {}", describe(&e)));
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("shutdown hung")
        .expect("shutdown task");

    let left = prefixed_roles(&admin, prefix).await;
    assert!(
        left.is_empty(),
        "issued roles alive after a clean stop: {left:?}"
    );
    assert_eq!(first_value(&setup, "SELECT count(*) FROM kept").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_still_open_at_shutdown_timeout_ends_with_an_error_and_is_not_committed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("stopt").await;
    let admin = superuser().await;
    let prefix = "stopt";
    let proxy = start_proxy(&long_lived(&db, prefix, "1s")).await;
    let addr = proxy.local_addr();
    let (setup, _stuck, stuck_task) = doomed_transaction(&db, addr).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), proxy.shutdown())
        .await
        .expect("shutdown hung");
    let error = ended_with(stuck_task).await;
    assert!(
        error.contains("57P01") && error.contains("shutting down") && error.contains("transaction"),
        "open transaction at shutdown: {error}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the transaction did not get shutdown_timeout"
    );
    assert_eq!(
        first_value(&setup, "SELECT count(*) FROM doomed").await,
        "0"
    );
    assert!(prefixed_roles(&admin, prefix).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_deadline_ends_a_transaction_on_time_without_its_write_and_revokes_the_lease() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("hard").await;
    let admin = superuser().await;
    let prefix = "hardx";
    // A 10 s lease with the default margin (a tenth: 1 s) that cannot be renewed: its hard
    // deadline is 9 s after issue.
    let toml = issuer_toml(&db, prefix, "transaction")
        .replace("ttl = \"8s\"", "ttl = \"10s\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"10s\"")
        .replace("safety_margin = \"3s\"", "");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.local_addr();
    let (setup, stuck, stuck_task) = doomed_transaction(&db, addr).await;
    let role = first_value(&stuck, "SELECT current_user").await;
    let valid_until: f64 = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("the lease's role")
        .get(0);
    let deadline = std::time::UNIX_EPOCH + Duration::from_secs_f64(valid_until - 1.0);

    let error = ended_with(stuck_task).await;
    let ended = std::time::SystemTime::now();
    assert!(
        error.contains("57P01") && error.contains("hard deadline"),
        "unexpected error: {error}"
    );
    let early = deadline.duration_since(ended).unwrap_or_default();
    let late = ended.duration_since(deadline).unwrap_or_default();
    assert!(
        early <= Duration::from_millis(100),
        "ended {early:?} before its deadline"
    );
    assert!(
        late <= Duration::from_millis(2500),
        "ended {late:?} after its deadline"
    );
    assert_eq!(
        first_value(&setup, "SELECT count(*) FROM doomed").await,
        "0"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while prefixed_roles(&admin, prefix).await.contains(&role) {
        assert!(
            Instant::now() < until,
            "the lease was not revoked at its deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_source_handing_out_nearly_expired_leases_is_asked_a_bounded_number_of_times() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("short").await;
    let dir = std::env::temp_dir().join(format!("pglease-short-{}", db.name));
    // Names repeat across runs of the suite: start from an empty directory.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let runs = dir.join("runs");
    // Each run appends a line, then prints the test role with one second of life left, as a
    // credential helper near the end of its own token would.
    let script = format!(
        "echo run $(/bin/date +%s.%N) >> '{runs}'; now=$(/bin/date +%s); \
         printf '{{\"username\":\"{user}\",\"password\":\"{password}\",\"expires_at\":%s}}' $((now + 1))",
        runs = runs.display(),
        user = db.role,
        password = db.role_password.expose(),
    );
    let source = format!(
        "source = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", {}]",
        toml_string(&script)
    );
    let proxy = start_proxy(&pooled_toml(&db, "transaction", 2, "", "helper", &source)).await;
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        first_value(&client, "SELECT 1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = run_count(&runs);
    // Backoff from 0.5-1 s, doubling: at most 5 runs in 6 s. Without it the helper ran
    // hundreds of times a second.
    assert!(
        count <= 6,
        "the helper ran {count} times in 6 s: {:?} {:?}",
        std::fs::read_to_string(&runs),
        proxy.shared().credentials()["helper"].state()
    );
    let state = proxy.shared().credentials()["helper"].state();
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("less than a rotation needs")),
        "{state:?}"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A TCP relay to PostgreSQL for the issuer's admin connection that the test can cut: while
/// down it accepts and drops every connection, counting the attempts.
struct Relay {
    addr: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    attempts: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let down = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, a) = (down.clone(), attempts.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    a.lock().unwrap().push(Instant::now());
                    drop(inbound);
                    continue;
                }
                let d = d.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream_addr()).await
                    else {
                        return;
                    };
                    // Cut established connections too once the relay goes down.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = async {
                            while !d.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Relay {
            addr,
            down,
            attempts,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_past_rotate_at_keeps_logins_working_backs_off_and_recovers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("unreach").await;
    let relay = Relay::start().await;
    let direct = cluster().url(&db.name).expose().to_owned();
    let relayed = direct.replace(
        &format!(":{}/", cluster().port()),
        &format!(":{}/", relay.addr.port()),
    );
    assert_ne!(
        direct, relayed,
        "the admin URL was not pointed at the relay"
    );
    let toml = issuer_toml(&db, "unrx", "transaction")
        .replace(&direct, &relayed)
        .replace("ttl = \"8s\"", "ttl = \"20s\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"40s\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let first = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    first_value(&first, "SELECT 1").await;
    let generation = creds.generation();

    // The issuer's PostgreSQL goes away from the issuer's point of view, past rotate_at (6 s).
    relay.down.store(true, Ordering::SeqCst);
    let outage = Instant::now() + Duration::from_secs(9);
    while Instant::now() < outage {
        // New clients (and new upstream logins, which do not go through the relay) still work.
        let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
        first_value(&client, "SELECT current_user").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        creds.generation(),
        generation,
        "a lease was published during the outage"
    );
    let state = creds.state();
    assert!(
        state.last_error.is_some(),
        "the outage is not reported: {state:?}"
    );
    let attempts = relay.attempts.lock().unwrap().clone();
    assert!(
        attempts.len() >= 3,
        "only {} attempts during the outage",
        attempts.len()
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let (first_gap, last_gap) = (gaps[0], gaps[gaps.len() - 1]);
    assert!(
        last_gap > first_gap,
        "the backoff did not grow: gaps {gaps:?}"
    );

    // Recovery publishes the next lease on its own.
    relay.down.store(false, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(40);
    while creds.generation() == generation {
        assert!(Instant::now() < until, "no recovery: {:?}", creds.state());
        first_value(&first, "SELECT 1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(creds.state().last_error.is_none());
    first_value(&first, "SELECT 1").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_the_process_revoke_its_roles_and_exit_zero() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("term").await;
    let admin = superuser().await;
    let prefix = "termx";
    let (mut child, client, path) = run_binary(&db, &long_lived(&db, prefix, "2s")).await;
    let issued = first_value(&client, "SELECT current_user").await;
    assert!(prefixed_roles(&admin, prefix).await.contains(&issued));
    let pid = child.id().expect("pid").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pglease did not stop after SIGTERM")
        .expect("wait");
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let left = prefixed_roles(&admin, prefix).await;
    assert!(left.is_empty(), "roles alive after SIGTERM: {left:?}");
}
