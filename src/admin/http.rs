//! The admin HTTP endpoint on `[proxy] admin_listen`: `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process is alive) and `GET /readyz` (it should get traffic; see
//! [`crate::metrics::ready`]).
//!
//! # Design
//!
//! HTTP/1.1 only, with hyper. The endpoint is started after the client listener and stopped
//! last, after the leases are revoked, so Prometheus and load balancers hear about a shutdown
//! (`/readyz` 503 "shutting down") instead of seeing the port vanish. A scrape reads atomics
//! and takes no lock the data path uses. Peers cannot hurt the proxy: headers must arrive
//! within [`HEADER_TIMEOUT`] and fit in [`MAX_REQUEST_BYTES`], a connection lives at most
//! [`CONNECTION_LIFETIME`], no request body is read, and at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at accept).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::client::Shared;
use crate::metrics::{self, Metrics, Readiness};

/// Longest wait for a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request (line and headers) read; hyper refuses a larger one.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Longest a connection is served, however it behaves.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Connections served at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 64;

/// What every request reads.
pub struct AdminState {
    /// The proxy's shared state, for readiness.
    pub shared: Arc<Shared>,
    /// The registry `/metrics` renders.
    pub metrics: Metrics,
    /// How readiness is judged.
    pub readiness: Readiness,
}

/// Serves the endpoint on `listener` until `stop`; connections run on `tasks`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoint listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "admin endpoint busy; connection closed");
            continue;
        };
        let (state, stop) = (state.clone(), stop.clone());
        tasks.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "admin connection ended");
                },
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The response to one request.
fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.readiness.check(&state.shared) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Binds `addr` for [`serve`], reporting the address actually bound.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
