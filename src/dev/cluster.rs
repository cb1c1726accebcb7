//! A throwaway PostgreSQL cluster for `pglease dev` and the integration tests: found on the
//! machine, initialised in a temporary directory, started on a free port, and removed again
//! even when its owner is killed.
//!
//! # Design
//!
//! Everything is synchronous (`std::process`), so it works from a `main`, from a test's
//! `OnceLock` and from `spawn_blocking` alike. The cluster lives in one private directory
//! (data dir, unix socket dir, log file); removing that directory is the whole cleanup.
//!
//! Destructors are not enough: a test binary exits without dropping its statics, and any
//! process can be SIGKILLed. So [`Cluster::start`] first spawns a watcher, a detached `sh`
//! loop in its own process group, that polls the owner's pid once a second and, once the
//! owner is gone, stops PostgreSQL (`-m immediate`) and removes the directory. A normal
//! [`Drop`] does the same at once and kills the watcher.
//!
//! PostgreSQL refuses to run as root. When we are root (as in CI containers) every
//! PostgreSQL program, and the watcher, runs as the `postgres` OS user, which owns the
//! directory.
//!
//! This file owns the cluster's life (create, start, stop, clean up); `discovery` finds what
//! the machine offers (the PostgreSQL programs, the OS user to run them as) and `error` says
//! why something failed.

mod discovery;
mod error;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rand::distr::{Alphanumeric, SampleString};

use crate::secret::Secret;
use discovery::{RunAs, run_as};
use error::io_error;

pub use discovery::find_bin_dir;
pub use error::{ClusterError, INSTALL_HINT};

const OS_USER: &str = "postgres";
const SUPERUSER: &str = "postgres";
const HOST: &str = "127.0.0.1";
/// Start attempts: the free port is released before PostgreSQL binds it, so another
/// process may take it in between.
const START_ATTEMPTS: u32 = 3;

/// Settings for a new cluster. The defaults suit tests: enough connections for pgbench
/// with 50 clients plus pools, and durability switched off for speed.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines as (name, value); values are written verbatim, so
    /// string values must carry their own single quotes.
    pub settings: Vec<(String, String)>,
    /// Files written into the data directory before the server starts, as (name, contents),
    /// readable by the server only (for example `server.key` of `ssl = on`).
    pub data_files: Vec<(String, Vec<u8>)>,
    /// `pg_hba.conf` in place of initdb's (SCRAM everywhere), when set.
    pub hba: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 200,
            settings: Vec::new(),
            data_files: Vec::new(),
            hba: None,
        }
    }
}

/// A running throwaway PostgreSQL; dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    /// The private directory holding everything; deleting it is the cleanup.
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    password: Secret,
    run_as: Option<RunAs>,
    /// Cleans up if we die without running `Drop`; killed by a normal stop.
    watcher: Option<Child>,
    /// Whether `pg_ctl start` succeeded and no stop has been attempted since.
    running: bool,
}

