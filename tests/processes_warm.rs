//! Warm memory in the processes mode (`shoal_shm::warm`): a worker writes
//! its large results into memory files its pool made ahead of need, each
//! result in a file of its own, sealed before anyone else sees it; readers
//! see every result's own bytes, unchanged while later ones are written.

use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

/// A result of 4 MiB: a segment, larger than the pool's smallest file.
const LEN: usize = 4 << 20;

#[shoal::task]
fn block(seed: u64) -> Vec<u8> {
    vec![seed as u8; LEN]
}

/// The length and the sum of every byte.
#[shoal::task]
fn sum(data: &Archived<Vec<u8>>) -> (u64, u64) {
    (data.len() as u64, data.iter().map(|&b| u64::from(b)).sum())
}

/// The lines of process `pid`'s maps that map its warm files.
fn warm_maps(pid: &str, worker: u32) -> Vec<String> {
    let name = format!("/memfd:shoal-w{worker}-warm");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&name))
        .map(str::to_owned)
        .collect()
}

fn writable(line: &str) -> bool {
    line.split_whitespace().nth(1).is_some_and(|perms| perms.starts_with("rw"))
}

#[test]
fn a_worker_writes_its_results_into_warm_files_and_readers_see_their_own_bytes() {
    let client = Client::processes_with(
        ProcessesOptions { workers: 1, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .unwrap();
    let worker = client.worker_pids()[0];
    let opts = SubmitOptions::default().pure(false);
    let mut results = Vec::new();
    for seed in 1..=6u64 {
        if seed > 1 {
            // The worker's pool makes the next file after a result: wait
            // for it (a producer never waits; this makes the test exact).
            let started = Instant::now();
            while !warm_maps(&worker.to_string(), worker).iter().any(|l| writable(l)) {
                assert!(started.elapsed() < Duration::from_secs(30), "the worker made no warm file");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let data = client.submit_with(block, seed, &opts).unwrap();
        data.wait().unwrap();
        results.push(data);
    }
    // The client maps every result it holds; five of them lie in warm
    // files of the worker, read-only here.
    let held = warm_maps("self", worker);
    assert!(held.len() >= 5, "results in warm files: {held:?}");
    assert!(held.iter().all(|l| !writable(l)), "{held:?}");
    // The worker holds at most one warm file writable: the next one.
    let in_worker = warm_maps(&worker.to_string(), worker);
    assert!(in_worker.iter().filter(|l| writable(l)).count() <= 1, "{in_worker:?}");
    // Each result has its own bytes, in the client and in a consumer.
    for (seed, data) in (1..=6u64).zip(&results) {
        let (len, total) = client.submit_with(sum, data, &opts).unwrap().result().unwrap();
        assert_eq!((len, total), (LEN as u64, seed * LEN as u64), "result {seed}");
        let bytes = data.result().unwrap();
        assert!(bytes.len() == LEN && bytes.iter().all(|&b| u64::from(b) == seed), "result {seed}");
    }
}

/// The mapping's length in bytes, from a `/proc/PID/maps` line.
fn map_len(line: &str) -> u64 {
    let range = line.split_whitespace().next().unwrap_or("0-0");
    let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
    u64::from_str_radix(end, 16).unwrap_or(0).saturating_sub(u64::from_str_radix(start, 16).unwrap_or(0))
}

/// Warm files are shared memory the store does not count: under a memory
/// limit the workers' together take at most a quarter of it (here 8 MiB
/// for one worker: files of 2 MiB at most, though results are of 4 MiB).
#[test]
fn under_a_memory_limit_warm_files_take_a_quarter_of_it_at_most() {
    if std::env::var_os(shoal_shm::warm::ENV_WARM_MEMORY).is_some() {
        eprintln!("SHOAL_WARM_MEMORY is set: the user's budget stands, nothing to check");
        return;
    }
    let client = Client::processes_with(
        ProcessesOptions { workers: 1, memory_limit: Some(8 << 20), ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .unwrap();
    let worker = client.worker_pids()[0];
    let opts = SubmitOptions::default().pure(false);
    let first = client.submit_with(block, 1, &opts).unwrap();
    first.wait().unwrap();
    // After a result the worker's pool makes the next file: wait for it.
    let started = Instant::now();
    let next = loop {
        if let Some(line) = warm_maps(&worker.to_string(), worker).into_iter().find(|l| writable(l)) {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the worker made no warm file");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(map_len(&next) <= 2 << 20, "a warm file over a quarter of the 8 MiB limit: {next}");
    let bytes = first.result().unwrap();
    assert!(bytes.len() == LEN && bytes.iter().all(|&b| b == 1));
}
