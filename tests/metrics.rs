//! `/metrics` on the admin endpoint, end to end: scraped while clients run transactions, the
//! families are there with their types, and the counters move for what happened (failed
//! logins, transactions, queries, bytes, logins upstream, a rotation), while no secret ever
//! reaches the text.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::http::{get, sample};
use common::*;
use pglease::app::Proxy;

const ADMIN: &str = "admin_listen = \"127.0.0.1:0\"";

async fn scrape(proxy: &Proxy) -> String {
    let reply = get(proxy.admin_addr().expect("admin endpoint"), "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "not the Prometheus text format"
    );
    reply.body
}

/// The value of `series`, which must be in `body`.
fn value(body: &str, series: &str) -> f64 {
    sample(body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_under_load_show_every_family_and_counters_that_move() {
    let db = fresh_db("metrics_load").await;
    let proxy = start_proxy(&proxy_toml(&db, "transaction", 2, ADMIN)).await;
    let addr = proxy.local_addr();
    let pool = format!("database=\"{}\",user=\"{}\"", db.name, db.user);

    let refused = try_connect(addr, &db.user, "not-the-password", &db.name).await;
    assert!(refused.is_err(), "a wrong password logged in");

    let before = scrape(&proxy).await;
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    const CLIENTS: usize = 4;
    const EACH: usize = 50;
    for _ in 0..CLIENTS {
        let client = connect(addr, &db.user, &db.password, &db.name).await;
        load.push(tokio::spawn(async move {
            for _ in 0..EACH {
                client
                    .simple_query("SELECT 1")
                    .await
                    .expect("query under load");
            }
        }));
    }
    let scraper = {
        let running = running.clone();
        let admin = proxy.admin_addr().unwrap();
        tokio::spawn(async move {
            let mut scrapes = 0;
            while running.load(Ordering::Relaxed) {
                let reply = get(admin, "/metrics").await;
                assert_eq!(reply.status, 200, "a scrape under load failed");
                scrapes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            scrapes
        })
    };
    for task in load {
        task.await.expect("load task");
    }
    running.store(false, Ordering::Relaxed);
    assert!(scraper.await.unwrap() > 0, "no scrape ran during the load");
    let after = scrape(&proxy).await;

    for (family, kind) in [
        ("pglease_client_connections", "gauge"),
        ("pglease_upstream_connections", "gauge"),
        ("pglease_client_wait_seconds", "histogram"),
        ("pglease_transactions_total", "counter"),
        ("pglease_queries_total", "counter"),
        ("pglease_transaction_duration_seconds", "histogram"),
        ("pglease_query_duration_seconds", "histogram"),
        ("pglease_bytes_received_total", "counter"),
        ("pglease_bytes_sent_total", "counter"),
        ("pglease_auth_failures_total", "counter"),
        ("pglease_upstream_connects_total", "counter"),
        ("pglease_upstream_closes_total", "counter"),
        ("pglease_client_errors_total", "counter"),
        ("pglease_lease_generation", "gauge"),
        ("pglease_lease_seconds_to_cliff", "gauge"),
        ("pglease_lease_issued_total", "counter"),
        ("pglease_lease_rotations_total", "counter"),
        ("pglease_lease_renewals_total", "counter"),
        ("pglease_lease_revocations_total", "counter"),
        ("pglease_lease_deadline_closes_total", "counter"),
        ("pglease_lease_drain_seconds", "histogram"),
        ("pglease_lease_lifetime_seconds", "histogram"),
        ("pglease_source_errors_total", "counter"),
        ("pglease_build_info", "gauge"),
        ("pglease_process_start_time_seconds", "gauge"),
        ("pglease_process_resident_memory_bytes", "gauge"),
        ("pglease_process_open_fds", "gauge"),
        ("pglease_ready", "gauge"),
    ] {
        assert!(
            after.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is not exposed as a {kind}:\n{after}"
        );
    }

    let moved = |series: &str| value(&after, series) - sample(&before, series).unwrap_or(0.0);
    let done = (CLIENTS * EACH) as f64;
    assert_eq!(
        value(
            &after,
            "pglease_auth_failures_total{reason=\"wrong_password\"}"
        ),
        1.0,
        "the failed login is not counted"
    );
    assert!(moved(&format!("pglease_transactions_total{{{pool}}}")) >= done);
    assert!(moved(&format!("pglease_queries_total{{{pool}}}")) >= done);
    assert!(
        moved(&format!(
            "pglease_transaction_duration_seconds_count{{{pool}}}"
        )) >= done
    );
    assert!(moved(&format!("pglease_query_duration_seconds_count{{{pool}}}")) >= done);
    assert!(moved(&format!("pglease_client_wait_seconds_count{{{pool}}}")) >= done);
    // Each `SELECT 1` is a 14-byte Query one way and a few dozen bytes of reply the other.
    assert!(moved(&format!("pglease_bytes_received_total{{{pool}}}")) >= 14.0 * done);
    assert!(moved(&format!("pglease_bytes_sent_total{{{pool}}}")) >= 30.0 * done);
    assert!(value(&after, "pglease_upstream_connects_total{result=\"ok\"}") >= 1.0);
    assert_eq!(
        value(
            &after,
            "pglease_upstream_connects_total{result=\"refused\"}"
        ),
        0.0
    );
    let up = |state: &str| {
        value(
            &after,
            &format!(
                "pglease_upstream_connections{{database=\"{}\",state=\"{state}\",user=\"{}\"}}",
                db.name, db.user
            ),
        )
    };
    assert!(
        up("idle") >= 1.0 && up("idle") + up("active") <= 2.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "pglease_lease_generation{credentials=\"upstream\"}"),
        1.0
    );
    assert_eq!(value(&after, "pglease_ready"), 1.0);
    assert_no_secret(&after, &[&db.password, db.role_password.expose()]);
    proxy.shutdown().await;
}

/// Neither any of `secrets` nor anything that looks like a SCRAM verifier is in `body`.
fn assert_no_secret(body: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!body.contains(secret), "a secret reached /metrics");
    }
    assert!(
        !body.contains("SCRAM-SHA-256$"),
        "a verifier reached /metrics"
    );
}

