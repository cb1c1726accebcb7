//! A logged-in client's life: wait for a complete request, check out an upstream, relay, give
//! the upstream back (transaction mode: at each idle ReadyForQuery; session mode: when the
//! client leaves), and clean up whatever a vanished client left open.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::ClientError;
use super::handshake::Login;
use super::relay::{Buffers, RelayEnd, Tracker, relay};
use crate::app::{PoolEntry, Shared};
use crate::config::PoolMode;
use crate::pool::{Checkout, CheckoutError, Pool};
use crate::protocol::backend::{self, Severity};
use crate::upstream::maintenance;

/// How long cleanup statements (ROLLBACK, the reset query) may take before the upstream is
/// closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Buffers above this capacity are given back after a large request, so one big statement
/// does not pin memory for the rest of a long session.
const KEEP_CAPACITY: usize = 1 << 20;

/// One client session after login.
pub struct Session {
    shared: std::sync::Arc<Shared>,
    client: TcpStream,
    login: Login,
    bufs: Buffers,
    track: Tracker,
    /// A complete request (through Sync, Flush or a Query) is buffered.
    request_ready: bool,
}

enum Next {
    Request,
    Closed,
}

impl Session {
    /// A session for a client that just logged in.
    pub fn new(shared: std::sync::Arc<Shared>, client: TcpStream, mut login: Login) -> Self {
        let mut bufs = Buffers {
            c2u: std::mem::take(&mut login.pending),
            ..Buffers::default()
        };
        bufs.c2u.reserve(8 * 1024);
        bufs.u2c.reserve(8 * 1024);
        Session {
            shared,
            client,
            login,
            bufs,
            track: Tracker::default(),
            request_ready: false,
        }
    }

    fn entry(&self) -> &PoolEntry {
        &self.login.pool
    }

    /// Serves requests until the client leaves.
    pub async fn run(mut self) -> Result<(), ClientError> {
        let release_on_idle = self.entry().mode == PoolMode::Transaction;
        loop {
            match self.read_request().await? {
                Next::Request => {}
                Next::Closed => return Ok(()),
            }
            let up = match self.entry().pool.checkout().await {
                Ok(up) => up,
                Err(e) => {
                    self.fail_request(&e).await?;
                    continue;
                }
            };
            self.request_ready = false;
            self.login.cancel.slot.set(Some(up.cancel));
            let end = relay(
                &self.client,
                &up.stream,
                &mut self.bufs,
                &mut self.track,
                release_on_idle,
                self.shared.max_message_size,
            )
            .await;
            self.login.cancel.slot.set(None);
            match end {
                RelayEnd::Idle => {
                    if self.track.unsolicited {
                        self.track.unsolicited = false;
                        Pool::discard(up);
                    } else {
                        drop(up);
                    }
                    self.flush_client().await?;
                    self.shrink_buffers();
                }
                RelayEnd::ClientClosed => {
                    self.cleanup(up).await;
                    return Ok(());
                }
                RelayEnd::ClientIo(e) => {
                    self.cleanup(up).await;
                    return Err(e.into());
                }
                RelayEnd::ClientProtocol(e) => {
                    self.cleanup(up).await;
                    let err = ClientError::from(e);
                    super::refuse(&mut self.client, &err).await;
                    return Err(err);
                }
                RelayEnd::UpstreamClosed
                | RelayEnd::UpstreamIo(_)
                | RelayEnd::UpstreamProtocol(_) => {
                    warn!(reason = ?end, "upstream connection lost while serving a client");
                    Pool::discard(up);
                    // The client's transaction (if any) is gone with the upstream; it must
                    // not carry on as if nothing happened.
                    let _ = self.flush_client().await;
                    let err = ClientError::refused("08006", "upstream connection lost");
                    super::refuse(&mut self.client, &err).await;
                    return Err(err);
                }
            }
        }
    }

