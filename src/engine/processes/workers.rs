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
//! scheduler's saturation ([`Pacing`]), so short runs go to a worker by
//! the dozen and long ones one or two at a time.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::TaskFailure;
use shoal_core::failure::TaskError;
use shoal_core::object::{Assemble, Obj};
use shoal_core::registry::{InputError, RunError};
use shoal_core::scheduler::{Event, TaskId, TaskState, WorkerId};
use shoal_shm::fdpass;

use super::objects::{self, Outgoing};
use super::protocol::{self, Batcher, ClientMsg, FailKind, RunResult, ToWorker, WireRun};
use super::state::{Effects, Held, Job, JobInput, State};
use super::{ProcessesEngine, lock};
use crate::engine::describe_spec_args;

/// A run's input in hand.
enum Input {
    One(Obj),
    List(Vec<Obj>, Assemble),
}

/// `Conn::thief` when no steal is on its way.
const NO_THIEF: u32 = u32::MAX;

/// Work to keep queued per worker thread, in microseconds of runs: many
/// client round trips' worth, so that runs and results travel in large
/// batches, and little enough that with long tasks a worker holds only the
/// next run or two (priorities and stealing keep their say).
const QUEUE_MICROS: f64 = 1_000.0;
/// Bounds of the scheduler's `extra_slots_per_thread` that [`Pacing`] sets.
const MIN_EXTRA_SLOTS: u32 = 1;
const MAX_EXTRA_SLOTS: u32 = 64;

/// How many runs to queue on each worker thread, learned from how long
/// runs take: about [`QUEUE_MICROS`] of work per thread, between
/// [`MIN_EXTRA_SLOTS`] and [`MAX_EXTRA_SLOTS`] beyond the running one.
pub(crate) struct Pacing {
    /// Moving average of the runs' durations in the workers (µs).
    mean_micros: Option<f64>,
    /// The scheduler's `extra_slots_per_thread` now.
    extra: u32,
}

impl Pacing {
    pub(crate) fn new(extra: u32) -> Pacing {
        Pacing { mean_micros: None, extra }
    }

    /// Notes how long one run took.
    fn note(&mut self, micros: u32) {
        let x = f64::from(micros);
        self.mean_micros = Some(self.mean_micros.map_or(x, |m| m + (x - m) / 8.0));
    }

    /// The new `extra_slots_per_thread`, if it should change: only by a
    /// factor of two or more, so that noise does not churn it.
    fn update(&mut self) -> Option<u32> {
        let per_thread = (QUEUE_MICROS / self.mean_micros?.max(1.0)).round();
        // In range after the clamp: the cast cannot truncate.
        let want = (per_thread - 1.0).clamp(f64::from(MIN_EXTRA_SLOTS), f64::from(MAX_EXTRA_SLOTS)) as u32;
        if want >= self.extra.saturating_mul(2) || want.saturating_mul(2) <= self.extra {
            self.extra = want;
            return Some(want);
        }
        None
    }
}

/// The client's end of a worker's socket.
pub(crate) struct Conn {
    pub id: WorkerId,
    pub pid: u32,
    pub socket: UnixStream,
    /// Threads of the worker's pool.
    pub nthreads: u32,
    /// One message at a time: a message may take several `sendmsg` calls.
    send_lock: Mutex<()>,
    /// The worker a `Steal` sent to this one is for, while its answer is on
    /// its way; [`NO_THIEF`] otherwise. Changed under the engine lock.
    thief: AtomicU32,
    /// Its last `Stolen` gave nothing back and it has reported no result
    /// since: do not ask again yet (its runs are all started, or their
    /// results are on their way). Changed under the engine lock.
    dry: AtomicBool,
}

impl Conn {
    pub(crate) fn new(id: WorkerId, pid: u32, socket: UnixStream, nthreads: u32) -> Conn {
        Conn {
            id,
            pid,
            socket,
            nthreads,
            send_lock: Mutex::new(()),
            thief: AtomicU32::new(NO_THIEF),
            dry: AtomicBool::new(false),
        }
    }

