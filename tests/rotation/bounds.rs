//! What a rotation under steady load may cost: never more upstream backends than `pool_size`
//! plus the ready replacements the README allows (a quarter of the pool, at least one, the
//! proving login among them), and no login on a client's path, also when rotations are
//! requested faster than the previous one drains.
//!
//! "No client waits for a login" is checked by counting, not by timing: the pool counts the
//! logins it makes while handing a connection out ([`pglease::pool::Pool::checkout_logins`]).
//! Once the pool is full that count must not move, whatever the rotations do, because every
//! replacement logs in on the pool's background task. A latency bound would instead depend on
//! how fast a login is on a busy 2-core machine, and either flake or prove nothing.

use super::*;

const POOL: usize = 8;

/// Backends logged in as any role issued with `prefix`, old and new leases alike.
async fn issued_backends(admin: &tokio_postgres::Client, prefix: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE starts_with(usename::text, $1)",
            &[&format!("{prefix}_")],
        )
        .await
        .expect("counting issued backends")
        .get(0)
}

/// Samples [`issued_backends`] every 20 ms until `stop` is set; returns (maximum, samples).
fn sample_backends(prefix: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(i64, u32)> {
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        let admin = superuser().await;
        let (mut max, mut taken) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            max = max.max(issued_backends(&admin, &prefix).await);
            taken += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (max, taken)
    })
}

/// Clients running one short transaction after another until `stop` is set.
async fn steady_load(
    proxy: &pglease::app::Proxy,
    db: &TestDb,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut workers = Vec::new();
    for id in 0..clients {
        let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let sql = "BEGIN; SELECT current_user; SELECT pg_sleep(0.002); COMMIT";
                if let Err(e) = client.batch_execute(sql).await {
                    panic!("client {id} saw an error during rotation: {}", describe(&e));
                }
                done += 1;
            }
            done
        }));
    }
    workers
}

/// Asks for a rotation and waits until its lease is published.
async fn rotate(creds: &pglease::credentials::Credentials) {
    let published = creds.generation();
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(30);
    while creds.generation() == published {
        assert!(Instant::now() < until, "no rotation: {:?}", creds.state());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every superseded lease is drained and revoked: only the current role is left.
async fn wait_for_one_role(
    admin: &tokio_postgres::Client,
    prefix: &str,
    creds: &pglease::credentials::Credentials,
) {
    let until = Instant::now() + Duration::from_secs(30);
    while prefixed_roles(admin, prefix).await.len() > 1 {
        assert!(
            Instant::now() < until,
            "superseded leases did not drain: {:?}",
            creds.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_load_stay_within_the_pool_bound_and_off_the_clients_path() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("bound").await;
    let admin = superuser().await;
    let prefix = "bndx";
    // Leases that only rotate when asked, so the test decides when.
    let toml = issuer_toml(&db, prefix, "transaction")
        .replace("pool_size = 4", &format!("pool_size = {POOL}"))
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let pool = proxy
        .shared()
        .pool(&db.name, &db.user)
        .expect("the pool")
        .pool
        .clone();

    // Fill the pool first (these logins are the pool growing, on the clients' path), so
    // that any later checkout login can only be a rotation's.
    let mut holders = Vec::new();
    for _ in 0..POOL {
        let c = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
        c.batch_execute("BEGIN; SELECT 1").await.expect("begin");
        holders.push(c);
    }
    for c in &holders {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    drop(holders);
    assert_eq!(pool.status().0, POOL, "the pool did not fill");
    let filled = pool.checkout_logins();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_backends(prefix, stop.clone());
    let workers = steady_load(&proxy, &db, 2 * POOL, &stop).await;
    // Two rotations, each drained before the next...
    for _ in 0..2 {
        rotate(&creds).await;
        wait_for_one_role(&admin, prefix, &creds).await;
    }
    // ...then three requested back to back, each as soon as the previous one is published,
    // while its drain is still under way (as an operator repeating ROTATE would).
    for _ in 0..3 {
        rotate(&creds).await;
    }
    wait_for_one_role(&admin, prefix, &creds).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    for w in workers {
        done += w.await.expect("a client task failed");
    }
    let (max, taken) = sampler.await.expect("sampler");

    assert!(done > 100, "too little traffic to prove anything: {done}");
    assert!(taken > 20, "too few samples to prove anything: {taken}");
    let bound = (POOL + (POOL / 4).max(1)) as i64;
    assert!(
        max <= bound,
        "{max} backends at once; pool_size {POOL} allows at most {bound}"
    );
    assert_eq!(
        pool.checkout_logins() - filled,
        0,
        "clients waited for logins during the rotations"
    );
    assert_eq!(
        pool.status().0,
        POOL,
        "the pool shrank during the rotations"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_replacement_unused_for_idle_timeout_is_closed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("stale").await;
    let admin = superuser().await;
    // A pool of one, so the replacement cannot move into the pool as an idle connection.
    let toml = issuer_toml(&db, "stlx", "session")
        .replace("pool_size = 4", "pool_size = 1")
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"")
        .replace(
            "shutdown_timeout",
            "idle_timeout = \"1s\"\nshutdown_timeout",
        );
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    // A session pinned to its lease by a temporary table: it hands back every replacement
    // it is offered, so the one kept ready for it would wait for nobody.
    let pinned = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .expect("temp table");
    rotate(&creds).await;
    let new_role = creds.state().username.expect("the new lease");

    // Replacements may come and go, but none may stay ready past idle_timeout (plus the
    // background task's tick and a busy machine's slack).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM max(now() - backend_start)), 0)::float8 \
             FROM pg_stat_activity WHERE usename = $1",
            &[&new_role],
        )
        .await
        .expect("backend ages");
    let (ready, age): (i64, f64) = (row.get(0), row.get(1));
    assert!(ready >= 1, "no replacement is ready for the pinned session");
    assert!(
        age < 3.0,
        "a replacement on the new lease stayed ready for {age:.1} s; idle_timeout is 1 s"
    );
    first_value(&pinned, "SELECT count(*) FROM scratch").await;
    proxy.shutdown().await;
}
