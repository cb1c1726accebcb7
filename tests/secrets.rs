//! No secret leaves the proxy: a whole proxy with an issuer entry and a Vault entry serves
//! clients, refuses bad logins, answers every admin command and `/metrics`, rotates and shuts
//! down, while the production log subscriber records everything at TRACE. Then the client
//! passwords, the issuer's admin password, every issued password and its verifier, and the
//! Vault token are looked for in all of it: the log, `/metrics`, `/readyz`, every `SHOW` and
//! every error a client was sent.
//!
//! This binary holds one test: it installs the process-wide log subscriber.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::get;
use common::vault_standin::{TokenSpec, VaultStandin};
use common::*;
use pglease::app::Proxy;
use pglease::config::{Config, LogFormat};
use pglease::credentials::Credentials;
use tokio_postgres::{Client, SimpleQueryMessage};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

/// Everything the process-wide subscriber writes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The text an operator or client could see, gathered from every place it comes out.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }
}

/// The cells and command tags of a simple query, as text; or its error.
async fn answer(client: &Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(messages) => {
            let mut text = String::new();
            for m in messages {
                match m {
                    SimpleQueryMessage::Row(row) => {
                        for i in 0..row.len() {
                            text.push_str(row.get(i).unwrap_or("NULL"));
                            text.push('|');
                        }
                        text.push('\n');
                    }
                    SimpleQueryMessage::CommandComplete(n) => text.push_str(&format!("({n})\n")),
                    _ => {}
                }
            }
            text
        }
        Err(e) => describe(&e),
    }
}

fn config_text(db: &TestDb, vault: &VaultStandin, token: &str, admin_password: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_users = ["ops"]
shutdown_timeout = "2s"

[[users]]
name = "{user}"
password = "{password}"

[[users]]
name = "ops"
password = "{admin_password}"

[[databases]]
name = "issued"
host = "127.0.0.1"
port = {port}
dbname = "{dbname}"
pool_size = 2
credentials = "issuer"

[[databases]]
name = "vaulted"
host = "127.0.0.1"
port = {port}
dbname = "{dbname}"
pool_size = 2
credentials = "vault"

[credentials.issuer]
source = "issuer"
admin_url = "{admin_url}"
member_of = ["{role}"]
prefix = "sec"
ttl = "5m"
max_ttl = "10m"

[credentials.vault]
source = "vault"
address = "{vault}"
role = "app"
auth = {{ method = "token", token = "{token}" }}
"#,
        user = db.user,
        password = db.password,
        port = cluster().port(),
        dbname = db.name,
        admin_url = cluster().url(&db.name).expose(),
        role = db.role,
        vault = vault.address(),
    )
}

/// One lease a source handed out: its role, password and the role's SCRAM verifier in
/// PostgreSQL.
#[derive(Debug)]
struct Issued {
    role: String,
    password: String,
    verifier: String,
}

