//! The embedded issuer against a real PostgreSQL: roles it creates can log in with exactly the
//! promised rights and expiry, renewal is clamped, revocation ends sessions and drops the role,
//! the reaper only ever drops its own expired roles, and hostile names stay inert.
//!
//! Each test has its own prefix, member role and database, so tests run in parallel.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestDb, cluster, describe, fresh_db, superuser, try_connect, upstream_addr};
use pglease::config::IssuerConfig;
use pglease::credentials::issuer::IssuerSource;
use pglease::credentials::{Lease, Source, SourceError};
use pglease::secret::Secret;
use tokio_postgres::Client;

/// A database of its own, a member role with CREATE on its public schema, and an issuer
/// config (superuser admin connected to that database) with prefix `i<tag>`.
async fn setup(tag: &str) -> (TestDb, IssuerConfig, Client) {
    let db = fresh_db(tag).await;
    let admin = superuser().await;
    let member = format!("{}_member", db.name);
    sql(&admin, &format!("CREATE ROLE \"{member}\" NOLOGIN")).await;
    let in_db = connect_as_superuser(&db.name).await;
    sql(
        &in_db,
        &format!("GRANT CREATE ON SCHEMA public TO \"{member}\""),
    )
    .await;
    let mut config = IssuerConfig::new(cluster().url(&db.name));
    config.prefix = format!("i{tag}");
    config.member_of = vec![member];
    config.ttl = Duration::from_secs(600);
    config.max_ttl = Duration::from_secs(1200);
    (db, config, in_db)
}

async fn connect_as_superuser(db: &str) -> Client {
    let url = cluster().url(db);
    let (client, conn) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("superuser connection failed: {}", describe(&e)));
    tokio::spawn(conn);
    client
}

async fn sql(client: &Client, text: &str) {
    client
        .batch_execute(text)
        .await
        .unwrap_or_else(|e| panic!("{text}: {}", describe(&e)));
}

async fn login(lease: &Lease, db: &str) -> Result<Client, tokio_postgres::Error> {
    try_connect(
        upstream_addr(),
        &lease.username,
        lease.password.expose(),
        db,
    )
    .await
}

async fn role_exists(admin: &Client, name: &str) -> bool {
    let row = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    row.is_some()
}

/// `rolvaliduntil` of `name` as Unix seconds.
async fn valid_until(admin: &Client, name: &str) -> i64 {
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    row.get(0)
}

fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[tokio::test]
async fn acquire_creates_a_scram_login_role_with_membership_and_expiry() {
    let (db, config, admin) = setup("acq").await;
    let issuer = IssuerSource::new(&config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();

    assert_eq!(issuer.kind(), "issuer");
    assert_eq!(lease.id, lease.username);
    assert!(lease.username.starts_with("iacq_"), "{}", lease.username);
    assert!(lease.renewable);
    assert!(lease.password.expose().len() >= 43);
    let expires = lease.expires_at.unwrap();
    assert_eq!(expires, lease.issued_at + config.ttl);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(expires));

    let session = login(&lease, &db.name).await.unwrap();
    let row = session
        .query_one(
            "SELECT current_user::text, pg_has_role($1, 'member')",
            &[&config.member_of[0]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), lease.username);
    assert!(row.get::<_, bool>(1));

    let row = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&lease.username],
        )
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert!(!stored.contains(lease.password.expose()));
    assert_eq!(
        format!("{lease:?}")
            .matches(lease.password.expose())
            .count(),
        0
    );
}

#[tokio::test]
async fn renew_moves_valid_until_and_clamps_at_max_ttl() {
    let (_db, config, admin) = setup("ren").await;
    let issuer = IssuerSource::new(&config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();

    let wanted = lease.issued_at + Duration::from_secs(900);
    let renewed = issuer.renew(&lease, wanted).await.unwrap();
    assert_eq!(renewed, wanted);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(wanted));

    let too_far = lease.issued_at + Duration::from_secs(5000);
    let clamped = issuer.renew(&lease, too_far).await.unwrap();
    assert_eq!(clamped, lease.issued_at + config.max_ttl);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(clamped));
}

#[tokio::test]
async fn revoke_ends_sessions_and_drops_the_role_and_what_it_owns() {
    let (db, config, admin) = setup("rev").await;
    let issuer = IssuerSource::new(&config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE rev_owned (id int)").await;

    issuer.revoke(&lease).await.unwrap();

    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "session survived revoke"
    );
    assert!(!role_exists(&admin, &lease.username).await);
    let table = admin
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'rev_owned'", &[])
        .await
        .unwrap();
    assert!(table.is_none(), "owned table survived DROP OWNED");
    assert!(login(&lease, &db.name).await.is_err());
    // Revoking again is harmless: the role is already gone.
    issuer.revoke(&lease).await.unwrap();
}

#[tokio::test]
async fn with_act_as_created_objects_outlive_the_lease() {
    let (db, mut config, admin) = setup("act").await;
    let owner = format!("{}_owner", db.name);
    sql(&admin, &format!("CREATE ROLE \"{owner}\" NOLOGIN")).await;
    sql(
        &admin,
        &format!("GRANT CREATE ON SCHEMA public TO \"{owner}\""),
    )
    .await;
    config.act_as = Some(owner.clone());
    config.drop_owned = false;
    let issuer = IssuerSource::new(&config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE act_kept (id int)").await;

    issuer.revoke(&lease).await.unwrap();

    assert!(!role_exists(&admin, &lease.username).await);
    let row = admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'act_kept'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), owner);
}