    /// Reads from the client until a complete request is buffered (or it leaves). Nothing is
    /// checked out before then, so a slow client never holds an upstream while it types.
    async fn read_request(&mut self) -> Result<Next, ClientError> {
        let max = self.shared.max_message_size;
        loop {
            let scan = self.bufs.fscan.scan(&self.bufs.c2u, true, max)?;
            self.track.pending += scan.sync_points;
            self.request_ready |= scan.request_ready;
            if scan.terminate && self.bufs.fscan.forwardable() == 0 {
                return Ok(Next::Closed);
            }
            if self.request_ready {
                return Ok(Next::Request);
            }
            if self.bufs.c2u.len() > max {
                return Err(ClientError::refused(
                    "54000",
                    "request exceeds max_message_size",
                ));
            }
            if let Some(frame) = self.bufs.fscan.pending_frame_len(&self.bufs.c2u) {
                let unscanned = self.bufs.c2u.len() - self.bufs.fscan.forwardable();
                self.bufs.c2u.reserve(frame.saturating_sub(unscanned));
            }
            if self.client.read_buf(&mut self.bufs.c2u).await? == 0 {
                return Ok(Next::Closed);
            }
        }
    }

    /// Answers a request that could not get an upstream: one error, and a ReadyForQuery for
    /// each sync point so the client's protocol state stays in step. The client stays
    /// connected and may retry.
    async fn fail_request(&mut self, e: &CheckoutError) -> Result<(), ClientError> {
        let code = match e {
            CheckoutError::WaitTimeout(_) => "57014",
            CheckoutError::Upstream(_) => "08006",
            CheckoutError::Closed => "57P01",
        };
        debug!(error = %e, "request refused");
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        let out = &mut self.bufs.u2c;
        backend::error_response(out, Severity::Error, code, &e.to_string());
        for _ in 0..self.track.pending {
            backend::ready_for_query(out, b'I');
        }
        self.track.pending = 0;
        self.flush_client().await
    }

    /// Writes everything left in the client-bound buffer.
    async fn flush_client(&mut self) -> Result<(), ClientError> {
        if !self.bufs.u2c.is_empty() {
            self.client.write_all(&self.bufs.u2c).await?;
            self.bufs.u2c.clear();
        }
        self.bufs.bscan.reset();
        Ok(())
    }

    fn shrink_buffers(&mut self) {
        for buf in [&mut self.bufs.c2u, &mut self.bufs.u2c] {
            if buf.capacity() > KEEP_CAPACITY && buf.is_empty() {
                *buf = BytesMut::with_capacity(8 * 1024);
            }
        }
    }

    /// Decides what happens to an upstream whose client left: returned as is when it is
    /// idle between transactions, rolled back and reset when a transaction was open, closed
    /// (after cancelling its query) when a request was still in flight. One client's state
    /// never reaches the next one.
    async fn cleanup(&mut self, mut up: Checkout) {
        let b = &self.bufs;
        let mid_request = self.track.pending > 0
            || b.fscan.open_batch()
            || !b.bscan.at_boundary()
            || b.fscan.forwardable() > 0
            || self.track.unsolicited;
        if mid_request {
            let target = up.cancel;
            Pool::discard(up);
            tokio::spawn(async move {
                let _ = maintenance::cancel(target).await;
            });
            return;
        }
        let mut statements: Vec<&str> = Vec::with_capacity(2);
        if self.track.status != b'I' {
            statements.push("ROLLBACK");
        }
        if self.entry().mode == PoolMode::Session {
            // Run on its own: DISCARD ALL refuses to run inside a multi-statement query.
            statements.push(&self.login.pool.reset_query);
        }
        for sql in statements {
            match maintenance::run_simple(&mut up, sql, CLEANUP_TIMEOUT).await {
                Ok(b'I') => {}
                other => {
                    debug!(result = ?other.map(char::from), "upstream cleanup failed; closing it");
                    Pool::discard(up);
                    return;
                }
            }
        }
        if up.has_unsolicited_input() {
            Pool::discard(up);
        }
    }
}
