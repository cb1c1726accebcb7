//! The `file` and `exec` credential sources against a real filesystem and real processes:
//! reading, change detection, timeouts, and errors that never quote the password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use pglease::config::{ExecSourceConfig, FileSourceConfig};
use pglease::credentials::exec_source::ExecSource;
use pglease::credentials::file_source::FileSource;
use pglease::credentials::{Source, SourceError};
use pglease::secret::Secret;

const POLL: Duration = Duration::from_millis(50);

/// A directory of its own per test, removed when the test ends, so tests run in parallel.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pglease-sources-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("db.json")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_source(path: &Path) -> FileSource {
    FileSource::new(&FileSourceConfig {
        path: path.to_owned(),
        poll_interval: POLL,
    })
}

fn exec_source(script: &str, timeout: Duration) -> ExecSource {
    exec_source_with_env(script, timeout, BTreeMap::new())
}

fn exec_source_with_env(
    script: &str,
    timeout: Duration,
    env: BTreeMap<String, Secret>,
) -> ExecSource {
    ExecSource::new(&ExecSourceConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
        refresh_interval: None,
        env,
    })
}

fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Writes through a temporary file and a rename, as agents that render secrets do.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn file_acquire_reads_the_document() {
    let dir = TempDir::new("acquire");
    let path = dir.file();
    std::fs::write(
        &path,
        r#"{"username":"v-app-1","password":"pw-one","expires_at":"2030-01-01T00:00:00Z","ttl":60}"#,
    )
    .unwrap();
    let source = file_source(&path);
    assert_eq!(source.kind(), "file");
    let lease = source.acquire().await.unwrap();
    assert_eq!(lease.username, "v-app-1");
    assert_eq!(lease.password.expose(), "pw-one");
    assert_eq!(lease.expires_at, Some(unix(1_893_456_000)));
    assert!(!lease.renewable);
    assert!(
        lease.id.starts_with(&format!("file:{}#", path.display())),
        "{}",
        lease.id
    );
    assert!(!lease.id.contains("pw-one"));
    source.revoke(&lease).await.unwrap();
}

