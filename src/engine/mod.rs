//! Engines: what runs a submitted graph. One per mode; the client API talks
//! to all of them through [`Engine`].
//!
//! Every engine is the same [`Driver`] (the scheduler state machine with task
//! specs and waiting clients, in `shoal-core`) with a [`Backend`] that says
//! where tasks run. An engine here only picks the backend and carries out
//! what each driver pass leaves to do ([`Mode`]); the API calls are the same
//! for every mode (the blanket `impl Engine for M: Mode` below).

pub(crate) mod cluster;
pub(crate) mod processes;
pub(crate) mod threads;

use std::sync::Arc;
use std::time::Instant;

use shoal_core::Key;
use shoal_core::TaskFailure;
pub(crate) use shoal_core::driver::Status;
use shoal_core::driver::events::Snapshot;
use shoal_core::driver::{Backend, Driver, GraphNode};
use shoal_core::object::Obj;
use shoal_core::scheduler::{Event, TaskId, TaskState, WorkerId};

use crate::error::Result;

/// What the client API needs from a mode.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Submit a graph (topologically ordered); one id per node. The ids of
    /// wanted nodes each carry one client reference, to be given back with
    /// [`release`](Engine::release).
    fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>>;
    /// One client reference to the task is gone.
    fn release(&self, id: TaskId);
    /// One more client reference to the task (a future was cloned).
    fn retain(&self, id: TaskId);
    /// Cancel the task and what depends on it.
    fn cancel(&self, id: TaskId);
    fn status(&self, id: TaskId) -> Status;
    /// The task's key (`None` once forgotten).
    fn key(&self, id: TaskId) -> Option<Key>;
    /// Block until the task finished or the deadline passed; its status.
    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status>;
    /// Block until one of the tasks finished or the deadline passed; the
    /// indices of all finished ones.
    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>>;
    /// The result of a finished task.
    fn result(&self, id: TaskId) -> Result<Obj>;
    /// The task's scheduler state (`None` once forgotten).
    fn state(&self, id: TaskId) -> Option<TaskState>;
    /// How many of the tasks are finished (a forgotten one counts).
    fn count_finished(&self, ids: &[TaskId]) -> usize;
    /// What a monitor reads (see [`Driver::snapshot`]).
    fn snapshot(&self, since: u64, max: usize) -> Snapshot;
    /// The workers: id, process id, threads.
    fn workers(&self) -> Vec<(WorkerId, u32, u32)>;
    /// Block until `ids[from..]` finished in order, one failed, or the
    /// deadline passed: how many of `ids` are finished from the start, and
    /// the failure that stopped the scan, if any.
    fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>)>;
    /// The results of finished tasks, in order.
    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>>;
    /// Worker threads (for display).
    fn nthreads(&self) -> usize;
    /// Process ids of the worker processes (none unless the mode has them).
    fn worker_pids(&self) -> Vec<u32>;
    /// The result store's memory and spill figures (none unless the mode
    /// has a store with a memory limit).
    fn store_stats(&self) -> Option<shoal_shm::store::StoreStats>;
    /// Runs sent and moved between workers (none unless the mode moves
    /// runs between worker processes).
    fn steal_stats(&self) -> Option<crate::StealStats> {
        None
    }
    /// Stop the workers; later calls fail with [`Error::Closed`](crate::Error::Closed).
    fn shutdown(&self);
    /// The workers as a monitor shows them, when the mode knows more than
    /// their process ids on this machine (the cluster: from its scheduler).
    fn monitor_workers(&self) -> Option<Vec<shoal_dash::WorkerInfo>> {
        None
    }
    /// The store as a monitor shows it, when it is not this machine's
    /// (the cluster: the results its scheduler holds).
    fn monitor_store(&self) -> Option<shoal_dash::StoreInfo> {
        None
    }
}

/// A mode: a driver with its backend, and what is particular to the mode.
pub(crate) trait Mode: Send + Sync + 'static {
    type Backend: Backend;

    fn driver(&self) -> &Driver<Self::Backend>;
    /// Carries out what a driver pass left to do (on a client thread, after
    /// unlocking).
    fn finish(&self, fx: <Self::Backend as Backend>::Effects);
    /// Readies a graph before it is submitted (outside the lock).
    fn prepare(&self, nodes: &mut [GraphNode]) -> Result<()> {
        let _ = nodes;
        Ok(())
    }
    /// The results of finished tasks, in order.
    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>>;
    fn nthreads(&self) -> usize;
    /// The workers: id, process id, threads (for monitoring).
    fn workers(&self) -> Vec<(WorkerId, u32, u32)>;
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }
    fn store_stats(&self) -> Option<shoal_shm::store::StoreStats> {
        None
    }
    fn steal_stats(&self) -> Option<crate::StealStats> {
        None
    }
    fn shutdown(&self);
}

impl<M: Mode> Engine for M {
    fn submit(&self, mut nodes: Vec<GraphNode>) -> Result<Vec<TaskId>> {
        self.prepare(&mut nodes)?;
        let (ids, fx) = self.driver().submit(nodes)?;
        self.finish(fx);
        Ok(ids)
    }

    fn release(&self, id: TaskId) {
        self.finish(self.driver().handle(Event::ClientReleased { task: id }));
    }

    fn retain(&self, id: TaskId) {
        self.finish(self.driver().handle(Event::ClientRetained { task: id }));
    }

    fn cancel(&self, id: TaskId) {
        self.finish(self.driver().handle(Event::Cancel { task: id }));
    }

    fn status(&self, id: TaskId) -> Status {
        self.driver().status(id)
    }

    fn key(&self, id: TaskId) -> Option<Key> {
        self.driver().key(id)
    }

    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status> {
        Ok(self.driver().wait(id, deadline)?)
    }

    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>> {
        Ok(self.driver().wait_any(ids, deadline)?)
    }

    fn state(&self, id: TaskId) -> Option<TaskState> {
        self.driver().state(id)
    }

    fn count_finished(&self, ids: &[TaskId]) -> usize {
        self.driver().count_finished(ids)
    }

    fn snapshot(&self, since: u64, max: usize) -> Snapshot {
        let ids: Vec<WorkerId> = Mode::workers(self).iter().map(|w| w.0).collect();
        self.driver().snapshot(since, max, &ids)
    }

    fn result(&self, id: TaskId) -> Result<Obj> {
        let mut objs = Mode::results(self, &[id])?;
        objs.pop().ok_or(crate::Error::Closed)
    }

    fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>)> {
        Ok(self.driver().wait_prefix(ids, from, deadline)?)
    }

    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        Mode::results(self, ids)
    }

    fn nthreads(&self) -> usize {
        Mode::nthreads(self)
    }

    fn worker_pids(&self) -> Vec<u32> {
        Mode::worker_pids(self)
    }

    fn workers(&self) -> Vec<(WorkerId, u32, u32)> {
        Mode::workers(self)
    }

    fn store_stats(&self) -> Option<shoal_shm::store::StoreStats> {
        Mode::store_stats(self)
    }

    fn steal_stats(&self) -> Option<crate::StealStats> {
        Mode::steal_stats(self)
    }

    fn shutdown(&self) {
        Mode::shutdown(self)
    }
}
