//! Limits of the machine and of this process that the processes mode sizes
//! itself by: the memory a cgroup allows, and how many file descriptors it
//! may hold.
//!
//! # Memory: the process's own cgroup, walked up to the root
//!
//! A container or a systemd slice limits a process through the cgroup named
//! in `/proc/self/cgroup`, not through the root of the hierarchy (whose
//! `memory.max` does not even exist on cgroup v2). A limit applies to a
//! cgroup and everything below it, so the limit in force is the tightest
//! one on the path from the process's cgroup up to the root:
//!
//! - **cgroup v2** (line `0::/path`): `memory.max` in `<v2 root>/path` and in
//!   each ancestor (`max` = no limit). The v2 root is `/sys/fs/cgroup`
//!   itself when it holds `cgroup.controllers` (the unified layout), else
//!   `/sys/fs/cgroup/unified` (the hybrid layout, where v2 usually has no
//!   memory controller and so no `memory.max`).
//! - **cgroup v1** (a line `N:…memory…:/path`): `memory.limit_in_bytes` in
//!   `/sys/fs/cgroup/memory/path` and each ancestor (no limit reads as a
//!   huge number, which loses to the machine's memory).
//!
//! A directory on the path that does not exist is skipped: a container
//! without a cgroup namespace often sees only its own cgroup mounted at the
//! root while `/proc/self/cgroup` still names the host's path, and then the
//! mount's root *is* its cgroup. [`cgroup_memory_limit_in`] takes both the
//! tree and the `/proc/self/cgroup` text as parameters, so tests can point
//! it at a fake tree.
//!
//! # File descriptors
//!
//! The client of the processes mode holds a descriptor per large result;
//! the common soft limit (1024) is far below the usual hard limit, which
//! is exactly the headroom the soft limit exists to give: [`raise_nofile_limit`]
//! raises the soft limit to the hard one, as Go's runtime and many servers
//! do at start.

use std::path::{Path, PathBuf};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Where the cgroup hierarchies are mounted on every common distribution.
pub const SYS_FS_CGROUP: &str = "/sys/fs/cgroup";

/// The tightest memory limit, in bytes, of the cgroups this process is in
/// (its own and their ancestors, v2 and v1), read from [`SYS_FS_CGROUP`] and
/// `/proc/self/cgroup`; `None` if no limit is set or none can be read.
pub fn cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_memory_limit_in(Path::new(SYS_FS_CGROUP), &membership)
}

