//! The threads engine: the scheduler state machine and a work-stealing pool
//! in one process (`Client::local()`, `Client::threads(n)`).
//!
//! # Data flow of one task
//!
//! 1. `submit` locks the engine, hands the graph to the scheduler, stores
//!    each new task's spec (function and arguments) by id, and turns the
//!    `Run` actions it gets back into jobs pushed to the pool's injector.
//! 2. A pool thread runs the job without any lock: it assembles the inputs
//!    (shared `Arc`s to values and to dependencies' results), calls the
//!    task's entry point under `catch_unwind`, and gets an object or a
//!    failure.
//! 3. It locks the engine once: stores the result, feeds `TaskFinished` (or
//!    `TaskFailed`) to the scheduler, and applies the actions — new `Run`s
//!    go to *its own* deque (the dependent runs next, on the same core),
//!    `Release`s drop results (after unlocking), `Report`s mark futures
//!    done and wake the client threads waiting on exactly those tasks.
//!
//! The engine is one worker (`WorkerId(0)`) with one slot per thread, plus
//! the scheduler's slack: tasks beyond that stay queued in the scheduler in
//! priority order, which is what keeps a large graph's memory low.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::executor::{Local, Pool, Sink, Spawner};
use shoal_core::object::{Assemble, Obj, describe};
use shoal_core::registry::{self, TaskEntry};
use shoal_core::scheduler::{Action, Event, Scheduler, SchedulerConfig, TaskId, TaskState, WorkerId};

use super::wait::{Interest, Waitable, Waiters, block_until, block_until_with, lock};
use super::{Engine, GraphNode, SpecArg, Status, new_tasks, spec_args};
use crate::error::{Error, Result};

/// The only worker of this engine.
const WORKER: WorkerId = WorkerId(0);

pub(crate) struct ThreadsEngine {
    state: Mutex<State>,
    /// Signalled when a task some client thread waits for finishes.
    changed: Condvar,
    spawner: Spawner<Job>,
    pool: Mutex<Option<Pool<Job>>>,
    nthreads: usize,
}

struct State {
    sched: Scheduler,
    /// What to run for each live task, by `TaskId::index`.
    specs: Vec<Option<Spec>>,
    /// What blocked client threads wait for.
    waiters: Waiters,
    closed: bool,
    /// Reused buffer for the scheduler's actions.
    actions: Vec<Action>,
}

/// What the engine keeps per live task besides the scheduler's record.
/// Small on purpose: a million of them are held at once in the overhead
/// benchmark. The key and the state are the scheduler's.
struct Spec {
    generation: u32,
    /// The client cancelled the task after it finished (its futures then
    /// report "cancelled", as Dask's do).
    cancelled: bool,
    body: Body,
}

/// A task's arguments until it succeeds, then its result. The threads mode
/// never loses a result, so the only recomputation is of a released result
/// that an equal pure call asks for again — and that call brings the same
/// arguments. So the arguments are dropped as soon as the result exists and
/// restored from the new call (see `submit`). (The function is found from
/// the key's registry index.)
enum Body {
    Args(Box<[SpecArg]>),
    Result(Obj),
    Released,
}

impl Spec {
    fn result(&self) -> Option<&Obj> {
        match &self.body {
            Body::Result(obj) => Some(obj),
            _ => None,
        }
    }
}

/// A task ready to run, with its inputs in hand.
pub(crate) struct Job {
    id: TaskId,
    key: Key,
    /// `None` only with an `inputs` error explaining why.
    entry: Option<&'static TaskEntry>,
    inputs: std::result::Result<Vec<JobInput>, String>,
}

enum JobInput {
    One(Obj),
    List(Vec<Obj>, Assemble),
}

/// What a pass over the scheduler's actions leaves to do after unlocking.
#[derive(Default)]
struct Effects {
    jobs: Vec<Job>,
    garbage: Vec<Obj>,
    forgotten: Vec<Spec>,
    wake_clients: bool,
}

