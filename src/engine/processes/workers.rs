//! The engine's side of its workers: their connections, the messages they
//! send (turned into scheduler events), the runs sent to them, and the
//! steals between them.
//!
//! Runs are encoded and sent after the engine lock is released, all the
//! runs of one pass for one worker in one batch (as few frames as the
//! descriptor limit allows); a run whose inputs cannot be sent fails its
//! task, and a connection that cannot be written is closed, so that its
//! reader reports the worker lost.
//!
//! Stealing (the protocol is in the [module docs](super)): after every pass
//! over a worker's messages, and when a worker joins or is lost,
//! [`plan_steals`] pairs idle workers (fewer runs than threads) with busy
//! ones (more runs than threads) while the scheduler's queue is empty, and
//! a `Steal` goes to each busy one chosen.
//!
//! Pacing: the durations workers report with their results set the
//! scheduler's saturation (`shoal_core::driver::pacing::Pacing`), so short runs go to a worker by
//! the dozen and long ones one or two at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_core::TaskFailure;
use shoal_core::driver::describe_args;
use shoal_core::driver::events::{RunTimes, now_ns};
use shoal_core::failure::TaskError;
use shoal_core::object::{Input, Obj};
use shoal_core::protocol::FailKind;
use shoal_core::registry::{InputError, RunError};
use shoal_core::scheduler::{Event, TaskId, TaskState, WorkerId};

use super::state::{Effects, Held, Job, JobInput, State};
use super::{ProcessesEngine, STORE};
use shoal_core::driver::wait::lock;
use shoal_core::protocol::{FromWorker, Run, RunResult, ToWorker};
use shoal_shm::pool::{Conn, PoolHost};
use shoal_shm::store::{self, Fetched, SpillJob};
use shoal_shm::uds::{self, RunBatch};

/// A worker as the driver keeps it: its connection, and the steal
/// bookkeeping (changed under the driver's lock).
pub(crate) struct Link {
    pub(crate) conn: Arc<Conn>,
    /// The worker a `Steal` sent to this one is for, while its answer is on
    /// its way.
    thief: Option<WorkerId>,
    /// Its last `Stolen` gave nothing back and it has reported no result
    /// since: do not ask again yet (its runs are all started, or their
    /// results are on their way).
    dry: bool,
}

impl Link {
    fn new(conn: Arc<Conn>) -> Link {
        Link { conn, thief: None, dry: false }
    }
}

