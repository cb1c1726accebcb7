//! The SQL the issuer sends: built-in statements, `{{placeholder}}` templates, role-name rules
//! and the quoting that keeps every substituted value inert.
//!
//! # Quoting
//!
//! Templates follow Vault's convention: the template supplies the quotes, as in
//! `CREATE ROLE "{{name}}" PASSWORD '{{password}}'`. [`render`] scans the template and knows,
//! for each placeholder, which quotes it stands in:
//!
//! - inside `"…"` the value is escaped as an identifier body (`"` doubled);
//! - inside `'…'` (or `E'…'`) as a string body (`'` doubled); backslashes are refused, as they
//!   would be escapes in `E'…'` or with `standard_conforming_strings = off`;
//! - outside any quotes the value is emitted fully quoted: `{{name}}` as an identifier, the
//!   others as string literals, so a template without quotes is still safe;
//! - inside a comment or a dollar-quoted body it is refused, as no escaping exists there.
//!
//! NUL is refused everywhere: PostgreSQL would cut the string at it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres_protocol::escape::{escape_identifier, escape_literal};
use thiserror::Error;

/// Why a statement could not be built. Never holds a substituted value, which may be secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatementError {
    /// A value for `{{placeholder}}` contains NUL or, inside a string, a backslash.
    #[error("value for {{{{{0}}}}} contains a character that cannot be quoted safely")]
    UnsafeValue(&'static str),
    /// A placeholder sits where no quoting is possible (comment, dollar-quoted body).
    #[error(
        "{{{{{0}}}}} appears inside a comment or dollar-quoted text, where it cannot be quoted"
    )]
    UnquotableContext(&'static str),
    /// A `{{…}}` that is not one of `name`, `password`, `expiration`, or is never closed.
    #[error("template has an unknown or unterminated placeholder")]
    BadPlaceholder,
    /// A name that must be an identifier contains NUL.
    #[error("role name contains a NUL byte")]
    BadIdentifier,
}

/// The values a template's placeholders are replaced with.
#[derive(Clone, Copy)]
pub struct Values<'a> {
    /// `{{name}}`: the issued role.
    pub name: &'a str,
    /// `{{password}}`: the SCRAM verifier on creation, empty elsewhere.
    pub password: &'a str,
    /// `{{expiration}}`: the role's `VALID UNTIL`, as [`timestamp`] formats it.
    pub expiration: &'a str,
}

/// Where the scanner is in the template.
#[derive(Clone, PartialEq, Eq)]
enum Context {
    Bare,
    Identifier,
    Literal,
    LineComment,
    BlockComment,
    Dollar(String),
}

/// Replaces every placeholder in `template` with its value, quoted for where it stands (see
/// the module docs); the result is one or more complete SQL statements.
pub fn render(template: &str, values: &Values<'_>) -> Result<String, StatementError> {
    let mut out = String::with_capacity(template.len() + 128);
    let mut context = Context::Bare;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") {
            let close = rest.find("}}").ok_or(StatementError::BadPlaceholder)?;
            let key = rest.get(2..close).ok_or(StatementError::BadPlaceholder)?;
            substitute(&mut out, key, values, &context)?;
            rest = rest.get(close + 2..).unwrap_or_default();
            continue;
        }
        let step = advance(&mut context, rest, c);
        out.push_str(rest.get(..step).unwrap_or_default());
        rest = rest.get(step..).unwrap_or_default();
    }
    Ok(out)
}

/// Moves the scanner past the token starting at `rest` (whose first char is `c`), updating
/// `context`; returns how many bytes the token has.
fn advance(context: &mut Context, rest: &str, c: char) -> usize {
    match context {
        Context::Bare => {
            if rest.starts_with("--") {
                *context = Context::LineComment;
                2
            } else if rest.starts_with("/*") {
                *context = Context::BlockComment;
                2
            } else if c == '"' {
                *context = Context::Identifier;
                1
            } else if c == '\'' {
                *context = Context::Literal;
                1
            } else if let Some(tag) = dollar_tag(rest) {
                let len = tag.len();
                *context = Context::Dollar(tag);
                len
            } else {
                c.len_utf8()
            }
        }
        // A doubled quote leaves and re-enters at once, which is what it means.
        Context::Identifier if c == '"' => leave(context, 1),
        Context::Literal if c == '\'' => leave(context, 1),
        Context::LineComment if c == '\n' => leave(context, 1),
        Context::BlockComment if rest.starts_with("*/") => leave(context, 2),
        Context::Dollar(tag) if rest.starts_with(tag.as_str()) => {
            let len = tag.len();
            leave(context, len)
        }
        _ => c.len_utf8(),
    }
}

