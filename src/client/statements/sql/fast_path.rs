//! The sketch's fast reject against the full checks it lets the trackers skip: on a corpus of
//! tricky texts (and texts generated from their pieces), the statement checks, the LISTEN
//! check and the `set_config` check give the same answer with and without the shortcut, and
//! the corpus holds texts each full check finds something in, which a wrong reject would miss.

use super::unconfined::Mentions;
use super::*;
use crate::client::notify::sql::{Finding, find, may_mention_listen, mentions_listen};
use crate::client::settings::mentions_set_config;

/// The statement checks with no shortcut: mentions read word by word, every statement of both
/// readings of a backslash lexed.
fn full_examine(text: &[u8]) -> (Command, bool) {
    let mentions = if Sketch::of(text).unicode() {
        Mentions::sketched(text, Sketch::of(text))
    } else {
        Mentions::by_words(text)
    };
    let command = classify_as(text, false, mentions).max(classify_as(text, true, mentions));
    (command, mentions.any())
}

/// The LISTEN check with no shortcut: the lexer on every text.
fn full_listen(text: &[u8]) -> bool {
    find(text) != Finding::None
}

/// The `set_config` check the slow way: the word searched for at every position, and a
/// `U&"` identifier (which may spell it) counted too.
fn full_set_config(text: &[u8]) -> bool {
    let word = b"set_config";
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
        || text
            .windows(3)
            .any(|w| (w[0] == b'u' || w[0] == b'U') && w[1] == b'&' && w[2] == b'"')
}

/// Texts that put the words where a byte search and a lexer disagree about them.
const CORPUS: &[&str] = &[
    "",
    ";",
    "select 1",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "PREPARE p AS SELECT 1",
    "pRePaRe p as select 1",
    "/* c */ prepare p as select 1",
    "/* /* nested */ still */ execute p",
    "/* /* nested */ execute p */ select 1",
    "-- execute p\nselect 1",
    "select 1 -- ; execute p",
    "select 1; EXECUTE p(1)",
    "select 1;execute p",
    ";;DeAlLoCaTe ALL",
    "deallocate prepare p",
    "discard all",
    "DISCARD PLANS",
    "select 'x; discard all'",
    "select E'\\'; execute p; --'",
    "select '\\'; execute p; --'",
    "select e'it''s'; prepare q as select 2",
    "do $$ begin execute 'x'; end $$",
    "do $tag$ begin; prepare x; end $tag$; select 1",
    "select $1; execute p",
    "select a$b$c; execute p",
    "explain analyze execute p",
    "explain (analyze) prepare p as select 1",
    "explain (format '\\'') execute p",
    "select executed, preparer, discarded from t",
    "select \"execute\" from t",
    "select U&\"execute\" from t",
    "select U&\"d\\0061ta\"",
    "select pg_advisory_lock(1)",
    "SELECT PG_ADVISORY_LOCK(1); select 2",
    "select U&\"pg_\\0061dvisory_lock\"(1)",
    "select \"pg_advisory_lock\"(1)",
    "select 'pg_advisory_lock(1)'",
    "declare c cursor with hold for select 1",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1; fetch c",
    "select holder from t",
    "create temp table t (a int)",
    "CREATE TEMPORARY TABLE t (a int) ON COMMIT DROP",
    "create table pg_temp.t (a int)",
    "select * into temp t from x",
    "select template from t",
    "set session authorization bob",
    "SET SESSION SESSION AUTHORIZATION DEFAULT",
    "listen a",
    "LISTEN \"Chan\"",
    " /* c */ unlisten *",
    "/* /* */ listen a */ select 1",
    "/* /* */ */ listen a",
    "select 1; listen a",
    "begin; LISTEN a; commit",
    "select listener, unlistened from t",
    "select 'listen a'",
    "notify a, 'listen b'",
    "select '\\'; listen a; --'",
    "do $$ begin; listen a; end $$",
    "LISTEN U&\"a\"",
    "select set_config('search_path', 'x', false)",
    "SELECT SET_CONFIG('a','b',false); select 1",
    "select pg_catalog.set_config('a', 'b', true)",
    "select set_config_x(1)",
    "select 'set_config'",
    "select U&\"s\\0065t_config\"('a', 'b', false)",
    "select set_conf, _config from t",
    "\u{ff}\u{fe}; prepare x as select 1",
    "'",
    "\"",
    "$",
    "$a$",
    "/*",
    "(((;",
];