impl ThreadsEngine {
    pub(crate) fn start(nthreads: usize) -> Result<Arc<ThreadsEngine>> {
        let nthreads = nthreads.max(1);
        let mut sched = Scheduler::new(SchedulerConfig::default());
        let mut actions = Vec::new();
        sched.handle(Event::WorkerJoined { worker: WORKER, nthreads: nthreads as u32 }, &mut actions);
        let pool = Pool::new(nthreads);
        let engine = Arc::new(ThreadsEngine {
            state: Mutex::new(State { sched, specs: Vec::new(), waiters: Waiters::default(), closed: false, actions }),
            changed: Condvar::new(),
            spawner: pool.spawner().clone(),
            pool: Mutex::new(None),
            nthreads,
        });
        // The threads hold the engine weakly: the client's handle owns it,
        // and the engine owns the pool, which is stopped on shutdown.
        let weak = Arc::downgrade(&engine);
        let mut pool = pool;
        pool.start("shoal", move |job: Job, local: &Local<'_, Job>| {
            if let Some(engine) = weak.upgrade() {
                engine.run(job, local);
            }
        })
        .map_err(|e| Error::Start(format!("could not spawn {nthreads} worker threads: {e}")))?;
        *lock(&engine.pool) = Some(pool);
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Run one job on a pool thread, then report it (see the module docs).
    fn run(&self, job: Job, local: &Local<'_, Job>) {
        let Job { id, key, entry, inputs } = job;
        let outcome = execute(key, entry, inputs);
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            let event = match outcome {
                Ok(obj) => {
                    let nbytes = obj.nbytes();
                    match st.spec_mut(id) {
                        Some(spec) => spec.body = Body::Result(obj),
                        None => effects.garbage.push(obj),
                    }
                    Event::TaskFinished { task: id, worker: WORKER, nbytes }
                }
                Err(failure) => Event::TaskFailed { task: id, worker: WORKER, failure },
            };
            st.handle(event, &mut effects);
        }
        self.finish(effects, &Sink::Local(local));
    }

    /// Everything done after unlocking: queue jobs, wake clients, drop.
    fn finish(&self, effects: Effects, sink: &Sink<'_, Job>) {
        for job in effects.jobs {
            sink.push(job);
        }
        // Free released results before waking clients, so a client that
        // sees its tasks done also sees their inputs freed.
        drop(effects.garbage);
        drop(effects.forgotten);
        if effects.wake_clients {
            self.changed.notify_all();
        }
    }
}

/// Assemble the inputs and call the task, turning errors and panics into a
/// [`TaskFailure`] that names the task.
fn execute(
    key: Key,
    entry: Option<&'static TaskEntry>,
    inputs: std::result::Result<Vec<JobInput>, String>,
) -> std::result::Result<Obj, TaskFailure> {
    let error = |message: String| TaskFailure::error(key, message);
    let inputs = inputs.map_err(error)?;
    let entry = entry.ok_or_else(|| error("internal error: no task function".into()))?;
    let mut objs = Vec::with_capacity(inputs.len());
    for input in inputs {
        objs.push(match input {
            JobInput::One(obj) => obj,
            JobInput::List(items, assemble) => assemble(&items).map_err(|e| error(e.to_string()))?,
        });
    }
    let arguments = || Some(describe(objs.iter().map(|o| &**o)));
    match catch_unwind(AssertUnwindSafe(|| entry.invoke(&objs))) {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(run_error)) => Err(TaskFailure::from_run(key, run_error, arguments)),
        Err(payload) => Err(TaskFailure::from_panic(key, &*payload, arguments)),
    }
}

impl Waitable for State {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn stopped(&self) -> Option<Error> {
        self.closed.then_some(Error::Closed)
    }
}

impl State {
    fn spec(&self, id: TaskId) -> Option<&Spec> {
        self.specs.get(id.index as usize)?.as_ref().filter(|s| s.generation == id.generation)
    }

    fn spec_mut(&mut self, id: TaskId) -> Option<&mut Spec> {
        self.specs.get_mut(id.index as usize)?.as_mut().filter(|s| s.generation == id.generation)
    }

