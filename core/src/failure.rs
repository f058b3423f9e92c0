//! Why a task did not produce a result.
//!
//! A failure names the task it happened to and carries the message the user
//! needs. A dependent of a failed task fails with
//! [`TaskFailure::DependencyFailed`], which points straight at the *root*
//! failure (never at a chain of intermediate dependency failures), so the
//! message a user reads always names the task that actually went wrong.

use std::fmt;
use std::sync::Arc;

use crate::key::Key;

/// Why a task ended in the `erred` state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFailure {
    /// The task function returned `Err`; `message` is its `Display`.
    Error { key: Key, message: String },
    /// The task function panicked; `message` is the panic payload.
    Panic { key: Key, message: String },
    /// The task was running on workers that died, `attempts` times in a row.
    KilledWorker { key: Key, attempts: u32 },
    /// The task (or a task it depends on) was cancelled by the client.
    Cancelled { key: Key },
    /// An input of this task failed; `cause` is the root failure.
    DependencyFailed { key: Key, cause: Arc<TaskFailure> },
}

impl TaskFailure {
    /// The task this failure is about.
    pub fn key(&self) -> Key {
        match self {
            TaskFailure::Error { key, .. }
            | TaskFailure::Panic { key, .. }
            | TaskFailure::KilledWorker { key, .. }
            | TaskFailure::Cancelled { key }
            | TaskFailure::DependencyFailed { key, .. } => *key,
        }
    }

    /// The failure that started it all: `self` unless this is a dependency
    /// failure, in which case the root cause it carries.
    pub fn root(&self) -> &TaskFailure {
        match self {
            TaskFailure::DependencyFailed { cause, .. } => cause,
            other => other,
        }
    }

    /// Whether running the task again could help (errors and panics can be
    /// retried; cancellation, killed workers and dependency failures not).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskFailure::Error { .. } | TaskFailure::Panic { .. })
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFailure::Error { key, message } => write!(f, "task {key} failed: {message}"),
            TaskFailure::Panic { key, message } => write!(f, "task {key} panicked: {message}"),
            TaskFailure::KilledWorker { key, attempts } => write!(
                f,
                "task {key} was running on {attempts} workers that died; \
                 it is failed so it cannot kill more (suspect a crash or out-of-memory in it)"
            ),
            TaskFailure::Cancelled { key } => write!(f, "task {key} was cancelled"),
            TaskFailure::DependencyFailed { key, cause } => {
                write!(f, "task {key} did not run because a dependency failed: {cause}")
            }
        }
    }
}

impl std::error::Error for TaskFailure {}
