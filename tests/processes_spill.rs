//! The memory limit of the processes mode: results past it spill to disk
//! and come back on demand, through io_uring or positioned I/O, and nothing
//! is lost — not to a spill, not to a full disk, not to a killed client.
//!
//! A binary of its own (its clients hold hundreds of MiB); the tests take
//! [`SERIAL`], and each has a spill directory of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions, SpillBackend, SpillIo, StoreStats};

const MIB: usize = 1 << 20;
/// The size of one result of the main job. (Modest: this test binary, its
/// workers, and rkyv's code inlined into it run unoptimized.)
const PART: usize = 2 * MIB;

/// A [`PART`]-byte result whose every byte depends on `i` (a checksum tells any
/// two apart, and tells a zeroed or shifted page from the real one).
#[shoal::task]
fn make(i: u64) -> Vec<u8> {
    bytes(i, PART)
}

#[shoal::task]
fn make_sized(i: u64, len: u64) -> Vec<u8> {
    bytes(i, len as usize)
}

/// Reads its input in place (a spilled input is read back first).
#[shoal::task]
fn checksum(data: &Archived<Vec<u8>>) -> u64 {
    fnv(data.as_slice())
}

/// Takes every part at once (assembled by the client into one input).
#[shoal::task]
fn checksum_all(parts: &Archived<Vec<Vec<u8>>>) -> Vec<u64> {
    parts.iter().map(|p| fnv(p.as_slice())).collect()
}

/// Holds `mib` MiB of its own (written) memory for `ms` milliseconds: a
/// running task's transient data, which is no result and no segment.
#[shoal::task]
fn hold_memory(mib: u64, ms: u64) -> u64 {
    let data = vec![1u8; mib as usize * MIB];
    std::thread::sleep(Duration::from_millis(ms));
    data.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

/// Keeps `mib` MiB of written memory for the rest of its worker's life,
/// works for `ms`, and says when it ran (nanoseconds since the epoch: the
/// workers share the machine's clock). `_i` tells the calls apart.
#[shoal::task]
fn hoard(mib: u64, ms: u64, _i: u64) -> (u64, u64) {
    static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let start = now_ns();
    HOARD.lock().unwrap_or_else(PoisonError::into_inner).push(vec![1u8; mib as usize * MIB]);
    std::thread::sleep(Duration::from_millis(ms));
    (start, now_ns())
}

fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn bytes(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes()[..8.min(len - out.len())]);
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    // 8 bytes at a time: fast enough in a debug build.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ data.len() as u64
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scratch directory for one test's spill directories.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("shoal-test-spill-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(limit: usize, spill_dir: &Path, io: SpillIo) -> Client {
    Client::processes_with(
        ProcessesOptions {
            workers: 2,
            memory_limit: Some(limit as u64),
            spill_dir: Some(spill_dir.to_path_buf()),
            spill_io: io,
            ..ProcessesOptions::default()
        },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

fn stats(client: &Client) -> StoreStats {
    client.store_stats().expect("the processes mode has a store")
}

/// `(count, bytes)` of the spill files in `dir`.
fn spill_files(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spill"))
        .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.metadata().map(|m| m.len()).unwrap_or(0)))
}

