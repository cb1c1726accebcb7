//! Rotator behaviour with a scripted source: make before break, revoke when drained, no
//! blackout when a fresh lease fails its proof, no spinning on short leases, renewals that
//! move the deadline, outages, and revocation of everything at stop. Real time, with leases
//! from a fraction of a second to a minute.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::credentials::source::SourceFuture;
use crate::secret::Secret;

/// Hands out numbered leases and records revocations.
#[derive(Default)]
struct Scripted {
    issued: AtomicU64,
    revoked: Mutex<Vec<String>>,
    /// Leases are renewable; a renewal extends them by `extend` (zero: a capped lease,
    /// every renewal returns the same expiry).
    renewable: bool,
    extend: Duration,
    /// Renewals past this many gain nothing more (zero: no cap).
    renew_cap: u32,
    renewals: AtomicU64,
    /// Lease lifetime; zero means 1.6 s.
    lifetime: Duration,
    /// Acquisitions after the first fail as if the source were down.
    down: AtomicBool,
}

impl Source for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(SourceError::Unreachable("scripted outage".into())) });
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let now = SystemTime::now();
        let lifetime = if self.lifetime.is_zero() {
            Duration::from_millis(1600)
        } else {
            self.lifetime
        };
        Box::pin(async move {
            Ok(Lease {
                id: format!("lease-{n}"),
                username: format!("role_{n}"),
                password: Secret::from("pw"),
                issued_at: now,
                expires_at: Some(now + lifetime),
                renewable: self.renewable,
                generation: 0,
            })
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease, _until: SystemTime) -> SourceFuture<'a, SystemTime> {
        let n = u32::try_from(self.renewals.fetch_add(1, Ordering::SeqCst) + 1).unwrap();
        let n = if self.renew_cap > 0 {
            n.min(self.renew_cap)
        } else {
            n
        };
        let extended = lease.expires_at.unwrap_or_else(SystemTime::now) + self.extend * n;
        Box::pin(async move { Ok(extended) })
    }

    fn revoke<'a>(&'a self, lease: &'a Lease) -> SourceFuture<'a, ()> {
        self.revoked.lock().unwrap().push(lease.id.clone());
        Box::pin(async { Ok(()) })
    }
}

impl Scripted {
    fn was_revoked(&self, id: &str) -> bool {
        self.revoked.lock().unwrap().iter().any(|r| r == id)
    }
}

fn life() -> Lifecycle {
    Lifecycle {
        rotate_at: 0.5,
        safety_margin: Some(Duration::from_millis(300)),
        renew: false,
        max_ttl: None,
    }
}

/// A running rotator and what stops it.
struct Running {
    creds: Credentials,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Stops the rotator and waits for it to finish (revoking what it holds).
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .expect("the rotator did not stop");
    }
}

fn spawn(source: Arc<Scripted>, life: Lifecycle, prover: Option<Prover>) -> Running {
    let (creds, rotator) = Credentials::new("t", source, life);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    rotator.start(prover, &tasks, stop.clone());
    Running { creds, stop, tasks }
}

/// A prover whose login PostgreSQL refuses for the generations `refuse` picks.
fn refusing(refuse: impl Fn(u64) -> bool + Send + Sync + 'static) -> Prover {
    Arc::new(move |lease: Arc<Lease>| {
        let refused = refuse(lease.generation);
        Box::pin(async move {
            if refused {
                Err(ProofError::Refused(
                    "28P01 password authentication failed".to_owned(),
                ))
            } else {
                Ok(())
            }
        })
    })
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A lifecycle for leases of a minute: the hard deadline is ~54 s away, so within a test
/// only the drain path can end a lease.
fn minute_life() -> Lifecycle {
    Lifecycle {
        rotate_at: 0.9,
        safety_margin: None,
        renew: false,
        max_ttl: None,
    }
}

fn minute_leases() -> Arc<Scripted> {
    Arc::new(Scripted {
        lifetime: Duration::from_secs(60),
        ..Scripted::default()
    })
}

#[tokio::test]
async fn rotates_and_revokes_a_lease_once_its_last_connection_is_gone() {
    let source = minute_leases();
    let run = spawn(source.clone(), minute_life(), None);
    let creds = run.creds.clone();
    let first = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.generation, 1);
    // A "connection" still logged in with lease 1.
    let connection = first.clone();
    drop(first);
    creds.rotate_now();
    wait_until("generation 2", || creds.generation() >= 2).await;
    assert_eq!(creds.current().unwrap().username, "role_2");
    // Several housekeeping ticks with lease 1 in use, far from its deadline.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !source.was_revoked("lease-1"),
        "a lease in use was revoked before its deadline"
    );
    let state = creds.state();
    assert!(
        state.retiring.iter().any(|(g, _, n)| *g == 1 && *n == 1),
        "{state:?}"
    );
    drop(connection);
    wait_until("lease-1 revoked", || source.was_revoked("lease-1")).await;
    assert_eq!(creds.state().rotations, 1);
    assert_eq!(
        creds.state().expired_in_use,
        0,
        "revoked by the deadline path"
    );
    assert!(!source.was_revoked("lease-2"));
    run.stop().await;
}

