//! The messages between a driver and its workers, as plain values.
//!
//! This is the protocol every transport carries: in one process they would
//! pass as they are; over a Unix socket (`shoal_shm::uds`) or TCP they are
//! encoded by that transport's codec, with objects inline, as descriptors or
//! fetched from a peer. Nothing here knows a socket.
//!
//! ```text
//! driver                                   worker
//!                                  ◄───    Hello { fingerprint, pid }
//!   Runs [Run { task, func, inputs }]  ───►  queue each run (claim QUEUED)
//!                                  ◄───    Results [Done | Failed]
//!   Steal { count }                    ───►  give back unstarted runs
//!                                  ◄───    Stolen [task, …]
//!   Recall [task, …]                   ───►  give back these if not started
//!                                  ◄───    Recalled [task, …] (if any)
//!   Give { count, to: peer }           ───►  claim up to `count` unstarted runs
//!                                  ◄───    Gave { tasks, to } (first)
//!                                          then the runs themselves go to
//!                                          the peer `to`, worker to worker
//!   (on the peer `to`:)            ◄───    Adopted { tasks, from } (before
//!                                          any result of those tasks)
//!                                  ◄───    PeerGone(peer) (its channel to a
//!                                          peer ended: nothing more comes
//!                                          from it)
//!                                  ◄───    Running [task, …] (every heartbeat
//!                                          interval, and before a run with
//!                                          `report_start`)
//!   Shutdown                           ───►  exit
//! ```
//!
//! A worker answers every run it was sent exactly once — `Done`, `Failed`,
//! or listed in `Stolen`, `Recalled` or `Gave` — unless it is lost; a run
//! it adopted from a peer (listed in its `Adopted`) counts as sent to it.
//!
//! # Direct steals between the workers of one machine
//!
//! Workers of one machine that have a peer channel to each other (a
//! transport's matter: see `shoal_shm::pool`) move runs without the
//! driver carrying them: the driver orders a busy worker to `Give` runs
//! to an idle peer; the victim claims them (as for a `Steal`: a given run
//! never starts on the victim), tells the driver `Gave { tasks, to }`
//! *before* it sends the runs to the peer, and the peer says
//! `Adopted { tasks, from }` *before* any result of them. So the driver
//! learns of every move before a result of a moved run, and before the
//! victim's loss (its connection ends after its `Gave`): it applies the
//! first of the two notices as the move, and the second is a no-op. A
//! peer whose channel to a victim ends says `PeerGone(victim)` after the
//! `Adopted` of everything it got from it: a run the victim listed in
//! `Gave` that the peer never adopted by then never reached it.
//!
//! `Running` lists the runs started and not ended, sent by the worker's own
//! thread (never a task's) every heartbeat interval — so a driver that
//! hears nothing from a worker for many intervals knows it is stuck or
//! stopped, however long its tasks — and, synchronously, before a run sent
//! with `report_start` starts: then the driver knows, even if the run
//! kills the process at once, that it had started (see
//! `Scheduler::is_suspect`).

use crate::object::{Input, Obj};
use crate::scheduler::{TaskId, WorkerId};

/// One run: registered task number `func` (its index in the sorted
/// registry) on these inputs, one per parameter.
pub struct Run {
    /// The driver's id of the task.
    pub task: TaskId,
    /// The task's index in the sorted registry.
    pub func: u32,
    /// One per parameter.
    pub inputs: Vec<Input>,
    /// Say `Running` (naming this run) before starting it, and wait until
    /// it is sent.
    pub report_start: bool,
}

/// From a driver to a worker.
pub enum ToWorker {
    /// Queue these runs, in this order (the scheduler's).
    Runs(Vec<Run>),
    /// Give back up to `count` runs not started yet, newest first, and never
    /// start them: answered by one [`FromWorker::Stolen`].
    Steal {
        /// The most runs to give back.
        count: u32,
    },
    /// Give back these runs if they have not started, and never start
    /// them: answered by one [`FromWorker::Recalled`] listing those given
    /// back, if any (the others are answered as they end).
    Recall(Vec<TaskId>),
    /// Give up to `count` runs not started yet, newest first, to the peer
    /// worker `to`, directly (see "Direct steals" in the module docs), and
    /// never start them: answered by one [`FromWorker::Gave`] (which may
    /// list none: nothing to spare, or no channel to `to`).
    Give {
        /// The most runs to give.
        count: u32,
        /// The peer to give them to.
        to: WorkerId,
    },
    /// Exit now, whatever is running.
    Shutdown,
}

/// How a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The task returned `Err`.
    Error,
    /// The task panicked.
    Panic,
    /// Its inputs could not be read, or its result could not be stored.
    Input,
}

/// How one run ended; `micros` is how long it took in the worker (inputs
/// read, task called, result stored), rounded up.
pub enum RunResult {
    /// The run succeeded; `nbytes` is the result archive's length.
    Done {
        /// The run's task.
        task: TaskId,
        /// The result, ready for the transport (a segment if large).
        result: Obj,
        /// The result's size in bytes.
        nbytes: u64,
        /// How long the run took.
        micros: u32,
    },
    /// The run failed.
    Failed {
        /// The run's task.
        task: TaskId,
        /// How.
        kind: FailKind,
        /// Why.
        message: String,
        /// The type of the error the task returned (`FailKind::Error`);
        /// empty otherwise.
        type_name: String,
        /// The error's `source()` chain, outermost first.
        chain: Vec<String>,
        /// How long the run took.
        micros: u32,
    },
}

impl RunResult {
    /// The run's task.
    pub fn task(&self) -> TaskId {
        match self {
            RunResult::Done { task, .. } | RunResult::Failed { task, .. } => *task,
        }
    }

    /// How long the run took, in microseconds.
    pub fn micros(&self) -> u32 {
        match self {
            RunResult::Done { micros, .. } | RunResult::Failed { micros, .. } => *micros,
        }
    }
}

/// From a worker to its driver.
pub enum FromWorker {
    /// The first message of a worker: its registry fingerprint and process.
    Hello {
        /// The registry fingerprint of the worker's binary.
        fingerprint: u128,
        /// The worker's process id.
        pid: u32,
    },
    /// Runs that ended, in the order they ended.
    Results(Vec<RunResult>),
    /// The answer to one [`ToWorker::Steal`]: the runs given back (maybe
    /// none), oldest first, which the worker never started and never will.
    Stolen(Vec<TaskId>),
    /// The answer to a [`ToWorker::Recall`]: the runs given back, which the
    /// worker never started and never will.
    Recalled(Vec<TaskId>),
    /// The runs started and not ended when it was sent: the heartbeat, and
    /// the notice a `report_start` run sends before it starts.
    Running(Vec<TaskId>),
    /// The answer to one [`ToWorker::Give`]: these runs (maybe none), which
    /// the worker never started and never will, are on their way to the
    /// peer `to`; sent before they are.
    Gave {
        /// The runs given, oldest first.
        tasks: Vec<TaskId>,
        /// The peer they go to.
        to: WorkerId,
    },
    /// These runs came from the peer `from` (its [`FromWorker::Gave`]), and
    /// are queued here now; sent before any result of them.
    Adopted {
        /// The runs adopted, oldest first.
        tasks: Vec<TaskId>,
        /// The peer that gave them.
        from: WorkerId,
    },
    /// The channel to this peer ended (it died or exited): every run it
    /// gave this worker was listed in an `Adopted` sent before this.
    PeerGone(WorkerId),
}
