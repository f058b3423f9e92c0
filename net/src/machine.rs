//! A machine's worker processes under its agent: the cluster worker started
//! with `SHOAL_WORKER_PROCESSES=N` is the machine's agent — one connection
//! to the scheduler, one data port, one store — and runs no task itself: it
//! starts `N` worker processes of the same binary (`shoal_shm::pool`, as the
//! processes mode does) and hands them the runs the scheduler sends it.
//!
//! # Why the agent is one worker to the scheduler
//!
//! The scheduler sees the machine as one worker of `N × threads` threads.
//! Where a result is, for placement and transfers, is a *machine*: every
//! process of it reads every result of it zero-copy (segments passed as
//! descriptors), so naming processes to the scheduler would only make it
//! move bytes that need no moving, and would need a second data port per
//! process. Which process runs a run, and the balance between processes,
//! stay on the machine, as the processes mode keeps its steals local.
//!
//! # Protocol (agent ↔ its processes, over `shoal_shm::uds`)
//!
//! ```text
//! scheduler ──Runs──► agent: queue (the machine's), in order
//!   dispatch: each queued run to the process with the fewest runs, while
//!   it holds fewer than threads × (1 + extra), extra paced by how long
//!   runs take (inputs: inline archives, or segment descriptors: results
//!   and copies of this machine)
//!                      agent ──Runs──► process ──Results [inline | fd]──► agent
//!   result: kept in the machine store if large (its segment), sent on
//!   to the scheduler (small inline, large as its size only); dispatch again
//! scheduler ──Steal { n }──► agent: up to n runs of its queue, newest first
//!                            (never one sent to a process) ──Stolen──► scheduler
//! scheduler ──Recall [T]──► agent: those queued ──Recalled──► scheduler;
//!   those in a process ──Recall──► it, its Recalled ──► scheduler
//! process ──Running [T]──► agent ──Running──► scheduler
//! over the store's memory limit with nothing left to spill (checked at
//!   each dispatch): a run goes to a process only when none is in one, so
//!   runs start one at a time; the queue stays takeable by the scheduler
//!   (Steal, Recall) meanwhile; under nine tenths of the limit, all slots
//!   again
//! a process lost (died, silent past dead_after: killed):
//!   its runs go back to the front of the queue (sent again with
//!   report_start); the results it made stay in the machine store; the
//!   supervisor starts a replacement
//! ```
//!
//! # Invariants
//!
//! - A run the scheduler sent is in exactly one place on the machine: the
//!   queue, or one process (`flight`), until its result, its `Recalled` or
//!   its `Stolen` goes to the scheduler — each exactly once.
//! - A run that a process had *started* (it said `Running`) when the
//!   process died counts a death against it; at [`MAX_DEATHS`] it fails
//!   (the task kills its process) instead of killing a third. A run sent
//!   again after a death is sent with `report_start`, so a start is known
//!   before the run can kill its process.
//! - The machine lock is never held while sending on a socket.
//! - Results live in the agent's store, not in the process that made
//!   them: a process's death loses none of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use shoal_core::driver::pacing::Pacing;
use shoal_core::protocol::{FailKind, FromWorker, Run, RunResult, ToWorker};
use shoal_core::scheduler::{TaskId, WorkerId};
use shoal_core::worker::{Flow, Outlet};
use shoal_shm::pool::{Conn, PoolHost, SpawnConfig, Supervisor};
use shoal_shm::uds::{self, RunBatch};

use crate::error::{NetError, Result};
use crate::store::Store;

/// Runs a process holds per thread beyond the running one, until the
/// first results say how long runs take: one at hand, so a thread that
/// ends a run starts the next without a round trip to the agent, while the
/// rest wait in the machine's queue, where any process that frees a slot
/// takes them (the balance between processes) and where the scheduler's
/// steals find them. Then [`Pacing`] sets it, as the processes mode's
/// driver does: about a millisecond of work per thread (short runs travel
/// by the dozen, long ones one at a time).
pub const FIRST_EXTRA_SLOTS_PER_THREAD: u32 = 1;
/// Deaths of processes that had started a run before the run fails (as
/// the processes mode's `max_worker_deaths`): a task that kills its
/// process fails instead of killing every replacement.
pub const MAX_DEATHS: u32 = 3;

/// How the machine's processes are set up.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Worker processes.
    pub processes: usize,
    /// Threads of each.
    pub threads: usize,
    /// A process silent this long is killed and replaced.
    pub silence_limit: Duration,
}

