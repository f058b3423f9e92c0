//! The processes mode's backend: what the driver keeps per task (arguments,
//! kept as lineage, and the result), the client's store of results and the
//! worker connections, and how the scheduler's actions are carried out.
//!
//! Nothing here does I/O: actions become [`Effects`] (runs to send, objects
//! to drop, spills to write, clients to wake), carried out after the lock is
//! released. Results live in the [`Store`], which enforces the memory limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shoal_core::Key;
use shoal_core::driver::{Backend, SpecArg};
use shoal_core::object::Obj;
use shoal_core::scheduler::{TaskId, WorkerId};

use super::workers::{Link, Notices};
use crate::StealStats;
use crate::error::Result;
use shoal_shm::pool::Conn;
use shoal_shm::store::{Fetched, Slot, Store, StoreEffects};

/// The driver's state in this mode.
pub(crate) type State = shoal_core::driver::State<Procs>;

/// The backend: worker connections and the client's store.
pub(crate) struct Procs {
    /// Live workers' connections.
    pub(crate) workers: HashMap<WorkerId, Link>,
    /// The results: in shared memory or spilled, under the memory limit.
    pub(crate) store: Store,
    /// Moves of runs between workers (direct steals) of which one notice
    /// came and the other is awaited, by (task, from, to).
    pub(crate) moves: HashMap<(TaskId, WorkerId, WorkerId), Notices>,
    /// (victim, thief): the thief said its channel from the victim ended,
    /// and the victim is not lost yet (its `Gave` may still come).
    pub(crate) gone: HashSet<(WorkerId, WorkerId)>,
    /// Runs sent and moved, for tests and monitoring.
    pub(crate) stats: StealStats,
}

/// What the driver keeps per live task in this mode.
pub(crate) struct Spec {
    /// The task's index in the sorted registry.
    pub(crate) func: u32,
    /// Kept after success: the lineage a lost result is recomputed from.
    pub(crate) args: Box<[SpecArg]>,
    pub(crate) result: Option<Held>,
    /// Runs of it the driver sent (a moved run is not sent again).
    pub(crate) sent: u32,
}

/// A result in the client's store, and the worker the scheduler counts as
/// holding it.
pub(crate) struct Held {
    pub(crate) slot: Slot,
    pub(crate) worker: WorkerId,
}

/// A `Run` to send, with its inputs in hand.
pub(crate) struct Job {
    pub(crate) id: TaskId,
    pub(crate) key: Key,
    pub(crate) func: u32,
    pub(crate) worker: WorkerId,
    pub(crate) conn: Arc<Conn>,
    /// Every input fetched; all are resolved when the run is sent, even
    /// if it then fails.
    pub(crate) inputs: Vec<JobInput>,
    /// Why the run cannot be sent, if it cannot.
    pub(crate) error: Option<String>,
    /// The worker says it starts before it does (the task is a suspect:
    /// `Scheduler::is_suspect`).
    pub(crate) report_start: bool,
}

/// An input of a run: in hand, or to be read back from a spill file when
/// the run is sent.
pub(crate) enum JobInput {
    One(Fetched),
    List(Vec<Fetched>),
}

/// What a pass over the scheduler's actions leaves to do after unlocking.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) jobs: Vec<Job>,
    pub(crate) forgotten: Vec<Spec>,
    /// Runs to take back (`Recall`), sent after this pass's runs: one
    /// message per worker.
    pub(crate) recalls: Vec<(Arc<Conn>, TaskId)>,
    /// Objects to drop, spills to write, spill files to delete.
    pub(crate) store: StoreEffects,
    pub(crate) wake_clients: bool,
}

impl shoal_core::driver::Effects for Effects {
    fn wake_clients(&mut self) {
        self.wake_clients = true;
    }
}

impl Backend for Procs {
    type Task = Spec;
    type Effects = Effects;

    fn new_task(&mut self, func: u32, args: Box<[SpecArg]>) -> Spec {
        Spec { func, args, result: None, sent: 0 }
    }

    fn run(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        if let Some(job) = job(st, task, worker, fx) {
            fx.jobs.push(job);
        }
    }

    fn release(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        if let Some(spec) = st.spec_mut(task)
            && spec.task.result.as_ref().is_some_and(|h| h.worker == worker)
            && let Some(held) = spec.task.result.take()
        {
            st.backend.store.release(held.slot, &mut fx.store);
        }
    }

