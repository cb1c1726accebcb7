//! The settings prelude's text and the cheap `set_config` check.

use super::*;

fn map(pairs: &[(&str, &str)]) -> Map {
    pairs
        .iter()
        .map(|(n, v)| ((*n).into(), (*v).into()))
        .collect()
}

#[test]
fn prelude_resets_role_first_sets_it_after_the_others_and_encoding_last() {
    let have = map(&[("role", "r1"), ("work_mem", "1MB"), ("x.y", "1")]);
    let wanted = map(&[
        ("client_encoding", "LATIN1"),
        ("role", "r1"),
        ("work_mem", "1MB"),
    ]);
    let (sql, set) = prelude(&have, &wanted, false);
    let order: Vec<&str> = set.iter().map(|n| &**n).collect();
    assert_eq!(order, ["role", "client_encoding"]);
    assert!(sql.starts_with("RESET role;"), "{sql}");
    assert!(sql.contains("RESET \"x.y\";"), "{sql}");
    assert!(
        !sql.contains("'work_mem'"),
        "unchanged settings are left alone: {sql}"
    );
    let role = sql.find("'role'").unwrap();
    assert!(role < sql.find("'client_encoding'").unwrap(), "{sql}");
}

#[test]
fn prelude_with_all_sets_everything_again() {
    let have = map(&[("work_mem", "1MB")]);
    let (_, set) = prelude(&have, &have, true);
    assert_eq!(set.len(), 1);
    assert_eq!(prelude(&have, &have, false).0, "");
}

#[test]
fn set_config_is_found_in_any_case_and_nowhere_else() {
    assert!(mentions_set_config(b"select SET_CONFIG('a','b',false)"));
    assert!(mentions_set_config(b"pg_catalog.set_config"));
    assert!(!mentions_set_config(
        b"select current_setting('x'), set_conf"
    ));
    assert!(!mentions_set_config(b"_"));
    assert!(!mentions_set_config(b""));
}

#[test]
fn reported_names_keep_postgres_spelling() {
    assert_eq!(reported_name("datestyle"), Some("DateStyle"));
    assert_eq!(reported_name("search_path"), None);
}
