//! The process's log output: which events are written (a `PGLEASE_LOG` filter in the
//! `RUST_LOG` syntax, `info` by default) and how (`text` lines or one JSON object per line, from
//! `[proxy] log_format` or `pglease --log-format`). Everything goes to stderr, so stdout stays
//! for what a command prints as its result.
//!
//! In JSON the event's fields sit at the top level of its object beside `timestamp`, `level`,
//! `target` and `message`, so a pipeline can select audit events with `.audit == true`
//! ([`crate::credentials::audit`] sets that field on every audit event, and nothing else does).

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The environment variable holding the event filter.
pub const FILTER_VAR: &str = "PGLEASE_LOG";

/// Installs the process-wide subscriber writing to stderr in `format`. Call once, first thing:
/// events emitted before it are lost.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    // `init` also routes the `log` crate's records (tokio-postgres) through the filter.
    subscriber(format, filter, ansi, std::io::stderr).init();
}

/// The subscriber [`init`] installs, writing to `writer`; separate so tests can read what
/// each format produces.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(capped(filter))
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// tokio-postgres logs every statement at debug, and the issuer's CREATE ROLE carries a
/// password verifier: that target never goes below info, whatever the filter says.
fn capped(filter: EnvFilter) -> EnvFilter {
    match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::Captured;

    fn emit(format: LogFormat, filter: &str) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let sub = subscriber(format, EnvFilter::new(filter), false, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(sub, || {
            tracing::info!(credentials = "app", generation = 3_u64, "lease published");
            tracing::debug!(target: "tokio_postgres::query", "CREATE ROLE x PASSWORD 'SCRAM'");
        });
        captured.lines()
    }

    #[test]
    fn json_puts_each_event_on_one_line_with_its_fields_at_the_top() {
        let lines = emit(LogFormat::Json, "debug");
        assert_eq!(lines.len(), 1, "{lines:?}");
        let event: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
        assert_eq!(event["message"], "lease published");
        assert_eq!(event["credentials"], "app");
        assert_eq!(event["generation"], 3);
        assert_eq!(event["level"], "INFO");
        assert!(event["timestamp"].is_string(), "{event}");
    }

    #[test]
    fn text_is_not_json_and_the_statement_log_stays_capped() {
        let lines = emit(LogFormat::Text, "trace");
        assert_eq!(lines.len(), 1, "the debug statement got through: {lines:?}");
        assert!(serde_json::from_str::<serde_json::Value>(&lines[0]).is_err());
        assert!(lines[0].contains("credentials="), "{lines:?}");
    }
}