/// A run on a process, kept until it is answered: sent again if the
/// process dies.
struct Flight {
    on: WorkerId,
    run: Run,
    started: bool,
    deaths: u32,
}

/// A process of the machine.
struct Proc {
    conn: Arc<Conn>,
    runs: usize,
}

struct State {
    closed: bool,
    /// No process is left and none can be started: why.
    broken: Option<String>,
    procs: HashMap<WorkerId, Proc>,
    /// How many runs a process holds, from how long runs take.
    pacing: Pacing,
    /// Runs a process holds per thread beyond the running one.
    extra: u32,
    /// Runs waiting for a slot, and the deaths counted against each.
    queue: VecDeque<(Run, u32)>,
    flight: HashMap<TaskId, Flight>,
    /// Over the memory limit: runs start one at a time.
    paused: bool,
}

/// What to do after unlocking.
#[derive(Default)]
struct Effects {
    sends: HashMap<WorkerId, (Arc<Conn>, Vec<Run>)>,
    results: Vec<RunResult>,
}

/// The agent's worker processes: the pool host of their supervisor. `O`
/// is the agent's way to the scheduler (results, notices).
pub struct Machine<O: Outlet> {
    state: Mutex<State>,
    outlet: O,
    threads: usize,
    supervisor: Mutex<Option<Supervisor>>,
    /// The machine's store: whether it is over its memory limit.
    store: Store,
    /// Prefix of the segments the agent makes (inputs published for a
    /// process).
    prefix: String,
    next_segment: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks leaves the state half-made on a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clones a run (its inputs are shared objects): the machine keeps one
/// copy to send again if its process dies.
fn copy(run: &Run) -> Run {
    Run { task: run.task, func: run.func, inputs: run.inputs.clone(), report_start: run.report_start }
}

impl<O: Outlet> Machine<O> {
    /// Starts the processes (blocking until each said hello) under a
    /// supervisor reporting to the machine; `store` is the machine's (its
    /// memory limit paces the runs).
    pub fn start(config: &MachineConfig, outlet: O, store: Store) -> Result<Arc<Machine<O>>> {
        let machine = Arc::new(Machine {
            state: Mutex::new(State {
                closed: false,
                broken: None,
                procs: HashMap::new(),
                pacing: Pacing::new(FIRST_EXTRA_SLOTS_PER_THREAD),
                extra: FIRST_EXTRA_SLOTS_PER_THREAD,
                queue: VecDeque::new(),
                flight: HashMap::new(),
                paused: false,
            }),
            outlet,
            store,
            threads: config.threads.max(1),
            supervisor: Mutex::new(None),
            prefix: format!("shoal-a{}", std::process::id()),
            next_segment: Default::default(),
        });
        let spawn =
            SpawnConfig { threads: machine.threads, env: Vec::new(), silence_limit: Some(config.silence_limit) };
        let host: Weak<dyn PoolHost> = Arc::downgrade(&machine) as Weak<dyn PoolHost>;
        let supervisor = Supervisor::start(host, spawn).map_err(|e| NetError::Config(e.to_string()))?;
        let started = supervisor.start_workers(config.processes.max(1));
        *lock(&machine.supervisor) = Some(supervisor);
        if let Err(e) = started {
            machine.stop();
            return Err(NetError::Config(format!("could not start the machine's worker processes: {e}")));
        }
        Ok(machine)
    }

    /// Pids of the live processes.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.state).procs.values().map(|p| p.conn.pid).collect()
    }

    /// Handles one message from the scheduler.
    pub fn handle(&self, message: ToWorker) -> Flow {
        let mut fx = Effects::default();
        let mut recalls: Vec<(Arc<Conn>, Vec<TaskId>)> = Vec::new();
        {
            let mut st = lock(&self.state);
            match message {
                ToWorker::Runs(runs) => st.queue.extend(runs.into_iter().map(|run| (run, 0))),
                ToWorker::Steal { count } => {
                    let from = st.queue.len().saturating_sub(count as usize);
                    let stolen: Vec<TaskId> = st.queue.drain(from..).rev().map(|(r, _)| r.task).collect();
                    drop(st);
                    // One answer to every steal, as the worker runtime's.
                    self.outlet.send_stolen(stolen);
                    return Flow::Continue;
                }
                ToWorker::Recall(tasks) => {
                    let mut here = Vec::new();
                    let mut there: HashMap<WorkerId, Vec<TaskId>> = HashMap::new();
                    for task in tasks {
                        if let Some(at) = st.queue.iter().position(|(r, _)| r.task == task) {
                            st.queue.remove(at);
                            here.push(task);
                        } else if let Some(flight) = st.flight.get(&task) {
                            there.entry(flight.on).or_default().push(task);
                        }
                    }
                    for (worker, tasks) in there {
                        if let Some(p) = st.procs.get(&worker) {
                            recalls.push((Arc::clone(&p.conn), tasks));
                        }
                    }
                    if !here.is_empty() {
                        self.outlet.send_recalled(here);
                    }
                }
                ToWorker::Give { .. } => {
                    tracing::error!("internal error: the scheduler asked a machine's agent to give runs to a peer")
                }
                ToWorker::Shutdown => return Flow::Exit,
            }
            self.dispatch(&mut st, &mut fx);
        }
        self.carry_out(fx);
        for (conn, tasks) in recalls {
            match uds::control_to_worker(&ToWorker::Recall(tasks)) {
                Ok(frame) => {
                    if conn.send(&frame).is_err() {
                        conn.close();
                    }
                }
                Err(e) => tracing::error!("internal error: {e}"),
            }
        }
        Flow::Continue
    }

