//! Per-database access lists (`[[databases]] users = [...]`): a listed user is served, any
//! other local user is refused after authentication with PostgreSQL's own error, no pool is
//! built for a refused pair, a reload applies a changed list, and `pglease check` says who
//! may connect.

mod common;

use std::process::Command;

use common::{TestDb, connect, describe, fresh_db, superuser, try_connect};
use pglease::app::Proxy;
use pglease::config::Config;
use postgres_protocol::escape::{escape_identifier, escape_literal};

/// `db` with two local users, its own and `other` (password `other-pw`); `users_line` is the
/// database's access list key (or nothing).
fn config_text(db: &TestDb, other: &str, users_line: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"2s\"\n\n\
         [[users]]\nname = \"{user}\"\npassword = \"{password}\"\n\n\
         [[users]]\nname = \"{other}\"\npassword = \"other-pw\"\n\n\
         [[databases]]\nname = \"{name}\"\nport = {port}\npool_size = 2\n\
         credentials = \"upstream\"\n{users_line}\n\n\
         [credentials.upstream]\nsource = \"static\"\nusername = \"{role}\"\n\
         password = \"{pw}\"\n",
        user = db.user,
        password = db.password,
        name = db.name,
        port = common::cluster().port(),
        role = db.role,
        pw = db.role_password.expose(),
    )
}

/// (SQLSTATE, message, detail) of a refused login.
fn refusal(e: &tokio_postgres::Error) -> (String, String, Option<String>) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {e}"));
    (
        db.code().code().to_owned(),
        db.message().to_owned(),
        db.detail().map(str::to_owned),
    )
}

/// What PostgreSQL itself answers a role without CONNECT on `db`'s database.
async fn postgres_own_refusal(db: &TestDb) -> (String, String, Option<String>) {
    let admin = superuser().await;
    let role = format!("{}_nocon", db.role);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}; REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
            escape_identifier(&role),
            escape_literal("nocon-pw"),
            escape_identifier(&db.name),
        ))
        .await
        .unwrap_or_else(|e| panic!("setting up a role without CONNECT: {}", describe(&e)));
    let upstream = common::upstream_addr();
    let e = try_connect(upstream, &role, "nocon-pw", &db.name)
        .await
        .expect_err("PostgreSQL refuses a role without CONNECT");
    refusal(&e)
}

#[tokio::test]
async fn a_user_off_the_list_gets_postgres_own_refusal_and_a_listed_one_is_served() {
    let db = fresh_db("acc_list").await;
    let other = format!("{}_other", db.user);
    let toml = config_text(&db, &other, &format!("users = [\"{}\"]", db.user));
    let proxy = common::start_proxy(&toml).await;
    let addr = proxy.local_addr();
    connect(addr, &db.user, &db.password, &db.name)
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    let refused = try_connect(addr, &other, "other-pw", &db.name)
        .await
        .expect_err("a user off the list is refused");
    let ours = refusal(&refused);
    assert_eq!(ours.0, "42501", "{}", describe(&refused));
    assert_eq!(ours, postgres_own_refusal(&db).await);
    assert!(
        proxy.shared().pool(&db.name, &other).is_none(),
        "a pool was built"
    );
    // Refused after authentication: a wrong password still hears about the password.
    let wrong = try_connect(addr, &other, "not-it", &db.name)
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(&wrong).0, "28P01", "{}", describe(&wrong));
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_list_every_local_user_is_served() {
    let db = fresh_db("acc_all").await;
    let other = format!("{}_other", db.user);
    let proxy = common::start_proxy(&config_text(&db, &other, "")).await;
    for (user, password) in [
        (db.user.as_str(), db.password.as_str()),
        (&other, "other-pw"),
    ] {
        connect(proxy.local_addr(), user, password, &db.name)
            .await
            .batch_execute("SELECT 1")
            .await
            .unwrap();
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_applies_a_changed_list() {
    let db = fresh_db("acc_reload").await;
    let other = format!("{}_other", db.user);
    let dir = std::env::temp_dir().join(format!("pglease-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reload.toml");
    let write = |list: &str| {
        std::fs::write(
            &path,
            config_text(&db, &other, &format!("users = [{list}]")),
        )
        .unwrap()
    };
    write(&format!("\"{}\"", db.user));
    let proxy = Proxy::start_from_file(Config::load(&path).unwrap(), &path)
        .await
        .unwrap();
    let addr = proxy.local_addr();
    assert!(
        try_connect(addr, &other, "other-pw", &db.name)
            .await
            .is_err()
    );
    let own = proxy.shared().pool(&db.name, &db.user).unwrap();

    write(&format!("\"{}\", \"{other}\"", db.user));
    let summary = proxy.reload().await.expect("reload");
    assert_eq!(summary.pools_added, [(db.name.clone(), other.clone())]);
    let staying = connect(addr, &other, "other-pw", &db.name).await;
    staying.batch_execute("SELECT 1").await.unwrap();
    let kept = proxy.shared().pool(&db.name, &db.user).unwrap();
    assert!(
        kept.tenure.same(&own.tenure),
        "a list change rebuilt a listed pool"
    );

    // Taken off the list: connected clients finish, new logins are refused.
    write(&format!("\"{}\"", db.user));
    proxy.reload().await.expect("reload");
    staying.batch_execute("SELECT 1").await.unwrap();
    let refused = try_connect(addr, &other, "other-pw", &db.name)
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(&refused).0, "42501", "{}", describe(&refused));
    drop(staying);
    proxy.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unknown_name_on_a_list_is_a_config_error() {
    let text = "[[users]]\nname = \"app\"\npassword = \"pw\"\n\n\
                [[databases]]\nname = \"app\"\ncredentials = \"c\"\nusers = [\"app\", \"ghost\"]\n\n\
                [credentials.c]\nsource = \"static\"\nusername = \"u\"\npassword = \"p\"\n";
    let err = Config::from_toml_str(text, &std::env::temp_dir()).unwrap_err();
    assert_eq!(
        err.problems,
        ["databases[0].users[1]: `ghost` is not the name of any [[users]] entry"]
    );
}

#[test]
fn check_says_who_may_connect_to_each_database() {
    let dir = std::env::temp_dir().join(format!("pglease-access-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("check.toml");
    let text = "[[users]]\nname = \"app\"\npassword = \"pw\"\n\n\
                [[users]]\nname = \"report\"\npassword = \"pw\"\n\n\
                [[databases]]\nname = \"open\"\ncredentials = \"c\"\n\n\
                [[databases]]\nname = \"closed\"\ncredentials = \"c\"\nusers = [\"report\"]\n\n\
                [credentials.c]\nsource = \"static\"\nusername = \"u\"\npassword = \"p\"\n";
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pglease"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("database open: all local users"),
        "{stdout}"
    );
    assert!(stdout.contains("database closed: report"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}
