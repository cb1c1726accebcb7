//! pgbench through the proxy: the standard workloads, simple and extended protocol, in both
//! pool modes, with no failed transaction and never more upstreams than the pool allows.

mod common;

use common::{TestDb, UpstreamSampler, fresh_db, pgbench, proxy_toml, start_proxy, upstream_addr};

const POOL: usize = 10;

/// Creates the pgbench tables directly upstream, so only the benchmark itself goes through
/// the proxy.
async fn bench_db(tag: &str) -> TestDb {
    let db = fresh_db(tag).await;
    let out = pgbench(
        upstream_addr(),
        &db.role,
        db.role_password.expose(),
        &db.name,
    )
    .args(["-i", "-q", "-s", "1"])
    .output()
    .await
    .expect("pgbench runs");
    assert!(
        out.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

/// What one pgbench run reported.
#[derive(Debug)]
struct Run {
    processed: u64,
    failed: u64,
}

/// Runs pgbench against the proxy with `args` and insists that it succeeded.
async fn run(proxy: &pglease::app::Proxy, db: &TestDb, args: &[&str]) -> Run {
    let out = pgbench(proxy.local_addr(), &db.user, &db.password, &db.name)
        .args(args)
        .output()
        .await
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let number_after = |label: &str| -> Option<u64> {
        let rest = stdout.lines().find_map(|line| line.strip_prefix(label))?;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let processed = number_after("number of transactions actually processed:")
        .unwrap_or_else(|| panic!("no transaction count in:\n{stdout}"));
    // Older pgbench versions do not print the line; they abort on any error instead.
    let failed = number_after("number of failed transactions:").unwrap_or(0);
    let result = Run { processed, failed };
    assert!(
        result.processed > 0 && result.failed == 0,
        "pgbench {args:?}: {result:?}\n{stdout}\n{stderr}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_fifty_clients_over_a_pool_of_ten() {
    let db = bench_db("select").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", POOL, "")).await;
    let sampler = UpstreamSampler::start(&db.role).await;
    run(&proxy, &db, &["-n", "-S", "-c", "50", "-j", "2", "-T", "5"]).await;
    let samples = sampler.finish().await;
    assert!(samples.taken >= 10, "sampler barely ran: {samples:?}");
    assert!(
        samples.max <= POOL as i64,
        "pool limit exceeded: {samples:?}"
    );
    assert!(samples.max >= 2, "upstreams never overlapped: {samples:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_in_transaction_mode() {
    let db = bench_db("tpcb").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", POOL, "")).await;
    let sampler = UpstreamSampler::start(&db.role).await;
    run(&proxy, &db, &["-n", "-c", "20", "-j", "2", "-T", "5"]).await;
    let samples = sampler.finish().await;
    assert!(
        samples.max <= POOL as i64,
        "pool limit exceeded: {samples:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_extended_protocol_in_transaction_mode() {
    let db = bench_db("extended").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", POOL, "")).await;
    run(
        &proxy,
        &db,
        &["-n", "-M", "extended", "-c", "20", "-j", "2", "-T", "5"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_in_session_mode() {
    let db = bench_db("session").await;
    let proxy = start_proxy(&proxy_toml(&db, "session", POOL, "")).await;
    let sampler = UpstreamSampler::start(&db.role).await;
    run(&proxy, &db, &["-n", "-c", "10", "-j", "2", "-T", "5"]).await;
    run(
        &proxy,
        &db,
        &["-n", "-M", "extended", "-c", "10", "-j", "2", "-T", "3"],
    )
    .await;
    let samples = sampler.finish().await;
    assert!(
        samples.max <= POOL as i64,
        "pool limit exceeded: {samples:?}"
    );
}

/// Named prepared statements in transaction mode: pgbench prepares each statement once per
/// connection and then only binds it, over whichever of four upstreams serves the next
/// transaction. Any client whose statement is missing there aborts, which fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_prepared_protocol_in_transaction_mode() {
    const SMALL_POOL: usize = 4;
    let db = bench_db("prepared").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", SMALL_POOL, "")).await;
    let sampler = UpstreamSampler::start(&db.role).await;
    run(
        &proxy,
        &db,
        &["-n", "-M", "prepared", "-c", "20", "-j", "2", "-T", "5"],
    )
    .await;
    let samples = sampler.finish().await;
    assert!(
        samples.max <= SMALL_POOL as i64,
        "pool limit exceeded: {samples:?}"
    );
}