impl PoolHost for ProcessesEngine {
    /// A worker said hello: it can take tasks. `false` if the engine is
    /// shut down (the caller then stops the worker).
    fn joined(&self, conn: Arc<Conn>) -> bool {
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let (worker, nthreads) = (conn.id, conn.nthreads);
            st.backend.workers.insert(worker, Link::new(conn));
            st.broken = None;
            st.handle(Event::WorkerJoined { worker, nthreads }, &mut effects);
            steals = plan_steals(&mut st);
        }
        self.carry_out(effects);
        self.send_steals(steals);
        true
    }

    /// A worker's connection ended (it died, closed it, or broke the
    /// protocol): what it ran goes back to the scheduler; what it made stays
    /// in the store. `false` if the engine is shut down.
    fn lost(&self, worker: WorkerId) -> bool {
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.backend.workers.remove(&worker);
            // Its results live on in this machine's store (the client's):
            // the store holds them from now on, and nothing is recomputed.
            for spec in st.specs_mut() {
                if let Some(held) = spec.task.result.as_mut().filter(|h| h.worker == worker) {
                    held.worker = STORE;
                }
            }
            st.backend.store.worker_lost(worker, &mut effects.store);
            st.handle(Event::ProcessLost { worker, heir: STORE }, &mut effects);
            steals = plan_steals(&mut st);
        }
        self.carry_out(effects);
        self.send_steals(steals);
        true
    }

    /// No worker is left and none can be started: fail every wait.
    fn broken(&self, reason: String) {
        let st = self.lock();
        if st.backend.workers.is_empty() && !st.closed {
            drop(st);
            self.driver.break_down(reason);
        }
    }

    /// The messages that came from a worker in one pass of its reader
    /// (after its hello), handled under one lock. `Err` with a reason if
    /// one breaks the protocol: the caller then drops the connection.
    fn messages(&self, conn: &Arc<Conn>, messages: Vec<FromWorker>) -> std::result::Result<(), String> {
        let worker = conn.id;
        let seen = now_ns();
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            for message in messages {
                match message {
                    FromWorker::Hello { .. } => return Err("sent a second hello".into()),
                    FromWorker::Results(results) => {
                        if let Some(link) = st.backend.workers.get_mut(&worker) {
                            link.dry = false;
                        }
                        let mut pacing = lock(&self.pacing);
                        for result in &results {
                            pacing.note(result.micros());
                        }
                        if let Some(extra_slots_per_thread) = pacing.update() {
                            st.handle(Event::Saturation { extra_slots_per_thread }, &mut effects);
                        }
                        drop(pacing);
                        for result in results {
                            // A worker reports how long a run took, not when it
                            // started on this clock: it ended by the time its
                            // frame was read.
                            let times = RunTimes::ended_at(seen, result.micros());
                            if let Some(event) = result_event(&mut st, worker, result, &mut effects) {
                                if let Event::TaskFinished { nbytes, .. } = &event {
                                    st.events.transferred(*nbytes);
                                }
                                st.handle_run(event, times, &mut effects);
                            }
                        }
                    }
                    FromWorker::Running(tasks) => {
                        // Runs that started here: a loss of this worker now
                        // counts against them (stale ones are ignored).
                        for task in tasks {
                            if st.sched.processing_on(task) == Some(worker) {
                                st.handle(Event::TaskStarted { task, worker }, &mut effects);
                            }
                        }
                    }
                    FromWorker::Recalled(tasks) => {
                        for task in tasks {
                            // Never started: its inputs are no longer pinned
                            // for it, and its slot is free.
                            st.backend.store.run_ended(task, worker, &mut effects.store);
                            st.handle(Event::TaskStolen { task, from: worker, to: None }, &mut effects);
                        }
                    }
                    FromWorker::Stolen(tasks) => {
                        let Some(link) = st.backend.workers.get_mut(&worker) else { continue };
                        let Some(thief) = link.thief.take() else {
                            return Err("gave back runs nobody asked for".into());
                        };
                        link.dry = tasks.is_empty();
                        for task in tasks {
                            // That run ended without running: its inputs are
                            // no longer pinned for it (the thief's run pins
                            // them again).
                            st.backend.store.run_ended(task, worker, &mut effects.store);
                            st.handle(Event::TaskStolen { task, from: worker, to: Some(thief) }, &mut effects);
                        }
                    }
                }
            }
            steals = plan_steals(&mut st);
        }
        self.carry_out(effects);
        self.send_steals(steals);
        Ok(())
    }
}

impl ProcessesEngine {
    /// Everything done after unlocking: drop, wake clients, send runs,
    /// write spills.
    pub(crate) fn carry_out(&self, mut effects: Effects) {
        loop {
            let jobs = std::mem::take(&mut effects.jobs);
            // Free released results before waking clients, so a client that
            // sees its tasks done also sees their inputs freed.
            drop(std::mem::take(&mut effects.store.garbage));
            drop(std::mem::take(&mut effects.forgotten));
            drop(std::mem::take(&mut effects.store.files));
            if effects.wake_clients {
                self.driver.wake_clients();
            }
            let failures = self.send_jobs(jobs);
            // After the runs of this pass: a run sent and recalled in one
            // pass reaches its worker before its recall.
            self.send_recalls(std::mem::take(&mut effects.recalls));
            self.run_spills(std::mem::take(&mut effects.store.spills));
            if failures.is_empty() {
                return;
            }
            effects = Effects::default();
            let mut st = self.lock();
            for event in failures {
                if let Event::TaskFailed { task, worker, .. } = &event {
                    // A run not sent ended: its inputs are unpinned.
                    st.backend.store.run_ended(*task, *worker, &mut effects.store);
                }
                st.handle(event, &mut effects);
            }
        }
    }

