//! Rotator behaviour with a scripted source: make before break, revoke when drained, and no
//! blackout when a fresh lease fails its proof. Real time with leases of about a second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::*;
use crate::credentials::source::SourceFuture;
use crate::secret::Secret;

/// Hands out numbered leases and records revocations.
#[derive(Default)]
struct Scripted {
    issued: AtomicU64,
    revoked: Mutex<Vec<String>>,
    /// Leases are renewable, but every renewal returns the same expiry (a capped lease).
    renewable: bool,
    renewals: AtomicU64,
    /// Lease lifetime; zero means 1.6 s.
    lifetime: Duration,
}

impl Source for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn acquire(&self) -> SourceFuture<'_, Lease> {
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
        self.renewals.fetch_add(1, Ordering::SeqCst);
        let same = lease.expires_at.unwrap_or_else(SystemTime::now);
        Box::pin(async move { Ok(same) })
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
        safety_margin: Duration::from_millis(300),
        renew: false,
        max_ttl: None,
    }
}

/// A prover whose login PostgreSQL refuses for the generations `refuse` picks.
fn refusing(refuse: impl Fn(u64) -> bool + Send + Sync + 'static) -> Prover {
    Arc::new(move |lease: Arc<Lease>| {
        let refused = refuse(lease.generation);
        Box::pin(async move {
            if refused {
                Err("28P01 password authentication failed".to_owned())
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

#[tokio::test]
async fn rotates_and_revokes_a_lease_once_its_last_connection_is_gone() {
    let source = Arc::new(Scripted::default());
    let stop = CancellationToken::new();
    let creds = Credentials::spawn("t", source.clone(), life(), None, stop.clone());
    let first = creds.wait_current(Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.generation, 1);
    // A "connection" still logged in with lease 1.
    let connection = first.clone();
    drop(first);
    wait_until("generation 2", || creds.generation() >= 2).await;
    assert_eq!(creds.current().unwrap().username, "role_2");
    tokio::time::sleep(Duration::from_millis(600)).await;
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
    assert!(creds.state().rotations >= 1);
    stop.cancel();
}

#[tokio::test]
async fn a_lease_that_fails_its_proof_is_never_published() {
    let source = Arc::new(Scripted::default());
    let reject_next = Arc::new(AtomicBool::new(false));
    let flag = reject_next.clone();
    let prover = refusing(move |generation| generation == 2 && flag.swap(false, Ordering::SeqCst));
    let stop = CancellationToken::new();
    let creds = Credentials::spawn("t", source.clone(), life(), Some(prover), stop.clone());
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
    stop.cancel();
}

#[tokio::test]
async fn a_renewal_that_gains_nothing_is_not_asked_again() {
    let source = Arc::new(Scripted {
        renewable: true,
        lifetime: Duration::from_secs(4),
        ..Scripted::default()
    });
    let stop = CancellationToken::new();
    // Renewal is due from 1 s to the deadline at 2.5 s: several housekeeping ticks.
    let life = Lifecycle {
        renew: true,
        rotate_at: 0.2,
        safety_margin: Duration::from_millis(1500),
        max_ttl: None,
    };
    let creds = Credentials::spawn("t", source.clone(), life, None, stop.clone());
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
    stop.cancel();
}

#[tokio::test]
async fn requests_do_not_skip_the_backoff_after_a_failure() {
    let source = Arc::new(Scripted::default());
    // Every lease after the first fails its proof, as when the store keeps handing out a
    // password PostgreSQL refuses.
    let prover = refusing(|generation| generation >= 2);
    let stop = CancellationToken::new();
    let life = Lifecycle {
        rotate_at: 0.9,
        safety_margin: Duration::from_millis(100),
        renew: false,
        max_ttl: None,
    };
    let source_handle: Arc<dyn Source> = source.clone();
    let creds = Credentials::spawn("t", source_handle, life, Some(prover), stop.clone());
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
    stop.cancel();
}
