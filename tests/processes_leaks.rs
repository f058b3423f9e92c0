//! Nothing outlives a client in the processes mode: no shared-memory
//! segment, no worker process — whether the client is dropped or killed,
//! or one of its workers is killed.
//!
//! A binary of its own, so that no other test's client holds segments while
//! these count what is left in this process; the tests take [`SERIAL`].

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

/// Above the inline limit: every result is a segment.
#[shoal::task]
fn make(i: u64) -> Vec<u8> {
    vec![i as u8; 1 << 20]
}

#[shoal::task]
fn length(data: &Archived<Vec<u8>>) -> u64 {
    data.len() as u64
}

#[shoal::task]
fn owned_length(data: Vec<u8>) -> u64 {
    data.len() as u64
}

/// A segment, slowly enough that a job of them is still running when a
/// worker is killed.
#[shoal::task]
fn slow_make(i: u64) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(20));
    vec![i as u8; 1 << 20]
}

/// Reads two results in place, slowly: while it runs, its worker maps
/// segments that the other worker may have written. Their sum, from one
/// byte of each (every byte of a `slow_make` result is the same; summing
/// 2 MiB byte by byte takes tens of milliseconds in a debug build).
#[shoal::task]
fn pair_sum(a: &Archived<Vec<u8>>, b: &Archived<Vec<u8>>) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    u64::from(a[a.len() - 1]) * a.len() as u64 + u64::from(b[b.len() - 1]) * b.len() as u64
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn processes(n: usize) -> Client {
    Client::processes_with(
        ProcessesOptions { workers: n, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

/// Descriptors and mappings of process `pid` that are shoal segments whose
/// name contains `needle`.
fn segments_of(pid: &str, needle: &str) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().contains("memfd:shoal") && t.to_string_lossy().contains(needle))
                .count()
        })
        .unwrap_or(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|text| text.lines().filter(|l| l.contains("memfd:shoal") && l.contains(needle)).count())
        .unwrap_or(0);
    fds + maps
}

/// The processes on the machine (their pids, as in `/proc`) that hold a
/// descriptor or a mapping of a shoal segment whose name contains `needle`.
fn holders_of(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| segments_of(pid, needle) > 0)
        .collect()
}

/// The part of a segment's name that says which worker wrote it.
fn written_by(worker: u32) -> String {
    format!("shoal-w{worker}-")
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: a dead
/// process holds no memory).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn eventually(condition: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn dropping_the_client_leaves_no_segment_and_no_worker() {
    let _serial = serial();
    let client = processes(2);
    let pids = client.worker_pids();
    assert_eq!(pids.len(), 2);
    let data = client.map(make, 0..4u64).unwrap();
    let lengths: Vec<shoal::Future<u64>> = data.iter().map(|d| client.submit(length, d).unwrap()).collect();
    let literal = client.submit(owned_length, vec![7u8; 300_000]).unwrap();
    assert_eq!(client.gather(&lengths).unwrap(), vec![1 << 20; 4]);
    assert_eq!(literal.result().unwrap(), 300_000);
    // The check below can fail: results and the literal are segments now.
    assert!(segments_of("self", "") >= 5, "results and the big literal live in segments");
    drop((data, lengths, literal));
    drop(client);
    assert_eq!(segments_of("self", ""), 0, "no segment descriptor or mapping left in the client");
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} was reaped");
    }
}

#[test]
fn released_results_are_freed_at_once() {
    let _serial = serial();
    let client = processes(1);
    let data = client.submit(make, 9).unwrap();
    data.wait().unwrap();
    assert_eq!(segments_of("self", ""), 2, "one descriptor and one mapping");
    drop(data);
    assert!(eventually(|| segments_of("self", "") == 0), "a released result's segment is freed");
    assert_eq!(client.submit(make, 3).unwrap().result().unwrap().len(), 1 << 20);
}

