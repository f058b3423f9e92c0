//! The scheduler: a pure state machine over a task graph.
//!
//! # Protocol
//!
//! The scheduler takes [`Event`]s and answers with [`Action`]s, appended to
//! a buffer the caller owns. It does no I/O, starts no thread and reads no
//! clock: every mode of shoal (threads, processes, cluster) drives this same
//! machine, and the tests drive it event by event and from a deterministic
//! simulator with injected faults.
//!
//! Graphs enter through [`Scheduler::submit`], which returns the id of each
//! node (an existing id when a pure key is already alive). Everything else
//! enters through [`Scheduler::handle`].
//!
//! # Task states
//!
//! They follow Dask's (`TaskState`): `released → waiting → ready (queued) →
//! processing → memory`, or `erred`; a record is `forgotten` (removed, its id
//! reusable under a new generation) once no client and no dependent needs it.
//!
//! A task is *needed* while a client holds a future on it or a dependent on
//! its way (`waiting`, `ready`, `processing`) needs its result. A needed
//! `released` task is started; a task that stops being needed is released
//! (its result dropped, or its run abandoned); one that besides has no
//! dependent left is forgotten, and so, in cascade, may be its inputs. A
//! `released` task with live dependents is kept: that is the lineage a lost
//! result is recomputed from.
//!
//! # Invariants
//!
//! 1. A task is `processing` on at most one worker, and only once all its
//!    dependencies are in `memory`.
//! 2. A result stays in memory exactly as long as a client reference or a
//!    dependent that has not finished needs it; then `Release` is emitted
//!    for every worker that holds it.
//! 3. An erred task's failure reaches exactly its transitive dependents,
//!    each as `DependencyFailed` naming the root failure.
//! 4. `Report` is emitted once per transition into `memory` or `erred` of a
//!    task that a client holds, and once more when `submit` merges a wanted
//!    node into a task that is finished already (the new future would not
//!    hear of it otherwise). A result recomputed after a loss is reported
//!    again: drivers treat reports as idempotent.
//! 5. Ids carry a generation: an event about a forgotten task (a stale id) is
//!    ignored, never applied to the task that reused its slot.
//!
//! # What the driver must know
//!
//! - **Late results.** A run can end after the scheduler stopped waiting for
//!   it (the task was cancelled, failed through an input, is no longer
//!   needed, or was taken back after a loss). Its `TaskFinished` is ignored,
//!   and `Release { task, worker }` tells the worker to drop the copy. If
//!   the task was *forgotten* meanwhile, the id is stale and the scheduler
//!   says nothing: a driver drops a result that arrives for an id it was
//!   told to `Forget`.
//! - **Abandoned runs.** A run the scheduler stops waiting for (cancelled,
//!   failed through an input, no longer needed, an input lost) may still
//!   run. A driver whose workers can take back a run they have not started
//!   (`SchedulerConfig::recall`) gets `Recall { task, worker }` and must
//!   take it back if it can; the run keeps its slot until the worker
//!   answers for it — `TaskFinished` or `TaskFailed` if it ran,
//!   `TaskStolen` if it was taken back — so a worker is never sent more
//!   runs than its slots, and nothing is sent in place of a run that is
//!   about to be cancelled too. Without `recall` (a pool that cannot take a
//!   run back, like the threads mode's) the slot is free at once, and a
//!   worker may briefly run more than its slots.
//! - **Lost results.** On `WorkerLost`, what the worker ran is rescheduled,
//!   and what it held is recomputed if still needed. Only a run *known to
//!   have started* (`TaskStarted`) counts a death against its task
//!   (`KilledWorker` once it reaches `max_worker_deaths`, counted in a row:
//!   a good run resets it); a run that may only have been queued there
//!   counts nothing — Dask's rule: a task is suspicious only if it was
//!   executing — but makes its task a *suspect*
//!   ([`Scheduler::is_suspect`]): the driver must learn of the start of a
//!   suspect's next run before it runs, so a task that kills every worker
//!   it starts on is still failed, after one uncounted loss at most.
//!   Dependents of a lost result that were already running on *other*
//!   workers are taken back to `waiting` too — they may not have fetched
//!   it — and their runs are abandoned as above.
//! - **Cancel** fails a task that is not finished, and everything on its way
//!   that depends on it; a finished task's result stays (its futures are told
//!   `Cancelled`; references still go through `ClientReleased`).
//! - **Unwanted nodes.** A submitted node that no wanted node needs is
//!   forgotten at once: nothing could ever read its result.
//! - **Stealing.** A driver whose workers queue runs of their own (more
//!   runs than threads) may take back a run that its worker has *not
//!   started* and guarantees it never will: `TaskStolen { task, from, to }`
//!   moves the task straight to worker `to` (a `Run` for it) if `to` is live
//!   with a free slot, else back to the queue. The stolen run is not a
//!   death: nothing is counted against the task. A steal of a run the
//!   scheduler no longer waits for is ignored, like a late result. Which
//!   worker to rob is the driver's choice ([`Scheduler::load`] and
//!   `count(TaskState::Ready)` say who has too much and whether anything is
//!   queued); the scheduler only keeps invariant 1 true. Workers that
//!   can pass runs to each other directly report a move instead
//!   (`TaskMoved { task, from, to }`): the run is on `to` already, so no
//!   `Run` is sent.
//! - **Weighing transfers** ([`SchedulerConfig::weigh_transfers`], the
//!   cluster's scheduler): a ready task whose inputs' holder is full may
//!   wait *parked* on it rather than move, and idle workers take parked
//!   tasks when the move pays (the `steal` module states the rule). Parked
//!   tasks are `Ready`; nothing is sent for them, so the driver sees no
//!   difference but where runs go. The driver feeds the measurements:
//!   [`Event::RunTime`] for runs, [`Event::Network`] if it measures one.
//! - **Taking runs back** ([`SchedulerConfig::take_back`], with weighing):
//!   a worker with an idle thread asks a busy one for a run it has not
//!   started ([`Action::TakeBack`]), by the same rule; the driver answers
//!   `TaskStolen { to: None }` if the run was given back, and the run goes
//!   to the worker it was asked for. Until the answer the run keeps its
//!   slot where it is (invariant 1 holds throughout: it is processing on
//!   one worker, then on the other).

