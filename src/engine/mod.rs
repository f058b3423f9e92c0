//! Engines: what runs a submitted graph. One per mode; the client API talks
//! to all of them through [`Engine`].
//!
//! Every engine drives the same scheduler state machine
//! ([`shoal_core::scheduler`]); they differ in where tasks run and how
//! results are stored and moved.

pub(crate) mod processes;
pub(crate) mod threads;
pub(crate) mod wait;

use std::sync::Arc;
use std::time::Instant;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::object::{Assemble, Bounded, Obj, Object, describe};
use shoal_core::scheduler::{Dep, NewTask, TaskId};

use crate::error::Result;

/// One task of a graph being submitted.
pub(crate) struct GraphNode {
    /// The key; its `func` is the task's index in the registry.
    pub key: Key,
    pub args: Vec<NodeArg>,
    pub wanted: bool,
    pub priority: i32,
    pub retries: u32,
}

/// One argument of a [`GraphNode`].
pub(crate) enum NodeArg {
    Value(Obj),
    Dep(Dep),
    /// A `Vec` parameter made of several dependencies' results.
    List(Vec<Dep>, Assemble),
}

/// Where a task stands, as its futures see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not finished yet.
    Pending,
    /// The result is in memory.
    Finished,
    /// It failed (or was cancelled); why.
    Failed(Arc<TaskFailure>),
}

impl Status {
    /// Finished, with a result or a failure.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Status::Pending)
    }
}

/// What the client API needs from a mode.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Submit a graph (topologically ordered); one id per node. The ids of
    /// wanted nodes each carry one client reference, to be given back with
    /// [`release`](Engine::release).
    fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>>;
    /// One client reference to the task is gone.
    fn release(&self, id: TaskId);
    /// One more client reference to the task (a future was cloned).
    fn retain(&self, id: TaskId);
    /// Cancel the task and what depends on it.
    fn cancel(&self, id: TaskId);
    fn status(&self, id: TaskId) -> Status;
    /// The task's key (`None` once forgotten).
    fn key(&self, id: TaskId) -> Option<Key>;
    /// Block until the task finished or the deadline passed; its status.
    fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status>;
    /// Block until one of the tasks finished or the deadline passed; the
    /// indices of all finished ones.
    fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>>;
    /// The result of a finished task.
    fn result(&self, id: TaskId) -> Result<Obj>;
    /// Block until `ids[from..]` finished in order, one failed, or the
    /// deadline passed: how many of `ids` are finished from the start, and
    /// the failure that stopped the scan, if any. (An engine overrides this
    /// to look at many tasks per lock.)
    fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>)> {
        for (i, &id) in ids.iter().enumerate().skip(from) {
            match self.wait(id, deadline)? {
                Status::Pending => return Ok((i, None)),
                Status::Failed(f) => return Ok((i, Some(f))),
                Status::Finished => {}
            }
        }
        Ok((ids.len(), None))
    }
    /// The results of finished tasks, in order.
    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        ids.iter().map(|&id| self.result(id)).collect()
    }
    /// Worker threads (for display).
    fn nthreads(&self) -> usize;
    /// Process ids of the worker processes (none unless the mode has them).
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// The result store's memory and spill figures (none unless the mode
    /// has a store with a memory limit).
    fn store_stats(&self) -> Option<crate::client_processes::StoreStats> {
        None
    }
    /// Stop the workers; later calls fail with [`Error::Closed`](crate::Error::Closed).
    fn shutdown(&self);
}

/// A stored argument of a task: a value, or the id of a task whose result
/// it takes (one, or a list assembled into a `Vec`).
pub(crate) enum SpecArg {
    Value(Obj),
    Dep(TaskId),
    List(Box<[TaskId]>, Assemble),
}

/// A short rendering of a stored task's arguments for its failure message
/// (see [`describe`](shoal_core::object::describe)): values as their
/// `Debug`, results of other tasks by those tasks' keys.
pub(crate) fn describe_spec_args(args: &[SpecArg], key_of: impl Fn(TaskId) -> Option<Key>) -> String {
    struct ResultOf(String);
    impl Object for ResultOf {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn type_name(&self) -> &'static str {
            "result"
        }
        fn archived_bytes(&self) -> std::result::Result<&[u8], shoal_core::registry::InputError> {
            Ok(&[])
        }
        fn nbytes(&self) -> u64 {
            0
        }
        fn describe(&self, out: &mut Bounded) -> std::fmt::Result {
            std::fmt::Write::write_str(out, &self.0)
        }
    }
    let name = |id: TaskId| match key_of(id) {
        Some(key) => format!("<result of {key}>"),
        None => "<result of a forgotten task>".to_string(),
    };
    let shown: Vec<Obj> = args
        .iter()
        .map(|arg| match arg {
            SpecArg::Value(obj) => Arc::clone(obj),
            SpecArg::Dep(id) => Arc::new(ResultOf(name(*id))) as Obj,
            SpecArg::List(ids, _) => {
                let first = ids.first().map(|id| format!("{}, ", name(*id))).unwrap_or_default();
                Arc::new(ResultOf(format!("[{first}… {} results]", ids.len()))) as Obj
            }
        })
        .collect();
    describe(shown.iter().map(|o| &**o))
}

/// The scheduler's view of a graph: each node's key, options and inputs (a
/// task that names the same input twice depends on it once).
pub(crate) fn new_tasks(nodes: &[GraphNode]) -> Vec<NewTask> {
    nodes
        .iter()
        .map(|n| {
            let mut deps: Vec<Dep> = Vec::new();
            for arg in &n.args {
                match arg {
                    NodeArg::Value(_) => {}
                    NodeArg::Dep(d) => deps.push(*d),
                    NodeArg::List(ds, _) => deps.extend_from_slice(ds),
                }
            }
            if deps.len() > 1 {
                let mut seen = std::collections::HashSet::with_capacity(deps.len());
                deps.retain(|d| seen.insert(*d));
            }
            NewTask { key: n.key, deps, wanted: n.wanted, priority: n.priority, retries: n.retries }
        })
        .collect()
}

/// A node's arguments as stored, with its graph-relative inputs resolved to
/// the ids `submit` gave the graph's nodes.
pub(crate) fn spec_args(args: Vec<NodeArg>, ids: &[TaskId]) -> Box<[SpecArg]> {
    let resolve = |d: &Dep| match *d {
        Dep::Node(i) => ids[i],
        Dep::Task(id) => id,
    };
    args.into_iter()
        .map(|arg| match arg {
            NodeArg::Value(obj) => SpecArg::Value(obj),
            NodeArg::Dep(d) => SpecArg::Dep(resolve(&d)),
            NodeArg::List(ds, assemble) => SpecArg::List(ds.iter().map(resolve).collect(), assemble),
        })
        .collect()
}
