//! Moving the listener to a new lease without losing or repeating a notification.
//!
//! # Design
//!
//! PostgreSQL keeps one notification queue per cluster, in commit order. Every listening
//! backend reads that same queue from its own position and delivers, in queue order, the
//! entries of the channels it listens on; a backend that LISTENs starts at a position no later
//! than the queue's head when its LISTEN commits (it may start a little earlier, and then
//! also delivers a few entries committed just before). So once the new connection's LISTEN
//! committed, both connections deliver the same entries from some point on, in the same
//! order, and what matters is finding that point in both streams. It is marked:
//!
//! 1. The old connection LISTENs on a private marker channel (a random name).
//! 2. The new connection LISTENs on every wanted channel and the marker, in one transaction.
//! 3. The new connection sends one notification on the marker channel (a random payload).
//!    It commits after step 2, so it sits in the queue after the new connection's start and
//!    both connections deliver it, each at the same place in the queue order.
//! 4. The new connection's notifications before the marker are dropped (the old one delivers
//!    them), those after it are kept.
//! 5. The old connection's notifications are dispatched up to the marker; then it is closed,
//!    and what the new one kept is dispatched, in order, after them.
//!
//! Every entry thus comes from exactly one connection: before the marker from the old one,
//! after it from the new one. Meanwhile the old connection's notifications wait in its socket
//! while the new one's LISTEN runs (a round trip), and are dispatched in order after it. If the
//! new connection fails before its marker came back, the old one stays untouched (the marker
//! LISTEN left on it is never notified again) and the handover is tried again later with
//! backoff; if the old one fails, the new one takes over as after a lost connection
//! (notifications in between may be lost).

use std::time::Duration;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tracing::{info, warn};

use super::Shared;
use super::conn::{Conn, EXCHANGE_TIMEOUT, Notification};
use crate::upstream::UpstreamError;

/// How long each connection may take to deliver the marker.
const MARKER_TIMEOUT: Duration = EXCHANGE_TIMEOUT;

/// The private channel and payload that mark where the new connection's stream starts.
struct Marker {
    channel: String,
    payload: String,
}

impl Marker {
    fn new() -> Marker {
        Marker {
            channel: format!("pglease_handover_{:016x}", rand::random::<u64>()),
            payload: format!("{:016x}", rand::random::<u64>()),
        }
    }

    fn is(&self, n: &Notification) -> bool {
        n.channel == self.channel && n.payload == self.payload
    }
}

/// What the new connection delivered: nothing kept before the marker, everything after it.
struct Cut<'m> {
    marker: &'m Marker,
    seen: bool,
    after: Vec<Notification>,
}

impl Cut<'_> {
    fn take(&mut self, n: Notification) {
        if self.seen {
            self.after.push(n);
        } else if self.marker.is(&n) {
            self.seen = true;
        }
    }
}

/// Hands the listener over from `old` to a connection on the current lease. Returns the
/// connection to go on with (`None`: open a new one) and whether to try again later.
pub(super) async fn rotate(
    shared: &Shared,
    mut old: Conn,
    sink: &mut impl FnMut(Notification),
) -> (Option<Conn>, bool) {
    let name = shared.credentials.name();
    let mut new = match Conn::open(&shared.target, &shared.credentials, &shared.instruments).await {
        Ok(new) if new.generation() > old.generation() => new,
        Ok(_) => return (Some(old), false),
        Err(e) => {
            warn!(credentials = %name, error = %e, "opening the listener's connection on the new lease failed; the old one stays for now");
            return (Some(old), true);
        }
    };
    let (from, to) = (old.generation(), new.generation());
    let marker = Marker::new();
    let channel = escape_identifier(&marker.channel);
    if let Err(e) = old.exchange(&format!("LISTEN {channel}"), sink).await {
        warn!(credentials = %name, error = %e, "listener connection lost during a rotation; notifications in between may be lost");
        return (Some(new), false);
    }
    let mut cut = Cut {
        marker: &marker,
        seen: false,
        after: Vec::new(),
    };
    let wanted = old.active.clone();
    let mut listens = String::new();
    for c in wanted
        .iter()
        .map(|c| c.as_ref())
        .chain([marker.channel.as_str()])
    {
        listens.push_str(&format!("LISTEN {};", escape_identifier(c)));
    }
    // A separate Query, so the marker commits after the LISTENs.
    let notify = format!(
        "SELECT pg_catalog.pg_notify({}, {})",
        escape_literal(&marker.channel),
        escape_literal(&marker.payload)
    );
    let started = async {
        let mut to_new = |n| cut.take(n);
        new.exchange(&listens, &mut to_new).await?;
        new.exchange(&notify, &mut to_new).await?;
        while !cut.seen {
            let n = new.next_notification().await?;
            cut.take(n);
        }
        Ok::<(), UpstreamError>(())
    };
    let started = tokio::time::timeout(MARKER_TIMEOUT, started)
        .await
        .unwrap_or(Err(UpstreamError::Timeout));
    if let Err(e) = started {
        // The old connection is intact and goes on delivering; the marker LISTEN left on it
        // is never notified again.
        warn!(credentials = %name, error = %e, "the listener's new connection failed to take over; the old one stays for now");
        return (Some(old), true);
    }
    new.active = wanted;
    if let Err(e) = drain_to_marker(&mut old, &marker, sink).await {
        warn!(credentials = %name, error = %e, "the old listener connection did not deliver the handover marker; notifications around it may be lost");
    }
    drop(old);
    for n in cut.after.drain(..) {
        sink(n);
    }
    if let Err(e) = new.exchange(&format!("UNLISTEN {channel}"), sink).await {
        warn!(credentials = %name, error = %e, "listener connection lost right after a rotation");
        return (None, true);
    }
    info!(credentials = %name, from, to, channels = new.active.len(), "listener moved to a new lease");
    (Some(new), false)
}

/// Dispatches the old connection's notifications up to the marker.
async fn drain_to_marker(
    old: &mut Conn,
    marker: &Marker,
    sink: &mut impl FnMut(Notification),
) -> Result<(), UpstreamError> {
    let drain = async {
        loop {
            let n = old.next_notification().await?;
            if marker.is(&n) {
                return Ok(());
            }
            sink(n);
        }
    };
    tokio::time::timeout(MARKER_TIMEOUT, drain)
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
}