fn leave(context: &mut Context, len: usize) -> usize {
    *context = Context::Bare;
    len
}

/// `$tag$` or `$$` at the start of `rest`, as PostgreSQL's lexer would read a dollar quote.
fn dollar_tag(rest: &str) -> Option<String> {
    let body = rest.strip_prefix('$')?;
    let end = body.find('$')?;
    let tag = body.get(..end)?;
    let valid = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_alphabetic() || (i > 0 && c.is_ascii_digit()));
    valid.then(|| format!("${tag}$"))
}

fn substitute(
    out: &mut String,
    key: &str,
    values: &Values<'_>,
    context: &Context,
) -> Result<(), StatementError> {
    let (key, value, is_identifier): (&'static str, &str, bool) = match key {
        "name" => ("name", values.name, true),
        "password" => ("password", values.password, false),
        "expiration" => ("expiration", values.expiration, false),
        _ => return Err(StatementError::BadPlaceholder),
    };
    if value.contains('\0') {
        return Err(StatementError::UnsafeValue(key));
    }
    match context {
        Context::Identifier => out.push_str(&value.replace('"', "\"\"")),
        Context::Literal if value.contains('\\') => return Err(StatementError::UnsafeValue(key)),
        Context::Literal => out.push_str(&value.replace('\'', "''")),
        Context::Bare if is_identifier => out.push_str(&escape_identifier(value)),
        Context::Bare => out.push_str(&escape_literal(value)),
        _ => return Err(StatementError::UnquotableContext(key)),
    }
    Ok(())
}

/// A quoted identifier, refusing NUL (which PostgreSQL would silently cut the name at).
pub fn ident(name: &str) -> Result<String, StatementError> {
    if name.contains('\0') {
        return Err(StatementError::BadIdentifier);
    }
    Ok(escape_identifier(name))
}

/// True when `name` is a role this issuer made: `^<prefix>_[a-z0-9]+$`. Checked before every
/// statement that drops or alters a role, so no other role can ever be touched.
pub fn is_issued_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|random| {
            !random.is_empty()
                && random
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// `t` (whole seconds, UTC) as an RFC 3339 timestamp PostgreSQL reads as `timestamptz`.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(20);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    out
}

