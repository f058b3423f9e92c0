//! The one error type of the public API.

use std::sync::Arc;

use shoal_core::TaskFailure;
use shoal_core::registry::{InputError, RegistryError};
use shoal_core::scheduler::GraphError;

/// `Result` with shoal's [`Error`]; also the natural return type of a task.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shoal, with what to do about it.
///
/// Inside a task returning `shoal::Result<T>`, `?` converts the errors of
/// `std::io`, number and text parsing, UTF-8, integer conversion and any
/// `Box<dyn Error + Send + Sync>`; [`Error::msg`] makes one from a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task failed (returned `Err` or panicked), or a task it needed did;
    /// the message names the task that went wrong, where it is written, its
    /// arguments and why.
    #[error("{0}")]
    Task(Arc<TaskFailure>),
    /// Item `index` of a list of futures ([`Client::gather`](crate::Client::gather),
    /// `compute_values`) failed: for the futures of a `map`, the index of
    /// the item that failed.
    #[error("item {index} of the list failed: {failure}")]
    TaskAt {
        /// The failed item's position in the list.
        index: usize,
        /// Why it failed.
        failure: Arc<TaskFailure>,
    },
    /// An I/O error, typically inside a task (so `?` works on `std::io`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Another error, converted by `?` inside a task (see the type's docs),
    /// kept whole: its source chain and a downcast reach it.
    #[error("{source}")]
    Other {
        /// The type of `source`, for messages.
        type_name: &'static str,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
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
    /// An option has a value shoal refuses; the message says which and why.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The dashboard could not be served.
    #[error(transparent)]
    Dashboard(#[from] shoal_dash::DashboardError),
    /// A task's input had an unexpected form (an internal error, or a
    /// different binary on the other side).
    #[error("bad task input: {0}")]
    Input(#[from] InputError),
    /// A worker process runs a different binary (its task registry differs
    /// from the client's), so tasks cannot be exchanged with it by index.
    #[error(
        "worker runs a different binary: registry fingerprint {worker:032x} ≠ {client:032x}; \
         run the same build everywhere"
    )]
    FingerprintMismatch {
        /// The worker's fingerprint.
        worker: u128,
        /// The client's fingerprint.
        client: u128,
    },
    /// The connection to the cluster's scheduler is gone (it stopped, the
    /// network failed, or it stayed silent too long): every pending and
    /// later call of that client fails with this; make a new client once
    /// the scheduler is back.
    #[error("the connection to the shoal scheduler was lost: {0}")]
    Disconnected(String),
    /// A call was given an argument it cannot use (for example a bag of no
    /// partitions, or a text pattern that matches no file); the message says
    /// which and what to do.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A message from user code in a task: `Err(shoal::Error::msg("…"))`.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error with a message, for use in tasks.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error::Message(message.to_string())
    }

    /// Wrap any error, keeping it whole (for `?`, see the type's docs).
    pub fn other<E: std::error::Error + Send + Sync + 'static>(error: E) -> Error {
        Error::Other { type_name: std::any::type_name::<E>(), source: Box::new(error) }
    }

    /// The task failure behind this error, if it is one.
    pub fn task_failure(&self) -> Option<&TaskFailure> {
        match self {
            Error::Task(f) | Error::TaskAt { failure: f, .. } => Some(f),
            _ => None,
        }
    }

    /// The error a failed task returned, as its own type, if this is such
    /// a failure (or a dependent's) and the error is an `E` or one of its
    /// sources is. Only in the threads mode: in the other modes the error
    /// crossed a process boundary as text (its type name, message and
    /// source chain are in [`TaskError`](crate::TaskError)).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.task_failure()?.task_error()?.downcast_ref::<E>()
    }

    /// The type of the error this wraps (`Io`, `Other`), for messages.
    pub(crate) fn inner_type_name(&self) -> Option<&'static str> {
        match self {
            Error::Io(_) => Some(std::any::type_name::<std::io::Error>()),
            Error::Other { type_name, .. } => Some(type_name),
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

/// `?` on these inside a task returning `shoal::Result` keeps them whole.
macro_rules! from_errors {
    ($($t:ty),+ $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::other(e)
            }
        }
    )+};
}

from_errors!(
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::num::TryFromIntError,
    std::str::ParseBoolError,
    std::char::ParseCharError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::net::AddrParseError,
    std::time::SystemTimeError,
    std::fmt::Error,
);

impl From<Box<dyn std::error::Error + Send + Sync + 'static>> for Error {
    fn from(source: Box<dyn std::error::Error + Send + Sync + 'static>) -> Error {
        Error::Other { type_name: "Box<dyn std::error::Error>", source }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Message(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::Message(message.to_string())
    }
}
