//! `shoal-dash`: see what a shoal driver runs — a live web dashboard,
//! Prometheus `/metrics`, and self-contained performance reports.
//!
//! Everything here reads a driver's task events
//! (`shoal_core::driver::events`) through a [`Source`]: the facade's
//! threads and processes modes implement it, and so does the cluster's
//! scheduler (`shoal-net`; task names from its clients, worker figures
//! from its workers). This crate knows no `Client`, no transport.
//!
//! # Protocol
//!
//! ```text
//! GET /            the page (HTML; its script and the vendored uPlot from /static/)
//! GET /first.js    the first frame, as a script the page runs while it loads
//! GET /events      server-sent events: one JSON frame per SAMPLE_EVERY while
//!                  someone listens (the first one with the recent runs)
//! GET /metrics     Prometheus text format, computed per scrape
//! GET /static/...  the page's script, uPlot's script and style
//! ```
//!
//! Served by a client in the threads and processes modes when asked
//! (`ClientOptions::dashboard`, `SHOAL_DASHBOARD`), and by the cluster's
//! scheduler by default on `127.0.0.1:8787` (`shoal scheduler
//! --dashboard ADDR`, `--no-dashboard`).
//!
//! Read-only: only `GET` routes exist. It binds loopback unless told
//! otherwise; on any other address every route but `/static/` requires the
//! token printed at start (`?token=…`, or `Authorization: Bearer …`).
//!
//! # Cost
//!
//! The server runs on a thread of its own with a current-thread tokio
//! runtime. It takes nothing from the task path: it samples the driver
//! every [`SAMPLE_EVERY`] (one lock: the new run records, totals, and a
//! scan of the live tasks' states), and only while a page is open; a
//! scrape of `/metrics` takes one such sample.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod frame;
pub mod json;
pub mod metrics;
pub mod report;
mod server;

use std::time::Duration;

use shoal_core::driver::events::Snapshot;

pub use server::{Dashboard, DashboardError, DashboardOptions};

/// How often an open page gets a frame.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What the dashboard reads: a driver's events and its workers.
pub trait Source: Send + Sync + 'static {
    /// The driver's snapshot: run records from `since` (the newest `max`),
    /// totals, live counts, the load of each worker.
    fn snapshot(&self, since: u64, max: usize) -> Snapshot;
    /// The workers (threads pools or processes) as they stand now.
    fn workers(&self) -> Vec<WorkerInfo>;
    /// The machine's store of results, where there is one.
    fn store(&self) -> Option<StoreInfo>;
    /// The name of task function `func` (its index in the registry), as
    /// keys print it. By default from this process's registry; a source
    /// without the user's tasks (the cluster's scheduler) has the names
    /// from its peers.
    fn task_name(&self, func: u32) -> String {
        task_name(func).to_string()
    }
}

/// One worker as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerInfo {
    /// The scheduler's id of the worker.
    pub id: u32,
    /// Its process (the client's own in the threads mode).
    pub pid: u32,
    /// Threads running tasks.
    pub nthreads: u32,
    /// Resident memory of its process, in bytes.
    pub rss: u64,
    /// CPU time its process used so far (user + system), in seconds.
    pub cpu_seconds: f64,
    /// Its CPU use as the worker measured it over its last moments, in
    /// percent of one core, when it reports that itself (a remote worker,
    /// whose CPU time reaches the dashboard only every so often); else the
    /// dashboard computes it from `cpu_seconds` between two samples.
    pub cpu_percent: Option<f64>,
    /// The machine it runs on (its host name; empty for this machine).
    pub host: String,
}

/// A machine's store of results (in the cluster mode: the results the
/// scheduler holds, with no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreInfo {
    /// Bytes of results in shared memory.
    pub memory: u64,
    /// Bytes of results spilled to disk.
    pub spilled: u64,
    /// The memory limit, in bytes (0: none).
    pub limit: u64,
}

/// The short name of registered task `func` (the last path segment, as
/// keys print it).
pub fn task_name(func: u32) -> &'static str {
    let full = shoal_core::registry::entries().get(func as usize).map(|e| e.name()).unwrap_or("?");
    full.rsplit("::").next().unwrap_or(full)
}
