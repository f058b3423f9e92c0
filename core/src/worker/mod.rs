//! The worker runtime: runs tasks from a stream of [`ToWorker`] messages
//! and answers with [`FromWorker`] ones. The same code runs in a worker
//! process of one machine and, next, in a worker on another machine; only
//! its [`Outlet`] (the transport back to the driver) differs.
//!
//! # Protocol
//!
//! One thread — the transport's reader — hands each message to
//! [`Worker::handle`]: runs are queued on a work-stealing pool of threads,
//! each with a [`Claim`]; a `Steal` gives back runs not started yet, newest
//! first, and a `Recall` the runs it names, if they have not started.
//!
//! A transport with channels between the workers of one machine tells the
//! worker of each peer ([`Worker::peer_joined`], [`Worker::peer_left`]) and
//! hands it the runs a peer gave it ([`Worker::adopt`]). A `Give { count,
//! to }` claims up to `count` runs not started, newest first, like a
//! `Steal`, and the sender thread sends `Gave { tasks, to }` to the driver
//! *then* the runs themselves, with their inputs, to the peer
//! ([`Outlet::send_to_peer`]); the peer queues them and says
//! `Adopted { tasks, from }` before any result of them. When a peer's
//! channel ends, `PeerGone(peer)` follows the `Adopted` of everything that
//! came over it. (Why these orders: the driver's module docs for the
//! processes mode, `src/engine/processes/workers.rs`.)
//!
//! # Claims: a run starts here or is given back, never both
//!
//! Each queued run carries a claim, `QUEUED` when it arrives. A pool thread
//! that pops it claims it `STARTED` before touching it; the reader,
//! answering `Steal { count }`, claims up to `count` runs `STOLEN`, newest
//! first, and lists exactly those in its `Stolen` answer (a `Recall`
//! claims the runs it names, and lists them in `Recalled`). Both are one
//! compare-and-swap on the same atomic, so exactly one side wins: a stolen
//! run is never started here (the pool drops it when it pops it), and a
//! started run is never listed as stolen (`core/tests/loom.rs` checks it).
//!
//! # Replies: batched without waiting
//!
//! Results go through an outbox. A pool thread that finishes a run while no
//! other run is queued here (it is about to go idle, or this was the last of
//! a batch) sends everything in the outbox itself. One that has more runs to
//! go only leaves its result in the outbox and wakes the sender thread,
//! which sends everything there by the time it runs — so a result waits for
//! no other task, and a batch of short tasks goes back in a message or two
//! instead of one per task. A `Stolen` answer is sent after the results the
//! outbox held, so the driver sees those first; the notices `Adopted` and
//! `PeerGone` go *before* the results taken with them (a result of an
//! adopted run is posted after its `Adopted` is, so it is never sent
//! before it). The reader leaves it in the
//! outbox too: the reader never blocks on sending, so it always drains its
//! transport, and a driver blocked sending it runs (while its own end is
//! full of this worker's results) cannot deadlock with it.
//!
//! # Running runs and the heartbeat
//!
//! The outbox also lists the runs started and not ended. A heartbeat
//! thread of the worker's own sends that list (`Running`) every interval,
//! whatever its tasks do: a driver that hears nothing for many intervals
//! knows the process is stopped or stuck, not busy. It sends the notices
//! waiting in the outbox (`Adopted`, `PeerGone`) first: the list may name a
//! run adopted from a peer, and the driver must know it moved here. And a
//! run sent with `report_start` is not started until a `Running` naming it
//! is sent (by the pool thread that starts it, synchronously): if it then
//! kills the process, its driver knows it had started.
//!
//! # Invariants
//!
//! - The reader never runs a task and never sends.
//! - Every run received (from the driver or adopted from a peer) is
//!   answered exactly once — `Done`, `Failed` or listed in `Stolen`,
//!   `Recalled` or `Gave` — unless the process dies.
//! - A claimed run's payload (function, inputs) is taken by whoever won its
//!   claim, exactly once: the pool thread that starts it, or the reader
//!   giving it to a peer.
//! - A task's inputs are dropped (unmapped) before its result is posted:
//!   once the driver sees a task done, the task holds nothing of its inputs.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::claim::Claim;
use crate::executor::{Local, Pool, Spawner};
use crate::failure::panic_message;
use crate::object::{Input, Obj};
use crate::protocol::{FailKind, FromWorker, Run, RunResult, ToWorker};
use crate::registry::{self, RunError, TaskEntry};
use crate::scheduler::{TaskId, WorkerId};
use crate::spin::SPIN_BEFORE_PARK;

