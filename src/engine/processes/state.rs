//! The engine's state under its lock: the scheduler, what the client keeps
//! per task (arguments, kept as lineage, and the result), and how the
//! scheduler's actions are carried out.
//!
//! Nothing here does I/O: actions become [`Effects`] (runs to send, objects
//! to drop, spills to write, clients to wake), carried out after the lock is
//! released. Results live in the [`Store`], which enforces the memory limit.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::object::{Assemble, Obj};
use shoal_core::scheduler::{Action, Event, Scheduler, TaskId, TaskState, WorkerId};

use super::store::{Fetched, Slot, SpillJob, Store};
use super::workers::Conn;
use crate::engine::wait::{Waitable, Waiters};
use crate::engine::{SpecArg, Status};
use crate::error::{Error, Result};

pub(super) struct State {
    pub(super) sched: Scheduler,
    /// What to run for each live task, by `TaskId::index`.
    pub(super) specs: Vec<Option<Spec>>,
    /// What blocked client threads wait for.
    pub(super) waiters: Waiters,
    pub(super) closed: bool,
    /// Why no worker can run anything any more (replacements failed).
    pub(super) broken: Option<String>,
    /// Reused buffer for the scheduler's actions.
    pub(super) actions: Vec<Action>,
    /// Live workers' connections.
    pub(super) workers: HashMap<WorkerId, Arc<Conn>>,
    /// The results: in shared memory or spilled, under the memory limit.
    pub(super) store: Store,
}

/// What the engine keeps per live task besides the scheduler's record.
pub(super) struct Spec {
    pub(super) generation: u32,
    /// The client cancelled the task after it finished.
    pub(super) cancelled: bool,
    /// The task's index in the sorted registry.
    pub(super) func: u32,
    /// Kept after success: the lineage a lost result is recomputed from.
    pub(super) args: Box<[SpecArg]>,
    pub(super) result: Option<Held>,
}

/// A result in the client's store, and the worker the scheduler counts as
/// holding it.
pub(super) struct Held {
    pub(super) slot: Slot,
    pub(super) worker: WorkerId,
}

/// A `Run` to send, with its inputs in hand.
pub(super) struct Job {
    pub(super) id: TaskId,
    pub(super) key: Key,
    pub(super) func: u32,
    pub(super) worker: WorkerId,
    pub(super) conn: Arc<Conn>,
    /// Every input fetched; all are resolved when the run is sent, even
    /// if it then fails.
    pub(super) inputs: Vec<JobInput>,
    /// Why the run cannot be sent, if it cannot.
    pub(super) error: Option<String>,
}

/// An input of a run: in hand, or to be read back from a spill file when
/// the run is sent.
pub(super) enum JobInput {
    One(Fetched),
    List(Vec<Fetched>, Assemble),
}

/// What a pass over the scheduler's actions leaves to do after unlocking.
#[derive(Default)]
pub(super) struct Effects {
    pub(super) jobs: Vec<Job>,
    pub(super) garbage: Vec<Obj>,
    pub(super) forgotten: Vec<Spec>,
    /// Segments to write to spill files.
    pub(super) spills: Vec<SpillJob>,
    /// Spill files to delete (by dropping them).
    pub(super) files: Vec<Arc<shoal_shm::SpillFile>>,
    pub(super) wake_clients: bool,
}

impl Waitable for State {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn stopped(&self) -> Option<Error> {
        if self.closed {
            return Some(Error::Closed);
        }
        self.broken.as_ref().map(|reason| Error::Start(reason.clone()))
    }
}

impl State {
    pub(super) fn spec(&self, id: TaskId) -> Option<&Spec> {
        self.specs.get(id.index as usize)?.as_ref().filter(|s| s.generation == id.generation)
    }

    pub(super) fn spec_mut(&mut self, id: TaskId) -> Option<&mut Spec> {
        self.specs.get_mut(id.index as usize)?.as_mut().filter(|s| s.generation == id.generation)
    }

    pub(super) fn handle(&mut self, event: Event, effects: &mut Effects) {
        let mut actions = std::mem::take(&mut self.actions);
        self.sched.handle(event, &mut actions);
        self.apply(&mut actions, effects);
        self.actions = actions;
    }