    /// Sends the runs of one pass, one batch per worker; the failure events
    /// of runs whose inputs could not be sent. A broken connection is
    /// closed: its reader reports the loss.
    fn send_jobs(&self, jobs: Vec<Job>) -> Vec<Event> {
        let mut failures = Vec::new();
        // Few workers get runs in one pass: a short list, in first-run order.
        let mut batches: Vec<(Arc<Conn>, RunBatch)> = Vec::new();
        for job in jobs {
            let Job { id, key, func, worker, conn, inputs, error, report_start } = job;
            // Every input is resolved (a spilled one read back), even for a
            // run that fails: a read-back in progress must be finished.
            let inputs = self.resolve_inputs(inputs);
            let at = match batches.iter().position(|(c, _)| c.id == worker) {
                Some(at) => at,
                None => {
                    batches.push((conn, RunBatch::new()));
                    batches.len() - 1
                }
            };
            let batched = match error {
                Some(message) => Err(message),
                None => inputs.and_then(|inputs| {
                    batches[at].1.push(Run { task: id, func, inputs, report_start }, || self.segment_name("in"))
                }),
            };
            if let Err(message) = batched {
                let failure = TaskFailure::error(key, format!("could not send its inputs: {message}"));
                failures.push(Event::TaskFailed { task: id, worker, failure });
            }
        }
        for (conn, batch) in batches {
            let sent = batch
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|frames| frames.iter().try_for_each(|frame| conn.send(frame)));
            if let Err(e) = sent {
                if !self.lock().closed {
                    tracing::warn!("cannot send tasks to worker {} (pid {}): {e}; dropping it", conn.id.0, conn.pid);
                }
                conn.close();
            }
        }
        failures
    }

    /// A run's inputs in hand: spilled ones read back. All are resolved;
    /// the first error is returned.
    fn resolve_inputs(&self, inputs: Vec<JobInput>) -> std::result::Result<Vec<Input>, String> {
        let mut error = None;
        let mut resolve = |fetched| match self.resolve(fetched) {
            Ok(obj) => Some(obj),
            Err(e) => {
                error.get_or_insert(e);
                None
            }
        };
        let inputs: Vec<Input> = inputs
            .into_iter()
            .filter_map(|input| match input {
                JobInput::One(fetched) => resolve(fetched).map(Input::One),
                JobInput::List(items) => Some(Input::List(items.into_iter().filter_map(&mut resolve).collect())),
            })
            .collect();
        match error {
            Some(e) => Err(e),
            None => Ok(inputs),
        }
    }

    /// Sends the recalls of one pass: one message per worker. A broken
    /// connection is closed: its reader reports the loss.
    fn send_recalls(&self, recalls: Vec<(Arc<Conn>, TaskId)>) {
        let mut by_worker: Vec<(Arc<Conn>, Vec<TaskId>)> = Vec::new();
        for (conn, task) in recalls {
            match by_worker.iter_mut().find(|(c, _)| c.id == conn.id) {
                Some((_, tasks)) => tasks.push(task),
                None => by_worker.push((conn, vec![task])),
            }
        }
        for (conn, tasks) in by_worker {
            let sent = uds::control_to_worker(&ToWorker::Recall(tasks))
                .map_err(|e| e.to_string())
                .and_then(|frame| conn.send(&frame));
            if let Err(e) = sent {
                if !self.lock().closed {
                    tracing::warn!("shoal: cannot send to worker {} (pid {}): {e}; dropping it", conn.id.0, conn.pid);
                }
                conn.close();
            }
        }
    }

    /// Sends the steals [`plan_steals`] chose.
    fn send_steals(&self, steals: Vec<(Arc<Conn>, u32)>) {
        for (victim, count) in steals {
            let sent = uds::control_to_worker(&ToWorker::Steal { count })
                .map_err(|e| e.to_string())
                .and_then(|frame| victim.send(&frame));
            if let Err(e) = sent {
                if !self.lock().closed {
                    tracing::warn!("cannot send to worker {} (pid {}): {e}; dropping it", victim.id.0, victim.pid);
                }
                victim.close();
            }
        }
    }

    /// Writes each object to a spill file, outside the lock, then records
    /// the outcome under it.
    pub(crate) fn run_spills(&self, jobs: Vec<SpillJob>) {
        for job in jobs {
            let (serial, obj, result) = job.write();
            let mut effects = Effects::default();
            let failure = self.lock().backend.store.spill_done(serial, obj, result, &mut effects.store);
            if let Some(e) = failure {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "could not spill a result to disk, so it stays in shared memory over the \
                         memory limit (further failures are counted in Client::store_stats, not logged): {e}"
                    );
                });
            }
            drop(effects);
        }
    }

    /// The object behind a fetch: read back from its spill file (and
    /// installed in the store again), or waited for if another thread is
    /// doing that.
    pub(crate) fn resolve(&self, fetched: Fetched) -> std::result::Result<Obj, String> {
        let mut effects = Effects::default();
        let result = store::resolve(
            fetched,
            || self.segment_name("back"),
            |cell, result| self.lock().backend.store.loaded(cell, result, &mut effects.store),
        );
        self.carry_out(effects);
        result
    }

    pub(crate) fn segment_name(&self, what: &str) -> String {
        format!("{}-{what}{}", self.segment_prefix, self.next_segment.fetch_add(1, Ordering::Relaxed))
    }
}