#[tokio::test]
async fn stopping_revokes_the_current_lease_and_every_retiring_one() {
    let source = minute_leases();
    let run = spawn(source.clone(), minute_life(), None);
    let creds = run.creds.clone();
    let first = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    let end = creds.watch_deadline(first.generation);
    creds.rotate_now();
    wait_until("generation 2", || creds.generation() >= 2).await;
    // Lease 1 is still in use when the rotator stops.
    run.stop().await;
    assert!(source.was_revoked("lease-1"), "the retiring lease survived");
    assert!(source.was_revoked("lease-2"), "the current lease survived");
    assert_eq!(end.reason(), Some(EndReason::Shutdown));
    drop(first);
}

#[tokio::test]
async fn a_lease_that_arrives_at_its_rotation_point_does_not_make_the_rotator_spin() {
    // Every lease has 300 ms of life: at its rotation point on arrival, as a file whose
    // credential is about to expire would be.
    let source = Arc::new(Scripted {
        lifetime: Duration::from_millis(300),
        ..Scripted::default()
    });
    let run = spawn(source.clone(), life(), None);
    run.creds
        .wait_current(Duration::from_secs(2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let issued = source.issued.load(Ordering::SeqCst);
    // Backoff from 0.5-1 s doubling: at most 4 acquisitions in 4 s (the spin was ~30).
    assert!(issued <= 5, "{issued} acquisitions in 4 s");
    assert!(
        issued >= 2,
        "short leases must still be replaced ({issued})"
    );
    let state = run.creds.state();
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("less than a rotation needs")),
        "a short lease is reported: {state:?}"
    );
    // The newest lease is still used.
    assert_eq!(run.creds.generation(), issued);
    run.stop().await;
}

/// For 4 s leases: rotation at 0.8 s, a 1.5 s margin, so the hard deadline falls at 2.5 s and
/// renewal is due from 1 s on.
fn renewing() -> Lifecycle {
    Lifecycle {
        renew: true,
        rotate_at: 0.2,
        safety_margin: Some(Duration::from_millis(1500)),
        max_ttl: None,
    }
}