/// Waits until `done` holds for the store's figures and the files on disk
/// match them (spills and read-backs run outside the engine lock, a moment
/// after the event that caused them).
fn settle(client: &Client, done: impl Fn(&StoreStats) -> bool) -> StoreStats {
    let started = Instant::now();
    loop {
        let s = stats(client);
        let on_disk = spill_files(&s.spill_dir);
        if done(&s) && on_disk == (s.spilled_objects, s.spilled_bytes) {
            return s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the store never settled: {s:?}, files {on_disk:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Settled within the limit: no spill is in flight (a spilling object is
/// still counted in memory).
fn within_limit(s: &StoreStats) -> bool {
    s.memory_bytes <= s.memory_limit
}

/// The job of the issue: live data twice the limit (16 results of 2 MiB
/// held by futures, limit 16 MiB), consumed one by one, all at once, and
/// gathered; `io` chooses the spill I/O.
fn twice_the_limit(io: SpillIo, expected: SpillBackend) {
    let _serial = serial();
    let scratch = Scratch::new(&format!("{io:?}"));
    let limit = 8 * PART;
    let client = client(limit, &scratch.0, io);
    let s = stats(&client);
    assert_eq!(s.spill_io, expected, "the spill I/O in use");
    assert_eq!(s.memory_limit, limit as u64);
    assert!(s.spill_dir.starts_with(&scratch.0) && s.spill_dir.is_dir(), "{:?}", s.spill_dir);
    let spill_dir = s.spill_dir.clone();

    let n = 16u64;
    let expected_sums: Vec<u64> = (0..n).map(|i| fnv(&bytes(i, PART))).collect();
    let data = client.map(make, 0..n).unwrap();
    shoal::wait(&data).unwrap();

    // Half the data is on disk: files really written, the figures match them.
    let s = settle(&client, within_limit);
    assert!(s.memory_bytes <= limit as u64, "{s:?}");
    assert!(s.spilled_objects >= 8, "at least half the results spilled: {s:?}");
    let (files, bytes_on_disk) = spill_files(&spill_dir);
    assert_eq!((files, bytes_on_disk), (s.spilled_objects, s.spilled_bytes));
    assert!(bytes_on_disk >= (n * PART as u64) - limit as u64, "{bytes_on_disk} bytes on disk");
    assert!(s.spills >= 8 && s.spill_failures == 0, "{s:?}");

    // Each result read in place by a task: spilled ones come back first,
    // byte for byte (the checksums are of the producer's bytes).
    let sums: Vec<shoal::Future<u64>> = data.iter().map(|d| client.submit(checksum, d).unwrap()).collect();
    assert_eq!(client.gather(&sums).unwrap(), expected_sums, "read back byte-identical");
    let s = settle(&client, within_limit);
    assert!(s.unspills >= 8, "spilled inputs were read back: {s:?}");

    // All of them at once, in one task (64 MiB of input, twice the limit).
    let all = client.submit(checksum_all, &data).unwrap();
    assert_eq!(all.result().unwrap(), expected_sums);

    // And gathered by the client.
    let values = client.gather(&data).unwrap();
    assert_eq!(values.len(), n as usize);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(fnv(v), expected_sums[i], "result {i} gathered intact");
    }
    assert_eq!(values[3], bytes(3, PART));
    drop(values);

    // Released results take their files with them; the client its directory.
    let s = settle(&client, within_limit);
    assert!(s.peak_spilled_bytes >= bytes_on_disk, "{s:?}");
    drop((data, sums, all));
    let s = settle(&client, |s| s.memory_objects == 0);
    assert_eq!((s.memory_objects, s.spilled_objects, s.memory_bytes, s.spilled_bytes), (0, 0, 0, 0), "{s:?}");
    assert_eq!(spill_files(&spill_dir), (0, 0), "no spill file outlives its result");
    drop(client);
    assert!(!spill_dir.exists(), "the spill directory is removed at shutdown");
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0, "nothing else left in the spill parent");
}

#[test]
fn twice_the_limit_with_io_uring() {
    // This kernel allows io_uring: `Auto` must have chosen it.
    twice_the_limit(SpillIo::Auto, SpillBackend::IoUring);
}

#[test]
fn twice_the_limit_with_positioned_io() {
    twice_the_limit(SpillIo::Positioned, SpillBackend::Positioned);
}

/// A result larger than the limit is kept (everything else spills), and
/// goes to disk itself once something newer needs the room.
/// The limit covers a running task's own memory, not only the results:
/// while a task holds more than the limit, the results it does not need
/// leave memory, and they come back intact.
#[test]
fn a_running_task_s_own_memory_counts_against_the_limit() {
    let _serial = serial();
    let scratch = Scratch::new("transient");
    let limit = 16 * MIB;
    let client = client(limit, &scratch.0, SpillIo::Auto);
    let parts = client.map(make, 0..4u64).unwrap();
    shoal::wait(&parts).unwrap();
    let s = settle(&client, |s| s.memory_objects == 4);
    assert_eq!(s.spills, 0, "8 MiB of results fit in 16: {s:?}");
    // 24 MiB of the task's own, for long enough to be seen: no room is left for results.
    let hog = client.submit(hold_memory, (24u64, 3_000u64)).unwrap();
    let s = settle(&client, |s| s.workers_memory_bytes >= 20 * MIB as u64 && s.spilled_objects == 4);
    assert_eq!(s.memory_objects, 0, "{s:?}");
    assert_eq!(hog.result().unwrap(), 24 * 256);
    // It ended: its memory is seen to go, and the results read back intact.
    settle(&client, |s| s.workers_memory_bytes < 8 * MIB as u64);
    for (i, v) in client.gather(&parts).unwrap().iter().enumerate() {
        assert_eq!(v, &bytes(i as u64, PART));
    }
}

/// Over the limit with nothing left to spill (the workers' own memory,
/// which only grows here), runs start one at a time: never two at once,
/// yet every one of them runs, and the runs queued on the workers before
/// the pause are taken back. Without the pause, two workers run two.
#[test]
fn over_the_limit_with_nothing_to_spill_runs_start_one_at_a_time() {
    let _serial = serial();
    let scratch = Scratch::new("pause");
    let client = client(16 * MIB, &scratch.0, SpillIo::Auto);
    // Each keeps 12 MiB: two of them are over the limit already. The first
    // runs are sent at once (the workers queue a few each), before the
    // memory is seen; the last ones are started after it was.
    let n = 32;
    let runs = client.map(hoard, (0..n as u64).map(|i| (12u64, 60u64, i))).unwrap();
    let mut spans: Vec<(u64, u64)> = client.gather(&runs).unwrap();
    assert_eq!(spans.len(), n, "every run ran");
    spans.sort();
    let last = &spans[spans.len() - 8..];
    for pair in last.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two runs at once over the limit: {:?} and {:?} (all: {spans:?})",
            pair[0],
            pair[1]
        );
    }
    // The runs queued on the workers before the memory was seen were taken
    // back: only the first few ran side by side. (The watcher counts a
    // worker's memory above the least it saw it hold, so a hoard made before
    // its first look goes unseen, and a loaded machine delays it: the pause
    // may come a few pairs late. Without the recall, the 18 runs sent at
    // once ran two by two: about 17 neighbours overlapped.)
    let overlaps = spans.windows(2).filter(|pair| pair[1].0 < pair[0].1).count();
    assert!(overlaps <= 8, "{overlaps} runs started beside another over the limit: {spans:?}");
    let s = stats(&client);
    assert!(s.workers_memory_bytes > s.memory_limit, "the workers' memory was over the limit: {s:?}");
}

#[test]
fn a_result_larger_than_the_limit_still_works() {
    let _serial = serial();
    let scratch = Scratch::new("larger");
    let limit = MIB;
    let client = client(limit, &scratch.0, SpillIo::Auto);
    let small = client.map(make_sized, (0..3u64).map(|i| (i, 300_000u64))).unwrap();
    shoal::wait(&small).unwrap();
    let big = client.submit(make_sized, (7u64, 5 * MIB as u64)).unwrap();
    big.wait().unwrap();
    // Everything else spilled; the big one stays, over the limit.
    let s = settle(&client, |s| s.memory_objects == 1);
    assert!(s.memory_bytes > limit as u64, "the big result stays in memory over the limit: {s:?}");
    assert_eq!(s.spilled_objects, 3, "{s:?}");
    assert_eq!(fnv(&big.result().unwrap()), fnv(&bytes(7, 5 * MIB)));
    // Something newer needs room: now the big one goes.
    let newer = client.submit(make_sized, (8u64, 200_000u64)).unwrap();
    newer.wait().unwrap();
    let s = settle(&client, within_limit);
    assert!(s.memory_bytes <= limit as u64, "{s:?}");
    assert!(s.spilled_bytes >= 5 * MIB as u64, "the big result is on disk: {s:?}");
    assert_eq!(fnv(&big.result().unwrap()), fnv(&bytes(7, 5 * MIB)), "and comes back intact");
    let smalls = client.gather(&small).unwrap();
    for (i, v) in smalls.iter().enumerate() {
        assert_eq!(v, &bytes(i as u64, 300_000));
    }
}

/// A full disk is not a loss: spills fail (ENOSPC), the results stay in
/// memory over the limit, and the job's answers are right. A real full
/// disk: a 1 MiB tmpfs (needs root; skipped with the reason otherwise).
#[test]
fn a_full_disk_keeps_results_in_memory() {
    let _serial = serial();
    let scratch = Scratch::new("full");
    let Some(tiny) = Tmpfs::mount(&scratch.0.join("tiny"), "1m") else { return };
    for io in [SpillIo::Auto, SpillIo::Positioned] {
        let limit = 2 * PART;
        let client = client(limit, &tiny.0, io);
        let data = client.map(make, 0..4u64).unwrap();
        shoal::wait(&data).unwrap();
        let s = settle(&client, |s| s.spill_failures >= 1);
        assert!(s.memory_bytes > limit as u64, "{io:?}: the results stayed in memory: {s:?}");
        assert_eq!(s.memory_objects, 4, "{io:?}: none lost: {s:?}");
        let sums: Vec<shoal::Future<u64>> = data.iter().map(|d| client.submit(checksum, d).unwrap()).collect();
        let expected: Vec<u64> = (0..4).map(|i| fnv(&bytes(i, PART))).collect();
        assert_eq!(client.gather(&sums).unwrap(), expected, "{io:?}");
        // The failed spills left no partial file.
        let s = settle(&client, |s| s.spilled_objects == 0);
        assert_eq!(spill_files(&s.spill_dir), (0, 0), "{io:?}: no partial file left");
        drop((data, sums));
        drop(client);
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(out) => {
                println!("SKIPPED: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Role of this binary when run by the test below: a client that spills,
/// then is killed.
const CHILD_ENV: &str = "SHOAL_SPILL_TEST_CHILD_CLIENT";

/// A client whose results spill, that prints its spill directory and waits
/// to be killed. A no-op in a normal test run.
#[test]
fn child_client() {
    let Some(parent) = std::env::var_os(CHILD_ENV) else { return };
    let client = client(3 * PART, Path::new(&parent), SpillIo::Auto);
    let data = client.map(make, 0..4u64).unwrap();
    shoal::wait(&data).unwrap();
    let s = settle(&client, within_limit);
    println!("SPILLED {} {}", s.spilled_objects, s.spill_dir.display());
    std::thread::sleep(Duration::from_secs(60));
}

/// A client killed with SIGKILL cannot remove its spill directory: the next
/// client with the same spill parent does.
#[test]
fn a_killed_clients_spill_directory_is_swept_at_the_next_start() {
    let _serial = serial();
    let scratch = Scratch::new("killed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_client", "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &scratch.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("SPILLED ").map(|(_, rest)| rest.to_owned()))
        .expect("the child client reports its spill directory");
    let (spilled, dir) = line.split_once(' ').unwrap();
    let dir = PathBuf::from(dir);
    assert!(spilled.parse::<usize>().unwrap() >= 1, "the child spilled");
    assert!(spill_files(&dir).0 >= 1, "its spill files are on disk");
    child.kill().unwrap(); // SIGKILL: no code of the client runs
    child.wait().unwrap();
    assert!(dir.exists(), "a killed client leaves its spill directory");
    let client = client(3 * PART, &scratch.0, SpillIo::Auto);
    assert!(!dir.exists(), "the next client swept it");
    let own = stats(&client).spill_dir;
    assert!(own.exists());
    drop(client);
    assert!(!own.exists());
}
