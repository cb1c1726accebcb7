//! Turning rows read off an upstream into session state: what is recreated, what pins, and
//! that malformed rows are errors, never panics.

use super::*;

fn hex(s: &str) -> Option<String> {
    Some(s.bytes().map(|b| format!("{b:02x}")).collect())
}

fn row(kind: &str, a: &str, b: &str, from_sql: &str, types: &str) -> Vec<Option<String>> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    vec![opt(kind), hex(a), hex(b), opt(from_sql), opt(types)]
}

#[test]
fn statements_are_recreated_from_their_own_definitions() {
    let mut state = SessionState::default();
    let batch = "INSERT INTO t VALUES (1); PREPARE p (int) AS SELECT $1 + 1";
    let sql = row("prepare", "p", batch, "true", "{23}");
    state.add(sql, "lease").unwrap();
    let protocol = row("prepare", "s0", "SELECT $1::int * $2", "false", "{23,20}");
    state.add(protocol, "lease").unwrap();
    assert_eq!(
        state.prepared,
        vec![
            Prepared::Sql {
                name: "p".into(),
                statement: "PREPARE p (int) AS SELECT $1 + 1".into()
            },
            Prepared::Protocol {
                name: "s0".into(),
                text: "SELECT $1::int * $2".into(),
                types: vec![23, 20]
            },
        ]
    );
    assert!(state.pinned_by.is_empty());
}

#[test]
fn a_prepare_that_cannot_be_picked_out_pins_the_session() {
    let mut state = SessionState::default();
    let twice = "PREPARE p AS SELECT 1; DEALLOCATE p; PREPARE p AS SELECT 2";
    state
        .add(row("prepare", "p", twice, "true", "{}"), "lease")
        .unwrap();
    assert_eq!(state.pinned_by, vec![Pin::UnrecreatableStatements]);
    assert!(state.prepared.is_empty());
    assert_eq!(
        state.pin_reasons(),
        "prepared statements that cannot be recreated exactly"
    );
}

#[test]
fn the_role_is_replayed_unless_it_carries_the_old_leases_identity() {
    let mut state = SessionState::default();
    state
        .add(row("who", "lease", "none", "", ""), "lease")
        .unwrap();
    state
        .add(row("who", "lease", "app_owner", "", ""), "lease")
        .unwrap();
    assert_eq!(
        state.settings,
        vec![
            ("role".into(), "none".into()),
            ("role".into(), "app_owner".into())
        ]
    );
    assert!(state.pinned_by.is_empty());
    state
        .add(row("who", "lease", "lease", "", ""), "lease")
        .unwrap();
    state
        .add(row("who", "other", "none", "", ""), "lease")
        .unwrap();
    assert_eq!(
        state.pinned_by,
        vec![Pin::OwnLeaseRole, Pin::SessionAuthorization]
    );
}

#[test]
fn rows_from_upstream_are_checked() {
    assert!(unhex(Some("6".into())).is_err());
    assert!(unhex(Some("zz".into())).is_err());
    assert!(unhex(Some("ff".into())).is_err(), "not UTF-8");
    assert_eq!(unhex(Some("c3a9".into())).unwrap(), "é");
    assert_eq!(oids(Some("{}")).unwrap(), Vec::<u32>::new());
    assert!(oids(Some("{23,x}")).is_err());
    assert!(oids(Some("23")).is_err());
    let mut state = SessionState::default();
    assert!(state.add(vec![Some("bogus".into())], "lease").is_err());
    let unnamed = vec![Some("set".into()), None, None];
    assert!(state.add(unnamed, "lease").is_err());
}

#[test]
fn a_backslash_in_a_plain_string_pins_only_when_the_session_changed_the_setting() {
    let regex = row("prepare", "s1", r"SELECT $1 ~ '\d+'", "false", "{25}");
    let mut unchanged = SessionState::default();
    unchanged.add(regex.clone(), "lease").unwrap();
    unchanged.check_conforming_strings();
    assert!(unchanged.pinned_by.is_empty());

    let mut changed = SessionState::default();
    let set = row("set", "standard_conforming_strings", "on", "", "");
    changed.add(set, "lease").unwrap();
    changed.add(regex, "lease").unwrap();
    changed.check_conforming_strings();
    assert_eq!(changed.pinned_by, vec![Pin::UnrecreatableStatements]);

    // An E'' string means the same under either value.
    let mut exact = SessionState::default();
    let set = row("set", "standard_conforming_strings", "off", "", "");
    exact.add(set, "lease").unwrap();
    let sql = row("prepare", "p", r"PREPARE p AS SELECT E'\\d'", "true", "{}");
    exact.add(sql, "lease").unwrap();
    exact.check_conforming_strings();
    assert!(exact.pinned_by.is_empty());
}
