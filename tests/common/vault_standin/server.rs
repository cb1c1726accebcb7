//! The stand-in's listener and its run-time [`Mode`]s: answering, or failing the ways a Vault
//! server does (sealed, rate limited, hanging, port closed), or redirecting like a standby.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{Inner, VaultStandin, endpoints};

/// How the stand-in answers, switched at run time with [`VaultStandin::set_mode`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answers like Vault.
    #[default]
    Normal,
    /// `503 Vault is sealed` to every request.
    Sealed,
    /// `429` to every request, as a rate limit quota does.
    RateLimited,
    /// Accepts connections and reads requests but never answers.
    Hang,
    /// Nothing listens on the port: connections are refused; open ones are cut.
    Closed,
    /// `307 Temporary Redirect` to this base URL plus the request's path, as a standby does.
    Redirect(String),
}

impl VaultStandin {
    /// Switches how every request from now on is answered. `Closed` stops listening and cuts
    /// open connections; leaving it listens again on the same port.
    pub async fn set_mode(&self, mode: Mode) {
        let closed = mode == Mode::Closed;
        self.inner.lock().mode = mode;
        let running = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (closed, running) {
            (true, Some(task)) => {
                task.abort();
                // The listener and the connections go when the aborted task is dropped.
                let _ = task.await;
            }
            (false, None) => {
                let mut tries = 0;
                let listener = loop {
                    match TcpListener::bind(self.addr).await {
                        Ok(l) => break l,
                        Err(_) if tries < 50 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("listening again on {}: {e}", self.addr),
                    }
                };
                let task = tokio::spawn(serve(listener, self.tls.clone(), self.inner.clone()));
                *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            }
            (_, running) => {
                *self.server.lock().unwrap_or_else(|e| e.into_inner()) = running;
            }
        }
    }
}

/// Accepts until aborted; the connections are in a `JoinSet` it owns, so aborting it cuts
/// them too, as a stopped server would.
pub(super) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, inner: Arc<Inner>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let (inner, tls) = (inner.clone(), tls.clone());
        connections.spawn(async move {
            let service = service_fn(move |req| endpoints::handle(inner.clone(), req));
            let http = http1::Builder::new();
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
