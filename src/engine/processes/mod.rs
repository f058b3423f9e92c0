//! The processes engine: the scheduler state machine in the client process,
//! tasks in worker processes re-executed from this binary
//! (`Client::processes(p)`), results in shared memory.
//!
//! # Pieces
//!
//! - this module: the engine — start, submission, waiting, shutdown — and
//!   the [`Engine`] implementation;
//! - [`state`]: what the engine keeps under its lock (scheduler, task specs,
//!   the client's store of results) and how scheduler actions are applied;
//! - [`workers`]: worker connections, their messages, the runs sent to them;
//! - [`supervisor`]: starts, replaces, stops and reaps worker processes, and
//!   runs one reader thread per worker connection;
//! - [`worker`]: the worker process (and the hook that makes a re-executed
//!   binary one);
//! - [`protocol`]: the messages and their checks; [`objects`]: inline
//!   archives and segments.
//!
//! # Protocol
//!
//! ```text
//! client                                       worker W (a process)
//!   spawn /proc/self/exe --shoal-worker  ───►  hook before main: PDEATHSIG, checks
//!                                        ◄───  Hello { fingerprint, pid }
//!   fingerprint ≠ ours: refuse (kill)
//!   else WorkerJoined { W, threads }
//!   scheduler: Run { T, W }
//!   Run { T, func, inputs: inline | fd } ───►  pool thread: invoke(T)
//!                                        ◄───  Done { T, inline | fd, nbytes } | Failed { T, kind, message }
//!   TaskFinished / TaskFailed
//!   Shutdown (client dropped)            ───►  exit
//!   EOF / bad frame on W's socket: WorkerLost { W }, kill and reap W, start a replacement
//! ```
//!
//! # Who owns a task, and when it runs
//!
//! The scheduler in the client decides everything; workers never talk to
//! each other and never decide what to run. A task `T` is owned
//!
//! - by the scheduler until it emits `Run { T, W }`;
//! - by worker `W` from the moment the `Run` is sent until `W`'s `Done` or
//!   `Failed` for it is read, or until `W` is lost (its connection ends);
//! - by the scheduler again after that: a lost worker's runs are taken back
//!   (`WorkerLost`) and rescheduled, or failed with `KilledWorker` after
//!   `max_worker_deaths` deaths in a row.
//!
//! A run never moves between workers (there is no stealing between
//! processes yet): the scheduler's slots per worker (threads plus slack)
//! bound what waits in a worker's queue.
//!
//! So a task runs twice only when it is recomputed: its worker died while
//! running it, its result was held by a worker that died and is needed
//! again, an input of it was lost while it ran (the scheduler takes it
//! back), or it failed and has `retries` left. A result that arrives for a
//! run the scheduler no longer waits for is dropped.
//!
//! # Objects
//!
//! A result is an rkyv archive: inline if short, else a sealed memfd segment
//! written once by the producing worker (see [`objects`]). The client keeps
//! each result (a `RawArchive` or a `SegmentObject`) until the scheduler
//! releases it, and passes it to the workers that need it: inline bytes are
//! copied into the `Run`, segments go as descriptors — every reader maps the
//! producer's pages. All results flow through the client's store (a star),
//! but no payload byte is copied between processes. Literal arguments are
//! archived once at submit time, and published as segments if large.
//!
//! A worker keeps nothing once it has replied (the client holds every
//! result), so there is no `Release` message: releasing a result is the
//! client dropping its object, and a segment is freed by the kernel when the
//! last process holding it lets go.
//!
//! # Invariants
//!
//! - The engine lock is never held while task code runs (it runs in other
//!   processes), nor while a message is sent or received.
//! - The client holds a task's result exactly while the scheduler counts it
//!   in memory on a live worker: it is dropped on `Release` for its holder,
//!   on `Forget`, and when its holder is lost (the scheduler then recomputes
//!   it if it is still needed). A finished task keeps its arguments: they
//!   are its lineage.
//! - Every worker process is reaped by the supervisor: killed with SIGKILL
//!   when lost, told to exit (then killed if it lingers) when the client
//!   shuts down; and it dies with the client process (PR_SET_PDEATHSIG)
//!   whatever happens.

pub(crate) mod objects;
pub(crate) mod protocol;
mod state;
pub(crate) mod supervisor;
pub(crate) mod worker;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use shoal_core::Key;
use shoal_core::object::Obj;
use shoal_core::scheduler::{Dep, Event, NewTask, Scheduler, SchedulerConfig, TaskId};

