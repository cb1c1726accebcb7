//! The embedded issuer against a real PostgreSQL: roles it creates can log in with exactly the
//! promised rights and expiry, carry pglease's mark, renewal is clamped, revocation ends
//! sessions and drops the role but never what the application made, the reaper only ever drops
//! its own expired roles, and hostile names stay inert.
//!
//! Each test has its own prefix, member role, database and credentials entry name, so tests
//! run in parallel. What happens to objects across rotations is in `issuer/ownership.rs`.

mod common;

#[path = "issuer/ownership.rs"]
mod ownership;
#[path = "issuer/reaper.rs"]
mod reaper;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestDb, cluster, describe, fresh_db, superuser, try_connect, upstream_addr};
use pglease::config::IssuerConfig;
use pglease::credentials::issuer::IssuerSource;
use pglease::credentials::{Lease, Source, SourceError};
use pglease::secret::Secret;
use tokio_postgres::Client;

/// A database of its own, a member role with CREATE on its public schema, and an issuer
/// config (superuser admin connected to that database) with prefix `i<tag>`. The tests use
/// `tag` as the credentials entry name too.
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

/// Creates `<db>_owner`, a NOLOGIN role with CREATE on the database's public schema, for
/// use as `act_as`.
async fn owner_role(db: &TestDb, in_db: &Client) -> String {
    let owner = format!("{}_owner", db.name);
    sql(
        in_db,
        &format!("CREATE ROLE \"{owner}\" NOLOGIN; GRANT CREATE ON SCHEMA public TO \"{owner}\""),
    )
    .await;
    owner
}

/// The mark pglease wrote on its roles before marks named an issuer instance, for roles the
/// tests make by hand: it still means "this entry's", with no owner known.
fn mark(entry: &str, until: &str) -> String {
    format!("pglease issued role for credentials \"{entry}\", valid until {until}")
}

/// The mark `issuer` writes on its roles of credentials entry `entry`.
fn issued_mark(issuer: &IssuerSource, entry: &str, until: &str) -> String {
    format!("{}, instance {}", mark(entry, until), issuer.instance())
}

/// The role's comment and its `rolvaliduntil` in the mark's format.
async fn comment_and_expiry(admin: &Client, name: &str) -> (Option<String>, String) {
    let row = admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid'), \
             to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    (row.get(0), row.get(1))
}