/// The transport back to the driver, as a worker sees it.
pub trait Outlet: Send + Sync + 'static {
    /// Makes a task's result ready to travel, on the pool thread that made
    /// it (for example: archived, and written into a shared-memory segment
    /// if large); the object to send and its archived length. `Err`: the
    /// result cannot be stored, and the task fails with that message.
    fn seal(&self, task: TaskId, result: Obj) -> Result<(Obj, u64), String>;
    /// Sends these results, in order. A worker whose driver is gone has
    /// nothing left to do: an outlet that cannot send ends the process.
    fn send_results(&self, results: Vec<RunResult>);
    /// Sends the answer to one steal.
    fn send_stolen(&self, tasks: Vec<TaskId>);
    /// Sends the answer to a recall (the runs given back).
    fn send_recalled(&self, tasks: Vec<TaskId>);
    /// Sends the runs started and not ended (the heartbeat, and the notice
    /// before a `report_start` run); called from the heartbeat thread and
    /// from pool threads.
    fn send_running(&self, tasks: Vec<TaskId>);
    /// Sends a notice of a direct steal: [`FromWorker::Gave`],
    /// [`FromWorker::Adopted`] or [`FromWorker::PeerGone`]. Only a worker
    /// with peers (see [`Worker::peer_joined`]) sends `Adopted` or
    /// `PeerGone`; `Gave` answers a [`ToWorker::Give`].
    fn send_notice(&self, notice: FromWorker);
    /// Sends runs to the peer worker `peer`, over the channel the transport
    /// introduced it by ([`Worker::peer_joined`]); called after the `Gave`
    /// that lists them is sent. `Err` if the channel is gone (the peer died
    /// or exited: the driver learns of that loss from the peer's own
    /// connection, and reschedules what was given to it).
    fn send_to_peer(&self, peer: WorkerId, runs: Vec<Run>) -> Result<(), String>;
}

/// What the reader should do after a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on reading.
    Continue,
    /// The driver said to stop.
    Exit,
}

/// A queued run: its claim, and what it needs to run, taken by whoever wins
/// the claim — the pool thread that starts it, or the reader giving it to a
/// peer.
struct Job {
    task: TaskId,
    claim: Claim,
    payload: Mutex<Option<Payload>>,
}

/// What a run needs to start (or to be given to a peer).
struct Payload {
    func: u32,
    /// `None` if this binary has no task number `func`.
    entry: Option<&'static TaskEntry>,
    inputs: Vec<Input>,
    report_start: bool,
}

/// An answer of the reader's, sent after the results there with it.
enum GivenBack {
    Stolen(Vec<TaskId>),
    Recalled(Vec<TaskId>),
    /// Runs given to a peer: `Gave` to the driver first, then the runs.
    Gave {
        to: WorkerId,
        runs: Vec<Run>,
    },
}

/// Messages not sent yet: notices of direct steals (sent first), results,
/// and answers to steals, recalls and gives (sent after the results that
/// were there with them); and the runs started and not ended, which the
/// heartbeat reports.
struct Outbox {
    /// `Adopted` and `PeerGone`, in the order the reader noted them: sent
    /// before the results taken with them, so the driver learns that a run
    /// moved here before it reads a result of it.
    notices: Vec<FromWorker>,
    results: Vec<RunResult>,
    given_back: Vec<GivenBack>,
    /// Runs started and not ended: at most one per pool thread.
    running: Vec<TaskId>,
    sender_asleep: bool,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.results.is_empty() && self.given_back.is_empty()
    }
}

