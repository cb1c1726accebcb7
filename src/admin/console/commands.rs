//! The console's commands: `RELOAD`, `PAUSE [db]`, `RESUME [db]`, `ROTATE [credentials]`,
//! `KILL <client id>` and `SHUTDOWN`. Each asks the part that owns the state and reports what
//! came of it (a NOTICE with the outcome, then CommandComplete), or fails with an
//! ErrorResponse.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, sleep};
use tracing::warn;

use super::Refusal;
use super::wire::{command_complete, notice};
use crate::client::control::Control;
use crate::client::{PoolEntry, Shared};
use crate::credentials::{Credentials, audit};

/// Longest `PAUSE` waits for the upstreams clients hold to come back before it returns (the
/// pause stays in force either way).
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// Longest `ROTATE` waits for the new generation to be published.
const ROTATE_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(20);

/// Longest `RELOAD` waits for the wiring's answer.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// `RELOAD`: asks the wiring, reports its outcome.
pub async fn reload(control: &Control, out: &mut BytesMut) -> Result<(), Refusal> {
    audit::record!(INFO, "admin console: RELOAD");
    let outcome = tokio::time::timeout(RELOAD_WAIT, control.reload())
        .await
        .map_err(|_| {
            Refusal::new(
                "57014",
                format!("RELOAD: no answer within {}s", RELOAD_WAIT.as_secs()),
            )
        })?;
    match outcome {
        Ok(outcome) => {
            notice(out, &outcome);
            command_complete(out, "RELOAD");
            Ok(())
        }
        Err(why) => Err(Refusal::new("F0000", format!("RELOAD refused: {why}"))),
    }
}

/// The pools of `database`, or every pool; an unknown database is an error.
fn pools_of(shared: &Shared, database: Option<&str>) -> Result<Vec<PoolEntry>, Refusal> {
    let pools: Vec<PoolEntry> = shared
        .pools()
        .into_iter()
        .filter(|(db, _, _)| database.is_none_or(|d| d == db))
        .map(|(_, _, e)| e)
        .collect();
    match database {
        Some(db) if pools.is_empty() => {
            Err(Refusal::new("3D000", format!("no such database: \"{db}\"")))
        }
        _ => Ok(pools),
    }
}

/// `PAUSE [db]`: new checkouts wait; returns once the held upstreams are back (or after
/// [`PAUSE_WAIT`], saying how many are still held).
pub async fn pause(
    shared: &Shared,
    database: Option<&str>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let pools = pools_of(shared, database)?;
    audit::record!(
        INFO,
        database = database.unwrap_or("*"),
        "admin console: PAUSE"
    );
    for entry in &pools {
        entry.pool.pause();
    }
    let deadline = Instant::now() + PAUSE_WAIT;
    loop {
        let held: usize = pools.iter().map(|e| e.pool.active_upstreams()).sum();
        if held == 0 {
            break;
        }
        if Instant::now() >= deadline {
            warn!(held, "PAUSE: upstreams still in use after the wait");
            notice(
                out,
                &format!(
                    "paused, but {held} upstream connection(s) were still in use after {}s; \
                     new requests wait until RESUME",
                    PAUSE_WAIT.as_secs()
                ),
            );
            break;
        }
        sleep(POLL).await;
    }
    command_complete(out, "PAUSE");
    Ok(())
}

/// `RESUME [db]`: waiting and future checkouts go on.
pub fn resume(shared: &Shared, database: Option<&str>, out: &mut BytesMut) -> Result<(), Refusal> {
    let pools = pools_of(shared, database)?;
    audit::record!(
        INFO,
        database = database.unwrap_or("*"),
        "admin console: RESUME"
    );
    for entry in &pools {
        entry.pool.resume();
    }
    command_complete(out, "RESUME");
    Ok(())
}

