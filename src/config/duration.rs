//! Duration strings in the config (`"500ms"`, `"30s"`, `"2h30m"`, `"1d"`) and back.
//!
//! A bare number is rejected on purpose: `timeout = "10"` is ambiguous (seconds? milliseconds?),
//! and guessing wrong by a factor of 1000 is worse than asking the operator to say which.

use std::time::Duration;

/// Why a duration string was rejected. The text never repeats anything but the string itself,
/// which is not secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration; write e.g. \"30s\"")]
    Empty,
    /// A number with no unit after it, e.g. `"10"`.
    #[error("`{0}` needs a unit: d, h, m, s or ms (e.g. \"{0}s\")")]
    MissingUnit(String),
    /// A unit that is not one of d, h, m, s, ms.
    #[error("unknown unit `{0}`; use d, h, m, s or ms")]
    UnknownUnit(String),
    /// Something other than digits where a number must be (also a unit with no number).
    #[error("expected a number before each unit, e.g. \"2h30m\"")]
    MissingNumber,
    /// Units out of order or repeated (`"30m2h"`, `"1h1h"`): almost always a typo.
    #[error("units must go from largest to smallest, each at most once")]
    UnitOrder,
    /// The total does not fit in a `Duration`.
    #[error("duration is too large")]
    Overflow,
}

/// The units, largest first, with their length in milliseconds. The order is the order in
/// which parts of a duration must be written.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a config duration: one or more `<digits><unit>` parts with units `d`, `h`, `m`, `s`,
/// `ms`, largest first and each at most once (`"1h30m"`, `"500ms"`, `"1d"`). No spaces, no
/// sign, no fractions, so every accepted string has exactly one meaning.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the smallest unit used so far; the next must be strictly smaller.
    let mut next_allowed = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(DurationError::MissingNumber);
        }
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_end);
        if unit.is_empty() {
            if after_unit.is_empty() {
                return Err(DurationError::MissingUnit(digits.to_owned()));
            }
            return Err(DurationError::UnknownUnit(after_unit.to_owned()));
        }
        let (index, unit_ms) = UNITS
            .iter()
            .enumerate()
            .find_map(|(i, (name, len))| (*name == unit).then_some((i, *len)))
            .ok_or_else(|| DurationError::UnknownUnit(unit.to_owned()))?;
        if index < next_allowed {
            return Err(DurationError::UnitOrder);
        }
        next_allowed = index + 1;
        let count: u64 = digits.parse().map_err(|_| DurationError::Overflow)?;
        let part = count.checked_mul(unit_ms).ok_or(DurationError::Overflow)?;
        total_ms = total_ms.checked_add(part).ok_or(DurationError::Overflow)?;
        rest = after_unit;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration in the syntax [`parse_duration`] reads, largest units first
/// (`5400s` becomes `"1h30m"`), so `SHOW CONFIG` prints what an operator would type.
/// Precision below a millisecond is dropped; zero is `"0s"`.
pub fn format_duration(duration: Duration) -> String {
    let mut remaining = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if remaining == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, unit_ms) in UNITS {
        let count = remaining / unit_ms;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            remaining %= unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn accepts_each_unit_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("1m30s250ms"), Ok(ms(90_250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_ambiguous_or_malformed_strings() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit("x".into()))
        );
        assert_eq!(
            parse_duration("5 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
        assert_eq!(parse_duration("-5s"), Err(DurationError::MissingNumber));
        assert_eq!(
            parse_duration("1.5h"),
            Err(DurationError::UnknownUnit(".5h".into()))
        );
        assert_eq!(parse_duration("30m2h"), Err(DurationError::UnitOrder));
        assert_eq!(parse_duration("1h1h"), Err(DurationError::UnitOrder));
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("18446744073709551615d"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn bare_number_error_suggests_a_unit() {
        let text = parse_duration("10").unwrap_err().to_string();
        assert!(text.contains("\"10s\""), "{text}");
    }

    #[test]
    fn format_round_trips_through_parse() {
        for text in [
            "0s",
            "500ms",
            "30s",
            "15m",
            "1h30m",
            "2h30m",
            "1d",
            "1d1h1m1s1ms",
        ] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
