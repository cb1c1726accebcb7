//! Vault revokes every lease created with a token when the token expires or is revoked: the
//! proxy must never be caught on a lease whose token has gone, and must not leave replaced
//! tokens alive once nothing needs them.

use common::vault_standin::Ended;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_outlives_the_token_that_created_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vtokl").await;
    let vault = VaultStandin::start().await;
    // Leases of 30 s, from tokens Vault ends 10 s after login whatever pglease asks.
    vault.add_dynamic_role("database", "app", &db.role, secs(30), secs(60));
    vault.add_approle(
        "approle",
        "role-1",
        "sid-1",
        TokenSpec::renewable(secs(4), secs(10)),
    );
    let lines = "role = \"app\"\n\
                 auth = { method = \"approle\", role_id = \"role-1\", secret_id = \"sid-1\" }";
    let proxy = start_proxy(&vault_toml(&db, "transaction", &vault, lines)).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    let first = published(&creds).await;
    let counted = first
        .expires_at
        .and_then(|e| e.duration_since(first.issued_at).ok())
        .expect("an expiry");
    assert!(counted <= secs(10), "counted on for {counted:?}");
    let target = first.generation + 3;
    drop(first);
    let started = Instant::now();

    // Past the end of the first token and through three rotations, clients keep working:
    // the running ones and fresh logins.
    let load = Load::start(proxy.local_addr(), &db, 3).await;
    eventually(
        secs(60),
        "three rotations past the first token",
        async || {
            let fresh = connect_app(&proxy, &db).await;
            first_value(&fresh, "SELECT 1").await;
            creds.generation() >= target && started.elapsed() > secs(12)
        },
    )
    .await;
    let done = load.finish().await;
    assert!(done > 20, "too little traffic ({done} queries)");

    let killed: Vec<_> = vault
        .leases()
        .into_iter()
        .filter(|(_, l)| matches!(l.ended_by, Some(Ended::TokenExpired | Ended::TokenRevoked)))
        .collect();
    assert!(
        killed.is_empty(),
        "leases died with their token: {killed:?}"
    );
    let logins = vault.requests_to("/v1/auth/approle/login").len();
    assert!(logins >= 3, "only {logins} logins for three rotations");
    // Every lease is tied to the token that created it, and each asked for the lease's life.
    let asks = vault.requests_to("/v1/auth/token/renew-self");
    assert!(
        asks.iter().any(|r| r.body["increment"] == "30s"),
        "no renewal asked to cover a lease: {asks:?}"
    );
    // Tokens replaced after a rotation are revoked once their leases are (and not before:
    // that would have shown above as a lease ended by its token's revocation).
    eventually(secs(20), "a replaced token revoked", async || {
        !vault.requests_to("/v1/auth/token/revoke-self").is_empty()
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_replaced_caps_its_leases_and_makes_no_more() {
    let db = fresh_db("vtokc").await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let token = vault.issue_token(TokenSpec {
        ttl: secs(20),
        max_ttl: secs(20),
        renewable: false,
    });
    let source = source(&source_config(&vault, "app", token_auth(&token)));
    let lease = source.acquire().await.expect("first lease");
    let counted = lease
        .expires_at
        .and_then(|e| e.duration_since(lease.issued_at).ok())
        .expect("an expiry");
    assert!(counted <= secs(20), "counted on for {counted:?}");
    assert!(counted >= secs(18), "cut short to {counted:?}");
    // A second lease would end with the token too: refused, not made, so a rotator backs off
    // instead of rotating in a loop onto leases as short-lived as the first.
    match source.acquire().await {
        Err(SourceError::Rejected(msg)) => {
            assert!(msg.contains("needs a new token"), "{msg}");
            assert!(!msg.contains(&token), "token leaked: {msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(vault.requests_to("/v1/database/creds/app").len(), 1);
    assert!(vault.requests_to("/v1/auth/token/renew-self").is_empty());
    source.revoke(&lease).await.expect("revoke");
    assert!(vault.token_alive(&token), "a given token was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_no_vault_lease_and_no_token_of_its_own_alive() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("vstop").await;
    let admin = superuser().await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(600), secs(1200));
    vault.add_approle(
        "approle",
        "role-1",
        "sid-1",
        TokenSpec::renewable(secs(600), secs(1200)),
    );
    let lines = "role = \"app\"\n\
                 auth = { method = \"approle\", role_id = \"role-1\", secret_id = \"sid-1\" }";
    let proxy = start_proxy(&vault_toml(&db, "transaction", &vault, lines)).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    let client = connect_app(&proxy, &db).await;
    first_value(&client, "SELECT 1").await;
    // A second lease, with the first still held by an open transaction.
    client.batch_execute("BEGIN").await.expect("begin");
    let generation = published(&creds).await.generation;
    creds.rotate_now();
    eventually(secs(20), "a second lease", async || {
        creds.generation() > generation
    })
    .await;
    assert!(vault.leases().len() >= 2);
    assert!(
        !vault.live_accessors().is_empty(),
        "no token was logged in for"
    );

    let stopping = tokio::spawn(proxy.shutdown());
    client.batch_execute("COMMIT").await.expect("commit");
    drop(client);
    tokio::time::timeout(secs(30), stopping)
        .await
        .expect("shutdown hung")
        .expect("shutdown task");

    let alive: Vec<_> = vault
        .leases()
        .into_iter()
        .filter(|(_, l)| !l.revoked)
        .collect();
    assert!(
        alive.is_empty(),
        "leases alive after a clean stop: {alive:?}"
    );
    for (_, lease) in vault.leases() {
        assert!(
            !role_exists(&admin, &lease.role).await,
            "{} still exists",
            lease.role
        );
    }
    let tokens = vault.live_accessors();
    assert!(
        tokens.is_empty(),
        "tokens pglease logged in for are alive: {tokens:?}"
    );
}
