//! The session timeouts that run while a client holds an upstream: `idle_transaction_timeout`
//! (idle inside a transaction), `client_idle_timeout` in session mode (idle between
//! transactions, upstream still held) and `query_timeout` (a request running too long), with
//! the grace a cancelled request gets before its upstream is closed.
//!
//! # Design
//!
//! One timer per session, created the first time one is needed and re-armed (never
//! re-created) only when the conversation changes phase: a request starts running, or the
//! client goes quiet. Messages in between cost nothing: the relay asks [`Timers::poll`] only
//! when it has nothing else to do, and only when some timeout is on at all. A session with
//! every timeout off carries no timer. Between transactions in transaction mode the client
//! holds no upstream, and `client_idle_timeout` is a plain sleep in the session's wait for the
//! next request instead.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::ProxyConfig;

/// How long a request cancelled for `query_timeout` may take to end before its upstream is
/// closed and the client ended: PostgreSQL acts on a cancel within milliseconds, so a longer
/// wait means the upstream (or the network to it) is stuck.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The session timeouts, each `None` when configured as `"0s"` (off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// `client_idle_timeout`: idle outside a transaction.
    pub client_idle: Option<Duration>,
    /// `idle_transaction_timeout`: idle inside a transaction.
    pub idle_transaction: Option<Duration>,
    /// `query_timeout`: one request running.
    pub query: Option<Duration>,
}

impl Timeouts {
    /// The timeouts of `[proxy]`.
    pub fn from_config(proxy: &ProxyConfig) -> Timeouts {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        Timeouts {
            client_idle: on(proxy.client_idle_timeout),
            idle_transaction: on(proxy.idle_transaction_timeout),
            query: on(proxy.query_timeout),
        }
    }

    /// Whether any timer must run while an upstream is held.
    pub fn any_while_held(&self) -> bool {
        self.client_idle.is_some() || self.idle_transaction.is_some() || self.query.is_some()
    }
}

/// Where the conversation stands when the relay has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request is in flight (sent, or being answered).
    Running,
    /// Waiting for the client's next request, inside a transaction or not.
    Idle { in_transaction: bool },
    /// Neither (the proxy is still writing to a slow client): no timer runs.
    Other,
}

/// Which limit a session reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `client_idle_timeout`, idle between transactions.
    IdleSession,
    /// `idle_transaction_timeout`.
    IdleInTransaction,
    /// `query_timeout`: the request is to be cancelled now; see [`Timers::cancel_sent`].
    Query,
    /// The cancelled request did not end within [`CANCEL_GRACE`].
    CancelIgnored,
}

/// The one timer of a session and what it is armed for.
#[derive(Debug)]
pub struct Timers {
    timeouts: Timeouts,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Expired>,
}

impl Timers {
    /// Timers for `timeouts`; nothing is armed or allocated yet.
    pub fn new(timeouts: Timeouts) -> Timers {
        Timers {
            timeouts,
            sleep: None,
            armed: None,
        }
    }

    /// Forgets what is armed: a new request starts from nothing.
    pub fn reset(&mut self) {
        self.armed = None;
    }

    /// Arms the grace after a `query_timeout` cancel was sent.
    pub fn cancel_sent(&mut self) {
        self.arm(Expired::CancelIgnored, CANCEL_GRACE);
    }

    /// Ready with the limit reached, if one is; otherwise (re)arms the timer for `phase` when
    /// it changed and registers the wake-up.
    pub fn poll(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<Expired> {
        let wanted = match phase {
            Phase::Running if self.armed == Some(Expired::CancelIgnored) => {
                Some((Expired::CancelIgnored, CANCEL_GRACE))
            }
            Phase::Running => self.timeouts.query.map(|d| (Expired::Query, d)),
            Phase::Idle {
                in_transaction: true,
            } => self
                .timeouts
                .idle_transaction
                .map(|d| (Expired::IdleInTransaction, d)),
            Phase::Idle {
                in_transaction: false,
            } => self.timeouts.client_idle.map(|d| (Expired::IdleSession, d)),
            Phase::Other => None,
        };
        match wanted {
            None => {
                self.armed = None;
                return Poll::Pending;
            }
            Some((kind, after)) if self.armed != Some(kind) => self.arm(kind, after),
            Some(_) => {}
        }
        let (Some(sleep), Some(kind)) = (self.sleep.as_mut(), self.armed) else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = None;
                Poll::Ready(kind)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn arm(&mut self, kind: Expired, after: Duration) {
        let at = Instant::now() + after;
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = Some(kind);
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    const IN_TX: Phase = Phase::Idle {
        in_transaction: true,
    };
    const IDLE: Phase = Phase::Idle {
        in_transaction: false,
    };

    fn timers(query: Duration) -> Timers {
        Timers::new(Timeouts {
            client_idle: Some(Duration::from_secs(100)),
            idle_transaction: Some(Duration::from_secs(10)),
            query: Some(query),
        })
    }

    /// Polls once; `None` while pending.
    async fn check(t: &mut Timers, phase: Phase) -> Option<Expired> {
        poll_fn(|cx| {
            Poll::Ready(match t.poll(cx, phase) {
                Poll::Ready(e) => Some(e),
                Poll::Pending => None,
            })
        })
        .await
    }

    /// What is armed, and how long from now it fires (rounded down to whole seconds).
    fn armed(t: &Timers) -> Option<(Expired, u64)> {
        let at = t.sleep.as_ref()?.deadline();
        Some((t.armed?, (at - Instant::now()).as_secs()))
    }

    #[tokio::test]
    async fn each_phase_arms_its_own_limit_once_and_a_phase_change_rearms() {
        let mut t = timers(Duration::from_secs(30));
        assert!(
            t.sleep.is_none(),
            "nothing is allocated before it is needed"
        );
        assert_eq!(check(&mut t, IN_TX).await, None);
        assert_eq!(armed(&t), Some((Expired::IdleInTransaction, 9)));
        let first = t.sleep.as_ref().map(|s| s.deadline());
        // Still idle: the same deadline, not a fresh one per poll.
        assert_eq!(check(&mut t, IN_TX).await, None);
        assert_eq!(t.sleep.as_ref().map(|s| s.deadline()), first);
        assert_eq!(check(&mut t, Phase::Running).await, None);
        assert_eq!(armed(&t), Some((Expired::Query, 29)));
        assert_eq!(check(&mut t, IDLE).await, None);
        assert_eq!(armed(&t), Some((Expired::IdleSession, 99)));
        assert_eq!(check(&mut t, Phase::Other).await, None);
        assert_eq!(t.armed, None);
        t.cancel_sent();
        assert_eq!(check(&mut t, Phase::Running).await, None);
        assert_eq!(
            armed(&t),
            Some((Expired::CancelIgnored, CANCEL_GRACE.as_secs() - 1))
        );
        t.reset();
        assert_eq!(check(&mut t, Phase::Running).await, None);
        assert_eq!(armed(&t), Some((Expired::Query, 29)));
    }

    #[tokio::test]
    async fn an_armed_limit_fires_and_an_off_one_never_arms() {
        let mut t = timers(Duration::from_millis(20));
        let fired = poll_fn(|cx| t.poll(cx, Phase::Running));
        let fired = tokio::time::timeout(Duration::from_secs(10), fired).await;
        assert_eq!(fired.ok(), Some(Expired::Query));
        let mut off = Timers::new(Timeouts::default());
        for phase in [Phase::Running, IN_TX, IDLE] {
            assert_eq!(check(&mut off, phase).await, None);
            assert!(off.sleep.is_none() && off.armed.is_none());
        }
    }
}