#[tokio::test]
async fn expires_at_forms_are_all_understood() {
    let dir = TempDir::new("expiry");
    let path = dir.file();
    let source = file_source(&path);
    let cases = [
        (
            r#","expires_at":"2023-11-14T22:13:20Z""#,
            Some(unix(1_700_000_000)),
        ),
        (
            r#","expires_at":"2023-11-14T17:13:20-05:00""#,
            Some(unix(1_700_000_000)),
        ),
        (r#","expires_at":1700000000"#, Some(unix(1_700_000_000))),
        ("", None),
    ];
    for (field, expected) in cases {
        std::fs::write(
            &path,
            format!(r#"{{"username":"u","password":"p"{field}}}"#),
        )
        .unwrap();
        let lease = source.acquire().await.unwrap();
        assert_eq!(lease.expires_at, expected, "{field}");
    }
}

#[tokio::test]
async fn rewritten_file_signals_a_change_and_the_next_acquire_sees_it() {
    let dir = TempDir::new("rewrite");
    let path = dir.file();
    std::fs::write(&path, r#"{"username":"app","password":"pw-1"}"#).unwrap();
    let source = file_source(&path);
    let first = source.acquire().await.unwrap();

    let mut changed = source.changed(&first);
    assert!(tokio::time::timeout(3 * POLL, &mut changed).await.is_err());
    // Same length, likely the same mtime tick: only the content tells the two apart.
    std::fs::write(&path, r#"{"username":"app","password":"pw-2"}"#).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(2), &mut changed).await;
    done.expect("in-place rewrite not seen").unwrap();
    drop(changed);
    let second = source.acquire().await.unwrap();
    assert_eq!(second.password.expose(), "pw-2");

    let waiting = tokio::spawn(async move {
        let changed = source.changed(&second).await;
        (changed, source)
    });
    tokio::time::sleep(3 * POLL).await;
    assert!(!waiting.is_finished(), "signalled before the file changed");
    write_atomically(
        &path,
        r#"{"username":"app-2","password":"pw-3","expires_at":1900000000}"#,
    );
    let (changed, source) = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("atomic rewrite not seen")
        .unwrap();
    changed.unwrap();
    let third = source.acquire().await.unwrap();
    assert_eq!(
        (third.username.as_str(), third.password.expose()),
        ("app-2", "pw-3")
    );
    assert_eq!(third.expires_at, Some(unix(1_900_000_000)));
    assert_ne!(third.id, first.id);
}

#[tokio::test]
async fn unchanged_or_identically_rewritten_file_does_not_signal() {
    let dir = TempDir::new("unchanged");
    let path = dir.file();
    let text = r#"{"username":"app","password":"pw"}"#;
    std::fs::write(&path, text).unwrap();
    let source = file_source(&path);
    let lease = source.acquire().await.unwrap();
    let mut changed = source.changed(&lease);
    let quiet = tokio::time::timeout(6 * POLL, &mut changed).await;
    assert!(quiet.is_err(), "unchanged file signalled");
    // A new mtime with the same credential (even reformatted) is not a rotation.
    write_atomically(&path, &text.replace(',', ", "));
    let quiet = tokio::time::timeout(6 * POLL, &mut changed).await;
    assert!(quiet.is_err(), "reformatted file signalled");
}

#[tokio::test]
async fn half_written_or_missing_file_does_not_signal_until_it_parses() {
    let dir = TempDir::new("partial");
    let path = dir.file();
    std::fs::write(&path, r#"{"username":"app","password":"pw-1"}"#).unwrap();
    let source = file_source(&path);
    let lease = source.acquire().await.unwrap();
    let mut changed = source.changed(&lease);

    std::fs::write(&path, r#"{"username":"app","passw"#).unwrap();
    assert!(tokio::time::timeout(6 * POLL, &mut changed).await.is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(tokio::time::timeout(6 * POLL, &mut changed).await.is_err());

    std::fs::write(&path, r#"{"username":"app","password":"pw-2"}"#).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(2), &mut changed).await;
    done.expect("complete file not seen").unwrap();
}

#[tokio::test]
async fn file_errors_name_the_problem_but_not_the_password() {
    let dir = TempDir::new("errors");
    let path = dir.file();
    let source = file_source(&path);
    let missing = source.acquire().await.unwrap_err();
    assert!(matches!(missing, SourceError::Unreachable(_)), "{missing}");
    assert!(missing.to_string().contains("not found"), "{missing}");

    std::fs::write(&path, r#"{"user":"app","password":"s3cr3t-pw"}"#).unwrap();
    let bad = source.acquire().await.unwrap_err();
    assert!(matches!(bad, SourceError::Rejected(_)), "{bad}");
    assert!(bad.to_string().contains("`username`"), "{bad}");
    assert!(!format!("{bad} {bad:?}").contains("s3cr3t"), "{bad}");

    std::fs::write(&path, vec![b' '; 70_000]).unwrap();
    let big = source.acquire().await.unwrap_err();
    assert!(big.to_string().contains("larger than"), "{big}");
}

#[tokio::test]
async fn exec_reads_the_document_from_stdout() {
    let source = exec_source(
        r#"printf '{"username":"x-1","password":"pw-x","expires_at":"2030-01-01T01:00:00+01:00"}'"#,
        Duration::from_secs(5),
    );
    assert_eq!(source.kind(), "exec");
    let lease = source.acquire().await.unwrap();
    assert_eq!(
        (lease.username.as_str(), lease.password.expose()),
        ("x-1", "pw-x")
    );
    assert_eq!(lease.expires_at, Some(unix(1_893_456_000)));
    assert_eq!(lease.id, "exec:sh#1");
    assert_eq!(source.acquire().await.unwrap().id, "exec:sh#2");
    source.revoke(&lease).await.unwrap();
}

#[tokio::test]
async fn exec_failure_carries_stderr_but_never_stdout() {
    let source = exec_source(
        r#"echo 'vault is sealed' >&2; printf '{"username":"u","password":"s3cr3t-pw"}'; exit 3"#,
        Duration::from_secs(5),
    );
    let error = source.acquire().await.unwrap_err();
    assert!(matches!(error, SourceError::Unreachable(_)), "{error}");
    let text = error.to_string();
    assert!(text.contains("vault is sealed"), "{text}");
    assert!(text.contains('3'), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[tokio::test]
async fn exec_is_killed_at_its_timeout() {
    let source = exec_source(
        "echo 'asking the store' >&2; exec sleep 10",
        Duration::from_millis(500),
    );
    let started = Instant::now();
    let error = source.acquire().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("asking the store"), "{text}");
}

#[tokio::test]
async fn exec_bad_json_error_does_not_contain_the_password() {
    let source = exec_source(
        r#"echo 'partial output' >&2; printf '{"username":"u","password":"s3cr3t-pw"'"#,
        Duration::from_secs(5),
    );
    let error = source.acquire().await.unwrap_err();
    assert!(matches!(error, SourceError::Rejected(_)), "{error}");
    let text = format!("{error} {error:?}");
    assert!(text.contains("not a JSON object"), "{text}");
    assert!(text.contains("partial output"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[tokio::test]
async fn exec_missing_program_is_reported() {
    let source = ExecSource::new(&ExecSourceConfig {
        command: vec![
            "/nonexistent/pglease-get-creds".into(),
            "--token=abc".into(),
        ],
        timeout: Duration::from_secs(1),
        refresh_interval: None,
        env: BTreeMap::new(),
    });
    let error = source.acquire().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("cannot start"), "{text}");
    assert!(!text.contains("--token"), "{text}");
}

/// The environment variable names the exec source's command saw (sanitised into the
/// document's username), and what it saw in `PGLEASE_EXEC_MARK` (as the password).
const PRINT_ENV: &str = r#"names=$(env | cut -d= -f1 | sort | tr '\n' ' ' | tr -dc 'A-Za-z0-9_ ')
printf '{"username":"%s","password":"%s"}' "$names" "${PGLEASE_EXEC_MARK-unset}""#;

#[tokio::test]
async fn exec_command_sees_only_path_and_the_configured_environment() {
    // Cargo sets these for every test binary, so a command that inherited our environment
    // would see them.
    for inherited in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME"] {
        assert!(
            std::env::var_os(inherited).is_some(),
            "{inherited} not set by cargo"
        );
    }
    let env = [("PGLEASE_EXEC_MARK".to_owned(), Secret::from("marked 1"))].into();
    let source = exec_source_with_env(PRINT_ENV, Duration::from_secs(5), env);
    let lease = source.acquire().await.unwrap();
    let names: Vec<&str> = lease.username.split_whitespace().collect();
    // Shells add a few of their own (PWD, SHLVL, OLDPWD, _); nothing else may be there.
    let expected = ["PATH", "PGLEASE_EXEC_MARK", "PWD", "OLDPWD", "SHLVL", "_"];
    let foreign: Vec<&&str> = names.iter().filter(|n| !expected.contains(n)).collect();
    assert!(foreign.is_empty(), "inherited variables: {foreign:?}");
    assert!(names.contains(&"PATH"), "no PATH: {names:?}");
    assert_eq!(lease.password.expose(), "marked 1");
}

/// Whether process `pid` still exists and is not a zombie (a killed process whose parent has
/// not reaped it yet is gone for every purpose here).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn exec_timeout_kills_the_commands_whole_process_group() {
    let dir = TempDir::new("pgroup");
    let pids = dir.0.join("pids");
    // The command forks a grandchild and waits; both must go when the timeout strikes.
    let script = format!("sleep 60 & echo \"$$ $!\" > '{}'; wait", pids.display());
    let source = exec_source(&script, Duration::from_millis(500));
    let error = source.acquire().await.unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    let text = std::fs::read_to_string(&pids).expect("the command wrote its pids");
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{text}");
    // SIGKILL is delivered at once, but give a busy machine a generous window to act on it.
    let until = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<&u32> = pids.iter().filter(|&&p| alive(p)).collect();
    assert!(
        survivors.is_empty(),
        "still running after the timeout: {survivors:?}"
    );
}
