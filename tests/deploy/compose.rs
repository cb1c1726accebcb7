//! The compose stack (`deploy/compose/`), the Dockerfile and the systemd unit: what each file
//! refers to exists, the pieces agree on names and ports (Prometheus scrapes pglease's
//! admin_listen, Grafana reads that Prometheus, the issuer's roles are the ones the database
//! init script makes), the compose pglease.toml loads, and stopping waits long enough.

use std::collections::BTreeMap;
use std::env::VarError;
use std::path::Path;
use std::time::Duration;

use pglease::config::{Config, SourceConfig, parse_duration};
use yaml_rust2::Yaml;

use super::{read, repo, yaml};

const COMPOSE: &str = "deploy/compose/docker-compose.yml";

fn compose() -> Yaml {
    yaml(COMPOSE).remove(0)
}

fn service(name: &str) -> Yaml {
    let compose = compose();
    let found = &compose["services"][name];
    assert!(!found.is_badvalue(), "no service {name} in {COMPOSE}");
    found.clone()
}

/// `${NAME:-default}` as compose expands it when NAME is not set.
fn with_defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("unclosed ${") + at;
        let inner = &rest[at + 2..end];
        let (_, default) = inner
            .split_once(":-")
            .expect("every variable has a default");
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A service's `environment` map, defaults expanded.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let hash = service["environment"]
        .as_hash()
        .expect("environment as a map");
    hash.iter()
        .map(|(k, v)| {
            let value = v.as_str().expect("string value");
            (k.as_str().expect("name").to_owned(), with_defaults(value))
        })
        .collect()
}

/// A service's bind mounts as (host path from deploy/compose, container path).
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    let volumes = service["volumes"].as_vec().expect("volumes");
    let mut found = Vec::new();
    for v in volumes {
        let spec = v.as_str().expect("short volume syntax");
        let mut parts = spec.split(':');
        let (host, inside) = (parts.next().expect("host"), parts.next().expect("target"));
        if host.starts_with('.') {
            found.push((host.to_owned(), inside.to_owned()));
        }
    }
    found
}

fn compose_config() -> Config {
    let env = environment(&service("pglease"));
    let lookup = |name: &str| env.get(name).cloned().ok_or(VarError::NotPresent);
    let text = read("deploy/compose/pglease.toml");
    Config::from_toml_str_with_env(&text, Path::new("/etc/pglease"), &lookup)
        .unwrap_or_else(|e| panic!("deploy/compose/pglease.toml does not load:\n{e}"))
}

#[test]
fn the_stack_has_its_four_services_and_every_mounted_file_exists() {
    for name in ["postgres", "pglease", "prometheus", "grafana"] {
        for (host, _) in mounts(&service(name)) {
            let path = repo("deploy/compose").join(&host);
            assert!(path.exists(), "{name} mounts {host}, which is not there");
        }
    }
    let pglease = service("pglease");
    let build = &pglease["build"];
    let context = repo("deploy/compose").join(build["context"].as_str().expect("context"));
    assert!(
        context
            .join(build["dockerfile"].as_str().expect("dockerfile"))
            .is_file()
    );
    let config = (
        "./pglease.toml".to_owned(),
        "/etc/pglease/pglease.toml".to_owned(),
    );
    assert!(
        mounts(&pglease).contains(&config),
        "the config is not mounted where CMD reads it"
    );
}

#[test]
fn the_compose_config_loads_and_stopping_waits_for_shutdown_timeout() {
    let config = compose_config();
    let grace = service("pglease")["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period")
        .to_owned();
    let grace = parse_duration(&grace).expect("a duration");
    assert!(
        grace >= config.proxy.shutdown_timeout + Duration::from_secs(5),
        "stop_grace_period {grace:?} leaves no time to revoke after shutdown_timeout"
    );
}