/// `ROTATE [credentials]`: a make-before-break rotation of that entry (or every entry) now;
/// returns once each new generation is published, or with the failure.
pub async fn rotate(
    shared: &Shared,
    name: Option<&str>,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let all = shared.credentials();
    let mut entries: Vec<&Credentials> =
        match name {
            Some(n) => vec![all.get(n).ok_or_else(|| {
                Refusal::new("42704", format!("no such credentials entry: \"{n}\""))
            })?],
            None => all.values().collect(),
        };
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    audit::record!(
        INFO,
        credentials = name.unwrap_or("*"),
        "admin console: ROTATE"
    );
    let before: Vec<(u64, Option<String>)> = entries
        .iter()
        .map(|c| (c.generation(), c.state().last_error))
        .collect();
    for creds in &entries {
        creds.rotate_now();
    }
    let deadline = Instant::now() + ROTATE_WAIT;
    for (creds, (generation, error_before)) in entries.iter().zip(before) {
        let published = wait_published(creds, generation, error_before, deadline).await?;
        notice(
            out,
            &format!(
                "credentials \"{}\": generation {published} published",
                creds.name()
            ),
        );
    }
    command_complete(out, "ROTATE");
    Ok(())
}

/// Waits for a generation newer than `generation`; fails when the rotator reports a new
/// error meanwhile or the deadline passes.
async fn wait_published(
    creds: &Credentials,
    generation: u64,
    error_before: Option<String>,
    deadline: Instant,
) -> Result<u64, Refusal> {
    let mut newer = std::pin::pin!(creds.wait_newer_than(generation));
    loop {
        tokio::select! {
            () = &mut newer => return Ok(creds.generation()),
            () = sleep(POLL) => {}
        }
        let error = creds.state().last_error;
        if error.is_some() && error != error_before {
            let why = error.unwrap_or_default();
            return Err(Refusal::new(
                "58000",
                format!("ROTATE of \"{}\" failed: {why}", creds.name()),
            ));
        }
        if Instant::now() >= deadline {
            return Err(Refusal::new(
                "57014",
                format!(
                    "ROTATE of \"{}\": no new generation within {}s",
                    creds.name(),
                    ROTATE_WAIT.as_secs()
                ),
            ));
        }
    }
}

/// `KILL <client id>`: that client ends with FATAL 57P01.
pub fn kill(shared: &Shared, id: &str, out: &mut BytesMut) -> Result<(), Refusal> {
    let Ok(id) = id.parse::<u64>() else {
        return Err(Refusal::new(
            "22023",
            format!("KILL takes a client id as SHOW CLIENTS lists it, not \"{id}\""),
        ));
    };
    if !shared.clients.kill(id) {
        return Err(Refusal::new("42704", format!("no client with id {id}")));
    }
    audit::record!(INFO, client = id, "admin console: KILL");
    command_complete(out, "KILL");
    Ok(())
}

/// `SHUTDOWN`: asks the process to shut down gracefully.
pub fn shutdown(shared: &Shared, out: &mut BytesMut) -> Result<(), Refusal> {
    audit::record!(INFO, "admin console: SHUTDOWN");
    shared.control.request_shutdown();
    command_complete(out, "SHUTDOWN");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers the reload requests in turn with `outcomes`, as the wiring does.
    fn answer(
        mut requests: crate::client::control::ControlRequests,
        outcomes: Vec<Result<&'static str, &'static str>>,
    ) {
        tokio::spawn(async move {
            for outcome in outcomes {
                if let Some(reply) = requests.reloads.recv().await {
                    let _ = reply.send(outcome.map(str::to_owned).map_err(str::to_owned));
                }
            }
        });
    }

    #[tokio::test]
    async fn reload_reaches_control_and_reports_its_outcome() {
        let (control, requests) = Control::new();
        answer(
            requests,
            vec![Ok("1 pool resized"), Err("pool_size: must be at least 1")],
        );
        let mut out = BytesMut::new();
        reload(&control, &mut out).await.expect("reload refused");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("1 pool resized"), "{text}");
        assert!(text.contains("RELOAD"), "{text}");

        let e = reload(&control, &mut BytesMut::new()).await.unwrap_err();
        assert_eq!(e.code, "F0000");
        assert!(e.message.contains("must be at least 1"), "{}", e.message);
    }
}