use self::objects::Outgoing;
use self::protocol::ToWorker;
use self::state::{Effects, Interest, Spec, SpecArg, State};
use self::supervisor::{SpawnConfig, Supervisor};
use self::workers::Conn;
use super::{Engine, GraphNode, NodeArg, Status};
use crate::error::{Error, Result};

pub(crate) use self::worker::WORKER_HOOK;

/// How the engine is set up.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub workers: usize,
    pub threads_per_worker: usize,
    pub env: Vec<(String, String)>,
}

pub(crate) struct ProcessesEngine {
    state: Mutex<State>,
    /// Signalled when a task some client thread waits for finishes.
    changed: Condvar,
    supervisor: Mutex<Option<Supervisor>>,
    nthreads: usize,
    /// Prefix of the segments this client creates (for literal arguments).
    segment_prefix: String,
    next_segment: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Task code never runs under these locks; a panic under one can only be
    // a bug in shoal, and the state is the last consistent one: carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProcessesEngine {
    /// Starts the workers and waits until all of them said hello.
    pub(crate) fn start(config: Config) -> Result<Arc<ProcessesEngine>> {
        if worker::has_untaken_role() {
            return Err(Error::Start(
                "this process was started as a shoal worker but did not take the role; call shoal::init() \
                 first in main"
                    .into(),
            ));
        }
        shoal_core::registry::check()?;
        let workers = config.workers.max(1);
        let threads = config.threads_per_worker.max(1);
        static ENGINES: AtomicU64 = AtomicU64::new(0);
        let engine = Arc::new(ProcessesEngine {
            state: Mutex::new(State {
                sched: Scheduler::new(SchedulerConfig::default()),
                specs: Vec::new(),
                waiters: Vec::new(),
                closed: false,
                broken: None,
                actions: Vec::new(),
                workers: HashMap::new(),
            }),
            changed: Condvar::new(),
            supervisor: Mutex::new(None),
            nthreads: workers * threads,
            segment_prefix: format!("shoal-c{}.{}", std::process::id(), ENGINES.fetch_add(1, Ordering::Relaxed)),
            next_segment: AtomicU64::new(0),
        });
        let spawn = SpawnConfig { threads, env: config.env };
        let supervisor = Supervisor::start(Arc::downgrade(&engine), spawn)?;
        let ready = supervisor.start_workers(workers);
        *lock(&engine.supervisor) = Some(supervisor);
        if let Err(e) = ready {
            engine.shutdown();
            return Err(e);
        }
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Pids of the live worker processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.lock().workers.values().map(|c| c.pid).collect();
        pids.sort_unstable();
        pids
    }

    /// Wait on the condition variable until `done` says so, registering
    /// `interest` meanwhile.
    fn block_until<T>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mut done: impl FnMut(&State) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut st = self.lock();
        loop {
            if let Some(answer) = done(&st) {
                return Ok(Some(answer));
            }
            if st.closed {
                return Err(Error::Closed);
            }
            if let Some(reason) = &st.broken {
                return Err(Error::Start(reason.clone()));
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => Some(t),
                    _ => return Ok(None),
                },
                None => None,
            };
            st.waiters.push(interest);
            st = match timeout {
                Some(t) => self.changed.wait_timeout(st, t).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
                None => self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
            if let Some(pos) = st.waiters.iter().position(|w| *w == interest) {
                st.waiters.swap_remove(pos);
            }
        }
    }
}

