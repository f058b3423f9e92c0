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
    leave_mark(&dir, ms, tag)
}

fn leave_mark(dir: &str, ms: u64, tag: u64) -> Result<u32, String> {
    std::thread::sleep(Duration::from_millis(ms));
    let pid = std::process::id();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(Path::new(dir).join(format!("{tag}.{pid}")))
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

/// Teach the client's pacing that runs are short, so that each worker
/// takes many runs (up to 64 queued per thread): the tests below need the
/// worker holding the seed to take every reader of it. Without this, the
/// pacing follows the seed's own first run, which in a fresh worker process
/// can take a millisecond (page faults of first use), and then a worker
/// takes two runs at a time and the readers spread over both workers from
/// the start, with nothing to steal.
/// Returns the counters after it, which the tests count from.
fn warm(client: &Client) -> shoal::StealStats {
    let short = client.map(seed, 1..=256u64).unwrap();
    client.gather(&short).unwrap();
    client.steal_stats().expect("the processes mode counts its runs")
}

/// The client's run counters since `base`.
fn since(client: &Client, base: shoal::StealStats) -> shoal::StealStats {
    let now = client.steal_stats().expect("the processes mode counts its runs");
    shoal::StealStats {
        runs_sent: now.runs_sent - base.runs_sent,
        runs_sent_again: now.runs_sent_again - base.runs_sent_again,
        moves: now.moves - base.moves,
    }
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

/// A short result: the tasks reading it go to the worker that holds it
/// (placement by input bytes), and it is made fast, so the client queues
/// many runs per worker (pacing).
#[shoal::task]
fn seed(len: u64) -> Vec<u8> {
    vec![7u8; len as usize]
}

/// [`mark`], reading `pin` and `big`: their lengths plus the tag, and the
/// pid.
#[shoal::task]
fn mark_len(dir: String, pin: Vec<u8>, big: Vec<u8>, ms: u64, tag: u64) -> Result<(u32, u64), String> {
    let pid = leave_mark(&dir, ms, tag)?;
    Ok((pid, (pin.len() + big.len()) as u64 + tag))
}

/// Bytes of the seed.
const SEED_LEN: u64 = 100;
/// Bytes of a literal argument of every reader: a segment (over 64 KiB),
/// whose descriptor travels with each run, worker to worker when it moves.
const BIG_LEN: usize = 200_000;
/// What a reader of tag 0 returns.
const LENS: u64 = SEED_LEN + BIG_LEN as u64;

#[test]
fn a_steal_between_two_processes_of_one_machine_sends_nothing_through_the_client() {
    const TASKS: u64 = 8;
    const MS: u64 = 150;
    let client = client(2);
    let base = warm(&client);
    let marks = Marks::new("direct");
    let data = client.submit(seed, SEED_LEN).unwrap();
    data.result().unwrap();
    // Every reader of the seed goes to the worker that holds it (it has
    // room for all of them): the other one sits idle with nothing queued,
    // until it takes runs from the busy one.
    let readers: Vec<_> = (0..TASKS)
        .map(|tag| client.submit(mark_len, (marks.path(), &data, vec![1u8; BIG_LEN], MS, tag)).unwrap())
        .collect();
    let out = client.gather(&readers).unwrap();
    assert!(out.iter().enumerate().all(|(tag, &(_, n))| n == LENS + tag as u64), "{out:?}");
    let pids: Vec<u32> = out.iter().map(|&(pid, _)| pid).collect();
    let stats = since(&client, base);
    // (a) runs moved, and the thief ran them (with the seed as input: the
    // segment went worker to worker with the run);
    assert!(stats.moves >= 1, "no run moved: {stats:?}, ran on {pids:?}");
    let first = pids[0];
    assert!(pids.iter().any(|&p| p != first), "all ran on one worker: {pids:?} ({stats:?})");
    // (b) the client sent each run exactly once: none again after a move.
    assert_eq!(stats.runs_sent, 1 + TASKS, "{stats:?}");
    assert_eq!(stats.runs_sent_again, 0, "{stats:?}");
    // And each started once.
    assert!(marks.runs(0..TASKS).iter().all(|&(_, n)| n == 1), "{:?}", marks.runs(0..TASKS));
}

fn kill(pid: u32) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
}

/// Waits until `n` marks exist in `marks` (runs started and ended).
fn wait_marks(marks: &Marks, n: usize) {
    let started = Instant::now();
    while std::fs::read_dir(&marks.0).unwrap().count() < n {
        assert!(started.elapsed() < Duration::from_secs(20), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_victim_s_loss_does_not_take_back_the_runs_it_gave() {
    const TASKS: u64 = 8;
    let client = client(2);
    let base = warm(&client);
    let marks = Marks::new("victim");
    let data = client.submit(seed, SEED_LEN).unwrap();
    data.result().unwrap();
    // The first reader holds the victim's thread for long; the others wait
    // behind it, and the idle worker takes them.
    let long = client.submit(mark_len, (marks.path(), &data, vec![1u8; BIG_LEN], 60_000, 100)).unwrap();
    let readers: Vec<_> = (0..TASKS)
        .map(|tag| client.submit(mark_len, (marks.path(), &data, vec![1u8; BIG_LEN], 100, tag)).unwrap())
        .collect();
    wait_marks(&marks, 1);
    let stats = since(&client, base);
    assert!(stats.moves >= 1, "{stats:?}");
    // The victim dies while the thief still works on what it took (the long
    // run is not wanted any more: it is not run again).
    let thief = std::fs::read_dir(&marks.0).unwrap().next().unwrap().unwrap().file_name();
    let thief: u32 = thief.to_string_lossy().split('.').nth(1).unwrap().parse().unwrap();
    let victim = *client.worker_pids().iter().find(|&&p| p != thief).unwrap();
    drop(long);
    kill(victim);
    let out = client.gather(&readers).unwrap();
    assert!(out.iter().enumerate().all(|(tag, &(_, n))| n == LENS + tag as u64), "{out:?}");
    // Every run the thief took started once: the victim's loss sent none
    // of them again (only what it still had: the long one, and any it
    // kept queued).
    let moved = stats.moves;
    let ran_on_thief = out.iter().filter(|&&(pid, _)| pid == thief).count() as u64;
    assert!(ran_on_thief >= moved, "{ran_on_thief} ran on the thief, {moved} moved");
    assert!(marks.runs(0..TASKS).iter().all(|&(_, n)| n == 1), "{:?}", marks.runs(0..TASKS));
    let after = since(&client, base);
    assert!(after.runs_sent_again <= TASKS - moved, "{after:?}");
}

/// Leaves `b<tag>.<pid>` in `dir` when it starts, then sleeps and returns
/// like [`mark_len`] (without its end mark).
#[shoal::task]
fn begin_len(dir: String, pin: Vec<u8>, big: Vec<u8>, ms: u64, tag: u64) -> Result<(u32, u64), String> {
    let pid = std::process::id();
    std::fs::write(Path::new(&dir).join(format!("b{tag}.{pid}")), b"").map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok((pid, (pin.len() + big.len()) as u64 + tag))
}

/// The pids of the workers that started a run of one of `tags`.
fn begun(marks: &Marks, tags: &[u64]) -> Vec<u32> {
    std::fs::read_dir(&marks.0)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let (tag, pid) = name.strip_prefix('b')?.split_once('.')?;
            tags.contains(&tag.parse().ok()?).then(|| pid.parse().ok())?
        })
        .collect()
}

#[test]
fn the_thief_s_loss_reschedules_the_runs_it_took() {
    const TASKS: u64 = 6;
    let client = client(2);
    let base = warm(&client);
    let marks = Marks::new("thief");
    let data = client.submit(seed, SEED_LEN).unwrap();
    data.result().unwrap();
    let long = client.submit(begin_len, (marks.path(), &data, vec![1u8; BIG_LEN], 1_500, 100)).unwrap();
    // The readers go in once the long one holds its worker's thread, so
    // that none of them can start there first.
    let started = Instant::now();
    while begun(&marks, &[100]).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "the long run never began");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Long enough that the thief is still in its first when it dies.
    let readers: Vec<_> = (0..TASKS)
        .map(|tag| client.submit(begin_len, (marks.path(), &data, vec![1u8; BIG_LEN], 1_000, tag)).unwrap())
        .collect();
    let tags: Vec<u64> = (0..TASKS).collect();
    let started = Instant::now();
    let (victim, thief) = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing moved");
        if let (Some(&victim), Some(&thief)) = (begun(&marks, &[100]).first(), begun(&marks, &tags).first()) {
            break (victim, thief);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_ne!(victim, thief, "the runs behind the long one were taken by the idle worker");
    let before = since(&client, base);
    assert!(before.moves >= 1, "{before:?}");
    kill(thief);
    let out = client.gather(&readers).unwrap();
    assert!(out.iter().enumerate().all(|(tag, &(_, n))| n == LENS + tag as u64), "{out:?}");
    assert!(out.iter().all(|&(pid, _)| pid != thief));
    assert_eq!(long.result().unwrap(), (victim, LENS + 100));
    // What the thief took went back to the queue, and was sent again.
    let after = since(&client, base);
    assert!(after.runs_sent_again >= 1, "{after:?}");
}
