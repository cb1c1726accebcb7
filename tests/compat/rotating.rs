//! The compatibility programs while leases rotate every few seconds: the embedded issuer
//! hands out roles that live 8 s and are replaced after about 2.4 s, and each program runs
//! again and again until at least three issued roles have served it, so its checks ran
//! across rotations. Every run must pass, as without rotation. The programs and their
//! transaction-mode list are those of the plain runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::common::{
    TestDb, cluster, connect, fresh_db, pooled_toml, start_proxy, superuser, upstream_addr,
};
use super::{Driver, Mode, SESSION_POOL, TRANSACTION_POOL, Target, run_program};

/// Rotations every few seconds starve each other on a two-core machine: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Checks left out while leases rotate, beyond the mode's own list: none (session moves and
/// the transaction-mode listener hand notifications over to the new lease). Add a name here
/// to leave its check out of the rotating runs.
const NOT_YET_WHILE_LEASES_ROTATE: &[&str] = &[];

/// Issued roles that must have served the runs: two rotations at least.
const ROLES_WANTED: usize = 3;

/// How long to keep starting runs while waiting for enough rotations (generous: a lease is
/// replaced every 2.4 s).
const RUN_FOR_AT_MOST: Duration = Duration::from_secs(90);

/// Tables the programs create, dropped between runs so each run starts from an empty database.
const PROGRAM_TABLES: &str = "ns, pl, pl_queue, pl_wire, cp, uq, rb";

/// The issuer config: short leases, owned objects kept by the database's owner (`act_as`), so
/// a table made on one lease is there on the next.
fn issuer_toml(db: &TestDb, prefix: &str, mode: Mode) -> String {
    let source = format!(
        r#"source = "issuer"
admin_url = "{admin}"
member_of = ["{role}"]
act_as = "{role}"
prefix = "{prefix}"
ttl = "8s"
max_ttl = "30s"
rotate_at = 0.3
safety_margin = "3s""#,
        admin = cluster().url(&db.name).expose(),
        role = db.role,
    );
    let pool = match mode {
        Mode::Transaction => TRANSACTION_POOL,
        Mode::Direct | Mode::Session => SESSION_POOL,
    };
    pooled_toml(db, mode.as_str(), pool, "", "rotating", &source)
}

/// Every issued role seen logged in so far.
type Seen = Arc<std::sync::Mutex<BTreeSet<String>>>;

/// Collects, in the background, every issued role seen logged in, until `stop`.
async fn watch_roles(prefix: &str, seen: Seen, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let admin = superuser().await;
    let pattern = format!("{prefix}_");
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let rows = admin
                .query(
                    "SELECT DISTINCT usename::text FROM pg_stat_activity \
                     WHERE starts_with(usename::text, $1)",
                    &[&pattern],
                )
                .await
                .expect("sampling pg_stat_activity");
            let names = rows.iter().map(|r| r.get::<_, String>(0));
            seen.lock().expect("role set poisoned").extend(names);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// How many issued roles have been seen.
fn count(seen: &Seen) -> usize {
    seen.lock().expect("role set poisoned").len()
}

/// Runs `driver`'s program through a rotating proxy in `mode` until enough leases served it.
pub(super) async fn check_rotating(driver: Driver, mode: Mode) {
    let _turn = ONE_AT_A_TIME.lock().await;
    // Issuer prefixes are at most 20 bytes.
    let prefix = format!("rot_{}_{}", driver.short(), &mode.as_str()[..1]);
    let db = fresh_db(&prefix).await;
    let admin = superuser().await;
    // The cancel check's watcher reads another lease's query in pg_stat_activity.
    admin
        .batch_execute(&format!("GRANT pg_read_all_stats TO \"{}\"", db.role))
        .await
        .expect("GRANT pg_read_all_stats");
    let in_db = connect(
        upstream_addr(),
        &db.role,
        db.role_password.expose(),
        &db.name,
    )
    .await;
    let proxy = start_proxy(&issuer_toml(&db, &prefix, mode)).await;
    let target = Target {
        addr: proxy.local_addr(),
        user: db.user.clone(),
        password: db.password.clone(),
        dbname: db.name.clone(),
    };
    let (seen, stop) = (Seen::default(), Arc::new(AtomicBool::new(false)));
    let watcher = watch_roles(&prefix, seen.clone(), stop.clone()).await;
    let (mut runs, started) = (0, Instant::now());
    while runs == 0 || (count(&seen) < ROLES_WANTED && started.elapsed() < RUN_FOR_AT_MOST) {
        runs += 1;
        in_db
            .batch_execute(&format!("DROP TABLE IF EXISTS {PROGRAM_TABLES}"))
            .await
            .expect("dropping the previous run's tables");
        run_program(driver, mode, &target, NOT_YET_WHILE_LEASES_ROTATE).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("role watcher panicked");
    let seen = seen.lock().expect("role set poisoned").clone();
    assert!(
        seen.len() >= ROLES_WANTED,
        "{driver:?} in {mode:?} mode: {runs} runs saw only {} issued roles: {seen:?}",
        seen.len()
    );
    println!(
        "{driver:?} in {mode:?} mode: {runs} runs over {} issued roles",
        seen.len()
    );
    proxy.shutdown().await;
}