#[tokio::test]
async fn a_renewal_moves_the_deadline_pools_read() {
    let source = Arc::new(Scripted {
        renewable: true,
        extend: Duration::from_secs(30),
        lifetime: Duration::from_secs(4),
        ..Scripted::default()
    });
    let run = spawn(source.clone(), renewing(), None);
    let creds = run.creds.clone();
    let connection = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    let Deadline::At(first) = creds.deadline(1) else {
        panic!("no deadline for a published lease")
    };
    wait_until("generation 2", || creds.generation() >= 2).await;
    wait_until("a renewal", || source.renewals.load(Ordering::SeqCst) >= 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Deadline::At(moved) = creds.deadline(1) else {
        panic!("the renewed lease lost its deadline")
    };
    assert!(
        moved >= first + Duration::from_secs(29),
        "the deadline pools read did not move with the renewal"
    );
    assert!(!creds.near_deadline(1, Duration::from_secs(5)));
    assert!(!source.was_revoked("lease-1"));
    drop(connection);
    run.stop().await;
}

#[tokio::test]
async fn a_lease_that_fails_its_proof_is_never_published() {
    let source = Arc::new(Scripted::default());
    let reject_next = Arc::new(AtomicBool::new(false));
    let flag = reject_next.clone();
    let prover = refusing(move |generation| generation == 2 && flag.swap(false, Ordering::SeqCst));
    let run = spawn(source.clone(), life(), Some(prover));
    let creds = run.creds.clone();
    creds.wait_current(Duration::from_secs(2)).await.unwrap();
    reject_next.store(true, Ordering::SeqCst);
    creds.rotate_now();
    wait_until("the refused lease to be revoked", || {
        source.was_revoked("lease-2")
    })
    .await;
    // Still serving on lease 1, with the failure reported.
    assert_eq!(creds.current().unwrap().id, "lease-1");
    assert!(creds.state().last_error.unwrap().contains("28P01"));
    // The retry obtains a good lease and publishes it as generation 2.
    wait_until("a proven generation 2", || creds.generation() == 2).await;
    assert_eq!(creds.current().unwrap().id, "lease-3");
    run.stop().await;
}

#[tokio::test]
async fn a_renewal_that_gains_nothing_is_not_asked_again() {
    let source = Arc::new(Scripted {
        renewable: true,
        lifetime: Duration::from_secs(4),
        ..Scripted::default()
    });
    // Renewal is due from 1 s to the deadline: several housekeeping ticks.
    let run = spawn(source.clone(), renewing(), None);
    let creds = run.creds.clone();
    let connection = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    wait_until("generation 2", || creds.generation() >= 2).await;
    // Lease 1 stays busy through its deadline; the housekeeping ticks in between must not
    // keep asking the source for a renewal it already capped.
    wait_until("lease-1 revoked at its deadline", || {
        source.was_revoked("lease-1")
    })
    .await;
    assert_eq!(source.renewals.load(Ordering::SeqCst), 1);
    drop(connection);
    run.stop().await;
}

#[tokio::test]
async fn during_an_outage_the_current_lease_is_renewed_and_then_kept_past_its_deadline() {
    let source = Arc::new(Scripted {
        renewable: true,
        extend: Duration::from_secs(1),
        renew_cap: 1,
        lifetime: Duration::from_secs(3),
        ..Scripted::default()
    });
    let life = Lifecycle {
        renew: true,
        rotate_at: 0.5,
        safety_margin: Some(Duration::from_millis(1000)),
        max_ttl: None,
    };
    let run = spawn(source.clone(), life, None);
    let creds = run.creds.clone();
    let lease = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    source.down.store(true, Ordering::SeqCst);
    // Rotation at 1.5 s fails; the renewal window opens at 1 s before the 2 s deadline.
    wait_until("the current lease renewed", || {
        source.renewals.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(creds.generation(), 1);
    assert!(
        creds.state().expires_at > lease.expires_at,
        "{:?}",
        creds.state()
    );
    // The source extends it once only: the lease passes its deadline, is reported, and keeps
    // serving (still published, never revoked).
    wait_until("the current lease past its deadline", || {
        creds.state().current_expired
    })
    .await;
    assert_eq!(creds.current().unwrap().id, "lease-1");
    assert!(!source.was_revoked("lease-1"));
    // When the source recovers, the next lease is published.
    source.down.store(false, Ordering::SeqCst);
    wait_until("recovery", || creds.generation() == 2).await;
    assert!(!creds.state().current_expired);
    drop(lease);
    run.stop().await;
}

#[tokio::test]
async fn requests_do_not_skip_the_backoff_after_a_failure() {
    let source = Arc::new(Scripted::default());
    // Every lease after the first fails its proof, as when the store keeps handing out a
    // password PostgreSQL refuses.
    let prover = refusing(|generation| generation >= 2);
    let life = Lifecycle {
        rotate_at: 0.9,
        safety_margin: Some(Duration::from_millis(100)),
        renew: false,
        max_ttl: None,
    };
    let run = spawn(source.clone(), life, Some(prover));
    let creds = run.creds.clone();
    creds.wait_current(Duration::from_secs(2)).await.unwrap();
    creds.rotate_now();
    wait_until("the first refused lease", || source.was_revoked("lease-2")).await;
    // Clients refused at login ask for a new lease again and again.
    for _ in 0..30 {
        creds.rotate_now();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let issued = source.issued.load(Ordering::SeqCst);
    assert!(
        issued <= 4,
        "{issued} leases asked for in 300 ms: requests skipped the backoff"
    );
    assert_eq!(creds.current().unwrap().id, "lease-1");
    run.stop().await;
}
