//! The driver: one scheduler state machine and what every mode keeps beside
//! it, under one lock — the same code for the threads and the processes
//! modes (and, next, the cluster's scheduler).
//!
//! # What it owns, and what it leaves to its mode
//!
//! The driver keeps the [`Scheduler`], one [`Spec`] per live task (the
//! task's arguments, and whatever the mode keeps of its result), the client
//! threads waiting for tasks ([`wait`]), the task events every mode feeds
//! ([`events`]: what ran where and when, for progress, status, the
//! dashboard and reports), and whether the mode is shut down or broken. It does everything that does not depend on where tasks run:
//! submission, client references, cancel, status, waiting, and turning the
//! scheduler's actions into work. Where tasks run is a [`Backend`]'s
//! business: it decides what a `Run` becomes (a job on a local pool, a
//! message to a worker process), what happens to a released result, and
//! what a task's stored data is.
//!
//! # Protocol
//!
//! Every call locks the driver once, feeds the scheduler, and applies its
//! actions with the backend, which records what is left to do in its
//! [`Backend::Effects`]; the caller carries those out *after* unlocking
//! (queue jobs, send messages, drop results, wake clients). So the lock is
//! never held while task code runs, a message is sent, or a result is
//! freed.
//!
//! ```text
//! client thread / pool thread / connection reader
//!   lock ─► scheduler.handle(event) ─► actions ─► Backend::{run, release, forget}
//!        ─► effects ─► unlock ─► the mode carries the effects out
//! ```
//!
//! # Invariants
//!
//! - A spec exists exactly for the live ids the scheduler gave out; its
//!   generation is the id's, so a stale id finds nothing.
//! - Client threads spin (briefly) only on the driver's news counter and
//!   sleep only on its condition variable, and a report wakes them only if
//!   one of them waits for that task ([`wait::Waiters::reported`]).
//! - Nothing here knows a socket, a process or a `Client`.

pub mod events;
pub mod pacing;
pub mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::Key;
use crate::TaskFailure;
use crate::object::{Bounded, Obj, Object, describe};
use crate::scheduler::{Action, Dep, Event, GraphError, NewTask, Scheduler, TaskId, TaskState, WorkerId};

use self::events::{Events, Outcome, RunRecord, RunTimes, Snapshot, StateCounts, TaskCounts};
use self::wait::{Interest, Waitable, Waiters, block_until, block_until_with, lock};

/// Why a driver call could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The mode was shut down.
    #[error("the shoal client was shut down; make a new Client to run more work")]
    Closed,
    /// No worker can run anything any more; why.
    #[error("{0}")]
    Broken(String),
    /// The submitted graph was malformed.
    #[error("invalid task graph: {0}")]
    Graph(#[from] GraphError),
    /// The task failed (or was cancelled).
    #[error("{0}")]
    Task(Arc<TaskFailure>),
}

/// One task of a graph being submitted.
pub struct GraphNode {
    /// The key; its `func` is the task's index in the registry.
    pub key: Key,
    /// One per parameter.
    pub args: Vec<NodeArg>,
    /// The client holds a future on it.
    pub wanted: bool,
    /// User priority: higher runs earlier.
    pub priority: i32,
    /// Retries of a failing run.
    pub retries: u32,
    /// The node's index in the `map` that submitted it (`None` for any
    /// other submission): its failures name it (see [`Spec::item`]).
    pub item: Option<u32>,
}

/// One argument of a [`GraphNode`].
pub enum NodeArg {
    /// A literal value.
    Value(Obj),
    /// Another task's result.
    Dep(Dep),
    /// A `Vec` parameter made of several dependencies' results (assembled
    /// by the task's glue where it runs).
    List(Vec<Dep>),
}

/// A stored argument of a task: a value, or the id of a task whose result
/// it takes (one, or a list assembled into a `Vec`).
pub enum SpecArg {
    /// A literal value.
    Value(Obj),
    /// Another task's result.
    Dep(TaskId),
    /// Several tasks' results, as one `Vec` parameter.
    List(Box<[TaskId]>),
}

/// Where a task stands, as its futures see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not finished yet.
    Pending,
    /// The result is in memory.
    Finished,
    /// It failed (or was cancelled); why.
    Failed(Arc<TaskFailure>),
}

impl Status {
    /// Finished one way or the other.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Status::Pending)
    }
}