/// What the pool threads, the sender thread and the reader share.
struct Shared<O> {
    outlet: O,
    outbox: Mutex<Outbox>,
    /// Signalled when the outbox gets something for the sender thread.
    outbox_filled: Condvar,
    /// Runs received and neither started nor stolen.
    queued: AtomicUsize,
    /// Held while taking from the outbox and sending what was taken (taken
    /// before the outbox's lock, never while holding it): whoever holds it
    /// knows that everything posted before it got it is sent when it lets
    /// go. A `report_start` run relies on that (see `run`).
    sending: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No task code runs under these locks; a panic under one is a bug in
    // shoal, and the state is the last consistent one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running worker: its pool, its sender thread, and the reader's queue of
/// runs with their claims. Owned by the reader thread.
pub struct Worker<O: Outlet> {
    shared: Arc<Shared<O>>,
    pool: Pool<Arc<Job>>,
    spawner: Spawner<Arc<Job>>,
    /// The runs queued here, oldest first, with their claims; entries whose
    /// run started are dropped as they are met.
    queue: VecDeque<Arc<Job>>,
    /// The peers this worker has a channel to (see [`Worker::peer_joined`]).
    peers: Vec<WorkerId>,
}

impl<O: Outlet> Worker<O> {
    /// Starts the sender thread, `threads` pool threads and, if
    /// `heartbeat` is given, the heartbeat thread, which sends `Running`
    /// that often (see the module docs).
    pub fn start(outlet: O, threads: usize, heartbeat: Option<Duration>) -> std::io::Result<Worker<O>> {
        let shared = Arc::new(Shared {
            outlet,
            outbox: Mutex::new(Outbox {
                notices: Vec::new(),
                results: Vec::new(),
                given_back: Vec::new(),
                running: Vec::new(),
                sender_asleep: false,
            }),
            outbox_filled: Condvar::new(),
            queued: AtomicUsize::new(0),
            sending: Mutex::new(()),
        });
        let for_sender = Arc::clone(&shared);
        std::thread::Builder::new().name("shoal-worker-send".into()).spawn(move || for_sender.sender())?;
        if let Some(interval) = heartbeat {
            let for_beat = Arc::clone(&shared);
            std::thread::Builder::new().name("shoal-worker-beat".into()).spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    // Notices first: a run adopted from a peer may be in
                    // the list, and the driver must know it moved here.
                    let sending = lock(&for_beat.sending);
                    let (notices, running) = {
                        let mut outbox = lock(&for_beat.outbox);
                        (std::mem::take(&mut outbox.notices), outbox.running.clone())
                    };
                    for notice in notices {
                        for_beat.outlet.send_notice(notice);
                    }
                    for_beat.outlet.send_running(running);
                    drop(sending);
                }
            })?;
        }
        // Idle pool threads spin a little before sleeping (see `crate::spin`).
        let mut pool = Pool::<Arc<Job>>::with_spin(threads.max(1), SPIN_BEFORE_PARK);
        let spawner = pool.spawner().clone();
        let for_jobs = Arc::clone(&shared);
        pool.start("shoal-worker", move |job: Arc<Job>, _: &Local<'_, Arc<Job>>| for_jobs.run(&job))?;
        Ok(Worker { shared, pool, spawner, queue: VecDeque::new(), peers: Vec::new() })
    }

    /// Handles one message from the driver (on the reader thread).
    pub fn handle(&mut self, message: ToWorker) -> Flow {
        match message {
            ToWorker::Runs(runs) => self.queue_runs(runs),
            ToWorker::Steal { count } => self.steal(count),
            ToWorker::Recall(tasks) => self.recall(&tasks),
            ToWorker::Give { count, to } => self.give(count, to),
            ToWorker::Shutdown => return Flow::Exit,
        }
        Flow::Continue
    }

    /// The transport has a channel to the peer worker `peer` now: runs may
    /// be given to it (on the reader thread).
    pub fn peer_joined(&mut self, peer: WorkerId) {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
    }

    /// The channel to `peer` ended, after every run it sent was adopted
    /// (on the reader thread): the driver is told `PeerGone` after those
    /// `Adopted` notices.
    pub fn peer_left(&mut self, peer: WorkerId) {
        self.peers.retain(|&p| p != peer);
        let mut outbox = lock(&self.shared.outbox);
        outbox.notices.push(FromWorker::PeerGone(peer));
        self.shared.wake_sender(&mut outbox);
    }

    /// Runs the peer `from` gave this worker (on the reader thread): the
    /// driver is told `Adopted` before any of their results, and they are
    /// queued as if the driver had sent them.
    pub fn adopt(&mut self, from: WorkerId, runs: Vec<Run>) {
        if runs.is_empty() {
            return;
        }
        let tasks = runs.iter().map(|run| run.task).collect();
        {
            let mut outbox = lock(&self.shared.outbox);
            outbox.notices.push(FromWorker::Adopted { tasks, from });
            self.shared.wake_sender(&mut outbox);
        }
        self.queue_runs(runs);
    }

    fn queue_runs(&mut self, runs: Vec<Run>) {
        while self.queue.front().is_some_and(|job| !job.claim.is_queued()) {
            self.queue.pop_front();
        }
        // All counted before the pool sees the first: a pool thread that
        // finishes one of them knows more are coming, and leaves its result
        // to be sent with theirs.
        self.shared.queued.fetch_add(runs.len(), Ordering::AcqRel);
        let jobs: Vec<Arc<Job>> = runs
            .into_iter()
            .map(|Run { task, func, inputs, report_start }| {
                // An unknown task number is answered from the pool too: the
                // reader never sends.
                let entry = registry::entries().get(func as usize).copied();
                let payload = Payload { func, entry, inputs, report_start };
                let job = Arc::new(Job { task, claim: Claim::new(), payload: Mutex::new(Some(payload)) });
                self.queue.push_back(Arc::clone(&job));
                job
            })
            .collect();
        // One wake for the batch (see `Spawner::push_all`).
        self.spawner.push_all(jobs);
    }

    /// Claims up to `count` runs not started, newest first (each one is
    /// then never started here); oldest first, with what they need.
    fn claim_newest(&mut self, count: usize) -> Vec<(TaskId, Option<Payload>)> {
        let mut claimed = Vec::new();
        while claimed.len() < count {
            let Some(job) = self.queue.pop_back() else { break };
            if job.claim.steal() {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                claimed.push((job.task, lock(&job.payload).take()));
            }
        }
        // Oldest first: the thief runs them in the order they were sent
        // here (the scheduler's priority order).
        claimed.reverse();
        claimed
    }

    fn steal(&mut self, count: u32) {
        let stolen: Vec<TaskId> = self.claim_newest(count as usize).into_iter().map(|(task, _)| task).collect();
        let mut outbox = lock(&self.shared.outbox);
        outbox.given_back.push(GivenBack::Stolen(stolen));
        self.shared.wake_sender(&mut outbox);
    }

    /// Gives up to `count` runs not started to the peer `to` (none if this
    /// worker has no channel to it): `Gave` to the driver, then the runs to
    /// the peer, both from the sender thread (the reader never sends).
    fn give(&mut self, count: u32, to: WorkerId) {
        let count = if self.peers.contains(&to) { count as usize } else { 0 };
        let runs = self
            .claim_newest(count)
            .into_iter()
            .filter_map(|(task, payload)| {
                // A won claim always finds its payload (one claim wins);
                // a run without one is not listed, so it is not given.
                let Payload { func, inputs, report_start, .. } = payload?;
                Some(Run { task, func, inputs, report_start })
            })
            .collect();
        let mut outbox = lock(&self.shared.outbox);
        outbox.given_back.push(GivenBack::Gave { to, runs });
        self.shared.wake_sender(&mut outbox);
    }

    /// Gives back the named runs that have not started; the others (started,
    /// ended, or never received) are answered as they end, or were.
    fn recall(&mut self, tasks: &[TaskId]) {
        let mut recalled = Vec::new();
        for &task in tasks {
            // A short queue (the driver's slots bound it); a task queued
            // twice here (sent again after it was abandoned) gives back one.
            let found = self.queue.iter().find(|job| job.task == task && job.claim.is_queued());
            if let Some(job) = found
                && job.claim.steal()
            {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                recalled.push(task);
            }
        }
        if recalled.is_empty() {
            return;
        }
        let mut outbox = lock(&self.shared.outbox);
        outbox.given_back.push(GivenBack::Recalled(recalled));
        self.shared.wake_sender(&mut outbox);
    }

    /// Stops reading: the process is about to exit, and running tasks are
    /// not waited for (the pool is not stopped).
    pub fn abandon(self) {
        std::mem::forget(self.pool);
    }
}