/// Every lease each entry has published so far, with its verifier read while the role still
/// exists: the test polls while it works, so each generation is known after its revocation.
async fn note_leases(proxy: &Proxy, superuser: &Client, leases: &mut Vec<Issued>) {
    let all: Vec<Credentials> = proxy.shared().credentials().into_values().collect();
    for creds in all {
        let Some(lease) = creds.current() else {
            continue;
        };
        if leases.iter().any(|l| l.role == lease.username) {
            continue;
        }
        let row = superuser
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&lease.username],
            )
            .await
            .expect("the role of a published lease exists");
        leases.push(Issued {
            role: lease.username.clone(),
            password: lease.password.expose().to_owned(),
            verifier: row
                .get::<_, Option<String>>(0)
                .expect("a password verifier"),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_metrics_show_or_errors() {
    let log = Log::default();
    let writer = log.clone();
    pglease::logging::subscriber(LogFormat::Text, EnvFilter::new("trace"), false, move || {
        writer.clone()
    })
    .try_init()
    .expect("the only subscriber of this binary");

    let db = fresh_db("secrets").await;
    let superuser = superuser().await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role(
        "database",
        "app",
        &db.role,
        Duration::from_secs(300),
        Duration::from_secs(600),
    );
    let token = vault.issue_token(TokenSpec::forever());
    let admin_password = "ops-password-7c1f".to_owned();
    let config = Config::from_toml_str(
        &config_text(&db, &vault, &token, &admin_password),
        &std::env::temp_dir(),
    )
    .expect("config");
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let addr = proxy.local_addr();
    let http = proxy.admin_addr().expect("admin endpoint");
    let mut seen = Seen::default();
    let mut leases = Vec::new();

    // Clients: served on both entries, refused in every way a login can be refused.
    for database in ["issued", "vaulted"] {
        let client = connect(addr, &db.user, &db.password, database).await;
        seen.add("query", answer(&client, "SELECT current_user, 1").await);
        seen.add("error", answer(&client, "SELECT no_such_column").await);
        note_leases(&proxy, &superuser, &mut leases).await;
    }
    for (user, password, database) in [
        (db.user.as_str(), "wrong-password", "issued"),
        (db.user.as_str(), db.password.as_str(), "no_such_db"),
        ("nobody", db.password.as_str(), "issued"),
        (db.user.as_str(), db.password.as_str(), "pglease"),
        ("ops", "wrong-password", "pglease"),
    ] {
        match try_connect(addr, user, password, database).await {
            Ok(_) => panic!("{user} on {database} was let in"),
            Err(e) => seen.add("login error", describe(&e)),
        }
    }

    // The console: every command, before and after rotations.
    let console = connect(addr, "ops", &admin_password, "pglease").await;
    let shows = [
        "POOLS",
        "CLIENTS",
        "SERVERS",
        "UPSTREAMS",
        "STATS",
        "DATABASES",
        "USERS",
        "LEASES",
        "CONFIG",
        "VERSION",
        "LISTS",
    ];
    for round in 0..2 {
        for what in shows {
            seen.add(
                format!("SHOW {what} ({round})"),
                answer(&console, &format!("SHOW {what}")).await,
            );
        }
        for (place, path) in [("/metrics", "/metrics"), ("/readyz", "/readyz")] {
            seen.add(place, get(http, path).await.body);
        }
        if round == 0 {
            for command in [
                "ROTATE issuer",
                "ROTATE vault",
                "PAUSE issued",
                "RESUME issued",
                "RELOAD",
                "KILL 999999",
                "SHOW SECRETS",
            ] {
                seen.add(command, answer(&console, command).await);
            }
            note_leases(&proxy, &superuser, &mut leases).await;
            // Traffic moves the pools onto the new leases; the old ones are revoked.
            let until = Instant::now() + Duration::from_secs(30);
            for database in ["issued", "vaulted"] {
                let client = connect(addr, &db.user, &db.password, database).await;
                seen.add("query", answer(&client, "SELECT current_user").await);
            }
            while leases.len() < 4 {
                assert!(Instant::now() < until, "no new leases: {leases:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                note_leases(&proxy, &superuser, &mut leases).await;
            }
        }
    }
    drop(console);
    proxy.shutdown().await;
    assert_eq!(leases.len(), 4, "two leases per entry: {leases:?}");

    // What must never come out.
    let issuer_admin_password = cluster_password();
    let mut secrets: BTreeSet<(String, String)> = BTreeSet::from([
        ("client password".to_owned(), db.password.clone()),
        ("admin user's password".to_owned(), admin_password.clone()),
        ("issuer admin password".to_owned(), issuer_admin_password),
        ("vault token".to_owned(), token.clone()),
    ]);
    for lease in &leases {
        let role = &lease.role;
        secrets.insert((format!("password of {role}"), lease.password.clone()));
        secrets.insert((format!("verifier of {role}"), lease.verifier.clone()));
        // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>: each key alone is
        // enough to impersonate the server or replay a login.
        let keys = lease
            .verifier
            .rsplit_once('$')
            .map(|(_, k)| k)
            .unwrap_or_default();
        for (i, key) in keys.split(':').enumerate() {
            secrets.insert((format!("verifier key {i} of {role}"), key.to_owned()));
        }
    }
    let logged = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("TRACE") && logged.contains("lease"),
        "the log did not record at trace level"
    );
    seen.add("log", logged);
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} is too short to search for");
        for (place, text) in &seen.0 {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} appears in {place}"
            );
        }
    }
}