/// Role of this binary when run by the test below: a client that is killed.
const CHILD_ENV: &str = "SHOAL_LEAKS_TEST_CHILD_CLIENT";

/// A client that holds results in segments, prints its workers' pids and
/// waits to be killed. A no-op in a normal test run.
#[test]
fn child_client() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let client = processes(2);
    let data = client.map(make, 0..3u64).unwrap();
    client.gather(&data).unwrap();
    let pids: Vec<String> = client.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_and_segments_die_with_a_client_killed_by_sigkill() {
    let _serial = serial();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_client", "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("PIDS ").map(|(_, pids)| pids.to_owned()))
        .expect("the child client reports its workers");
    let workers: Vec<u32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(workers.len(), 2);
    for &w in &workers {
        assert!(!is_dead(w), "worker {w} is alive");
    }
    let client_pid = child.id().to_string();
    assert!(segments_of(&client_pid, "shoal-w") > 0, "the client holds its results in segments");
    child.kill().unwrap(); // SIGKILL: no code of the client runs
    child.wait().unwrap();
    for &w in &workers {
        assert!(
            eventually(|| is_dead(w)),
            "worker {w} died with its client (PR_SET_PDEATHSIG, or the end of its socket)"
        );
    }
    // No process on the machine holds a segment written by those workers.
    for w in workers {
        let holders = holders_of(&written_by(w));
        assert!(holders.is_empty(), "processes {holders:?} still hold segments of worker {w}");
    }
}

#[test]
fn a_worker_killed_by_sigkill_mid_job_leaves_no_segment_behind() {
    let _serial = serial();
    const N: u64 = 24;
    let client = processes(2);
    let mut workers = client.worker_pids();
    let (victim, other) = (workers[0], workers[1]);
    let data = client.map(slow_make, 0..N).unwrap();
    let sums: Vec<shoal::Future<u64>> =
        data.windows(2).map(|ab| client.submit(pair_sum, (&ab[0], &ab[1])).unwrap()).collect();
    let all = client.submit(total, &sums).unwrap();
    // Kill it while its segments are in flight: held by the client, and
    // mapped by the other worker, which is reading them.
    assert!(
        eventually(
            || segments_of("self", &written_by(victim)) > 0 && segments_of(&other.to_string(), &written_by(victim)) > 0
        ),
        "worker {other} reads segments written by worker {victim}"
    );
    assert!(!all.done(), "the job is still running");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // The job finishes, right: what the victim ran or held is recomputed.
    assert!(all.wait_timeout(Duration::from_secs(30)).unwrap(), "the job finished");
    let expected: Vec<u64> = (1..N).map(|i| u64::from((i - 1) as u8 + i as u8) << 20).collect();
    assert_eq!(all.result().unwrap(), expected.iter().sum::<u64>());
    assert_eq!(client.gather(&sums).unwrap(), expected);
    assert!(eventually(|| is_dead(victim)), "worker {victim} is dead");
    workers.extend(client.worker_pids());
    assert!(!client.worker_pids().contains(&victim), "the dead worker is no longer the client's");
    // Released results are freed while the client lives on: the victim's
    // segments are not kept past its death — by the client or by the worker
    // that read them — nor anyone else's past their use.
    drop((data, sums, all));
    assert!(eventually(|| segments_of("self", "") == 0), "no segment left in the client, which is still running");
    assert!(eventually(|| holders_of(&written_by(victim)).is_empty()), "no live worker holds the victim's segments");
    drop(client);
    assert_eq!(segments_of("self", ""), 0, "no segment descriptor or mapping left in the client");
    for &w in &workers {
        assert!(eventually(|| is_dead(w)), "worker {w} is gone");
    }
    // No process on the machine holds a segment that a worker of this
    // client wrote — the killed one first of all.
    for w in workers {
        let holders = holders_of(&written_by(w));
        assert!(holders.is_empty(), "processes {holders:?} still hold segments of worker {w} (victim: {victim})");
    }
}
