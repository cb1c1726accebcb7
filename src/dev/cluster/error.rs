//! Why a throwaway cluster could not be found, started or stopped, and the advice for a
//! machine without PostgreSQL.

use std::io;
use std::process::ExitStatus;

/// What to tell someone whose machine lacks PostgreSQL; kept in one place so `dev`, the
/// tests and CI all give the same advice.
pub const INSTALL_HINT: &str =
    "install the PostgreSQL server binaries, e.g. `apt-get install postgresql`, or set PG_BIN";

/// Why a cluster could not be found, started or stopped. Never contains the superuser
/// password: it only travels through a private file and [`Secret`](crate::secret::Secret).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory holds `initdb`, `pg_ctl` and `postgres`; `searched` says where we looked.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {searched}: {INSTALL_HINT}"
    )]
    BinariesNotFound { searched: String },
    /// We are root, PostgreSQL refuses to run as root, and there is no user to switch to.
    #[error(
        "running as root, but there is no `postgres` OS user to run PostgreSQL as: \
         `apt-get install postgresql` creates it, or `useradd --system postgres`"
    )]
    NoPostgresUser,
    /// A file-system or process-spawning step failed; `action` names the step.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program ran and failed; `output` is the tail of what it (and, for a
    /// failed start, the server log) printed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        output: String,
    },
}

/// Turns an `io::Error` into [`ClusterError::Io`] naming the step that failed.
pub(super) fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Io { action, source }
}
