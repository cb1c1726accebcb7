//! Which startup parameters become a client's settings, which are refused, and the `options`
//! parameter's `-c name=value` / `--name=value` switches (PostgreSQL's own syntax, backslash
//! escapes included).
//!
//! Refused, because each would change who the upstream is or what it serves: `replication`
//! (08P01), `role` and `session_authorization` (42501), whether sent directly or inside
//! `options`, and any `options` switch other than `-c`/`--` (08P01, naming it). Everything
//! else except `user`, `database` and `_pq_.` protocol options becomes a setting; PostgreSQL
//! itself judges its name and value when the client logs in.

use super::Map;
use crate::client::ClientError;
use crate::protocol::startup::Startup;

/// Startup parameters that name the connection rather than set anything.
const NOT_SETTINGS: &[&str] = &["user", "database", "options"];

/// Parameters that would change the role the upstream acts as.
const ROLE_CHANGING: &[&str] = &["role", "session_authorization"];

/// The settings `startup` asks for: `options` first, then the other parameters, which win
/// over it as in PostgreSQL.
pub fn settings(startup: &Startup) -> Result<Map, ClientError> {
    let mut map = Map::new();
    if let Some(options) = startup.get("options") {
        for (name, value) in parse_options(options)? {
            insert(&mut map, &name, &value)?;
        }
    }
    for (name, value) in &startup.params {
        let lower = name.to_ascii_lowercase();
        if NOT_SETTINGS.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
            continue;
        }
        if lower == "replication" {
            return Err(ClientError::refused(
                "08P01",
                "replication connections are not supported by pglease",
            ));
        }
        insert(&mut map, &lower, value)?;
    }
    // Kept for the client's whole session: no room beyond what it holds.
    map.shrink_to_fit();
    Ok(map)
}

/// Adds or replaces one setting, refusing role-changing ones.
fn insert(map: &mut Map, name: &str, value: &str) -> Result<(), ClientError> {
    let name = name.to_ascii_lowercase();
    if ROLE_CHANGING.contains(&name.as_str()) {
        return Err(ClientError::refused(
            "42501",
            format!(
                "startup parameter \"{name}\" is not supported by pglease: it would change the \
                 upstream role"
            ),
        ));
    }
    match map.binary_search_by(|(n, _)| (**n).cmp(name.as_str())) {
        Ok(at) => map[at].1 = value.into(),
        Err(at) => map.insert(at, (name.into(), value.into())),
    }
    Ok(())
}

/// Parses `options` into (name, value) pairs: whitespace separates words, a backslash makes
/// the next character part of the word, `-c name=value` (or `-cname=value`) and
/// `--name=value` set a parameter (`-` in the name read as `_`).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ClientError> {
    let words = split_words(options);
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words
                .next()
                .ok_or_else(|| bad_option("-c", "requires a name=value argument"))?
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(bad_option(
                &word,
                "is not supported by pglease (only -c and --name=value)",
            ));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(bad_option(&assignment, "requires a value (name=value)"));
        };
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

fn bad_option(word: &str, why: &str) -> ClientError {
    ClientError::refused("08P01", format!("startup option \"{word}\" {why}"))
}

/// PostgreSQL's `pg_split_opts`: words separated by whitespace, `\` escaping the next char.
fn split_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_ascii_whitespace() => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Startup {
        Startup {
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn code(e: ClientError) -> &'static str {
        match e {
            ClientError::Refused { code, .. } => code,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn options_switches_parse_with_escapes_and_params_win() {
        let s = startup(&[
            ("user", "u"),
            (
                "options",
                r"-c search_path=a\ b --statement-timeout=5s -cwork_mem=1MB",
            ),
            ("work_mem", "2MB"),
            ("DateStyle", "ISO"),
        ]);
        let map = settings(&s).unwrap();
        let pairs: Vec<(&str, &str)> = map.iter().map(|(n, v)| (&**n, &**v)).collect();
        assert_eq!(
            pairs,
            [
                ("datestyle", "ISO"),
                ("search_path", "a b"),
                ("statement_timeout", "5s"),
                ("work_mem", "2MB"),
            ]
        );
    }

    #[test]
    fn role_changing_replication_and_other_switches_are_refused() {
        for params in [
            &[("role", "x")][..],
            &[("session_authorization", "x")],
            &[("options", "-c role=x")],
            &[("options", "--session_authorization=x")],
        ] {
            assert_eq!(code(settings(&startup(params)).unwrap_err()), "42501");
        }
        for params in [
            &[("replication", "1")][..],
            &[("options", "-X")],
            &[("options", "-c")],
            &[("options", "-c search_path")],
        ] {
            assert_eq!(code(settings(&startup(params)).unwrap_err()), "08P01");
        }
    }
}
