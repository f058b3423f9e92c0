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
//!    failure. A fresh result that is a vector of primitives gets its archive in
//!    its own buffer there (`Object::archive_in_place`), so `&Archived`
//!    readers get the producer's bytes.
//! 3. It locks the engine once: stores the result (and stores by their
//!    archive alone the inputs that this run had archived beside their
//!    value, so no result is held twice), feeds `TaskFinished` (or
//!    `TaskFailed`) to the scheduler, and applies the actions — new `Run`s
//!    go to *its own* deque (the dependent runs next, on the same core),
//!    `Release`s drop results (after unlocking), `Report`s mark futures
//!    done and wake the client threads waiting on exactly those tasks.
//!
//! The engine is one worker (`WorkerId(0)`) with one slot per thread and
//! no slack (`extra_slots_per_thread: 0`): the thread that finishes a task
//! gets the next run from the scheduler in the same pass and runs it at
//! once, so a queued run would hide no latency — it would only wait in the
//! pool's injector while newer runs overtook it from the threads' own
//! deques (map items then start out of order). Tasks beyond the slots stay
//! queued in the scheduler in priority order, which is what keeps a large
//! graph's memory low.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::driver::events::{RunTimes, UNKNOWN_THREAD, now_ns};
use shoal_core::driver::wait::lock;
use shoal_core::driver::{Backend, Driver, Effects, SpecArg, State};
use shoal_core::executor::{Local, Pool, Spawner};
use shoal_core::object::{Input, Obj, describe};
use shoal_core::registry::{self, TaskEntry};
use shoal_core::scheduler::{Event, Scheduler, SchedulerConfig, TaskId, WorkerId};

use super::Mode;
use crate::error::{Error, Result};

/// The only worker of this engine.
const WORKER: WorkerId = WorkerId(0);

pub(crate) struct ThreadsEngine {
    driver: Driver<Threads>,
    spawner: Spawner<Job>,
    pool: Mutex<Option<Pool<Job>>>,
    nthreads: usize,
}

/// The threads mode's backend: runs become jobs on the pool.
pub(crate) struct Threads;

/// A task's arguments until it succeeds, then its result. The threads mode
/// never loses a result, so the only recomputation is of a released result
/// that an equal pure call asks for again — and that call brings the same
/// arguments. So the arguments are dropped as soon as the result exists and
/// restored from the new call ([`Backend::merged`]). Small on purpose: a
/// million of these are held at once in the overhead benchmark. (The
/// function is found from the key's registry index.)
pub(crate) enum Body {
    Args(Box<[SpecArg]>),
    Result(Obj),
    Released,
}

impl Body {
    fn result(&self) -> Option<&Obj> {
        match self {
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
    inputs: std::result::Result<Vec<Input>, String>,
}

/// What a pass over the scheduler's actions leaves to do after unlocking.
///
/// Its lists come from the thread's spare ones and go back there once
/// carried out ([`Spare`]): most passes fill one or two entries (a run, a
/// result to free), and a fresh list each time was a `malloc` and a `free`
/// per list per task, on the client's thread for every future dropped.
pub(crate) struct ThreadsEffects {
    jobs: Vec<Job>,
    /// The first `local` jobs take the result just made on this pool
    /// thread: they go to its own deque.
    local: usize,
    garbage: Vec<Obj>,
    forgotten: Vec<Body>,
    wake_clients: bool,
}

/// Emptied lists kept per thread for the next [`ThreadsEffects`].
#[derive(Default)]
struct Spare {
    jobs: Vec<Job>,
    garbage: Vec<Obj>,
    forgotten: Vec<Body>,
}

/// A list longer than this is freed rather than kept as a thread's spare
/// (a pass that released a whole graph should not pin its size).
const MAX_SPARE_LEN: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::default();
}

impl Default for ThreadsEffects {
    fn default() -> Self {
        let spare = SPARE.try_with(|s| std::mem::take(&mut *s.borrow_mut())).unwrap_or_default();
        ThreadsEffects {
            jobs: spare.jobs,
            local: 0,
            garbage: spare.garbage,
            forgotten: spare.forgotten,
            wake_clients: false,
        }
    }
}

impl ThreadsEffects {
    /// Gives the emptied lists back to the thread's spare ones.
    fn recycle(jobs: Vec<Job>, garbage: Vec<Obj>, forgotten: Vec<Body>) {
        debug_assert!(jobs.is_empty() && garbage.is_empty() && forgotten.is_empty());
        if jobs.capacity().max(garbage.capacity()).max(forgotten.capacity()) <= MAX_SPARE_LEN {
            // During the thread's teardown there is no spare to fill.
            let _ = SPARE.try_with(|s| *s.borrow_mut() = Spare { jobs, garbage, forgotten });
        }
    }
}

impl Effects for ThreadsEffects {
    fn wake_clients(&mut self) {
        self.wake_clients = true;
    }
}

impl Backend for Threads {
    type Task = Body;
    type Effects = ThreadsEffects;

