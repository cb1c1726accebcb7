//! The reaper: it drops only expired roles that match the issuer's exact name pattern *and*
//! carry its mark for this credentials entry, and even then keeps what they owned. With
//! several issuers of one entry (replicas), a role in use, or one whose owner is alive, is
//! never dropped; a dead owner's unused roles are.

use super::*;

/// When every role the tests make "expired" stopped being valid.
const PAST: &str = "2000-01-01T00:00:00Z";

#[tokio::test]
async fn reaper_drops_only_expired_marked_roles_with_the_exact_prefix() {
    let (_db, config, admin) = setup("reap").await;
    let past = format!("VALID UNTIL '{PAST}'");
    let ours = Some(mark("reap", PAST));
    let roles = [
        ("ireap_expired1", past.as_str(), ours.clone(), false),
        ("ireap_expired2", past.as_str(), ours.clone(), false),
        ("ireap_future", "VALID UNTIL 'infinity'", ours.clone(), true),
        ("ireap_noexpiry", "", ours.clone(), true),
        ("ireapx_1", past.as_str(), ours.clone(), true),
        ("ireap_Upper", past.as_str(), ours.clone(), true),
        ("other_ireap_1", past.as_str(), ours.clone(), true),
        ("ireap_a_b", past.as_str(), ours.clone(), true),
        ("ireap_", past.as_str(), ours.clone(), true),
        ("ireap_unmarked", past.as_str(), None, true),
        (
            "ireap_handmade",
            past.as_str(),
            Some("made by hand".into()),
            true,
        ),
        (
            "ireap_otherentry",
            past.as_str(),
            Some(mark("other", PAST)),
            true,
        ),
    ];
    for (name, valid, comment, _) in &roles {
        sql(&admin, &format!("CREATE ROLE \"{name}\" LOGIN {valid}")).await;
        if let Some(comment) = comment {
            let comment = comment.replace('\'', "''");
            sql(
                &admin,
                &format!("COMMENT ON ROLE \"{name}\" IS '{comment}'"),
            )
            .await;
        }
    }

    // Construction reaps once.
    let issuer = IssuerSource::new("reap", &config).await.unwrap();
    for (name, _, _, kept) in &roles {
        assert_eq!(role_exists(&admin, name).await, *kept, "{name}");
    }

    let late = format!(
        "CREATE ROLE ireap_late LOGIN {past}; COMMENT ON ROLE ireap_late IS '{}'",
        mark("reap", PAST)
    );
    sql(&admin, &late).await;
    assert_eq!(issuer.reap().await.unwrap(), 1);
    assert!(!role_exists(&admin, "ireap_late").await);
    assert_eq!(issuer.reap().await.unwrap(), 0);
    assert_eq!(issuer.reap_interval(), config.reap_interval);
    for (name, _, _, kept) in &roles {
        assert_eq!(role_exists(&admin, name).await, *kept, "{name}");
    }
}

#[tokio::test]
async fn a_hand_made_role_with_the_prefix_survives_the_reaper_and_a_reaped_role_keeps_its_tables() {
    let (_db, mut config, admin) = setup("hand").await;
    // The default prefix, as a DBA's own role might well use it.
    config.prefix = "pglease".into();
    let past = format!("VALID UNTIL '{PAST}'");
    sql(
        &admin,
        &format!(
            "CREATE ROLE pglease_abc123 LOGIN {past};\n\
             CREATE TABLE hand_made (id int); INSERT INTO hand_made VALUES (1);\n\
             ALTER TABLE hand_made OWNER TO pglease_abc123;\n\
             CREATE ROLE pglease_handreaped1 LOGIN {past};\n\
             COMMENT ON ROLE pglease_handreaped1 IS '{}';\n\
             CREATE TABLE hand_reaped (id int); INSERT INTO hand_reaped VALUES (2);\n\
             ALTER TABLE hand_reaped OWNER TO pglease_handreaped1",
            mark("hand", PAST)
        ),
    )
    .await;

    let issuer = IssuerSource::new("hand", &config).await.unwrap();

    assert!(role_exists(&admin, "pglease_abc123").await);
    assert_eq!(
        table_owner(&admin, "hand_made").await.as_deref(),
        Some("pglease_abc123")
    );
    assert!(!role_exists(&admin, "pglease_handreaped1").await);
    // Reaping takes the role, never the application's data: the table goes to the admin.
    assert_eq!(
        table_owner(&admin, "hand_reaped").await.as_deref(),
        Some(cluster().superuser())
    );
    let row = admin
        .query_one(
            "SELECT (SELECT count(*) FROM hand_made), (SELECT count(*) FROM hand_reaped)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));
    assert_eq!(issuer.reap().await.unwrap(), 0);
    assert!(role_exists(&admin, "pglease_abc123").await);
}

/// Waits until `check` (a query returning one bool) is true, for at most 10 s.
async fn eventually(admin: &Client, check: &str, param: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = admin.query_one(check, &[&param]).await.unwrap();
        if row.get::<_, bool>(0) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "never: {check} ({param})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn unused(admin: &Client, role: &str) {
    let check = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = $1)";
    eventually(admin, check, role).await;
}

