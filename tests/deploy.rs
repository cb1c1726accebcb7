//! Static validation of the packaging in `docker/` and `deploy/`, since no container engine or
//! cluster runs here: Prometheus' own `promtool` checks the alert rules (syntax, and their unit
//! tests in `alerts_test.yml`), the Prometheus config and every dashboard query; the
//! dashboard's structure, the Kubernetes manifests, the compose file, the systemd unit and the
//! Dockerfile are checked for the facts the deployment depends on; the pglease configs they
//! carry load; and every `pglease_*` metric they use is one pglease exports. The compose
//! stack's database setup and config also run for real against the suite's PostgreSQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

mod common;

#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/dashboard.rs"]
mod dashboard;
#[path = "deploy/kubernetes.rs"]
mod kubernetes;
#[path = "deploy/stack.rs"]
mod stack;

/// A file of the repository, by its path from the root.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file.
fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `promtool` with `args`; panics with its output when it fails, and with the package to
/// install when it is not there (a missing tool is a failure, never a skip).
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package \
             (`apt-get install prometheus`, as .ci/run does)"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The metric families pglease exports (issue 14's list), each with whether it is a
/// histogram (and so is queried through `_bucket`, `_sum` and `_count`).
///
/// Kept in this one function so it can become a scrape of a running proxy's `/metrics`.
fn exported_metrics() -> Vec<(&'static str, bool)> {
    const COUNTERS_AND_GAUGES: &[&str] = &[
        "pglease_client_connections",
        "pglease_upstream_connections",
        "pglease_transactions_total",
        "pglease_queries_total",
        "pglease_bytes_received_total",
        "pglease_bytes_sent_total",
        "pglease_auth_failures_total",
        "pglease_upstream_connects_total",
        "pglease_upstream_closes_total",
        "pglease_client_errors_total",
        "pglease_lease_expiry_timestamp_seconds",
        "pglease_lease_generation",
        "pglease_lease_seconds_to_cliff",
        "pglease_lease_issued_total",
        "pglease_lease_rotations_total",
        "pglease_lease_renewals_total",
        "pglease_lease_revocations_total",
        "pglease_lease_deadline_closes_total",
        "pglease_source_errors_total",
        "pglease_build_info",
        "pglease_process_start_time_seconds",
        "pglease_process_resident_memory_bytes",
        "pglease_process_open_fds",
        "pglease_ready",
    ];
    const HISTOGRAMS: &[&str] = &[
        "pglease_client_wait_seconds",
        "pglease_transaction_duration_seconds",
        "pglease_query_duration_seconds",
        "pglease_lease_drain_seconds",
        "pglease_lease_lifetime_seconds",
    ];
    let plain = COUNTERS_AND_GAUGES.iter().map(|&n| (n, false));
    plain.chain(HISTOGRAMS.iter().map(|&n| (n, true))).collect()
}

/// Every `pglease_*` name in `text` (PromQL), as written.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pglease_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// The names in `used` that are no series pglease exports.
fn unknown_metrics(used: &BTreeSet<String>) -> Vec<String> {
    let mut series = BTreeSet::new();
    for (name, histogram) in exported_metrics() {
        series.insert(name.to_owned());
        if histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        }
    }
    used.difference(&series).cloned().collect()
}

/// The `expr` of every rule in the alert rules file.
fn alert_expressions() -> Vec<(String, String)> {
    let docs = yaml("deploy/prometheus/alerts.yml");
    let mut exprs = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_owned();
            exprs.push((name, rule["expr"].as_str().expect("expr").to_owned()));
        }
    }
    exprs
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests_pass() {
    let rules = repo("deploy/prometheus/alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().expect("utf-8 path")]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = repo("deploy/prometheus/alerts_test.yml");
    promtool(&["test", "rules", tests.to_str().expect("utf-8 path")]);
}

#[test]
fn promtool_accepts_the_prometheus_config_with_its_rule_file() {
    let config = repo("deploy/prometheus/prometheus.yml");
    let out = promtool(&["check", "config", config.to_str().expect("utf-8 path")]);
    assert!(
        out.contains("1 rule files found"),
        "alerts.yml not loaded:\n{out}"
    );
}

#[test]
fn the_alerts_cover_each_failure_the_operators_watch_for() {
    let names: BTreeSet<String> = alert_expressions().into_iter().map(|(n, _)| n).collect();
    for wanted in [
        "PgleaseLeaseNearCliff",
        "PgleaseRotationFailing",
        "PgleaseSourceErrors",
        "PgleaseIssuanceRateHigh",
        "PgleaseClientsWaiting",
        "PgleaseAuthFailureSpike",
        "PgleaseDeadlineCloses",
    ] {
        assert!(names.contains(wanted), "no {wanted} alert in {names:?}");
    }
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let mut used = BTreeSet::new();
    for (_, expr) in alert_expressions() {
        used.extend(metric_names(&expr));
    }
    for (_, expr) in dashboard::expressions() {
        used.extend(metric_names(&expr));
    }
    let unknown = unknown_metrics(&used);
    assert!(unknown.is_empty(), "not exported by pglease: {unknown:?}");
    // The names themselves are read right: a histogram is queried through its buckets.
    assert!(
        used.contains("pglease_transaction_duration_seconds_bucket"),
        "{used:?}"
    );
}

#[test]
fn the_metric_name_reader_finds_whole_names_only() {
    let names = metric_names(
        "sum(rate(pglease_transactions_total{database=~\"x\"}[5m])) / job:pglease_x + \
         pglease_lease_generation",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["pglease_lease_generation", "pglease_transactions_total"]
    );
    let used = BTreeSet::from(["pglease_made_up_total".to_owned()]);
    assert_eq!(unknown_metrics(&used), ["pglease_made_up_total"]);
}