    fn new_task(&mut self, _func: u32, args: Box<[SpecArg]>) -> Body {
        Body::Args(args)
    }

    fn merged(task: &mut Body, args: Box<[SpecArg]>) {
        // A pure call merged into a live task whose result was released
        // (its record kept for a dependent): the scheduler recomputes it,
        // and this mode dropped its arguments on success — take them from
        // this call.
        if matches!(task, Body::Released) {
            *task = Body::Args(args);
        }
    }

    fn run(st: &mut State<Threads>, task: TaskId, _worker: WorkerId, fx: &mut ThreadsEffects) {
        if let Some(job) = job(st, task) {
            fx.jobs.push(job);
        }
    }

    fn release(st: &mut State<Threads>, task: TaskId, _worker: WorkerId, fx: &mut ThreadsEffects) {
        if let Some(spec) = st.spec_mut(task)
            && let Body::Result(obj) = std::mem::replace(&mut spec.task, Body::Released)
        {
            fx.garbage.push(obj);
        }
    }

    fn forget(&mut self, spec: shoal_core::driver::Spec<Body>, fx: &mut ThreadsEffects) {
        fx.forgotten.push(spec.task);
    }
}

/// The job for a task the scheduler says can run now.
fn job(st: &State<Threads>, id: TaskId) -> Option<Job> {
    let spec = st.spec(id)?;
    let key = st.sched.key(id)?;
    let result_of = |dep: TaskId| {
        st.spec(dep)
            .and_then(|s| s.task.result().cloned())
            .ok_or_else(|| format!("internal error: an input of {key} is not in memory"))
    };
    let Body::Args(args) = &spec.task else {
        // Run twice without a retry in between: a scheduler bug.
        return Some(Job { id, key, entry: None, inputs: Err(format!("internal error: {key} ran twice")) });
    };
    let inputs = args
        .iter()
        .map(|arg| match arg {
            SpecArg::Value(obj) => Ok(Input::One(Arc::clone(obj))),
            SpecArg::Dep(dep) => result_of(*dep).map(Input::One),
            SpecArg::List(deps) => {
                deps.iter().map(|d| result_of(*d)).collect::<std::result::Result<Vec<Obj>, String>>().map(Input::List)
            }
        })
        .collect();
    let Some(entry) = registry::entries().get(key.func as usize).copied() else {
        return Some(Job { id, key, entry: None, inputs: Err(format!("{key} names no registered task")) });
    };
    Some(Job { id, key, entry: Some(entry), inputs })
}

impl ThreadsEngine {
    pub(crate) fn start(nthreads: usize) -> Result<Arc<ThreadsEngine>> {
        shoal_shm::logging::install_default();
        let nthreads = nthreads.max(1);
        let mut sched = Scheduler::new(SchedulerConfig { extra_slots_per_thread: 0, ..SchedulerConfig::default() });
        let mut actions = Vec::new();
        sched.handle(Event::WorkerJoined { worker: WORKER, nthreads: nthreads as u32 }, &mut actions);
        let pool = Pool::new(nthreads);
        let engine = Arc::new(ThreadsEngine {
            driver: Driver::new(sched, Threads),
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

    /// Run one job on a pool thread, then report it (see the module docs).
    fn run(&self, job: Job, local: &Local<'_, Job>) {
        let Job { id, key, entry, inputs } = job;
        // Taken outside the lock (see `driver::events`).
        let start_ns = now_ns();
        let outcome = execute(key, entry, inputs).map(|mut obj| {
            // Before anyone else holds it: an `&Archived` reader then reads
            // the producer's own bytes (see `Object::archive_in_place`).
            if let Some(fresh) = Arc::get_mut(&mut obj) {
                fresh.archive_in_place();
            }
            obj
        });
        let times = RunTimes { thread: thread_index(), start_ns, stop_ns: now_ns() };
        let mut fx = ThreadsEffects::default();
        {
            let mut st = self.driver.lock();
            hold_archives_alone(&mut st, id, &mut fx);
            let event = match outcome {
                Ok(obj) => {
                    let nbytes = obj.nbytes();
                    match st.spec_mut(id) {
                        Some(spec) => spec.task = Body::Result(obj),
                        None => fx.garbage.push(obj),
                    }
                    Event::TaskFinished { task: id, worker: WORKER, nbytes }
                }
                Err(failure) => Event::TaskFailed { task: id, worker: WORKER, failure },
            };
            st.handle_run(event, times, &mut fx);
            // A job that takes this result runs here, next, while it is in
            // cache; others too unless older jobs wait in the injector, in
            // which case they go behind those — so that tasks start in the
            // scheduler's order (map items in submission order) rather than
            // the newest first (see `carry_out`).
            if fx.jobs.len() > 1 {
                fx.jobs.sort_by_key(|job| !st.sched.deps(job.id).contains(&id));
            }
            fx.local = fx.jobs.iter().take_while(|job| st.sched.deps(job.id).contains(&id)).count();
        }
        self.carry_out(fx, Some(local));
    }

    /// Everything done after unlocking: queue jobs, wake clients, drop.
    fn carry_out(&self, mut fx: ThreadsEffects, local: Option<&Local<'_, Job>>) {
        let keep = match local {
            Some(local) if local.injector_is_empty() => fx.jobs.len(),
            _ => fx.local.min(fx.jobs.len()),
        };
        let global = fx.jobs.split_off(keep);
        if let Some(local) = local {
            // Pushed last to first: the deque runs the last pushed first.
            local.push_all(fx.jobs.drain(..).rev());
        } else {
            self.spawner.push_all(fx.jobs.drain(..));
        }
        self.spawner.push_all(global);
        // Free released results before waking clients, so a client that
        // sees its tasks done also sees their inputs freed.
        fx.garbage.clear();
        fx.forgotten.clear();
        if fx.wake_clients {
            self.driver.wake_clients();
        }
        ThreadsEffects::recycle(fx.jobs, fx.garbage, fx.forgotten);
    }
}

/// The inputs of `id` that a reader had archived beside their value (an
/// `&Archived<T>` of a type not archived in place) are stored by their
/// archive alone from now on: the value is freed once its current readers
/// are done, so a result is held once (later by-value readers deserialize).
fn hold_archives_alone(st: &mut State<Threads>, id: TaskId, fx: &mut ThreadsEffects) {
    for i in 0..st.sched.deps(id).len() {
        let dep = st.sched.deps(id)[i];
        if let Some(spec) = st.spec_mut(dep)
            && let Body::Result(obj) = &mut spec.task
            && let Some(alone) = obj.archive_alone()
        {
            fx.garbage.push(std::mem::replace(obj, alone));
        }
    }
}

/// The pool thread's index, from its name `shoal-{i}` (read once per thread).
fn thread_index() -> u32 {
    thread_local! {
        static INDEX: u32 = std::thread::current()
            .name()
            .and_then(|n| n.rsplit('-').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or(UNKNOWN_THREAD);
    }
    INDEX.with(|i| *i)
}

/// Call the task, turning errors and panics into a [`TaskFailure`] that
/// names the task.
fn execute(
    key: Key,
    entry: Option<&'static TaskEntry>,
    inputs: std::result::Result<Vec<Input>, String>,
) -> std::result::Result<Obj, TaskFailure> {
    let error = |message: String| TaskFailure::error(key, message);
    let inputs = inputs.map_err(error)?;
    let entry = entry.ok_or_else(|| error("internal error: no task function".into()))?;
    // Each object of each input, a list's items one by one.
    let arguments = || Some(describe(inputs.iter().flat_map(Input::objects).map(|o| &**o)));
    match catch_unwind(AssertUnwindSafe(|| entry.invoke(&inputs))) {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(run_error)) => Err(TaskFailure::from_run(key, run_error, arguments)),
        Err(payload) => Err(TaskFailure::from_panic(key, &*payload, arguments)),
    }
}

impl Mode for ThreadsEngine {
    type Backend = Threads;

    fn driver(&self) -> &Driver<Threads> {
        &self.driver
    }

    fn finish(&self, fx: ThreadsEffects) {
        self.carry_out(fx, None);
    }

    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        let st = self.driver.lock();
        ids.iter().map(|&id| st.finished(id)?.task.result().cloned().ok_or(Error::Closed)).collect()
    }

    fn nthreads(&self) -> usize {
        self.nthreads
    }

    fn workers(&self) -> Vec<(WorkerId, u32, u32)> {
        vec![(WORKER, std::process::id(), self.nthreads as u32)]
    }

    fn shutdown(&self) {
        self.driver.lock().closed = true;
        self.driver.wake_clients();
        let pool = lock(&self.pool).take();
        drop(pool);
    }
}
