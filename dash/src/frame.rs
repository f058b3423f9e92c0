//! The frames a page receives: one JSON object per sample with the runs
//! that ended since the last one, progress per task name, workers and
//! totals (rates from the difference with the previous sample).
//!
//! ```text
//! { "now": s, "from": seq, "next": seq,
//!   "runs": [[func, worker, thread, start_s, stop_s, nbytes, outcome], …],   outcome 0 done, 1 failed, 2 late
//!   "names": [[func, "name"], …],
//!   "progress": [["name", done, running, queued, erred, in_memory], …],
//!   "workers": [[id, pid, threads, running, rss, cpu_percent, "host"], …],
//!   "store": {"memory", "spilled", "limit"} | null,
//!   "totals": {"submitted", "done", "failed", "live", "events", "nbytes", "transferred",
//!              "tasks_per_s", "events_per_s", "transferred_per_s"} }
//! ```
//!
//! `from` is the sequence number of the first run listed: a page that
//! already has runs up to `next` of an earlier frame skips the overlap.

use std::collections::{BTreeMap, HashMap};

use shoal_core::driver::events::{Outcome, RunRecord, Snapshot, Totals};

use crate::json::Json;
use crate::{Source, StoreInfo, WorkerInfo};

/// Run records one frame carries at most: a page draws a few seconds of
/// bars, so at 100,000 tasks per second the rest would only cost bandwidth
/// and the page's smoothness.
pub const MAX_RUNS_PER_FRAME: usize = 4000;

/// Turns successive samples of a [`Source`] into frames.
#[derive(Default)]
pub struct Sampler {
    since: u64,
    previous: Option<Previous>,
}

struct Previous {
    now_ns: u64,
    totals: Totals,
    cpu: HashMap<(u32, u32), f64>,
}

impl Sampler {
    /// A sampler whose first frame lists the runs from sequence number
    /// `since` on (at most [`MAX_RUNS_PER_FRAME`], the newest).
    pub fn new(since: u64) -> Sampler {
        Sampler { since, previous: None }
    }

    /// The next frame.
    pub fn frame(&mut self, source: &dyn Source) -> String {
        let snap = source.snapshot(self.since, MAX_RUNS_PER_FRAME);
        let workers = source.workers();
        let store = source.store();
        let text = self.render(&snap, &workers, store, &|f| source.task_name(f));
        self.since = snap.next;
        text
    }

    fn render(
        &mut self,
        snap: &Snapshot,
        workers: &[WorkerInfo],
        store: Option<StoreInfo>,
        name: &dyn Fn(u32) -> String,
    ) -> String {
        let dt = self.previous.as_ref().map_or(snap.now_ns, |p| snap.now_ns.saturating_sub(p.now_ns)) as f64 / 1e9;
        let base = self.previous.as_ref().map(|p| p.totals).unwrap_or_default();
        let mut j = Json::new();
        j.open_object();
        j.field_num("now", snap.now_ns as f64 / 1e9);
        j.field_uint("from", snap.next - snap.runs.len() as u64);
        j.field_uint("next", snap.next);
        j.key("runs");
        runs_json(&mut j, &snap.runs);
        j.set_comma().key("names");
        names_json(&mut j, snap, name);
        j.set_comma().key("progress");
        progress_json(&mut j, snap, name);
        j.set_comma();
        let mut cpu = HashMap::new();
        j.key("workers").open_array();
        for w in workers {
            let running = snap.loads.iter().find(|(id, _)| id.0 == w.id).map_or(0, |(_, n)| *n);
            let before = self.previous.as_ref().and_then(|p| p.cpu.get(&(w.id, w.pid)).copied());
            let percent = match (w.cpu_percent, before) {
                (Some(measured), _) => measured,
                (None, Some(b)) if dt > 0.0 => (w.cpu_seconds - b).max(0.0) / dt * 100.0,
                _ => 0.0,
            };
            cpu.insert((w.id, w.pid), w.cpu_seconds);
            j.open_array()
                .uint(u64::from(w.id))
                .uint(u64::from(w.pid))
                .uint(u64::from(w.nthreads))
                .uint(running)
                .uint(w.rss)
                .num(percent)
                .str(&w.host)
                .close_array();
        }
        j.close_array().set_comma().key("store");
        match store {
            Some(s) => {
                j.open_object()
                    .field_uint("memory", s.memory)
                    .field_uint("spilled", s.spilled)
                    .field_uint("limit", s.limit)
                    .close_object();
            }
            None => {
                j.null();
            }
        }
        j.set_comma();
        totals_json(&mut j, snap, base, dt);
        j.close_object();
        self.previous = Some(Previous { now_ns: snap.now_ns, totals: snap.totals, cpu });
        j.finish()
    }
}

