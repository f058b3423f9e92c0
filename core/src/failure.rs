//! Why a task did not produce a result.
//!
//! A failure names the task it happened to and carries what the user needs
//! to find the cause: the task's name and `file:line` (looked up in the
//! registry by the key), a short rendering of its arguments, and for an
//! error its type name, message and `source()` chain — as text, so it can
//! cross processes, and in the threads mode the original error too, for
//! [`TaskError::downcast_ref`].
//!
//! A task submitted by a `map` carries its item's index (`item`), which the
//! driver kept in the task's spec since submission: the failure of a run is
//! stamped with it before the scheduler takes it, so every dependency
//! failure that names it as the root shows it too, and a reported failure
//! gets the reporting task's own index (see `driver::State::status`).
//!
//! A dependent of a failed task fails with [`TaskFailure::DependencyFailed`],
//! which points straight at the *root* failure (never at a chain of
//! intermediate dependency failures), so the message a user reads always
//! names the task that actually went wrong.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::key::Key;
use crate::registry::RunError;

/// The most characters of one argument a failure shows.
pub const MAX_ARGUMENT_CHARS: usize = 80;
/// The most characters of all arguments together a failure shows.
pub const MAX_ARGUMENTS_CHARS: usize = 240;
/// The most `source()` levels a failure keeps.
const MAX_CHAIN: usize = 16;

/// An error a task returned: its type, message and causes as text, and (in
/// the process it was returned in) the error itself.
#[derive(Clone)]
pub struct TaskError {
    type_name: String,
    message: String,
    chain: Vec<String>,
    arguments: Option<String>,
    original: Option<Arc<dyn StdError + Send + Sync>>,
}

impl TaskError {
    /// An error with its `source()` chain, kept whole for downcasting.
    pub fn from_error<E: StdError + Send + Sync + 'static>(error: E) -> TaskError {
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(s) = source
            && chain.len() < MAX_CHAIN
        {
            chain.push(s.to_string());
            source = s.source();
        }
        TaskError {
            type_name: std::any::type_name::<E>().to_string(),
            message: error.to_string(),
            chain,
            arguments: None,
            original: Some(Arc::new(error)),
        }
    }

    /// An error that is only `Display` (a `String`, say): its text.
    pub fn from_display<E: fmt::Display>(error: E) -> TaskError {
        TaskError::from_parts(std::any::type_name::<E>().to_string(), error.to_string(), Vec::new())
    }

    /// An error known by its parts (received from another process).
    pub fn from_parts(type_name: String, message: String, chain: Vec<String>) -> TaskError {
        TaskError { type_name, message, chain, arguments: None, original: None }
    }

    /// The same error, showing the task's arguments.
    pub fn with_arguments(mut self, arguments: Option<String>) -> TaskError {
        self.arguments = arguments;
        self
    }

    /// The same error under another type name (that of the error a
    /// wrapper like `shoal::Error` holds).
    pub fn with_type_name(mut self, type_name: &str) -> TaskError {
        self.type_name = type_name.to_string();
        self
    }

    /// The error's type, e.g. `core::num::error::ParseIntError`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The error's `Display`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Display` of each `source()`, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// The task's arguments, shortened (see [`describe`](crate::object::describe)).
    pub fn arguments(&self) -> Option<&str> {
        self.arguments.as_deref()
    }

    /// The original error, if it is an `E` or one of its sources is. Only in
    /// the process the task ran in (the threads mode); errors from other
    /// processes arrive as text.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        let mut next: Option<&(dyn StdError + 'static)> = self.original.as_deref().map(|e| e as _);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// The parts that travel between processes.
    pub fn into_parts(self) -> (String, String, Vec<String>) {
        (self.type_name, self.message, self.chain)
    }
}

impl PartialEq for TaskError {
    /// Equal when they read the same (the original is not compared).
    fn eq(&self, other: &TaskError) -> bool {
        self.type_name == other.type_name
            && self.message == other.message
            && self.chain == other.chain
            && self.arguments == other.arguments
    }
}

impl Eq for TaskError {}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("type_name", &self.type_name)
            .field("message", &self.message)
            .field("chain", &self.chain)
            .field("arguments", &self.arguments)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TaskError {
    /// `message (type); caused by: source; …` — a source whose text the
    /// message already shows (`"I/O error: {0}"`) is not repeated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        // Errors of shoal itself (an input that could not be read, a result
        // that could not be stored) have no type to show.
        if !self.type_name.is_empty() {
            write!(f, " ({})", self.type_name)?;
        }
        let mut shown = self.message.as_str();
        for cause in &self.chain {
            if !shown.contains(cause.as_str()) {
                write!(f, "; caused by: {cause}")?;
            }
            shown = cause;
        }
        Ok(())
    }
}

