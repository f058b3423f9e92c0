//! Faults the processes mode recovers from without harming bystanders:
//! a task that aborts its worker among thousands of short ones (only it
//! fails), futures cancelled or dropped while their runs are queued on
//! workers (taken back, not run), and a worker stopped with SIGSTOP
//! (declared lost after `worker_ttl`, replaced, its runs done elsewhere).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions, TaskFailure};

/// The item of [`maybe_abort`] that aborts its process.
const CULPRIT: u64 = 4_321;

#[shoal::task]
fn maybe_abort(i: u64) -> u64 {
    if i == CULPRIT {
        std::process::abort();
    }
    i
}

/// Where [`marked_sleep`] leaves a file per run (set in the workers'
/// environment).
const MARK_DIR: &str = "SHOAL_TEST_MARK_DIR";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Notes that run `i` started (a file named `i` holding the time, in ms
/// since the epoch), then sleeps `ms`; returns the start time.
#[shoal::task]
fn marked_sleep(i: u64, ms: u64) -> u64 {
    let start = now_ms();
    let dir = std::env::var(MARK_DIR).expect("the test sets the mark directory");
    std::fs::write(Path::new(&dir).join(i.to_string()), start.to_string()).expect("write the mark");
    std::thread::sleep(Duration::from_millis(ms));
    start
}

#[shoal::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn quiet() -> ClientOptions {
    ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() }
}

// ---- only the task that kills its workers is blamed ----

#[test]
fn an_aborting_item_among_thousands_of_short_ones_fails_alone() {
    let client = Client::processes_with(ProcessesOptions { workers: 2, ..ProcessesOptions::default() }, quiet())
        .expect("processes client");
    let n = 20_000u64;
    let futures = client.map(maybe_abort, 0..n).unwrap();
    let mut failed = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        assert!(f.wait_timeout(Duration::from_secs(120)).unwrap(), "item {i} did not finish");
        match f.result() {
            Ok(v) => assert_eq!(v, i as u64),
            Err(e) => failed.push((i as u64, e)),
        }
    }
    let blamed: Vec<u64> = failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(blamed, vec![CULPRIT], "only the aborting item fails; the others were only queued beside it");
    match failed[0].1.task_failure() {
        Some(TaskFailure::KilledWorker { key, item, attempts }) => {
            assert_eq!(*key, futures[CULPRIT as usize].key());
            assert_eq!(*item, Some(CULPRIT as u32), "the map index of the culprit");
            assert_eq!(*attempts, 3, "max_worker_deaths counted deaths");
        }
        other => panic!("expected KilledWorker, got {other:?}"),
    }
}

// ---- cancelled runs are taken back ----

/// A fresh directory for marks.
fn mark_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-test-{what}-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start times of the runs that left a mark in `dir`.
fn marks(dir: &Path) -> Vec<(u64, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let i = e.file_name().to_str()?.parse().ok()?;
            let t = std::fs::read_to_string(e.path()).ok()?.parse().ok()?;
            Some((i, t))
        })
        .collect()
}

const TASKS: u64 = 400;
const TASK_MS: u64 = 50;
const WORKERS: usize = 2;

/// 400 runs of 50 ms on 2 workers; after 300 ms, `stop` lets go of them
/// (cancel in order, or drop). At most threads × 2 runs may start after
/// that, and a new task must start within 100 ms plus one run.
fn queued_runs_are_taken_back(what: &str, stop: impl FnOnce(Vec<shoal::Future<u64>>)) {
    let dir = mark_dir(what);
    let options = ProcessesOptions {
        workers: WORKERS,
        env: vec![(MARK_DIR.into(), dir.display().to_string())],
        ..ProcessesOptions::default()
    };
    let client = Client::processes_with(options, quiet()).expect("processes client");
    let futures = client.map(marked_sleep, (0..TASKS).map(|i| (i, TASK_MS))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stop_began = now_ms();
    stop(futures);
    let stop_ended = now_ms();
    let probe = client.submit(marked_sleep, (TASKS, 0)).unwrap();
    assert!(probe.wait_timeout(Duration::from_secs(30)).unwrap(), "the next task never ran");
    let probe_start = probe.result().unwrap();
    // Stragglers, if any, would have started by now.
    std::thread::sleep(Duration::from_millis(3 * TASK_MS));
    let after: Vec<u64> =
        marks(&dir).into_iter().filter(|&(i, t)| i < TASKS && t >= stop_began).map(|(i, _)| i).collect();
    let _ = std::fs::remove_dir_all(&dir);
    let threads = WORKERS;
    assert!(after.len() <= threads * 2, "{} cancelled runs still started: {after:?}", after.len());
    let waited = probe_start.saturating_sub(stop_ended);
    assert!(waited <= 100 + TASK_MS, "the next task waited {waited} ms after the cancels");
}

#[test]
fn cancelling_queued_futures_in_order_takes_their_runs_back() {
    queued_runs_are_taken_back("cancel", |futures| {
        for f in &futures {
            f.cancel();
        }
    });
}

#[test]
fn dropping_queued_futures_takes_their_runs_back() {
    queued_runs_are_taken_back("drop", drop);
}

// ---- a stopped worker ----

#[test]
fn a_stopped_worker_is_declared_lost_and_its_runs_done_elsewhere() {
    let ttl = Duration::from_millis(1_500);
    let options = ProcessesOptions { workers: 2, worker_ttl: Some(ttl), ..ProcessesOptions::default() };
    let client = Client::processes_with(options, quiet()).expect("processes client");
    let victim = client.worker_pids()[0];
    // One run per worker (each takes the least loaded one): the job needs
    // the victim's.
    let futures = client.map(sleep_ms, [400u64, 401]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = rustix::process::Pid::from_raw(victim as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let stopped = Instant::now();
    for f in &futures {
        assert!(f.wait_timeout(Duration::from_secs(30)).unwrap(), "the job hangs on the stopped worker");
    }
    assert_eq!(client.gather(&futures).unwrap(), vec![400, 401]);
    assert!(stopped.elapsed() >= ttl - Duration::from_millis(200), "done before the stopped worker was given up");
    let started = Instant::now();
    while client.worker_pids().contains(&victim) || client.worker_pids().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the stopped worker is not replaced");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_task_longer_than_the_ttl_is_not_silence() {
    let ttl = Duration::from_millis(400);
    let options = ProcessesOptions { workers: 1, worker_ttl: Some(ttl), ..ProcessesOptions::default() };
    let client = Client::processes_with(options, quiet()).expect("processes client");
    let pids = client.worker_pids();
    let long = client.submit(sleep_ms, 2_000).unwrap();
    assert_eq!(long.result().unwrap(), 2_000);
    assert_eq!(client.worker_pids(), pids, "the busy worker's heartbeat kept it");
}

#[test]
fn a_zero_worker_ttl_is_refused() {
    let options = ProcessesOptions { workers: 1, worker_ttl: Some(Duration::ZERO), ..ProcessesOptions::default() };
    let err = Client::processes_with(options, quiet()).err().expect("refused");
    assert!(err.to_string().contains("worker_ttl is zero"), "{err}");
}
