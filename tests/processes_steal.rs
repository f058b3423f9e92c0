//! Work stealing between worker processes: an idle worker takes the runs
//! queued, not started, on a busy one, and no run is ever started twice
//! (each run leaves a mark file named after its task and the process that
//! ran it, so a second start would show).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

/// Sleeps, leaves a mark `<tag>.<pid>` in `dir` (refusing to overwrite
/// one: a second run of the same tag in the same process fails), and
/// returns the pid of the worker that ran it.
#[shoal::task]
fn mark(dir: String, ms: u64, tag: u64) -> Result<u32, String> {
    std::thread::sleep(Duration::from_millis(ms));
    let pid = std::process::id();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(Path::new(&dir).join(format!("{tag}.{pid}")))
        .map_err(|e| format!("mark {tag} in {pid}: {e}"))?;
    Ok(pid)
}

fn client(workers: usize) -> Client {
    Client::processes_with(
        ProcessesOptions { workers, threads_per_worker: 1, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

/// A fresh directory for marks, removed on drop.
struct Marks(PathBuf);

impl Marks {
    fn new(name: &str) -> Marks {
        let dir = std::env::temp_dir().join(format!("shoal-steal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Marks(dir)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// How many times each tag ran, over all processes.
    fn runs(&self, tags: impl Iterator<Item = u64>) -> Vec<(u64, usize)> {
        let names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        tags.map(|t| (t, names.iter().filter(|n| n.split('.').next() == Some(&t.to_string())).count())).collect()
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_idle_worker_steals_the_runs_queued_behind_a_long_task() {
    const LONG_MS: u64 = 1_000;
    const SHORT_MS: u64 = 40;
    const SHORTS: u64 = 16;
    let client = client(2);
    let marks = Marks::new("long");
    let started = Instant::now();
    // The long task goes to one worker; the short ones are then spread over
    // both (least loaded first), so about half of them wait behind it.
    let long = client.submit(mark, (marks.path(), LONG_MS, 0)).unwrap();
    let shorts = client.map(mark, (1..=SHORTS).map(|tag| (marks.path(), SHORT_MS, tag))).unwrap();
    let short_pids = client.gather(&shorts).unwrap();
    let long_pid = long.result().unwrap();
    let elapsed = started.elapsed();

    // Every short task ran on the other worker: those queued behind the long
    // one were stolen (the long one holds its worker's only thread longer
    // than all the short ones take together).
    let pids = client.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.contains(&long_pid));
    let other = *pids.iter().find(|&&p| p != long_pid).unwrap();
    assert!(short_pids.iter().all(|&p| p == other), "short tasks ran on {short_pids:?}; the long one on {long_pid}");
    // Without stealing the job takes the long task plus the short ones
    // queued behind it: at least LONG_MS + SHORTS / 2 * SHORT_MS.
    let without = Duration::from_millis(LONG_MS + SHORTS / 2 * SHORT_MS);
    assert!(elapsed < without - Duration::from_millis(50), "took {elapsed:?}, no better than without stealing");
    // And each run started once.
    assert!(marks.runs(0..=SHORTS).iter().all(|&(_, n)| n == 1), "{:?}", marks.runs(0..=SHORTS));
}

#[test]
fn steals_never_start_a_run_twice() {
    // Uneven tasks on three workers: every worker goes idle now and then
    // while others have runs queued, so steals happen all along the tail of
    // each wave; each wave's answers must be complete, each run started once.
    let client = client(3);
    let marks = Marks::new("many");
    let mut tags = 0;
    for wave in 0..4u64 {
        let first = tags;
        let calls: Vec<(String, u64, u64)> = (0..60u64)
            .map(|i| {
                tags += 1;
                (marks.path(), if (i + wave) % 9 == 0 { 25 } else { 1 }, first + i)
            })
            .collect();
        let pids = client.gather(&client.map(mark, calls).unwrap()).unwrap();
        assert_eq!(pids.len(), 60);
        let runs = marks.runs(first..tags);
        assert!(runs.iter().all(|&(_, n)| n == 1), "wave {wave}: {runs:?}");
    }
}

/// Returns its input, reversed, after a pause that depends on its first
/// byte: inputs and results just under the inline limit fill the sockets
/// both ways while runs are stolen.
#[shoal::task]
fn echo_big(data: Vec<u8>) -> Vec<u8> {
    std::thread::sleep(Duration::from_micros(if data[0].is_multiple_of(5) { 3_000 } else { 100 }));
    data.into_iter().rev().collect()
}

#[test]
fn batches_larger_than_a_frame_go_both_ways_while_runs_are_stolen() {
    // 120 runs whose inputs and results are just under the inline limit:
    // the batches are cut into several frames (the byte budget), fill the
    // sockets both ways, and steals happen at the tail of each round.
    // Everything arrives, nothing hangs, every answer is right.
    let client = client(2);
    for round in 0..3u8 {
        let inputs: Vec<Vec<u8>> = (0..120u8).map(|i| vec![i.wrapping_add(round); 60_000]).collect();
        let futures = client.map(echo_big, inputs).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        for f in &futures {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(f.wait_timeout(left).unwrap(), "round {round} hung");
        }
        let outputs = client.gather(&futures).unwrap();
        assert!(outputs.iter().enumerate().all(|(i, o)| o.len() == 60_000 && o[0] == (i as u8).wrapping_add(round)));
    }
}
