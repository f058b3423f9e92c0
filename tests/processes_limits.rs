//! The processes mode under the limits a machine sets: a memory cgroup and
//! a low file descriptor limit.
//!
//! Each test runs its job in a child process — this test binary again,
//! told by [`ENV_CHILD`] which job to run — so the limit applies to that
//! process and its workers only: the child is moved into a cgroup, or
//! started under `ulimit -n`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

/// Which child job this process runs (unset: the parent tests).
const ENV_CHILD: &str = "SHOAL_TEST_LIMITS_CHILD";

const MIB: u64 = 1 << 20;

/// How long a child job may take: the jobs here take seconds; one that
/// loops (workers lost and replaced forever) is a failure, not a hang.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs this test binary again as a child doing `job`: only the test named
/// `test`, with `ENV_CHILD=job`, through `sh -c script` (which ends with
/// `exec "$0" "$@"`); returns its output, after checking it succeeded
/// within [`CHILD_TIMEOUT`].
fn run_child(test: &str, job: &str, script: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    // Files, not pipes: a child that logs a lot must not block on a full pipe.
    let log = |what: &str| std::env::temp_dir().join(format!("shoal-test-limits-{job}-{}.{what}", std::process::id()));
    let (out_path, err_path) = (log("out"), log("err"));
    let file = |path: &PathBuf| Stdio::from(std::fs::File::create(path).expect("a log file for the child"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, job)
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .expect("starting the child");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = (std::fs::remove_file(&out_path), std::fs::remove_file(&err_path));
    let Some(status) = status else {
        panic!("child {job} did not finish within {CHILD_TIMEOUT:?}:\n{stdout}\n{}", tail(&stderr));
    };
    assert!(status.success(), "child {job} failed ({status}):\n{stdout}\n{}", tail(&stderr));
    assert!(stdout.contains("1 passed"), "the child ran its test:\n{stdout}\n{}", tail(&stderr));
    stdout
}

/// The last lines of a log (a looping child writes many).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Whether this run is CI's (where a test that cannot run must fail).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test that cannot run here: skipped with a message, or failed in CI.
fn cannot_run(why: &str) {
    assert!(!in_ci(), "CI=true but this test cannot run: {why}");
    eprintln!("SKIPPED: {why}");
}

// ---- the memory cgroup ----

/// A memory cgroup made for one test, removed at its end.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    /// A new cgroup with a memory limit, directly under the root of the
    /// memory hierarchy (cgroup v2 where it has the memory controller, else
    /// v1's memory hierarchy); `Err` says why none could be made.
    fn create(limit: u64) -> Result<TestCgroup, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root: cannot make a cgroup".into());
        }
        let name = format!("shoal-test-limits-{}", std::process::id());
        let v2 = [Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/unified")].into_iter().find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        let (dir, limit_file) = match v2 {
            Some(root) => {
                // Children get memory.max only if the root delegates memory.
                let control = root.join("cgroup.subtree_control");
                let delegated = std::fs::read_to_string(&control).unwrap_or_default();
                if !delegated.split_whitespace().any(|c| c == "memory") {
                    std::fs::write(&control, "+memory").map_err(|e| format!("enabling memory in {control:?}: {e}"))?;
                }
                (root.join(&name), "memory.max")
            }
            None if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() => {
                (Path::new("/sys/fs/cgroup/memory").join(&name), "memory.limit_in_bytes")
            }
            None => return Err("no cgroup hierarchy with the memory controller is mounted".into()),
        };
        std::fs::create_dir(&dir).map_err(|e| format!("making the cgroup {dir:?}: {e}"))?;
        let cgroup = TestCgroup { dir };
        std::fs::write(cgroup.dir.join(limit_file), limit.to_string())
            .map_err(|e| format!("setting {limit_file} of {:?}: {e}", cgroup.dir))?;
        Ok(cgroup)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty once the child and its workers (which die with it) are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_default_memory_limit_is_half_of_the_process_cgroup_limit() {
    const LIMIT: u64 = 768 * MIB;
    if std::env::var_os(ENV_CHILD).is_some_and(|j| j == "cgroup") {
        // In the cgroup: the client's default limit comes from it.
        let client = Client::processes(1).unwrap();
        let stats = client.store_stats().unwrap();
        println!("memory_limit={}", stats.memory_limit);
        assert_eq!(stats.memory_limit, LIMIT / 2, "half of the cgroup's {LIMIT}");
        assert_eq!(client.submit(add_one, 41).unwrap().result().unwrap(), 42);
        return;
    }
    if std::env::var_os(ENV_CHILD).is_some() {
        return; // a child for another test
    }
    let cgroup = match TestCgroup::create(LIMIT) {
        Ok(cgroup) => cgroup,
        Err(why) => return cannot_run(&why),
    };
    // The shell moves itself into the cgroup, then becomes the child.
    let procs = cgroup.dir.join("cgroup.procs");
    let script = format!("echo 0 > '{}' && exec \"$0\" \"$@\"", procs.display());
    let out = run_child("the_default_memory_limit_is_half_of_the_process_cgroup_limit", "cgroup", &script);
    assert!(out.contains(&format!("memory_limit={}", LIMIT / 2)), "{out}");
    drop(cgroup);
}

