//! Peak memory of a fan-out/fan-in graph stays under a bound, in both
//! modes (issue 12): 16 producers of 8 MiB each, fanned in by fours into 4
//! summaries, then one sink. Run in a good order, no more than a few
//! producers' results are alive at once; a runtime that kept all 16 (or
//! copied each input beside it) would pass 128 MiB.
//!
//! Each mode runs as `shoal-bench graphs-replay` in a child process whose
//! whole process tree is sampled, as the `graphs` benchmark does.

#[allow(dead_code)]
#[path = "../src/memwatch.rs"]
mod memwatch;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;
/// All 16 producers' results at once.
const BOUND: u64 = 16 * 8 * MIB;

fn graph() -> String {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(r#"{"deps":[],"seconds":0.02,"bytes":8388608}"#.to_string());
    }
    for g in 0..4 {
        let deps: Vec<String> = (0..4).map(|i| (g * 4 + i).to_string()).collect();
        tasks.push(format!(r#"{{"deps":[{}],"seconds":0.01,"bytes":1000}}"#, deps.join(",")));
    }
    tasks.push(r#"{"deps":[16,17,18,19],"seconds":0.0,"bytes":10}"#.to_string());
    format!(r#"{{"name":"fan","description":"","tasks":[{}],"sinks":[20]}}"#, tasks.join(","))
}

fn peak(mode: &str) -> (u64, u64) {
    let path = std::env::temp_dir().join(format!("shoal-fan-memory-{mode}-{}.json", std::process::id()));
    std::fs::write(&path, graph()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .arg("graphs-replay")
        .arg(&path)
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch = memwatch::Watch::start(child.id());
    let mut idle = None;
    let mut done = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("\"ready\"") {
            idle = Some(memwatch::tree_bytes(child.id()));
        }
        assert!(!line.contains("\"error\""), "{mode}: {line}");
        done |= line.contains("\"seconds\"");
    }
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
    assert!(done, "{mode}: the graph did not finish");
    (watch.stop(), idle.unwrap())
}

fn check(mode: &str) {
    // The child is in this process's tree, which memwatch's own tests measure.
    let _one = memwatch::ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (peak, idle) = peak(mode);
    eprintln!("{mode}: peak {} MiB, idle {} MiB", peak / MIB, idle / MIB);
    assert!(peak > idle + 8 * MIB, "{mode}: the results were seen ({peak} over {idle})");
    assert!(peak < idle + BOUND, "{mode}: peak {} MiB over an idle {} MiB", peak / MIB, idle / MIB);
}

/// Failed at 139–155 MiB over an idle 11 MiB while the threads mode kept
/// an archive beside each result its `Inputs` parameter read (issue 12,
/// cause 1: 16 MiB per live producer instead of 8); with the archive made in
/// the result's own buffer it peaks at 40–41 MiB over idle (debug build,
/// 6 runs).
#[test]
fn a_fan_out_fan_in_graph_stays_under_the_bound_threads() {
    check("threads");
}

#[test]
fn a_fan_out_fan_in_graph_stays_under_the_bound_processes() {
    check("processes");
}
