//! The cluster engine: a thin client of a scheduler server
//! (`Client::connect("tcp://host:8786")`). The scheduler and its driver
//! live in the `shoal scheduler` process; the tasks run, and their results
//! stay, in workers started from this same binary
//! (`SHOAL_WORKER=tcp://… ./app`).
//! This engine only forwards the client API's calls over the link of
//! `shoal_net::client` and waits on its mirror of the futures' tasks.
//!
//! It also holds the worker role of this binary: the `.init_array` hook
//! [`CLUSTER_HOOK`] (and `shoal::init()`) turn a process started with
//! `SHOAL_WORKER` into a cluster worker that never returns to `main`.

use std::sync::Arc;
use std::time::Instant;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::driver::events::Snapshot;
use shoal_core::driver::{GraphNode, Status};
use shoal_core::object::Obj;
use shoal_core::scheduler::{TaskId, TaskState, WorkerId};
use shoal_net::client::{ClientError, Remote};

use super::Engine;
use crate::error::{Error, Result};

/// A client of a scheduler server.
pub(crate) struct ClusterEngine {
    remote: Remote,
}

impl ClusterEngine {
    pub(crate) fn new(remote: Remote) -> Arc<ClusterEngine> {
        Arc::new(ClusterEngine { remote })
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Driver(d) => d.into(),
            ClientError::Lost(reason) => Error::Disconnected(reason),
            ClientError::Refused(message) => Error::Message(message),
        }
    }
}

impl Engine for ClusterEngine {
    fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>> {
        Ok(self.remote.submit(nodes)?)
    }

    fn release(&self, id: TaskId) {
        self.remote.release(id);
    }

    fn retain(&self, id: TaskId) {
        self.remote.retain(id);
    }

    fn cancel(&self, id: TaskId) {
        self.remote.cancel(id);
    }

    fn status(&self, id: TaskId) -> Status {
        self.remote.status(id)
    }

    fn key(&self, id: TaskId) -> Option<Key> {
        self.remote.key(id)
    }

    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status> {
        Ok(self.remote.wait(id, deadline)?)
    }

    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>> {
        Ok(self.remote.wait_any(ids, deadline)?)
    }

    fn result(&self, id: TaskId) -> Result<Obj> {
        self.remote.results(&[id])?.pop().ok_or(Error::Closed)
    }

    fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>)> {
        Ok(self.remote.wait_prefix(ids, from, deadline)?)
    }

    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        Ok(self.remote.results(ids)?)
    }

    /// What the client's mirror knows: finished (in memory), failed, or
    /// not yet — which reads as queued (the scheduler, not this process,
    /// knows whether a run started).
    fn state(&self, id: TaskId) -> Option<TaskState> {
        Some(match self.remote.status(id) {
            Status::Finished => TaskState::Memory,
            Status::Failed(_) => TaskState::Erred,
            Status::Pending => TaskState::Waiting,
        })
    }

    fn count_finished(&self, ids: &[TaskId]) -> usize {
        ids.iter().filter(|&&id| self.remote.status(id).is_finished()).count()
    }

    /// The task events live in the scheduler process (its dashboard shows
    /// them); a cluster client records none.
    fn snapshot(&self, _since: u64, _max: usize) -> Snapshot {
        Snapshot::default()
    }

    /// The scheduler tells a client how many workers and threads there
    /// are, not which: none are listed here.
    fn workers(&self) -> Vec<(WorkerId, u32, u32)> {
        Vec::new()
    }

    fn nthreads(&self) -> usize {
        self.remote.workers().1 as usize
    }

    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn store_stats(&self) -> Option<shoal_shm::store::StoreStats> {
        None
    }

    fn shutdown(&self) {
        self.remote.shutdown();
    }
}

/// Runs before `main` in every process of a binary that links it: if
/// `SHOAL_WORKER` is set, this process becomes a cluster worker and never
/// returns (see [`take_role`]). Referenced by `shoal::init()` and the
/// client constructors, so every binary that uses shoal has it linked in.
// SAFETY (of placing it in `.init_array`): as for the processes mode's
// hook (`shoal_shm::pool::worker::WORKER_HOOK`): the loader calls each entry
// as a C function before `main`; this one ignores its arguments, and unless
// `SHOAL_WORKER` is set it only reads the environment and returns.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static CLUSTER_HOOK: extern "C" fn() = cluster_hook;

extern "C" fn cluster_hook() {
    // Nothing may unwind out of an `extern "C"` function.
    if std::panic::catch_unwind(take_role).is_err() {
        std::process::exit(EXIT_FAILED);
    }
}

/// Exit status of a cluster worker that could not start or lost its
/// scheduler for good.
const EXIT_FAILED: i32 = 1;

/// If `SHOAL_WORKER` is set, be a cluster worker: serve the scheduler it
/// names, then exit (0 when the scheduler said to, 1 with the reason on
/// stderr otherwise). Returns only when the variable is unset.
pub(crate) fn take_role() {
    let Some(config) = shoal_net::agent::config_from_env() else { return };
    // A worker's logs are shoal's own: to stderr, unless the program set
    // up its own subscriber (it cannot have: this runs before `main`).
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    let code = match config.and_then(shoal_net::agent::run) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("shoal worker {}: {e}", std::process::id());
            EXIT_FAILED
        }
    };
    std::process::exit(code)
}
