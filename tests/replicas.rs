//! Several pglease replicas on one PostgreSQL, as Kubernetes runs them: two real pglease
//! processes from one config (same issuer prefix, same credentials entry), each rotating
//! short leases under its own clients' load. Neither may ever cut the other's clients: not
//! while both run, not while one cannot reach its issuer and keeps serving on a role whose
//! validity has passed; and the roles of the one killed with SIGKILL are reaped by the other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

const PREFIX: &str = "replx";
/// Each replica's clients.
const CLIENTS: usize = 3;

/// One config for both replicas but for the admin URL: 12 s leases rotated at 40 % of their
/// life, and a reaper every second.
fn replica_toml(db: &TestDb, admin_url: &str) -> String {
    let source = format!(
        r#"source = "issuer"
admin_url = "{admin_url}"
member_of = ["{role}"]
prefix = "{PREFIX}"
ttl = "12s"
max_ttl = "24s"
rotate_at = 0.4
safety_margin = "3s"
reap_interval = "1s""#,
        role = db.role,
    );
    pooled_toml(db, "transaction", 4, "", "rotating", &source)
}

/// A pglease process and what its clients saw.
struct Replica {
    child: tokio::process::Child,
    addr: SocketAddr,
    files: [PathBuf; 2],
    stop: Arc<AtomicBool>,
    /// Every role a client of this replica ran a query as, with when it last did.
    roles: Arc<Mutex<BTreeMap<String, Instant>>>,
    errors: Arc<Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Replica {
    /// Starts `pglease --config` on a free port and waits until it serves `db`.
    async fn start(db: &TestDb, name: &str, toml: &str) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let toml = toml.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let base =
            std::env::temp_dir().join(format!("pglease-{}-{name}-{}", db.name, std::process::id()));
        let (config, log) = (base.with_extension("toml"), base.with_extension("log"));
        std::fs::write(&config, &toml).expect("config file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
            .arg("--config")
            .arg(&config)
            // The audit lines tell which replica revoked which role.
            .env("PGLEASE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start pglease");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let until = Instant::now() + Duration::from_secs(30);
        while try_connect(addr, &db.user, &db.password, &db.name)
            .await
            .is_err()
        {
            assert!(Instant::now() < until, "{name} never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Replica {
            child,
            addr,
            files: [config, log],
            stop: Arc::new(AtomicBool::new(false)),
            roles: Arc::default(),
            errors: Arc::default(),
            workers: Vec::new(),
        }
    }

    /// Starts the clients: each runs `SELECT current_user` in a loop and records the role.
    async fn load(&mut self, db: &TestDb) {
        for _ in 0..CLIENTS {
            let client = connect(self.addr, &db.user, &db.password, &db.name).await;
            let (stop, roles, errors) =
                (self.stop.clone(), self.roles.clone(), self.errors.clone());
            self.workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match client.query_one("SELECT current_user::text", &[]).await {
                        Ok(row) => {
                            let role: String = row.get(0);
                            roles.lock().unwrap().insert(role, Instant::now());
                        }
                        Err(e) => errors.lock().unwrap().push(describe(&e)),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }

    /// Stops the clients and waits for them.
    async fn stop_load(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            worker.await.expect("client task");
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    fn roles(&self) -> BTreeSet<String> {
        self.roles.lock().unwrap().keys().cloned().collect()
    }

    /// The last lines of the process's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.files[1]).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The leases this replica's own audit log says it revoked.
    fn revoked(&self) -> BTreeSet<String> {
        let log = std::fs::read_to_string(&self.files[1]).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains("event=\"revoked\""))
            .filter_map(|line| line.split("lease_id=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|id| id.trim_matches('"').to_owned())
            .collect()
    }

    /// Every role this replica's clients used that is gone was revoked by the replica itself:
    /// no other replica dropped one from under it.
    async fn assert_dropped_only_by_itself(&self, name: &str, admin: &Client) {
        let existing = issued(admin).await;
        let revoked = self.revoked();
        let foreign: Vec<String> = self
            .roles()
            .into_iter()
            .filter(|role| !existing.contains_key(role) && !revoked.contains(role))
            .collect();
        assert!(
            foreign.is_empty(),
            "{name}'s roles {foreign:?} were dropped by someone else\n{name}'s log:\n{}",
            self.log_tail()
        );
    }

    fn assert_no_errors(&self, name: &str) {
        let errors = self.errors();
        assert!(
            errors.is_empty(),
            "{name}'s clients saw {} errors, first {:?}\n{name}'s log:\n{}",
            errors.len(),
            errors.first(),
            self.log_tail()
        );
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Issued roles with the test's prefix: name to (the instance its mark names, seconds until
/// its `VALID UNTIL`, negative once passed).
async fn issued(admin: &Client) -> BTreeMap<String, (String, f64)> {
    let rows = admin
        .query(
            "SELECT rolname::text, shobj_description(oid, 'pg_authid'), \
             extract(epoch FROM rolvaliduntil - now())::float8 \
             FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&format!("{PREFIX}_")],
        )
        .await
        .expect("listing roles");
    rows.iter()
        .map(|row| {
            let comment: Option<String> = row.get(1);
            let instance = comment
                .as_deref()
                .and_then(|c| c.rsplit_once(", instance "))
                .map(|(_, id)| id.to_owned())
                .unwrap_or_default();
            (row.get(0), (instance, row.get(2)))
        })
        .collect()
}

/// The instance that made the roles `seen` (there must be exactly one).
async fn instance_of(admin: &Client, seen: &BTreeSet<String>) -> String {
    let instances: BTreeSet<String> = issued(admin)
        .await
        .into_iter()
        .filter(|(name, _)| seen.contains(name))
        .map(|(_, (instance, _))| instance)
        .collect();
    assert_eq!(instances.len(), 1, "roles {seen:?} marked by {instances:?}");
    instances.into_iter().next().unwrap_or_default()
}

/// Roles marked by `instance`, with seconds until their validity ends.
async fn roles_of(admin: &Client, instance: &str) -> BTreeMap<String, f64> {
    issued(admin)
        .await
        .into_iter()
        .filter(|(_, (i, _))| i == instance)
        .map(|(name, (_, left))| (name, left))
        .collect()
}

/// Whether some session holds the liveness lock of `instance` (16 hex digits).
async fn lock_held(admin: &Client, instance: &str) -> bool {
    admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 1 AND lpad(to_hex(classid::bigint), 8, '0') \
             || lpad(to_hex(objid::bigint), 8, '0') = $1)",
            &[&instance],
        )
        .await
        .expect("pg_locks")
        .get(0)
}

/// A TCP relay to PostgreSQL that the test can cut: while down it closes every connection,
/// established or new. Stands between one replica and its issuer's admin connection.
struct Relay {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let down = Arc::new(AtomicBool::new(false));
        let cut = down.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream_addr()).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = async {
                            while !cut.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Relay { addr, down }
    }
}

/// Waits up to `within` for `done`, failing with `what`.
async fn wait_for<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_cut_each_others_clients_and_a_killed_ones_roles_are_reaped() {
    let db = fresh_db("repl").await;
    let admin = superuser().await;
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
    let mut a = Replica::start(&db, "a", &replica_toml(&db, &direct)).await;
    let mut b = Replica::start(&db, "b", &replica_toml(&db, &relayed)).await;
    a.load(&db).await;
    b.load(&db).await;

    // Both rotate several times, each reaping every second, with no client error on either.
    tokio::time::sleep(Duration::from_secs(22)).await;
    a.assert_no_errors("a");
    b.assert_no_errors("b");
    for (name, replica) in [("a", &a), ("b", &b)] {
        let roles = replica.roles();
        assert!(roles.len() >= 3, "{name} used only {roles:?}");
    }
    assert!(a.roles().is_disjoint(&b.roles()));
    let (a_id, b_id) = (
        instance_of(&admin, &a.roles()).await,
        instance_of(&admin, &b.roles()).await,
    );
    assert_ne!(a_id, b_id);
    assert!(lock_held(&admin, &a_id).await && lock_held(&admin, &b_id).await);

    // b loses its issuer (and with its admin session, its liveness lock) once its superseded
    // leases are gone. It keeps serving on its current role past that role's validity; a's
    // reaper must leave the expired role alone while b's clients use it.
    wait_for(Duration::from_secs(15), "b down to one role", || async {
        roles_of(&admin, &b_id).await.len() == 1
    })
    .await;
    relay.down.store(true, Ordering::SeqCst);
    let (current, left) = roles_of(&admin, &b_id)
        .await
        .into_iter()
        .next()
        .expect("b's current role");
    let expired_for = Duration::from_secs(5);
    tokio::time::sleep(Duration::from_secs_f64(left.max(0.0)) + expired_for).await;
    assert!(
        !lock_held(&admin, &b_id).await,
        "b's admin session outlived the cut"
    );
    let now = roles_of(&admin, &b_id).await;
    assert!(
        now.get(&current).is_some_and(|left| *left < -3.0),
        "b's expired role {current} is gone or was renewed: {now:?}\nb's log:\n{}",
        b.log_tail()
    );
    assert!(
        upstream_count(&admin, &current).await > 0,
        "nobody uses {current}"
    );
    let last_used = b.roles.lock().unwrap().get(&current).copied();
    assert!(
        last_used.is_some_and(|t| t.elapsed() < Duration::from_secs(3)),
        "b's clients are not on {current}"
    );
    a.assert_no_errors("a");
    b.assert_no_errors("b");

    // b is killed outright: its backends end with it, and a reaps what it left.
    b.stop_load().await;
    b.assert_dropped_only_by_itself("b", &admin).await;
    b.child.start_kill().expect("SIGKILL");
    b.child.wait().await.expect("wait");
    let left_behind = roles_of(&admin, &b_id).await;
    assert!(left_behind.contains_key(&current), "{left_behind:?}");
    let last_expiry = left_behind.values().fold(0.0_f64, |m, l| m.max(*l));
    let bound = Duration::from_secs_f64(last_expiry.max(0.0)) + Duration::from_secs(20);
    wait_for(bound, "a reaps the killed b's roles", || async {
        roles_of(&admin, &b_id).await.is_empty()
    })
    .await;

    // a kept rotating, its clients never cut, its own roles never reaped from under them.
    let before = a.roles().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.stop_load().await;
    a.assert_no_errors("a");
    assert!(a.roles().len() > before, "a stopped rotating");
    let pid = a.child.id().expect("pid").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), a.child.wait())
        .await
        .expect("a did not stop after SIGTERM")
        .expect("wait");
    assert!(roles_of(&admin, &a_id).await.is_empty());
    a.assert_dropped_only_by_itself("a", &admin).await;
}