    pub(super) fn send(&self, outgoing: &Outgoing) -> std::result::Result<(), String> {
        let fds = outgoing.fds().map_err(|e| e.to_string())?;
        let _guard = lock(&self.send_lock);
        fdpass::send(&self.socket, &outgoing.payload, &fds).map_err(|e| e.to_string())
    }

    /// Ends the connection both ways: the worker reads the end of the
    /// stream, and so does this side's reader thread.
    pub(crate) fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl ProcessesEngine {
    /// A worker said hello: it can take tasks. `false` if the engine is
    /// shut down (the caller then stops the worker).
    pub(crate) fn add_worker(&self, conn: Arc<Conn>, nthreads: usize) -> bool {
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let worker = conn.id;
            st.workers.insert(worker, conn);
            st.broken = None;
            st.handle(Event::WorkerJoined { worker, nthreads: nthreads as u32 }, &mut effects);
            steals = plan_steals(&st);
        }
        self.finish(effects);
        self.send_steals(steals);
        true
    }

    /// A worker's connection ended (it died, closed it, or broke the
    /// protocol): what it ran goes back to the scheduler, what it held is
    /// lost. `false` if the engine is shut down.
    pub(crate) fn lose_worker(&self, worker: WorkerId) -> bool {
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.workers.remove(&worker);
            let mut actions = std::mem::take(&mut st.actions);
            st.sched.handle(Event::WorkerLost { worker }, &mut actions);
            let State { specs, store, .. } = &mut *st;
            for spec in specs.iter_mut().flatten() {
                if spec.result.as_ref().is_some_and(|h| h.worker == worker)
                    && let Some(held) = spec.result.take()
                {
                    store.release(held.slot, &mut effects);
                }
            }
            store.worker_lost(worker, &mut effects);
            st.apply(&mut actions, &mut effects);
            st.actions = actions;
            steals = plan_steals(&st);
        }
        self.finish(effects);
        self.send_steals(steals);
        true
    }

    /// No worker is left and none can be started: fail every wait.
    pub(crate) fn break_down(&self, reason: String) {
        let mut st = self.lock();
        if st.workers.is_empty() && !st.closed {
            st.broken = Some(reason);
            drop(st);
            self.changed.notify_all();
        }
    }

    /// The messages that came from a worker in one pass of its reader
    /// (after its hello), handled under one lock. `Err` with a reason if
    /// one breaks the protocol: the caller then drops the connection.
    pub(crate) fn on_messages(&self, conn: &Conn, messages: Vec<ClientMsg>) -> std::result::Result<(), String> {
        let worker = conn.id;
        let mut effects = Effects::default();
        let steals;
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            for message in messages {
                match message {
                    ClientMsg::Hello { .. } => return Err("sent a second hello".into()),
                    ClientMsg::Results(results) => {
                        conn.dry.store(false, Ordering::Relaxed);
                        let mut pacing = lock(&self.pacing);
                        for result in &results {
                            match result {
                                RunResult::Done { micros, .. } | RunResult::Failed { micros, .. } => {
                                    pacing.note(*micros)
                                }
                            }
                        }
                        if let Some(extra_slots_per_thread) = pacing.update() {
                            st.handle(Event::Saturation { extra_slots_per_thread }, &mut effects);
                        }
                        drop(pacing);
                        for result in results {
                            if let Some(event) = result_event(&mut st, worker, result, &mut effects) {
                                st.handle(event, &mut effects);
                            }
                        }
                    }
                    ClientMsg::Stolen(tasks) => {
                        let thief = conn.thief.swap(NO_THIEF, Ordering::Relaxed);
                        if thief == NO_THIEF {
                            return Err("gave back runs nobody asked for".into());
                        }
                        conn.dry.store(tasks.is_empty(), Ordering::Relaxed);
                        for task in tasks {
                            // That run ended without running: its inputs are
                            // no longer pinned for it (the thief's run pins
                            // them again).
                            st.store.run_ended(task, worker, &mut effects);
                            st.handle(
                                Event::TaskStolen { task, from: worker, to: Some(WorkerId(thief)) },
                                &mut effects,
                            );
                        }
                    }
                }
            }
            steals = plan_steals(&st);
        }
        self.finish(effects);
        self.send_steals(steals);
        Ok(())
    }

    /// Everything done after unlocking: drop, wake clients, send runs,
    /// write spills.
    pub(super) fn finish(&self, mut effects: Effects) {
        loop {
            let jobs = std::mem::take(&mut effects.jobs);
            // Free released results before waking clients, so a client that
            // sees its tasks done also sees their inputs freed.
            drop(std::mem::take(&mut effects.garbage));
            drop(std::mem::take(&mut effects.forgotten));
            drop(std::mem::take(&mut effects.files));
            if effects.wake_clients {
                self.changed.notify_all();
            }
            let failures = self.send_jobs(jobs);
            self.run_spills(std::mem::take(&mut effects.spills));
            if failures.is_empty() {
                return;
            }
            effects = Effects::default();
            let mut st = self.lock();
            for event in failures {
                if let Event::TaskFailed { task, worker, .. } = &event {
                    // A run not sent ended: its inputs are unpinned.
                    st.store.run_ended(*task, *worker, &mut effects);
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
        let mut batches: Vec<(Arc<Conn>, Batcher<WireRun>)> = Vec::new();
        for job in jobs {
            let Job { id, key, func, worker, conn, inputs, error } = job;
            // Every input is resolved (a spilled one read back), even for a
            // run that fails: a read-back in progress must be finished.
            let inputs = self.resolve_inputs(inputs);
            let at = match batches.iter().position(|(c, _)| c.id == worker) {
                Some(at) => at,
                None => {
                    batches.push((conn, Batcher::new()));
                    batches.len() - 1
                }
            };
            let batched = match error {
                Some(message) => Err(message),
                None => inputs
                    .and_then(|inputs| self.encode_run(id, func, inputs))
                    .and_then(|(run, segments)| batches[at].1.push(run, segments)),
            };
            if let Err(message) = batched {
                let failure = TaskFailure::error(key, format!("could not send its inputs: {message}"));
                failures.push(Event::TaskFailed { task: id, worker, failure });
            }
        }
        for (conn, batcher) in batches {
            for (runs, segments) in batcher.finish() {
                let sent = protocol::encode(&ToWorker::Runs { runs })
                    .map_err(|e| e.to_string())
                    .and_then(|payload| conn.send(&Outgoing { payload, segments }));
                if let Err(e) = sent {
                    if !self.lock().closed {
                        eprintln!(
                            "shoal: cannot send tasks to worker {} (pid {}): {e}; dropping it",
                            conn.id.0, conn.pid
                        );
                    }
                    conn.close();
                    break;
                }
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
                JobInput::List(items, assemble) => {
                    let items: Vec<Obj> = items.into_iter().filter_map(&mut resolve).collect();
                    Some(Input::List(items, assemble))
                }
            })
            .collect();
        match error {
            Some(e) => Err(e),
            None => Ok(inputs),
        }
    }

    /// Sends the steals [`plan_steals`] chose.
    fn send_steals(&self, steals: Vec<(Arc<Conn>, u32)>) {
        for (victim, count) in steals {
            let sent = protocol::encode(&ToWorker::Steal { count })
                .map_err(|e| e.to_string())
                .and_then(|payload| victim.send(&Outgoing { payload, segments: Vec::new() }));
            if let Err(e) = sent {
                if !self.lock().closed {
                    eprintln!("shoal: cannot send to worker {} (pid {}): {e}; dropping it", victim.id.0, victim.pid);
                }
                victim.close();
            }
        }
    }

    /// One run on the wire, and the segments it names.
    fn encode_run(
        &self,
        id: TaskId,
        func: u32,
        inputs: Vec<Input>,
    ) -> std::result::Result<(WireRun, Vec<Obj>), String> {
        let mut segments = Vec::new();
        let mut wire = Vec::with_capacity(inputs.len());
        for input in inputs {
            let obj = match input {
                Input::One(obj) => obj,
                // A `Vec<T>` made of several results is assembled here, in
                // the client: the function that does it cannot cross processes.
                Input::List(items, assemble) => assemble(&items).map_err(|e| e.to_string())?,
            };
            wire.push(objects::wire(&obj, || self.segment_name("list"), &mut segments)?);
        }
        Ok((WireRun { task: id.into(), func, inputs: wire }, segments))
    }

    pub(super) fn segment_name(&self, what: &str) -> String {
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
    st.store.run_ended(task, worker, effects);
    Some(match result {
        RunResult::Done { task, result, nbytes, .. } => {
            // Keep the result only if the scheduler takes this run's result
            // (it is processing on this worker); a late or duplicate run's
            // copy is dropped.
            let accepted = st.sched.state(task) == Some(TaskState::Processing)
                && st.sched.processing_on(task) == Some(worker)
                && st.spec(task).is_some();
            if accepted {
                let slot = st.store.hold(result, effects);
                let old = st.spec_mut(task).and_then(|spec| spec.result.replace(Held { slot, worker }));
                if let Some(old) = old {
                    st.store.release(old.slot, effects);
                }
            } else {
                effects.garbage.push(result);
            }
            Event::TaskFinished { task, worker, nbytes }
        }
        RunResult::Failed { task, kind, message, type_name, chain, .. } => {
            let key = st.sched.key(task)?;
            let arguments = || st.spec(task).map(|spec| describe_spec_args(&spec.args, |id| st.sched.key(id)));
            let failure = match kind {
                FailKind::Error => TaskFailure::from_run(
                    key,
                    RunError::Returned(TaskError::from_parts(type_name, message, chain)),
                    arguments,
                ),
                FailKind::Panic => TaskFailure::Panic { key, message, arguments: arguments() },
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
fn plan_steals(st: &State) -> Vec<(Arc<Conn>, u32)> {
    if st.workers.len() < 2 || st.sched.count(TaskState::Ready) > 0 {
        return Vec::new();
    }
    // Thieves a steal is on its way for already.
    let awaited: Vec<u32> =
        st.workers.values().map(|c| c.thief.load(Ordering::Relaxed)).filter(|&t| t != NO_THIEF).collect();
    let mut thieves: Vec<(usize, WorkerId)> = Vec::new();
    let mut victims: Vec<(usize, usize, &Arc<Conn>)> = Vec::new();
    for conn in st.workers.values() {
        let Some(load) = st.sched.load(conn.id) else { continue };
        let threads = conn.nthreads as usize;
        if load < threads {
            if !awaited.contains(&conn.id.0) {
                thieves.push((load, conn.id));
            }
        } else if load > threads && conn.thief.load(Ordering::Relaxed) == NO_THIEF && !conn.dry.load(Ordering::Relaxed)
        {
            victims.push((load - threads, load, conn));
        }
    }
    thieves.sort_unstable();
    victims.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.2.id.cmp(&b.2.id)));
    thieves
        .into_iter()
        .zip(victims)
        .map(|((thief_load, thief), (excess, load, victim))| {
            let count = ((load - thief_load) / 2).clamp(1, excess);
            victim.thief.store(thief.0, Ordering::Relaxed);
            (Arc::clone(victim), u32::try_from(count).unwrap_or(u32::MAX))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_queues_many_short_runs_and_few_long_ones() {
        let mut pacing = Pacing::new(8);
        assert_eq!(pacing.update(), None, "nothing measured yet");
        // Runs of a microsecond or two: as many as allowed.
        for micros in [1, 2, 1, 1] {
            pacing.note(micros);
        }
        assert_eq!(pacing.update(), Some(MAX_EXTRA_SLOTS));
        assert_eq!(pacing.update(), None, "no change, no event");
        // Runs of 100 µs: about 1 ms of work per thread.
        for _ in 0..60 {
            pacing.note(100);
        }
        assert_eq!(pacing.update(), Some(9));
        // Noise within a factor of two changes nothing.
        for _ in 0..60 {
            pacing.note(70);
        }
        assert_eq!(pacing.update(), None);
        // Long runs: the next one only.
        for _ in 0..60 {
            pacing.note(250_000);
        }
        assert_eq!(pacing.update(), Some(MIN_EXTRA_SLOTS));
        pacing.note(u32::MAX);
        assert_eq!(pacing.update(), None);
    }
}
