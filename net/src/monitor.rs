//! Seeing what a cluster runs: the scheduler's task events, its workers'
//! figures and the names of its tasks, for its dashboard (`shoal-dash`,
//! served by the scheduler) and for its clients (`Client::status`,
//! progress, performance reports).
//!
//! # Where each figure comes from
//!
//! - **Task events** (run records, totals, live counts): the scheduler's
//!   driver, as in every mode. A run's start is its end as the scheduler
//!   saw it less the duration the worker measured (the clocks of two
//!   machines are never compared).
//! - **Task names**: the scheduler runs no user code and has no registry of
//!   the user's tasks; each client sends the short names of its registry
//!   once after the handshake (`FromClientMsg::Names`), and the
//!   fingerprint check guarantees every peer has the same registry. The
//!   first names received are kept while any peer is connected.
//! - **Workers**: id, process id and threads from the handshake; host name,
//!   resident memory and CPU time from the worker itself
//!   (`FromWorkerMsg::Figures`, every [`FIGURES_EVERY`](crate::wire::FIGURES_EVERY)).
//! - **Store**: the bytes of results the scheduler holds (results live in
//!   the scheduler; there is no limit and no spill).
//! - **Bytes moved**: results received from workers, inputs sent to them,
//!   results sent to clients.
//!
//! A client asks for all of this with `FromClientMsg::Monitor` and gets a
//! [`WireSnapshot`]; the conversions both ways are here.

use std::sync::Arc;

use shoal_core::Key;
use shoal_core::driver::events::{FuncTotals, Outcome, RunRecord, Snapshot, StateCounts, TaskCounts, Totals};
use shoal_core::scheduler::WorkerId;
use shoal_dash::{Source, StoreInfo, WorkerInfo};

use crate::server::Shared;
use crate::wire::{ArchivedWireSnapshot, WireFigures, WireRecord, WireSnapshot, WireWorker};

/// The scheduler's driver as its dashboard reads it.
pub(crate) struct SchedulerSource(pub(crate) Arc<Shared>);

impl Source for SchedulerSource {
    fn snapshot(&self, since: u64, max: usize) -> Snapshot {
        SchedulerSource::snapshot_of(&self.0, since, max)
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        worker_list(&self.0).into_iter().map(worker_info).collect()
    }

    fn store(&self) -> Option<StoreInfo> {
        Some(StoreInfo { memory: self.0.driver.lock().backend.held, spilled: 0, limit: 0 })
    }

    fn task_name(&self, func: u32) -> String {
        task_name(&self.0, func)
    }
}

/// The name of task `func` as the scheduler's clients told it, or
/// `task#N` before any client did.
pub(crate) fn task_name(shared: &Shared, func: u32) -> String {
    let st = shared.driver.lock();
    st.backend.names.get(func as usize).cloned().unwrap_or_else(|| format!("task#{func}"))
}

/// The connected workers, sorted by id.
pub(crate) fn worker_list(shared: &Shared) -> Vec<WireWorker> {
    let st = shared.driver.lock();
    let mut list: Vec<WireWorker> = st
        .backend
        .workers
        .iter()
        .map(|(id, link)| WireWorker {
            id: id.0,
            pid: link.pid,
            nthreads: link.nthreads,
            figures: link.figures.clone(),
        })
        .collect();
    list.sort_by_key(|w| w.id);
    list
}

fn worker_info(w: WireWorker) -> WorkerInfo {
    WorkerInfo {
        id: w.id,
        pid: w.pid,
        nthreads: w.nthreads,
        rss: w.figures.rss,
        cpu_seconds: w.figures.cpu_seconds,
        cpu_percent: Some(w.figures.cpu_percent),
        host: w.figures.host,
    }
}

/// The answer to a client's `Monitor` request.
pub(crate) fn snapshot_out(shared: &Shared, since: u64, max: usize) -> WireSnapshot {
    let snap = SchedulerSource::snapshot_of(shared, since, max);
    let held = shared.driver.lock().backend.held;
    WireSnapshot {
        runs: snap
            .runs
            .iter()
            .map(|r| WireRecord {
                key: r.key.into(),
                worker: r.worker.0,
                thread: r.thread,
                start_ns: r.start_ns,
                stop_ns: r.stop_ns,
                nbytes: r.nbytes,
                outcome: match r.outcome {
                    Outcome::Done => 0,
                    Outcome::Failed => 1,
                    Outcome::Late => 2,
                },
            })
            .collect(),
        next: snap.next,
        now_ns: snap.now_ns,
        totals: totals_out(&snap.totals),
        per_func: snap.per_func.iter().map(|f| [f.done, f.failed, f.late, f.busy_ns, f.nbytes]).collect(),
        counts: counts_out(&snap.counts.all),
        counts_per_func: snap.counts.per_func.iter().map(counts_out).collect(),
        loads: snap.loads.iter().map(|(w, n)| (w.0, *n)).collect(),
        workers: worker_list(shared),
        held_bytes: held,
    }
}

impl SchedulerSource {
    fn snapshot_of(shared: &Shared, since: u64, max: usize) -> Snapshot {
        let workers: Vec<WorkerId> = shared.driver.lock().backend.workers.keys().copied().collect();
        shared.driver.snapshot(since, max, &workers)
    }
}

