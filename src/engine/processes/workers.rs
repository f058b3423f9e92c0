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
//! a `Give` goes to each busy one chosen; the runs go worker to worker.
//!
//! # Moves: two notices, and the races between them
//!
//! A move of task `T`'s run from victim `V` to thief `W` is reported twice:
//! `Gave { T, to: W }` on `V`'s connection, written before the runs leave
//! `V`, and `Adopted { T, from: V }` on `W`'s, written before any result of
//! `T` (the worker's outbox sends notices before results). The two
//! connections are read by two reader threads, in either order; each alone
//! is read in order. [`note_move`] applies the first notice of a pair as the
//! move (`Event::TaskMoved`, the store's pins follow: `Store::run_moved`)
//! and counts the second as a no-op (`Procs::moves` counts both sides per
//! (task, from, to), so the n-th `Gave` pairs with the n-th `Adopted` even
//! if a run goes back and forth). The races:
//!
//! - **`Adopted` before `Gave`.** The move is applied on `Adopted`; `Gave`
//!   is then the pair's second. A result of `T` from `W` always comes after
//!   `Adopted` on `W`'s connection, so the scheduler sees it where it ran.
//! - **The victim dies after giving.** Its `Gave` was written before the
//!   runs left it, so its reader reads the `Gave` before the end of the
//!   connection: the move is applied before `ProcessLost { V }`, which then
//!   does not take back what `V` gave (it is `W`'s).
//! - **The victim dies between its claim and its `Gave`.** The runs never
//!   left it: `ProcessLost { V }` reschedules them (they are still `V`'s),
//!   and nothing reaches `W`.
//! - **The victim dies between its `Gave` and the runs** (or mid-way). The
//!   move was applied, but `W` never gets them. `W` reads the end of its
//!   channel from `V` after everything `V` wrote on it, and says
//!   `PeerGone(V)` after the `Adopted` of all of that: a run listed in a
//!   `Gave` of `V`'s that `W` had not adopted by then never arrived, and
//!   goes back to the queue ([`peer_gone`]); a `Gave` of `V`'s read after
//!   `PeerGone(V)` (the two connections race) finds `(V, W)` in
//!   `Procs::gone` and requeues its runs at once, unless `W` adopted them.
//! - **The thief dies before its `Adopted`, or after.** Once either notice
//!   is read, `T` is `W`'s: `ProcessLost { W }` reschedules it like any run
//!   of `W`'s (never started elsewhere, so no death is counted against it).
//!   If `W` was lost before the `Gave` is read, the move finds `W` gone and
//!   the scheduler queues `T` again.
//! - **`T` recalled or cancelled meanwhile.** A `Recall` that reaches `V`
//!   after its claim finds `T` not queued there and gives nothing back; the
//!   scheduler's abandoned run moves with the move to `W`, which is sent a
//!   `Recall` in turn (`Event::TaskMoved`), and answers for `T` however its
//!   run ended. A `Recall` sent to `W` before `T` reached it finds nothing;
//!   `W` then runs `T` and answers with its result, which frees the slot.
//! - **A notice about a forgotten task**: the scheduler ignores stale ids;
//!   the store has no run to move.
//!
//! When a worker is lost no notice can come from it any more: pairs that
//! wait for its side are dropped from `Procs::moves`, and `Procs::gone`
//! forgets it.
//!
//! Pacing: the durations workers report with their results set the
//! scheduler's saturation (`shoal_core::driver::pacing::Pacing`), so short runs go to a worker by
//! the dozen and long ones one or two at a time.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The worker a `Give` sent to this one is for, while its `Gave` is on
    /// its way.
    thief: Option<WorkerId>,
    /// Its last `Gave` listed nothing and it has reported no result since:
    /// do not ask again yet (its runs are all started, or their results are
    /// on their way).
    dry: bool,
    /// It was sent its channels to the workers live when it joined (and
    /// they theirs to it): it may give and take runs.
    peered: bool,
}

impl Link {
    fn new(conn: Arc<Conn>) -> Link {
        Link { conn, thief: None, dry: false, peered: false }
    }
}

