//! The JSON credential document shared by the `file` and `exec` sources.
//!
//! The shape is the one Vault Agent templates, Kubernetes secret mounts and external-secrets
//! already write: `{"username": "...", "password": "...", "expires_at": ...}`, where
//! `expires_at` is optional and is either an RFC 3339 timestamp or unix seconds. Unknown
//! fields are ignored so the same file can carry other keys.
//!
//! The document contains a password, so no error produced here ever quotes it: errors name
//! the field that is missing or wrong, or the line and column of a syntax error, and nothing
//! else. serde_json's own messages are not used because they can quote the offending value.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use thiserror::Error;

use super::Lease;
use crate::secret::Secret;

/// Largest document accepted, in bytes. Checked before parsing so a runaway writer or a
/// wrong path (a log file, a device) cannot make the proxy allocate without bound.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The credential a document describes, before a source turns it into a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The upstream role name; never empty.
    pub username: String,
    /// The upstream password; never empty.
    pub password: Secret,
    /// When the credential stops working, if the document says.
    pub expires_at: Option<SystemTime>,
}

impl Credential {
    /// The lease this credential is, under the source's `id` for it. Documents describe
    /// passwords that cannot be renewed, only replaced.
    pub fn into_lease(self, id: String) -> Lease {
        Lease {
            id,
            username: self.username,
            password: self.password,
            issued_at: SystemTime::now(),
            expires_at: self.expires_at,
            renewable: false,
            generation: 0,
        }
    }
}