    fn recall(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        // A lost worker's runs need no recall: its reader reports the loss.
        if let Some(link) = st.backend.workers.get(&worker) {
            fx.recalls.push((Arc::clone(&link.conn), task));
        }
    }

    fn forget(&mut self, mut spec: shoal_core::driver::Spec<Spec>, fx: &mut Effects) {
        if let Some(held) = spec.task.result.take() {
            self.store.release(held.slot, &mut fx.store);
        }
        fx.forgotten.push(spec.task);
    }
}

/// The result of a finished task, in hand or to be read back (marked used
/// either way).
pub(crate) fn result(st: &mut State, id: TaskId, effects: &mut Effects) -> Result<Fetched> {
    let spec = st.finished(id)?;
    let slot = spec.task.result.as_ref().map(|h| h.slot.clone()).ok_or(crate::Error::Closed)?;
    st.backend.store.fetch(&slot, &mut effects.store).map_err(crate::Error::Message)
}

/// The run of a task the scheduler sends to `worker` now. Its stored inputs
/// are pinned until the run ends, then fetched (spilled ones are read back
/// when the run is sent).
fn job(st: &mut State, id: TaskId, worker: WorkerId, effects: &mut Effects) -> Option<Job> {
    enum Want {
        Value(Obj),
        One(Slot),
        List(Vec<Slot>),
    }
    let spec = st.spec(id)?;
    let key = st.sched.key(id)?;
    let conn = Arc::clone(&st.backend.workers.get(&worker)?.conn);
    let func = spec.task.func;
    // Every input's slot first: a missing one fails the run before
    // anything is fetched or pinned.
    let slot_of = |dep: TaskId| {
        st.spec(dep)
            .and_then(|s| s.task.result.as_ref())
            .map(|h| h.slot.clone())
            .ok_or_else(|| format!("internal error: an input of {key} is not in memory"))
    };
    let wants: std::result::Result<Vec<Want>, String> = spec
        .task
        .args
        .iter()
        .map(|arg| match arg {
            SpecArg::Value(obj) => Ok(Want::Value(Arc::clone(obj))),
            SpecArg::Dep(dep) => slot_of(*dep).map(Want::One),
            SpecArg::List(deps) => {
                deps.iter().map(|d| slot_of(*d)).collect::<std::result::Result<_, _>>().map(Want::List)
            }
        })
        .collect();
    let wants = match wants {
        Ok(wants) => wants,
        Err(message) => {
            return Some(Job {
                id,
                key,
                func,
                worker,
                conn,
                inputs: Vec::new(),
                error: Some(message),
                report_start: false,
            });
        }
    };
    let stored = |slot: &Slot| match slot {
        Slot::Stored(serial) => Some(*serial),
        Slot::Inline(_) => None,
    };
    let pinned = wants
        .iter()
        .flat_map(|want| match want {
            Want::Value(_) => Vec::new(),
            Want::One(slot) => stored(slot).into_iter().collect(),
            Want::List(slots) => slots.iter().filter_map(stored).collect(),
        })
        .collect();
    st.backend.store.run_started(id, worker, pinned);
    let mut inputs = Vec::with_capacity(wants.len());
    let mut error = None;
    for want in wants {
        let mut fetch = |slot: &Slot| match st.backend.store.fetch(slot, &mut effects.store) {
            Ok(fetched) => Some(fetched),
            Err(e) => {
                error.get_or_insert(e);
                None
            }
        };
        match want {
            Want::Value(obj) => inputs.push(JobInput::One(Fetched::Ready(obj))),
            Want::One(slot) => inputs.extend(fetch(&slot).map(JobInput::One)),
            Want::List(slots) => inputs.push(JobInput::List(slots.iter().filter_map(&mut fetch).collect())),
        }
    }
    let report_start = st.sched.is_suspect(id);
    st.backend.stats.runs_sent += 1;
    if let Some(spec) = st.spec_mut(id) {
        spec.task.sent += 1;
        if spec.task.sent > 1 {
            st.backend.stats.runs_sent_again += 1;
        }
    }
    Some(Job { id, key, func, worker, conn, inputs, error, report_start })
}