    /// Hands queued runs to processes with a free slot, the least loaded
    /// first (under the lock; sent by `carry_out`).
    fn dispatch(&self, st: &mut State, fx: &mut Effects) {
        if let Some(reason) = &st.broken {
            let reason = reason.clone();
            for (run, _) in st.queue.drain(..) {
                fx.results.push(failed(run.task, format!("this machine has no worker process left: {reason}")));
            }
            return;
        }
        self.pause_or_resume(st);
        let cap = self.threads * (1 + st.extra as usize);
        while !st.queue.is_empty() {
            if st.paused && !st.flight.is_empty() {
                break;
            }
            let Some((&worker, _)) = st.procs.iter().filter(|(_, p)| p.runs < cap).min_by_key(|(id, p)| (p.runs, **id))
            else {
                break;
            };
            let Some((run, deaths)) = st.queue.pop_front() else { break };
            let Some(proc) = st.procs.get_mut(&worker) else { break };
            proc.runs += 1;
            let conn = Arc::clone(&proc.conn);
            st.flight.insert(run.task, Flight { on: worker, run: copy(&run), started: false, deaths });
            fx.sends.entry(worker).or_insert_with(|| (conn, Vec::new())).1.push(run);
        }
    }

    /// Over the store's memory limit with nothing left to spill, runs
    /// start one at a time (`dispatch`), as in the processes mode: each
    /// running task may add its inputs' and its output's bytes, and one at a
    /// time still finishes the work. Runs a process already holds are left
    /// to it (a few per thread).
    fn pause_or_resume(&self, st: &mut State) {
        let pause = self.store.should_pause(st.paused);
        if pause == st.paused {
            return;
        }
        st.paused = pause;
        let s = self.store.stats();
        if pause {
            tracing::warn!(
                "this machine's results are over its memory limit ({} MiB in memory, limit {} MiB) with nothing \
                 more to spill: runs start one at a time until it is back under",
                s.memory_bytes >> 20,
                s.memory_limit >> 20
            );
        } else {
            tracing::info!("this machine's results are back under its memory limit: runs start on every slot again");
        }
    }

    /// Sends the runs of a pass (one batch per process) and the results
    /// of runs that cannot run.
    fn carry_out(&self, fx: Effects) {
        if !fx.results.is_empty() {
            self.outlet.send_results(fx.results);
        }
        for (_, (conn, runs)) in fx.sends {
            if let Err(e) = self.send_runs(&conn, runs) {
                // Its reader then reports it lost, and its runs go back.
                tracing::warn!("could not send runs to worker process {}: {e}; closing it", conn.pid);
                conn.close();
            }
        }
    }

    fn send_runs(&self, conn: &Conn, runs: Vec<Run>) -> std::result::Result<(), String> {
        let mut batch = RunBatch::new();
        for run in runs {
            let name = || {
                let n = self.next_segment.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{}-in{n}", self.prefix)
            };
            batch.push(run, name)?;
        }
        for frame in batch.finish().map_err(|e| e.to_string())? {
            conn.send(&frame)?;
        }
        Ok(())
    }

    /// Tells every process to exit, stops and reaps them. Runs not
    /// answered are the scheduler's business (the session ended).
    pub fn stop(&self) {
        let conns: Vec<Arc<Conn>> = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.queue.clear();
            st.flight.clear();
            st.procs.drain().map(|(_, p)| p.conn).collect()
        };
        if let Ok(frame) = uds::control_to_worker(&ToWorker::Shutdown) {
            for conn in &conns {
                let _ = conn.send(&frame);
            }
        }
        for conn in &conns {
            conn.close();
        }
        if let Some(supervisor) = lock(&self.supervisor).take() {
            supervisor.stop();
        }
    }
}

