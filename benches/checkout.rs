//! The pool's checkout and return, per transaction: what a transaction-mode client pays to
//! get an upstream and give it back, with no bytes exchanged on it.
//!
//! The pool's connections are real logins, so the bench starts its own throwaway
//! PostgreSQL (initdb and pg_ctl from the PostgreSQL install, run as `postgres` when root,
//! the same cluster the integration tests use) and a pool on it with static credentials.
//! Two cases: `free`, one task and an idle upstream always free (the hot path), and
//! `contended`, more tasks than upstreams on a two-worker runtime, each holding its upstream
//! across a yield so the others queue for it. Each reports time per checkout and return.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pglease::credentials::static_source::StaticSource;
use pglease::credentials::{Credentials, Lifecycle};
use pglease::dev::cluster::{Cluster, ClusterOptions};
use pglease::pool::{Pool, PoolInstruments, PoolSettings};
use pglease::secret::Secret;
use pglease::upstream::{UpstreamTarget, UpstreamTls};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The role the pool logs in as.
const ROLE: &str = "bench_checkout";
const ROLE_PASSWORD: &str = "bench-checkout-password";

/// Upstreams in the contended pool, and the tasks that share them.
const CONTENDED_SIZE: usize = 2;
const CONTENDED_TASKS: usize = 8;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Creates the role the pool logs in as.
async fn create_role(cluster: &Cluster) {
    let url = cluster.url("postgres");
    let (client, conn) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
        .await
        .expect("superuser connection to the bench cluster");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"
        ))
        .await
        .expect("CREATE ROLE");
}

/// A pool of `size` on `cluster`, its static lease published, every upstream logged in.
async fn pool(
    cluster: &Cluster,
    size: usize,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Pool {
    let source = StaticSource::new(ROLE.to_owned(), Secret::from(ROLE_PASSWORD));
    let life = Lifecycle {
        rotate_at: 0.9,
        safety_margin: None,
        renew: false,
        max_ttl: None,
    };
    let (credentials, rotator) = Credentials::new("bench", Arc::new(source), life);
    rotator.start(None, tasks, stop.clone());
    let target = UpstreamTarget {
        host: cluster.host().to_owned(),
        port: cluster.port(),
        dbname: "postgres".to_owned(),
        application_name: "pglease-bench".to_owned(),
        connect_timeout: Duration::from_secs(10),
        database: "postgres".to_owned(),
        tls: UpstreamTls::default(),
    };
    let settings = PoolSettings {
        size,
        wait_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(3600),
        min_size: 0,
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
        lifetime: None,
    };
    let pool = Pool::new(target, credentials, settings, PoolInstruments::default());
    // Open every upstream now, so no login is timed.
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        held.push(pool.checkout().await.expect("a login to the bench cluster"));
    }
    drop(held);
    pool
}

fn bench(c: &mut Criterion) {
    let cluster = Cluster::start(ClusterOptions::default()).expect("a throwaway PostgreSQL");
    let rt = runtime();
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    rt.block_on(create_role(&cluster));
    let free = rt.block_on(pool(&cluster, 1, &tasks, &stop));
    let contended = rt.block_on(pool(&cluster, CONTENDED_SIZE, &tasks, &stop));

    let mut g = c.benchmark_group("checkout");
    g.bench_function("free", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    drop(free.checkout().await.expect("checkout"));
                }
                started.elapsed()
            })
        })
    });
    g.bench_function("contended", |b| {
        b.iter_custom(|iters| {
            let each = iters.div_ceil(CONTENDED_TASKS as u64);
            rt.block_on(async {
                let started = Instant::now();
                let runs: Vec<_> = (0..CONTENDED_TASKS)
                    .map(|_| {
                        let pool = contended.clone();
                        tokio::spawn(async move {
                            for _ in 0..each {
                                let up = pool.checkout().await.expect("checkout");
                                tokio::task::yield_now().await;
                                drop(up);
                            }
                        })
                    })
                    .collect();
                for run in runs {
                    run.await.expect("a bench task");
                }
                // Per checkout: the tasks ran `each` apiece.
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (each * CONTENDED_TASKS as u64) as f64)
            })
        })
    });
    g.finish();

    free.close();
    contended.close();
    stop.cancel();
    tasks.close();
    rt.block_on(tasks.wait());
    drop(cluster);
}

criterion_group!(benches, bench);
criterion_main!(benches);