mod hash;
mod keys;
mod order;
mod queue;
mod record;
#[cfg(test)]
mod sim;
mod state;
mod steal;
#[cfg(test)]
mod tests;
mod transitions;
mod workers;

pub use hash::{FoldHasher, SeededState};
pub use state::{GraphError, Scheduler};
pub use steal::{DEFAULT_BANDWIDTH, DEFAULT_LATENCY_MICROS};

use std::sync::Arc;

use crate::failure::TaskFailure;
use crate::key::Key;

/// A task's handle inside one scheduler: a slot index and the generation of
/// that slot, so an id outliving its task is recognised as stale.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TaskId {
    /// The slot.
    pub index: u32,
    /// How many tasks the slot has held before this one.
    pub generation: u32,
}

/// A worker: a pool of threads in one process (the threads mode has exactly
/// one), identified by the driver.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

/// The states of a task, as in Dask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskState {
    /// Known, not needed by anyone right now (or lost and not yet needed).
    Released,
    /// Needed, but some dependencies are not in memory yet.
    Waiting,
    /// All dependencies in memory; queued until a worker has a free slot.
    Ready,
    /// Sent to a worker.
    Processing,
    /// Its result is held by at least one worker.
    Memory,
    /// Failed (see its [`TaskFailure`]).
    Erred,
}

/// One node of a submitted graph.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// The task's key (equal pure keys are one task).
    pub key: Key,
    /// Inputs: other nodes of the same submission, or existing tasks.
    pub deps: Vec<Dep>,
    /// The client holds a future on this node (adds one client reference).
    pub wanted: bool,
    /// User priority: higher runs earlier (Dask's `priority=`).
    pub priority: i32,
    /// How many times a failing run (error or panic) is retried (at most
    /// `u16::MAX`: more are taken as that).
    pub retries: u32,
}

/// An input of a [`NewTask`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dep {
    /// The node at this index of the same submission.
    Node(usize),
    /// A task the scheduler already knows (a future passed as an argument).
    Task(TaskId),
}

/// What [`Scheduler::submit`] made of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The task's id.
    pub id: TaskId,
    /// `false` when the key was already alive and the node was merged into it
    /// (the caller must not store a second spec for it).
    pub new: bool,
}

