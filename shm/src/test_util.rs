//! Helpers for this crate's unit tests.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A segment name no other test (or test process) uses, so that looking it
/// up in `/proc/self` is not disturbed by tests running in parallel.
pub(crate) fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("shoal-test-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How many of this process's descriptors are the memfd called `name`.
pub(crate) fn fds_named(name: &str) -> usize {
    let needle = format!("/memfd:{name} (deleted)");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == needle)
        .count()
}
