//! `reserve_pool_size`: a few upstreams beyond `pool_size` for clients that already waited
//! `reserve_pool_timeout`, so a burst is absorbed instead of queued, and their release once
//! idle.
//!
//! # Design
//!
//! Only pools with a reserve have a [`Gate`]; the others keep deadpool's own limit and pay
//! nothing. With a gate, deadpool's limit is `pool_size + reserve_pool_size` and the gate
//! decides who may use it: a checkout first waits (fairly, first come first served) for one
//! of `pool_size` main permits; once it has waited `reserve_pool_timeout` it takes whichever
//! comes first, a main permit or one of `reserve_pool_size` reserve permits. The permit is
//! held by the [`super::Checkout`] and given back right after its connection, so the upstream
//! count never exceeds `pool_size` plus the reserve permits in use. The pool upkeep closes
//! idle connections beyond `pool_size` as soon as no reserve permit is in use
//! ([`super::Pool::release_reserve`]): an extra connection lives only as long as the burst.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::CheckoutError;

/// The main and reserve permits of one pool.
#[derive(Debug)]
pub(super) struct Gate {
    main: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    reserve_size: usize,
    reserve_timeout: Duration,
}

impl Gate {
    /// A gate for `size` main permits and `reserve_size` extra ones; `None` without a reserve.
    pub(super) fn new(size: usize, reserve_size: usize, reserve_timeout: Duration) -> Option<Gate> {
        (reserve_size > 0).then(|| Gate {
            main: Arc::new(Semaphore::new(size)),
            reserve: Arc::new(Semaphore::new(reserve_size)),
            reserve_size,
            reserve_timeout,
        })
    }

    /// Waits up to `wait` for a permit: a main one, or after `reserve_pool_timeout` either.
    pub(super) async fn enter(
        &self,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, CheckoutError> {
        let closed = |_| CheckoutError::Closed;
        let main = self.main.clone().acquire_owned();
        tokio::pin!(main);
        let first = self.reserve_timeout.min(wait);
        if let Ok(permit) = tokio::time::timeout(first, &mut main).await {
            return permit.map_err(closed);
        }
        let either = async {
            tokio::select! {
                permit = &mut main => permit,
                permit = self.reserve.clone().acquire_owned() => {
                    tracing::debug!("waited reserve_pool_timeout; using the reserve pool");
                    permit
                }
            }
        };
        match tokio::time::timeout(wait.saturating_sub(first), either).await {
            Ok(permit) => permit.map_err(closed),
            Err(_) => Err(CheckoutError::WaitTimeout(wait)),
        }
    }

    /// A main permit if one is free now (the pool's own checkouts, which never use the
    /// reserve).
    pub(super) fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.main.clone().try_acquire_owned().ok()
    }

    /// Reserve permits held by clients right now.
    pub(super) fn reserve_in_use(&self) -> usize {
        self.reserve_size
            .saturating_sub(self.reserve.available_permits())
    }

    /// Fails every waiting and future checkout (pool shutdown).
    pub(super) fn close(&self) {
        self.main.close();
        self.reserve.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reserve_opens_only_after_its_timeout_and_only_up_to_its_size() {
        let gate = Gate::new(1, 1, Duration::from_millis(50)).unwrap();
        let wait = Duration::from_secs(10);
        let _main = gate.enter(wait).await.unwrap();
        assert!(gate.try_enter().is_none());
        let started = tokio::time::Instant::now();
        let extra = gate.enter(wait).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "reserve used too early"
        );
        assert_eq!(gate.reserve_in_use(), 1);
        let full = gate.enter(Duration::from_millis(100)).await;
        assert!(
            matches!(full, Err(CheckoutError::WaitTimeout(_))),
            "{full:?}"
        );
        drop(extra);
        assert_eq!(gate.reserve_in_use(), 0);
    }
}
