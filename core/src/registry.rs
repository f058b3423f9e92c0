//! The task registry.
//!
//! `#[shoal::task]` puts one [`TaskEntry`] per task function into the
//! [`TASKS`] distributed slice at link time (linkme), so every process built
//! from the same binary knows the same tasks under the same names without
//! any registration call. Function pointers never leave a process: a task
//! crosses a process boundary as its index in the *sorted* registry, which
//! is the same in every process of the same binary — the
//! [fingerprint] proves it at handshake.
//!
//! Other things a process finds by name (the facade's bag functions and
//! element types) are hashed into the fingerprint too, through
//! [`FINGERPRINTED`]: a process whose bag functions differ is refused like
//! one whose tasks differ, at the handshake rather than at the first task
//! that names a function the other side lacks.
//!
//! The registry is checked once, on first use: two tasks with the same name
//! (possible when the attribute is used on equally named functions nested in
//! different functions of one module) are an error naming both places.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::failure::TaskError;
use crate::object::{Input, Obj};

#[doc(hidden)]
pub use linkme;

/// Every `#[shoal::task]` of the binary, in link order.
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// Sources of names, besides the tasks, that two processes must agree on
/// (each returns its names; the facade adds its bag functions' and element
/// types'). They are hashed into the [fingerprint], sorted and deduplicated,
/// so link order does not matter.
#[linkme::distributed_slice]
pub static FINGERPRINTED: [fn() -> Vec<String>];

/// What a task's arguments failed on before its body ran.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InputError(pub String);

/// How a task run ended, short of a panic.
#[derive(Debug)]
pub enum RunError {
    /// The function returned `Err`: the error, its type and causes.
    Returned(TaskError),
    /// The inputs could not be read as the parameters' types.
    Input(InputError),
}

impl From<InputError> for RunError {
    fn from(e: InputError) -> Self {
        RunError::Input(e)
    }
}

/// The type-erased entry point of a task: reads its inputs, runs the body.
pub type Invoke = fn(&[Input]) -> Result<Obj, RunError>;

/// One registered task function.
pub struct TaskEntry {
    name: &'static str,
    signature: &'static str,
    location: &'static str,
    invoke: Invoke,
    /// Index in the sorted registry, set when the registry is checked.
    index: AtomicU32,
}

const UNINDEXED: u32 = u32::MAX;

impl TaskEntry {
    /// Made by `#[shoal::task]`: `name` is `module_path::fn_name`,
    /// `signature` the parameter and return types as written.
    #[doc(hidden)]
    pub const fn new(name: &'static str, signature: &'static str, location: &'static str, invoke: Invoke) -> TaskEntry {
        TaskEntry { name, signature, location, invoke, index: AtomicU32::new(UNINDEXED) }
    }

    /// The stable name: module path and function name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Parameter and return types, as written in the source.
    pub fn signature(&self) -> &'static str {
        self.signature
    }

    /// `file:line` of the function.
    pub fn location(&self) -> &'static str {
        self.location
    }

    /// Run the task body on these inputs (panics propagate to the caller).
    pub fn invoke(&self, inputs: &[Input]) -> Result<Obj, RunError> {
        (self.invoke)(inputs)
    }

    /// This task's index in the sorted registry.
    pub fn index(&'static self) -> Result<u32, RegistryError> {
        match self.index.load(Ordering::Relaxed) {
            UNINDEXED => {
                check()?;
                Ok(self.index.load(Ordering::Relaxed))
            }
            i => Ok(i),
        }
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{} ({})", self.name, self.signature, self.location)
    }
}

/// The registry is not usable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two tasks have the same name.
    #[error(
        "two #[shoal::task] functions have the same name `{name}`: one at {first}, one at {second}; \
         rename one of them (task names are the module path and the function name, and must be unique)"
    )]
    DuplicateName {
        /// The shared name.
        name: &'static str,
        /// Where the first is written.
        first: &'static str,
        /// Where the second is written.
        second: &'static str,
    },
}

struct Checked {
    sorted: Vec<&'static TaskEntry>,
    /// The [`FINGERPRINTED`] names, sorted, without duplicates.
    names: Vec<String>,
    fingerprint: u128,
}

static CHECKED: OnceLock<Result<Checked, RegistryError>> = OnceLock::new();

