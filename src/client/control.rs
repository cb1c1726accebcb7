//! Requests from the admin console to the process as a whole: reload the config, shut down.
//! The console only asks; the wiring (`app`) owns the answer, so the console needs no handle
//! on the proxy it runs in.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What a reload did, or why it was refused (the old config stays), as text for the operator.
pub type ReloadOutcome = Result<String, String>;

/// One `RELOAD`: the wiring answers on `reply`.
pub type ReloadRequest = oneshot::Sender<ReloadOutcome>;

/// The console's side of the process controls. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Control {
    reload: mpsc::UnboundedSender<ReloadRequest>,
    shutdown: CancellationToken,
}

/// The wiring's side: where reload requests arrive, and the shutdown request to wait on.
#[derive(Debug)]
pub struct ControlRequests {
    /// Each `RELOAD`, with where to send its outcome.
    pub reloads: mpsc::UnboundedReceiver<ReloadRequest>,
    /// Cancelled by `SHUTDOWN`.
    pub shutdown: CancellationToken,
}

impl Control {
    /// A linked pair: the console keeps the [`Control`], the wiring the [`ControlRequests`].
    pub fn new() -> (Control, ControlRequests) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        (
            Control {
                reload: tx,
                shutdown: shutdown.clone(),
            },
            ControlRequests {
                reloads: rx,
                shutdown,
            },
        )
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> ReloadOutcome {
        let (reply, outcome) = oneshot::channel();
        if self.reload.send(reply).is_err() {
            return Err("reload is not available in this process".to_owned());
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the reload was abandoned".to_owned()))
    }

    /// Asks the process to shut down gracefully (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }
}
