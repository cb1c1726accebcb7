//! The login that proves a fresh lease before it is published. The login is not wasted: it
//! becomes the first replacement of a pool still on the old lease, and is closed only when no
//! pool needs it (the first lease, at start).

use std::sync::Arc;

use tracing::debug;

use super::{CloseReason, Pool};
use crate::credentials::{ProofError, Prover};
use crate::upstream::{self, Upstream, UpstreamError, UpstreamTarget};

/// A prover that logs in to `target` and offers the connection to `pools` in turn. A
/// refusal by PostgreSQL condemns the lease; anything else says only that PostgreSQL could
/// not be reached.
pub fn prover(target: UpstreamTarget, pools: Vec<Pool>) -> Prover {
    let pools: Arc<[Pool]> = pools.into();
    Arc::new(move |lease| {
        let target = target.clone();
        let pools = pools.clone();
        Box::pin(async move {
            let login = upstream::connect(&target, lease).await;
            if let Some(first) = pools.first() {
                first.instruments().connected(&login);
            }
            let up = login.map_err(proof_error)?;
            offer_in_turn(&pools, up);
            Ok(())
        })
    })
}

/// Hands `up` to the first pool that takes it as a replacement; closed when none does.
fn offer_in_turn(pools: &[Pool], mut up: Upstream) {
    for pool in pools {
        match pool.offer_replacement(up) {
            None => return,
            Some(back) => up = back,
        }
    }
    if let Some(first) = pools.first() {
        first.instruments().closed(CloseReason::NotNeeded);
    }
    debug!(
        generation = up.generation(),
        pid = up.cancel.pid,
        reason = CloseReason::NotNeeded.as_str(),
        "upstream closed"
    );
}

fn proof_error(e: UpstreamError) -> ProofError {
    match e {
        UpstreamError::Refused { .. } | UpstreamError::UnsupportedAuth(_) => {
            ProofError::Refused(e.to_string())
        }
        other => ProofError::Unreachable(other.to_string()),
    }
}
