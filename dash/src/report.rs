//! Performance reports: one self-contained HTML file (the page's script,
//! uPlot and the data inlined; nothing fetched when it opens) with the task
//! stream, time per task name, transfers and totals of a stretch of a run.
//!
//! A report covers what happened between two snapshots of a driver: the
//! totals are exact (cumulative counters), the task stream holds the runs
//! still in the driver's ring (its last `RING_CAPACITY`; the report says
//! how many it draws of how many ran).

use std::collections::BTreeMap;

use shoal_core::driver::events::{RING_CAPACITY, Snapshot};

use crate::frame::runs_json;
use crate::json::Json;
use crate::{StoreInfo, WorkerInfo, task_name};

const PAGE: &str = include_str!("../page/index.html");
const PAGE_JS: &str = include_str!("../page/dash.js");
const UPLOT_JS: &str = include_str!("../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../vendor/uplot/uPlot.min.css");

/// Where a report starts: a snapshot taken then (only its totals and
/// sequence number are used).
#[derive(Clone, Debug)]
pub struct Start {
    snap: Snapshot,
}

impl Start {
    /// A report starting at `snap` (take it with `since = u64::MAX`: its
    /// runs are not needed).
    pub fn new(snap: Snapshot) -> Start {
        Start { snap }
    }

    /// The sequence number of the first run of the report.
    pub fn next(&self) -> u64 {
        self.snap.next
    }
}

/// How many runs a report asks the driver for: all it still has.
pub const MAX_RUNS: usize = RING_CAPACITY;

/// The HTML of a report from `start` to `end` (a snapshot with the runs
/// from `start.next()` on, taken with [`MAX_RUNS`]).
pub fn render(title: &str, start: &Start, end: &Snapshot, workers: &[WorkerInfo], store: Option<StoreInfo>) -> String {
    let s = &start.snap;
    let mut j = Json::new();
    j.open_object();
    j.field_str("title", title);
    j.field_num("start", s.now_ns as f64 / 1e9);
    j.field_num("stop", end.now_ns as f64 / 1e9);
    j.field_uint("total_runs", end.next.saturating_sub(s.next));
    j.key("runs");
    runs_json(&mut j, &end.runs);
    j.set_comma().key("names").open_array();
    let mut funcs: Vec<u32> = end.runs.iter().map(|r| r.key.func).collect();
    funcs.extend((0..end.per_func.len() as u32).filter(|&f| delta(s, end, f).iter().any(|&v| v > 0)));
    funcs.sort_unstable();
    funcs.dedup();
    for &f in &funcs {
        j.open_array().uint(u64::from(f)).str(task_name(f)).close_array();
    }
    j.close_array().set_comma();
    // [name, done, failed, busy_s, nbytes], by name
    let mut per_name: BTreeMap<&'static str, [u64; 4]> = BTreeMap::new();
    for &f in &funcs {
        let d = delta(s, end, f);
        let row = per_name.entry(task_name(f)).or_default();
        for (acc, v) in row.iter_mut().zip(d) {
            *acc += v;
        }
    }
    j.key("per_name").open_array();
    for (name, [done, failed, busy_ns, nbytes]) in per_name {
        j.open_array().str(name).uint(done).uint(failed).num(busy_ns as f64 / 1e9).uint(nbytes).close_array();
    }
    j.close_array().set_comma();
    j.key("workers").open_array();
    for w in workers {
        j.open_array()
            .uint(u64::from(w.id))
            .uint(u64::from(w.pid))
            .uint(u64::from(w.nthreads))
            .uint(0)
            .uint(w.rss)
            .num(0.0)
            .str(&w.host)
            .close_array();
    }
    j.close_array().set_comma().key("store");
    match store {
        Some(st) => {
            j.open_object()
                .field_uint("memory", st.memory)
                .field_uint("spilled", st.spilled)
                .field_uint("limit", st.limit)
                .close_object();
        }
        None => {
            j.null();
        }
    }
    j.set_comma().key("totals").open_object();
    let (a, b) = (s.totals, end.totals);
    j.field_uint("submitted", b.submitted - a.submitted)
        .field_uint("done", b.done - a.done)
        .field_uint("failed", b.failed - a.failed)
        .field_uint("nbytes", b.nbytes - a.nbytes)
        .field_uint("transferred", b.transferred - a.transferred)
        .field_uint("events", b.events - a.events);
    j.close_object().set_comma();
    j.close_object();
    let data = j.finish();
    inline(&data)
}

/// Done, failed, busy ns and result bytes of task `func` between the two.
fn delta(a: &Snapshot, b: &Snapshot, func: u32) -> [u64; 4] {
    let get = |s: &Snapshot| s.per_func.get(func as usize).copied().unwrap_or_default();
    let (x, y) = (get(a), get(b));
    [y.done - x.done, y.failed - x.failed, y.busy_ns - x.busy_ns, y.nbytes - x.nbytes]
}

/// The page with its assets inlined and `data` drawn as a report.
fn inline(data: &str) -> String {
    // `</` cannot end a script early: the JSON escapes `<`, and the
    // vendored script and the page's contain no `</script`.
    PAGE.replace(r#"<link rel="stylesheet" href="static/uPlot.min.css">"#, &format!("<style>\n{UPLOT_CSS}\n</style>"))
        .replace(r#"<script src="static/uPlot.iife.min.js"></script>"#, &format!("<script>\n{UPLOT_JS}\n</script>"))
        .replace(r#"<script src="static/dash.js"></script>"#, &format!("<script>\n{PAGE_JS}\n</script>"))
        .replace("<!--FIRST-FRAME-->\n", "")
        .replace("<script>shoal.live();</script>", &format!("<script>shoal.report({data});</script>"))
        .replace("<title>shoal dashboard</title>", "<title>shoal performance report</title>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_fetches_nothing() {
        let html = inline("{}");
        assert!(!html.contains("static/"), "every asset is inlined");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing from the network");
        assert!(html.contains("shoal.report({});"));
        assert!(!UPLOT_JS.contains("</script") && !PAGE_JS.contains("</script"));
    }
}
