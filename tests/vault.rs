//! The `vault` source end to end: an in-process Vault stand-in that creates, renews and drops
//! real roles on the suite's PostgreSQL, and the proxy (or the source alone) in front of it.
//! Leases here live seconds, so rotation, renewal and token upkeep all happen within a test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::vault_standin::{Mode, TokenSpec, VaultStandin, rfc3339};
use common::*;
use pglease::config::{VaultAuth, VaultConfig, VaultKind};
use pglease::credentials::vault::VaultSource;
use pglease::credentials::{Credentials, Lease, Source, SourceError};
use pglease::secret::Secret;
use tokio_postgres::SimpleQueryMessage;

#[path = "vault/lifetimes.rs"]
mod lifetimes;
#[path = "vault/outage.rs"]
mod outage;
#[path = "vault/proxy.rs"]
mod proxy;
#[path = "vault/redirect.rs"]
mod redirect;

/// The proxy tests run load against leases of a few seconds; on a 2-core machine they would
/// starve each other's rotations, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn token_auth(token: &str) -> VaultAuth {
    VaultAuth::Token {
        token: token.into(),
        token_file: None,
    }
}

/// A source for `role` on `vault`, with everything else at its default.
fn source_config(vault: &VaultStandin, role: &str, auth: VaultAuth) -> VaultConfig {
    VaultConfig {
        address: vault.address(),
        mount: "database".into(),
        role: role.into(),
        kind: VaultKind::Dynamic,
        namespace: None,
        ca_file: None,
        auth,
    }
}

fn source(config: &VaultConfig) -> VaultSource {
    VaultSource::from_config(config).unwrap_or_else(|e| panic!("source refused: {e}"))
}

/// A proxy config for `db` whose upstream credentials come from `vault`; `lines` add the
/// source's own keys (role, kind, auth, ...).
fn vault_toml(db: &TestDb, mode: &str, vault: &VaultStandin, lines: &str) -> String {
    let source = format!(
        "source = \"vault\"\naddress = \"{}\"\nrotate_at = 0.3\nsafety_margin = \"3s\"\n{lines}",
        vault.address()
    );
    pooled_toml(db, mode, 4, "", "upstream", &source)
}

async fn first_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn role_exists(admin: &tokio_postgres::Client, role: &str) -> bool {
    let row = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .expect("pg_roles");
    row.get::<_, i64>(0) > 0
}

/// Clients running short queries until stopped; any error fails the test when collected.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(creds_addr: std::net::SocketAddr, db: &TestDb, clients: usize) -> Load {
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut workers = Vec::new();
        for id in 0..clients {
            let client = connect(creds_addr, &db.user, &db.password, &db.name).await;
            let (stop, done) = (stop.clone(), done.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = client.simple_query("SELECT current_user").await {
                        panic!("client {id} saw an error: {}", describe(&e));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Load {
            stop,
            done,
            workers,
        }
    }

    /// Stops the clients; panics if any saw an error. Returns the queries completed.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("a client saw an error");
        }
        self.done.load(Ordering::Relaxed)
    }
}

/// Waits until the entry has published a lease and returns it.
async fn published(creds: &Credentials) -> Arc<Lease> {
    match creds.wait_current(secs(20)).await {
        Some(lease) => lease,
        None => panic!("no lease published: {:?}", creds.state()),
    }
}