fn checked() -> &'static Result<Checked, RegistryError> {
    CHECKED.get_or_init(|| build(TASKS.iter().collect(), FINGERPRINTED.iter().flat_map(|names| names()).collect()))
}

fn build(mut sorted: Vec<&'static TaskEntry>, mut names: Vec<String>) -> Result<Checked, RegistryError> {
    sorted.sort_by(|a, b| a.name.cmp(b.name).then(a.location.cmp(b.location)));
    if let Some(w) = sorted.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(RegistryError::DuplicateName { name: w[0].name, first: w[0].location, second: w[1].location });
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (i, entry) in sorted.iter().enumerate() {
        entry.index.store(i as u32, Ordering::Relaxed);
        hasher.update(entry.name.as_bytes());
        hasher.update(b"\0");
        hasher.update(entry.signature.as_bytes());
        hasher.update(b"\0");
    }
    names.sort();
    names.dedup();
    // A separator no task name holds: tasks and names cannot be confused.
    hasher.update(b"\x01");
    for name in &names {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
    }
    Ok(Checked { sorted, names, fingerprint: hasher.digest128() })
}

/// Check the registry (once; later calls return the first answer).
pub fn check() -> Result<(), RegistryError> {
    checked().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// The registered tasks sorted by name (empty if the registry is invalid,
/// which [`check`] reports).
pub fn entries() -> &'static [&'static TaskEntry] {
    match checked() {
        Ok(c) => &c.sorted,
        Err(_) => &[],
    }
}

/// The names besides the tasks' that the [fingerprint] covers (from
/// [`FINGERPRINTED`]), sorted (empty if the registry is invalid).
pub fn fingerprinted_names() -> &'static [String] {
    match checked() {
        Ok(c) => &c.names,
        Err(_) => &[],
    }
}

/// A hash of every task's name and signature, and of the
/// [`FINGERPRINTED`] names. Two processes can exchange
/// tasks by index exactly when their fingerprints are equal.
pub fn fingerprint() -> Result<u128, RegistryError> {
    checked().as_ref().map(|c| c.fingerprint).map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &[Input]) -> Result<Obj, RunError> {
        Err(RunError::Returned(TaskError::from_display("not run in this test")))
    }

    static A: TaskEntry = TaskEntry::new("m::a", "(u64) -> u64", "a.rs:1", never);
    static B: TaskEntry = TaskEntry::new("m::b", "(u64) -> u64", "a.rs:5", never);
    static B2: TaskEntry = TaskEntry::new("m::b", "(String) -> u64", "b.rs:9", never);
    static C: TaskEntry = TaskEntry::new("m::a", "(u32) -> u64", "a.rs:1", never);

    #[test]
    fn duplicate_names_are_refused_naming_both_places() {
        let err = build(vec![&B2, &A, &B], Vec::new()).err().expect("duplicate must be refused");
        assert_eq!(err, RegistryError::DuplicateName { name: "m::b", first: "a.rs:5", second: "b.rs:9" });
        let msg = err.to_string();
        assert!(msg.contains("a.rs:5") && msg.contains("b.rs:9"), "{msg}");
    }

    #[test]
    fn fingerprint_depends_on_names_and_signatures_not_link_order() {
        let f1 = build(vec![&A, &B], Vec::new()).ok().map(|c| c.fingerprint);
        let f2 = build(vec![&B, &A], Vec::new()).ok().map(|c| c.fingerprint);
        let f3 = build(vec![&C, &B], Vec::new()).ok().map(|c| c.fingerprint);
        assert!(f1.is_some());
        assert_eq!(f1, f2);
        assert_ne!(f1, f3, "a changed signature must change the fingerprint");
    }

    #[test]
    fn fingerprint_covers_the_other_names_in_any_order() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let print = |v: &[&str]| build(vec![&A, &B], names(v)).ok().map(|c| c.fingerprint);
        let tasks_only = print(&[]);
        let two = print(&["bag fn m::f(u64) -> u64", "bag item u64"]);
        assert_ne!(two, tasks_only, "a bag function must change the fingerprint");
        assert_eq!(two, print(&["bag item u64", "bag fn m::f(u64) -> u64", "bag item u64"]), "order, duplicates");
        assert_ne!(two, print(&["bag fn m::g(u64) -> u64", "bag item u64"]), "another function's name");
        assert_ne!(two, print(&["bag fn m::f(u32) -> u64", "bag item u64"]), "another signature");
    }
}