/// Everything that can happen to the scheduler, besides submission.
#[derive(Clone, Debug)]
pub enum Event {
    /// A worker with `nthreads` threads can take runs.
    WorkerJoined {
        /// The worker.
        worker: WorkerId,
        /// How many runs it executes at once.
        nthreads: u32,
    },
    /// The worker is gone with everything it held.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
    },
    /// The worker's process is gone, but the results it held live on in its
    /// machine's store: `heir` (a live worker of the same machine — or the
    /// machine's store itself, joined as a worker with no threads, which
    /// never runs anything) holds them from now on, and nothing is
    /// recomputed. What it was running is taken back as for `WorkerLost`.
    /// If `heir` is not a live worker, this is `WorkerLost`.
    ProcessLost {
        /// The lost worker.
        worker: WorkerId,
        /// Who holds its results from now on.
        heir: WorkerId,
    },
    /// A run finished; `nbytes` is the result's size, for placement.
    TaskFinished {
        /// The task.
        task: TaskId,
        /// Where it ran (and its result is).
        worker: WorkerId,
        /// The result's size in bytes.
        nbytes: u64,
    },
    /// A run failed with an error or a panic.
    TaskFailed {
        /// The task.
        task: TaskId,
        /// Where it ran.
        worker: WorkerId,
        /// Why it failed.
        failure: TaskFailure,
    },
    /// One client reference to the task is gone (a future dropped).
    ClientReleased {
        /// The task.
        task: TaskId,
    },
    /// One more client reference (a future for an existing task).
    ClientRetained {
        /// The task.
        task: TaskId,
    },
    /// The client cancels the task (and with it everything that needs it).
    Cancel {
        /// The task.
        task: TaskId,
    },
    /// From now on a worker takes `nthreads * (1 + extra_slots_per_thread)`
    /// runs (see [`SchedulerConfig`]): a driver that learns how long tasks
    /// take can queue more of them on its workers when they are short.
    Saturation {
        /// Runs queued on a worker per thread, beyond the running one.
        extra_slots_per_thread: u32,
    },
    /// The run of `task` on `worker` has started (the worker said so): a
    /// loss of `worker` from now on is counted against the task (see "Lost
    /// results" above). Ignored unless the task is processing there.
    TaskStarted {
        /// The task.
        task: TaskId,
        /// Where it runs.
        worker: WorkerId,
    },
    /// The run of `task` sent to `from` was given back before it started,
    /// and will never start there: run it on `to` if that is a live worker
    /// with a free slot, else queue it again (see "Stealing" above).
    TaskStolen {
        /// The task.
        task: TaskId,
        /// The worker that gave it back.
        from: WorkerId,
        /// The worker that asked for it, if any.
        to: Option<WorkerId>,
    },
    /// The run of `task` sent to `from` moved to worker `to` before it
    /// started, worker to worker (a direct steal: `to` has it now and runs
    /// it; see "Stealing" above). No `Run` follows, and `to` takes it even
    /// beyond its slots. A run abandoned on `from` is abandoned on `to`
    /// (`Recall` there); if `to` is gone (lost before the move was heard
    /// of), the task is queued again. Ignored unless the run is open on
    /// `from`, so a second notice of the same move is a no-op.
    TaskMoved {
        /// The task.
        task: TaskId,
        /// The worker that gave the run.
        from: WorkerId,
        /// The worker that has it now.
        to: WorkerId,
    },
    /// A run of `task` took `micros` (measured where it ran): the mean run
    /// time of its function follows, for weighing transfers
    /// ([`SchedulerConfig::weigh_transfers`]). Send it before the run's
    /// `TaskFinished` (the task may be forgotten after); a stale id is
    /// ignored. It takes effect at the next dispatch (the next event that
    /// changes a task or a worker), and answers nothing.
    RunTime {
        /// The task.
        task: TaskId,
        /// How long the run took, in microseconds.
        micros: u64,
    },
    /// The machine's memory is over its limit, or back under it: while
    /// `paused`, a run starts only when no other is in flight, so the graph
    /// still progresses, one run at a time, but no second task's working
    /// memory is added to what is already too much (Dask pauses a worker
    /// over its memory's pause fraction the same way, but to none at all,
    /// which can stall a cluster of one machine). Runs already handed to
    /// workers keep their place. The driver decides, with hysteresis (the
    /// processes engine: see `shoal_shm::store`).
    Pause {
        /// Whether to pause (`true`) or resume.
        paused: bool,
    },
    /// The driver measured the network between workers: moving `n` bytes
    /// costs `n ÷ bandwidth + latency` (see
    /// [`SchedulerConfig::weigh_transfers`]). A `bandwidth` of 0 leaves it
    /// unchanged. As `RunTime`, it takes effect at the next dispatch.
    Network {
        /// Bytes per second.
        bandwidth: u64,
        /// The fixed cost of a move, in microseconds.
        latency_micros: u32,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the task on the worker; all its inputs are in memory.
    Run {
        /// The task.
        task: TaskId,
        /// Where to run it.
        worker: WorkerId,
    },
    /// The worker may drop its copy of the task's result.
    Release {
        /// The task.
        task: TaskId,
        /// The worker holding the copy.
        worker: WorkerId,
    },
    /// Tell the client: the task is in memory now.
    ReportDone {
        /// The task.
        task: TaskId,
    },
    /// Tell the client: the task failed.
    ReportFailed {
        /// The task.
        task: TaskId,
        /// Why.
        failure: Arc<TaskFailure>,
    },
    /// Take back the run of `task` sent to `worker` if it has not started
    /// (the scheduler no longer waits for it), and answer for it in any
    /// case: `TaskStolen` if taken back, else its result or failure. Only
    /// with [`SchedulerConfig::recall`]; the run keeps its slot until then.
    Recall {
        /// The task.
        task: TaskId,
        /// The worker it was sent to.
        worker: WorkerId,
    },
    /// Ask worker `from` to give back the run of `task` if it has not
    /// started, for the idle worker `to` (only with
    /// [`SchedulerConfig::take_back`]; see "Taking runs back" in the
    /// `steal` module's docs). The driver answers with
    /// `TaskStolen { task, from, to: None }` if the run was given back (it
    /// then goes to `to` if `to` still has a free slot, else to the queue);
    /// a run that started is answered by its result as any other. The run
    /// keeps its slot on `from` until then, and is asked for once.
    TakeBack {
        /// The task.
        task: TaskId,
        /// The worker it was sent to.
        from: WorkerId,
        /// The idle worker it is taken back for.
        to: WorkerId,
    },
    /// The record is gone; the driver drops what it keeps for the id.
    Forget {
        /// The task.
        task: TaskId,
    },
}

