//! A store per machine: results belong to the machine's store, not to the
//! worker process that made them. A worker process killed after its results
//! were stored loses nothing: they are not recomputed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal::prelude::*;

/// Records each run in a file of its own (appending, so a second run shows),
/// then returns a result in shared memory (even `i`) or inline (odd `i`).
#[shoal::task]
fn counted(i: u64, dir: String) -> shoal::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(Path::new(&dir).join(i.to_string()))?;
    writeln!(file, "{}", std::process::id())?;
    let len = if i.is_multiple_of(2) { 100_000 } else { 100 };
    Ok(vec![i as u8; len])
}

#[shoal::task]
fn total_len(parts: Vec<Vec<u8>>) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

fn runs(dir: &Path, i: u64) -> usize {
    std::fs::read_to_string(dir.join(i.to_string())).map(|s| s.lines().count()).unwrap_or(0)
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn results_of_a_killed_worker_process_are_not_recomputed() {
    let dir = Scratch(std::env::temp_dir().join(format!("shoal-test-store-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let dir_arg = dir.0.to_string_lossy().into_owned();
    let client = Client::processes(2).unwrap();
    let n = 20u64;
    let parts: Vec<shoal::Future<Vec<u8>>> =
        (0..n).map(|i| client.submit(counted, (i, dir_arg.clone())).unwrap()).collect();
    shoal::wait(&parts).unwrap();
    assert!((0..n).all(|i| runs(&dir.0, i) == 1));
    // Every worker process made some of them; kill one.
    let victim = client.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let started = Instant::now();
    while client.worker_pids().contains(&victim) || client.worker_pids().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "the dead worker was not replaced");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its results feed a new task, and are gathered, without a second run.
    let expected: u64 = (0..n).map(|i| if i.is_multiple_of(2) { 100_000 } else { 100 }).sum();
    assert_eq!(client.submit(total_len, &parts).unwrap().result().unwrap(), expected);
    let values = client.gather(&parts).unwrap();
    assert_eq!(values[4], vec![4u8; 100_000]);
    let counts: Vec<usize> = (0..n).map(|i| runs(&dir.0, i)).collect();
    assert_eq!(counts, vec![1; n as usize], "runs per task");
}
