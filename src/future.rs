//! Futures: handles to submitted tasks, as in `dask.distributed`.
//!
//! A [`Future`] holds one client reference to its task: the result stays in
//! memory while any clone of the future lives, and is released when the
//! last one is dropped (unless a task that needs it is still waiting).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::object::{Data, read_owned};
use shoal_core::scheduler::{TaskId, TaskState};

use crate::engine::{Engine, Status};
use crate::error::{Error, Result};

/// The eventual result of a submitted task.
pub struct Future<T> {
    pub(crate) core: FutureRef,
    _type: PhantomData<fn() -> T>,
}

/// The untyped part of a future: one client reference to a task of an
/// engine. Cloning takes another reference, dropping gives it back — the
/// engine counts them, so a future costs no allocation of its own (a
/// million held futures are 24 MB, not a million small heap blocks).
#[doc(hidden)]
pub struct FutureRef {
    pub(crate) engine: EngineRef,
    pub(crate) id: TaskId,
}

/// A thin shared pointer to an engine (one word, where `Arc<dyn Engine>`
/// takes two): a million held futures are 16 MB.
pub(crate) type EngineRef = Arc<EngineHandle>;

/// The engine behind a client, as futures hold it.
pub(crate) struct EngineHandle(pub(crate) Arc<dyn Engine>);

impl std::ops::Deref for EngineHandle {
    type Target = dyn Engine;

    fn deref(&self) -> &(dyn Engine + 'static) {
        &*self.0
    }
}

impl Clone for FutureRef {
    fn clone(&self) -> Self {
        self.engine.retain(self.id);
        FutureRef { engine: Arc::clone(&self.engine), id: self.id }
    }
}

impl Drop for FutureRef {
    fn drop(&mut self) {
        self.engine.release(self.id);
    }
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future { core: self.core.clone(), _type: PhantomData }
    }
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({}, {:?})", self.key(), self.status())
    }
}

/// What a future's task has come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FutureStatus {
    /// Not started: waiting for its inputs, or for a free worker thread.
    Queued,
    /// Handed to a worker: running, or next in that worker's queue (a
    /// worker holds a run or a few beyond its threads so the next one is at
    /// hand).
    Running,
    /// The result is ready.
    Finished,
    /// The task failed (or a task it needed did): why.
    Error(Arc<TaskFailure>),
    /// The task was cancelled.
    Cancelled,
}

impl<T> Future<T> {
    /// A future for a client reference that `engine` already counted.
    pub(crate) fn new(engine: EngineRef, id: TaskId) -> Future<T> {
        Future { core: FutureRef { engine, id }, _type: PhantomData }
    }

    /// The task's key, e.g. `count_letters-3f1c…`.
    pub fn key(&self) -> Key {
        // A future holds a client reference, so its task is never forgotten
        // while it exists; the fallback is unreachable in practice.
        self.core.engine.key(self.core.id).unwrap_or(Key { func: u32::MAX, token: [0; 2] })
    }

    /// Whether the task has finished (with a result, an error, or cancelled).
    pub fn done(&self) -> bool {
        self.core.engine.status(self.core.id).is_finished()
    }

    /// Where the task stands now (does not wait).
    pub fn status(&self) -> FutureStatus {
        match self.core.engine.status(self.core.id) {
            // Two looks: a task that finishes in between reads as running
            // (it was, a moment ago).
            Status::Pending => match self.core.engine.state(self.core.id) {
                Some(TaskState::Processing | TaskState::Memory | TaskState::Erred) => FutureStatus::Running,
                _ => FutureStatus::Queued,
            },
            status => status_of(status),
        }
    }

    /// Cancel the task, and every task that needs it, unless it has finished
    /// already; its futures then fail with a "cancelled" error. A running
    /// task is not interrupted: its result is dropped when it arrives.
    pub fn cancel(&self) {
        self.core.engine.cancel(self.core.id);
    }

    /// Block until the task finished (or the client shut down).
    pub fn wait(&self) -> Result<()> {
        self.core.engine.wait(self.core.id, None).map(|_| ())
    }

    /// Block until the task finished or `timeout` passed; whether it finished.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        let status = self.core.engine.wait(self.core.id, Some(Instant::now() + timeout))?;
        Ok(status.is_finished())
    }
}

impl<T: Data> Future<T> {
    /// Block until the task finished, and return (a clone of) its result,
    /// or the error it failed with.
    pub fn result(&self) -> Result<T> {
        match self.core.engine.wait(self.core.id, None)? {
            Status::Failed(f) => Err(Error::Task(f)),
            _ => self.take_result(),
        }
    }

    /// The result of a task known to be finished.
    pub(crate) fn take_result(&self) -> Result<T> {
        let obj = self.core.engine.result(self.core.id)?;
        Ok(read_owned::<T>(&*obj)?)
    }
}

fn status_of(status: Status) -> FutureStatus {
    match status {
        Status::Pending => FutureStatus::Queued,
        Status::Finished => FutureStatus::Finished,
        Status::Failed(f) if matches!(*f, TaskFailure::Cancelled { .. }) => FutureStatus::Cancelled,
        Status::Failed(f) => FutureStatus::Error(f),
    }
}

/// Block until every future has finished (with a result, an error, or
/// cancelled), as `distributed.wait` does. Errors are not raised here; read
/// them with [`Future::result`].
pub fn wait<T>(futures: &[Future<T>]) -> Result<()> {
    for f in futures {
        f.wait()?;
    }
    Ok(())
}

/// Iterate over futures in the order they finish, as
/// `distributed.as_completed` does.
pub fn as_completed<T>(futures: impl IntoIterator<Item = Future<T>>) -> AsCompleted<T> {
    AsCompleted { pending: futures.into_iter().collect(), finished: VecDeque::new() }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<T> {
    pending: Vec<Future<T>>,
    /// Found finished, not yet handed out.
    finished: VecDeque<Future<T>>,
}

/// How long `as_completed` blocks before looking again when its futures
/// belong to several clients (it can block on only one engine at a time).
const AS_COMPLETED_POLL: Duration = Duration::from_millis(20);

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        loop {
            if let Some(f) = self.finished.pop_front() {
                return Some(f);
            }
            let engine = Arc::clone(&self.pending.first()?.core.engine);
            let on_engine: Vec<usize> =
                (0..self.pending.len()).filter(|&i| Arc::ptr_eq(&self.pending[i].core.engine, &engine)).collect();
            let ids: Vec<TaskId> = on_engine.iter().map(|&i| self.pending[i].core.id).collect();
            let mixed = on_engine.len() < self.pending.len();
            let deadline = mixed.then(|| Instant::now() + AS_COMPLETED_POLL);
            let mut take: Vec<usize> = match engine.wait_any(&ids, deadline) {
                Ok(done) => done.into_iter().map(|i| on_engine[i]).collect(),
                // The client shut down: these can never finish; hand them
                // out so that their `result()` says so.
                Err(_) => on_engine,
            };
            if mixed {
                take.extend(
                    (0..self.pending.len())
                        .filter(|&i| !Arc::ptr_eq(&self.pending[i].core.engine, &engine) && self.pending[i].done()),
                );
                take.sort_unstable();
            }
            for &i in take.iter().rev() {
                let f = self.pending.remove(i);
                self.finished.push_front(f);
            }
        }
    }
}