/// What the driver keeps per live task besides the scheduler's record.
pub struct Spec<T> {
    /// The generation of the id it belongs to.
    pub generation: u32,
    /// Whether the client cancelled the task after it finished, and the
    /// task's `map` index, packed in one word so a spec stays as small as
    /// it was before it carried the index (see [`Spec::cancelled`],
    /// [`Spec::item`]).
    flags: u32,
    /// The mode's data: arguments, result.
    pub task: T,
}

/// The bit of [`Spec::flags`] that says the task was cancelled after it
/// finished; the bits below it hold the `map` index plus one (0: none).
const CANCELLED: u32 = 1 << 31;

impl<T> Spec<T> {
    fn new(generation: u32, item: Option<u32>, task: T) -> Spec<T> {
        // An index that does not fit below the flag bit is not kept: a map
        // of two billion items cannot be held (a live task costs far more
        // than a byte), so this never drops a real one.
        let flags = item.and_then(|i| i.checked_add(1)).filter(|&i| i < CANCELLED).unwrap_or(0);
        Spec { generation, flags, task }
    }

    /// The client cancelled the task after it finished (its futures then
    /// report "cancelled", as Dask's do).
    pub fn cancelled(&self) -> bool {
        self.flags & CANCELLED != 0
    }

    /// The task's index in the `map` that submitted it, if one did (for a
    /// pure call merged into a live task, the first submission's).
    pub fn item(&self) -> Option<u32> {
        (self.flags & !CANCELLED).checked_sub(1)
    }
}

/// What a pass leaves to do after unlocking; the driver only asks for
/// client threads to be woken.
pub trait Effects: Default {
    /// Wake the client threads sleeping on the driver.
    fn wake_clients(&mut self);
}

/// Where tasks run: what the scheduler's actions become in one mode.
///
/// The functions that carry out actions take the whole [`State`]: building
/// a run needs the task's spec, its inputs' specs and the backend's own
/// state (a store, worker connections) at once.
pub trait Backend: Sized + Send + 'static {
    /// What the mode keeps per task (arguments, result).
    type Task: Send;
    /// What a pass leaves to do after unlocking.
    type Effects: Effects;

    /// The data of a newly submitted task.
    fn new_task(&mut self, func: u32, args: Box<[SpecArg]>) -> Self::Task;
    /// A pure call was merged into the live task `task` and brings its
    /// arguments again (a mode that drops arguments once a result exists
    /// takes them back here, in case the result was released).
    fn merged(task: &mut Self::Task, args: Box<[SpecArg]>) {
        let _ = (task, args);
    }
    /// `Action::Run`: all inputs of `task` are in memory.
    fn run(st: &mut State<Self>, task: TaskId, worker: WorkerId, fx: &mut Self::Effects);
    /// `Action::Release`: `worker` may drop its copy of `task`'s result.
    fn release(st: &mut State<Self>, task: TaskId, worker: WorkerId, fx: &mut Self::Effects);
    /// `Action::Recall`: take back the run of `task` sent to `worker` if it
    /// has not started (only with `SchedulerConfig::recall`, which a backend
    /// that overrides this sets; the default, for a pool that cannot take
    /// runs back, does nothing).
    fn recall(st: &mut State<Self>, task: TaskId, worker: WorkerId, fx: &mut Self::Effects) {
        let _ = (st, task, worker, fx);
    }
    /// `Action::TakeBack`: ask `from` for the run of `task` if it has not
    /// started, for the idle worker `to`; answer `TaskStolen` if it gives
    /// it back (only with `SchedulerConfig::take_back`, which a backend that
    /// overrides this sets; the default does nothing).
    fn take_back(st: &mut State<Self>, task: TaskId, from: WorkerId, to: WorkerId, fx: &mut Self::Effects) {
        let _ = (st, task, from, to, fx);
    }
    /// `Action::Forget`: the spec is gone; drop what it holds (after
    /// unlocking, through `fx`).
    fn forget(&mut self, spec: Spec<Self::Task>, fx: &mut Self::Effects);
    /// `Action::ReportDone` / `ReportFailed`: the task's futures can see
    /// its end now ([`State::status`] says how it ended). A mode whose
    /// clients wait on this driver's condition variable needs nothing more
    /// (they are woken); one whose clients are elsewhere (the cluster's
    /// scheduler) sends them the news.
    fn report(st: &mut State<Self>, task: TaskId, fx: &mut Self::Effects) {
        let _ = (st, task, fx);
    }
}

