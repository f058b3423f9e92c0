//! The processes mode under the limits a machine sets: a memory cgroup and
//! a low file descriptor limit.
//!
//! Each test runs its job in a child process — this test binary again,
//! told by [`ENV_CHILD`] which job to run — so the limit applies to that
//! process and its workers only: the child is moved into a cgroup, or
//! started under `ulimit -n`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shoal::prelude::*;

/// Which child job this process runs (unset: the parent tests).
const ENV_CHILD: &str = "SHOAL_TEST_LIMITS_CHILD";

const MIB: u64 = 1 << 20;

/// Runs this test binary again as a child doing `job`: only the test named
/// `test`, with `ENV_CHILD=job`, through `sh -c script` (which ends with
/// `exec "$0" "$@"`); returns its output, after checking it succeeded.
fn run_child(test: &str, job: &str, script: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, job)
        .output()
        .expect("running the child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child {job} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "the child ran its test:\n{stdout}\n{stderr}");
    stdout
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
