//! The Kubernetes manifests (`deploy/kubernetes/`): they parse, the kustomization lists them
//! all, the Deployment runs several replicas that are ready on `/readyz` and alive on
//! `/healthz`, the PodDisruptionBudget, Service and ServiceMonitor select its pods, the
//! ConfigMap's pglease.toml loads with exactly the environment the Deployment gives it, and
//! the grace period covers the preStop pause and `shutdown_timeout`.

use std::collections::BTreeMap;
use std::env::VarError;
use std::path::Path;

use pglease::config::{Config, LogFormat};
use yaml_rust2::Yaml;

use super::yaml;

const DIR: &str = "deploy/kubernetes";

/// Every manifest by file name (the kustomization aside).
fn manifests() -> BTreeMap<String, Yaml> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(super::repo(DIR)).expect("deploy/kubernetes") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            let mut docs = yaml(&format!("{DIR}/{name}"));
            assert_eq!(docs.len(), 1, "{name}: one object per file");
            let doc = docs.remove(0);
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{name}: no apiVersion"
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{name}: no name"
            );
            found.insert(name, doc);
        }
    }
    found
}

/// The one manifest of `kind`.
fn of_kind(kind: &str) -> Yaml {
    let all = manifests();
    let mut matching = all.values().filter(|m| m["kind"].as_str() == Some(kind));
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("no {kind}"))
        .clone();
    assert!(matching.next().is_none(), "several {kind}s");
    found
}

fn labels(map: &Yaml) -> BTreeMap<String, String> {
    let hash = map
        .as_hash()
        .unwrap_or_else(|| panic!("not a label map: {map:?}"));
    hash.iter()
        .map(|(k, v)| {
            let k = k.as_str().expect("label name");
            (k.to_owned(), v.as_str().expect("label value").to_owned())
        })
        .collect()
}

/// Whether every label of `selector` is on `target`.
fn selects(selector: &BTreeMap<String, String>, target: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| target.get(k) == Some(v))
}