#[shoal::task]
fn add_one(x: u64) -> u64 {
    x + 1
}

// ---- file descriptors ----

/// A result of `len` bytes whose every byte depends on `i`.
#[shoal::task]
fn part(i: u64, len: u64) -> Vec<u8> {
    bytes(i, len as usize)
}

/// Reads its input in place (a spilled input is read back first).
#[shoal::task]
fn digest(data: &Archived<Vec<u8>>) -> u64 {
    fnv(data.as_slice())
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in data.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// In a child under a descriptor limit: `count` live results of `len`
/// bytes (each a segment, a descriptor while in memory), each read by a
/// task; the right answer, and no worker lost on the way.
fn many_live_results(count: u64, len: u64) {
    let spill = std::env::temp_dir().join(format!("shoal-test-limits-fds-{}", std::process::id()));
    std::fs::create_dir_all(&spill).unwrap();
    let client = Client::processes_with(
        ProcessesOptions { workers: 2, spill_dir: Some(spill.clone()), ..ProcessesOptions::default() },
        ClientOptions::default(),
    )
    .unwrap();
    let pids = client.worker_pids();
    // The client raised the soft limit to the hard one.
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    assert_eq!(soft, rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum);
    let parts = client.map(part, (0..count).map(|i| (i, len))).unwrap();
    let digests = client.map(digest, &parts).unwrap();
    let got: Vec<u64> = client.gather(&digests).unwrap();
    let want: Vec<u64> = (0..count).map(|i| fnv(&bytes(i, len as usize))).collect();
    assert!(got == want, "every digest right");
    // The parts are still live: some read back by the client, byte for byte.
    for i in [0, count / 2, count - 1] {
        assert!(parts[i as usize].result().unwrap() == bytes(i, len as usize), "part {i}");
    }
    let stats = client.store_stats().unwrap();
    assert_eq!(client.worker_pids(), pids, "no worker was lost: {stats:?}");
    println!(
        "soft limit {soft:?}, descriptor budget {}, in memory {}, spilled {}, spills {}",
        stats.descriptor_budget, stats.memory_objects, stats.spilled_objects, stats.spills
    );
    if stats.descriptor_budget < count {
        assert!(stats.spills > 0, "the budget made results spill: {stats:?}");
    }
    assert_eq!(stats.memory_objects + stats.spilled_objects, count as usize, "all live: {stats:?}");
    drop(parts);
    drop(client);
    let _ = std::fs::remove_dir_all(&spill);
}

#[test]
fn two_thousand_live_results_under_ulimit_256() {
    match std::env::var(ENV_CHILD).as_deref() {
        Ok("fds-256") => return many_live_results(2_000, 70_000),
        Ok(_) => return,
        Err(_) => {}
    }
    // Both limits: the client cannot raise its way out of this one.
    let out = run_child("two_thousand_live_results_under_ulimit_256", "fds-256", "ulimit -n 256 && exec \"$0\" \"$@\"");
    assert!(out.contains("soft limit Some(256)"), "{out}");
    println!("{}", out.lines().find(|l| l.contains("soft limit")).unwrap_or_default());
}

#[test]
fn three_thousand_live_results_under_a_soft_limit_of_1024() {
    match std::env::var(ENV_CHILD).as_deref() {
        Ok("fds-1024") => return many_live_results(3_000, 70_000),
        Ok(_) => return,
        Err(_) => {}
    }
    // The soft limit only, the common default: the client raises it to the
    // hard limit; with the hard limit at 1024 too it must budget within it.
    let out = run_child(
        "three_thousand_live_results_under_a_soft_limit_of_1024",
        "fds-1024",
        "ulimit -Sn 1024 && exec \"$0\" \"$@\"",
    );
    assert!(out.contains("soft limit"), "{out}");
    println!("{}", out.lines().find(|l| l.contains("soft limit")).unwrap_or_default());
}
