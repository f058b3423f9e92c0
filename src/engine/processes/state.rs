//! The engine's state under its lock: the scheduler, what the client keeps
//! per task (arguments, kept as lineage, and the result), and how the
//! scheduler's actions are carried out.
//!
//! Nothing here does I/O: actions become [`Effects`] (runs to send, objects
//! to drop, clients to wake), carried out after the lock is released.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::object::{Assemble, Obj};
use shoal_core::scheduler::{Action, Event, Scheduler, TaskId, TaskState, WorkerId};

use super::workers::Conn;
use crate::engine::Status;
use crate::error::{Error, Result};

pub(super) struct State {
    pub(super) sched: Scheduler,
    /// What to run for each live task, by `TaskId::index`.
    pub(super) specs: Vec<Option<Spec>>,
    /// What blocked client threads wait for.
    pub(super) waiters: Vec<Interest>,
    pub(super) closed: bool,
    /// Why no worker can run anything any more (replacements failed).
    pub(super) broken: Option<String>,
    /// Reused buffer for the scheduler's actions.
    pub(super) actions: Vec<Action>,
    /// Live workers' connections.
    pub(super) workers: HashMap<WorkerId, Arc<Conn>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Interest {
    Task(TaskId),
    Any,
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
    pub(super) obj: Obj,
    pub(super) worker: WorkerId,
}

pub(super) enum SpecArg {
    Value(Obj),
    Dep(TaskId),
    List(Box<[TaskId]>, Assemble),
}

/// A `Run` to send, with its inputs in hand.
pub(super) struct Job {
    pub(super) id: TaskId,
    pub(super) key: Key,
    pub(super) func: u32,
    pub(super) worker: WorkerId,
    pub(super) conn: Arc<Conn>,
    pub(super) inputs: std::result::Result<Vec<JobInput>, String>,
}

pub(super) enum JobInput {
    One(Obj),
    List(Vec<Obj>, Assemble),
}

/// What a pass over the scheduler's actions leaves to do after unlocking.
#[derive(Default)]
pub(super) struct Effects {
    pub(super) jobs: Vec<Job>,
    pub(super) garbage: Vec<Obj>,
    pub(super) forgotten: Vec<Spec>,
    pub(super) wake_clients: bool,
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
                    if let Some(job) = self.job(task, worker) {
                        effects.jobs.push(job);
                    }
                }
                Action::Release { task, worker } => {
                    if let Some(spec) = self.spec_mut(task)
                        && spec.result.as_ref().is_some_and(|h| h.worker == worker)
                        && let Some(held) = spec.result.take()
                    {
                        effects.garbage.push(held.obj);
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
                        && let Some(spec) = self.specs[task.index as usize].take()
                    {
                        effects.forgotten.push(spec);
                    }
                }
            }
        }
    }

    pub(super) fn is_awaited(&self, task: TaskId) -> bool {
        self.waiters.iter().any(|w| *w == Interest::Any || *w == Interest::Task(task))
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

    pub(super) fn result(&self, id: TaskId) -> Result<Obj> {
        match self.status(id) {
            Status::Failed(f) => Err(Error::Task(f)),
            Status::Finished => {
                self.spec(id).and_then(|s| s.result.as_ref()).map(|h| Arc::clone(&h.obj)).ok_or(Error::Closed)
            }
            Status::Pending => Err(Error::Closed),
        }
    }

    /// The run of a task the scheduler sends to `worker` now.
    pub(super) fn job(&self, id: TaskId, worker: WorkerId) -> Option<Job> {
        let spec = self.spec(id)?;
        let key = self.sched.key(id)?;
        let conn = Arc::clone(self.workers.get(&worker)?);
        let result_of = |dep: TaskId| {
            self.spec(dep)
                .and_then(|s| s.result.as_ref())
                .map(|h| Arc::clone(&h.obj))
                .ok_or_else(|| format!("internal error: an input of {key} is not in memory"))
        };
        let inputs = spec
            .args
            .iter()
            .map(|arg| match arg {
                SpecArg::Value(obj) => Ok(JobInput::One(Arc::clone(obj))),
                SpecArg::Dep(dep) => result_of(*dep).map(JobInput::One),
                SpecArg::List(deps, assemble) => deps
                    .iter()
                    .map(|d| result_of(*d))
                    .collect::<std::result::Result<Vec<Obj>, String>>()
                    .map(|objs| JobInput::List(objs, *assemble)),
            })
            .collect();
        Some(Job { id, key, func: spec.func, worker, conn, inputs })
    }
}