    /// Carry out the scheduler's actions (draining `actions`).
    pub(super) fn apply(&mut self, actions: &mut Vec<Action>, effects: &mut Effects) {
        for action in actions.drain(..) {
            match action {
                Action::Run { task, worker } => {
                    if let Some(job) = self.job(task, worker, effects) {
                        effects.jobs.push(job);
                    }
                }
                Action::Release { task, worker } => {
                    if let Some(spec) = self.spec_mut(task)
                        && spec.result.as_ref().is_some_and(|h| h.worker == worker)
                        && let Some(held) = spec.result.take()
                    {
                        self.store.release(held.slot, effects);
                    }
                }
                Action::ReportDone { task } => {
                    effects.wake_clients |= self.is_awaited(task);
                }
                Action::ReportFailed { task, .. } => {
                    if self.sched.state(task) == Some(TaskState::Memory)
                        && let Some(spec) = self.spec_mut(task)
                    {
                        spec.cancelled = true;
                    }
                    effects.wake_clients |= self.is_awaited(task);
                }
                Action::Forget { task } => {
                    if self.spec(task).is_some()
                        && let Some(mut spec) = self.specs[task.index as usize].take()
                    {
                        if let Some(held) = spec.result.take() {
                            self.store.release(held.slot, effects);
                        }
                        effects.forgotten.push(spec);
                    }
                }
            }
        }
    }

    pub(super) fn is_awaited(&self, task: TaskId) -> bool {
        self.waiters.awaits(task)
    }

    /// Where the task stands, as its futures see it.
    pub(super) fn status(&self, id: TaskId) -> Status {
        match self.sched.state(id) {
            Some(TaskState::Memory) => match self.spec(id) {
                Some(spec) if spec.cancelled => Status::Failed(Arc::new(TaskFailure::Cancelled {
                    key: self.sched.key(id).unwrap_or(Key { func: u32::MAX, token: [0; 2] }),
                })),
                _ => Status::Finished,
            },
            Some(TaskState::Erred) => match self.sched.failure(id) {
                Some(failure) => Status::Failed(failure),
                None => Status::Pending,
            },
            _ => Status::Pending,
        }
    }

    /// The result of a finished task, in hand or to be read back (marked
    /// used either way).
    pub(super) fn result(&mut self, id: TaskId, effects: &mut Effects) -> Result<Fetched> {
        match self.status(id) {
            Status::Failed(f) => Err(Error::Task(f)),
            Status::Finished => {
                let slot =
                    self.spec(id).and_then(|s| s.result.as_ref()).map(|h| h.slot.clone()).ok_or(Error::Closed)?;
                self.store.fetch(&slot, effects).map_err(Error::Message)
            }
            Status::Pending => Err(Error::Closed),
        }
    }

    /// The run of a task the scheduler sends to `worker` now. Its stored
    /// inputs are pinned until the run ends, then fetched (spilled ones are
    /// read back when the run is sent).
    pub(super) fn job(&mut self, id: TaskId, worker: WorkerId, effects: &mut Effects) -> Option<Job> {
        enum Want {
            Value(Obj),
            One(Slot),
            List(Vec<Slot>, Assemble),
        }
        let spec = self.spec(id)?;
        let key = self.sched.key(id)?;
        let conn = Arc::clone(self.workers.get(&worker)?);
        let func = spec.func;
        // Every input's slot first: a missing one fails the run before
        // anything is fetched or pinned.
        let slot_of = |dep: TaskId| {
            self.spec(dep)
                .and_then(|s| s.result.as_ref())
                .map(|h| h.slot.clone())
                .ok_or_else(|| format!("internal error: an input of {key} is not in memory"))
        };
        let wants: std::result::Result<Vec<Want>, String> = spec
            .args
            .iter()
            .map(|arg| match arg {
                SpecArg::Value(obj) => Ok(Want::Value(Arc::clone(obj))),
                SpecArg::Dep(dep) => slot_of(*dep).map(Want::One),
                SpecArg::List(deps, assemble) => deps
                    .iter()
                    .map(|d| slot_of(*d))
                    .collect::<std::result::Result<_, _>>()
                    .map(|s| Want::List(s, *assemble)),
            })
            .collect();
        let wants = match wants {
            Ok(wants) => wants,
            Err(message) => return Some(Job { id, key, func, worker, conn, inputs: Vec::new(), error: Some(message) }),
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
                Want::List(slots, _) => slots.iter().filter_map(stored).collect(),
            })
            .collect();
        self.store.run_started(id, worker, pinned);
        let mut inputs = Vec::with_capacity(wants.len());
        let mut error = None;
        for want in wants {
            let mut fetch = |slot: &Slot| match self.store.fetch(slot, effects) {
                Ok(fetched) => Some(fetched),
                Err(e) => {
                    error.get_or_insert(e);
                    None
                }
            };
            match want {
                Want::Value(obj) => inputs.push(JobInput::One(Fetched::Ready(obj))),
                Want::One(slot) => inputs.extend(fetch(&slot).map(JobInput::One)),
                Want::List(slots, assemble) => {
                    inputs.push(JobInput::List(slots.iter().filter_map(&mut fetch).collect(), assemble))
                }
            }
        }
        Some(Job { id, key, func, worker, conn, inputs, error })
    }
}
