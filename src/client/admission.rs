//! `max_client_conn`: how many client connections may be open at once, and what a client
//! above the limit hears.
//!
//! # Design
//!
//! Every accepted connection takes a [`Seat`] before anything is read from it: one atomic
//! add, given back when the connection's task ends. A connection that finds no seat is not
//! dropped blind: it is served by an overflow path bounded on its own ([`MAX_OVERFLOW`]
//! connections, [`OVERFLOW_TIMEOUT`] each) that reads only the startup packet. A
//! CancelRequest is forwarded as usual (a full proxy must still be able to stop a runaway
//! query), and so is a login to the admin console (database `pglease`), so an operator can
//! look at a full proxy, as with PgBouncer. Every other client gets PostgreSQL's own
//! `53300 sorry, too many clients already` and is closed, before any password is asked
//! for, any SCRAM hashing is done or any pool is touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::ClientError;
use super::stream::ClientStream;
use crate::protocol::startup::{self, StartupPacket};

/// The admin console's virtual database, let in above the limit.
const ADMIN_DATABASE: &str = "pglease";

/// Connections served by the overflow path at once; beyond this a connection is closed
/// without a word, so a flood above the limit cannot exhaust file descriptors either.
pub const MAX_OVERFLOW: usize = 64;

/// How long a connection above the limit has to send its startup packet (and finish a TLS
/// handshake first, if it asks for one).
pub const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL's answer when `max_connections` is reached.
pub const TOO_MANY_CLIENTS: &str = "sorry, too many clients already";

/// Counts the open client connections against `max_client_conn`.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    open: AtomicUsize,
    overflow: AtomicUsize,
}

/// Where an accepted connection stands against the limit; dropping it gives its place back.
#[derive(Debug)]
pub struct Seat {
    admission: Arc<Admission>,
    /// Above the limit: only a cancel or an admin login may go on.
    pub overflow: bool,
}

impl Admission {
    /// A limit of `max` client connections.
    pub fn new(max: usize) -> Admission {
        Admission {
            max,
            open: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
        }
    }

    /// A place for a newly accepted connection: a seat under the limit, else one on the
    /// overflow path, else `None` (close the connection at once).
    pub fn seat(self: &Arc<Self>) -> Option<Seat> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if taken.is_ok() {
            return Some(self.place(false));
        }
        self.overflow
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_OVERFLOW).then_some(n + 1)
            })
            .ok()
            .map(|_| self.place(true))
    }

    fn place(self: &Arc<Self>, overflow: bool) -> Seat {
        Seat {
            admission: self.clone(),
            overflow,
        }
    }

    /// Client connections open under the limit right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let count = if self.overflow {
            &self.admission.overflow
        } else {
            &self.admission.open
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// For a connection above the limit: reads (without consuming) its first packet after the
/// encryption negotiation, and refuses it unless it is a CancelRequest or a login to the
/// admin console. Reads at most one startup packet ([`startup::MAX_STARTUP_LEN`]).
pub async fn refuse_unless_allowed(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<(), ClientError> {
    let too_many = || ClientError::refused("53300", TOO_MANY_CLIENTS);
    loop {
        match startup::parse(buf) {
            Ok(Some((StartupPacket::Cancel { .. }, _))) => return Ok(()),
            Ok(Some((StartupPacket::Startup(s), _))) if s.database() == Some(ADMIN_DATABASE) => {
                return Ok(());
            }
            // A bad packet or any other login: the limit is the answer either way.
            Ok(Some(_)) | Err(_) => return Err(too_many()),
            Ok(None) => {}
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_stop_at_the_limit_then_overflow_is_bounded_and_leaving_frees_a_seat() {
        let admission = Arc::new(Admission::new(2));
        let a = admission.seat().unwrap();
        let _b = admission.seat().unwrap();
        assert!(!a.overflow);
        let over: Vec<Seat> = (0..MAX_OVERFLOW)
            .map(|_| admission.seat().unwrap())
            .collect();
        assert!(over.iter().all(|s| s.overflow));
        assert!(admission.seat().is_none(), "overflow must be bounded");
        drop(over);
        drop(a);
        assert_eq!(admission.open(), 1);
        assert!(!admission.seat().unwrap().overflow);
    }
}
