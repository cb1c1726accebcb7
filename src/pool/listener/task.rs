//! The listener's background task: keeps the wanted channels LISTENed on one connection,
//! fans notifications out, follows rotation and reconnects.
//!
//! # Design
//!
//! One loop, one connection at a time (two only during a [`super::handover`]). Each turn it
//! reads the wanted set, makes it true on the connection (opening one first if needed) and
//! confirms that version to the LISTENs waiting for it; then it waits for the first of: the
//! set changing, a notification (dispatched at once), a newer lease (hand over to a connection
//! on it), the connection's lease reaching its hard deadline or the connection failing (both:
//! drop it and open a new one on the next turn), or the pool closing. Failures back off
//! exponentially from [`FIRST_RETRY`] to [`LAST_RETRY`], so a PostgreSQL restart is not met
//! with a reconnect storm, and LISTENs waiting meanwhile are told it failed.

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Shared;
use super::conn::{Conn, Notification};
use super::handover;
use crate::credentials::LeaseEnd;

/// The first pause after a failure.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest pause between two attempts.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Runs until the pool closes.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    let mut retry = FIRST_RETRY;
    let mut handover_after: Option<Instant> = None;
    let sink = &mut |n: Notification| shared.dispatch(&n.channel, &n.frame);
    loop {
        // Registered before the set is read, so a change made meanwhile still wakes us.
        let mut changed = pin!(shared.changed.notified());
        changed.as_mut().enable();
        let (version, wanted) = shared.wanted();
        let wanted: BTreeSet<Arc<str>> = wanted.into_iter().collect();
        if wanted.is_empty() {
            if conn.take().is_some() {
                debug!(credentials = %shared.credentials.name(), "listener connection closed: no channel is listened on");
            }
            shared.confirm(version);
            tokio::select! {
                () = shared.closed.cancelled() => return,
                () = changed => {}
            }
            continue;
        }
        let made = match conn.as_mut() {
            Some(c) => c.apply(&wanted, sink).await,
            None => {
                match Conn::open(&shared.target, &shared.credentials, &shared.instruments).await {
                    Ok(c) => {
                        info!(credentials = %shared.credentials.name(), generation = c.generation(), channels = wanted.len(), "listener connection opened");
                        conn.insert(c).apply(&wanted, sink).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = made {
            warn!(credentials = %shared.credentials.name(), error = %e, retry_in = ?retry, "listener connection failed");
            conn = None;
            shared.fail(version);
            tokio::select! {
                () = shared.closed.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(LAST_RETRY);
            continue;
        }
        shared.confirm(version);
        retry = FIRST_RETRY;
        let Some(c) = conn.as_mut() else { continue };
        let generation = c.generation();
        let deadline = c.deadline.clone();
        let creds = shared.credentials.clone();
        let newer = async move {
            if let Some(at) = handover_after {
                tokio::time::sleep_until(at).await;
            }
            creds.wait_newer_than(generation).await;
        };
        let woke = tokio::select! {
            () = shared.closed.cancelled() => return,
            () = changed => Wake::Changed,
            e = c.notifications(sink) => Wake::Lost(e.to_string()),
            () = newer => Wake::Rotated,
            () = ended(&deadline) => Wake::Lost("its lease reached its hard deadline".into()),
        };
        match woke {
            Wake::Changed => {}
            Wake::Lost(why) => {
                warn!(credentials = %shared.credentials.name(), generation, error = %why, "listener connection lost; notifications sent until it is back are lost");
                conn = None;
            }
            Wake::Rotated => {
                let Some(old) = conn.take() else { continue };
                let (next, failed) = handover::rotate(&shared, old, sink).await;
                conn = next;
                handover_after = failed.then(|| Instant::now() + retry);
                if failed {
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }
}

enum Wake {
    Changed,
    Lost(String),
    Rotated,
}

/// Resolves when `deadline` fires.
async fn ended(deadline: &LeaseEnd) {
    poll_fn(|cx| {
        if deadline.poll_ended(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