impl<O: Outlet> Shared<O> {
    /// Sends what the outbox holds: the results, then the answers to
    /// steals and recalls. Takes `sending` before the outbox's lock (see
    /// `Shared::sending`), so the caller must not hold the latter.
    fn flush(&self) {
        let sending = lock(&self.sending);
        self.send_taken(&sending);
    }

    /// [`Shared::flush`] for a caller that holds `sending` already.
    fn send_taken(&self, _sending: &MutexGuard<'_, ()>) {
        let mut outbox = lock(&self.outbox);
        let notices = std::mem::take(&mut outbox.notices);
        let results = std::mem::take(&mut outbox.results);
        let given_back = std::mem::take(&mut outbox.given_back);
        drop(outbox);
        for notice in notices {
            self.outlet.send_notice(notice);
        }
        if !results.is_empty() {
            self.outlet.send_results(results);
        }
        for answer in given_back {
            match answer {
                GivenBack::Stolen(tasks) => self.outlet.send_stolen(tasks),
                GivenBack::Recalled(tasks) => self.outlet.send_recalled(tasks),
                GivenBack::Gave { to, runs } => {
                    let tasks: Vec<TaskId> = runs.iter().map(|run| run.task).collect();
                    self.outlet.send_notice(FromWorker::Gave { tasks, to });
                    if !runs.is_empty()
                        && let Err(e) = self.outlet.send_to_peer(to, runs)
                    {
                        // The peer is gone: its loss reschedules them.
                        tracing::debug!(target: "shoal::steal", peer = to.0, "could not give runs: {e}");
                    }
                }
            }
        }
    }

