//! A timeline of one `graphs-replay` sample, for finding where its time
//! goes: `SHOAL_GRAPHS_TRACE=FILE shoal-bench graphs-replay GRAPH MODE`.
//!
//! Each synthetic task appends one line to FILE when it ends (one `write`
//! in append mode, so lines of tasks in several worker processes never
//! mix): its index, four instants in microseconds since the Unix epoch —
//! start, inputs read, sleep over, output made — and its process and
//! thread. The replay empties FILE after the warm-up and, after the timed
//! graph, prints a summary line `{"trace": …}` before its result line:
//!
//! - `read`, `sleep`, `fill`: the three parts of the tasks' own time,
//!   summed (s). `fill` is making the output (`vec![b; n]`: allocation and
//!   page faults), as Dask's task makes its `bytes`;
//! - `at_concurrency`: how long 0, 1, 2, … tasks were running at once (s),
//!   from the first start to the last end;
//! - `gap_ms`: median and mean time between one task's end and the next
//!   start on the same thread: what the runtime costs per task (storing a
//!   result, the round trip to the scheduler, the next run's inputs).
//!
//! Off unless the variable is set: the task then costs four clock reads
//! more (tens of nanoseconds) and one look at the variable per process.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming the trace file.
pub const ENV: &str = "SHOAL_GRAPHS_TRACE";

/// The trace file, if tracing is on (read once per process).
fn file() -> Option<&'static Path> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from)).as_deref()
}

/// Microseconds since the Unix epoch (comparable across processes).
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Notes one task's instants, if tracing is on.
pub fn note(task: u64, start: u64, read: u64, slept: u64, made: u64) {
    let Some(path) = file() else { return };
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let line = format!("{task} {start} {read} {slept} {made} {} {thread}\n", std::process::id());
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
        // A lost line only shortens the summary.
        let _ = f.write_all(line.as_bytes());
    }
}

/// Empties the trace file (after the warm-up), if tracing is on.
pub fn reset() -> Result<(), String> {
    match file() {
        Some(path) => std::fs::write(path, b"").map_err(|e| format!("cannot empty {}: {e}", path.display())),
        None => Ok(()),
    }
}

/// One traced task.
struct Row {
    start: u64,
    read: u64,
    slept: u64,
    made: u64,
    thread: (u64, u64),
}

fn parse(line: &str) -> Option<Row> {
    let f: Vec<u64> = line.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
    match f[..] {
        [_, start, read, slept, made, pid, tid] => Some(Row { start, read, slept, made, thread: (pid, tid) }),
        _ => None,
    }
}

/// The summary of the trace file as a JSON line, if tracing is on.
pub fn summary() -> Result<Option<String>, String> {
    let Some(path) = file() else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rows: Vec<Row> = text.lines().filter_map(parse).collect();
    Ok(Some(summarize(&rows)))
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn summarize(rows: &[Row]) -> String {
    let sum = |f: fn(&Row) -> u64| secs(rows.iter().map(f).sum());
    let read = sum(|r| r.read - r.start);
    let sleep = sum(|r| r.slept - r.read);
    let fill = sum(|r| r.made - r.slept);
    // Time at each concurrency: a sweep over starts (+1) and ends (-1),
    // ends first at equal instants.
    let mut events: Vec<(u64, i64)> = rows.iter().flat_map(|r| [(r.start, 1), (r.made, -1)]).collect();
    events.sort_unstable_by_key(|&(t, d)| (t, d));
    let mut at: Vec<u64> = Vec::new();
    let (mut running, mut last) = (0i64, events.first().map_or(0, |e| e.0));
    for (t, d) in events {
        let level = running.max(0) as usize;
        if at.len() <= level {
            at.resize(level + 1, 0);
        }
        at[level] += t - last;
        running += d;
        last = t;
    }
    let mut by_thread: HashMap<(u64, u64), Vec<&Row>> = HashMap::new();
    for r in rows {
        by_thread.entry(r.thread).or_default().push(r);
    }
    let mut gaps: Vec<f64> = Vec::new();
    for list in by_thread.values_mut() {
        list.sort_unstable_by_key(|r| r.start);
        gaps.extend(list.windows(2).map(|w| w[1].start.saturating_sub(w[0].made) as f64 / 1e3));
    }
    gaps.sort_unstable_by(f64::total_cmp);
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
    let mean = if gaps.is_empty() { 0.0 } else { gaps.iter().sum::<f64>() / gaps.len() as f64 };
    let at: Vec<String> = at.iter().map(|&us| format!("{:.3}", secs(us))).collect();
    format!(
        "{{\"trace\": {{\"tasks\": {}, \"read\": {read:.3}, \"sleep\": {sleep:.3}, \"fill\": {fill:.3}, \
         \"at_concurrency\": [{}], \"gap_ms\": {{\"median\": {median:.1}, \"mean\": {mean:.1}}}}}}}",
        rows.len(),
        at.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: u64, made: u64, tid: u64) -> Row {
        Row { start, read: start + 1, slept: made - 1, made, thread: (1, tid) }
    }

    #[test]
    fn the_summary_counts_concurrency_and_gaps_per_thread() {
        // Thread 1: [0, 10) then [14, 20) ms; thread 2: [5, 15) ms. One
        // task running over [0, 5) + [10, 14) + [15, 20) = 14 ms, two over
        // [5, 10) + [14, 15) = 6 ms; one gap, on thread 1: 4 ms.
        let rows = [row(0, 10_000, 1), row(14_000, 20_000, 1), row(5_000, 15_000, 2)];
        let s = summarize(&rows);
        assert!(s.contains("\"tasks\": 3"), "{s}");
        assert!(s.contains("\"at_concurrency\": [0.000, 0.014, 0.006]"), "{s}");
        assert!(s.contains("\"median\": 4.0, \"mean\": 4.0"), "{s}");
    }

    #[test]
    fn a_malformed_line_is_skipped() {
        assert!(parse("1 2 3").is_none());
        assert!(parse("1 2 3 4 5 6 x").is_none());
        assert!(parse("1 2 3 4 5 6 7").is_some());
    }
}