/// [`cgroup_memory_limit`] for a cgroup tree mounted at `root` (laid out as
/// `/sys/fs/cgroup` is) and a process whose `/proc/self/cgroup` reads
/// `membership`. See the module docs for the rules.
pub fn cgroup_memory_limit_in(root: &Path, membership: &str) -> Option<u64> {
    let v2_root = if root.join("cgroup.controllers").exists() { root.to_path_buf() } else { root.join("unified") };
    let mut tightest: Option<u64> = None;
    for line in membership.lines() {
        // hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let found = if id == "0" && controllers.is_empty() {
            walk_up(&v2_root, path, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            walk_up(&root.join("memory"), path, "memory.limit_in_bytes")
        } else {
            None
        };
        if let Some(limit) = found {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
    }
    tightest
}

/// The smallest limit in `file` of the cgroup `path` under `mount` and of
/// each of its ancestors up to `mount` itself; directories that do not
/// exist, unreadable files and `max` are skipped.
fn walk_up(mount: &Path, path: &str, file: &str) -> Option<u64> {
    let mut dir: PathBuf = mount.to_path_buf();
    let mut dirs = vec![dir.clone()];
    // Only plain components: a hostile or odd path cannot leave the mount.
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "." && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .min()
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`), if it can
/// be read.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A process's private memory in bytes: `RssAnon` of `/proc/PID/status`,
/// the resident anonymous pages (its heap, stacks and private maps), if it
/// can be read (`None` once the process is gone).
///
/// This is what a worker process holds beyond the results: the store counts
/// result segments, which are shared memory (`RssShmem`) and so not in here,
/// and the two sums never count a page twice.
pub fn private_memory(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Why the descriptor limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot raise this process's file descriptor limit (RLIMIT_NOFILE) from {soft} to its hard limit {hard}: \
     {source} — the process keeps the lower limit; raise it with `ulimit -n` before starting if many large \
     results are to be held at once"
)]
pub struct LimitError {
    /// The soft limit in force.
    pub soft: u64,
    /// The hard limit it could not be raised to.
    pub hard: u64,
    /// The kernel's reason.
    pub source: rustix::io::Errno,
}

/// The soft limit on this process's open file descriptors (`RLIMIT_NOFILE`);
/// `u64::MAX` if unlimited.
pub fn nofile_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises the soft limit on open file descriptors to the hard limit, and
/// returns the soft limit now in force. Raising it is always allowed
/// (no privilege is needed up to the hard limit); children inherit it.
pub fn raise_nofile_limit() -> Result<u64, LimitError> {
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
        Ok(()) => Ok(hard),
        Err(source) => Err(LimitError { soft, hard, source }),
    }
}

/// Descriptors a process needs besides the segments its store holds:
/// standard streams, the executable, the spill directory and io_uring's
/// ring, a spill or read-back file open during I/O (one per thread doing
/// it), the test harness or the program's own files. Generous, because
/// running out costs a worker connection while spilling early costs only
/// a write.
pub const FD_RESERVE_BASE: u64 = 48;

/// Descriptors per worker connection besides segments held: its socket,
/// and the descriptors of the frames its reader has received and not yet
/// handed to the store — at most one frame's,
/// [`MAX_FDS_PER_MESSAGE`](crate::MAX_FDS_PER_MESSAGE), since a reader
/// pass ends at the first frame that carries any.
pub const FD_RESERVE_PER_WORKER: u64 = 1 + crate::MAX_FDS_PER_MESSAGE as u64;

/// The least budget given, whatever the limit: below it a store could not
/// hold the inputs of one run with a few segment arguments. (With a budget
/// this low the process is likely to hit its limit anyway; the caller
/// should warn.)
pub const MIN_FD_BUDGET: u64 = 16;

/// How many segments a client store may hold open, for a process whose
/// descriptor soft limit is `soft` and that talks to `workers` worker
/// processes: the limit less [`FD_RESERVE_BASE`] and
/// [`FD_RESERVE_PER_WORKER`] per worker, and at least [`MIN_FD_BUDGET`].
pub fn descriptor_budget(soft: u64, workers: usize) -> u64 {
    let reserve = FD_RESERVE_BASE.saturating_add(FD_RESERVE_PER_WORKER.saturating_mul(workers as u64));
    soft.saturating_sub(reserve).max(MIN_FD_BUDGET)
}

#[cfg(test)]
mod tests {
    #[test]
    fn private_memory_grows_with_written_heap_and_excludes_shared_memory() {
        let me = std::process::id();
        let before = super::private_memory(me).unwrap();
        // 64 MiB written on the heap: private. (`black_box`: a release build
        // would otherwise drop an allocation nothing reads.)
        let heap = std::hint::black_box(vec![1u8; 64 << 20]);
        let with_heap = super::private_memory(me).unwrap();
        assert!(with_heap >= before + (60 << 20), "before {before}, with 64 MiB of heap {with_heap}");
        drop(heap);
        // 64 MiB written into a shared mapping of a memfd: not private.
        let base = super::private_memory(me).unwrap();
        let mut seg = crate::SegmentWriter::create(64 << 20, "limits-test").unwrap();
        seg.bytes_mut().fill(1);
        let with_shared = super::private_memory(me).unwrap();
        drop(seg);
        assert!(with_shared < base + (32 << 20), "shared memory counted as private: {base} → {with_shared}");
        assert_eq!(super::private_memory(u32::MAX), None);
    }

    use super::*;

    /// A fake `/sys/fs/cgroup`, removed at the end of the test.
    struct Tree(PathBuf);

    impl Tree {
        fn new(what: &str) -> Tree {
            let path = std::env::temp_dir().join(crate::test_util::unique_name(&format!("cgroup-{what}")));
            std::fs::create_dir_all(&path).unwrap();
            Tree(path)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn v2_unified_takes_the_tightest_limit_on_the_way_up() {
        let tree = Tree::new("v2");
        tree.write("cgroup.controllers", "cpu memory pids\n");
        // The root of a v2 tree has no memory.max; a parent is tighter than
        // the process's own cgroup, which is tighter than the grandparent.
        tree.write("system.slice/memory.max", &format!("{}\n", 4096 * MIB));
        tree.write("system.slice/app.service/memory.max", &format!("{}\n", 512 * MIB));
        tree.write("system.slice/app.service/job/memory.max", &format!("{}\n", 768 * MIB));
        let membership = "0::/system.slice/app.service/job\n";
        assert_eq!(cgroup_memory_limit_in(&tree.0, membership), Some(512 * MIB));
        // Unlimited all the way: no limit.
        tree.write("system.slice/memory.max", "max\n");
        tree.write("system.slice/app.service/memory.max", "max\n");
        tree.write("system.slice/app.service/job/memory.max", "max\n");
        assert_eq!(cgroup_memory_limit_in(&tree.0, membership), None);
        // The process's own cgroup alone limits it.
        tree.write("system.slice/app.service/job/memory.max", &format!("{}\n", 768 * MIB));
        assert_eq!(cgroup_memory_limit_in(&tree.0, membership), Some(768 * MIB));
        // A different cgroup of the same tree is not ours.
        assert_eq!(cgroup_memory_limit_in(&tree.0, "0::/user.slice\n"), None);
    }

    #[test]
    fn v1_reads_the_memory_hierarchy_of_the_memory_line() {
        let tree = Tree::new("v1");
        let unlimited = "9223372036854771712\n";
        tree.write("memory/memory.limit_in_bytes", unlimited);
        tree.write("memory/docker/memory.limit_in_bytes", unlimited);
        tree.write("memory/docker/abc/memory.limit_in_bytes", &format!("{}\n", 768 * MIB));
        // A limit in another controller's hierarchy is not a memory limit.
        tree.write("cpu/docker/abc/memory.limit_in_bytes", &format!("{}\n", MIB));
        let membership = "12:pids:/docker/abc\n5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n\
                          1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(cgroup_memory_limit_in(&tree.0, membership), Some(768 * MIB));
        // Controllers named together on one line.
        assert_eq!(cgroup_memory_limit_in(&tree.0, "4:foo,memory:/docker/abc\n"), Some(768 * MIB));
        // An unlimited v1 cgroup reads as a huge number, which callers take
        // the minimum with the machine's memory of.
        assert_eq!(cgroup_memory_limit_in(&tree.0, "4:memory:/docker\n"), Some(9_223_372_036_854_771_712));
    }

    #[test]
    fn hybrid_layout_takes_v1_memory_and_v2_under_unified() {
        let tree = Tree::new("hybrid");
        tree.write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        tree.write("memory/job/memory.limit_in_bytes", &format!("{}\n", 300 * MIB));
        tree.write("unified/cgroup.procs", "");
        tree.write("unified/job/memory.max", &format!("{}\n", 200 * MIB));
        let membership = "4:memory:/job\n0::/job\n";
        assert_eq!(cgroup_memory_limit_in(&tree.0, membership), Some(200 * MIB));
    }

    #[test]
    fn a_namespaced_container_sees_its_own_cgroup_at_the_root() {
        // No cgroup namespace: /proc/self/cgroup names the host's path, but
        // only the container's cgroup is mounted, at the root.
        let tree = Tree::new("container");
        tree.write("cgroup.controllers", "memory\n");
        tree.write("memory.max", &format!("{}\n", 768 * MIB));
        assert_eq!(cgroup_memory_limit_in(&tree.0, "0::/docker/0123abcd\n"), Some(768 * MIB));
    }

    #[test]
    fn odd_input_is_not_a_limit_and_does_not_escape_the_tree() {
        let tree = Tree::new("odd");
        tree.write("cgroup.controllers", "memory\n");
        tree.write("job/memory.max", "garbage\n");
        for membership in ["", "nonsense\n", "0::\n", "0::/job\n", "0::/../../etc\n", "4:memory\n"] {
            assert_eq!(cgroup_memory_limit_in(&tree.0, membership), None, "{membership:?}");
        }
        assert_eq!(cgroup_memory_limit_in(&tree.0.join("absent"), "0::/job\n4:memory:/job\n"), None);
    }

    #[test]
    fn the_descriptor_budget_leaves_a_reserve() {
        assert_eq!(descriptor_budget(1024, 2), 1024 - 48 - 2 * 33);
        assert_eq!(descriptor_budget(256, 2), 256 - 48 - 66);
        assert_eq!(descriptor_budget(64, 8), MIN_FD_BUDGET);
        assert_eq!(descriptor_budget(u64::MAX, usize::MAX), MIN_FD_BUDGET, "saturates");
    }

    #[test]
    fn raising_the_descriptor_limit_reaches_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert_eq!(raise_nofile_limit().unwrap(), hard);
        assert_eq!(nofile_limit(), hard);
    }

    #[test]
    fn the_machine_has_memory() {
        assert!(machine_memory().is_some_and(|m| m > 64 * MIB));
    }
}
