//! Throughput of the state machine alone, in release builds:
//! `cargo test -p shoal-core --release --lib -- --ignored --nocapture throughput`.

use std::time::Instant;

use super::*;

const TASKS: u64 = 1_000_000;

/// Drives `graphs`, one after the other, to completion on one 8-thread
/// worker the way the threads engine does, releasing each future once its
/// result is reported; prints the tasks per second.
fn drive(graphs: Vec<Vec<NewTask>>) {
    let n: usize = graphs.iter().map(Vec::len).sum();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut peak_live = 0;
    let start = Instant::now();
    s.handle(Event::WorkerJoined { worker: W0, nthreads: 8 }, &mut out);
    for graph in graphs {
        s.submit(graph, &mut out).unwrap();
        peak_live = peak_live.max(s.live_tasks());
        loop {
            for a in out.drain(..) {
                match a {
                    Action::Run { task, worker } => pending.push((task, worker)),
                    Action::ReportDone { task } => pending.push((task, WorkerId(u32::MAX))),
                    _ => {}
                }
            }
            let Some((task, worker)) = pending.pop() else { break };
            if worker == WorkerId(u32::MAX) {
                s.handle(Event::ClientReleased { task }, &mut out);
            } else {
                s.handle(Event::TaskFinished { task, worker, nbytes: 8 }, &mut out);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(s.live_tasks(), 0);
    eprintln!("{n} tasks in {secs:.3} s: {:.0} tasks/s (peak live {peak_live})", n as f64 / secs);
}

#[test]
#[ignore = "a benchmark; run in release"]
fn throughput_flat_map() {
    drive(vec![(0..TASKS).map(|i| node(i, &[], true)).collect()]);
}

#[test]
#[ignore = "a benchmark; run in release"]
fn throughput_flat_map_in_batches() {
    // The same work, 10,000 tasks at a time: the working set fits in cache.
    const BATCH: u64 = 10_000;
    drive((0..TASKS / BATCH).map(|b| (b * BATCH..(b + 1) * BATCH).map(|i| node(i, &[], true)).collect()).collect());
}

#[test]
#[ignore = "a benchmark; run in release"]
fn throughput_tree_reduction() {
    // Pairs reduced level by level; only the root is wanted.
    let mut graph: Vec<NewTask> = (0..TASKS / 2).map(|i| node(i, &[], false)).collect();
    let mut level: Vec<usize> = (0..graph.len()).collect();
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            next.push(graph.len());
            let i = graph.len() as u64;
            graph.push(node(i, pair, false));
        }
        level = next;
    }
    graph.last_mut().unwrap().wanted = true;
    drive(vec![graph]);
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

#[test]
#[ignore = "a measurement; run in release"]
fn memory_per_live_task() {
    // A million queued tasks with their keys, as after `map` over a million
    // items with no worker yet: everything the scheduler keeps per task.
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut out = Vec::new();
    let before = rss();
    // (The graph itself is freed by the time `submit` returns.)
    s.submit((0..TASKS).map(|i| node(i, &[], true)).collect(), &mut out).unwrap();
    let per_task = (rss() - before) as f64 / TASKS as f64;
    eprintln!("{per_task:.0} bytes per live task ({} live)", s.live_tasks());
    // The engine's whole budget is 256; the scheduler must leave most of it.
    assert!(per_task < 160.0, "{per_task:.0} bytes per task");
}
