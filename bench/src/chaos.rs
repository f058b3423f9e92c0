//! `chaos`: a soak test of the processes mode under random SIGKILLs.
//!
//! Each trial starts a client of [`WORKERS`] worker processes with a small
//! memory limit (so results spill) and a spill directory of its own, and
//! submits a job with real dependencies: leaves that make 128 KiB vectors
//! (shared-memory segments), a sum of each, and a binary tree of additions
//! down to one total. While it runs, a killer thread SIGKILLs a random
//! worker at random moments (1 to [`MAX_KILLS`] per trial). The trial
//! checks:
//!
//! - **correct**: the total equals the one computed here, within
//!   [`HANG_AFTER`] (else the trial is a **hang**);
//! - after the client is dropped, nothing leaked: no child process left,
//!   no more descriptors in this process than before it (memfd segments
//!   among them), no `shoal` entry in `/dev/shm`, nothing left in its spill
//!   directory.
//!
//! `cargo run --release -p shoal-bench -- chaos [--trials N] [--seed S]`;
//! the exit status is non-zero if any trial failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

/// Worker processes per trial.
const WORKERS: usize = 3;
/// Leaves of the job.
const LEAVES: u64 = 48;
/// Items of each leaf's vector (128 KiB: a shared-memory segment).
const ITEMS: u64 = 16 * 1024;
/// Kills per trial, at most.
const MAX_KILLS: u64 = 3;
/// A trial whose total is not there by then is a hang.
const HANG_AFTER: Duration = Duration::from_secs(60);
/// Store limit: small, so that results spill to disk during the job.
const MEMORY_LIMIT: u64 = 1 << 20;

#[shoal::task]
fn leaf(i: u64) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(2));
    (0..ITEMS).map(|k| k * 3 + i).collect()
}

#[shoal::task]
fn total_of(v: &Archived<Vec<u64>>) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    v.iter().map(|x| x.to_native()).sum()
}

#[shoal::task]
fn add(a: u64, b: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    a + b
}

fn expected() -> u64 {
    (0..LEAVES).map(|i| (0..ITEMS).map(|k| k * 3 + i).sum::<u64>()).sum()
}

/// SplitMix64, seeded: the trials replay with `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one trial saw.
#[derive(Default)]
struct Outcome {
    correct: bool,
    hang: bool,
    error: Option<String>,
    kills: u32,
    leaked_processes: usize,
    leaked_fds: isize,
    leaked_memfds: usize,
    leaked_shm: usize,
    leaked_spill: usize,
    millis: u128,
}

impl Outcome {
    fn leaks(&self) -> bool {
        self.leaked_processes > 0
            || self.leaked_fds > 0
            || self.leaked_memfds > 0
            || self.leaked_shm > 0
            || self.leaked_spill > 0
    }
}

