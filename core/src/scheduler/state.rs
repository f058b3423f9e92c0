//! The [`Scheduler`]: its data, its queries, and graph submission.
//!
//! The transitions live in [`super::transitions`], the workers, the run
//! queue and placement in [`super::workers`], the records in
//! [`super::record`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::hash::SeededState;
use super::keys::KeyIndex;
use super::queue::RunQueue;
use super::record::{MAX_SLOTS, NewRecord, Priority, Slab};
use super::workers::Workers;
use super::{Action, Dep, Event, NewTask, SchedulerConfig, Submitted, TaskId, TaskState, WorkerId};
use crate::failure::TaskFailure;
use crate::key::Key;

/// Why [`Scheduler::submit`] refused a graph. Nothing of a refused graph is
/// kept: the scheduler is as it was before the call.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// A node depends on a node listed after it.
    #[error(
        "node {node} depends on node {dep}, which does not come before it: \
         list every node after all the nodes it depends on (topological order; \
         a node cannot depend on itself)"
    )]
    NotTopological {
        /// The node's index in the submission.
        node: usize,
        /// The index of the node it depends on.
        dep: usize,
    },
    /// A node depends on a task the scheduler does not know.
    #[error(
        "node {node} depends on task {task:?}, which this scheduler does not know \
         (never submitted here, or already forgotten because nothing held it): \
         keep a future on a task while submitting work that uses it"
    )]
    UnknownTask {
        /// The node's index in the submission.
        node: usize,
        /// The unknown task.
        task: TaskId,
    },
    /// A submission would exceed the scheduler's task limit.
    #[error(
        "submitting {nodes} nodes on top of {live} live tasks exceeds the scheduler's \
         limit of {limit} tasks: submit in smaller batches, and release futures \
         that are no longer needed"
    )]
    TooManyTasks {
        /// Nodes submitted.
        nodes: usize,
        /// Tasks alive before.
        live: usize,
        /// The limit.
        limit: usize,
    },
}

