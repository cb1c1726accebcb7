//! The compose stack's database side, run for real without containers: the postgres image's
//! init script (`deploy/compose/initdb/10-pglease-roles.sh`) on this suite's PostgreSQL, then
//! pglease with the compose `pglease.toml` (only its addresses changed) serving the
//! application through issued roles, with what the application creates owned by `act_as`.

use std::path::Path;
use std::process::Stdio;

use pglease::config::Config;

use super::common::*;
use super::{read, repo};

/// The issuer's admin password the compose file gives both services by default.
const ADMIN_DB_PASSWORD: &str = "issuer-change-me";

/// Runs the init script as the postgres image would: `psql` on PATH, the superuser and
/// database in POSTGRES_USER and POSTGRES_DB, the connection in libpq's variables.
async fn run_init_script() {
    let cluster = cluster();
    let path = format!(
        "{}:{}",
        cluster.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("sh");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .arg(repo("deploy/compose/initdb/10-pglease-roles.sh"))
        .env("PATH", path)
        .env("PGHOST", cluster.host())
        .env("PGPORT", cluster.port().to_string())
        .env("PGPASSWORD", cluster.superuser_password().expose())
        .env("POSTGRES_USER", cluster.superuser())
        .env("POSTGRES_DB", "postgres")
        .env("PGLEASE_ADMIN_DB_PASSWORD", ADMIN_DB_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the init script");
    assert!(
        out.status.success(),
        "the init script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The compose pglease.toml aimed at this suite's PostgreSQL on free local ports.
fn compose_toml_here() -> String {
    let mut text = read("deploy/compose/pglease.toml");
    for (from, to) in [
        (
            "listen = \"0.0.0.0:6432\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "admin_listen = \"0.0.0.0:9930\"",
            "admin_listen = \"127.0.0.1:0\"".to_owned(),
        ),
        ("host = \"postgres\"", "host = \"127.0.0.1\"".to_owned()),
        ("port = 5432", format!("port = {}", cluster().port())),
        (
            "shutdown_timeout = \"30s\"",
            "shutdown_timeout = \"2s\"".to_owned(),
        ),
    ] {
        assert!(
            text.contains(from),
            "the compose pglease.toml no longer has {from}"
        );
        text = text.replace(from, &to);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_database_setup_and_config_serve_the_app_through_issued_roles() {
    run_init_script().await;
    let admin_url = format!(
        "postgres://pglease_admin:{ADMIN_DB_PASSWORD}@127.0.0.1:{}/app",
        cluster().port()
    );
    let env = |name: &str| match name {
        "PGLEASE_ADMIN_URL" => Ok(admin_url.clone()),
        "PGLEASE_ADMIN_PASSWORD" => Ok("admin-change-me".to_owned()),
        _ => Err(std::env::VarError::NotPresent),
    };
    let config = Config::from_toml_str_with_env(&compose_toml_here(), Path::new("/"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = pglease::app::Proxy::start(config)
        .await
        .expect("pglease starts");

    // The user and password the compose file's comment tells people to use.
    let app = connect(proxy.local_addr(), "app", "change-me", "app").await;
    let row = app
        .simple_query(
            "CREATE TABLE notes (n int); INSERT INTO notes VALUES (1); SELECT session_user",
        )
        .await
        .expect("the application's first statements");
    let login = row.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    let login = login.expect("session_user");
    assert!(
        !["app", "app_owner", "pglease_admin"].contains(&login.as_str()),
        "{login}"
    );

    // pg_tables lists the current database only: ask in `app`.
    let (in_app, conn) =
        tokio_postgres::connect(cluster().url("app").expose(), tokio_postgres::NoTls)
            .await
            .expect("superuser in app");
    tokio::spawn(conn);
    let owner: String = in_app
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'",
            &[],
        )
        .await
        .expect("the table")
        .get(0);
    assert_eq!(
        owner, "app_owner",
        "act_as does not own what the application made"
    );
    drop(app);
    proxy.shutdown().await;
    let left: i64 = in_app
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&login],
        )
        .await
        .expect("roles")
        .get(0);
    assert_eq!(left, 0, "the issued role {login} outlived pglease");
}