/// What a test keeps of a lease.
struct Leased {
    id: String,
    username: String,
    password: String,
}

impl Leased {
    fn of(lease: &pglease::credentials::Lease) -> Leased {
        Leased {
            id: lease.id.clone(),
            username: lease.username.clone(),
            password: lease.password.expose().to_owned(),
        }
    }
}

fn issuer_toml(db: &TestDb, prefix: &str) -> String {
    let source = format!(
        r#"source = "issuer"
admin_url = "{admin}"
member_of = ["{role}"]
prefix = "{prefix}"
ttl = "5m"
max_ttl = "10m""#,
        admin = cluster().url(&db.name).expose(),
        role = db.role,
    );
    pooled_toml(db, "transaction", 2, ADMIN, "rotating", &source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_moves_the_lease_metrics() {
    let db = fresh_db("metrics_rotation").await;
    let proxy = start_proxy(&issuer_toml(&db, "mrot")).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    client.simple_query("SELECT 1").await.expect("first query");
    // Only copies: a held `Arc<Lease>` counts as a connection still using it.
    let first = Leased::of(&creds.current().expect("a lease"));
    let series = |name: &str| format!("{name}{{credentials=\"rotating\"}}");
    let result = |name: &str, r: &str| format!("{name}{{credentials=\"rotating\",result=\"{r}\"}}");
    let before = scrape(&proxy).await;
    assert!(before.contains("# TYPE pglease_lease_expiry_timestamp_seconds gauge\n"));
    assert_eq!(value(&before, &series("pglease_lease_generation")), 1.0);
    assert_eq!(value(&before, &series("pglease_lease_issued_total")), 1.0);
    let cliff = value(&before, &series("pglease_lease_seconds_to_cliff"));
    assert!(
        cliff > 200.0 && cliff <= 300.0,
        "a 5m lease is {cliff}s from its cliff"
    );
    let expiry = value(&before, &series("pglease_lease_expiry_timestamp_seconds"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - now - 300.0).abs() < 30.0,
        "expiry {expiry}, now {now}"
    );

    creds.rotate_now();
    // Traffic moves the pool onto the new lease; the old one drains and is revoked.
    let until = Instant::now() + Duration::from_secs(30);
    let after = loop {
        client
            .simple_query("SELECT 1")
            .await
            .expect("query during rotation");
        let body = scrape(&proxy).await;
        if sample(&body, &result("pglease_lease_revocations_total", "ok")) >= Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < until,
            "the old lease was never revoked:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&after, &series("pglease_lease_generation")), 2.0);
    assert_eq!(value(&after, &series("pglease_lease_issued_total")), 2.0);
    assert_eq!(
        value(&after, &result("pglease_lease_rotations_total", "ok")),
        1.0
    );
    assert_eq!(
        value(&after, &result("pglease_lease_rotations_total", "failed")),
        0.0
    );
    assert_eq!(
        value(&after, &result("pglease_lease_revocations_total", "failed")),
        0.0
    );
    assert_eq!(
        value(&after, &series("pglease_lease_lifetime_seconds_count")),
        1.0
    );
    assert_eq!(
        value(&after, &series("pglease_lease_drain_seconds_count")),
        1.0
    );
    assert!(
        value(
            &after,
            "pglease_upstream_closes_total{reason=\"lease_retired\"}"
        ) >= 1.0
    );

    let second = Leased::of(&creds.current().expect("a lease"));
    assert_ne!(first.username, second.username);
    for lease in [&first, &second] {
        assert!(
            !after.contains(&lease.username),
            "a role name reached /metrics"
        );
        assert!(!after.contains(&lease.id), "a lease id reached /metrics");
    }
    let admin_password = cluster_password();
    assert_no_secret(
        &after,
        &[
            &db.password,
            &first.password,
            &second.password,
            &admin_password,
        ],
    );
    // By now every family has samples (the histograms of a drained, revoked lease too; a
    // refused login gives the error counters theirs), so what the shipped dashboard and
    // alert rules query can be checked against the real text.
    try_connect(proxy.local_addr(), &db.user, "not-the-password", &db.name)
        .await
        .expect_err("a wrong password is refused");
    let after = scrape(&proxy).await;
    let missing = queried_but_not_exported(&after);
    assert!(
        missing.is_empty(),
        "deploy/ queries series pglease does not export: {missing:?}"
    );
    proxy.shutdown().await;
}

/// The `pglease_*` series the Grafana dashboard and the alert rules use that `body` (a
/// scrape) has no family for.
fn queried_but_not_exported(body: &str) -> Vec<String> {
    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut missing = Vec::new();
    for file in [
        "deploy/grafana/dashboards/pglease.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("pglease_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..len];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| exported.contains(f))
                .unwrap_or(name);
            // Job and dashboard names (`pglease_…` as a word in prose) are not series.
            let series_like = name.len() > "pglease_".len() && !name.ends_with('_');
            if series_like && !exported.contains(family) && !missing.contains(&name.to_owned()) {
                missing.push(name.to_owned());
            }
            rest = &tail[len..];
        }
    }
    missing
}