#[test]
fn standin_writes_rfc3339_like_vault() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456Z");
    let leap_day = SystemTime::UNIX_EPOCH + secs(951_782_400);
    assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.000000Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_is_renewed_before_it_expires() {
    let db = fresh_db("vtok").await;
    let vault = VaultStandin::start().await;
    // Leases shorter than the token: only the token's own TTL asks for renewals.
    vault.add_dynamic_role("database", "app", &db.role, secs(4), secs(120));
    let token = vault.issue_token(TokenSpec::renewable(secs(6), secs(60)));
    let source = source(&source_config(&vault, "app", token_auth(&token)));
    let first = source.acquire().await.expect("first lease");
    assert_eq!(vault.requests_to("/v1/auth/token/lookup-self").len(), 1);
    // Nothing asks for a lease for well past the token's first TTL.
    tokio::time::sleep(secs(10)).await;
    let second = source
        .acquire()
        .await
        .expect("lease after the token's first TTL");
    let renewals = vault.requests_to("/v1/auth/token/renew-self");
    assert!(!renewals.is_empty(), "the token was never renewed");
    assert!(
        renewals
            .iter()
            .all(|r| r.token_sent && r.body["increment"] == "6s")
    );
    for lease in [&first, &second] {
        source.revoke(lease).await.expect("revoke");
    }
    assert!(vault.requests().iter().all(|r| r.token_sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_renews_and_logs_in_again_at_max_ttl() {
    let db = fresh_db("vapp").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    vault.add_approle(
        "approle",
        "role-1",
        "sid-secret-1",
        TokenSpec::renewable(secs(9), secs(13)),
    );
    let auth = |secret_id: &str| VaultAuth::AppRole {
        role_id: "role-1".into(),
        secret_id: secret_id.into(),
        mount: "approle".into(),
    };
    let good = source(&source_config(&vault, "app", auth("sid-secret-1")));
    let lease = good.acquire().await.expect("lease with approle");
    let logins = vault.requests_to("/v1/auth/approle/login");
    assert_eq!(logins.len(), 1);
    assert!(!logins[0].token_sent);
    assert_eq!(logins[0].body["role_id"], "role-1");
    assert_eq!(logins[0].body["secret_id"], "sid-secret-1");
    // The 60 s lease dies with its token at the token's max TTL (13 s), and pglease knows:
    // the token was renewed asking for the lease's life, Vault granted less.
    let renewals = vault.requests_to("/v1/auth/token/renew-self");
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    assert_eq!(renewals[0].body["increment"], "60s");
    let lifetime = lease
        .expires_at
        .and_then(|e| e.duration_since(lease.issued_at).ok())
        .expect("an expiry");
    assert!(lifetime <= secs(13), "counted on for {lifetime:?}");
    assert!(lifetime >= secs(11), "cut short to {lifetime:?}");
    // Logged in again at two thirds of the granted 13 s, well before the first token ends.
    tokio::time::sleep(secs(13)).await;
    good.acquire()
        .await
        .expect("lease after the first token's max TTL");
    assert!(!vault.requests_to("/v1/auth/token/renew-self").is_empty());
    let logins = vault.requests_to("/v1/auth/approle/login").len();
    assert!(logins >= 2, "no fresh login at max TTL ({logins} logins)");
    good.revoke(&lease).await.expect("revoke");

    let bad = source(&source_config(&vault, "app", auth("sid-wrong-2")));
    match bad.acquire().await {
        Err(SourceError::Rejected(msg)) => {
            assert!(
                msg.contains("400") && msg.contains("invalid role or secret ID"),
                "{msg}"
            );
            assert!(!msg.contains("sid-wrong-2"), "secret_id leaked: {msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_rereads_the_jwt_after_a_403() {
    let db = fresh_db("vk8s").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    vault.add_kubernetes_role("kubernetes", "pglease", "jwt-one", TokenSpec::forever());
    let jwt_path = std::env::temp_dir().join(format!("pglease-vault-jwt-{}", std::process::id()));
    std::fs::write(&jwt_path, "jwt-one\n").unwrap();
    let auth = VaultAuth::Kubernetes {
        role: "pglease".into(),
        jwt_path: jwt_path.clone(),
        mount: "kubernetes".into(),
    };
    let source = source(&source_config(&vault, "app", auth));
    source.acquire().await.expect("lease with kubernetes auth");
    // The service-account token rotates, and Vault forgets pglease's token.
    std::fs::write(&jwt_path, "jwt-two").unwrap();
    vault.set_kubernetes_jwt("kubernetes", "jwt-two");
    vault.revoke_all_tokens().await;
    source.acquire().await.expect("lease after a fresh login");
    let logins = vault.requests_to("/v1/auth/kubernetes/login");
    let jwts: Vec<_> = logins.iter().map(|r| r.body["jwt"].clone()).collect();
    assert_eq!(jwts, ["jwt-one", "jwt-two"]);
    assert!(logins.iter().all(|r| r.body["role"] == "pglease"));
    // The denied read, then the one retry with the new token.
    assert_eq!(vault.requests_to("/v1/database/creds/app").len(), 3);
    std::fs::remove_file(&jwt_path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_rewritten_by_vault_agent_is_read_again_after_a_403() {
    let db = fresh_db("vtfile").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let first = vault.issue_token(TokenSpec::forever());
    let path = std::env::temp_dir().join(format!("pglease-vault-token-{}", std::process::id()));
    std::fs::write(&path, format!("{first}\n")).unwrap();
    let auth = VaultAuth::Token {
        token: Secret::new(first.clone()),
        token_file: Some(path.clone()),
    };
    let source = source(&source_config(&vault, "app", auth));
    source.acquire().await.expect("lease with the first token");
    // Vault Agent logs in again and rewrites its sink; the old token is revoked.
    let second = vault.issue_token(TokenSpec::forever());
    std::fs::write(&path, &second).unwrap();
    vault.revoke_token(&first).await;
    source
        .acquire()
        .await
        .expect("lease after reading the token file again");
    // One lookup per token read, and the denied read followed by one retry.
    assert_eq!(vault.requests_to("/v1/auth/token/lookup-self").len(), 2);
    assert_eq!(vault.requests_to("/v1/database/creds/app").len(), 3);
    std::fs::remove_file(&path).unwrap();

    // A token given literally cannot be replaced: the 403 stands.
    let literal = vault.issue_token(TokenSpec::forever());
    let fixed = source_config(&vault, "app", token_auth(&literal));
    let fixed = self::source(&fixed);
    fixed.acquire().await.expect("lease with a literal token");
    vault.revoke_token(&literal).await;
    match fixed.acquire().await {
        Err(SourceError::Rejected(msg)) => assert!(msg.contains("403"), "{msg}"),
        other => panic!("expected the 403 to stand, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_outages_are_reported_without_secrets() {
    let db = fresh_db("verr").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let token = vault.issue_token(TokenSpec::forever());

    let wrong = "hvs.not-a-real-token-XYZ";
    let refused = source(&source_config(&vault, "app", token_auth(wrong)))
        .acquire()
        .await;
    match refused {
        Err(SourceError::Rejected(msg)) => {
            assert!(
                msg.contains("403") && msg.contains("permission denied"),
                "{msg}"
            );
            assert!(!msg.contains(wrong), "token leaked: {msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let unknown = source(&source_config(&vault, "nope", token_auth(&token)))
        .acquire()
        .await;
    match unknown {
        Err(SourceError::Rejected(msg)) => {
            assert!(msg.contains("404") && msg.contains("unknown role"), "{msg}");
            assert!(!msg.contains(&token), "token leaked: {msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    vault.set_mode(Mode::Sealed).await;
    let sealed = source(&source_config(&vault, "app", token_auth(&token)))
        .acquire()
        .await;
    match sealed {
        Err(SourceError::Unreachable(msg)) => {
            assert!(msg.contains("503") && msg.contains("sealed"), "{msg}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = source_config(&vault, "app", token_auth(&token));
    config.address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    match source(&config).acquire().await {
        Err(SourceError::Unreachable(msg)) => assert!(!msg.contains(&token), "{msg}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_file_and_namespace_header() {
    let db = fresh_db("vtls").await;
    let vault = VaultStandin::start_tls().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let token = vault.issue_token(TokenSpec::forever());
    let ca_path = std::env::temp_dir().join(format!("pglease-vault-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_path, vault.ca_pem().expect("TLS stand-in")).unwrap();

    let mut config = source_config(&vault, "app", token_auth(&token));
    config.namespace = Some("team-a".into());
    // Without the CA, the stand-in's certificate is not trusted.
    match source(&config).acquire().await {
        Err(SourceError::Unreachable(_)) => {}
        other => panic!("an untrusted certificate was accepted: {other:?}"),
    }
    assert!(
        vault.requests().is_empty(),
        "a request got through without TLS trust"
    );
    config.ca_file = Some(ca_path.clone());
    let source = source(&config);
    let lease = source.acquire().await.expect("lease over TLS");
    source.revoke(&lease).await.expect("revoke over TLS");
    let requests = vault.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.namespace.as_deref() == Some("team-a"))
    );
    std::fs::remove_file(&ca_path).unwrap();
}