    fn handle(&mut self, event: Event, effects: &mut Effects) {
        let mut actions = std::mem::take(&mut self.actions);
        self.sched.handle(event, &mut actions);
        self.apply(&mut actions, effects);
        self.actions = actions;
    }

    /// Carry out the scheduler's actions (draining `actions`).
    fn apply(&mut self, actions: &mut Vec<Action>, effects: &mut Effects) {
        for action in actions.drain(..) {
            match action {
                Action::Run { task, .. } => {
                    if let Some(job) = self.job(task) {
                        effects.jobs.push(job);
                    }
                }
                Action::Release { task, .. } => {
                    if let Some(spec) = self.spec_mut(task)
                        && let Body::Result(obj) = std::mem::replace(&mut spec.body, Body::Released)
                    {
                        effects.garbage.push(obj);
                    }
                }
                Action::ReportDone { task } => {
                    effects.wake_clients |= self.is_awaited(task);
                }
                Action::ReportFailed { task, .. } => {
                    // The failure itself stays in the scheduler's record,
                    // except for a finished task being cancelled.
                    if self.sched.state(task) == Some(TaskState::Memory)
                        && let Some(spec) = self.spec_mut(task)
                    {
                        spec.cancelled = true;
                    }
                    effects.wake_clients |= self.is_awaited(task);
                }
                Action::Forget { task } => {
                    if self.spec(task).is_some()
                        && let Some(spec) = self.specs[task.index as usize].take()
                    {
                        effects.forgotten.push(spec);
                    }
                }
            }
        }
    }

    fn is_awaited(&self, task: TaskId) -> bool {
        self.waiters.awaits(task)
    }

    /// Where the task stands, as its futures see it.
    fn status(&self, id: TaskId) -> Status {
        match self.sched.state(id) {
            Some(TaskState::Memory) => match self.spec(id) {
                Some(spec) if spec.cancelled => Status::Failed(Arc::new(TaskFailure::Cancelled {
                    key: self.sched.key(id).unwrap_or(Key { func: u32::MAX, token: [0; 2] }),
                })),
                _ => Status::Finished,
            },
            Some(TaskState::Erred) => match self.sched.failure(id) {
                Some(failure) => Status::Failed(failure),
                None => Status::Pending,
            },
            _ => Status::Pending,
        }
    }

    /// The job for a task the scheduler says can run now.
    fn job(&self, id: TaskId) -> Option<Job> {
        let spec = self.spec(id)?;
        let key = self.sched.key(id)?;
        let result_of = |dep: TaskId| {
            self.spec(dep)
                .and_then(|s| s.result().cloned())
                .ok_or_else(|| format!("internal error: an input of {key} is not in memory"))
        };
        let Body::Args(args) = &spec.body else {
            // Run twice without a retry in between: a scheduler bug.
            return Some(Job { id, key, entry: None, inputs: Err(format!("internal error: {key} ran twice")) });
        };
        let inputs = args
            .iter()
            .map(|arg| match arg {
                SpecArg::Value(obj) => Ok(JobInput::One(Arc::clone(obj))),
                SpecArg::Dep(dep) => result_of(*dep).map(JobInput::One),
                SpecArg::List(deps, assemble) => deps
                    .iter()
                    .map(|d| result_of(*d))
                    .collect::<std::result::Result<Vec<Obj>, String>>()
                    .map(|objs| JobInput::List(objs, *assemble)),
            })
            .collect();
        let Some(entry) = registry::entries().get(key.func as usize).copied() else {
            return Some(Job { id, key, entry: None, inputs: Err(format!("{key} names no registered task")) });
        };
        Some(Job { id, key, entry: Some(entry), inputs })
    }
}

