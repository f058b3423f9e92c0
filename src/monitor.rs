//! Seeing what a client runs, beyond the progress bar: its engine as a
//! `shoal_dash::Source` (the live dashboard and `/metrics`), and
//! performance reports ([`PerformanceReport`]).
//!
//! The dashboard is served when [`ClientOptions::dashboard`] says where, or
//! else when the environment variable [`DASHBOARD_ENV`] does
//! (`SHOAL_DASHBOARD=127.0.0.1:8787`). Worker figures (resident memory, CPU
//! time) are read from `/proc` when a page or a scrape asks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_dash::report::{self, Start};
use shoal_dash::{Dashboard, DashboardOptions, Source, StoreInfo, WorkerInfo};

use crate::client::ClientOptions;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The environment variable that turns the dashboard on when the client's
/// options do not: an address such as `127.0.0.1:8787`.
pub const DASHBOARD_ENV: &str = "SHOAL_DASHBOARD";

/// A client's engine, as the dashboard reads it.
pub(crate) struct EngineSource(pub(crate) Arc<dyn Engine>);

impl Source for EngineSource {
    fn snapshot(&self, since: u64, max: usize) -> shoal_core::driver::events::Snapshot {
        self.0.snapshot(since, max)
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        if let Some(workers) = self.0.monitor_workers() {
            return workers;
        }
        self.0
            .workers()
            .into_iter()
            .map(|(id, pid, nthreads)| {
                let (rss, cpu_seconds) = process_figures(pid).unwrap_or_default();
                WorkerInfo { id: id.0, pid, nthreads, rss, cpu_seconds, cpu_percent: None, host: String::new() }
            })
            .collect()
    }

    fn store(&self) -> Option<StoreInfo> {
        if let Some(store) = self.0.monitor_store() {
            return Some(store);
        }
        self.0.store_stats().map(|s| StoreInfo {
            memory: s.memory_bytes,
            spilled: s.spilled_bytes,
            limit: s.memory_limit,
        })
    }
}

/// Resident bytes and CPU seconds (user + system) of process `pid`, from
/// `/proc` (`None` if it is gone or unreadable).
fn process_figures(pid: u32) -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let rss = pages * rustix::param::page_size() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses):
    // utime and stime are the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    Some((rss, (utime + stime) as f64 / ticks))
}

/// Where the dashboard should be served: the options, else the environment.
fn dashboard_addr(options: &ClientOptions) -> Result<Option<SocketAddr>> {
    if let Some(addr) = options.dashboard {
        return Ok(Some(addr));
    }
    match std::env::var(DASHBOARD_ENV) {
        Ok(text) if !text.trim().is_empty() => text.trim().parse().map(Some).map_err(|e| {
            Error::InvalidOption(format!(
                "{DASHBOARD_ENV}={text:?} is not an address such as 127.0.0.1:8787 ({e}); \
                 unset it to serve no dashboard"
            ))
        }),
        _ => Ok(None),
    }
}

/// Starts the dashboard for `source` if asked; prints its URL on stderr
/// when it needs a token (the user cannot open it otherwise).
pub(crate) fn start_dashboard(options: &ClientOptions, source: &Arc<EngineSource>) -> Result<Option<Dashboard>> {
    let Some(addr) = dashboard_addr(options)? else { return Ok(None) };
    let weak = Arc::downgrade(source) as std::sync::Weak<dyn Source>;
    let dashboard = Dashboard::start(weak, DashboardOptions { addr })?;
    if dashboard.token().is_some() {
        use std::io::Write;
        // The one way to learn the token: shown whatever logging is set up.
        let _ = writeln!(std::io::stderr(), "shoal dashboard: {}", dashboard.url());
    }
    Ok(Some(dashboard))
}

/// A performance report being recorded; see
/// [`Client::performance_report`](crate::Client::performance_report).
/// When dropped, it writes one self-contained HTML file: the task stream,
/// time per task name, transfers and totals of what ran while it lived.
#[must_use = "the report covers what runs while the guard lives; bind it: `let _report = …`"]
pub struct PerformanceReport {
    source: Arc<EngineSource>,
    path: PathBuf,
    start: Start,
}

impl PerformanceReport {
    pub(crate) fn new(source: Arc<EngineSource>, path: PathBuf) -> PerformanceReport {
        let start = Start::new(source.snapshot(u64::MAX, 0));
        PerformanceReport { source, path, start }
    }

    /// Writes the report now (what `drop` does, with the error returned).
    pub fn write(&self) -> Result<()> {
        let end = self.source.snapshot(self.start.next(), report::MAX_RUNS);
        let title = format!("shoal performance report: {}", self.path.display());
        let html = report::render(&title, &self.start, &end, &self.source.workers(), self.source.store());
        std::fs::write(&self.path, html).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("could not write the performance report {}: {e}", self.path.display()),
            ))
        })
    }
}

impl Drop for PerformanceReport {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            tracing::warn!("{e}");
        }
    }
}