/// `[[func, worker, thread, start_s, stop_s, nbytes, outcome], …]`
pub fn runs_json(j: &mut Json, runs: &[RunRecord]) {
    j.open_array();
    for r in runs {
        let outcome = match r.outcome {
            Outcome::Done => 0,
            Outcome::Failed => 1,
            Outcome::Late => 2,
        };
        j.open_array()
            .uint(u64::from(r.key.func))
            .uint(u64::from(r.worker.0))
            .uint(u64::from(r.thread))
            .num(r.start_ns as f64 / 1e9)
            .num(r.stop_ns as f64 / 1e9)
            .uint(r.nbytes)
            .uint(outcome)
            .close_array();
    }
    j.close_array();
}

/// `[[func, "name"], …]` for every task name in the snapshot.
pub fn names_json(j: &mut Json, snap: &Snapshot, name: &dyn Fn(u32) -> String) {
    let mut funcs: Vec<u32> = snap.runs.iter().map(|r| r.key.func).collect();
    funcs.extend(active_funcs(snap));
    funcs.sort_unstable();
    funcs.dedup();
    j.open_array();
    for f in funcs {
        j.open_array().uint(u64::from(f)).str(&name(f)).close_array();
    }
    j.close_array();
}

/// The task names that have live tasks or finished runs.
fn active_funcs(snap: &Snapshot) -> Vec<u32> {
    let n = snap.per_func.len().max(snap.counts.per_func.len());
    (0..n)
        .filter(|&f| {
            let t = snap.per_func.get(f).copied().unwrap_or_default();
            let c = snap.counts.per_func.get(f).copied().unwrap_or_default();
            t.done + t.failed + t.late + c.total() > 0
        })
        .map(|f| f as u32)
        .collect()
}

/// `[["name", done, running, queued, erred, in_memory], …]`, by name (two
/// functions of the same short name are added up).
pub fn progress_json(j: &mut Json, snap: &Snapshot, name: &dyn Fn(u32) -> String) {
    let mut rows: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for f in active_funcs(snap) {
        let t = snap.per_func.get(f as usize).copied().unwrap_or_default();
        let c = snap.counts.per_func.get(f as usize).copied().unwrap_or_default();
        let row = rows.entry(name(f)).or_default();
        row[0] += t.done;
        row[1] += c.processing;
        row[2] += c.waiting + c.queued;
        row[3] += t.failed;
        row[4] += c.memory;
    }
    j.open_array();
    for (name, row) in rows {
        j.open_array().str(&name);
        for v in row {
            j.uint(v);
        }
        j.close_array();
    }
    j.close_array();
}

/// `"totals": {…}` with rates over `dt` seconds since `base`.
fn totals_json(j: &mut Json, snap: &Snapshot, base: Totals, dt: f64) {
    let t = snap.totals;
    let rate = |now: u64, before: u64| if dt > 0.0 { now.saturating_sub(before) as f64 / dt } else { 0.0 };
    j.key("totals").open_object();
    j.field_uint("submitted", t.submitted)
        .field_uint("done", t.done)
        .field_uint("failed", t.failed)
        .field_uint("live", snap.counts.all.total())
        .field_uint("events", t.events)
        .field_uint("nbytes", t.nbytes)
        .field_uint("transferred", t.transferred)
        .field_num("tasks_per_s", rate(t.done + t.failed, base.done + base.failed))
        .field_num("events_per_s", rate(t.events, base.events))
        .field_num("transferred_per_s", rate(t.transferred, base.transferred));
    j.close_object().set_comma();
}
