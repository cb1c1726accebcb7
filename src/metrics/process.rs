//! Process metrics, read from `/proc` at scrape time: build, start time, resident memory and
//! open file descriptors. Where `/proc` is missing (not Linux) the memory and descriptor
//! families are left out rather than reported as zero.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::{Family, desc};

const BUILD: (&str, &str) = (
    "pglease_build_info",
    "Always 1; the version label says which pglease is running.",
);
const START: (&str, &str) = (
    "pglease_process_start_time_seconds",
    "When the process started, in seconds since the Unix epoch.",
);
const RSS: (&str, &str) = (
    "pglease_process_resident_memory_bytes",
    "Resident memory of the process.",
);
const FDS: (&str, &str) = (
    "pglease_process_open_fds",
    "File descriptors the process has open.",
);

/// The process collector.
pub(super) struct ProcessCollector {
    descs: Vec<Desc>,
    /// Read once: a process's start time does not change.
    start: f64,
}

impl ProcessCollector {
    pub(super) fn new() -> Result<ProcessCollector, prometheus::Error> {
        Ok(ProcessCollector {
            descs: vec![
                desc(BUILD.0, BUILD.1, &["version"])?,
                desc(START.0, START.1, &[])?,
                desc(RSS.0, RSS.1, &[])?,
                desc(FDS.0, FDS.1, &[])?,
            ],
            start: start_time().unwrap_or_else(|| seconds(SystemTime::now())),
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut build = Family::gauge(BUILD.0, BUILD.1);
        build.add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        let mut start = Family::gauge(START.0, START.1);
        start.add(&[], self.start);
        let mut out = vec![build.done(), start.done()];
        if let Some(rss) = resident_bytes() {
            let mut f = Family::gauge(RSS.0, RSS.1);
            f.add(&[], rss as f64);
            out.push(f.done());
        }
        if let Some(fds) = open_fds() {
            let mut f = Family::gauge(FDS.0, FDS.1);
            f.add(&[], fds as f64);
            out.push(f.done());
        }
        out
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Resident pages (the second field of `/proc/self/statm`) times the page size.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

/// Entries of `/proc/self/fd` (the directory handle reading it is one of them, and is not
/// counted).
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// Boot time (`btime` in `/proc/stat`) plus the process's start in clock ticks after boot
/// (field 22 of `/proc/self/stat`).
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after it are
    // counted from the last ')'.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(btime as f64 + ticks as f64 / hz as f64)
}
