//! The `exec` source: a command that prints the JSON credential document on stdout.
//!
//! # Design
//!
//! The command runs without a shell (argv as configured), with stdin closed, in an
//! environment that holds only [`DEFAULT_PATH`] and the config's `env` table: nothing of
//! pglease's own environment (its `env:` secrets, a Vault token, cloud credentials) leaks
//! into a program that may log or pass on what it was given, and the command behaves the
//! same whoever starts pglease. It runs in a process group of its own, and when `timeout`
//! passes (or pglease stops waiting for it) the whole group is killed, so helpers it forked
//! do not outlive it holding its pipes. Killed helpers are reaped by init; pglease run as
//! PID 1 in a container needs an init (`tini`, `docker run --init`) to reap them.
//!
//! Both pipes are drained until the command exits, even past what is kept, so a chatty
//! command never blocks on a full pipe. Errors carry the first
//! [`STDERR_LIMIT`] bytes of stderr, which is where such tools explain themselves, but never
//! stdout: stdout is the document, and the document holds the password. Only the program
//! name (argv\[0\]) is named in errors and lease ids, since later arguments may be tokens.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::warn;

use super::json::{MAX_DOCUMENT_BYTES, parse_document};
use super::source::SourceFuture;
use super::{Lease, Source, SourceError};
use crate::config::ExecSourceConfig;
use crate::secret::Secret;

/// How much of the command's stderr an error quotes.
pub const STDERR_LIMIT: usize = 1024;

/// The command's `PATH` unless its `env` table sets one: the system directories, so a script
/// finds the usual tools wherever pglease was started from.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs a command for each lease (`source = "exec"`).
pub struct ExecSource {
    command: Vec<String>,
    timeout: Duration,
    refresh_interval: Option<Duration>,
    /// The command's environment besides [`DEFAULT_PATH`].
    env: BTreeMap<String, Secret>,
    /// Numbers leases for their ids; the command's output has no id of its own.
    runs: AtomicU64,
}

impl ExecSource {
    /// A source for the configured command. Nothing runs until the first `acquire`.
    pub fn new(config: &ExecSourceConfig) -> Self {
        ExecSource {
            command: config.command.clone(),
            timeout: config.timeout,
            refresh_interval: config.refresh_interval,
            env: config.env.clone(),
            runs: AtomicU64::new(0),
        }
    }

    async fn run(&self) -> Result<Lease, SourceError> {
        let Some((program, args)) = self.command.split_first() else {
            return Err(SourceError::Rejected("exec: empty command".into()));
        };
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(self.env.iter().map(|(name, value)| (name, value.expose())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SourceError::Unreachable(format!("exec `{program}`: cannot start: {e}"))
            })?;
        // From here on, however this future ends, nothing the command started lives on.
        let mut group = ProcessGroup::of(program, child.id());
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Unreachable(format!(
                "exec `{program}`: no output pipes"
            )));
        };

        let mut out = Vec::new();
        let mut err = Vec::new();
        let finished = tokio::time::timeout(self.timeout, async {
            tokio::join!(
                drain(stdout, MAX_DOCUMENT_BYTES + 1, &mut out),
                drain(stderr, STDERR_LIMIT, &mut err),
                child.wait(),
            )
        })
        .await;
        let (read_out, read_err, status) = match finished {
            Ok(done) => done,
            Err(_elapsed) => {
                // The command may have exited already while a helper it forked still holds
                // a pipe: the group is killed whichever it is, then the command reaped.
                group.kill();
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(SourceError::Unreachable(format!(
                    "exec `{program}`: timed out after {:?}{}",
                    self.timeout,
                    stderr_note(&err)
                )));
            }
        };
        // The command exited and every holder of its pipes closed them: nothing left to kill.
        group.disarm();
        let status = status
            .and_then(|s| read_out.and(read_err).map(|_| s))
            .map_err(|e| SourceError::Unreachable(format!("exec `{program}`: {e}")))?;
        if !status.success() {
            return Err(SourceError::Unreachable(format!(
                "exec `{program}`: {status}{}",
                stderr_note(&err)
            )));
        }
        let credential = parse_document(&out).map_err(|e| {
            SourceError::Rejected(format!("exec `{program}`: {e}{}", stderr_note(&err)))
        })?;
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(credential.into_lease(format!("exec:{program}#{run}")))
    }
}