/// Why a document was refused. Every variant is safe to log: none carries document text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocumentError {
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("credential document is larger than {max} bytes")]
    TooLarge {
        /// Size seen (at least `max + 1` when reading stopped early).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a JSON object (syntax error, truncated text, wrong top-level type).
    #[error("credential document is not a JSON object (line {line}, column {column})")]
    NotAnObject {
        /// 1-based line of the problem, 0 when unknown.
        line: usize,
        /// 1-based column of the problem, 0 when unknown.
        column: usize,
    },
    /// A required field is absent or null.
    #[error("credential document has no `{0}`")]
    MissingField(&'static str),
    /// A field is present but of the wrong type or form.
    #[error("credential document field `{field}` must be {expected}")]
    WrongField {
        /// The field name.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
}

/// Parses a credential document. The size limit is checked first, then the JSON.
pub fn parse_document(bytes: &[u8]) -> Result<Credential, DocumentError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge {
            len: bytes.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    // A map rather than a derived struct: serde's derive would also accept a JSON array in
    // field order, and values stay untyped so a wrong type gets our own field-naming error.
    let mut object: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| DocumentError::NotAnObject {
            line: e.line(),
            column: e.column(),
        })?;
    let username = required_string(object.remove("username"), "username")?;
    let password = Secret::new(required_string(object.remove("password"), "password")?);
    let expires_at = match object.remove("expires_at") {
        None | Some(Value::Null) => None,
        Some(value) => Some(expiry(&value).ok_or(DocumentError::WrongField {
            field: "expires_at",
            expected: "an RFC 3339 timestamp or unix seconds",
        })?),
    };
    Ok(Credential {
        username,
        password,
        expires_at,
    })
}

/// Takes the string out of `value` by move, so a password is never copied before it reaches
/// its `Secret`.
fn required_string(value: Option<Value>, field: &'static str) -> Result<String, DocumentError> {
    match value {
        None | Some(Value::Null) => Err(DocumentError::MissingField(field)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(DocumentError::WrongField {
            field,
            expected: "a non-empty string",
        }),
    }
}

fn expiry(value: &Value) -> Option<SystemTime> {
    match value {
        Value::String(text) => parse_rfc3339(text),
        Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
            } else {
                let secs = n.as_f64()?;
                let d = Duration::try_from_secs_f64(secs).ok()?;
                SystemTime::UNIX_EPOCH.checked_add(d)
            }
        }
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp (`2030-01-02T03:04:05Z`, `…05.123+02:00`) into a
/// `SystemTime`. Times before 1970 are refused: no real credential expires then, and a
/// negative time is more likely a bug upstream than a deliberate value.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    let separators_ok = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')]
        .iter()
        .all(|&(i, c)| b.get(i) == Some(&c));
    // Leap second 60 is folded into the next second rather than refused.
    if !separators_ok || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }

    let mut rest = text.get(19..)?;
    let mut nanos: u64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        // Only the first nine digits fit in nanoseconds; the rest is below our resolution.
        for (i, c) in fraction
            .bytes()
            .take(9)
            .take_while(u8::is_ascii_digit)
            .enumerate()
        {
            nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = fraction.get(len..)?;
    }
    let offset_secs: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let rb = rest.as_bytes();
            let (oh, om) = (digits(rb, 1, 2)?, digits(rb, 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let magnitude = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };

    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let utc = u64::try_from(local - offset_secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(utc) + Duration::from_nanos(nanos))
}

/// Reads `len` ASCII digits at `at`, or `None` if any is missing or not a digit.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    b.get(at..at + len)?.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm:
/// count from a March-based year so the leap day falls at the end).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn full_document_parses_and_ignores_unknown_fields() {
        let doc = br#"{"username":"v-app-1","password":"pw1","expires_at":"2030-01-01T00:00:00Z",
                       "lease_duration":3600,"extra":{"a":[1,2]}}"#;
        let c = parse_document(doc).unwrap();
        assert_eq!(c.username, "v-app-1");
        assert_eq!(c.password.expose(), "pw1");
        assert_eq!(c.expires_at, Some(at(1_893_456_000)));
    }

    #[test]
    fn expiry_forms() {
        let parse = |e: &str| {
            let doc = format!(r#"{{"username":"u","password":"p"{e}}}"#);
            parse_document(doc.as_bytes()).map(|c| c.expires_at)
        };
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse(r#","expires_at":null"#), Ok(None));
        assert_eq!(
            parse(r#","expires_at":1700000000"#),
            Ok(Some(at(1_700_000_000)))
        );
        assert_eq!(
            parse(r#","expires_at":1700000000.5"#),
            Ok(Some(at(1_700_000_000) + Duration::from_millis(500)))
        );
        assert_eq!(
            parse(r#","expires_at":"2023-11-14T22:13:20Z""#),
            Ok(Some(at(1_700_000_000)))
        );
        assert_eq!(
            parse(r#","expires_at":"2023-11-15T00:13:20.25+02:00""#),
            Ok(Some(at(1_700_000_000) + Duration::from_millis(250)))
        );
        let wrong = Err(DocumentError::WrongField {
            field: "expires_at",
            expected: "an RFC 3339 timestamp or unix seconds",
        });
        for bad in [r#""tomorrow""#, "-5", "true", r#""2023-11-14""#] {
            assert_eq!(parse(&format!(r#","expires_at":{bad}"#)), wrong, "{bad}");
        }
    }

    #[test]
    fn rfc3339_edges() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00z"),
            Some(at(1_709_208_000))
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00-00:30"),
            Some(at(951_870_600))
        );
        assert_eq!(
            parse_rfc3339("2030-01-01T00:00:00.123456789123Z"),
            Some(at(1_893_456_000) + Duration::from_nanos(123_456_789))
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+0200",
            "1969-12-31T23:59:59Z",
            "2023-01-01X00:00:00Z",
            "２023-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field_and_never_the_password() {
        let cases: [(&[u8], DocumentError); 4] = [
            (
                br#"{"password":"s3cr3t-pw"}"#,
                DocumentError::MissingField("username"),
            ),
            (
                br#"{"username":"u"}"#,
                DocumentError::MissingField("password"),
            ),
            (
                br#"{"username":"u","password":7}"#,
                DocumentError::WrongField {
                    field: "password",
                    expected: "a non-empty string",
                },
            ),
            (
                br#"{"username":"","password":"s3cr3t-pw"}"#,
                DocumentError::WrongField {
                    field: "username",
                    expected: "a non-empty string",
                },
            ),
        ];
        for (doc, expected) in cases {
            let error = parse_document(doc).unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn non_objects_are_syntax_errors_without_content() {
        for doc in [
            &br#"{"username":"u","password":"s3cr3t-"#[..],
            br#"["u","s3cr3t-pw",null]"#,
            br#""s3cr3t-pw""#,
        ] {
            let error = parse_document(doc).unwrap_err();
            assert!(
                matches!(error, DocumentError::NotAnObject { line: 1, .. }),
                "{error}"
            );
            assert!(!format!("{error} {error:?}").contains("s3cr3t"));
        }
    }

    #[test]
    fn oversized_document_is_refused_before_parsing() {
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(
            parse_document(&big),
            Err(DocumentError::TooLarge {
                len: MAX_DOCUMENT_BYTES + 1,
                max: MAX_DOCUMENT_BYTES
            })
        );
    }
}