/// The scheduler state machine (see the [module docs](super)).
pub struct Scheduler {
    pub(super) config: SchedulerConfig,
    pub(super) tasks: Slab,
    /// Live tasks by key: pure keys are shared, as in Dask.
    pub(super) keys: KeyIndex,
    pub(super) workers: Workers,
    pub(super) queue: RunQueue,
    /// Submissions so far: the middle part of every task's priority, so
    /// earlier graphs run first.
    submissions: u32,
    /// Tasks that may have become needed while `Released`: the transitions
    /// push here and [`Scheduler::settle_all`] starts them.
    pub(super) wake: Vec<TaskId>,
    /// Tasks that may have stopped being needed: the transitions push here
    /// and [`Scheduler::settle_all`] releases or forgets them.
    pub(super) settle: Vec<TaskId>,
    /// Scratch space of placement, kept to avoid an allocation per task.
    pub(super) placement: Vec<(WorkerId, u64)>,
    /// The state of [`super::Placement::Random`]'s generator (splitmix64).
    pub(super) rng: u64,
    /// Measured run times and network, for weighing transfers.
    pub(super) costs: super::steal::Costs,
    /// Tasks whose run was lost without being known to have started (see
    /// [`Scheduler::is_suspect`]); few, and empty unless workers were lost.
    pub(super) suspects: HashSet<TaskId, SeededState>,
    /// Over the memory limit ([`Event::Pause`]): one run in flight at most.
    pub(super) paused: bool,
    /// Runs asked back ([`super::Action::TakeBack`]) and not answered yet:
    /// task → (the worker asked, the idle worker they are for). Few (at
    /// most the idle threads); pruned lazily (see `steal`).
    pub(super) taking: HashMap<TaskId, (WorkerId, WorkerId), SeededState>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TaskState::*;
        let mut s = f.debug_struct("Scheduler");
        s.field("live_tasks", &self.live_tasks());
        for state in [Released, Waiting, Ready, Processing, Memory, Erred] {
            s.field(&format!("{state:?}"), &self.count(state));
        }
        s.finish_non_exhaustive()
    }
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            tasks: Slab::default(),
            keys: KeyIndex::default(),
            workers: Workers::default(),
            queue: RunQueue::default(),
            submissions: 0,
            wake: Vec::new(),
            settle: Vec::new(),
            placement: Vec::new(),
            costs: Default::default(),
            rng: match config.placement {
                super::Placement::Random { seed } => seed,
                super::Placement::Locality => 0,
            },
            suspects: HashSet::default(),
            paused: false,
            taking: HashMap::default(),
        }
    }

    /// Adds a graph; returns what became of each node, in order.
    ///
    /// `Dep::Node(j)` of node `i` must have `j < i`; `Dep::Task(id)` must
    /// name a live task. A node whose key is alive already (in this graph or
    /// before it) is merged into that task (`new: false`): its inputs are
    /// ignored, and if it is `wanted` the client gets one more reference to
    /// the task — and, if that task is finished already, a `ReportDone` /
    /// `ReportFailed` for it, since the new future would otherwise never
    /// hear about it.
    ///
    /// A new node that no wanted node needs (directly or through others) is
    /// forgotten at once: nothing would ever read its result.
    pub fn submit(&mut self, graph: Vec<NewTask>, out: &mut Vec<Action>) -> Result<Vec<Submitted>, GraphError> {
        self.check_graph(&graph)?;
        self.submissions = self.submissions.wrapping_add(1);
        let generation = self.submissions;
        let order = super::order::order(&graph);

        let mut submitted = Vec::with_capacity(graph.len());
        // Grow once, not by doubling along the way.
        self.keys.reserve(graph.len());
        self.tasks.reserve(graph.len());
        // Pass 1: make the records and their edges. Nothing is forgotten in
        // this pass (references only grow), so every id stays valid.
        for (i, node) in graph.into_iter().enumerate() {
            let NewTask { key, deps, wanted, priority, retries } = node;
            if let Some(id) = self.keys.get(&key, &self.tasks) {
                submitted.push(Submitted { id, new: false });
                if wanted {
                    self.add_future_on_merge(id, out);
                }
                continue;
            }
            let deps: Box<[TaskId]> = deps
                .iter()
                .map(|dep| match *dep {
                    Dep::Node(j) => submitted[j].id,
                    Dep::Task(id) => id,
                })
                .collect();
            let id = self.tasks.alloc(NewRecord {
                key,
                deps,
                priority: Priority { user: priority, generation, order: order[i] },
                client_refs: u32::from(wanted),
                retries: u16::try_from(retries).unwrap_or(u16::MAX),
            });
            self.keys.insert(&key, id);
            for k in 0..self.tasks.at(id).deps.len() {
                let d = self.tasks.at(id).deps[k];
                let dep = self.tasks.at_mut(d);
                dep.dependents.push(id);
                dep.live_dependents += 1;
            }
            submitted.push(Submitted { id, new: true });
        }
        // Pass 2: start what is wanted (which starts what it needs), and
        // forget what nothing needs. `wake` is a stack: pushed last to
        // first, the nodes start (and queue) first to last, so the run
        // queue's batch arrives nearly sorted, which its sort detects.
        for s in submitted.iter().rev().filter(|s| s.new) {
            self.wake.push(s.id);
        }
        for s in submitted.iter().filter(|s| s.new) {
            self.settle.push(s.id);
        }
        // What becomes ready now is sorted once, not heaped one by one.
        self.queue.begin_batch();
        self.settle_all(out);
        Ok(submitted)
    }

    /// A wanted node was merged into the live task `id`: one more client
    /// reference, and the news if the task is finished already (the new
    /// future would not hear of it otherwise).
    fn add_future_on_merge(&mut self, id: TaskId, out: &mut Vec<Action>) {
        self.client_retained(id);
        let r = self.tasks.at(id);
        match r.state() {
            TaskState::Memory => out.push(Action::ReportDone { task: id }),
            TaskState::Erred => {
                if let Some(failure) = self.tasks.failure(id) {
                    out.push(Action::ReportFailed { task: id, failure: failure.clone() });
                }
            }
            _ => {}
        }
    }

    /// Validates a graph before anything of it is applied.
    fn check_graph(&self, graph: &[NewTask]) -> Result<(), GraphError> {
        let limit = MAX_SLOTS.min(super::order::MAX_NODES);
        let live = self.tasks.live();
        if graph.len() > limit.saturating_sub(live) {
            return Err(GraphError::TooManyTasks { nodes: graph.len(), live, limit });
        }
        for (node, n) in graph.iter().enumerate() {
            for dep in &n.deps {
                match *dep {
                    Dep::Node(j) if j >= node => {
                        return Err(GraphError::NotTopological { node, dep: j });
                    }
                    Dep::Task(task) if !self.tasks.is_live(task) => {
                        return Err(GraphError::UnknownTask { node, task });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Applies one event.
    pub fn handle(&mut self, event: Event, out: &mut Vec<Action>) {
        // Measurements change no task: they weigh the next dispatch (one
        // per result in the cluster, so kept cheap).
        match event {
            Event::RunTime { task, micros } => return self.run_time(task, micros),
            Event::Network { bandwidth, latency_micros } => return self.network(bandwidth, latency_micros),
            _ => {}
        }
        match event {
            Event::WorkerJoined { worker, nthreads } => self.worker_joined(worker, nthreads),
            Event::WorkerLost { worker } => self.worker_lost(worker, None, out),
            Event::ProcessLost { worker, heir } => self.worker_lost(worker, Some(heir), out),
            Event::TaskFinished { task, worker, nbytes } => self.task_finished(task, worker, nbytes, out),
            Event::TaskFailed { task, worker, failure } => self.task_failed(task, worker, failure, out),
            Event::ClientReleased { task } => self.client_released(task),
            Event::ClientRetained { task } => self.client_retained(task),
            Event::Cancel { task } => self.cancel(task, out),
            Event::TaskStolen { task, from, to } => self.task_stolen(task, from, to, out),
            Event::TaskMoved { task, from, to } => self.task_moved(task, from, to, out),
            Event::Saturation { extra_slots_per_thread } => self.set_saturation(extra_slots_per_thread),
            Event::TaskStarted { task, worker } => self.task_started(task, worker),
            Event::Pause { paused } => self.paused = paused,
            Event::RunTime { .. } | Event::Network { .. } => {}
        }
        self.settle_all(out);
        // The last task forgotten: the tables' memory goes back (a cheap
        // test when tasks are alive).
        if self.tasks.live() == 0 && self.tasks.give_back() {
            self.keys.give_back();
            self.queue.give_back();
            self.suspects = Default::default();
        }
    }

    /// The runs sent to `worker` that the scheduler waits for (running, or
    /// queued there), oldest first; empty for an unknown worker.
    pub fn processing_of(&self, worker: WorkerId) -> &[TaskId] {
        self.workers.map.get(&worker).map_or(&[], |w| w.processing.as_slice())
    }

    /// Whether runs start one at a time ([`Event::Pause`]).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether a new run may start now: always, unless paused with a run
    /// already in flight.
    pub(super) fn may_start(&self) -> bool {
        !self.paused || self.tasks.count(TaskState::Processing) == 0
    }

    /// Slots in the task table (live or free): what it holds on to.
    pub fn table_slots(&self) -> usize {
        self.tasks.slots()
    }

    /// The task's state; `None` for a stale (forgotten) or unknown id.
    pub fn state(&self, task: TaskId) -> Option<TaskState> {
        self.tasks.get(task).map(|r| r.state())
    }

    /// The task's key (`None` once forgotten).
    pub fn key(&self, task: TaskId) -> Option<Key> {
        self.tasks.get(task).map(|r| r.key())
    }

    /// Why the task failed, if it is `Erred`.
    pub fn failure(&self, task: TaskId) -> Option<Arc<TaskFailure>> {
        self.tasks.get(task).and_then(|_| self.tasks.failure(task).cloned())
    }

    /// The workers holding the task's result (empty unless `Memory`).
    pub fn holders(&self, task: TaskId) -> &[WorkerId] {
        match self.tasks.get(task) {
            Some(r) if r.state() == TaskState::Memory => std::slice::from_ref(&r.worker),
            _ => &[],
        }
    }

    /// The worker running the task, if it is `Processing`.
    pub fn processing_on(&self, task: TaskId) -> Option<WorkerId> {
        self.tasks.get(task).filter(|r| r.state() == TaskState::Processing).map(|r| r.worker)
    }

    /// The task's key, and whether it is processing on `worker` (one
    /// lookup for both: the driver asks them of every run that ends).
    pub fn key_if_processing_on(&self, task: TaskId, worker: WorkerId) -> Option<(Key, bool)> {
        self.tasks.get(task).map(|r| (r.key(), r.state() == TaskState::Processing && r.worker == worker))
    }

    /// Runs sent to the worker and not answered (running, queued on it, on
    /// their way back, or abandoned and not answered yet); `None` for an
    /// unknown worker.
    pub fn load(&self, worker: WorkerId) -> Option<usize> {
        self.workers.load(worker)
    }

    /// Whether a run of the task was lost with its worker without being
    /// known to have started ([`Event::TaskStarted`]): nothing was counted
    /// against it, so the driver must learn when its next run starts
    /// *before* it runs (the worker says so first), so that the next loss
    /// is judged exactly — counted if it started, not if it was only
    /// queued. A driver whose workers are never lost never sees one.
    /// Cleared by a successful run.
    pub fn is_suspect(&self, task: TaskId) -> bool {
        !self.suspects.is_empty() && self.tasks.get(task).is_some() && self.suspects.contains(&task)
    }

    /// The task's inputs, one entry per edge, in the order submitted.
    pub fn deps(&self, task: TaskId) -> &[TaskId] {
        self.tasks.get(task).map_or(&[], |r| &r.deps)
    }

    /// The live task with this key.
    pub fn lookup(&self, key: &Key) -> Option<TaskId> {
        self.keys.get(key, &self.tasks)
    }

    /// Tasks not forgotten.
    pub fn live_tasks(&self) -> usize {
        self.tasks.live()
    }

    /// Live tasks in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.tasks.count(state)
    }
}
