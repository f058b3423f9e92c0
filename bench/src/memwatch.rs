//! Peak memory of a process and all its descendants, sampled from `/proc`.
//!
//! What one sample counts, for every process of the tree (the root and,
//! recursively, `/proc/PID/task/*/children`):
//! - its proportional set size (`Pss` of `/proc/PID/smaps_rollup`): private
//!   pages in full, pages shared with other processes (a shared-memory result
//!   mapped by its producer and a consumer) divided among them, so the sum
//!   over the tree counts every page once;
//! - the allocated size of each memfd it holds by descriptor but that no
//!   process of the tree maps (shoal's store keeps released-from-map results
//!   that way): such pages are in no one's `Pss`, yet they are memory. Each
//!   memfd is counted once, by inode.
//!
//! A sampler thread takes a sample every [`INTERVAL`] and keeps the largest
//! sum. Short spikes between samples are missed, so the figure is a lower
//! bound of the true peak, the same for every system measured.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Between two samples: short enough to catch a peak that lasts as long as
/// one task of the replayed graphs (tens of ms), long enough that reading
/// `/proc` for a handful of processes costs well under 1% of a core.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Watches one process tree until dropped or [`Watch::stop`]ped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Start sampling the tree rooted at `pid`.
    pub fn start(pid: u32) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(tree_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(INTERVAL);
            }
        });
        Watch { stop, peak, thread: Some(thread) }
    }

    /// Stop sampling; the largest sum seen, in bytes.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.peak.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked sampler only loses samples; the peak so far stands.
            let _ = t.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The memory of the tree rooted at `root` now, in bytes (0 if it is gone).
pub fn tree_bytes(root: u32) -> u64 {
    let pids = tree(root);
    let mut mapped = HashSet::new();
    let mut total = 0;
    for &pid in &pids {
        total += pss(pid);
        mapped.extend(mapped_memfds(pid));
    }
    let mut held = HashSet::new();
    for &pid in &pids {
        for (ino, bytes) in held_memfds(pid) {
            if !mapped.contains(&ino) && held.insert(ino) {
                total += bytes;
            }
        }
    }
    total
}

/// `root` and its descendants (processes that vanish meanwhile are skipped).
fn tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
            out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out
}

/// `Pss` of `/proc/PID/smaps_rollup`, in bytes.
fn pss(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { return 0 };
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Inodes of the memfds `pid` maps (from `/proc/PID/maps`).
fn mapped_memfds(pid: u32) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    text.lines().filter(|l| l.contains("/memfd:")).filter_map(|l| l.split_whitespace().nth(4)?.parse().ok()).collect()
}

/// (inode, allocated bytes) of each memfd `pid` holds by descriptor.
fn held_memfds(pid: u32) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut out = Vec::new();
    for fd in fds.flatten() {
        let is_memfd = std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:"));
        if is_memfd && let Ok(meta) = std::fs::metadata(fd.path()) {
            out.push((meta.ino(), meta.blocks() * 512));
        }
    }
    out
}

/// Tests that measure this whole process tree take this first: one at a
/// time, and none while another test of the same binary runs a child (the
/// tests of `bench/tests/fan_memory.rs`, which includes this file).
#[cfg(test)]
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_s_written_memory_is_counted_and_goes_away_with_it() {
        let _one = super::ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let before = tree_bytes(std::process::id());
        // A child that writes 64 MiB and waits: the tree grows by about that much.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import sys,time; b=bytearray(b'x'*(64<<20)); print('ok', flush=True); time.sleep(30)"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ok");
        let with = tree_bytes(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        let after = tree_bytes(std::process::id());
        assert!(with >= before + (60 << 20), "before {before}, with the child {with}");
        assert!(after + (60 << 20) <= with, "with the child {with}, after {after}");
    }

    #[test]
    fn an_unmapped_memfd_held_by_descriptor_is_counted_once() {
        let _one = super::ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        use std::io::Write;
        let before = tree_bytes(std::process::id());
        let fd = rustix::fs::memfd_create("memwatch-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(&vec![7u8; 32 << 20]).unwrap();
        // A second descriptor of the same memfd: the same pages.
        let again = file.try_clone().unwrap();
        let with = tree_bytes(std::process::id());
        drop((file, again));
        assert!(with >= before + (30 << 20), "before {before}, with the memfd {with}");
        assert!(with < before + (60 << 20), "counted twice: before {before}, with the memfd {with}");
    }
}