#[test]
fn prometheus_scrapes_pglease_and_grafana_reads_prometheus() {
    let config = compose_config();
    let admin = config.proxy.admin_listen.expect("admin_listen");
    let port = admin.rsplit(':').next().expect("port");
    let prometheus = yaml("deploy/prometheus/prometheus.yml").remove(0);
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(
        job["job_name"].as_str(),
        Some("pglease"),
        "the alerts' up{{job}}"
    );
    let target = job["static_configs"][0]["targets"][0]
        .as_str()
        .expect("target");
    assert_eq!(target, format!("pglease:{port}"));
    let mounted: Vec<String> = mounts(&service("prometheus"))
        .into_iter()
        .map(|m| m.1)
        .collect();
    for rule_file in prometheus["rule_files"].as_vec().expect("rule_files") {
        let inside = format!("/etc/prometheus/{}", rule_file.as_str().expect("rule file"));
        assert!(mounted.contains(&inside), "{inside} is not mounted");
    }
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml").remove(0);
    let url = datasource["datasources"][0]["url"].as_str().expect("url");
    assert_eq!(url, "http://prometheus:9090");
}

#[test]
fn the_database_init_script_makes_the_roles_the_issuer_uses() {
    let config = compose_config();
    let script = read("deploy/compose/initdb/10-pglease-roles.sh");
    let SourceConfig::Issuer(issuer) = &config.credentials["app"].source else {
        panic!("the compose stack is meant to use the issuer");
    };
    let mut roles = issuer.member_of.clone();
    roles.extend(issuer.act_as.clone());
    for role in roles {
        assert!(
            script.contains(&format!("CREATE ROLE {role} NOLOGIN")),
            "{role}"
        );
        assert!(
            script.contains(&role) && script.contains("WITH ADMIN OPTION"),
            "{role}"
        );
    }
    let url = issuer.admin_url.expose();
    assert!(
        url.starts_with("postgres://pglease_admin:"),
        "admin_url logs in as pglease_admin"
    );
    assert!(script.contains("CREATE ROLE pglease_admin LOGIN CREATEROLE"));
    assert!(script.contains(&format!(
        "CREATE DATABASE {}",
        config.databases[0].upstream_dbname()
    )));
}

#[test]
fn the_image_checks_readyz_with_a_tool_it_installs() {
    let dockerfile = read("docker/Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    let check = lines[at..=at + 1].join(" ");
    assert!(
        check.contains("curl -fsS") && check.contains("/readyz"),
        "{check}"
    );
    let install = lines
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("apt-get install");
    assert!(
        install.contains(" curl"),
        "curl is not installed: {install}"
    );
    let expose = lines
        .iter()
        .find(|l| l.starts_with("EXPOSE"))
        .expect("EXPOSE");
    assert!(
        expose.contains("6432") && expose.contains("9930"),
        "{expose}"
    );
    let port = lines
        .iter()
        .find_map(|l| l.strip_prefix("ENV PGLEASE_ADMIN_PORT="));
    let admin = compose_config().proxy.admin_listen.expect("admin_listen");
    assert_eq!(Some(admin.rsplit(':').next().expect("port")), port);
}

/// The `[Service]` settings of the unit, each key with every value it is given.
fn unit_service() -> BTreeMap<String, Vec<String>> {
    let unit = read("deploy/systemd/pglease.service");
    let mut section = "";
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                settings.entry(k.to_owned()).or_default().push(v.to_owned());
            }
        }
    }
    settings
}

#[test]
fn the_systemd_unit_reloads_with_sighup_restarts_on_failure_and_is_hardened() {
    let unit = unit_service();
    let one = |key: &str| match unit.get(key).map(Vec::as_slice) {
        Some([value]) => value.as_str(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("ExecStart").contains("--config /etc/pglease/pglease.toml"));
    let stop = parse_duration(one("TimeoutStopSec")).expect("a duration");
    let default_shutdown = pglease::config::ProxyConfig::default().shutdown_timeout;
    assert!(
        stop >= default_shutdown + Duration::from_secs(5),
        "{stop:?}"
    );
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
}