impl Engine for ThreadsEngine {
    fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>> {
        let mut effects = Effects::default();
        let ids = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let tasks = new_tasks(&nodes);
            let mut actions = std::mem::take(&mut st.actions);
            let submitted = st.sched.submit(tasks, &mut actions);
            let submitted = match submitted {
                Ok(s) => s,
                Err(e) => {
                    st.actions = actions;
                    return Err(e.into());
                }
            };
            let ids: Vec<TaskId> = submitted.iter().map(|s| s.id).collect();
            for (node, s) in nodes.into_iter().zip(&submitted) {
                if !s.new {
                    // A pure call merged into a live task whose result was
                    // released (its record kept for a dependent): the
                    // scheduler recomputes it, and this engine dropped its
                    // arguments on success — take them from this call.
                    if let Some(spec) = st.spec_mut(s.id)
                        && matches!(spec.body, Body::Released)
                    {
                        spec.body = Body::Args(spec_args(node.args, &ids));
                    }
                    continue;
                }
                let args = spec_args(node.args, &ids);
                let index = s.id.index as usize;
                if st.specs.len() <= index {
                    st.specs.resize_with(index + 1, || None);
                }
                st.specs[index] = Some(Spec { generation: s.id.generation, cancelled: false, body: Body::Args(args) });
            }
            st.apply(&mut actions, &mut effects);
            st.actions = actions;
            ids
        };
        self.finish(effects, &Sink::Global(&self.spawner));
        Ok(ids)
    }

    fn release(&self, id: TaskId) {
        let mut effects = Effects::default();
        self.lock().handle(Event::ClientReleased { task: id }, &mut effects);
        self.finish(effects, &Sink::Global(&self.spawner));
    }

    fn retain(&self, id: TaskId) {
        let mut effects = Effects::default();
        self.lock().handle(Event::ClientRetained { task: id }, &mut effects);
        self.finish(effects, &Sink::Global(&self.spawner));
    }

    fn cancel(&self, id: TaskId) {
        let mut effects = Effects::default();
        self.lock().handle(Event::Cancel { task: id }, &mut effects);
        self.finish(effects, &Sink::Global(&self.spawner));
    }

    fn status(&self, id: TaskId) -> Status {
        self.lock().status(id)
    }

    fn key(&self, id: TaskId) -> Option<Key> {
        self.lock().sched.key(id)
    }

    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status> {
        let status = block_until(&self.state, &self.changed, Interest::Task(id), deadline, |st| {
            Some(st.status(id)).filter(Status::is_finished)
        })?;
        Ok(status.unwrap_or(Status::Pending))
    }

    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>> {
        let found = block_until(&self.state, &self.changed, Interest::Any, deadline, |st| {
            let done: Vec<usize> =
                ids.iter().enumerate().filter(|(_, id)| st.status(**id).is_finished()).map(|(i, _)| i).collect();
            (!done.is_empty() || ids.is_empty()).then_some(done)
        })?;
        Ok(found.unwrap_or_default())
    }

    fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>)> {
        let mut cursor = from;
        let answer = block_until_with(&self.state, &self.changed, deadline, |st| {
            while let Some(&id) = ids.get(cursor) {
                match st.status(id) {
                    Status::Finished => cursor += 1,
                    Status::Failed(f) => return Ok((cursor, Some(f))),
                    Status::Pending => return Err(Interest::Task(id)),
                }
            }
            Ok((cursor, None))
        })?;
        Ok(answer.unwrap_or((cursor, None)))
    }

    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        let st = self.lock();
        ids.iter()
            .map(|&id| match st.status(id) {
                Status::Failed(f) => Err(Error::Task(f)),
                Status::Finished => st.spec(id).and_then(|s| s.result().cloned()).ok_or(Error::Closed),
                Status::Pending => Err(Error::Closed),
            })
            .collect()
    }

    fn result(&self, id: TaskId) -> Result<Obj> {
        let st = self.lock();
        match st.status(id) {
            Status::Failed(f) => Err(Error::Task(f)),
            Status::Finished => st.spec(id).and_then(|s| s.result().cloned()).ok_or(Error::Closed),
            Status::Pending => Err(Error::Closed),
        }
    }

    fn nthreads(&self) -> usize {
        self.nthreads
    }

    fn shutdown(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
        let pool = lock(&self.pool).take();
        drop(pool);
    }
}
