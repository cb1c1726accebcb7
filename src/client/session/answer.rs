//! Requests answered without an upstream: LISTEN / UNLISTEN in transaction mode (through the
//! pool's listener), named statements prepared outside a transaction, and the errors a
//! request gets when it cannot have an upstream.

use tracing::debug;

use super::Session;
use crate::client::ClientError;
use crate::client::notify::ClientNotify;
use crate::config::PoolMode;
use crate::pool::CheckoutError;
use crate::protocol::backend::{self, Severity};

impl Session {
    /// Transaction mode: whether the buffered request may be a LISTEN / UNLISTEN one for
    /// [`Session::answer_listen`] (a cheap look, no allocation).
    pub(super) fn may_answer_listen(&self) -> bool {
        if self.login.pool.mode != PoolMode::Transaction {
            return false;
        }
        let request = &self.bufs.c2u[..self.bufs.fscan.forwardable()];
        match &self.notify {
            Some(n) => n.may_answer(request, self.track.status),
            None => ClientNotify::may_answer_first(request, self.track.status),
        }
    }

    /// Transaction mode: answers a LISTEN / UNLISTEN request through the pool's listener (see
    /// [`ClientNotify::answer`]). True when it was answered.
    pub(super) async fn answer_listen(&mut self) -> Result<bool, ClientError> {
        if self.login.pool.mode != PoolMode::Transaction {
            return Ok(false);
        }
        let pool = &self.login.pool.pool;
        let notify = (self.notify).get_or_insert_with(|| Box::new(ClientNotify::new(pool.clone())));
        let request = &self.bufs.c2u[..self.bufs.fscan.forwardable()];
        let status = self.track.status;
        let Some(syncs) = notify.answer(request, status, &mut self.bufs.u2c).await else {
            return Ok(false);
        };
        self.answered(syncs).await
    }

    /// Transaction mode: answers a request that only prepares named statements outside a
    /// transaction without checking out an upstream (see
    /// [`ClientStatements::answer_without_upstream`](crate::client::statements::ClientStatements::answer_without_upstream)). True when it was answered.
    pub(super) async fn answer_without_upstream(&mut self) -> Result<bool, ClientError> {
        let Some(statements) = self.statements.as_mut() else {
            return Ok(false);
        };
        let n = self.bufs.fscan.forwardable();
        let request = &self.bufs.c2u[..n];
        let Some(syncs) =
            statements.answer_without_upstream(request, self.track.status, &mut self.bufs.u2c)
        else {
            return Ok(false);
        };
        self.answered(syncs).await
    }

    /// Answers a request that could not get an upstream: one error, and a ReadyForQuery for
    /// each sync point so the client's protocol state stays in step. The client stays
    /// connected and may retry.
    pub(super) async fn fail_request(&mut self, e: &CheckoutError) -> Result<(), ClientError> {
        let code = match e {
            CheckoutError::WaitTimeout(_) => "57014",
            CheckoutError::Upstream(_) => "08006",
            CheckoutError::Closed => "57P01",
        };
        debug!(error = %e, "request refused");
        self.refuse_request(code, &e.to_string()).await
    }

    /// Answers the buffered request with one error (and its ReadyForQuery replies) without
    /// running it; the client stays connected.
    pub(super) async fn refuse_request(
        &mut self,
        code: &str,
        message: &str,
    ) -> Result<(), ClientError> {
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        self.shared.instruments.error_sent(code);
        let out = &mut self.bufs.u2c;
        backend::error_response(out, Severity::Error, code, message);
        for _ in 0..self.track.pending {
            backend::ready_for_query(out, b'I');
        }
        self.track.pending = 0;
        self.flush_client().await
    }

    /// The buffered request was answered here, for `syncs` of its sync points: it leaves the
    /// buffer and the replies go out. Always true (it was answered).
    async fn answered(&mut self, syncs: u32) -> Result<bool, ClientError> {
        self.bufs.fscan.discard_scanned(&mut self.bufs.c2u);
        self.request_ready = false;
        self.track.pending = self.track.pending.saturating_sub(syncs);
        self.flush_client().await?;
        Ok(true)
    }
}