fn container() -> Yaml {
    let deployment = of_kind("Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].clone();
    containers.as_vec().expect("containers")[0].clone()
}

/// The container port named `name`.
fn container_port(name: &str) -> i64 {
    let ports = container()["ports"].as_vec().expect("ports").clone();
    let port = ports.iter().find(|p| p["name"].as_str() == Some(name));
    port.and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// The ConfigMap's pglease.toml, loaded with the values the Deployment's environment gives
/// its `env:` references (from the Secret).
fn configmap_config() -> Config {
    let toml = of_kind("ConfigMap")["data"]["pglease.toml"]
        .as_str()
        .expect("pglease.toml")
        .to_owned();
    let secret = of_kind("Secret");
    let name = secret["metadata"]["name"]
        .as_str()
        .expect("secret name")
        .to_owned();
    let mut env = BTreeMap::new();
    for var in container()["env"].as_vec().expect("env") {
        let key = var["name"].as_str().expect("env name").to_owned();
        let value = match var["value"].as_str() {
            Some(v) => v.to_owned(),
            None => {
                let from = &var["valueFrom"]["secretKeyRef"];
                assert_eq!(from["name"].as_str(), Some(name.as_str()), "{key}");
                let item = from["key"].as_str().expect("secret key");
                let value = secret["stringData"][item].as_str();
                value
                    .unwrap_or_else(|| panic!("{key}: no {item} in the Secret"))
                    .to_owned()
            }
        };
        env.insert(key, value);
    }
    let lookup = |name: &str| env.get(name).cloned().ok_or(VarError::NotPresent);
    Config::from_toml_str_with_env(&toml, Path::new("/etc/pglease"), &lookup)
        .unwrap_or_else(|e| panic!("the ConfigMap's pglease.toml does not load:\n{e}"))
}

fn port_of(addr: &str) -> i64 {
    let port = addr.rsplit(':').next().expect("host:port");
    port.parse().unwrap_or_else(|_| panic!("no port in {addr}"))
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let docs = yaml(&format!("{DIR}/kustomization.yaml"));
    let listed: Vec<String> = docs[0]["resources"]
        .as_vec()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource").to_owned())
        .collect();
    let files: Vec<String> = manifests().into_keys().collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, files);
}

#[test]
fn several_replicas_ready_on_readyz_and_alive_on_healthz() {
    let deployment = of_kind("Deployment");
    let replicas = deployment["spec"]["replicas"].as_i64().expect("replicas");
    assert!(replicas >= 2, "{replicas} replica");
    let c = container();
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(ready["path"].as_str(), Some("/readyz"));
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(live["path"].as_str(), Some("/healthz"));
    for probe in [ready, live] {
        let port = probe["port"].as_str().expect("probe port by name");
        let config = configmap_config();
        let admin = config.proxy.admin_listen.as_deref().expect("admin_listen");
        assert_eq!(
            container_port(port),
            port_of(admin),
            "probes ask admin_listen"
        );
    }
}

#[test]
fn the_budget_service_and_monitor_select_the_deployments_pods() {
    let deployment = of_kind("Deployment");
    let pods = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    let selector = labels(&deployment["spec"]["selector"]["matchLabels"]);
    assert!(
        selects(&selector, &pods),
        "the Deployment's selector misses its pods"
    );
    let pdb = of_kind("PodDisruptionBudget");
    assert_eq!(labels(&pdb["spec"]["selector"]["matchLabels"]), selector);
    let replicas = deployment["spec"]["replicas"].as_i64().expect("replicas");
    let unavailable = pdb["spec"]["maxUnavailable"]
        .as_i64()
        .expect("maxUnavailable");
    assert!(
        unavailable >= 1 && unavailable < replicas,
        "{unavailable} of {replicas}"
    );

    let service = of_kind("Service");
    assert!(selects(&labels(&service["spec"]["selector"]), &pods));
    let ports = service["spec"]["ports"].as_vec().expect("service ports");
    for port in ports {
        container_port(port["targetPort"].as_str().expect("targetPort by name"));
    }
    let monitor = of_kind("ServiceMonitor");
    let service_labels = labels(&service["metadata"]["labels"]);
    assert!(selects(
        &labels(&monitor["spec"]["selector"]["matchLabels"]),
        &service_labels
    ));
    let endpoint = &monitor["spec"]["endpoints"].as_vec().expect("endpoints")[0];
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let port = endpoint["port"].as_str().expect("endpoint port");
    assert!(
        ports.iter().any(|p| p["name"].as_str() == Some(port)),
        "no service port {port}"
    );
    let job = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(
        service_labels.get(job).map(String::as_str),
        Some("pglease"),
        "up{{job}}"
    );
}

#[test]
fn the_configmap_config_loads_with_the_deployments_environment() {
    let config = configmap_config();
    assert_eq!(config.proxy.log_format, LogFormat::Json);
    assert_eq!(container_port("postgres"), port_of(&config.proxy.listen));
    assert!(
        config.proxy.listen.starts_with("0.0.0.0:"),
        "not reachable from the Service"
    );
}

#[test]
fn the_grace_period_covers_the_prestop_pause_and_shutdown_timeout() {
    let deployment = of_kind("Deployment");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = &container()["lifecycle"]["preStop"]["exec"]["command"];
    let pause: i64 = match pre_stop.as_vec().map(Vec::as_slice) {
        Some([sleep, secs]) if sleep.as_str() == Some("sleep") => secs
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("sleep seconds"),
        _ => panic!("preStop is not `sleep N`: {pre_stop:?}"),
    };
    let shutdown = configmap_config().proxy.shutdown_timeout.as_secs() as i64;
    // After shutdown_timeout, the leases are revoked: a few seconds more.
    assert!(
        grace >= pause + shutdown + 5,
        "terminationGracePeriodSeconds {grace} < preStop {pause}s + shutdown_timeout {shutdown}s + 5s"
    );
}