/// Runs the soak test: `trials` trials from `seed`.
pub fn run(trials: usize, seed: u64) -> shoal::Result<()> {
    println!("chaos: {trials} trials, {WORKERS} workers, up to {MAX_KILLS} SIGKILLs each, seed {seed}");
    let root = std::env::temp_dir().join(format!("shoal-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let mut rng = Rng(seed);
    let want = expected();
    let mut outcomes = Vec::with_capacity(trials);
    for trial in 0..trials {
        let spill = root.join(format!("trial-{trial}"));
        std::fs::create_dir_all(&spill)?;
        let o = one_trial(&mut rng, &spill, want);
        println!(
            "trial {trial:>3}: {} kills={} {:>5} ms  leaks: processes {} fds {} memfds {} /dev/shm {} spill {}{}",
            if o.correct {
                "correct"
            } else if o.hang {
                "HANG   "
            } else {
                "WRONG  "
            },
            o.kills,
            o.millis,
            o.leaked_processes,
            o.leaked_fds,
            o.leaked_memfds,
            o.leaked_shm,
            o.leaked_spill,
            o.error.as_ref().map(|e| format!("  error: {e}")).unwrap_or_default(),
        );
        let _ = std::fs::remove_dir_all(&spill);
        outcomes.push(o);
    }
    let _ = std::fs::remove_dir_all(&root);
    let correct = outcomes.iter().filter(|o| o.correct).count();
    let hangs = outcomes.iter().filter(|o| o.hang).count();
    let leaky = outcomes.iter().filter(|o| o.leaks()).count();
    let kills: u32 = outcomes.iter().map(|o| o.kills).sum();
    println!(
        "chaos: {correct} of {trials} correct, {hangs} hangs, {leaky} trials with leaks; {kills} workers killed in all"
    );
    if correct == trials && leaky == 0 {
        Ok(())
    } else {
        Err(shoal::Error::Message(format!("{} trials not correct, {leaky} with leaks", trials - correct)))
    }
}

fn one_trial(rng: &mut Rng, spill: &Path, want: u64) -> Outcome {
    let mut o = Outcome::default();
    let fds_before = fd_count();
    let shm_before = shm_entries();
    let started = Instant::now();
    let options = ProcessesOptions {
        workers: WORKERS,
        memory_limit: Some(MEMORY_LIMIT),
        spill_dir: Some(spill.to_path_buf()),
        ..ProcessesOptions::default()
    };
    let client = match Client::processes_with(
        options,
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    ) {
        Ok(c) => c,
        Err(e) => {
            o.error = Some(format!("start: {e}"));
            return o;
        }
    };
    let kills = 1 + rng.below(MAX_KILLS);
    let delays: Vec<u64> = (0..kills).map(|_| rng.below(60)).collect();
    let picks: Vec<u64> = (0..kills).map(|_| rng.next()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));
    let killer = {
        let (client, done, killed) = (client.clone(), Arc::clone(&done), Arc::clone(&killed));
        std::thread::spawn(move || {
            for (delay, pick) in delays.into_iter().zip(picks) {
                std::thread::sleep(Duration::from_millis(delay));
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let pids = client.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[(pick % pids.len() as u64) as usize];
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
                    && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
                {
                    killed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let result = job(&client);
    done.store(true, Ordering::SeqCst);
    let _ = killer.join();
    o.kills = killed.load(Ordering::SeqCst);
    match result {
        Ok(Some(total)) => o.correct = total == want,
        Ok(None) => o.hang = true,
        Err(e) => o.error = Some(e),
    }
    o.millis = started.elapsed().as_millis();
    drop(client);
    o.leaked_processes = children().len();
    o.leaked_fds = fd_count() as isize - fds_before as isize;
    o.leaked_memfds = memfds();
    o.leaked_shm = shm_entries().saturating_sub(shm_before);
    o.leaked_spill = dir_entries(spill);
    o
}

/// The job: leaves → sums → a tree of additions. `Ok(None)`: a hang.
fn job(client: &Client) -> Result<Option<u64>, String> {
    let e = |e: shoal::Error| e.to_string();
    let leaves = client.map(leaf, 0..LEAVES).map_err(e)?;
    let mut level: Vec<shoal::Future<u64>> =
        leaves.iter().map(|f| client.submit(total_of, f)).collect::<Result<_, _>>().map_err(e)?;
    drop(leaves);
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            next.push(match pair {
                [a, b] => client.submit(add, (a, b)).map_err(e)?,
                [a] => a.clone(),
                _ => unreachable!("chunks of two"),
            });
        }
        level = next;
    }
    let total = &level[0];
    if !total.wait_timeout(HANG_AFTER).map_err(e)? {
        return Ok(None);
    }
    total.result().map(Some).map_err(e)
}

/// Live child processes of this one (worker processes not reaped).
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces, so from the last ')'.
            let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me).then_some(pid)
        })
        .collect()
}

fn fd_count() -> usize {
    dir_entries(Path::new("/proc/self/fd"))
}

/// Descriptors of this process on memfd segments.
fn memfds() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target: &PathBuf| target.to_string_lossy().starts_with("/memfd:"))
        .count()
}

fn shm_entries() -> usize {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else { return 0 };
    entries.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("shoal")).count()
}

fn dir_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}
