//! The `vault` source driving a whole proxy: rotation under load with revocation of every
//! superseded lease, renewal of a lease a session still holds, static-role rotation, and how a
//! refused renewal or token looks from outside.

use super::*;

fn token_lines(role: &str, token: &str) -> String {
    format!("role = \"{role}\"\nauth = {{ method = \"token\", token = \"{token}\" }}")
}

/// The stand-in's lease whose role is `role`.
fn lease_of(vault: &VaultStandin, role: &str) -> (String, common::vault_standin::LeaseRecord) {
    vault
        .leases()
        .into_iter()
        .find(|(_, l)| l.role == role)
        .unwrap_or_else(|| panic!("{role} is not a role the stand-in issued"))
}

/// A session-mode proxy on the stand-in's role `app`, and a client holding a temporary table
/// (so it stays on its lease), with the role it runs as.
async fn pinned_session(
    db: &TestDb,
    vault: &VaultStandin,
    token: &str,
) -> (pglease::app::Proxy, tokio_postgres::Client, String) {
    let toml = vault_toml(db, "session", vault, &token_lines("app", token));
    let proxy = start_proxy(&toml).await;
    let pinned = connect_app(&proxy, db).await;
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .expect("temp table");
    let role = first_value(&pinned, "SELECT current_user").await;
    (proxy, pinned, role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_leases_rotate_under_load_and_superseded_ones_are_revoked() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vdyn").await;
    let admin = superuser().await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(8), secs(60));
    let token = vault.issue_token(TokenSpec::forever());
    let toml = vault_toml(&db, "transaction", &vault, &token_lines("app", &token));
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    // Only the generation is kept: holding the lease itself would count as a connection on it.
    let target = published(&creds).await.generation + 2;
    let client = connect_app(&proxy, &db).await;
    let user = first_value(&client, "SELECT current_user").await;
    assert!(user.starts_with("v-token-app-"), "served by {user}");
    lease_of(&vault, &user);

    let load = Load::start(proxy.local_addr(), &db, 3).await;
    eventually(secs(40), "two rotations", async || {
        creds.generation() >= target
    })
    .await;
    let done = load.finish().await;
    assert!(
        done > 20,
        "too little traffic to prove anything ({done} queries)"
    );
    drop(client);

    // Every lease issued before the current one is revoked at Vault, and its role is gone.
    let current = published(&creds).await.id.clone();
    let issued = vault.lease(&current).expect("current lease").issued;
    let superseded: Vec<_> = vault
        .leases()
        .into_iter()
        .filter(|(_, l)| l.issued < issued)
        .collect();
    assert!(superseded.len() >= 2, "{superseded:?}");
    for (id, lease) in &superseded {
        let what = format!("revocation of {id}");
        eventually(secs(20), &what, async || {
            vault.lease(id).is_some_and(|l| l.revoked) && !role_exists(&admin, &lease.role).await
        })
        .await;
    }
    let revoked: Vec<_> = vault
        .requests_to("/v1/sys/leases/revoke")
        .into_iter()
        .map(|r| r.body["lease_id"].clone())
        .collect();
    for (id, _) in &superseded {
        assert!(revoked.iter().any(|r| r == id), "{id} was never revoked");
    }
    assert!(vault.requests().iter().all(|r| r.token_sent));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_session_keeps_its_lease_renewed_up_to_max_ttl() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vren").await;
    let admin = superuser().await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(10), secs(20));
    let token = vault.issue_token(TokenSpec::forever());
    let (proxy, pinned, role) = pinned_session(&db, &vault, &token).await;
    let (lease_id, record) = lease_of(&vault, &role);

    // The lease is renewed while the session holds it, until Vault grants less than asked.
    let until = Instant::now() + secs(40);
    while !vault
        .renewals()
        .iter()
        .any(|r| r.lease_id == lease_id && r.granted < r.increment)
    {
        assert!(
            Instant::now() < until,
            "no capped renewal: {:?}",
            vault.renewals()
        );
        assert_eq!(first_value(&pinned, "SELECT current_user").await, role);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        SystemTime::now() > record.expires,
        "capped before the lease's first expiry"
    );
    // Past its first expiry the session still works, on the same role.
    first_value(&pinned, "SELECT count(*) FROM scratch").await;
    assert_eq!(first_value(&pinned, "SELECT current_user").await, role);

    let record = vault.lease(&lease_id).expect("lease");
    assert!(record.expires <= record.max_until);
    let max_epoch = record
        .max_until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("rolvaliduntil");
    let valid_until: f64 = row.get(0);
    assert!(
        valid_until <= max_epoch + 1.0,
        "VALID UNTIL moved past max_ttl"
    );
    let asks = vault.requests_to("/v1/sys/leases/renew");
    assert!(
        asks.iter()
            .all(|r| r.body["increment"].as_u64().is_some_and(|i| i > 0))
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_keeps_serving_on_the_current_lease() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vref").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(16), secs(60));
    vault.refuse_renewals(true);
    let token = vault.issue_token(TokenSpec::forever());
    let (proxy, pinned, role) = pinned_session(&db, &vault, &token).await;
    let (lease_id, _) = lease_of(&vault, &role);
    eventually(secs(30), "a renewal attempt", async || {
        let asks = vault.requests_to("/v1/sys/leases/renew");
        asks.iter().any(|r| r.body["lease_id"] == lease_id)
    })
    .await;
    assert!(vault.renewals().is_empty(), "a refused renewal was granted");
    // The session carries on where it was; new sessions use the newest lease.
    assert_eq!(first_value(&pinned, "SELECT current_user").await, role);
    first_value(&pinned, "SELECT count(*) FROM scratch").await;
    let other = connect_app(&proxy, &db).await;
    assert_ne!(first_value(&other, "SELECT current_user").await, role);
    assert!(!vault.lease(&lease_id).expect("lease").revoked);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_role_rotation_is_followed_without_client_errors() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vsta").await;
    let admin = superuser().await;
    let vault = VaultStandin::start().await;
    vault
        .add_static_role("database", "app-static", &db.role)
        .await;
    let token = vault.issue_token(TokenSpec::forever());
    let lines = format!("{}\nkind = \"static\"", token_lines("app-static", &token));
    let proxy = start_proxy(&vault_toml(&db, "transaction", &vault, &lines)).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    let first = published(&creds).await;
    assert_eq!(first.username, db.role);
    assert_eq!(first.expires_at, None);
    assert!(
        first.id.starts_with("static:database/app-static@"),
        "{}",
        first.id
    );
    let (first_generation, first_id) = (first.generation, first.id.clone());
    drop(first);
    let client = connect_app(&proxy, &db).await;
    assert_eq!(first_value(&client, "SELECT current_user").await, db.role);

    // One client at a time needs no upstream beyond those already open: logins made between
    // Vault's rotation and pglease noticing it would still use the old password.
    let load = Load::start(proxy.local_addr(), &db, 1).await;
    tokio::time::sleep(secs(1)).await;
    let before = first_value(&admin, "SELECT now()::text").await;
    vault.rotate_static("database", "app-static").await;
    let limit = pglease::credentials::vault::STATIC_POLL_INTERVAL + secs(30);
    eventually(limit, "the rotation to be followed", async || {
        creds.generation() > first_generation
    })
    .await;
    let lease = published(&creds).await;
    assert_ne!(lease.id, first_id);
    let password = vault.static_password("database", "app-static");
    assert_eq!(lease.password.expose(), password);
    // Upstreams opened since the rotation can only have logged in with the new password.
    let sql = format!(
        "SELECT backend_start > '{before}' FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    );
    eventually(
        secs(30),
        "an upstream opened after the rotation",
        async || first_value(&client, &sql).await == "t",
    )
    .await;
    assert!(load.finish().await > 10);
    // Revoking a static lease leaves the account alone.
    assert!(role_exists(&admin, &db.role).await);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_shows_in_the_lease_state_without_the_token() {
    let db = fresh_db("vbad").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let wrong = "hvs.wrong-token-for-the-proxy";
    let proxy = start_proxy(&vault_toml(
        &db,
        "transaction",
        &vault,
        &token_lines("app", wrong),
    ))
    .await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    eventually(secs(20), "the refusal to be reported", async || {
        creds.state().last_error.is_some()
    })
    .await;
    let error = creds.state().last_error.unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("HTTP 403"),
        "{error}"
    );
    assert!(!error.contains(wrong), "token leaked: {error}");
    assert_eq!(creds.generation(), 0);
    proxy.shutdown().await;
}