impl Cluster {
    /// Creates, configures and starts a fresh cluster: SCRAM authentication everywhere,
    /// superuser `postgres` with a random password, listening on 127.0.0.1 on a free port.
    /// Blocks for the second or two that `initdb` and `pg_ctl -w start` take.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let root = std::env::temp_dir().join(format!(
            "pglease-{}-{}",
            std::process::id(),
            Alphanumeric.sample_string(&mut rand::rng(), 8)
        ));
        // create_dir (not _all) fails if the name exists, so nobody can pre-plant it.
        fs::create_dir(&root).map_err(io_error(format!("create {}", root.display())))?;
        let mut cluster = Cluster {
            bin_dir,
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_path: root.join("postgresql.log"),
            root,
            port: 0,
            password: Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32)),
            run_as,
            watcher: None,
            running: false,
        };
        // From here on, a failure drops `cluster`, which removes the directory.
        cluster.prepare_dirs()?;
        cluster.watcher = Some(cluster.spawn_watcher(std::process::id())?);
        cluster.initdb(&opts)?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// Port PostgreSQL listens on (TCP, 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host to connect to; always loopback.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Name of the superuser role.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// Password of the superuser role (random per cluster).
    pub fn superuser_password(&self) -> &Secret {
        &self.password
    }

    /// Superuser connection URL for database `db`; a [`Secret`] because it holds the password.
    pub fn url(&self, db: &str) -> Secret {
        Secret::new(format!(
            "postgres://{SUPERUSER}:{}@{HOST}:{}/{}",
            self.password.expose(),
            self.port,
            percent_encode(db)
        ))
    }

    /// Directory of the PostgreSQL programs in use; `pgbench` and `psql` usually sit here too.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server log, worth printing when something upstream misbehaves.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Directory of the unix socket (for psql `-h` when TCP is not wanted).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Stops the server gracefully and removes its files, reporting failures that `Drop`
    /// would have to swallow.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown("fast")
    }

    fn prepare_dirs(&self) -> Result<(), ClusterError> {
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("chmod {}", self.root.display())))?;
        fs::create_dir(&self.socket_dir)
            .map_err(io_error(format!("create {}", self.socket_dir.display())))?;
        self.give_to_os_user(&self.root)?;
        self.give_to_os_user(&self.socket_dir)
    }

    fn give_to_os_user(&self, path: &Path) -> Result<(), ClusterError> {
        match self.run_as {
            Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(io_error(format!("chown {} to {OS_USER}", path.display()))),
            None => Ok(()),
        }
    }

    /// A PostgreSQL program, run from our directory as the right OS user.
    fn program(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        // The caller's cwd may be unreadable for the postgres user; messages in English
        // so failures can be recognised.
        cmd.current_dir(&self.root).env("LC_ALL", "C");
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn spawn_watcher(&self, owner: u32) -> Result<Child, ClusterError> {
        // Reads /proc/PID/stat with builtins only; a zombie owner counts as gone.
        const SCRIPT: &str = r#"
owner=$1 pg_ctl=$2 data=$3 root=$4
alive() {
    if [ ! -d /proc/self ]; then kill -0 "$1" 2>/dev/null; return; fi
    read -r stat < "/proc/$1/stat" 2>/dev/null || return 1
    state=${stat##*") "}
    [ "${state%% *}" != Z ]
}
while alive "$owner"; do sleep 1; done
"$pg_ctl" stop -D "$data" -m immediate -w >/dev/null 2>&1
rm -rf "$root"
"#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pglease-cluster-watcher")
            .arg(owner.to_string())
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.root)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for the owner must not kill it.
            .process_group(0);
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.spawn().map_err(io_error("spawn the cleanup watcher"))
    }

    fn initdb(&self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let pwfile = self.root.join("pwfile");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .map_err(io_error("create the password file"))?;
        file.write_all(self.password.expose().as_bytes())
            .map_err(io_error("write the password file"))?;
        drop(file);
        self.give_to_os_user(&pwfile)?;
        let mut cmd = self.program("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--pwfile")
            .arg(&pwfile)
            .args(["--auth=scram-sha-256", "--username", SUPERUSER])
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"]);
        let result = run(cmd, "initdb");
        let _ = fs::remove_file(&pwfile);
        result?;
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_error(format!("open {}", conf.display())))?;
        file.write_all(server_settings(opts, &self.socket_dir).as_bytes())
            .map_err(io_error(format!("write {}", conf.display())))?;
        let hba = opts
            .hba
            .as_ref()
            .map(|h| ("pg_hba.conf".to_owned(), h.clone().into_bytes()));
        for (name, contents) in opts.data_files.iter().cloned().chain(hba) {
            self.write_data_file(&name, &contents)?;
        }
        Ok(())
    }

    /// Writes `name` into the data directory, mode 0600 and owned by the server's OS user
    /// (PostgreSQL refuses a key file others can read).
    fn write_data_file(&self, name: &str, contents: &[u8]) -> Result<(), ClusterError> {
        let path = self.data_dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(format!("create {}", path.display())))?;
        file.write_all(contents)
            .map_err(io_error(format!("write {}", path.display())))?;
        self.give_to_os_user(&path)
    }

    fn launch(&mut self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let mut cmd = self.program("pg_ctl");
            cmd.arg("start")
                .args(["-w", "-t", "60", "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_path)
                .arg("-o")
                .arg(format!("-p {port}"));
            let Err(err) = run(cmd, "pg_ctl start") else {
                self.port = port;
                self.running = true;
                return Ok(());
            };
            let log = fs::read_to_string(&self.log_path).unwrap_or_default();
            if attempt < START_ATTEMPTS && log.contains("could not bind") {
                attempt += 1;
                continue;
            }
            return Err(match err {
                ClusterError::CommandFailed {
                    command,
                    status,
                    output,
                } => ClusterError::CommandFailed {
                    command,
                    status,
                    output: format!("{output}\nserver log:\n{}", tail(&log)),
                },
                other => other,
            });
        }
    }

    fn shutdown(&mut self, mode: &str) -> Result<(), ClusterError> {
        let mut result = Ok(());
        if std::mem::take(&mut self.running) {
            let mut cmd = self.program("pg_ctl");
            cmd.args(["stop", "-w", "-m", mode, "-D"])
                .arg(&self.data_dir);
            result = run(cmd, "pg_ctl stop");
        }
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                result.and(Err(io_error(format!("remove {}", self.root.display()))(e)))
            }
            _ => result,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate: nothing in a throwaway cluster is worth a checkpoint.
        let _ = self.shutdown("immediate");
    }
}