/// Why a task ended in the `erred` state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFailure {
    /// The task function returned `Err` (or shoal could not read its inputs
    /// or store its result).
    Error {
        /// The task.
        key: Key,
        /// The task's index in the `map` that submitted it, if one did.
        item: Option<u32>,
        /// What it returned (boxed: failures travel in `Result`s, kept small).
        error: Box<TaskError>,
    },
    /// The task function panicked; `message` is the panic payload.
    Panic {
        /// The task.
        key: Key,
        /// The task's index in the `map` that submitted it, if one did.
        item: Option<u32>,
        /// The panic's message.
        message: String,
        /// The task's arguments, shortened.
        arguments: Option<String>,
    },
    /// The task was running on workers that died, `attempts` times in a row.
    KilledWorker {
        /// The task.
        key: Key,
        /// The task's index in the `map` that submitted it, if one did.
        item: Option<u32>,
        /// How many workers died running it.
        attempts: u32,
    },
    /// The task (or a task it depends on) was cancelled by the client.
    Cancelled {
        /// The task.
        key: Key,
    },
    /// An input of this task failed; `cause` is the root failure.
    DependencyFailed {
        /// The task that did not run.
        key: Key,
        /// Its index in the `map` that submitted it, if one did.
        item: Option<u32>,
        /// The failure that started it all.
        cause: Arc<TaskFailure>,
    },
}

impl TaskFailure {
    /// A failure with a message from shoal itself (not from the task).
    pub fn error(key: Key, message: impl Into<String>) -> TaskFailure {
        TaskFailure::Error {
            key,
            item: None,
            error: Box::new(TaskError::from_parts(String::new(), message.into(), Vec::new())),
        }
    }

    /// How a run that ended in `error` fails its task. `arguments` renders
    /// the task's arguments (see [`describe`](crate::object::describe));
    /// called only here, on failure. Every engine builds its failures here.
    pub fn from_run(key: Key, error: RunError, arguments: impl FnOnce() -> Option<String>) -> TaskFailure {
        let error = match error {
            RunError::Returned(error) => error,
            RunError::Input(e) => TaskError::from_parts(String::new(), format!("bad input: {e}"), vec![]),
        };
        TaskFailure::Error { key, item: None, error: Box::new(error.with_arguments(arguments())) }
    }

    /// How a run that panicked with `payload` fails its task.
    pub fn from_panic(key: Key, payload: &(dyn Any + Send), arguments: impl FnOnce() -> Option<String>) -> TaskFailure {
        TaskFailure::Panic { key, item: None, message: panic_message(payload), arguments: arguments() }
    }

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

    /// The index, in the `map` that submitted it, of the task this failure
    /// is about (`None` for a task not submitted by a `map`, and for a
    /// cancellation). For a dependency failure, `root().item()` is the
    /// index of the task that went wrong.
    pub fn item(&self) -> Option<usize> {
        match self {
            TaskFailure::Error { item, .. }
            | TaskFailure::Panic { item, .. }
            | TaskFailure::KilledWorker { item, .. }
            | TaskFailure::DependencyFailed { item, .. } => item.map(|i| i as usize),
            TaskFailure::Cancelled { .. } => None,
        }
    }

    /// The same failure, about the task at index `index` of its `map`
    /// (nothing changes for `None`, nor for a cancellation).
    pub fn with_item(mut self, index: Option<u32>) -> TaskFailure {
        if let Some(index) = index {
            match &mut self {
                TaskFailure::Error { item, .. }
                | TaskFailure::Panic { item, .. }
                | TaskFailure::KilledWorker { item, .. }
                | TaskFailure::DependencyFailed { item, .. } => *item = Some(index),
                TaskFailure::Cancelled { .. } => {}
            }
        }
        self
    }

    /// The failure that started it all: `self` unless this is a dependency
    /// failure, in which case the root cause it carries.
    pub fn root(&self) -> &TaskFailure {
        match self {
            TaskFailure::DependencyFailed { cause, .. } => cause,
            other => other,
        }
    }