/// The driver's state under its lock.
pub struct State<B: Backend> {
    /// The scheduler state machine.
    pub sched: Scheduler,
    /// What to run for each live task, by `TaskId::index`.
    specs: Vec<Option<Spec<B::Task>>>,
    /// What blocked client threads wait for.
    pub waiters: Waiters,
    /// Shut down: every call fails with [`DriverError::Closed`].
    pub closed: bool,
    /// Why no worker can run anything any more.
    pub broken: Option<String>,
    /// Reused buffer for the scheduler's actions.
    actions: Vec<Action>,
    /// What ran where and when ([`events`]).
    pub events: Events,
    /// The mode's own state.
    pub backend: B,
}

impl<B: Backend> Waitable for State<B> {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn stopped(&self) -> Option<DriverError> {
        if self.closed {
            return Some(DriverError::Closed);
        }
        self.broken.as_ref().map(|reason| DriverError::Broken(reason.clone()))
    }
}

impl<B: Backend> State<B> {
    /// The spec of a live task (`None` for a stale id).
    pub fn spec(&self, id: TaskId) -> Option<&Spec<B::Task>> {
        self.specs.get(id.index as usize)?.as_ref().filter(|s| s.generation == id.generation)
    }

    /// The spec of a live task, to change it.
    pub fn spec_mut(&mut self, id: TaskId) -> Option<&mut Spec<B::Task>> {
        self.specs.get_mut(id.index as usize)?.as_mut().filter(|s| s.generation == id.generation)
    }

    /// Every live spec, to change them (a lost worker's results).
    pub fn specs_mut(&mut self) -> impl Iterator<Item = &mut Spec<B::Task>> {
        self.specs.iter_mut().flatten()
    }

    /// Every spec, taken out (at shutdown).
    pub fn take_specs(&mut self) -> Vec<Option<Spec<B::Task>>> {
        std::mem::take(&mut self.specs)
    }

    /// Feed one event to the scheduler and carry out its actions.
    pub fn handle(&mut self, event: Event, fx: &mut B::Effects) {
        // Logged before the scheduler takes it (a failure is moved in); a
        // disabled level costs one cached check per event.
        let failed = match &event {
            Event::TaskFinished { task, worker, nbytes } => {
                tracing::debug!(target: "shoal::task", key = %self.key_of(*task), worker = worker.0, nbytes, "finished");
                None
            }
            Event::TaskFailed { task, worker, failure } => {
                if tracing::enabled!(target: "shoal::task", tracing::Level::DEBUG) {
                    tracing::debug!(target: "shoal::task", key = %self.key_of(*task), worker = worker.0, %failure, "failed");
                }
                Some(*task)
            }
            _ => None,
        };
        // A run's failure names the task's `map` index from the start, so
        // every dependency failure the scheduler makes of it names it too.
        let event = match event {
            Event::TaskFailed { task, worker, failure } => {
                let item = self.spec(task).and_then(Spec::item);
                Event::TaskFailed { task, worker, failure: failure.with_item(item) }
            }
            other => other,
        };
        self.events.event();
        let mut actions = std::mem::take(&mut self.actions);
        self.sched.handle(event, &mut actions);
        if let Some(task) = failed
            && matches!(self.sched.state(task), Some(TaskState::Waiting | TaskState::Ready | TaskState::Processing))
        {
            tracing::info!(target: "shoal::task", key = %self.key_of(task), "retried after a failure");
        }
        self.apply(&mut actions, fx);
        self.actions = actions;
        // The scheduler gave its tables back: so do the specs.
        if self.sched.table_slots() == 0 && self.specs.capacity() > 0 {
            self.specs = Vec::new();
        }
    }

    /// A task's key for logs.
    fn key_of(&self, task: TaskId) -> Key {
        self.sched.key(task).unwrap_or(Key { func: u32::MAX, token: [0; 2] })
    }

