//! A Vault outage seen from the proxy: sealed (503), rate limited (429), hanging, and the port
//! closed, each lasting well past the rotation time. Clients keep logging in on the current
//! lease, the rotator's attempts thin out (growing, jittered delays), and once Vault is back
//! the next lease is published.

use std::sync::Mutex;

use common::vault_standin::Mode;
use pglease::credentials::Credentials;

use super::*;

/// How long after the rotation falls due Vault stays down.
const PAST_ROTATION: Duration = Duration::from_secs(15);

/// When each acquisition attempt during the outage was made. The stand-in records every
/// request it reads; with the port closed nothing reaches it, so each failure is seen instead
/// as the rotator scheduling its next retry.
struct Attempts {
    failures: Arc<Mutex<Vec<Instant>>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Attempts {
    fn watch(creds: &Credentials) -> Attempts {
        let failures: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (creds, seen) = (creds.clone(), failures.clone());
        let watcher = tokio::spawn(async move {
            let mut last = creds.state().next_rotation;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let state = creds.state();
                if state.next_rotation != last && state.last_error.is_some() {
                    seen.lock().unwrap().push(Instant::now());
                }
                last = state.next_rotation;
            }
        });
        Attempts { failures, watcher }
    }

    fn times(&self, mode: &Mode, vault: &VaultStandin, from: Instant, to: Instant) -> Vec<Instant> {
        let all = if *mode == Mode::Closed {
            self.failures.lock().unwrap().clone()
        } else {
            let creds = vault.requests_to("/v1/database/creds/app");
            creds.iter().map(|r| r.at).collect()
        };
        all.into_iter().filter(|t| *t >= from && *t <= to).collect()
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Failing fast (503, 429, refused): each delay at least the one before and growing fast, not
/// the exact doublings an unjittered backoff would give.
fn assert_backs_off(mode: &Mode, times: &[Instant]) {
    let gaps = gaps(times);
    assert!(
        times.len() >= 6,
        "{mode:?}: only {} attempts: {gaps:?}",
        times.len()
    );
    // Backoff from 200 ms: a retry every 200 ms would be 75 attempts.
    assert!(
        times.len() <= 12,
        "{mode:?}: {} attempts: {gaps:?}",
        times.len()
    );
    for pair in gaps.windows(2) {
        assert!(
            pair[1] + Duration::from_millis(50) >= pair[0],
            "{mode:?}: shrank: {gaps:?}"
        );
    }
    assert!(
        gaps[gaps.len() - 1] >= gaps[0] * 4,
        "{mode:?}: no growth: {gaps:?}"
    );
    let ratios: Vec<f64> = gaps
        .windows(2)
        .filter(|p| p[0] >= Duration::from_millis(400))
        .map(|p| p[1].as_secs_f64() / p[0].as_secs_f64())
        .collect();
    assert!(ratios.len() >= 3, "{mode:?}: {gaps:?}");
    assert!(
        ratios.iter().any(|r| !(1.95..=2.05).contains(r)),
        "{mode:?}: delays double exactly, no jitter: {gaps:?}"
    );
}

/// A hanging Vault costs each attempt the client's 10 s timeout; attempts never overlap.
fn assert_waits_out_each_hang(times: &[Instant]) {
    let gaps = gaps(times);
    assert!(
        (2..=3).contains(&times.len()),
        "{} attempts: {gaps:?}",
        times.len()
    );
    assert!(gaps.iter().all(|g| *g >= secs(10)), "{gaps:?}");
}

async fn rides_out(mode: Mode, tag: &str) {
    let db = fresh_db(tag).await;
    let vault = VaultStandin::start().await;
    vault.add_dynamic_role("database", "app", &db.role, secs(60), secs(120));
    let token = vault.issue_token(TokenSpec::forever());
    let lines = format!("role = \"app\"\nauth = {{ method = \"token\", token = \"{token}\" }}");
    // Rotation due 6 s into a 60 s lease; the hard deadline is far beyond the outage.
    let toml = vault_toml(&db, "transaction", &vault, &lines)
        .replace("rotate_at = 0.3", "rotate_at = 0.1");
    let proxy = start_proxy(&toml).await;
    let creds = proxy.shared().credentials()["upstream"].clone();
    let first = published(&creds).await;
    let (generation, role) = (first.generation, first.username.clone());
    let due = first.issued_at
        + first
            .expires_at
            .expect("expiry")
            .duration_since(first.issued_at)
            .unwrap()
            / 10;
    drop(first);
    let attempts = Attempts::watch(&creds);
    let load = Load::start(proxy.local_addr(), &db, 2).await;
    let down_at = Instant::now();
    vault.set_mode(mode.clone()).await;
    let up_at = Instant::now()
        + due.duration_since(SystemTime::now()).unwrap_or_default()
        + if mode == Mode::Hang {
            PAST_ROTATION + secs(10)
        } else {
            PAST_ROTATION
        };
    // Fresh logins through the proxy keep working, on the lease from before the outage.
    while Instant::now() < up_at {
        let fresh = connect_app(&proxy, &db).await;
        assert_eq!(
            first_value(&fresh, "SELECT current_user").await,
            role,
            "{mode:?}"
        );
        assert_eq!(creds.generation(), generation, "{mode:?}: a lease appeared");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let error = creds.state().last_error.unwrap_or_default();
    assert!(error.contains("unreachable"), "{mode:?}: {error}");
    vault.set_mode(Mode::Normal).await;
    let times = attempts.times(&mode, &vault, down_at, Instant::now());
    match mode {
        Mode::Hang => assert_waits_out_each_hang(&times),
        _ => assert_backs_off(&mode, &times),
    }
    // Vault is back: the next lease is published and used, and nobody saw an error.
    eventually(secs(45), "the next lease after the outage", async || {
        creds.generation() > generation
    })
    .await;
    // Idle upstreams of the old lease are replaced at the drain's pace, not all at once.
    eventually(secs(20), "a client on the next lease", async || {
        let fresh = connect_app(&proxy, &db).await;
        first_value(&fresh, "SELECT current_user").await != role
    })
    .await;
    assert!(load.finish().await > 20);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_vault_is_ridden_out() {
    rides_out(Mode::Sealed, "voseal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_vault_is_ridden_out() {
    rides_out(Mode::RateLimited, "vorate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vault_is_ridden_out() {
    rides_out(Mode::Hang, "vohang").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_vault_port_is_ridden_out() {
    rides_out(Mode::Closed, "voclosed").await;
}
