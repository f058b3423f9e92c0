//! The one error type of the public API.

use std::sync::Arc;

use shoal_core::TaskFailure;
use shoal_core::registry::RegistryError;
use shoal_core::scheduler::GraphError;

/// `Result` with shoal's [`Error`]; also the natural return type of a task.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shoal, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task failed (returned `Err` or panicked), or a task it needed did;
    /// the message names the task that went wrong and why.
    #[error("{0}")]
    Task(Arc<TaskFailure>),
    /// An I/O error, typically inside a task (so `?` works on `std::io`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The task registry of this binary is invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A submitted graph was malformed (an internal error: please report it).
    #[error("invalid task graph: {0}")]
    Graph(#[from] GraphError),
    /// The client this future or call belongs to has been shut down.
    #[error("the shoal client was shut down; make a new Client to run more work")]
    Closed,
    /// The engine could not start (for example, threads could not be spawned).
    #[error("could not start the shoal engine: {0}")]
    Start(String),
    /// A task's input had an unexpected form (an internal error, or a
    /// different binary on the other side).
    #[error("bad task input: {0}")]
    Input(#[from] shoal_core::registry::InputError),
    /// A worker process runs a different binary (its task registry differs
    /// from the client's), so tasks cannot be exchanged with it by index.
    #[error(
        "worker runs a different binary: registry fingerprint {worker:032x} ≠ {client:032x}; \
         run the same build everywhere"
    )]
    FingerprintMismatch { worker: u128, client: u128 },
    /// A message from user code in a task: `Err(shoal::Error::msg("…"))`.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error with a message, for use in tasks.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error::Message(message.to_string())
    }

    /// The task failure behind this error, if it is one.
    pub fn task_failure(&self) -> Option<&TaskFailure> {
        match self {
            Error::Task(f) => Some(f),
            _ => None,
        }
    }
}

impl From<shoal_core::driver::DriverError> for Error {
    fn from(e: shoal_core::driver::DriverError) -> Self {
        use shoal_core::driver::DriverError;
        match e {
            DriverError::Closed => Error::Closed,
            DriverError::Broken(reason) => Error::Start(reason),
            DriverError::Graph(g) => Error::Graph(g),
            DriverError::Task(f) => Error::Task(f),
        }
    }
}

impl From<shoal_shm::pool::PoolError> for Error {
    fn from(e: shoal_shm::pool::PoolError) -> Self {
        use shoal_shm::pool::PoolError;
        match e {
            PoolError::Closed => Error::Closed,
            PoolError::Start(reason) => Error::Start(reason),
            PoolError::FingerprintMismatch { worker, client } => Error::FingerprintMismatch { worker, client },
        }
    }
}
