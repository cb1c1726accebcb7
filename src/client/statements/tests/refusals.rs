//! What a client hears instead of another client's statement, or of something transaction
//! mode cannot do: PostgreSQL's own errors, and the rest of the batch skipped to Sync.

use super::*;

#[test]
fn binding_a_name_the_client_never_prepared_is_26000_never_another_clients() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("S_1", "select secret").sync());
    // b's own session would say 26000; the proxy says the same and nothing of a's runs.
    let request = Req::new().bind("", "S_1").execute("").sync();
    let heard = b.send(&mut up, &request);
    assert_eq!(tags(&heard), "EZ");
    assert!(frames(&heard)[0].1.contains("C26000"));
    assert!(
        frames(&heard)[0]
            .1
            .contains("prepared statement \"S_1\" does not exist")
    );
    assert!(ran(&heard).is_empty());
    // An upstream name is no way in either.
    let heard = b.send(
        &mut up,
        &Req::new()
            .bind("", &name_of("select secret"))
            .execute("")
            .sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    let heard = b.send(&mut up, &Req::new().describe(b'S', "S_1").sync());
    assert_eq!(tags(&heard), "EZ");
}

#[test]
fn after_a_refusal_the_batch_is_skipped_to_sync_as_postgresql_does() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    c.send(&mut up, &Req::new().parse("s", "select 1").sync());
    let request = Req::new()
        .bind("", "s")
        .execute("")
        .bind("", "nope")
        .execute("")
        .parse("", "select 2")
        .sync();
    let (_, sent) = c.rewrite(&mut Upstream::new(10), &request);
    assert_eq!(
        tags(&sent),
        "CPBEDS",
        "a probe replaces the Bind, the rest waits for Sync"
    );
    let heard = c.send(&mut up, &request);
    assert_eq!(tags(&heard), "2DCEZ");
    // A batch split by Flush keeps skipping until its Sync.
    let heard = c.send(&mut up, &Req::new().bind("", "nope").flush());
    assert_eq!(tags(&heard), "E");
    let (_, sent) = c.rewrite(&mut up, &Req::new().execute("").sync());
    assert_eq!(tags(&sent), "S");
    c.direct.run(&Req::new().execute("").sync());
    let replies = up.pg.run(&sent);
    up.filter(&replies, &mut BytesMut::new());
    assert!(up.state.idle());
    assert_eq!(
        tags(&c.send(&mut up, &Req::new().bind("", "s").execute("").sync())),
        "2DCZ"
    );
}

#[test]
fn another_clients_unnamed_statement_cannot_be_bound() {
    let (mut a, mut b) = (Client::new(), Client::new());
    let mut up = Upstream::new(10);
    a.send(&mut up, &Req::new().parse("", "select secret").sync());
    let heard = b.send(&mut up, &Req::new().bind("", "").execute("").sync());
    assert_eq!(tags(&heard), "EZ");
    assert!(
        frames(&heard)[0]
            .1
            .contains("unnamed prepared statement does not exist")
    );
    // Its own, in a later transaction on the same upstream, it may.
    assert_eq!(
        ran(&a.send(&mut up, &Req::new().bind("", "").execute("").sync())),
        ["select secret"]
    );
}

#[test]
fn a_client_holding_the_most_statements_is_refused_a_new_name_but_keeps_its_own() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    for i in 0..MAX_CLIENT_STATEMENTS {
        c.statements
            .insert(format!("s{i}").as_bytes(), b"select 1", b"");
    }
    let heard = c.send_only(&mut up, &Req::new().parse("one_more", "select 2").sync());
    assert_eq!(tags(&heard), "EZ", "{:?}", frames(&heard));
    assert!(
        frames(&heard)[0].1.contains("C53400"),
        "{:?}",
        frames(&heard)
    );
    assert_eq!(c.statements.len(), MAX_CLIENT_STATEMENTS);
    // A name it already holds may still be prepared again.
    let heard = c.send_only(&mut up, &Req::new().parse("s7", "select 3").sync());
    assert_eq!(tags(&heard), "1Z", "{:?}", frames(&heard));
}

#[test]
fn sql_prepare_execute_deallocate_are_refused_with_0a000() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    for request in [
        Req::new().query("PREPARE p AS SELECT 1"),
        Req::new().query("select 1; EXECUTE p"),
        Req::new().query("deallocate p"),
    ] {
        let heard = c.send_only(&mut up, &request);
        assert_eq!(tags(&heard), "EZ");
        assert!(
            frames(&heard)[0].1.contains("C0A000"),
            "{:?}",
            frames(&heard)
        );
    }
    let heard = c.send_only(
        &mut up,
        &Req::new()
            .parse("", "execute p")
            .bind("", "")
            .execute("")
            .sync(),
    );
    assert_eq!(tags(&heard), "EZ");
    assert!(frames(&heard)[0].1.contains("C0A000"));
    assert!(up.pg.received.iter().all(|&t| t != b'B' && t != b'E'));
    // PREPARE TRANSACTION is not a statement.
    assert_eq!(
        tags(&c.send_only(&mut up, &Req::new().query("PREPARE TRANSACTION 'x'"))),
        "CZ"
    );
}

#[test]
fn refusal_messages_are_postgresqls() {
    assert_eq!(Refusal::Missing(b"S_1"[..].into()).code(), "26000");
    assert_eq!(
        Refusal::Missing(b"S_1"[..].into()).message(),
        "prepared statement \"S_1\" does not exist"
    );
    assert_eq!(Refusal::SqlCommand.code(), "0A000");
}