/// `t` truncated to whole seconds, so the lease's expiry equals what PostgreSQL stores.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); the well-known
/// era-based conversion, exact for every date a `SystemTime` can hold.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: Values<'static> = Values {
        name: "pglease_abc123",
        password: "SCRAM-SHA-256$4096:c2FsdA==$a:b",
        expiration: "2030-01-02T03:04:05Z",
    };

    #[test]
    fn vault_style_template_substitutes_inside_the_quotes() {
        let sql = render(
            "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
            &VALUES,
        );
        assert_eq!(
            sql.as_deref(),
            Ok("CREATE ROLE \"pglease_abc123\" LOGIN PASSWORD \
                'SCRAM-SHA-256$4096:c2FsdA==$a:b' VALID UNTIL '2030-01-02T03:04:05Z'")
        );
    }

    #[test]
    fn bare_placeholders_are_quoted_by_kind() {
        let sql = render("ALTER ROLE {{name}} VALID UNTIL {{expiration}};", &VALUES);
        assert_eq!(
            sql.as_deref(),
            Ok("ALTER ROLE \"pglease_abc123\" VALID UNTIL '2030-01-02T03:04:05Z';")
        );
    }

    #[test]
    fn quotes_in_values_are_doubled_for_their_context() {
        let values = Values {
            name: "a\"; DROP ROLE victim; --",
            password: "x'; DROP ROLE victim; --",
            expiration: "",
        };
        let sql = render(
            "DROP ROLE \"{{name}}\"; SELECT '{{password}}' = '{{name}}'",
            &values,
        );
        assert_eq!(
            sql.as_deref(),
            Ok("DROP ROLE \"a\"\"; DROP ROLE victim; --\"; \
                SELECT 'x''; DROP ROLE victim; --' = 'a\"; DROP ROLE victim; --'")
        );
        let bare = render("DROP ROLE {{name}}", &values);
        assert_eq!(
            bare.as_deref(),
            Ok("DROP ROLE \"a\"\"; DROP ROLE victim; --\"")
        );
    }

    #[test]
    fn backslash_in_a_string_and_nul_anywhere_are_refused() {
        let backslash = Values {
            password: "x\\'; DROP ROLE victim; --",
            ..VALUES
        };
        assert_eq!(
            render("SELECT E'{{password}}'", &backslash),
            Err(StatementError::UnsafeValue("password"))
        );
        // Outside quotes escape_literal handles backslashes with its own E'' form.
        assert_eq!(
            render("SELECT {{password}}", &backslash),
            Ok(format!("SELECT {}", escape_literal(backslash.password)))
        );
        let nul = Values {
            name: "a\0b",
            ..VALUES
        };
        assert_eq!(
            render("DROP ROLE \"{{name}}\"", &nul),
            Err(StatementError::UnsafeValue("name"))
        );
        assert_eq!(ident("a\0b"), Err(StatementError::BadIdentifier));
    }

    #[test]
    fn placeholders_in_comments_and_dollar_quotes_are_refused() {
        for template in [
            "SELECT 1 -- {{name}}",
            "SELECT 1 /* {{name}} */",
            "DO $$ BEGIN EXECUTE '{{name}}'; END $$",
            "DO $body$ {{password}} $body$",
        ] {
            assert!(
                matches!(
                    render(template, &VALUES),
                    Err(StatementError::UnquotableContext(_))
                ),
                "{template}"
            );
        }
        // After the comment or dollar quote ends, substitution works again.
        let sql = render("SELECT $$x$$ -- c\n, {{name}} /* d */", &VALUES);
        assert_eq!(
            sql.as_deref(),
            Ok("SELECT $$x$$ -- c\n, \"pglease_abc123\" /* d */")
        );
    }

    #[test]
    fn unknown_or_unterminated_placeholders_are_refused() {
        assert_eq!(
            render("SELECT '{{username}}'", &VALUES),
            Err(StatementError::BadPlaceholder)
        );
        assert_eq!(
            render("SELECT '{{name'", &VALUES),
            Err(StatementError::BadPlaceholder)
        );
    }

    #[test]
    fn errors_never_carry_the_value() {
        let secret = Values {
            password: "s3cr3t\0",
            ..VALUES
        };
        let err = render("'{{password}}'", &secret).map(|_| ()).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        assert_eq!(
            err.to_string(),
            "value for {{password}} contains a character that cannot be quoted safely"
        );
    }

    #[test]
    fn issued_names_match_only_the_exact_pattern() {
        assert!(is_issued_name("pglease", "pglease_0a9z"));
        assert!(is_issued_name("lease_", "lease__abc"));
        for other in [
            "pglease",
            "pglease_",
            "pgleasex_1",
            "pglease_Upper",
            "other_pglease_1",
            "pglease_a_b",
            "pglease_a-b",
            "pglease_é",
            "PGLEASE_abc",
        ] {
            assert!(!is_issued_name("pglease", other), "{other}");
        }
        // A longer prefix's roles are not ours either.
        assert!(!is_issued_name("pglease", "pglease_x_abc"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(timestamp(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_millis(4_102_444_799_999); // 2099-12-31 23:59:59.999
        assert_eq!(timestamp(t), "2099-12-31T23:59:59Z");
        assert_eq!(
            whole_seconds(t),
            UNIX_EPOCH + Duration::from_secs(4_102_444_799)
        );
    }
}