    /// Carry out the scheduler's actions (draining `actions`).
    pub fn apply(&mut self, actions: &mut Vec<Action>, fx: &mut B::Effects) {
        for action in actions.drain(..) {
            match action {
                Action::Run { task, worker } => {
                    tracing::debug!(target: "shoal::task", key = %self.key_of(task), worker = worker.0, "run");
                    self.events.started();
                    B::run(self, task, worker, fx)
                }
                Action::Release { task, worker } => B::release(self, task, worker, fx),
                Action::Recall { task, worker } => B::recall(self, task, worker, fx),
                Action::TakeBack { task, from, to } => B::take_back(self, task, from, to, fx),
                Action::ReportDone { task } => {
                    if self.waiters.reported(task, false) {
                        fx.wake_clients();
                    }
                    B::report(self, task, fx);
                }
                Action::ReportFailed { task, .. } => {
                    // The failure itself stays in the scheduler's record,
                    // except for a finished task being cancelled.
                    if self.sched.state(task) == Some(TaskState::Memory)
                        && let Some(spec) = self.spec_mut(task)
                    {
                        spec.flags |= CANCELLED;
                    }
                    if self.waiters.reported(task, true) {
                        fx.wake_clients();
                    }
                    B::report(self, task, fx);
                }
                Action::Forget { task } => {
                    if self.spec(task).is_some()
                        && let Some(spec) = self.specs[task.index as usize].take()
                    {
                        self.backend.forget(spec, fx);
                    }
                }
            }
        }
    }

    /// A run ended: record it ([`events`]) and feed its event
    /// (`TaskFinished` or `TaskFailed`) to the scheduler. `times` were
    /// taken by the mode outside the lock. Any other event is only fed.
    pub fn handle_run(&mut self, event: Event, times: RunTimes, fx: &mut B::Effects) {
        let (task, worker, nbytes, failed) = match &event {
            Event::TaskFinished { task, worker, nbytes } => (*task, *worker, *nbytes, false),
            Event::TaskFailed { task, worker, .. } => (*task, *worker, 0, true),
            _ => return self.handle(event, fx),
        };
        // Taken before the pass: the task may be forgotten by it.
        let known = self.sched.key_if_processing_on(task, worker);
        self.handle(event, fx);
        let Some((key, waited)) = known else { return };
        let outcome = match (waited, failed) {
            (false, _) => Outcome::Late,
            (true, false) => Outcome::Done,
            (true, true) => Outcome::Failed,
        };
        let record = RunRecord {
            key,
            worker,
            thread: times.thread,
            start_ns: self.events.since_start(times.start_ns),
            stop_ns: self.events.since_start(times.stop_ns),
            nbytes,
            outcome,
        };
        self.events.record(record);
    }

