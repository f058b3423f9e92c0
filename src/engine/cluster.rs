//! The cluster engine: a thin client of a scheduler server
//! (`Client::connect("tcp://host:8786")`). The scheduler and its driver
//! live in the `shoal scheduler` process; the tasks run, and their results
//! stay, in workers started from this same binary
//! (`SHOAL_WORKER=tcp://… ./app`).
//! This engine only forwards the client API's calls over the link of
//! `shoal_net::client` and waits on its mirror of the futures' tasks. What
//! the mirror cannot know is asked of the scheduler: its task events
//! (status, reports, a client's own dashboard: `Monitor`) and where tasks
//! it holds no future on stand (progress, `Future::status`: `States`).
//!
//! It also holds the worker role of this binary: the `.init_array` hook
//! [`CLUSTER_HOOK`] (and `shoal::init()`) turn a process started with
//! `SHOAL_WORKER` into a cluster worker that never returns to `main`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::driver::events::Snapshot;
use shoal_core::driver::{GraphNode, Status};
use shoal_core::object::Obj;
use shoal_core::scheduler::{TaskId, TaskState, WorkerId};
use shoal_dash::{StoreInfo, WorkerInfo};
use shoal_net::client::{ClientError, Remote};
use shoal_net::monitor::Monitored;

use super::Engine;
use crate::error::{Error, Result};

/// How long the workers of a snapshot stand for the cluster's: less than
/// a dashboard's sampling period, so each frame asks once.
const FRESH_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// A client of a scheduler server.
pub(crate) struct ClusterEngine {
    remote: Remote,
    /// The workers and store of the last `snapshot`, and when it was
    /// taken (a monitor asks for them right after it: one round trip
    /// serves the three).
    last: Mutex<Option<(Instant, Vec<WorkerInfo>, StoreInfo)>>,
}

impl ClusterEngine {
    pub(crate) fn new(remote: Remote) -> Arc<ClusterEngine> {
        Arc::new(ClusterEngine { remote, last: Mutex::new(None) })
    }

    /// The scheduler's events and workers (one round trip); the workers and
    /// store are kept for the monitor's next questions.
    fn monitor(&self, since: u64, max: usize) -> Option<Monitored> {
        match self.remote.monitor(since, max) {
            Ok(m) => {
                *shoal_core::driver::wait::lock(&self.last) = Some((Instant::now(), m.workers.clone(), m.store));
                Some(m)
            }
            Err(e) => {
                tracing::debug!("could not ask the scheduler for its task events: {e}");
                None
            }
        }
    }

    /// The workers and store: those of the last snapshot if it was taken
    /// a moment ago ([`FRESH_FOR`]), else asked for now.
    fn last(&self) -> Option<(Vec<WorkerInfo>, StoreInfo)> {
        let cached = shoal_core::driver::wait::lock(&self.last)
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, workers, store)| (workers.clone(), *store));
        cached.or_else(|| self.monitor(u64::MAX, 0).map(|m| (m.workers, m.store)))
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

    /// Finished or failed as the mirror knows; else asked of the scheduler,
    /// which alone knows whether a run started (if it cannot be asked: not
    /// started).
    fn state(&self, id: TaskId) -> Option<TaskState> {
        match self.remote.status(id) {
            Status::Finished => Some(TaskState::Memory),
            Status::Failed(_) => Some(TaskState::Erred),
            Status::Pending => match self.remote.states(&[id]) {
                Ok(states) => states.first().copied().flatten(),
                Err(_) => Some(TaskState::Waiting),
            },
        }
    }

    /// Asked of the scheduler (the mirror knows only the tasks this client
    /// holds futures on, not the inner tasks of a computed graph); if it
    /// cannot be asked, what the mirror knows.
    fn count_finished(&self, ids: &[TaskId]) -> usize {
        self.remote
            .count_finished(ids)
            .unwrap_or_else(|_| ids.iter().filter(|&&id| self.remote.status(id).is_finished()).count())
    }

    /// The task events live in the scheduler process: asked of it (one
    /// round trip), on the scheduler's clock, for every client's tasks. An
    /// empty snapshot if the scheduler cannot be reached.
    fn snapshot(&self, since: u64, max: usize) -> Snapshot {
        self.monitor(since, max).map(|m| m.snapshot).unwrap_or_default()
    }

    /// The cluster's workers as the scheduler knows them.
    fn workers(&self) -> Vec<(WorkerId, u32, u32)> {
        self.last()
            .map_or_else(Vec::new, |(workers, _)| workers.iter().map(|w| (WorkerId(w.id), w.pid, w.nthreads)).collect())
    }

    fn monitor_workers(&self) -> Option<Vec<WorkerInfo>> {
        Some(self.last().map(|(workers, _)| workers).unwrap_or_default())
    }

    fn monitor_store(&self) -> Option<StoreInfo> {
        self.last().map(|(_, store)| store)
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
