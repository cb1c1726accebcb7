//! What a session move recreates on the new lease's upstream, and that it recreates state from
//! its own definitions only: nothing a client sent along with a `PREPARE` runs again, nothing
//! the client's `search_path` puts first is ever called, and what cannot be recreated exactly
//! keeps the session on its lease.

use super::*;

/// A session-mode proxy on issued leases that only rotate when asked.
async fn session_proxy(
    db: &TestDb,
    prefix: &str,
) -> (pglease::app::Proxy, pglease::credentials::Credentials) {
    let toml = issuer_toml(db, prefix, "session")
        .replace("ttl = \"8s\"", "ttl = \"10m\"")
        .replace("max_ttl = \"30s\"", "max_ttl = \"20m\"");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["rotating"].clone();
    (proxy, creds)
}

/// Asks for a rotation and waits until `client` is served by the new lease's role; returns
/// that role.
async fn rotate_until_moved(
    creds: &pglease::credentials::Credentials,
    client: &tokio_postgres::Client,
) -> String {
    let generation = creds.generation();
    creds.rotate_now();
    let until = Instant::now() + Duration::from_secs(30);
    while creds.generation() == generation {
        assert!(Instant::now() < until, "no rotation: {:?}", creds.state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_role = creds.state().username.expect("the new lease");
    loop {
        let serving = first_value(client, "SELECT session_user").await;
        if serving == new_role {
            return new_role;
        }
        assert!(
            Instant::now() < until,
            "the session did not move to {new_role}: still on {serving}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks for a few seconds that `client` stays on `role`: long enough for every session of
/// a small pool to have been offered a replacement several times over.
async fn stays_on(client: &tokio_postgres::Client, role: &str, why: &str) {
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            first_value(client, "SELECT session_user").await,
            role,
            "{why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_sent_with_a_prepare_runs_once_across_rotations() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("once").await;
    let setup = owner(&db).await;
    setup
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create table");
    let (proxy, creds) = session_proxy(&db, "oncex").await;
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    // One simple Query: PostgreSQL stores all of it as the text of `p`.
    client
        .batch_execute("INSERT INTO t VALUES (1); PREPARE p (int) AS SELECT $1 + 1")
        .await
        .expect("insert and prepare");
    let doubled = client
        .prepare("SELECT $1::int * 2")
        .await
        .expect("a protocol-level statement");
    let mut roles = vec![first_value(&client, "SELECT session_user").await];
    for round in 0..3 {
        let role = rotate_until_moved(&creds, &client).await;
        assert!(!roles.contains(&role), "round {round}: {role} again");
        roles.push(role);
        assert_eq!(
            first_value(&client, "EXECUTE p(41)").await,
            "42",
            "round {round}"
        );
        let row = client
            .query_one(&doubled, &[&21i32])
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", describe(&e)));
        assert_eq!(row.get::<_, i32>(0), 42, "round {round}");
    }
    assert_eq!(
        first_value(&setup, "SELECT count(*) FROM t").await,
        "1",
        "the INSERT sent along with the PREPARE ran again on a move"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_that_cannot_be_picked_out_of_its_text_pins_the_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("pinprep").await;
    let (proxy, creds) = session_proxy(&db, "pinpx").await;
    let addr = proxy.local_addr();
    // Two PREPAREs of `q` in one text: which one made the statement is not the lexer's guess.
    let pinned = connect(addr, &db.user, &db.password, &db.name).await;
    pinned
        .batch_execute("PREPARE q AS SELECT 1; DEALLOCATE q; PREPARE q AS SELECT 2")
        .await
        .expect("prepare twice");
    let old_role = first_value(&pinned, "SELECT session_user").await;
    let mover = connect(addr, &db.user, &db.password, &db.name).await;
    mover
        .batch_execute("PREPARE r AS SELECT 3")
        .await
        .expect("prepare");

    rotate_until_moved(&creds, &mover).await;
    stays_on(
        &pinned,
        &old_role,
        "a session whose PREPARE cannot be picked out exactly moved",
    )
    .await;
    assert_eq!(first_value(&pinned, "EXECUTE q").await, "2");
    assert_eq!(first_value(&mover, "EXECUTE r").await, "3");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_never_calls_what_the_clients_search_path_puts_first() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("shadow").await;
    let setup = owner(&db).await;
    // Functions that would stand in for the catalog's, were a move to call them unqualified.
    setup
        .batch_execute(
            "CREATE TABLE calls (f text);
             CREATE SCHEMA shadow;
             CREATE FUNCTION shadow.current_setting(text) RETURNS text LANGUAGE sql
                 AS $$ INSERT INTO public.calls VALUES ('current_setting') RETURNING 'x' $$;
             CREATE FUNCTION shadow.set_config(text, text, boolean) RETURNS text LANGUAGE sql
                 AS $$ INSERT INTO public.calls VALUES ('set_config') RETURNING 'x' $$;
             CREATE FUNCTION shadow.encode(bytea, text) RETURNS text LANGUAGE sql
                 AS $$ INSERT INTO public.calls VALUES ('encode') RETURNING 'x' $$;",
        )
        .await
        .expect("shadowing functions");
    let (proxy, creds) = session_proxy(&db, "shadx").await;
    let client = connect(proxy.local_addr(), &db.user, &db.password, &db.name).await;
    client
        .batch_execute("SET search_path = shadow, pg_catalog, public; SET work_mem = '7MB'")
        .await
        .expect("settings");
    rotate_until_moved(&creds, &client).await;
    assert_eq!(first_value(&client, "SHOW work_mem").await, "7MB");
    assert_eq!(
        first_value(&client, "SHOW search_path").await,
        "shadow, pg_catalog, public"
    );
    assert_eq!(
        first_value(
            &setup,
            "SELECT coalesce(string_agg(f, ', '), 'none') FROM calls"
        )
        .await,
        "none",
        "a move called the client's functions"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_follows_a_move_but_set_role_to_the_lease_itself_pins() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("roles").await;
    let (proxy, creds) = session_proxy(&db, "rolex").await;
    let addr = proxy.local_addr();
    // Every issued role is a member of the database's role, so each lease may take it.
    let member = connect(addr, &db.user, &db.password, &db.name).await;
    member
        .batch_execute(&format!("SET ROLE \"{}\"", db.role))
        .await
        .expect("set role");
    // The lease's own role: no later lease can become it.
    let itself = connect(addr, &db.user, &db.password, &db.name).await;
    let old_role = first_value(&itself, "SELECT session_user").await;
    itself
        .batch_execute(&format!("SET ROLE \"{old_role}\""))
        .await
        .expect("set role to itself");

    rotate_until_moved(&creds, &member).await;
    assert_eq!(first_value(&member, "SELECT current_user").await, db.role);
    stays_on(
        &itself,
        &old_role,
        "a session on SET ROLE to its lease's own role moved",
    )
    .await;
    assert_eq!(first_value(&itself, "SELECT current_user").await, old_role);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_the_new_lease_refuses_keeps_the_session_where_it_is() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = fresh_db("refused").await;
    let setup = owner(&db).await;
    setup
        .batch_execute("CREATE TABLE gone (x int)")
        .await
        .expect("create table");
    let (proxy, creds) = session_proxy(&db, "refx").await;
    let addr = proxy.local_addr();
    let stuck = connect(addr, &db.user, &db.password, &db.name).await;
    // Held: tokio-postgres closes a statement when it is dropped.
    let _on_gone = stuck
        .prepare("SELECT x FROM gone")
        .await
        .expect("a statement on the table");
    // The statement outlives its table on this backend; no other backend can parse it again.
    setup
        .batch_execute("DROP TABLE gone")
        .await
        .expect("drop table");
    let old_role = first_value(&stuck, "SELECT session_user").await;
    let mover = connect(addr, &db.user, &db.password, &db.name).await;

    rotate_until_moved(&creds, &mover).await;
    stays_on(
        &stuck,
        &old_role,
        "a session whose state the new lease refused moved anyway",
    )
    .await;
    assert_eq!(first_value(&stuck, "SELECT 1").await, "1");
    proxy.shutdown().await;
}
