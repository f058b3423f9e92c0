//! `Client::status()`: what the client's tasks are doing, by state and per
//! task name, from the driver's task events (`shoal_core::driver::events`).

use std::time::Duration;

use shoal_core::driver::events::Snapshot;
pub use shoal_core::driver::events::StateCounts;

/// What the client's tasks are doing now, and what they did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    /// Live tasks (not forgotten) by state.
    pub tasks: StateCounts,
    /// Per task name (registered function), those that ever had a task,
    /// sorted by name.
    pub names: Vec<NameStatus>,
    /// Runs that succeeded, since the client started.
    pub done: u64,
    /// Runs that failed, since the client started (a retried task counts
    /// each failed run).
    pub failed: u64,
}

/// One task name in a [`ClientStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameStatus {
    /// The task's name (its function's name, as in its keys).
    pub name: &'static str,
    /// Its live tasks by state.
    pub live: StateCounts,
    /// Its runs that succeeded.
    pub done: u64,
    /// Its runs that failed.
    pub failed: u64,
    /// Time its runs took, summed.
    pub busy: Duration,
    /// Bytes of results its runs produced.
    pub nbytes: u64,
}

/// The short name of registered task `func` (the last path segment, as
/// keys print it).
pub(crate) fn task_name(func: u32) -> &'static str {
    let full = shoal_core::registry::entries().get(func as usize).map(|e| e.name()).unwrap_or("?");
    full.rsplit("::").next().unwrap_or(full)
}

impl ClientStatus {
    pub(crate) fn from_snapshot(snap: &Snapshot) -> ClientStatus {
        let n = snap.per_func.len().max(snap.counts.per_func.len());
        let mut names: Vec<NameStatus> = (0..n)
            .filter_map(|func| {
                let totals = snap.per_func.get(func).copied().unwrap_or_default();
                let live = snap.counts.per_func.get(func).copied().unwrap_or_default();
                (live.total() > 0 || totals.done + totals.failed + totals.late > 0).then(|| NameStatus {
                    name: task_name(func as u32),
                    live,
                    done: totals.done,
                    failed: totals.failed,
                    busy: Duration::from_nanos(totals.busy_ns),
                    nbytes: totals.nbytes,
                })
            })
            .collect();
        names.sort_by_key(|n| n.name);
        ClientStatus { tasks: snap.counts.all, names, done: snap.totals.done, failed: snap.totals.failed }
    }

    /// The entry of task name `name`, if it had tasks.
    pub fn name(&self, name: &str) -> Option<&NameStatus> {
        self.names.iter().find(|n| n.name == name)
    }
}