    /// The error the task returned, if this is (or was caused by) one.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self.root() {
            TaskFailure::Error { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The message: the error's or the panic's `Display` (without the
    /// task's name, place and arguments).
    pub fn message(&self) -> String {
        match self.root() {
            TaskFailure::Error { error, .. } => error.message().to_string(),
            TaskFailure::Panic { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether running the task again could help (errors and panics can be
    /// retried; cancellation, killed workers and dependency failures not).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskFailure::Error { .. } | TaskFailure::Panic { .. })
    }
}

/// The text of a panic payload (`panic!` makes a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// `key (map item 17, module::name at file.rs:12)`: which task (and which
/// item of its `map`), and where it is written.
struct Where(Key, Option<u32>);

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Where(key, item) = *self;
        let entry = crate::registry::entries().get(key.func as usize);
        match (item, entry) {
            (Some(i), Some(entry)) => write!(f, "{key} (map item {i}, {} at {})", entry.name(), entry.location()),
            (Some(i), None) => write!(f, "{key} (map item {i})"),
            (None, Some(entry)) => write!(f, "{key} ({} at {})", entry.name(), entry.location()),
            (None, None) => write!(f, "{key}"),
        }
    }
}

fn with_arguments(f: &mut fmt::Formatter<'_>, arguments: &Option<String>) -> fmt::Result {
    match arguments {
        Some(a) => write!(f, "; arguments: {a}"),
        None => Ok(()),
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFailure::Error { key, item, error } => {
                write!(f, "task {} failed: {error}", Where(*key, *item))?;
                with_arguments(f, &error.arguments)
            }
            TaskFailure::Panic { key, item, message, arguments } => {
                write!(f, "task {} panicked: {message}", Where(*key, *item))?;
                with_arguments(f, arguments)
            }
            TaskFailure::KilledWorker { key, item, attempts } => write!(
                f,
                "task {} was running on {attempts} workers that died; \
                 it is failed so it cannot kill more (suspect a crash or out-of-memory in it)",
                Where(*key, *item)
            ),
            TaskFailure::Cancelled { key } => write!(f, "task {key} was cancelled"),
            TaskFailure::DependencyFailed { key, item: None, cause } => {
                write!(f, "task {key} did not run because a dependency failed: {cause}")
            }
            TaskFailure::DependencyFailed { key, item: Some(i), cause } => {
                write!(f, "task {key} (map item {i}) did not run because a dependency failed: {cause}")
            }
        }
    }
}

impl std::error::Error for TaskFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TaskFailure::Error { error, .. } => error.original.as_deref().map(|e| e as _),
            TaskFailure::DependencyFailed { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Value, describe};

    #[test]
    fn a_source_the_message_already_shows_is_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = TaskError::from_parts("E".into(), "I/O error: disk on fire".into(), vec!["disk on fire".into()]);
        assert_eq!(e.to_string(), "I/O error: disk on fire (E)");
        let e = TaskError::from_error(io);
        assert!(e.downcast_ref::<std::io::Error>().is_some());
        let e = TaskError::from_parts("E".into(), "outer".into(), vec!["middle".into(), "inner".into()]);
        assert_eq!(e.to_string(), "outer (E); caused by: middle; caused by: inner");
        let own = TaskFailure::error(Key { func: u32::MAX, token: [1, 2] }, "its result could not be stored");
        assert!(own.to_string().ends_with("failed: its result could not be stored"), "{own}");
    }

    #[test]
    fn a_map_index_is_shown_for_the_task_and_for_its_root() {
        let key = Key { func: u32::MAX, token: [1, 2] };
        let root = TaskFailure::error(key, "disk on fire").with_item(Some(17));
        assert_eq!(root.item(), Some(17));
        assert!(root.to_string().starts_with(&format!("task {key} (map item 17) failed: disk on fire")), "{root}");
        let dependent = TaskFailure::DependencyFailed { key, item: None, cause: Arc::new(root.clone()) };
        assert_eq!((dependent.item(), dependent.root().item()), (None, Some(17)));
        assert!(dependent.to_string().contains("(map item 17) failed"), "{dependent}");
        let dependent = dependent.with_item(Some(3));
        assert!(dependent.to_string().starts_with(&format!("task {key} (map item 3) did not run")), "{dependent}");
        assert_eq!(TaskFailure::Cancelled { key }.with_item(Some(1)).item(), None, "a cancellation has none");
        assert_eq!(TaskFailure::error(key, "x").with_item(None).item(), None);
    }

    #[test]
    fn arguments_are_debug_rendered_and_bounded_each_and_together() {
        let small = Value::shared(7u64);
        let text = Value::shared(String::from("data/part-00007.txt"));
        assert_eq!(describe([&*small, &*text]), "(7, \"data/part-00007.txt\")");
        let huge = Value::shared(vec![0u8; 1 << 20]);
        let one = describe([&*huge]);
        assert!(one.ends_with("…)") && one.chars().count() <= MAX_ARGUMENT_CHARS + 3, "{one}");
        let many: Vec<_> = (0..20).map(|_| Value::shared(vec![1u8; 100])).collect();
        let all = describe(many.iter().map(|v| &**v));
        assert!(all.ends_with('…') && all.chars().count() == MAX_ARGUMENTS_CHARS + 1, "{all}");
    }
}
