//! Unit tests of the issuer's pure parts: name and password shapes, the statements it
//! builds, and the configs it refuses before connecting.

use super::*;

fn config() -> IssuerConfig {
    let mut config = IssuerConfig::new(Secret::from("postgres://admin:hunter2@127.0.0.1/db"));
    config.member_of = vec!["app_rw".into(), "x\"; DROP ROLE victim; --".into()];
    config
}

#[test]
fn names_and_passwords_have_the_promised_shape() {
    let suffix = random_suffix();
    assert_eq!(suffix.len(), NAME_RANDOM_CHARS);
    assert!(statements::is_issued_name(
        "pglease",
        &format!("pglease_{suffix}")
    ));
    let password = random_password();
    assert_eq!(password.len(), 43);
    assert!(
        password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_ne!(random_password(), password);
    // Each issuer is an instance of its own, even with one config.
    let config = config();
    let (a, b) = (
        IssuerSource::from_config("app", &config).unwrap(),
        IssuerSource::from_config("app", &config).unwrap(),
    );
    assert_ne!(a.instance(), b.instance());
    assert_eq!(a.instance().len(), 16);
}

#[test]
fn default_creation_quotes_every_name() {
    let mut config = config();
    config.act_as = Some("owner's".into());
    let source = IssuerSource::from_config("app", &config).unwrap();
    let sql = source
        .creation_sql("pglease_abc", "SCRAM-SHA-256$v", "2030-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(
        sql,
        format!(
            "CREATE ROLE \"pglease_abc\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$v' VALID UNTIL \
             '2030-01-01T00:00:00Z' IN ROLE \"app_rw\", \"x\"\"; DROP ROLE victim; --\", \
             \"owner's\";\nCOMMENT ON ROLE \"pglease_abc\" IS 'pglease issued role for \
             credentials \"app\", valid until 2030-01-01T00:00:00Z, instance {}';\n\
             ALTER ROLE \"pglease_abc\" SET role = 'owner''s'",
            source.instance()
        )
    );
}

#[test]
fn templates_are_followed_by_the_mark() {
    let mut config = config();
    config.creation_statements = Some(vec!["CREATE ROLE {{name}} PASSWORD {{password}}".into()]);
    let source = IssuerSource::from_config("app", &config).unwrap();
    let sql = source
        .creation_sql("pglease_abc", "SCRAM-SHA-256$v", "2030-01-01T00:00:00Z")
        .unwrap();
    assert_eq!(
        sql,
        format!(
            "CREATE ROLE \"pglease_abc\" PASSWORD 'SCRAM-SHA-256$v';\n\
             COMMENT ON ROLE \"pglease_abc\" IS 'pglease issued role for credentials \"app\", \
             valid until 2030-01-01T00:00:00Z, instance {}'",
            source.instance()
        )
    );
}

#[test]
fn unsafe_configs_are_refused() {
    for prefix in ["", "Pg", "p-g", "a_very_long_prefix_over_20"] {
        let mut c = config();
        c.prefix = prefix.into();
        assert!(IssuerSource::from_config("app", &c).is_err(), "{prefix}");
    }
    let mut c = config();
    c.member_of.push("a\0b".into());
    assert!(IssuerSource::from_config("app", &c).is_err());
    assert!(IssuerSource::from_config("a\0b", &config()).is_err());
    let mut c = config();
    c.admin_url = Secret::from("postgres://u:hunter2@[bad");
    let err = IssuerSource::from_config("app", &c)
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn roles_of_others_are_refused_before_any_sql() {
    let source = IssuerSource::from_config("app", &config()).unwrap();
    for name in ["postgres", "pgleasex_1", "pglease_Upper", "other_pglease_1"] {
        assert!(matches!(
            source.own_role(name),
            Err(SourceError::Rejected(_))
        ));
    }
    assert_eq!(source.own_role("pglease_a1").ok(), Some("pglease_a1"));
}