async fn set_valid_until(admin: &Client, role: &str, until: &str) {
    sql(
        admin,
        &format!("ALTER ROLE \"{role}\" VALID UNTIL '{until}'"),
    )
    .await;
}

#[tokio::test]
async fn another_replicas_expired_role_survives_while_its_owner_lives_or_a_session_uses_it() {
    let (db, config, admin) = setup("repl").await;
    let here = IssuerSource::new("repl", &config).await.unwrap();
    let there = IssuerSource::new("repl", &config).await.unwrap();
    assert_ne!(here.instance(), there.instance());
    let lease = there.acquire().await.unwrap();
    let role = lease.username.clone();

    // Expired while a session uses it, as during an outage of the source: nobody drops it.
    let session = login(&lease, &db.name).await.unwrap();
    set_valid_until(&admin, &role, PAST).await;
    assert_eq!(here.reap().await.unwrap(), 0);
    assert_eq!(there.reap().await.unwrap(), 0);
    sql(&session, "SELECT 1").await;

    // Unused, but its owner lives (and still holds the lease): kept, and only the owner may
    // renew or revoke it.
    drop(session);
    unused(&admin, &role).await;
    assert_eq!(here.reap().await.unwrap(), 0);
    assert_eq!(there.reap().await.unwrap(), 0);
    assert!(here.revoke(&lease).await.is_err());
    assert!(here.renew(&lease, SystemTime::now()).await.is_err());
    assert!(role_exists(&admin, &role).await);

    // The owner dies (its admin session, and so its lock, goes) while a session still uses
    // the expired role: the in-use check alone keeps it.
    set_valid_until(&admin, &role, "infinity").await;
    let session = login(&lease, &db.name).await.unwrap();
    set_valid_until(&admin, &role, PAST).await;
    let instance = there.instance();
    drop(there);
    let lock_free = "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                     AND granted AND objsubid = 1 \
                     AND lpad(to_hex(classid::bigint), 8, '0') || lpad(to_hex(objid::bigint), 8, '0') = $1)";
    eventually(&admin, lock_free, &instance).await;
    assert_eq!(here.reap().await.unwrap(), 0);
    sql(&session, "SELECT 1").await;
    assert!(role_exists(&admin, &role).await);

    // Dead owner, nobody on it: reaped.
    drop(session);
    unused(&admin, &role).await;
    assert_eq!(here.reap().await.unwrap(), 1);
    assert!(!role_exists(&admin, &role).await);
}

#[tokio::test]
async fn a_role_with_an_old_mark_is_reaped_only_when_unused() {
    let (db, config, admin) = setup("oldm").await;
    let role = "ioldm_0ld";
    sql(
        &admin,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw' VALID UNTIL 'infinity';\n\
             COMMENT ON ROLE {role} IS '{}'",
            mark("oldm", PAST)
        ),
    )
    .await;
    let session = try_connect(upstream_addr(), role, "pw", &db.name)
        .await
        .unwrap();
    set_valid_until(&admin, role, PAST).await;
    let issuer = IssuerSource::new("oldm", &config).await.unwrap();
    assert!(role_exists(&admin, role).await);
    sql(&session, "SELECT 1").await;
    drop(session);
    unused(&admin, role).await;
    assert_eq!(issuer.reap().await.unwrap(), 1);
    assert!(!role_exists(&admin, role).await);
}

#[tokio::test]
async fn a_createrole_admin_that_is_not_superuser_reaps_a_dead_replicas_role_and_keeps_its_table() {
    let (db, mut config, admin) = setup("nsur").await;
    let admin_role = format!("{}_admin", db.name);
    let member = &config.member_of[0];
    sql(
        &admin,
        &format!(
            "CREATE ROLE \"{admin_role}\" LOGIN CREATEROLE PASSWORD 'adminpw';\n\
             GRANT \"{member}\" TO \"{admin_role}\" WITH ADMIN OPTION"
        ),
    )
    .await;
    config.admin_url = Secret::new(format!(
        "postgres://{admin_role}:adminpw@127.0.0.1:{}/{}",
        cluster().port(),
        db.name
    ));
    let here = IssuerSource::new("nsur", &config).await.unwrap();
    let there = IssuerSource::new("nsur", &config).await.unwrap();
    let lease = there.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE nsur_left (id int)").await;
    drop(session);
    drop(there);
    unused(&admin, &lease.username).await;
    set_valid_until(&admin, &lease.username, PAST).await;
    // The dead replica's admin session may take a moment to end; until then it looks alive.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while here.reap().await.unwrap() == 0 {
        assert!(std::time::Instant::now() < until, "never reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!role_exists(&admin, &lease.username).await);
    assert_eq!(
        table_owner(&admin, "nsur_left").await.as_deref(),
        Some(admin_role.as_str())
    );
}
