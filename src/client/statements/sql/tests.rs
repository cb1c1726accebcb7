//! The lexer and the statement checks, text by text.

use super::*;

fn c(text: &str) -> Command {
    classify(text.as_bytes())
}

#[test]
fn first_words_of_each_statement_decide() {
    assert_eq!(c("select 1"), Command::Other);
    assert_eq!(c("PREPARE p (int) AS SELECT $1"), Command::Named);
    assert_eq!(
        c("  /* hi /* nested */ */ -- x\n prepare p as select 1"),
        Command::Named
    );
    assert_eq!(c("execute p(1)"), Command::Named);
    assert_eq!(c("DEALLOCATE p"), Command::Named);
    assert_eq!(c("deallocate prepare p"), Command::Named);
    assert_eq!(c("DEALLOCATE ALL"), Command::DropsAll);
    assert_eq!(c("deallocate prepare all;"), Command::DropsAll);
    assert_eq!(c("DISCARD ALL"), Command::DropsAll);
    assert_eq!(c("discard plans"), Command::Other);
    assert_eq!(c("PREPARE TRANSACTION 'x'"), Command::Other);
    assert_eq!(c("select 1; execute p"), Command::Named);
    assert_eq!(c(";;discard all; select 1"), Command::DropsAll);
    assert_eq!(c("discard all; execute p"), Command::Named);
}

#[test]
fn words_inside_strings_comments_and_bodies_do_not_count() {
    assert_eq!(c("select 'a; execute p'"), Command::Other);
    assert_eq!(c("select \"x; execute p\""), Command::Other);
    assert_eq!(c("do $$ begin execute 'x'; end $$"), Command::Other);
    assert_eq!(c("do $f$ begin; execute 'x'; end $f$"), Command::Other);
    assert_eq!(c("select $1; select a$b$c; select 2"), Command::Other);
    assert_eq!(c("select 1 -- ; execute p"), Command::Other);
    assert_eq!(c("select /* ; execute p */ 1"), Command::Other);
    assert_eq!(
        c("create rule r as on insert to t do also (notify a; notify b)"),
        Command::Other
    );
    assert_eq!(c("grant execute on function f() to x"), Command::Other);
    assert_eq!(c("select 'it''s'; select 1"), Command::Other);
}

#[test]
fn backslash_readings_are_both_considered() {
    // With backslash escapes the string ends at the second quote and EXECUTE is code.
    assert_eq!(c(r"select '\'; execute p; --'"), Command::Named);
    // E'' strings always escape, so this is one statement in both readings.
    assert_eq!(c(r"select e'\'; execute p; --'"), Command::Other);
}

#[test]
fn odd_texts_never_panic() {
    for t in [
        "",
        "'",
        "$",
        "$a",
        "$a$",
        "/*",
        "e'",
        "\"",
        "deallocate prepare",
        "(((;",
    ] {
        let _ = c(t);
    }
    assert_eq!(classify(b"\xff\xfe; prepare x as select 1"), Command::Named);
}

fn refused(what: Unconfined) -> Command {
    Command::Unconfined(what)
}

#[test]
fn session_advisory_locks_are_found_wherever_they_are_called() {
    let lock = refused(Unconfined::AdvisoryLock);
    for t in [
        "select pg_advisory_lock(1)",
        "SELECT PG_ADVISORY_LOCK(1, 2)",
        "select pg_catalog.pg_advisory_lock_shared (7)",
        "select 1 from t where pg_try_advisory_lock(id)",
        "select pg_try_advisory_lock_shared(1)",
        "select \"pg_advisory_lock\"(1)",
        "select 1; select x from (select pg_advisory_lock(1)) s",
        "insert into t values (1); select pg_advisory_lock(1)",
        "select /* c */ pg_advisory_lock /* c */ (1)",
        "explain analyze select pg_advisory_lock(1)",
    ] {
        assert_eq!(c(t), lock, "{t}");
    }
    for t in [
        "select pg_advisory_xact_lock(1)",
        "select pg_try_advisory_xact_lock_shared(1)",
        "select pg_advisory_unlock(1), pg_advisory_unlock_all()",
        "select pg_advisory_lock_x(1)",
        "select my_pg_advisory_lock(1)",
        "select pg_advisory_lock from t",
        "select \"PG_ADVISORY_LOCK\"(1)",
        "select \"pg_advisory_lock(1)\"",
    ] {
        assert_eq!(c(t), Command::Other, "{t}");
    }
}