impl Drop for ProcessesEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Engine for ProcessesEngine {
    fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>> {
        // Archive literal arguments before locking (once; large ones into
        // segments of their own), so that sending a run copies no big value.
        let mut nodes = nodes;
        for node in &mut nodes {
            for arg in &mut node.args {
                if let NodeArg::Value(obj) = arg {
                    *obj = objects::publish(obj, || self.segment_name("arg")).map_err(Error::Message)?;
                }
            }
        }
        let mut effects = Effects::default();
        let ids = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let tasks = nodes
                .iter()
                .map(|n| {
                    let mut deps: Vec<Dep> = Vec::new();
                    for arg in &n.args {
                        match arg {
                            NodeArg::Value(_) => {}
                            NodeArg::Dep(d) => deps.push(*d),
                            NodeArg::List(ds, _) => deps.extend_from_slice(ds),
                        }
                    }
                    dedup_deps(&mut deps);
                    NewTask { key: n.key, deps, wanted: n.wanted, priority: n.priority, retries: n.retries }
                })
                .collect();
            let mut actions = std::mem::take(&mut st.actions);
            let submitted = match st.sched.submit(tasks, &mut actions) {
                Ok(s) => s,
                Err(e) => {
                    st.actions = actions;
                    return Err(e.into());
                }
            };
            let ids: Vec<TaskId> = submitted.iter().map(|s| s.id).collect();
            let resolve = |d: &Dep| match *d {
                Dep::Node(i) => ids[i],
                Dep::Task(id) => id,
            };
            for (node, s) in nodes.into_iter().zip(&submitted) {
                if !s.new {
                    continue;
                }
                let args = node
                    .args
                    .into_iter()
                    .map(|arg| match arg {
                        NodeArg::Value(obj) => SpecArg::Value(obj),
                        NodeArg::Dep(d) => SpecArg::Dep(resolve(&d)),
                        NodeArg::List(ds, assemble) => SpecArg::List(ds.iter().map(resolve).collect(), assemble),
                    })
                    .collect();
                let index = s.id.index as usize;
                if st.specs.len() <= index {
                    st.specs.resize_with(index + 1, || None);
                }
                st.specs[index] = Some(Spec {
                    generation: s.id.generation,
                    cancelled: false,
                    func: node.key.func,
                    args,
                    result: None,
                });
            }
            st.apply(&mut actions, &mut effects);
            st.actions = actions;
            ids
        };
        self.finish(effects);
        Ok(ids)
    }

    fn release(&self, id: TaskId) {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.handle(Event::ClientReleased { task: id }, &mut effects);
        }
        self.finish(effects);
    }

    fn retain(&self, id: TaskId) {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.handle(Event::ClientRetained { task: id }, &mut effects);
        }
        self.finish(effects);
    }

    fn cancel(&self, id: TaskId) {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.handle(Event::Cancel { task: id }, &mut effects);
        }
        self.finish(effects);
    }

    fn status(&self, id: TaskId) -> Status {
        self.lock().status(id)
    }

    fn key(&self, id: TaskId) -> Option<Key> {
        self.lock().sched.key(id)
    }

    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status> {
        let status =
            self.block_until(Interest::Task(id), deadline, |st| Some(st.status(id)).filter(Status::is_finished))?;
        Ok(status.unwrap_or(Status::Pending))
    }

    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>> {
        let found = self.block_until(Interest::Any, deadline, |st| {
            let done: Vec<usize> =
                ids.iter().enumerate().filter(|(_, id)| st.status(**id).is_finished()).map(|(i, _)| i).collect();
            (!done.is_empty() || ids.is_empty()).then_some(done)
        })?;
        Ok(found.unwrap_or_default())
    }

    fn result(&self, id: TaskId) -> Result<Obj> {
        self.lock().result(id)
    }

    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        let st = self.lock();
        ids.iter().map(|&id| st.result(id)).collect()
    }

    fn nthreads(&self) -> usize {
        self.nthreads
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.pids()
    }

    /// Tells every worker to exit, then (through the supervisor) waits a
    /// moment for them, kills those left, and reaps them all. Stored results
    /// and arguments are dropped: their segments are freed.
    fn shutdown(&self) {
        let (conns, specs) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            let conns: Vec<Arc<Conn>> = st.workers.drain().map(|(_, c)| c).collect();
            (conns, std::mem::take(&mut st.specs))
        };
        self.changed.notify_all();
        if let Ok(payload) = protocol::encode(&ToWorker::Shutdown) {
            let outgoing = Outgoing { payload, segments: Vec::new() };
            for conn in &conns {
                // A worker that cannot be told is killed by the supervisor.
                let _ = conn.send(&outgoing);
            }
        }
        for conn in &conns {
            conn.close();
        }
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor {
            supervisor.stop();
        }
        drop(specs);
    }
}

/// A task that names the same input twice depends on it once.
fn dedup_deps(deps: &mut Vec<Dep>) {
    if deps.len() > 1 {
        let mut seen = std::collections::HashSet::with_capacity(deps.len());
        deps.retain(|d| seen.insert(*d));
    }
}
