use std::time::Duration;

use super::family::Family;
use super::*;
use crate::client::instruments::AuthFailure;
use crate::credentials::instruments::Outcome;
use crate::pool::PoolStats;
use crate::pool::waits::WAIT_BOUNDS_MICROS;

fn text(m: &Metrics) -> String {
    String::from_utf8(m.render()).unwrap()
}

#[test]
fn every_written_family_is_exposed_with_its_type() {
    let m = Metrics::new().unwrap();
    let pool = m.pool("appdb", "alice");
    pool.closed(CloseReason::IdleTimeout);
    let lease = m.lease("app");
    lease.rotation(Outcome::Ok);
    lease.lifetime.observe(90.0);
    m.clients().auth_failed(AuthFailure::WrongPassword);
    let out = text(&m);
    for (family, kind) in [
        ("pglease_transaction_duration_seconds", "histogram"),
        ("pglease_query_duration_seconds", "histogram"),
        ("pglease_auth_failures_total", "counter"),
        ("pglease_upstream_connects_total", "counter"),
        ("pglease_upstream_closes_total", "counter"),
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
    ] {
        assert!(
            out.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is not a {kind}:\n{out}"
        );
    }
    assert!(out.contains(r#"pglease_upstream_closes_total{reason="idle_timeout"} 1"#));
    assert!(out.contains(r#"pglease_upstream_closes_total{reason="deadline"} 0"#));
    assert!(out.contains(r#"pglease_lease_rotations_total{credentials="app",result="ok"} 1"#));
    assert!(out.contains(r#"pglease_auth_failures_total{reason="wrong_password"} 1"#));
    assert!(out.contains(&format!(
        "pglease_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn process_figures_are_plausible() {
    let out = text(&Metrics::new().unwrap());
    let value = |name: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("pglease_process_resident_memory_bytes") > 1e6);
    assert!(value("pglease_process_open_fds") >= 3.0);
    let start = value("pglease_process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 86_400.0 && start <= now + 1.0,
        "start {start}, now {now}"
    );
}

#[test]
fn registries_are_independent() {
    let (a, b) = (Metrics::new().unwrap(), Metrics::new().unwrap());
    a.clients().auth_failed(AuthFailure::Timeout);
    assert!(text(&a).contains(r#"pglease_auth_failures_total{reason="timeout"} 1"#));
    assert!(text(&b).contains(r#"pglease_auth_failures_total{reason="timeout"} 0"#));
}

#[test]
fn sqlstate_labels_cannot_be_grown_by_a_peer() {
    let m = Metrics::new().unwrap();
    let clients = m.clients();
    clients.error_sent("57014");
    clients.error_sent("x\"}\nfake 1");
    clients.error_sent("toolong");
    let out = text(&m);
    assert!(out.contains(r#"pglease_client_errors_total{sqlstate="57014"} 1"#));
    assert!(out.contains(r#"pglease_client_errors_total{sqlstate="other"} 2"#));
    assert!(!out.contains("fake"));
}

#[test]
fn the_wait_histogram_is_read_from_the_pool_counts_with_the_latency_buckets() {
    let bounds: Vec<f64> = WAIT_BOUNDS_MICROS
        .iter()
        .map(|us| *us as f64 / 1e6)
        .collect();
    assert_eq!(
        bounds, LATENCY_BUCKETS,
        "the wait buckets are the request-path ones"
    );
    let stats = PoolStats::default();
    stats.record_wait(Duration::from_nanos(300));
    stats.record_wait(Duration::from_micros(40));
    stats.record_wait(Duration::from_millis(2));
    let mut family = Family::histogram("pglease_client_wait_seconds", "waits");
    let labels = [("user", "alice"), ("database", "appdb")];
    scrape::add_waits(&mut family, &labels, &stats);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&[family.done()], &mut out)
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("# TYPE pglease_client_wait_seconds histogram\n"),
        "{out}"
    );
    for line in [
        r#"pglease_client_wait_seconds_bucket{database="appdb",user="alice",le="0.0001"} 2"#,
        r#"pglease_client_wait_seconds_bucket{database="appdb",user="alice",le="0.001"} 2"#,
        r#"pglease_client_wait_seconds_bucket{database="appdb",user="alice",le="0.0025"} 3"#,
        r#"pglease_client_wait_seconds_bucket{database="appdb",user="alice",le="60"} 3"#,
        r#"pglease_client_wait_seconds_bucket{database="appdb",user="alice",le="+Inf"} 3"#,
        r#"pglease_client_wait_seconds_sum{database="appdb",user="alice"} 0.00204"#,
        r#"pglease_client_wait_seconds_count{database="appdb",user="alice"} 3"#,
    ] {
        assert!(out.contains(&format!("{line}\n")), "no {line} in\n{out}");
    }
}
