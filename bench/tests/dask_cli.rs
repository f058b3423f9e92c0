//! The Dask CLI cluster of `shoal-bench compare` is always cleaned up, even
//! when the bench panics while it runs: `shoal-bench dask-cli-drill` starts
//! it (`dask scheduler` and two `dask worker`s, each with its nanny and the
//! worker the nanny starts), prints its process groups and panics; every
//! one of those processes must be gone once the bench has exited.
//!
//! It needs Dask's CLI in an existing venv (`SHOAL_BENCH_VENV`, or
//! `bench/.venv`; the drill creates none and installs nothing); without it
//! the drill exits 3 and this test says it skipped, loudly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../src/procfs.rs"]
mod procfs;
use procfs::group_members;

#[test]
fn a_panic_while_the_dask_cli_cluster_runs_leaves_none_of_its_processes() {
    // stderr to a file, not a pipe: the Dask processes inherit it, and a
    // pipe would keep this test waiting for as long as any of them lives.
    let log = std::env::temp_dir().join(format!("shoal-dask-cli-drill-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .arg("dask-cli-drill")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if status.code() == Some(3) {
        eprintln!("SKIPPED: no Dask CLI here ({})", stdout.trim());
        return;
    }
    let groups: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("groups "))
        .unwrap_or_else(|| panic!("no groups line: {stdout}\n{stderr}"))
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert_eq!(groups.len(), 3, "a scheduler and two workers: {groups:?}");
    assert!(!status.success(), "the drill panics");
    assert!(stderr.contains("dask-cli-drill: a panic"), "{stderr}");
    // The drop waited for the leaders it signalled; a moment for the
    // kernel to finish the members it killed last. (Without the group
    // kill, a nanny's worker outlives it by more than this.)
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        let alive: Vec<(u32, usize)> = groups.iter().map(|&g| (g, group_members(g))).filter(|(_, n)| *n > 0).collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            // Not left behind by this test either (they are its own).
            for &(g, _) in &alive {
                // SAFETY: kill(2) with plain integers; `g` leads a group the
                // drill started, so the negative pid names only that group.
                unsafe { libc::kill(-(g as i32), libc::SIGKILL) };
            }
            panic!("processes of the Dask CLI cluster outlived the panic: {alive:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