#[test]
fn hold_cursors_are_refused_and_other_cursors_pass() {
    let hold = refused(Unconfined::HoldCursor);
    assert_eq!(c("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), hold);
    assert_eq!(
        c("declare \"c\" binary no scroll cursor with hold for select 1"),
        hold
    );
    assert_eq!(c("declare cursor cursor with hold for select 1"), hold);
    assert_eq!(c("begin; declare c cursor with hold for select 1"), hold);
    assert_eq!(
        c("declare c cursor without hold for select 1"),
        Command::Other
    );
    assert_eq!(c("declare c cursor for select 'with hold'"), Command::Other);
    assert_eq!(c("declare; select 'hold'"), Command::Other);
}

#[test]
fn temporary_objects_that_outlive_their_transaction_are_refused() {
    let temp = refused(Unconfined::TempObject);
    for t in [
        "create temp table t (a int)",
        "CREATE TEMPORARY TABLE t (a int) ON COMMIT PRESERVE ROWS",
        "create local temp table t (a int) on commit delete rows",
        "create global temporary table if not exists t (a int)",
        "create temp table t as select 1",
        "create temp table t (a int) as select 1 as on",
        "create temp view v as select 1",
        "create or replace temp recursive view v (n) as select 1",
        "create temp sequence s",
        "create table pg_temp.t (a int)",
        "create table \"pg_temp\".t (a int)",
        "create sequence pg_temp_3.s",
        "select 1 as a into temp t",
        "SELECT * INTO TEMPORARY TABLE t FROM x",
        "select 1 into local temp t",
        "select 1 into pg_temp.t",
        "with q as (select 1) select * into temp t from q",
        "explain analyze create temp table t as select 1",
    ] {
        assert_eq!(c(t), temp, "{t}");
    }
    for t in [
        "create temp table t (a int) on commit drop",
        "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1",
        "create table temp (a int)",
        "create table t (temp int)",
        "create table t (a int); select 'temp'",
        "insert into temp values (1)",
        "with q as (select 1) insert into temp select * from q",
        "select temp from t",
        "select * from pg_temp.t",
        "select 1 into t",
        "select '1 into temp t'",
        "create temp_x table t",
    ] {
        assert_eq!(c(t), Command::Other, "{t}");
    }
}

#[test]
fn set_session_authorization_is_refused_but_its_harmless_forms_pass() {
    let auth = refused(Unconfined::SessionAuthorization);
    assert_eq!(c("SET SESSION AUTHORIZATION alice"), auth);
    assert_eq!(c("set session session authorization 'alice'"), auth);
    assert_eq!(c("select 1; set session authorization alice"), auth);
    for t in [
        "reset session authorization",
        "set session authorization default",
        "set local session authorization alice",
        "set session work_mem = '1MB'",
        "select 'set session authorization x'",
    ] {
        assert_eq!(c(t), Command::Other, "{t}");
    }
}

#[test]
fn the_words_inside_strings_comments_dollar_quotes_and_identifiers_do_not_count() {
    for t in [
        "select 'pg_advisory_lock(1)'",
        "select e'\\' pg_advisory_lock(1) '",
        "select 1 -- pg_advisory_lock(1)\n",
        "select /* declare c cursor with hold for */ 1",
        "select $$create temp table t (a int)$$",
        "select $q$ select pg_advisory_lock(1) $q$",
        "do $$ begin perform pg_advisory_lock(1); end $$",
        "select \"create temp table t\" from x",
        "select 1 as \"pg_advisory_lock\"",
    ] {
        assert_eq!(c(t), Command::Other, "{t}");
    }
    // Both readings of a backslash: code in one of them is enough.
    assert_eq!(
        c(r"select '\'; select pg_advisory_lock(1); --'"),
        refused(Unconfined::AdvisoryLock)
    );
}

#[test]
fn explain_analyze_is_judged_by_what_it_runs() {
    assert_eq!(c("explain analyze execute p"), Command::Named);
    assert_eq!(
        c("explain (analyze, costs off) execute p(1)"),
        Command::Named
    );
    assert_eq!(c("explain select 1"), Command::Other);
    assert_eq!(c(&"explain ".repeat(10_000)), Command::Other);
}

#[test]
fn mentions_are_a_cheap_superset_of_what_is_checked() {
    let m = |t: &str| examine(t.as_bytes()).1;
    for t in [
        "do $$ begin perform pg_advisory_lock(1); end $$",
        "do $$ begin execute 'create temp table t (a int)'; end $$",
        "select 'with hold'",
        "select f() -- TEMPORARY",
        "select 'set session authorization x'",
        "select 1 from pg_temp.t",
        "TEMP",
        "x;HOLD",
    ] {
        assert!(m(t), "{t}");
    }
    for t in ["", "hol", "tem", "attempt"] {
        assert!(!m(t), "{t}");
    }
    for t in [
        "select abalance from pgbench_accounts where aid = $1",
        "select threshold, holder from attempts",
        "select template, temperature from t",
    ] {
        assert!(!m(t), "{t}");
    }
}