/// A run that cannot run here.
fn failed(task: TaskId, message: String) -> RunResult {
    RunResult::Failed { task, kind: FailKind::Error, message, type_name: String::new(), chain: Vec::new(), micros: 0 }
}

impl<O: Outlet> PoolHost for Machine<O> {
    fn joined(&self, conn: Arc<Conn>) -> bool {
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            if st.closed {
                return false;
            }
            st.broken = None;
            st.procs.insert(conn.id, Proc { conn, runs: 0 });
            self.dispatch(&mut st, &mut fx);
        }
        self.carry_out(fx);
        true
    }

    fn messages(&self, conn: &Arc<Conn>, messages: Vec<FromWorker>) -> std::result::Result<(), String> {
        let worker = conn.id;
        let mut fx = Effects::default();
        let mut running = Vec::new();
        let mut recalled = Vec::new();
        {
            let mut st = lock(&self.state);
            if st.closed {
                return Ok(());
            }
            for message in messages {
                match message {
                    FromWorker::Results(results) => {
                        for result in results {
                            let task = match &result {
                                RunResult::Done { task, .. } | RunResult::Failed { task, .. } => *task,
                            };
                            // A result of a run this process no longer
                            // holds (sent again elsewhere) is dropped.
                            if st.flight.get(&task).is_some_and(|f| f.on == worker) {
                                st.flight.remove(&task);
                                if let Some(p) = st.procs.get_mut(&worker) {
                                    p.runs = p.runs.saturating_sub(1);
                                }
                                st.pacing.note(result.micros());
                                if let Some(extra) = st.pacing.update() {
                                    st.extra = extra;
                                }
                                fx.results.push(result);
                            }
                        }
                    }
                    FromWorker::Running(tasks) => {
                        for task in tasks {
                            if let Some(f) = st.flight.get_mut(&task).filter(|f| f.on == worker) {
                                f.started = true;
                                running.push(task);
                            }
                        }
                    }
                    FromWorker::Recalled(tasks) => {
                        for task in tasks {
                            if st.flight.get(&task).is_some_and(|f| f.on == worker) {
                                st.flight.remove(&task);
                                if let Some(p) = st.procs.get_mut(&worker) {
                                    p.runs = p.runs.saturating_sub(1);
                                }
                                recalled.push(task);
                            }
                        }
                    }
                    FromWorker::Hello { .. } => return Err("sent a second hello".into()),
                    // The agent sends no `Steal` and no `Give`, and
                    // introduces no peers.
                    _ => return Err("sent a notice of a steal nobody asked for".into()),
                }
            }
            self.dispatch(&mut st, &mut fx);
        }
        if !running.is_empty() {
            self.outlet.send_running(running);
        }
        if !recalled.is_empty() {
            self.outlet.send_recalled(recalled);
        }
        self.carry_out(fx);
        Ok(())
    }

    fn lost(&self, worker: WorkerId) -> bool {
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            if st.closed {
                return false;
            }
            st.procs.remove(&worker);
            let mut back: Vec<Flight> = Vec::new();
            st.flight.retain(|_, f| {
                if f.on == worker {
                    back.push(Flight { on: f.on, run: copy(&f.run), started: f.started, deaths: f.deaths });
                    false
                } else {
                    true
                }
            });
            // Oldest first at the front, as they were sent.
            back.sort_by_key(|f| std::cmp::Reverse((f.run.task.generation, f.run.task.index)));
            for f in back {
                let deaths = f.deaths + u32::from(f.started);
                if deaths >= MAX_DEATHS {
                    fx.results.push(failed(
                        f.run.task,
                        format!(
                            "the worker process running it died {deaths} times (killed, out of memory, or crashed by \
                             the task)"
                        ),
                    ));
                } else {
                    let mut run = f.run;
                    run.report_start = true;
                    st.queue.push_front((run, deaths));
                }
            }
            self.dispatch(&mut st, &mut fx);
        }
        self.carry_out(fx);
        true
    }

    fn broken(&self, reason: String) {
        tracing::error!("the machine's worker processes are all lost and none can be started: {reason}");
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            if !st.procs.is_empty() || st.closed {
                return;
            }
            st.broken = Some(reason);
            self.dispatch(&mut st, &mut fx);
        }
        self.carry_out(fx);
    }
}
