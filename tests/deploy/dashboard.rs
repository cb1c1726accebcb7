//! The Grafana dashboard (`deploy/grafana/dashboards/pglease.json`) and its provisioning: it
//! loads, its panels are well formed and query the provisioned datasource, every query is
//! valid PromQL, and it shows what an operator needs (pools, waits, TPS, latency, leases).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{promtool, read, yaml};

const DASHBOARD: &str = "deploy/grafana/dashboards/pglease.json";

fn load() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The panels that draw data (rows only group them).
fn data_panels(dashboard: &Value) -> Vec<&Value> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels.iter().filter(|p| p["type"] != "row").collect()
}

/// Every query of every panel, with the panel's title.
pub fn expressions() -> Vec<(String, String)> {
    let dashboard = load();
    let mut exprs = Vec::new();
    for panel in data_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((title.clone(), expr.to_owned()));
            }
        }
    }
    exprs
}

/// The uid of the datasource Grafana is provisioned with.
fn provisioned_uid() -> String {
    let docs = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let sources = docs[0]["datasources"].as_vec().expect("datasources");
    assert_eq!(sources.len(), 1, "one datasource");
    assert_eq!(sources[0]["type"].as_str(), Some("prometheus"));
    sources[0]["uid"]
        .as_str()
        .expect("datasource uid")
        .to_owned()
}

#[test]
fn panels_have_unique_ids_targets_and_the_provisioned_datasource() {
    let dashboard = load();
    let uid = provisioned_uid();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let pos = &panel["gridPos"];
        let (x, w) = (pos["x"].as_u64().expect("x"), pos["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24 && pos["h"].as_u64().is_some_and(|h| h > 0),
            "{pos}"
        );
    }
    for panel in data_panels(&dashboard) {
        let title = panel["title"].as_str().expect("panel title");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "{title}");
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "{title}"
            );
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title} has an empty query");
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        assert_eq!(var["datasource"]["uid"], uid.as_str(), "{var}");
    }
}

#[test]
fn the_dashboard_is_provisioned_from_the_folder_compose_mounts() {
    let docs = yaml("deploy/grafana/provisioning/dashboards/pglease.yml");
    let providers = docs[0]["providers"].as_vec().expect("providers");
    let path = providers[0]["options"]["path"].as_str().expect("path");
    let compose = read("deploy/compose/docker-compose.yml");
    assert!(
        compose.contains(&format!("../grafana/dashboards:{path}")),
        "compose does not mount the dashboards at {path}"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses rule files: each query becomes a recording rule, with Grafana's
    // variables replaced by what Grafana would put there.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in expressions().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$database", ".*")
            .replace("$credentials", ".*");
        let quoted = serde_json::to_string(&expr).expect("json string");
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:q{i}\n"
        ));
        rules.push_str(&format!("        expr: {quoted}\n"));
    }
    let path = std::env::temp_dir().join(format!("pglease-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, rules).expect("temp rules file");
    let result = std::panic::catch_unwind(|| {
        promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    });
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_dashboard_shows_pools_waits_tps_latency_and_leases() {
    let exprs: Vec<String> = expressions().into_iter().map(|(_, e)| e).collect();
    let uses = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    for needle in [
        "pglease_client_connections",
        "pglease_upstream_connections",
        "pglease_client_wait_seconds_bucket",
        "rate(pglease_transactions_total",
        "histogram_quantile(0.99, sum by (database, le) (rate(pglease_transaction_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (database, le) (rate(pglease_query_duration_seconds_bucket",
        "pglease_lease_expiry_timestamp_seconds",
        "pglease_lease_seconds_to_cliff",
        "pglease_lease_rotations_total",
        "rate(pglease_lease_issued_total",
    ] {
        assert!(uses(needle), "no panel queries {needle}");
    }
}
