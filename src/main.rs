//! The `pglease` command line: run the proxy, check a config, hash a password, or start a
//! throwaway development setup.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use pglease::app::Proxy;
use pglease::config::{Config, LogFormat};
use pglease::logging;

/// Exit code for an invalid config (EX_USAGE from sysexits.h, the convention for bad input).
const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "pglease",
    version,
    about = "PostgreSQL pooler with short-lived, rotating upstream credentials"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run the proxy with this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How log lines are written on stderr; overrides `[proxy] log_format` (default text).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = log_format_parser())]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and list every problem.
    Check {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password on stdin and print a SCRAM-SHA-256 verifier for `[[users]] password`.
    HashPassword,
    /// Start a throwaway local PostgreSQL with pglease in front of it.
    Dev {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flag = cli.log_format;
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => {
            logging::init(log_format(flag, &config));
            check(&config)
        }
        (Some(Command::HashPassword), _) => {
            logging::init(flag.unwrap_or_default());
            hash_password()
        }
        (Some(Command::Dev { listen }), _) => {
            logging::init(flag.unwrap_or_default());
            run_async(None, async move {
                let opts = pglease::dev::DevOptions { listen };
                pglease::dev::run(opts, shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            })
        }
        (None, Some(path)) => {
            logging::init(log_format(flag, &path));
            run_proxy(&path)
        }
        (None, None) => {
            eprintln!(
                "pglease: nothing to do; try `pglease --config FILE` or `pglease dev` (see --help)"
            );
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

/// `--log-format` when given, else the file's `[proxy] log_format`. Logging has to be set up
/// before the load that counts, so that what loading logs (a secret file others can read) is
/// written in the chosen format: this first load runs with no subscriber yet, so it is
/// silent. A file that does not load gets `text`; the real load then prints its problems.
fn log_format(flag: Option<LogFormat>, path: &Path) -> LogFormat {
    flag.unwrap_or_else(|| {
        Config::load(path)
            .map(|config| config.proxy.log_format)
            .unwrap_or_default()
    })
}

/// Accepts exactly the words `[proxy] log_format` accepts, and lists them in `--help`.
fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    let names = LogFormat::NAMES.map(|(name, _)| name);
    // The possible-values check runs first, so every word reaching the map has a format.
    clap::builder::PossibleValuesParser::new(names)
        .map(|name: String| LogFormat::from_name(&name).unwrap_or_default())
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("pglease: invalid config {}:", path.display());
        for problem in &e.problems {
            eprintln!("  - {problem}");
        }
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            // On stderr, like problems, so the one-line summary on stdout stays parseable.
            for warning in &config.warnings {
                eprintln!("pglease: warning: {warning}");
            }
            println!(
                "{}: ok ({} users, {} databases, {} credentials)",
                path.display(),
                config.users.len(),
                config.databases.len(),
                config.credentials.len()
            );
            for db in &config.databases {
                let who = match &db.users {
                    None => "all local users".to_owned(),
                    Some(list) if list.is_empty() => "no local user".to_owned(),
                    Some(list) => list.join(", "),
                };
                println!("  database {}: {who}", db.name);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("pglease: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("pglease: empty password on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", pglease::auth::hash_password(password));
    ExitCode::SUCCESS
}

fn run_proxy(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let workers = config.proxy.workers;
    let path = path.to_owned();
    run_async(workers, async move {
        let mut hangups = reload_signal()?;
        let proxy = Proxy::start_from_file(config, path).await?;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = proxy.shutdown_requested() => break,
                _ = hangups.recv() => {
                    // Logged either way; a refused reload keeps the running config, and
                    // SIGHUP never ends the process.
                    let _ = proxy.reload().await;
                }
            }
        }
        proxy.shutdown().await;
        Ok(())
    })
}

/// SIGHUP, which reloads the config (systemd's `ExecReload`, PgBouncer's convention).
/// Installed before the first one can arrive, so none terminates the process.
fn reload_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    use anyhow::Context as _;
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")
}

fn run_async(workers: Option<usize>, fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    // One worker: a current-thread runtime runs every task on the thread that polls the
    // listeners, with no work-stealing queues, cross-thread wake-ups or worker parking, which
    // measured ~9% less CPU per transaction than a one-worker multi-thread runtime. Blocking
    // work (password hashing, config parsing) still goes to tokio's blocking pool.
    let mut builder = match workers {
        Some(1) | Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pglease: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pglease: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