#[tokio::test]
async fn reaper_drops_only_expired_roles_with_the_exact_prefix() {
    let (_db, config, admin) = setup("reap").await;
    let past = "VALID UNTIL '2000-01-01T00:00:00Z'";
    let roles = [
        ("ireap_expired1", past, false),
        ("ireap_expired2", past, false),
        ("ireap_future", "VALID UNTIL 'infinity'", true),
        ("ireap_noexpiry", "", true),
        ("ireapx_1", past, true),
        ("ireap_Upper", past, true),
        ("other_ireap_1", past, true),
        ("ireap_a_b", past, true),
        ("ireap_", past, true),
    ];
    for (name, valid, _) in &roles {
        sql(&admin, &format!("CREATE ROLE \"{name}\" LOGIN {valid}")).await;
    }

    // Construction reaps once.
    let issuer = IssuerSource::new(&config).await.unwrap();
    for (name, _, kept) in &roles {
        assert_eq!(role_exists(&admin, name).await, *kept, "{name}");
    }

    sql(&admin, &format!("CREATE ROLE \"ireap_late\" LOGIN {past}")).await;
    assert_eq!(issuer.reap().await.unwrap(), 1);
    assert!(!role_exists(&admin, "ireap_late").await);
    assert_eq!(issuer.reap().await.unwrap(), 0);
    assert_eq!(issuer.reap_interval(), config.reap_interval);
    for (name, _, kept) in &roles {
        assert_eq!(role_exists(&admin, name).await, *kept, "{name}");
    }
}

#[tokio::test]
async fn hostile_names_are_quoted_or_refused() {
    let (db, config, admin) = setup("inj").await;
    let victim = format!("{}_victim", db.name);
    sql(&admin, &format!("CREATE ROLE \"{victim}\" NOLOGIN")).await;
    let payload = format!("x\"; DROP ROLE \"{victim}\"; --");

    let mut hostile = config.clone();
    hostile.member_of.push(payload.clone());
    let issuer = IssuerSource::new(&hostile).await.unwrap();
    let err = issuer.acquire().await.unwrap_err();
    assert!(matches!(err, SourceError::Rejected(_)), "{err}");
    assert!(!err.to_string().contains("SCRAM-SHA-256$"), "{err}");

    let mut hostile = config.clone();
    hostile.act_as = Some(payload.clone());
    let issuer = IssuerSource::new(&hostile).await.unwrap();
    assert!(issuer.acquire().await.is_err());

    let mut hostile = config.clone();
    hostile.prefix = "p\"; DROP ROLE x; --".into();
    assert!(matches!(
        IssuerSource::from_config(&hostile),
        Err(SourceError::Rejected(_))
    ));

    // A lease naming a role that is not ours is refused before any statement is sent.
    let issuer = IssuerSource::new(&config).await.unwrap();
    let mut forged = issuer.acquire().await.unwrap();
    forged.id = victim.clone();
    assert!(matches!(
        issuer.revoke(&forged).await,
        Err(SourceError::Rejected(_))
    ));
    assert!(matches!(
        issuer.renew(&forged, SystemTime::now()).await,
        Err(SourceError::Rejected(_))
    ));

    assert!(
        role_exists(&admin, &victim).await,
        "the victim role was dropped"
    );
    let stray = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'x%DROP%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stray.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn templates_replace_the_built_in_statements() {
    let (db, mut config, admin) = setup("tpl").await;
    let member = config.member_of[0].clone();
    config.creation_statements = Some(vec![
        "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"
            .into(),
        format!("GRANT \"{member}\" TO {{{{name}}}}"),
        "COMMENT ON ROLE \"{{name}}\" IS 'issued as {{name}}'".into(),
    ]);
    config.renew_statements = Some(vec![
        "ALTER ROLE {{name}} VALID UNTIL {{expiration}}".into(),
    ]);
    config.revocation_statements = Some(vec!["DROP ROLE \"{{name}}\"".into()]);
    let issuer = IssuerSource::new(&config).await.unwrap();

    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    let row = session
        .query_one("SELECT pg_has_role($1, 'member')", &[&member])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    drop(session);
    let until = lease.issued_at + Duration::from_secs(700);
    assert_eq!(issuer.renew(&lease, until).await.unwrap(), until);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(until));
    issuer.revoke(&lease).await.unwrap();
    assert!(!role_exists(&admin, &lease.username).await);
}

#[tokio::test]
async fn an_unreachable_admin_is_reported_as_unreachable_without_secrets() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = IssuerConfig::new(Secret::new(format!(
        "postgres://admin:hunter2@127.0.0.1:{port}/postgres"
    )));
    let err = IssuerSource::new(&config).await.err().unwrap();
    assert!(matches!(err, SourceError::Unreachable(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // The lazy constructor starts anyway; the call is what fails.
    let issuer = IssuerSource::from_config(&config).unwrap();
    assert!(matches!(
        issuer.acquire().await,
        Err(SourceError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_createrole_admin_that_is_not_superuser_can_run_the_whole_lifecycle() {
    let (db, mut config, admin) = setup("nsu").await;
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
    let issuer = IssuerSource::new(&config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE nsu_owned (id int)").await;

    issuer.revoke(&lease).await.unwrap();

    assert!(session.simple_query("SELECT 1").await.is_err());
    assert!(!role_exists(&admin, &lease.username).await);
    let table = admin
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'nsu_owned'", &[])
        .await
        .unwrap();
    assert!(table.is_none());
}