impl Source for ExecSource {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        Box::pin(self.run())
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> SourceFuture<'a, ()> {
        // The command's owner decides how long its credentials live; nothing to end here.
        Box::pin(async { Ok(()) })
    }

    /// Resolves `refresh_interval` after the lease was issued. Counting from `issued_at`,
    /// not from the call, keeps the deadline fixed when a caller re-creates this future.
    fn changed<'a>(&'a self, current: &'a Lease) -> SourceFuture<'a, ()> {
        let due = self
            .refresh_interval
            .and_then(|every| current.issued_at.checked_add(every));
        Box::pin(async move {
            match due {
                Some(due) => {
                    let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(wait).await;
                    Ok(())
                }
                None => std::future::pending().await,
            }
        })
    }
}

/// The process group a command runs in (its id is the command's pid), killed with SIGKILL
/// when dropped unless disarmed. Killing by group id stays correct after the command itself
/// is reaped: the kernel does not reuse a pid while a process group still carries it.
struct ProcessGroup<'a> {
    program: &'a str,
    id: Option<Pid>,
}

impl<'a> ProcessGroup<'a> {
    fn of(program: &'a str, pid: Option<u32>) -> Self {
        let id = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw);
        ProcessGroup { program, id }
    }

    /// Kills every process still in the group, once.
    fn kill(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        match kill_process_group(id, Signal::KILL) {
            // No such group: everyone in it has exited already.
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(error) => {
                warn!(program = %self.program, %error, "exec: cannot kill the command's process group");
            }
        }
    }

    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ProcessGroup<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` to its end, keeping the first `keep` bytes in `buf` and discarding the rest.
async fn drain(
    mut reader: impl AsyncRead + Unpin,
    keep: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let room = keep.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
    }
}

/// `"; stderr: …"` for an error message, or nothing when the command said nothing.
fn stderr_note(stderr: &[u8]) -> String {
    let kept = stderr.get(..STDERR_LIMIT).unwrap_or(stderr);
    let text = String::from_utf8_lossy(kept);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn stderr_note_is_capped_lossy_and_omitted_when_empty() {
        assert_eq!(stderr_note(b""), "");
        assert_eq!(stderr_note(b" \n"), "");
        assert_eq!(stderr_note(b"no access\n"), "; stderr: no access");
        assert_eq!(stderr_note(b"bad \xff byte"), "; stderr: bad \u{fffd} byte");
        let long = vec![b'x'; STDERR_LIMIT * 3];
        assert_eq!(stderr_note(&long).len(), "; stderr: ".len() + STDERR_LIMIT);
    }

    #[tokio::test]
    async fn drain_keeps_the_head_and_reads_to_the_end() {
        let input = vec![7u8; 20_000];
        let mut reader = &input[..];
        let mut buf = Vec::new();
        drain(&mut reader, 100, &mut buf).await.unwrap();
        assert_eq!(buf, vec![7u8; 100]);
        assert!(reader.is_empty());
    }

    fn source(refresh: Option<Duration>) -> ExecSource {
        ExecSource::new(&ExecSourceConfig {
            command: vec!["true".into()],
            timeout: Duration::from_secs(1),
            refresh_interval: refresh,
            env: BTreeMap::new(),
        })
    }

    fn lease(issued_at: SystemTime) -> Lease {
        Lease {
            id: "exec:true#1".into(),
            username: "u".into(),
            password: Secret::from("p"),
            issued_at,
            expires_at: None,
            renewable: false,
            generation: 1,
        }
    }

    #[tokio::test]
    async fn changed_waits_for_refresh_interval_from_issue_time() {
        let ms = Duration::from_millis;
        let with_refresh = source(Some(ms(300)));
        let fresh = lease(SystemTime::now());
        let early = tokio::time::timeout(ms(100), with_refresh.changed(&fresh));
        assert!(early.await.is_err(), "resolved before the interval");
        let on_time = tokio::time::timeout(ms(1000), with_refresh.changed(&fresh));
        assert!(matches!(on_time.await, Ok(Ok(()))));
        // A lease issued long ago is already due: no fresh wait from the call.
        let old = lease(SystemTime::now() - Duration::from_secs(120));
        let due = tokio::time::timeout(ms(50), with_refresh.changed(&old));
        assert!(matches!(due.await, Ok(Ok(()))));

        let never = source(None);
        let wait = tokio::time::timeout(ms(100), never.changed(&old));
        assert!(wait.await.is_err(), "resolved without refresh_interval");
    }

    #[tokio::test]
    async fn empty_command_is_rejected() {
        let empty = ExecSource::new(&ExecSourceConfig {
            command: Vec::new(),
            timeout: Duration::from_secs(1),
            refresh_interval: None,
            env: BTreeMap::new(),
        });
        assert!(matches!(
            empty.acquire().await,
            Err(SourceError::Rejected(_))
        ));
    }
}