#[test]
fn state_that_cannot_follow_the_client_is_refused_with_0a000_before_anything_runs() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    for (text, names) in [
        (
            "insert into t values (1); select pg_advisory_lock(1)",
            "advisory",
        ),
        ("declare c cursor with hold for select 1", "WITH HOLD"),
        ("create temp table t (a int)", "ON COMMIT DROP"),
        ("set session authorization alice", "SESSION AUTHORIZATION"),
    ] {
        let (heard, sent) = c.exchange_only(&mut up, &Req::new().query(text));
        assert_eq!(tags(&heard), "EZ", "{text}");
        // The whole Query was replaced by the probe: nothing of it reached the upstream.
        assert_eq!(
            frames(&sent),
            [('Q', "pglease refused this query\0".into())]
        );
        let (_, error) = &frames(&heard)[0];
        assert!(error.contains("C0A000"), "{error}");
        assert!(error.contains(names), "{error}");
        assert!(error.contains("transaction mode"), "{error}");
    }
    // In a Parse, the rest of the batch is skipped to Sync.
    let request = Req::new()
        .parse("", "select pg_try_advisory_lock_shared(1)")
        .bind("", "")
        .execute("")
        .sync();
    let heard = c.send_only(&mut up, &request);
    assert_eq!(tags(&heard), "EZ");
    assert!(frames(&heard)[0].1.contains("C0A000"));
    assert!(up.pg.received.iter().all(|&t| t != b'B' && t != b'E'));
    // What is confined to the transaction passes.
    for text in [
        "select pg_advisory_xact_lock(1)",
        "create temp table t (a int) on commit drop",
        "reset session authorization",
    ] {
        assert_eq!(
            tags(&c.send_only(&mut up, &Req::new().query(text))),
            "CZ",
            "{text}"
        );
    }
}

#[test]
fn text_the_lexer_cannot_judge_calls_for_a_check_at_release() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let check = |c: &mut Client| c.statements.take_state_check();
    c.send_only(
        &mut up,
        &Req::new().query("select abalance from t where aid = 1"),
    );
    assert!(!check(&mut c), "an ordinary query costs no check");
    c.send_only(
        &mut up,
        &Req::new().query("do $$ begin perform pg_advisory_lock(1); end $$"),
    );
    assert!(check(&mut c));
    assert!(!check(&mut c), "once per mention");
    // A named statement prepared now and run in a later transaction: its run is checked.
    let body = "do $$ begin execute 'create temp table t (a int)'; end $$";
    c.send_only(&mut up, &Req::new().parse("s", body).sync());
    assert!(check(&mut c));
    let run = Req::new().bind("", "s").execute("").sync();
    c.send_only(&mut up, &run);
    assert!(check(&mut c));
    // Replaced by a harmless text, it no longer is.
    c.send_only(&mut up, &Req::new().parse("s", "select 1").sync());
    check(&mut c);
    c.send_only(&mut up, &run);
    assert!(!check(&mut c));
    // The unnamed statement, bound again later by the client that parsed it.
    c.send_only(&mut up, &Req::new().parse("", body).sync());
    check(&mut c);
    c.send_only(&mut up, &Req::new().bind("", "").execute("").sync());
    assert!(check(&mut c));
    // A fast-path function call names its function by OID only.
    let mut call = BytesMut::from(&[b'F', 0, 0, 0, 14, 0, 0, 11, 32, 0, 0, 0, 0, 0, 0][..]);
    call.extend_from_slice(&Req::new().sync());
    let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
    c.statements
        .rewrite(&call, b'I', &mut up.state, &mut out, &mut heard)
        .expect("rewrite");
    assert!(check(&mut c));
}

#[test]
fn text_that_may_call_set_config_calls_for_the_settings_to_be_read() {
    let mut c = Client::new();
    let mut up = Upstream::new(10);
    let check = |c: &mut Client| c.statements.take_settings_check();
    c.send_only(
        &mut up,
        &Req::new().query("select reset_conf, configured from t"),
    );
    assert!(!check(&mut c), "an ordinary query costs no read");
    c.send_only(
        &mut up,
        &Req::new().query("select 1; SELECT SET_CONFIG('a.b', 'c', false)"),
    );
    assert!(check(&mut c));
    assert!(!check(&mut c), "once per mention");
    // Escapes can spell the name without its letters.
    c.send_only(
        &mut up,
        &Req::new().query("select U&\"s\\0065t_config\"('a.b', 'c', false)"),
    );
    assert!(check(&mut c));
    // A named statement prepared now and run later, on an upstream that already has it: the
    // Bind holds no set_config, the statement does.
    let body = "select set_config('a.b', $1, false)";
    c.send_only(&mut up, &Req::new().parse("s", body).sync());
    check(&mut c);
    let run = Req::new().bind("", "s").execute("").sync();
    let (_, sent) = c.exchange_only(&mut up, &run);
    assert_eq!(tags(&sent), "BES", "nothing prepared again");
    assert!(check(&mut c));
    // Replaced by a harmless text, it no longer is.
    c.send_only(&mut up, &Req::new().parse("s", "select 1").sync());
    check(&mut c);
    c.send_only(&mut up, &run);
    assert!(!check(&mut c));
    // The unnamed statement, bound again later by the client that parsed it.
    c.send_only(&mut up, &Req::new().parse("", body).sync());
    check(&mut c);
    c.send_only(&mut up, &Req::new().bind("", "").execute("").sync());
    assert!(check(&mut c));
    // A fast-path function call may call set_config by its OID.
    let mut call = BytesMut::from(&[b'F', 0, 0, 0, 14, 0, 0, 8, 30, 0, 0, 0, 0, 0, 0][..]);
    call.extend_from_slice(&Req::new().sync());
    let (mut out, mut heard) = (BytesMut::new(), BytesMut::new());
    c.statements
        .rewrite(&call, b'I', &mut up.state, &mut out, &mut heard)
        .expect("rewrite");
    assert!(check(&mut c));
}