/// Tuning of the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Tasks a worker may be sent beyond its thread count, per thread
    /// (Dask's `worker-saturation` minus one). Tasks past this stay queued
    /// in priority order, which keeps memory low; a little slack hides the
    /// latency between a task finishing and the next one arriving.
    pub extra_slots_per_thread: u32,
    /// A task that was running (its start known: [`Event::TaskStarted`]) on
    /// this many workers in a row when they died is failed with
    /// [`TaskFailure::KilledWorker`] (Dask's `allowed-failures` + 1;
    /// 0 is taken as 1, and deaths are counted up to 255 only).
    pub max_worker_deaths: u32,
    /// The driver's workers can take back a run they have not started, and
    /// answer for every run they were sent: an abandoned run then keeps its
    /// slot until its worker answers for it, and `Recall` asks for it back
    /// (see "Abandoned runs" in the module docs). `false`: its slot is free
    /// at once.
    pub recall: bool,
    /// How a ready task's worker is chosen. [`Placement::Locality`] (the
    /// default) is the rule every mode uses; [`Placement::Random`] is a
    /// benchmark and diagnostic control only (`shoal-bench locality`
    /// compares the two).
    pub placement: Placement,
    /// Weigh transfers against waiting: a ready task whose inputs' holder
    /// is full moves to a free worker only if the move pays, else waits
    /// (parked) for its holder, and idle workers steal parked tasks by the
    /// same rule (see the `steal` module's docs). The driver should report
    /// run times ([`Event::RunTime`]) and may measure the network
    /// ([`Event::Network`]). `false` (the default): a ready task goes to a
    /// free worker, holding its inputs if one does. Ignored with
    /// [`Placement::Random`].
    pub weigh_transfers: bool,
    /// With [`weigh_transfers`](Self::weigh_transfers): the driver's
    /// workers can give back named runs they have not started
    /// ([`Action::TakeBack`], answered by [`Event::TaskStolen`]), so a worker
    /// with an idle thread takes runs already sent to a busy one when the
    /// move pays (the `steal` module's rule). `false` (the default): only
    /// parked tasks are stolen.
    pub take_back: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            extra_slots_per_thread: 1,
            max_worker_deaths: 3,
            recall: false,
            placement: Placement::Locality,
            weigh_transfers: false,
            take_back: false,
        }
    }
}

/// How the scheduler chooses the worker of a ready task, among those with a
/// free slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// The worker holding most bytes of the task's inputs, then the least
    /// loaded, then the lowest id (see [`Scheduler`]'s placement docs).
    #[default]
    Locality,
    /// A worker drawn uniformly among those with a free slot, from a
    /// generator seeded with `seed`: the same events give the same choices.
    /// Input bytes are ignored. A benchmark and diagnostic control, never a
    /// good idea otherwise: it measures what locality-aware placement saves.
    Random {
        /// The generator's seed.
        seed: u64,
    },
}