/// The two notices of the moves of one task from one worker to another, as
/// far as they came: the victim's `Gave` and the thief's `Adopted`. The
/// first applies the move; the second of the pair is a no-op. Each
/// connection is read in order, so the n-th `Gave` of a (task, from, to)
/// pairs with its n-th `Adopted`.
#[derive(Default, Clone, Copy)]
pub(crate) struct Notices {
    gave: u32,
    adopted: u32,
}

/// Which notice of a move.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The victim's `Gave`.
    Gave,
    /// The thief's `Adopted`.
    Adopted,
}

impl PoolHost for ProcessesEngine {
    /// A worker said hello: it can take tasks. `false` if the engine is
    /// shut down (the caller then stops the worker).
    fn joined(&self, conn: Arc<Conn>) -> bool {
        let mut effects = Effects::default();
        let steals;
        let others: Vec<Arc<Conn>>;
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let (worker, nthreads) = (conn.id, conn.nthreads);
            others = st.backend.workers.values().map(|link| Arc::clone(&link.conn)).collect();
            st.backend.workers.insert(worker, Link::new(Arc::clone(&conn)));
            st.broken = None;
            st.handle(Event::WorkerJoined { worker, nthreads }, &mut effects);
            steals = plan_steals(&mut st);
        }
        self.carry_out(effects);
        self.send_steals(steals);
        // Its channels to the others, and theirs to it: then (and only
        // then, so a `Give` never names a peer its victim has not met) it
        // takes part in steals.
        introduce(&conn, &others);
        let steals = {
            let mut st = self.lock();
            let closed = st.closed;
            match st.backend.workers.get_mut(&conn.id) {
                Some(link) if !closed => {
                    link.peered = true;
                    plan_steals(&mut st)
                }
                _ => Vec::new(),
            }
        };
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
            // No notice of a move can come from it any more: a move that
            // waits for its `Adopted` is on it (and goes back to the queue
            // with its other runs), one that waits for its `Gave` was
            // applied already.
            st.backend.moves.retain(|&(_, from, to), n| {
                !(to == worker && n.gave > n.adopted || from == worker && n.adopted > n.gave)
            });
            st.backend.gone.retain(|&(victim, thief)| victim != worker && thief != worker);
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
                    // This engine sends no `Steal`: runs move worker to worker.
                    FromWorker::Stolen(_) => return Err("gave back runs nobody asked for".into()),
                    FromWorker::Gave { tasks, to } => {
                        let Some(link) = st.backend.workers.get_mut(&worker) else { continue };
                        if link.thief.take() != Some(to) {
                            return Err(format!("gave runs to worker {} unasked", to.0));
                        }
                        link.dry = tasks.is_empty();
                        for task in tasks {
                            note_move(&mut st, task, worker, to, Side::Gave, &mut effects);
                        }
                    }
                    FromWorker::Adopted { tasks, from } => {
                        for task in tasks {
                            note_move(&mut st, task, from, worker, Side::Adopted, &mut effects);
                        }
                    }
                    FromWorker::PeerGone(victim) => peer_gone(&mut st, victim, worker, &mut effects),
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
    /// Everything done after unlocking: send runs (and recalls), then drop
    /// released results, wake clients, write spills.
    pub(crate) fn carry_out(&self, mut effects: Effects) {
        loop {
            let jobs = std::mem::take(&mut effects.jobs);
            let failures = self.send_jobs(jobs);
            // After the runs of this pass: a run sent and recalled in one
            // pass reaches its worker before its recall.
            self.send_recalls(std::mem::take(&mut effects.recalls));
            // Released results are freed once the runs are on their way:
            // closing a segment's last descriptor frees its pages in the
            // kernel (about a millisecond per 4 MiB here), which would
            // otherwise delay every next run by the size of what this pass
            // released. Before waking clients, so a client that sees its
            // tasks done also sees their inputs freed.
            drop(std::mem::take(&mut effects.store.garbage));
            drop(std::mem::take(&mut effects.forgotten));
            drop(std::mem::take(&mut effects.store.files));
            if effects.wake_clients {
                self.driver.wake_clients();
            }
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
    fn send_steals(&self, steals: Vec<(Arc<Conn>, u32, WorkerId)>) {
        for (victim, count, to) in steals {
            let sent = uds::control_to_worker(&ToWorker::Give { count, to })
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
        // In memory (nearly every input): nothing to read back or carry out.
        let fetched = match fetched {
            Fetched::Ready(obj) => return Ok(obj),
            load => load,
        };
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
        segment_name(&self.segment_prefix, what)
    }
}

/// The name of a new segment this client makes: its engine's `prefix`, what
/// it holds, and a number unique in the process.
pub(crate) fn segment_name(prefix: &str, what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{what}{}", NEXT.fetch_add(1, Ordering::Relaxed))
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

/// Sends `conn` (a worker that just joined) its channels to `others`, and
/// each of them its channel to `conn`: one socket pair per pair of workers.
/// A pair that cannot be made or sent is logged; those two never pass runs
/// to each other (a `Give` naming a peer without a channel gives nothing).
fn introduce(conn: &Conn, others: &[Arc<Conn>]) {
    for other in others {
        let made = UnixStream::pair().map_err(|e| e.to_string()).and_then(|(ours, theirs)| {
            conn.introduce(other.id, &ours)?;
            other.introduce(conn.id, &theirs)
        });
        if let Err(e) = made {
            tracing::warn!(
                "no channel between workers {} and {} ({e}): runs are not stolen between them",
                conn.id.0,
                other.id.0
            );
        }
    }
}

/// One notice of the move of `task`'s run from worker `from` to worker `to`
/// (see the module docs for the races): the first of the pair applies it,
/// the second is a no-op.
fn note_move(st: &mut State, task: TaskId, from: WorkerId, to: WorkerId, side: Side, effects: &mut Effects) {
    let first = {
        let notices = st.backend.moves.entry((task, from, to)).or_default();
        match side {
            Side::Gave => notices.gave += 1,
            Side::Adopted => notices.adopted += 1,
        }
        let first = match side {
            Side::Gave => notices.gave > notices.adopted,
            Side::Adopted => notices.adopted > notices.gave,
        };
        // The other side's notice will never come if its worker is gone.
        let other = if side == Side::Gave { to } else { from };
        if !first || !st.backend.workers.contains_key(&other) {
            st.backend.moves.remove(&(task, from, to));
        }
        first
    };
    if !first {
        return;
    }
    if side == Side::Gave && st.backend.gone.contains(&(from, to)) {
        // The thief said it will hear nothing more from the victim, and
        // never adopted this run: it never arrived. Back to the queue.
        st.backend.moves.remove(&(task, from, to));
        st.backend.store.run_ended(task, from, &mut effects.store);
        st.handle(Event::TaskStolen { task, from, to: None }, effects);
        return;
    }
    st.backend.stats.moves += 1;
    if st.backend.workers.contains_key(&to) {
        st.backend.store.run_moved(task, from, to);
    } else {
        // Lost before the move was heard of: the scheduler queues the run
        // again, and nothing is pinned for it any more.
        st.backend.store.run_ended(task, from, &mut effects.store);
    }
    st.handle(Event::TaskMoved { task, from, to }, effects);
}

/// The thief `thief` will hear nothing more from `victim` (their channel
/// ended), and adopted everything it got from it before saying so: a move
/// the victim reported and the thief never adopted goes back to the queue,
/// and so will any the victim reports later.
fn peer_gone(st: &mut State, victim: WorkerId, thief: WorkerId, effects: &mut Effects) {
    let lost: Vec<TaskId> = st
        .backend
        .moves
        .iter()
        .filter(|&(&(_, from, to), n)| from == victim && to == thief && n.gave > n.adopted)
        .map(|(&(task, _, _), _)| task)
        .collect();
    for task in lost {
        st.backend.moves.remove(&(task, victim, thief));
        st.backend.store.run_ended(task, thief, &mut effects.store);
        st.handle(Event::TaskStolen { task, from: thief, to: None }, effects);
    }
    if st.backend.workers.contains_key(&victim) {
        // Its `Gave` may still be on its way (its connection is read by
        // another thread); none can come once it is lost.
        st.backend.gone.insert((victim, thief));
    }
}

/// The steals to ask for now: `(victim, how many runs, thief)`. Only while the
/// scheduler's queue is empty (else idle workers get queued tasks), from a
/// worker with more runs than threads (some wait there unstarted) for one
/// with fewer (a thread idles), at most one steal on its way per victim and
/// per thief, and not from a victim whose last answer was empty until it
/// reports a result. Each steal asks for half the difference of the two
/// loads (at least one, at most the victim's excess), so that, with the
/// scheduler sending the stolen runs to the thief, the two end up even.
fn plan_steals(st: &mut State) -> Vec<(Arc<Conn>, u32, WorkerId)> {
    if st.backend.workers.len() < 2 || st.sched.count(TaskState::Ready) > 0 {
        return Vec::new();
    }
    // Thieves a steal is on its way for already.
    let awaited: Vec<WorkerId> = st.backend.workers.values().filter_map(|l| l.thief).collect();
    let mut thieves: Vec<(usize, WorkerId)> = Vec::new();
    let mut victims: Vec<(usize, usize, WorkerId)> = Vec::new();
    for (&id, link) in &st.backend.workers {
        if !link.peered {
            continue;
        }
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
            steals.push((Arc::clone(&link.conn), u32::try_from(count).unwrap_or(u32::MAX), thief));
        }
    }
    steals
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use shoal_core::Key;
    use shoal_core::driver::pacing::Pacing;
    use shoal_core::driver::{Driver, GraphNode};
    use shoal_core::scheduler::{Scheduler, SchedulerConfig};
    use shoal_shm::store::{Store, StoreConfig};

    use super::*;
    use crate::engine::processes::state::Procs;

    const V: WorkerId = WorkerId(0);
    const W: WorkerId = WorkerId(1);

    /// A driver whose worker `V` holds `n` runs, and an idle worker `W`
    /// (their connections lead nowhere: nothing is sent here).
    fn driver(n: u64) -> (Driver<Procs>, Vec<TaskId>, Vec<UnixStream>) {
        let sched = Scheduler::new(SchedulerConfig { extra_slots_per_thread: 8, recall: true, ..Default::default() });
        let config = StoreConfig {
            memory_limit: 1 << 30,
            spill_parent: std::env::temp_dir(),
            spill_io: Default::default(),
            descriptors: None,
        };
        let procs = Procs {
            workers: HashMap::new(),
            store: Store::new(&config).unwrap(),
            moves: HashMap::new(),
            gone: Default::default(),
            stats: Default::default(),
        };
        let driver = Driver::new(sched, procs);
        let mut ends = Vec::new();
        let mut join = |worker: WorkerId| {
            let (ours, theirs) = UnixStream::pair().unwrap();
            ends.push(theirs);
            let mut st = driver.lock();
            let mut link = Link::new(Arc::new(Conn::new(worker, 0, ours, 1)));
            link.peered = true;
            st.backend.workers.insert(worker, link);
            st.handle(Event::WorkerJoined { worker, nthreads: 1 }, &mut Effects::default());
        };
        join(V);
        let nodes = (0..n)
            .map(|i| GraphNode {
                key: Key { func: 0, token: [i, 1] },
                args: Vec::new(),
                wanted: true,
                priority: 0,
                retries: 0,
                item: None,
            })
            .collect();
        let (ids, _) = driver.submit(nodes).unwrap();
        join(W);
        (driver, ids, ends)
    }

    fn sent(effects: &Effects) -> Vec<TaskId> {
        effects.jobs.iter().map(|job| job.id).collect()
    }

    /// A released result that, when freed, notes whether the worker's end
    /// of its connection already had the run batch to read.
    struct Witness {
        end: UnixStream,
        run_was_sent: Arc<std::sync::atomic::AtomicBool>,
    }

    impl shoal_core::object::Object for Witness {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn type_name(&self) -> &'static str {
            "Witness"
        }
        fn archived_bytes(&self) -> std::result::Result<&[u8], shoal_core::registry::InputError> {
            Ok(&[])
        }
        fn nbytes(&self) -> u64 {
            0
        }
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            let mut byte = [0u8; 1];
            let readable = self.end.set_nonblocking(true).is_ok()
                && std::io::Read::read(&mut &self.end, &mut byte).is_ok_and(|n| n > 0);
            self.run_was_sent.store(readable, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pass_sends_its_runs_before_it_frees_the_results_it_released() {
        // Freeing a large segment costs the kernel about a millisecond per
        // 4 MiB: done first, it delayed every next run of the pass.
        let (driver, ids, mut ends) = driver(1);
        let conn = Arc::clone(&driver.lock().backend.workers[&V].conn);
        let engine = ProcessesEngine {
            driver,
            supervisor: Mutex::new(None),
            pacing: Mutex::new(Pacing::new(1)),
            nthreads: 2,
            segment_prefix: "shoal-test-order".into(),
        };
        let run_was_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut effects = Effects::default();
        effects.jobs.push(Job {
            id: ids[0],
            key: Key { func: 0, token: [0, 1] },
            func: 0,
            worker: V,
            conn,
            inputs: Vec::new(),
            error: None,
            report_start: false,
        });
        let witness = Witness { end: ends.remove(0), run_was_sent: Arc::clone(&run_was_sent) };
        effects.store.garbage.push(Arc::new(witness));
        engine.carry_out(effects);
        assert!(
            run_was_sent.load(std::sync::atomic::Ordering::SeqCst),
            "the released result was freed before the run was sent"
        );
    }

    #[test]
    fn the_first_notice_of_a_move_applies_it_whichever_it_is() {
        let (driver, ids, _ends) = driver(4);
        let mut st = driver.lock();
        let mut fx = Effects::default();
        assert!(ids.iter().all(|&t| st.sched.processing_on(t) == Some(V)));
        // The thief's `Adopted` is read before the victim's `Gave`.
        note_move(&mut st, ids[3], V, W, Side::Adopted, &mut fx);
        assert_eq!(st.sched.processing_on(ids[3]), Some(W));
        note_move(&mut st, ids[3], V, W, Side::Gave, &mut fx);
        assert_eq!(st.sched.processing_on(ids[3]), Some(W));
        // And the other way round.
        note_move(&mut st, ids[2], V, W, Side::Gave, &mut fx);
        assert_eq!(st.sched.processing_on(ids[2]), Some(W));
        note_move(&mut st, ids[2], V, W, Side::Adopted, &mut fx);
        assert_eq!(st.sched.processing_on(ids[2]), Some(W));
        assert_eq!(st.backend.stats.moves, 2);
        assert!(st.backend.moves.is_empty(), "every pair is complete");
        assert!(sent(&fx).is_empty(), "no run is sent again");
        // A run that goes back and forth: the n-th `Gave` pairs with the
        // n-th `Adopted`, whatever the order they are read in.
        note_move(&mut st, ids[3], W, V, Side::Gave, &mut fx);
        note_move(&mut st, ids[3], V, W, Side::Adopted, &mut fx);
        assert_eq!(st.sched.processing_on(ids[3]), Some(W));
        note_move(&mut st, ids[3], W, V, Side::Adopted, &mut fx);
        note_move(&mut st, ids[3], V, W, Side::Gave, &mut fx);
        assert_eq!(st.sched.processing_on(ids[3]), Some(W));
        assert!(st.backend.moves.is_empty());
    }

    #[test]
    fn runs_given_by_a_victim_whose_channel_ended_before_they_came_go_back_to_the_queue() {
        let (driver, ids, _ends) = driver(4);
        let mut st = driver.lock();
        let mut fx = Effects::default();
        // `Gave` read, then the thief's `PeerGone` without an `Adopted`:
        // the victim died between its notice and its runs.
        note_move(&mut st, ids[3], V, W, Side::Gave, &mut fx);
        assert_eq!(st.sched.processing_on(ids[3]), Some(W));
        peer_gone(&mut st, V, W, &mut fx);
        assert_eq!(sent(&fx), vec![ids[3]], "sent again: it never arrived");
        // `PeerGone` read before a `Gave` of the victim's (the victim's
        // connection lags): the runs it lists never arrived either.
        let mut fx = Effects::default();
        note_move(&mut st, ids[2], V, W, Side::Gave, &mut fx);
        assert!(sent(&fx).contains(&ids[2]), "{:?}", sent(&fx));
        // But one the thief adopted before its `PeerGone` stays its own.
        let mut fx = Effects::default();
        note_move(&mut st, ids[1], V, W, Side::Adopted, &mut fx);
        note_move(&mut st, ids[1], V, W, Side::Gave, &mut fx);
        assert_eq!(st.sched.processing_on(ids[1]), Some(W));
        assert!(sent(&fx).is_empty());
        assert!(st.backend.moves.is_empty());
    }
}
