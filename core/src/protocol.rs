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
//!   Shutdown                           ───►  exit
//! ```
//!
//! A worker answers every run it was sent exactly once — `Done`, `Failed`,
//! or listed in `Stolen` — unless it is lost.

use crate::object::{Input, Obj};
use crate::scheduler::TaskId;

/// One run: registered task number `func` (its index in the sorted
/// registry) on these inputs, one per parameter.
pub struct Run {
    /// The driver's id of the task.
    pub task: TaskId,
    /// The task's index in the sorted registry.
    pub func: u32,
    /// One per parameter.
    pub inputs: Vec<Input>,
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
}