/// The scheduler event for one result from `worker`, keeping the result in
/// the client's store if the scheduler takes it.
fn result_event(st: &mut State, worker: WorkerId, result: RunResult, effects: &mut Effects) -> Option<Event> {
    let task = match &result {
        RunResult::Done { task, .. } | RunResult::Failed { task, .. } => *task,
    };
    // The run ended: its inputs are no longer pinned for it.
    st.backend.store.run_ended(task, worker, &mut effects.store);
    Some(match result {
        RunResult::Done { task, result, nbytes, .. } => {
            // Keep the result only if the scheduler takes this run's result
            // (it is processing on this worker); a late or duplicate run's
            // copy is dropped.
            let accepted = st.sched.state(task) == Some(TaskState::Processing)
                && st.sched.processing_on(task) == Some(worker)
                && st.spec(task).is_some();
            if accepted {
                let slot = st.backend.store.hold(result, &mut effects.store);
                let old = st.spec_mut(task).and_then(|spec| spec.task.result.replace(Held { slot, worker }));
                if let Some(old) = old {
                    st.backend.store.release(old.slot, &mut effects.store);
                }
            } else {
                effects.store.garbage.push(result);
            }
            Event::TaskFinished { task, worker, nbytes }
        }
        RunResult::Failed { task, kind, message, type_name, chain, .. } => {
            let key = st.sched.key(task)?;
            let arguments = || st.spec(task).map(|spec| describe_args(&spec.task.args, |id| st.sched.key(id)));
            let failure = match kind {
                FailKind::Error => TaskFailure::from_run(
                    key,
                    RunError::Returned(TaskError::from_parts(type_name, message, chain)),
                    arguments,
                ),
                FailKind::Panic => TaskFailure::Panic { key, item: None, message, arguments: arguments() },
                FailKind::Input => TaskFailure::from_run(key, RunError::Input(InputError(message)), arguments),
            };
            Event::TaskFailed { task, worker, failure }
        }
    })
}

/// The steals to ask for now: `(victim, how many runs)`. Only while the
/// scheduler's queue is empty (else idle workers get queued tasks), from a
/// worker with more runs than threads (some wait there unstarted) for one
/// with fewer (a thread idles), at most one steal on its way per victim and
/// per thief, and not from a victim whose last answer was empty until it
/// reports a result. Each steal asks for half the difference of the two
/// loads (at least one, at most the victim's excess), so that, with the
/// scheduler sending the stolen runs to the thief, the two end up even.
fn plan_steals(st: &mut State) -> Vec<(Arc<Conn>, u32)> {
    if st.backend.workers.len() < 2 || st.sched.count(TaskState::Ready) > 0 {
        return Vec::new();
    }
    // Thieves a steal is on its way for already.
    let awaited: Vec<WorkerId> = st.backend.workers.values().filter_map(|l| l.thief).collect();
    let mut thieves: Vec<(usize, WorkerId)> = Vec::new();
    let mut victims: Vec<(usize, usize, WorkerId)> = Vec::new();
    for (&id, link) in &st.backend.workers {
        let Some(load) = st.sched.load(id) else { continue };
        let threads = link.conn.nthreads as usize;
        if load < threads {
            if !awaited.contains(&id) {
                thieves.push((load, id));
            }
        } else if load > threads && link.thief.is_none() && !link.dry {
            victims.push((load - threads, load, id));
        }
    }
    thieves.sort_unstable();
    victims.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
    let mut steals = Vec::new();
    for ((thief_load, thief), (excess, load, victim)) in thieves.into_iter().zip(victims) {
        let count = ((load - thief_load) / 2).clamp(1, excess);
        if let Some(link) = st.backend.workers.get_mut(&victim) {
            link.thief = Some(thief);
            steals.push((Arc::clone(&link.conn), u32::try_from(count).unwrap_or(u32::MAX)));
        }
    }
    steals
}