/// Every text of the corpus, and texts made of its pieces: a prefix, a corpus text with its
/// case changed, and a suffix, so comments, quotes and semicolons meet the words around them.
fn texts() -> Vec<Vec<u8>> {
    const AROUND: [&str; 9] = [
        "",
        ";",
        "select 1; ",
        "/* x */ ",
        "-- x\n",
        "'",
        "$q$",
        "E'\\",
        " /* /* */ ",
    ];
    let mut all = Vec::new();
    for text in CORPUS {
        for (i, before) in AROUND.iter().enumerate() {
            for after in AROUND {
                let body = match i % 3 {
                    0 => text.to_string(),
                    1 => text.to_ascii_uppercase(),
                    _ => text.to_ascii_lowercase(),
                };
                all.push(format!("{before}{body}{after}").into_bytes());
            }
        }
    }
    all
}

/// Asserts the three shortcut checks answer as the full ones do on `text`; returns the text
/// as shown in a failure message.
fn agrees_with_full_checks(text: &[u8]) -> String {
    let shown = String::from_utf8_lossy(text).into_owned();
    assert_eq!(examine(text), full_examine(text), "{shown}");
    assert_eq!(mentions_listen(text), full_listen(text), "{shown}");
    assert_eq!(mentions_set_config(text), full_set_config(text), "{shown}");
    shown
}

#[test]
fn the_fast_path_agrees_with_the_full_checks_on_tricky_texts() {
    for text in texts() {
        let shown = agrees_with_full_checks(&text);
        // The session's own LISTEN search finds the word where the sketch does.
        assert_eq!(
            may_mention_listen(&text),
            Sketch::of(&text).listen(),
            "{shown}"
        );
    }
}

#[test]
fn the_corpus_holds_what_each_full_check_finds() {
    // A fast path that rejected any of these wrongly would make the test above fail.
    let findings = |text: &str| {
        let t = text.as_bytes();
        (full_examine(t), full_listen(t), full_set_config(t))
    };
    let named = (Command::Named, false);
    assert_eq!(findings("/* /* nested */ still */ execute p").0, named);
    assert_eq!(findings("select 1;execute p").0, named);
    // A plain string that ends at the backslash in one reading of it.
    assert_eq!(findings("select '\\'; execute p; --'").0, named);
    assert_eq!(
        findings("select E'\\'; execute p; --'").0,
        (Command::Other, false)
    );
    // The string in the options ends before EXECUTE only with backslash escapes.
    assert_eq!(findings("explain (format '\\'') execute p").0, named);
    assert_eq!(findings(";;DeAlLoCaTe ALL").0, (Command::DropsAll, false));
    assert_eq!(
        findings("SELECT PG_ADVISORY_LOCK(1); select 2").0,
        (Command::Unconfined(Unconfined::AdvisoryLock), true)
    );
    // Spelled with escapes: not refused, but the release-time check is called for.
    assert_eq!(
        findings("select U&\"pg_\\0061dvisory_lock\"(1)").0,
        (Command::Other, true)
    );
    assert!(findings("/* /* */ */ listen a").1);
    assert!(findings("select 1; listen a").1);
    assert!(findings("select '\\'; listen a; --'").1);
    assert!(!findings("select listener, unlistened from t").1);
    assert!(!findings("/* /* */ listen a */ select 1").1);
    assert!(findings("SELECT SET_CONFIG('a','b',false); select 1").2);
    assert!(findings("select U&\"s\\0065t_config\"('a', 'b', false)").2);
    // And the ordinary texts are what the shortcut is for.
    for text in [
        "select 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    ] {
        assert!(Sketch::of(text.as_bytes()).is_empty(), "{text}");
    }
}

#[test]
fn generated_texts_agree_too() {
    // Words, their fragments and the lexer's special bytes in random order.
    const PIECES: [&str; 24] = [
        "prepare ",
        "EXECUTE ",
        "deallocate ",
        "discard all",
        "listen a",
        "unlisten *",
        "set_config(",
        "pg_advisory_lock(",
        "with hold",
        "temp ",
        "authorization ",
        "'",
        "\"",
        "$$",
        "$t$",
        "E'",
        "\\",
        ";",
        "/*",
        "*/",
        "--",
        "\n",
        "(",
        "U&\"",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut text = Vec::new();
        for _ in 0..(next() % 8) {
            text.extend_from_slice(PIECES[(next() % 24) as usize].as_bytes());
        }
        agrees_with_full_checks(&text);
    }
}