/// The owner of table `name`, if it exists.
async fn table_owner(client: &Client, name: &str) -> Option<String> {
    let row = client
        .query_opt(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    row.map(|r| r.get(0))
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

/// `rolvaliduntil` of `name` as Unix seconds, if it has one.
async fn valid_until_or_none(admin: &Client, name: &str) -> Option<i64> {
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    row.get(0)
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
async fn acquire_creates_a_marked_login_role_with_membership_and_expiry() {
    let (db, config, admin) = setup("acq").await;
    let issuer = IssuerSource::new("acq", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();

    assert_eq!(issuer.kind(), "issuer");
    assert_eq!(lease.id, lease.username);
    assert!(lease.username.starts_with("iacq_"), "{}", lease.username);
    assert!(lease.renewable);
    assert!(lease.password.expose().len() >= 43);
    let expires = lease.expires_at.unwrap();
    assert_eq!(expires, lease.issued_at + config.ttl);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(expires));
    let (comment, until) = comment_and_expiry(&admin, &lease.username).await;
    assert_eq!(comment, Some(issued_mark(&issuer, "acq", &until)));

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
    assert_eq!(
        format!("{lease:?}")
            .matches(lease.password.expose())
            .count(),
        0
    );
}

#[tokio::test]
async fn only_a_scram_verifier_is_sent_even_where_md5_would_hash_a_plaintext() {
    let (db, config, admin) = setup("md5").await;
    // The issuer's admin connection goes to this database, so its sessions hash any plaintext
    // password as md5; a control role proves the setting is in force.
    sql(
        &admin,
        &format!(
            "ALTER DATABASE \"{}\" SET password_encryption = 'md5'",
            db.name
        ),
    )
    .await;
    let fresh = connect_as_superuser(&db.name).await;
    sql(&fresh, "CREATE ROLE imd5_control PASSWORD 'plain'").await;
    let stored = |role: &'static str| {
        let fresh = &fresh;
        async move {
            let row = fresh
                .query_one(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&role],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert!(stored("imd5_control").await.starts_with("md5"));

    let issuer = IssuerSource::new("md5", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let row = fresh
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&lease.username],
        )
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert!(!stored.contains(lease.password.expose()));
    login(&lease, &db.name).await.unwrap();
}

#[tokio::test]
async fn issued_roles_get_exactly_the_configured_attributes_and_memberships() {
    let (db, mut config, admin) = setup("attr").await;
    let owner = owner_role(&db, &admin).await;
    config.act_as = Some(owner.clone());
    let issuer = IssuerSource::new("attr", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();

    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, \
             rolbypassrls, rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = $1",
            &[&lease.username],
        )
        .await
        .unwrap();
    let flags: Vec<bool> = (0..7).map(|i| row.get(i)).collect();
    assert_eq!(flags, [true, false, false, false, false, false, true]);

    let rows = admin
        .query(
            "SELECT r.rolname::text, m.admin_option FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE u.rolname = $1 ORDER BY 1",
            &[&lease.username],
        )
        .await
        .unwrap();
    let member_of: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut expected = vec![(config.member_of[0].clone(), false), (owner.clone(), false)];
    expected.sort();
    assert_eq!(member_of, expected);

    let rows = admin
        .query(
            "SELECT s.setdatabase, s.setconfig FROM pg_db_role_setting s \
             JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1",
            &[&lease.username],
        )
        .await
        .unwrap();
    let settings: Vec<(u32, Vec<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(settings, [(0, vec![format!("role={owner}")])]);
    let session = login(&lease, &db.name).await.unwrap();
    let row = session
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (owner, lease.username.clone())
    );
}

#[tokio::test]
async fn renew_moves_valid_until_and_clamps_at_max_ttl() {
    let (_db, config, admin) = setup("ren").await;
    let issuer = IssuerSource::new("ren", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();

    let wanted = lease.issued_at + Duration::from_secs(900);
    let renewed = issuer.renew(&lease, wanted).await.unwrap();
    assert_eq!(renewed, wanted);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(wanted));

    let too_far = lease.issued_at + Duration::from_secs(5000);
    let clamped = issuer.renew(&lease, too_far).await.unwrap();
    assert_eq!(clamped, lease.issued_at + config.max_ttl);
    assert_eq!(valid_until(&admin, &lease.username).await, unix(clamped));
    // The mark says the validity the role has now.
    let (comment, until) = comment_and_expiry(&admin, &lease.username).await;
    assert_eq!(comment, Some(issued_mark(&issuer, "ren", &until)));
}

#[tokio::test]
async fn revoke_ends_sessions_and_drops_the_role_but_not_what_it_owned() {
    let (db, config, admin) = setup("rev").await;
    let issuer = IssuerSource::new("rev", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(
        &session,
        "CREATE TABLE rev_owned (id int); INSERT INTO rev_owned VALUES (1)",
    )
    .await;

    issuer.revoke(&lease).await.unwrap();

    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "session survived revoke"
    );
    assert!(!role_exists(&admin, &lease.username).await);
    // Without act_as the table goes to the admin role (a superuser here), rows and all.
    assert_eq!(
        table_owner(&admin, "rev_owned").await.as_deref(),
        Some(cluster().superuser())
    );
    let rows = admin
        .query_one("SELECT count(*) FROM rev_owned", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 1);
    assert!(login(&lease, &db.name).await.is_err());
    // Revoking again is harmless: the role is already gone.
    issuer.revoke(&lease).await.unwrap();
}

#[tokio::test]
async fn with_act_as_created_objects_outlive_the_lease() {
    let (db, mut config, admin) = setup("act").await;
    let owner = owner_role(&db, &admin).await;
    config.act_as = Some(owner.clone());
    let issuer = IssuerSource::new("act", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE act_kept (id int)").await;
    // Made after leaving act_as: owned by the lease's role until revocation hands it over.
    sql(&session, "SET ROLE NONE; CREATE TABLE act_own (id int)").await;
    assert_eq!(
        table_owner(&admin, "act_own").await.as_deref(),
        Some(lease.username.as_str())
    );

    issuer.revoke(&lease).await.unwrap();

    assert!(!role_exists(&admin, &lease.username).await);
    for table in ["act_kept", "act_own"] {
        assert_eq!(
            table_owner(&admin, table).await.as_deref(),
            Some(owner.as_str()),
            "{table}"
        );
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
    let issuer = IssuerSource::new("inj", &hostile).await.unwrap();
    let err = issuer.acquire().await.unwrap_err();
    assert!(matches!(err, SourceError::Rejected(_)), "{err}");
    assert!(!err.to_string().contains("SCRAM-SHA-256$"), "{err}");

    let mut hostile = config.clone();
    hostile.act_as = Some(payload.clone());
    let issuer = IssuerSource::new("inj", &hostile).await.unwrap();
    assert!(issuer.acquire().await.is_err());

    let mut hostile = config.clone();
    hostile.prefix = "p\"; DROP ROLE x; --".into();
    assert!(matches!(
        IssuerSource::from_config("inj", &hostile),
        Err(SourceError::Rejected(_))
    ));

    // A lease naming a role that is not ours is refused before any statement is sent.
    let issuer = IssuerSource::new("inj", &config).await.unwrap();
    let mut forged = issuer.acquire().await.unwrap();
    // Neither a role outside the name pattern, nor one inside it that lacks the mark.
    let lookalike = "iinj_abcdef123456";
    sql(&admin, &format!("CREATE ROLE {lookalike} LOGIN")).await;
    for name in [victim.as_str(), lookalike] {
        forged.id = name.to_owned();
        let revoked = issuer.revoke(&forged).await;
        assert!(
            matches!(revoked, Err(SourceError::Rejected(_))),
            "{name}: {revoked:?}"
        );
        let renewed = issuer.renew(&forged, SystemTime::now()).await;
        assert!(
            matches!(renewed, Err(SourceError::Rejected(_))),
            "{name}: {renewed:?}"
        );
        assert!(role_exists(&admin, name).await, "{name} was dropped");
    }
    assert_eq!(valid_until_or_none(&admin, lookalike).await, None);
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
        // The issuer's own mark comes after the template, so this cannot unmark the role.
        "COMMENT ON ROLE \"{{name}}\" IS 'issued as {{name}}'".into(),
    ]);
    config.renew_statements = Some(vec![
        "ALTER ROLE {{name}} VALID UNTIL {{expiration}}".into(),
    ]);
    config.revocation_statements = Some(vec!["DROP ROLE \"{{name}}\"".into()]);
    let issuer = IssuerSource::new("tpl", &config).await.unwrap();

    let lease = issuer.acquire().await.unwrap();
    let (comment, until) = comment_and_expiry(&admin, &lease.username).await;
    assert_eq!(comment, Some(issued_mark(&issuer, "tpl", &until)));
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
    let (comment, shown) = comment_and_expiry(&admin, &lease.username).await;
    assert_eq!(comment, Some(issued_mark(&issuer, "tpl", &shown)));
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
    let err = IssuerSource::new("down", &config).await.err().unwrap();
    assert!(matches!(err, SourceError::Unreachable(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // The lazy constructor starts anyway; the call is what fails.
    let issuer = IssuerSource::from_config("down", &config).unwrap();
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
    let owner = owner_role(&db, &admin).await;
    // As config/issuer.toml sets it up: ADMIN on every role it hands out, owner included.
    sql(
        &admin,
        &format!(
            "CREATE ROLE \"{admin_role}\" LOGIN CREATEROLE PASSWORD 'adminpw';\n\
             GRANT \"{member}\", \"{owner}\" TO \"{admin_role}\" WITH ADMIN OPTION"
        ),
    )
    .await;
    config.act_as = Some(owner.clone());
    config.admin_url = Secret::new(format!(
        "postgres://{admin_role}:adminpw@127.0.0.1:{}/{}",
        cluster().port(),
        db.name
    ));
    let issuer = IssuerSource::new("nsu", &config).await.unwrap();
    let lease = issuer.acquire().await.unwrap();
    let until = lease.issued_at + Duration::from_secs(900);
    assert_eq!(issuer.renew(&lease, until).await.unwrap(), until);
    let session = login(&lease, &db.name).await.unwrap();
    sql(&session, "CREATE TABLE nsu_kept (id int)").await;
    sql(&session, "SET ROLE NONE; CREATE TABLE nsu_own (id int)").await;

    issuer.revoke(&lease).await.unwrap();

    assert!(session.simple_query("SELECT 1").await.is_err());
    assert!(!role_exists(&admin, &lease.username).await);
    for table in ["nsu_kept", "nsu_own"] {
        assert_eq!(
            table_owner(&admin, table).await.as_deref(),
            Some(owner.as_str()),
            "{table}"
        );
    }
}
