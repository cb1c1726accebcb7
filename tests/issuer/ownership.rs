//! What the application creates through pglease outlives every lease: it belongs to the
//! stable `act_as` owner, each new lease reads and writes it, revocation hands over whatever
//! the old role still owned, and only `on_revoke = "drop_objects"` ever drops anything.

use std::time::Instant;

use crate::common::{connect, pgbench, pooled_toml, start_proxy};
use pglease::config::OnRevoke;
use pglease::credentials::Credentials;

use super::*;

/// Asks `creds` for a new lease and waits until the old one is drained and its role gone.
/// Returns the old and the new role.
async fn rotate_until_revoked(admin: &Client, creds: &Credentials) -> (String, String) {
    let old = creds.state().username.expect("a published lease");
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(90);
    while role_exists(admin, &old).await {
        assert!(
            Instant::now() < until,
            "the old lease was not revoked: {:?}",
            creds.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = creds.state().username.expect("the new lease");
    assert_ne!(new, old);
    (old, new)
}

async fn count(client: &Client, table: &str) -> i64 {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("counting {table}: {}", describe(&e)));
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_made_through_the_proxy_survive_rotation_and_revocation() {
    let (db, config, admin) = setup("prx").await;
    let owner = owner_role(&db, &admin).await;
    let source = format!(
        "source = \"issuer\"\nadmin_url = \"{}\"\nmember_of = [\"{}\"]\nact_as = \"{owner}\"\n\
         prefix = \"{}\"\nttl = \"10m\"\nmax_ttl = \"20m\"",
        config.admin_url.expose(),
        config.member_of[0],
        config.prefix,
    );
    let proxy = start_proxy(&pooled_toml(&db, "transaction", 2, "", "owned", &source)).await;
    let creds = proxy.shared().credentials()["owned"].clone();
    let app = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    sql(
        &app,
        "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2)",
    )
    .await;
    // Made after leaving act_as, so owned by the lease's own role: the case revocation must
    // hand over rather than drop.
    sql(
        &app,
        "BEGIN; SET LOCAL ROLE NONE; CREATE TABLE left_behind (n int); \
         INSERT INTO left_behind VALUES (1); COMMIT",
    )
    .await;
    let first = creds.state().username.expect("a lease");
    assert_eq!(table_owner(&admin, "kept").await, Some(owner.clone()));
    assert_eq!(table_owner(&admin, "left_behind").await, Some(first));

    let (_, second) = rotate_until_revoked(&admin, &creds).await;

    let row = app
        .query_one("SELECT session_user::text, current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (second, owner.clone())
    );
    sql(
        &app,
        "INSERT INTO kept VALUES (3); INSERT INTO left_behind VALUES (2)",
    )
    .await;
    assert_eq!(count(&app, "kept").await, 3);
    assert_eq!(count(&app, "left_behind").await, 2);
    for table in ["kept", "left_behind"] {
        assert_eq!(
            table_owner(&admin, table).await,
            Some(owner.clone()),
            "{table}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn only_on_revoke_drop_objects_drops_what_a_role_owns() {
    let (db, config, admin) = setup("drop").await;
    let owner = owner_role(&db, &admin).await;
    let cases = [
        (None, OnRevoke::Reassign, false),
        (Some(owner.clone()), OnRevoke::Reassign, false),
        (None, OnRevoke::DropObjects, true),
        (Some(owner.clone()), OnRevoke::DropObjects, true),
    ];
    for (i, (act_as, on_revoke, dropped)) in cases.into_iter().enumerate() {
        let mut config = config.clone();
        config.act_as = act_as.clone();
        config.on_revoke = on_revoke;
        let issuer = IssuerSource::new("drop", &config).await.unwrap();
        let lease = issuer.acquire().await.unwrap();
        let session = login(&lease, &db.name).await.unwrap();
        let own = format!("own_{i}");
        let acted = format!("acted_{i}");
        sql(&session, &format!("CREATE TABLE {acted} (n int)")).await;
        sql(
            &session,
            &format!("SET ROLE NONE; CREATE TABLE {own} (n int)"),
        )
        .await;

        issuer.revoke(&lease).await.unwrap();

        let case = format!("act_as {act_as:?}, on_revoke {on_revoke:?}");
        assert!(!role_exists(&admin, &lease.username).await, "{case}");
        let kept_by = act_as.as_deref().unwrap_or(cluster().superuser());
        let expected = (!dropped).then(|| kept_by.to_owned());
        assert_eq!(table_owner(&admin, &own).await, expected, "{case}");
        // A table made as act_as is never the lease's to drop.
        if let Some(owner) = &act_as {
            assert_eq!(
                table_owner(&admin, &acted).await.as_ref(),
                Some(owner),
                "{case}"
            );
        }
    }
}

/// Runs pgbench through `proxy` as `pglease dev`'s user and insists that it succeeded.
async fn dev_pgbench(proxy: &pglease::app::Proxy, args: &[&str]) {
    let out = pgbench(proxy.local_addr(), "app", "app", "app")
        .args(args)
        .output()
        .await
        .expect("pgbench runs");
    assert!(
        out.status.success(),
        "pgbench {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_setup_keeps_pgbench_tables_working_across_rotations() {
    // `pglease dev`'s own setup (role app_owner, database app, its issuer config), on this
    // binary's cluster; no other test uses those names.
    let opts = pglease::dev::DevOptions {
        listen: "127.0.0.1:0".into(),
    };
    let proxy = pglease::dev::start(&opts, cluster())
        .await
        .unwrap_or_else(|e| panic!("dev did not start: {e:#}"));
    let creds = proxy.shared().credentials()["app"].clone();
    let admin = superuser().await;
    dev_pgbench(&proxy, &["-i", "-q", "-s", "1"]).await;
    let in_app = connect_as_superuser("app").await;
    assert_eq!(
        table_owner(&in_app, "pgbench_accounts").await.as_deref(),
        Some("app_owner")
    );

    for _ in 0..2 {
        rotate_until_revoked(&admin, &creds).await;
        dev_pgbench(&proxy, &["-c", "4", "-j", "2", "-T", "3"]).await;
    }
    assert_eq!(count(&in_app, "pgbench_accounts").await, 100_000);

    // What `dev` prints for watching it works: `app` on the admin console, and /metrics.
    let console = try_connect(proxy.local_addr(), "app", "app", "pglease")
        .await
        .unwrap_or_else(|e| panic!("dev's admin console: {}", describe(&e)));
    let leases = console
        .simple_query("SHOW LEASES")
        .await
        .expect("SHOW LEASES");
    let generation = leases.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get("generation").map(str::to_owned),
        _ => None,
    });
    assert_eq!(
        generation.as_deref(),
        Some("3"),
        "two rotations after the first lease"
    );
    let admin_addr = proxy.admin_addr().expect("dev serves /metrics");
    let metrics = common::http::get(admin_addr, "/metrics").await;
    assert!(
        metrics
            .body
            .contains("pglease_lease_generation{credentials=\"app\"} 3"),
        "{}",
        metrics.body
    );
    drop(console);
    proxy.shutdown().await;
}

#[test]
fn check_warns_when_objects_would_be_stranded_or_dropped() {
    let base = "[[users]]\nname = \"app\"\npassword = \"pw\"\n\
                [[databases]]\nname = \"app\"\ncredentials = \"app\"\n\
                [credentials.app]\nsource = \"issuer\"\nadmin_url = \"postgres://a@b/c\"\n";
    let cases = [
        ("", Some("credentials.app.act_as: not set")),
        ("act_as = \"owner\"\n", None),
        (
            "act_as = \"owner\"\non_revoke = \"drop_objects\"\n",
            Some("credentials.app.on_revoke: \"drop_objects\""),
        ),
    ];
    for (i, (extra, warning)) in cases.into_iter().enumerate() {
        let path =
            std::env::temp_dir().join(format!("pglease-check-{}-{i}.toml", std::process::id()));
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pglease"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A warning never fails the check.
        assert!(out.status.success(), "{extra:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
        match warning {
            Some(w) => assert!(
                stderr.contains(&format!("pglease: warning: {w}")),
                "{extra:?}: {stderr}"
            ),
            None => assert!(!stderr.contains("warning"), "{extra:?}: {stderr}"),
        }
    }
}