    /// Live tasks by state, in all and per task name (a scan of every live
    /// task: for status calls and monitoring, not the hot path).
    pub fn task_counts(&self) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for (index, spec) in self.specs.iter().enumerate() {
            let Some(spec) = spec else { continue };
            let id = TaskId { index: index as u32, generation: spec.generation };
            let (Some(state), Some(key)) = (self.sched.state(id), self.sched.key(id)) else { continue };
            counts.all.add(state);
            let func = key.func as usize;
            if counts.per_func.len() <= func {
                counts.per_func.resize(func + 1, StateCounts::default());
            }
            counts.per_func[func].add(state);
        }
        counts
    }

    /// Where the task stands, as its futures see it.
    pub fn status(&self, id: TaskId) -> Status {
        match self.sched.state(id) {
            Some(TaskState::Memory) => match self.spec(id) {
                Some(spec) if spec.cancelled() => Status::Failed(Arc::new(TaskFailure::Cancelled {
                    key: self.sched.key(id).unwrap_or(Key { func: u32::MAX, token: [0; 2] }),
                })),
                _ => Status::Finished,
            },
            Some(TaskState::Erred) => match self.sched.failure(id) {
                Some(failure) => Status::Failed(self.labelled(id, failure)),
                None => Status::Pending,
            },
            _ => Status::Pending,
        }
    }

    /// `failure` (the scheduler's, of task `id`) with the `map` indices it
    /// lacks: the task's own (the scheduler makes dependency failures and
    /// `KilledWorker` without one), and its root's if that is missing (a
    /// `KilledWorker` root). A run's failure had its index from the start
    /// ([`State::handle`]). The root is found by its key and accepted only
    /// if its record holds this very failure, so an index is never taken
    /// from another task. Unchanged (no allocation) when nothing is missing.
    fn labelled(&self, id: TaskId, failure: Arc<TaskFailure>) -> Arc<TaskFailure> {
        let own = self.spec(id).and_then(Spec::item).filter(|_| failure.item().is_none());
        let root = match &*failure {
            TaskFailure::DependencyFailed { cause, .. } if cause.item().is_none() => self
                .sched
                .lookup(&cause.key())
                .filter(|&r| self.sched.failure(r).is_some_and(|f| Arc::ptr_eq(&f, cause)))
                .and_then(|r| self.spec(r)?.item()),
            _ => None,
        };
        if own.is_none() && root.is_none() {
            return failure;
        }
        let mut labelled = (*failure).clone();
        if let (Some(root), TaskFailure::DependencyFailed { cause, .. }) = (root, &mut labelled) {
            *cause = Arc::new((**cause).clone().with_item(Some(root)));
        }
        Arc::new(labelled.with_item(own))
    }

    /// The spec of a task whose result the client asks for: its failure if
    /// it failed, [`DriverError::Closed`] if it is not finished (a client
    /// asks only after waiting, so only a shutdown gets here).
    pub fn finished(&self, id: TaskId) -> Result<&Spec<B::Task>, DriverError> {
        match self.status(id) {
            Status::Failed(f) => Err(DriverError::Task(f)),
            Status::Finished => self.spec(id).ok_or(DriverError::Closed),
            Status::Pending => Err(DriverError::Closed),
        }
    }

    /// Submits a graph (topologically ordered): one id per node.
    fn submit(&mut self, nodes: Vec<GraphNode>, fx: &mut B::Effects) -> Result<Vec<TaskId>, DriverError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        let tasks = new_tasks(&nodes);
        let mut actions = std::mem::take(&mut self.actions);
        let submitted = match self.sched.submit(tasks, &mut actions) {
            Ok(s) => s,
            Err(e) => {
                self.actions = actions;
                return Err(e.into());
            }
        };
        let ids: Vec<TaskId> = submitted.iter().map(|s| s.id).collect();
        self.events.submitted(submitted.iter().filter(|s| s.new).count() as u64);
        for (node, s) in nodes.into_iter().zip(&submitted) {
            if !s.new {
                if let Some(spec) = self.spec_mut(s.id) {
                    B::merged(&mut spec.task, spec_args(node.args, &ids));
                }
                continue;
            }
            let task = self.backend.new_task(node.key.func, spec_args(node.args, &ids));
            let index = s.id.index as usize;
            if self.specs.len() <= index {
                self.specs.resize_with(index + 1, || None);
            }
            self.specs[index] = Some(Spec::new(s.id.generation, node.item, task));
        }
        self.apply(&mut actions, fx);
        self.actions = actions;
        Ok(ids)
    }
}

/// The driver: its state under one lock, and the condition variable client
/// threads wait on.
pub struct Driver<B: Backend> {
    state: Mutex<State<B>>,
    /// Signalled when a task some client thread waits for finishes.
    changed: Condvar,
    /// The waiters' news counter, watched by spinning clients without the
    /// lock ([`Waiters::news`]).
    news: Arc<AtomicU64>,
}

impl<B: Backend> Driver<B> {
    /// A driver around `sched` and the mode's `backend`.
    pub fn new(sched: Scheduler, backend: B) -> Driver<B> {
        let waiters = Waiters::default();
        Driver {
            news: waiters.news(),
            state: Mutex::new(State {
                sched,
                specs: Vec::new(),
                waiters,
                closed: false,
                broken: None,
                actions: Vec::new(),
                events: Events::new(),
                backend,
            }),
            changed: Condvar::new(),
        }
    }