/// Lines appended to `postgresql.conf`: loopback only, our socket dir, SCRAM for every
/// password set later, and no durability (a throwaway cluster needs speed, not safety).
fn server_settings(opts: &ClusterOptions, socket_dir: &Path) -> String {
    let socket_dir = socket_dir.display().to_string().replace('\'', "''");
    let mut text = format!(
        "\n# pglease throwaway cluster\n\
         listen_addresses = '{HOST}'\n\
         unix_socket_directories = '{socket_dir}'\n\
         max_connections = {}\n\
         password_encryption = 'scram-sha-256'\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = '64MB'\n",
        opts.max_connections
    );
    for (name, value) in &opts.settings {
        text.push_str(&format!("{name} = {value}\n"));
    }
    text
}

/// Asks the kernel for a free port. It is released before PostgreSQL binds it, hence the
/// retry in `launch`.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("pick a free port"))
}

fn run(mut cmd: Command, what: &str) -> Result<(), ClusterError> {
    let out = cmd.output().map_err(io_error(format!(
        "run {}",
        cmd.get_program().to_string_lossy()
    )))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Err(ClusterError::CommandFailed {
        command: what.to_owned(),
        status: out.status,
        output: tail(&text),
    })
}

/// The last lines of a program's output: enough to diagnose, short enough to read.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery::version_key;

    #[test]
    fn settings_quote_the_socket_dir_and_keep_extras() {
        let opts = ClusterOptions {
            max_connections: 42,
            settings: vec![("log_connections".into(), "on".into())],
            ..ClusterOptions::default()
        };
        let text = server_settings(&opts, Path::new("/tmp/it's"));
        assert!(
            text.contains("unix_socket_directories = '/tmp/it''s'\n"),
            "{text}"
        );
        assert!(text.contains("max_connections = 42\n"), "{text}");
        assert!(
            text.contains("password_encryption = 'scram-sha-256'\n"),
            "{text}"
        );
        assert!(text.ends_with("log_connections = on\n"), "{text}");
    }

    #[test]
    fn url_parts_are_encoded_and_errors_are_redacted() {
        assert_eq!(percent_encode("app_1.x"), "app_1.x");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("15beta"), None);
        let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        let kept = tail(&lines.join("\n"));
        assert!(
            kept.starts_with("line 10\n") && kept.ends_with("line 29"),
            "{kept}"
        );
    }
}