fn totals_out(t: &Totals) -> [u64; 8] {
    [t.submitted, t.started, t.done, t.failed, t.late, t.events, t.nbytes, t.transferred]
}

fn counts_out(c: &StateCounts) -> [u64; 6] {
    [c.released, c.waiting, c.queued, c.processing, c.memory, c.erred]
}

fn counts_in(c: &[rkyv::rend::u64_le; 6]) -> StateCounts {
    let v = c.map(|x| x.to_native());
    StateCounts { released: v[0], waiting: v[1], queued: v[2], processing: v[3], memory: v[4], erred: v[5] }
}

/// What a client learns from a `Monitor` answer.
#[derive(Clone, Debug, Default)]
pub struct Monitored {
    /// The scheduler's snapshot (times on the scheduler's clock).
    pub snapshot: Snapshot,
    /// The cluster's workers.
    pub workers: Vec<WorkerInfo>,
    /// The results the scheduler holds.
    pub store: StoreInfo,
}

/// A received `Monitor` answer.
pub(crate) fn snapshot_in(w: &ArchivedWireSnapshot) -> Monitored {
    let t = w.totals.map(|x| x.to_native());
    let snapshot = Snapshot {
        runs: w
            .runs
            .iter()
            .map(|r| RunRecord {
                key: Key::from(&r.key),
                worker: WorkerId(r.worker.to_native()),
                thread: r.thread.to_native(),
                start_ns: r.start_ns.to_native(),
                stop_ns: r.stop_ns.to_native(),
                nbytes: r.nbytes.to_native(),
                outcome: match r.outcome {
                    0 => Outcome::Done,
                    1 => Outcome::Failed,
                    _ => Outcome::Late,
                },
            })
            .collect(),
        next: w.next.to_native(),
        now_ns: w.now_ns.to_native(),
        totals: Totals {
            submitted: t[0],
            started: t[1],
            done: t[2],
            failed: t[3],
            late: t[4],
            events: t[5],
            nbytes: t[6],
            transferred: t[7],
        },
        per_func: w
            .per_func
            .iter()
            .map(|f| {
                let v = f.map(|x| x.to_native());
                FuncTotals { done: v[0], failed: v[1], late: v[2], busy_ns: v[3], nbytes: v[4] }
            })
            .collect(),
        counts: TaskCounts { all: counts_in(&w.counts), per_func: w.counts_per_func.iter().map(counts_in).collect() },
        loads: w.loads.iter().map(|l| (WorkerId(l.0.to_native()), l.1.to_native())).collect(),
    };
    let workers = w
        .workers
        .iter()
        .map(|x| {
            worker_info(WireWorker {
                id: x.id.to_native(),
                pid: x.pid.to_native(),
                nthreads: x.nthreads.to_native(),
                figures: WireFigures {
                    host: x.figures.host.as_str().to_string(),
                    rss: x.figures.rss.to_native(),
                    cpu_seconds: x.figures.cpu_seconds.to_native(),
                    cpu_percent: x.figures.cpu_percent.to_native(),
                    served_bytes: x.figures.served_bytes.to_native(),
                    fetched_bytes: x.figures.fetched_bytes.to_native(),
                    fetch_micros: x.figures.fetch_micros.to_native(),
                },
            })
        })
        .collect();
    Monitored { snapshot, workers, store: StoreInfo { memory: w.held_bytes.to_native(), spilled: 0, limit: 0 } }
}

/// This process's figures: host name, resident memory and CPU time, from
/// `/proc` (zeros for what cannot be read); its CPU use is measured from
/// `before` (the previous figures, taken `elapsed` ago).
pub(crate) fn own_figures(before: Option<(&WireFigures, std::time::Duration)>) -> WireFigures {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64);
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // After the command name (in parentheses, may hold spaces):
            // utime and stime are the 14th and 15th fields of the line.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) as f64 / rustix::param::clock_ticks_per_second().max(1) as f64)
        })
        .unwrap_or(0.0);
    let cpu_percent = match before {
        Some((b, elapsed)) if !elapsed.is_zero() => {
            (cpu_seconds - b.cpu_seconds).max(0.0) / elapsed.as_secs_f64() * 100.0
        }
        _ => 0.0,
    };
    WireFigures {
        host,
        rss,
        cpu_seconds,
        cpu_percent,
        served_bytes: crate::data::SERVED_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        fetched_bytes: crate::data::FETCHED_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        fetch_micros: crate::data::FETCH_MICROS.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_figures_are_read_from_proc() {
        let start = std::time::Instant::now();
        let f = own_figures(None);
        assert!(f.rss > 0, "a running process has resident memory");
        assert!(!f.host.is_empty());
        assert!(f.cpu_seconds >= 0.0);
        // Half a second of work on this thread (how much CPU it gets depends
        // on the machine's load: only that it got some is checked).
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let elapsed = start.elapsed();
        let g = own_figures(Some((&f, elapsed)));
        assert!(g.cpu_seconds > f.cpu_seconds, "busy half a second");
        let expected = (g.cpu_seconds - f.cpu_seconds) / elapsed.as_secs_f64() * 100.0;
        assert!(g.cpu_percent > 0.0 && (g.cpu_percent - expected).abs() < 1e-9, "{} vs {expected}", g.cpu_percent);
    }
}