    /// Locks the state (see the module docs for what may happen under it).
    pub fn lock(&self) -> MutexGuard<'_, State<B>> {
        lock(&self.state)
    }

    /// Wakes every sleeping client thread, and tells the spinning ones
    /// (they look again).
    pub fn wake_clients(&self) {
        self.news.fetch_add(1, Ordering::Release);
        self.changed.notify_all();
    }

    /// Submits a graph: the ids of its nodes (each wanted one carries one
    /// client reference), and what is left to do.
    pub fn submit(&self, nodes: Vec<GraphNode>) -> Result<(Vec<TaskId>, B::Effects), DriverError> {
        let mut fx = B::Effects::default();
        let ids = self.lock().submit(nodes, &mut fx)?;
        Ok((ids, fx))
    }

    /// Feeds one event (unless shut down); what is left to do.
    pub fn handle(&self, event: Event) -> B::Effects {
        let mut fx = B::Effects::default();
        let mut st = self.lock();
        if !st.closed {
            st.handle(event, &mut fx);
        }
        fx
    }

    /// Where the task stands.
    pub fn status(&self, id: TaskId) -> Status {
        self.lock().status(id)
    }

    /// The task's scheduler state (`None` once forgotten).
    pub fn state(&self, id: TaskId) -> Option<TaskState> {
        self.lock().sched.state(id)
    }

    /// How many of `ids` are finished: in memory, failed, or — for a task
    /// the caller submitted as needed — released or forgotten (it ran, and
    /// its result was dropped once its dependents had it). One lock, a
    /// lookup per id.
    pub fn count_finished(&self, ids: &[TaskId]) -> usize {
        let st = self.lock();
        let pending = |id: TaskId| {
            matches!(st.sched.state(id), Some(TaskState::Waiting | TaskState::Ready | TaskState::Processing))
        };
        ids.iter().filter(|&&id| !pending(id)).count()
    }

    /// Live tasks by state, in all and per task name.
    pub fn task_counts(&self) -> TaskCounts {
        self.lock().task_counts()
    }

    /// What a monitor reads: run records from sequence number `since` (the
    /// newest `max`), totals, live counts, and the load of each of
    /// `workers`, under one lock (the live counts are a scan of every live
    /// task: a monitor's few looks a second, not the hot path).
    pub fn snapshot(&self, since: u64, max: usize, workers: &[WorkerId]) -> Snapshot {
        let st = self.lock();
        let (runs, next) = st.events.since(since, max);
        Snapshot {
            runs,
            next,
            now_ns: st.events.since_start(events::now_ns()),
            totals: st.events.totals(),
            per_func: st.events.per_func().to_vec(),
            counts: st.task_counts(),
            loads: workers.iter().filter_map(|&w| Some((w, st.sched.load(w)? as u64))).collect(),
        }
    }

    /// The task's key (`None` once forgotten).
    pub fn key(&self, id: TaskId) -> Option<Key> {
        self.lock().sched.key(id)
    }

    /// Blocks until the task finished or the deadline passed; its status.
    pub fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status, DriverError> {
        let status = block_until(&self.state, &self.changed, &self.news, Interest::Task(id), deadline, |st| {
            Some(st.status(id)).filter(Status::is_finished)
        })?;
        Ok(status.unwrap_or(Status::Pending))
    }

    /// Blocks until one of the tasks finished or the deadline passed; the
    /// indices of all finished ones.
    pub fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>, DriverError> {
        let found = block_until(&self.state, &self.changed, &self.news, Interest::Any, deadline, |st| {
            let done: Vec<usize> =
                ids.iter().enumerate().filter(|(_, id)| st.status(**id).is_finished()).map(|(i, _)| i).collect();
            (!done.is_empty() || ids.is_empty()).then_some(done)
        })?;
        Ok(found.unwrap_or_default())
    }

    /// Blocks until `ids[from..]` finished in order, one failed, or the
    /// deadline passed: how many of `ids` are finished from the start, and
    /// the failure that stopped the scan, if any. Many tasks per lock.
    ///
    /// It sleeps until the *last* unfinished task of the list ends, or any
    /// task fails — not until the first unfinished one ends: tasks mostly
    /// end in the order they were submitted, so waiting on the first would
    /// wake the client once per task, and each wake-up takes the driver's
    /// lock from the threads that report (a `gather` of 100,000 no-op tasks
    /// spent a fifth of its time in futex calls that way).
    pub fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>), DriverError> {
        let mut cursor = from;
        // The failures reported when the list was last scanned whole, and
        // whether one of the list had failed then.
        let (mut scanned_at, mut one_failed) = (None, false);
        let answer = block_until_with(&self.state, &self.changed, &self.news, deadline, |st| {
            while let Some(&id) = ids.get(cursor) {
                match st.status(id) {
                    Status::Finished => cursor += 1,
                    Status::Failed(f) => return Ok((cursor, Some(f))),
                    Status::Pending => break,
                }
            }
            let rest = &ids[cursor..];
            // A task of the list that failed behind the cursor ends the
            // prefix there: then wait for the first unfinished task, as the
            // scan stops at the failure once that one ends. Whole scans are
            // rare: once per call, then once per failure reported.
            if scanned_at != Some(st.waiters.failures()) {
                scanned_at = Some(st.waiters.failures());
                one_failed |= rest.iter().any(|&id| matches!(st.status(id), Status::Failed(_)));
            }
            if one_failed {
                return rest.first().map_or(Ok((cursor, None)), |&id| Err(Interest::Task(id)));
            }
            // From the end, the first one not over (at worst `ids[cursor]`,
            // which is pending).
            match rest.iter().rev().find(|&&id| matches!(st.status(id), Status::Pending)).or(rest.first()) {
                Some(&last) => Err(Interest::TaskOrFailure(last)),
                None => Ok((cursor, None)),
            }
        })?;
        Ok(answer.unwrap_or((cursor, None)))
    }

    /// No worker is left and none can be started: every wait fails with
    /// `reason` (until a worker joins and `broken` is cleared).
    pub fn break_down(&self, reason: String) {
        self.lock().broken = Some(reason);
        self.wake_clients();
    }
}

