//! The prometheus instruments client tasks write: failed logins by reason and errors sent to
//! clients by SQLSTATE. Built by the metrics registry (`crate::metrics`) with the fixed labels
//! resolved once; a proxy built without one gets [`ClientInstruments::default`], registered
//! nowhere.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, Opts};

/// Why a login failed: the `reason` label of `pglease_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// A wrong password, or a user that does not exist (the two are not told apart).
    WrongPassword,
    /// The client broke the authentication protocol.
    Protocol,
    /// The startup packet named no user.
    NoUser,
    /// A plaintext login while `client_tls = "require"`.
    TlsRequired,
    /// The database the client asked for is not configured for it.
    UnknownDatabase,
    /// The login did not finish within `login_timeout`.
    Timeout,
}

impl AuthFailure {
    /// Every reason, in [`AuthFailure::index`] order.
    pub const ALL: [AuthFailure; 6] = [
        AuthFailure::WrongPassword,
        AuthFailure::Protocol,
        AuthFailure::NoUser,
        AuthFailure::TlsRequired,
        AuthFailure::UnknownDatabase,
        AuthFailure::Timeout,
    ];

    /// The stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::WrongPassword => "wrong_password",
            AuthFailure::Protocol => "protocol",
            AuthFailure::NoUser => "no_user",
            AuthFailure::TlsRequired => "tls_required",
            AuthFailure::UnknownDatabase => "unknown_database",
            AuthFailure::Timeout => "timeout",
        }
    }

    /// Position in [`AuthFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counters every client task writes. Cheap to clone.
#[derive(Clone)]
pub struct ClientInstruments {
    /// Failed logins by [`AuthFailure`], indexed by [`AuthFailure::index`].
    pub auth_failures: Arc<[IntCounter]>,
    /// Errors pglease sent to clients, by SQLSTATE (`pglease_client_errors_total`). The label
    /// is looked up per error, which is off the hot path; codes that are not five ASCII
    /// digits or capitals count as `other`, so a peer cannot grow the label set.
    pub errors: IntCounterVec,
}

impl ClientInstruments {
    /// Counts one failed login.
    pub fn auth_failed(&self, reason: AuthFailure) {
        if let Some(c) = self.auth_failures.get(reason.index()) {
            c.inc();
        }
    }

    /// Counts one error sent to a client.
    pub fn error_sent(&self, sqlstate: &str) {
        let valid = sqlstate.len() == 5
            && sqlstate
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        let label = if valid { sqlstate } else { "other" };
        if let Ok(c) = self.errors.get_metric_with_label_values(&[label]) {
            c.inc();
        }
    }
}

impl Default for ClientInstruments {
    fn default() -> Self {
        let counter = || {
            IntCounter::new("unregistered", "unregistered")
                .unwrap_or_else(|_| unreachable!("a fixed valid name"))
        };
        ClientInstruments {
            auth_failures: AuthFailure::ALL.iter().map(|_| counter()).collect(),
            errors: IntCounterVec::new(Opts::new("unregistered", "unregistered"), &["sqlstate"])
                .unwrap_or_else(|_| unreachable!("a fixed valid name and label")),
        }
    }
}