    /// Wakes the sender thread if it sleeps; called with the outbox locked,
    /// after adding to it.
    fn wake_sender(&self, outbox: &mut Outbox) {
        if outbox.sender_asleep {
            outbox.sender_asleep = false;
            self.outbox_filled.notify_one();
        }
    }

    /// The sender thread: sends what the pool threads and the reader leave
    /// in the outbox.
    fn sender(&self) {
        let mut outbox = lock(&self.outbox);
        loop {
            if outbox.is_empty() {
                outbox.sender_asleep = true;
                outbox = self.outbox_filled.wait(outbox).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            drop(outbox);
            self.flush();
            outbox = lock(&self.outbox);
        }
    }

    /// A pool thread's result: sent now if this worker has nothing else
    /// queued, else left to the sender thread (see the module docs).
    fn post(&self, result: RunResult) {
        let more = self.queued.load(Ordering::Acquire) > 0;
        let mut outbox = lock(&self.outbox);
        let task = result.task();
        if let Some(i) = outbox.running.iter().position(|&t| t == task) {
            outbox.running.swap_remove(i);
        }
        outbox.results.push(result);
        if more {
            self.wake_sender(&mut outbox);
            return;
        }
        drop(outbox);
        self.flush();
    }

    /// Runs one job on a pool thread, unless it was stolen, and posts its
    /// result.
    fn run(&self, job: &Job) {
        let task = job.task;
        if !job.claim.start() {
            return; // given back to the driver, or to a peer: it runs elsewhere
        }
        // The claim won, so the payload is here (only a won claim takes it).
        let Some(Payload { func, entry, inputs, report_start }) = lock(&job.payload).take() else {
            debug_assert!(false, "a started run without its payload");
            return;
        };
        self.queued.fetch_sub(1, Ordering::AcqRel);
        tracing::trace!(target: "shoal::task", task = task.index, "started");
        lock(&self.outbox).running.push(task);
        if report_start {
            // Before the task can do anything (see the module docs): first
            // every result this worker has (a run that ended is not one that
            // was executing if this one kills the process), then the notice.
            let sending = lock(&self.sending);
            self.send_taken(&sending);
            self.outlet.send_running(vec![task]);
            drop(sending);
        }
        let started = Instant::now();
        let result = match entry {
            None => Err(Failure::new(FailKind::Input, format!("this worker has no task number {func}"))),
            Some(entry) => match catch_unwind(AssertUnwindSafe(|| self.run_task(task, entry, &inputs))) {
                Ok(result) => result,
                Err(payload) => Err(Failure::new(FailKind::Panic, panic_message(&*payload))),
            },
        };
        // The inputs are unmapped before the reply (see the invariants).
        drop(inputs);
        let micros = u32::try_from(started.elapsed().as_micros() + 1).unwrap_or(u32::MAX);
        self.post(match result {
            Ok((result, nbytes)) => RunResult::Done { task, result, nbytes, micros },
            Err(Failure { kind, message, type_name, chain }) => {
                RunResult::Failed { task, kind, message, type_name, chain, micros }
            }
        });
    }

    /// Calls the task and seals what it returned.
    fn run_task(&self, task: TaskId, entry: &TaskEntry, inputs: &[Input]) -> Result<(Obj, u64), Failure> {
        let obj = match catch_unwind(AssertUnwindSafe(|| entry.invoke(inputs))) {
            Ok(Ok(obj)) => obj,
            Ok(Err(RunError::Returned(error))) => {
                let (type_name, message, chain) = error.into_parts();
                return Err(Failure { kind: FailKind::Error, message, type_name, chain });
            }
            Ok(Err(RunError::Input(e))) => return Err(Failure::new(FailKind::Input, e.to_string())),
            Err(payload) => return Err(Failure::new(FailKind::Panic, panic_message(&*payload))),
        };
        // E.g. an archive over rkyv's 2 GiB limit, or no memory for a segment.
        // shoal's own error: no type name.
        self.outlet
            .seal(task, obj)
            .map_err(|e| Failure::new(FailKind::Error, format!("its result could not be stored: {e}")))
    }
}

/// How a run failed, before it is posted.
struct Failure {
    kind: FailKind,
    message: String,
    type_name: String,
    chain: Vec<String>,
}

impl Failure {
    /// A failure of shoal's own (no error type, no chain).
    fn new(kind: FailKind, message: String) -> Failure {
        Failure { kind, message, type_name: String::new(), chain: Vec::new() }
    }
}