/// A short rendering of a stored task's arguments for its failure message
/// (see [`describe`]): values as their `Debug`, results of other tasks by
/// those tasks' keys.
pub fn describe_args(args: &[SpecArg], key_of: impl Fn(TaskId) -> Option<Key>) -> String {
    struct ResultOf(String);
    impl Object for ResultOf {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn type_name(&self) -> &'static str {
            "result"
        }
        fn archived_bytes(&self) -> Result<&[u8], crate::registry::InputError> {
            Ok(&[])
        }
        fn nbytes(&self) -> u64 {
            0
        }
        fn describe(&self, out: &mut Bounded) -> std::fmt::Result {
            std::fmt::Write::write_str(out, &self.0)
        }
    }
    let name = |id: TaskId| match key_of(id) {
        Some(key) => format!("<result of {key}>"),
        None => "<result of a forgotten task>".to_string(),
    };
    let shown: Vec<Obj> = args
        .iter()
        .map(|arg| match arg {
            SpecArg::Value(obj) => Arc::clone(obj),
            SpecArg::Dep(id) => Arc::new(ResultOf(name(*id))) as Obj,
            SpecArg::List(ids) => {
                let first = ids.first().map(|id| format!("{}, ", name(*id))).unwrap_or_default();
                Arc::new(ResultOf(format!("[{first}… {} results]", ids.len()))) as Obj
            }
        })
        .collect();
    describe(shown.iter().map(|o| &**o))
}

/// The scheduler's view of a graph: each node's key, options and inputs (a
/// task that names the same input twice depends on it once).
pub fn new_tasks(nodes: &[GraphNode]) -> Vec<NewTask> {
    nodes
        .iter()
        .map(|n| {
            let mut deps: Vec<Dep> = Vec::new();
            for arg in &n.args {
                match arg {
                    NodeArg::Value(_) => {}
                    NodeArg::Dep(d) => deps.push(*d),
                    NodeArg::List(ds) => deps.extend_from_slice(ds),
                }
            }
            if deps.len() > 1 {
                let mut seen = std::collections::HashSet::with_capacity(deps.len());
                deps.retain(|d| seen.insert(*d));
            }
            NewTask { key: n.key, deps, wanted: n.wanted, priority: n.priority, retries: n.retries }
        })
        .collect()
}

/// A node's arguments as stored, with its graph-relative inputs resolved to
/// the ids `submit` gave the graph's nodes.
pub fn spec_args(args: Vec<NodeArg>, ids: &[TaskId]) -> Box<[SpecArg]> {
    let resolve = |d: &Dep| match *d {
        Dep::Node(i) => ids[i],
        Dep::Task(id) => id,
    };
    args.into_iter()
        .map(|arg| match arg {
            NodeArg::Value(obj) => SpecArg::Value(obj),
            NodeArg::Dep(d) => SpecArg::Dep(resolve(&d)),
            NodeArg::List(ds) => SpecArg::List(ds.iter().map(resolve).collect()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_keeps_its_map_index_beside_the_cancelled_flag_in_one_word() {
        let mut spec = Spec::new(7, Some(0), ());
        assert_eq!((spec.item(), spec.cancelled()), (Some(0), false));
        spec.flags |= CANCELLED;
        assert_eq!((spec.item(), spec.cancelled()), (Some(0), true));
        assert_eq!(Spec::new(7, None, ()).item(), None);
        assert_eq!(Spec::new(7, Some(CANCELLED - 2), ()).item(), Some(CANCELLED - 2));
        assert_eq!(Spec::new(7, Some(CANCELLED - 1), ()).item(), None, "too large to keep");
        assert_eq!(Spec::new(7, Some(u32::MAX), ()).item(), None);
        // generation + flags: the index made a spec no larger.
        assert_eq!(size_of::<Spec<[u64; 3]>>(), 32);
    }
}
