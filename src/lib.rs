//! # shoal
//!
//! A parallel and distributed task runtime in the spirit of
//! Dask.distributed: write tasks as plain functions, submit them from a
//! [`Client`], and shoal runs them on every core, passing results between
//! tasks by reference.
//!
//! ```
//! use shoal::prelude::*;
//!
//! #[shoal::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[shoal::task]
//! fn total(xs: Vec<u64>) -> u64 {
//!     xs.iter().sum()
//! }
//!
//! fn main() -> shoal::Result<()> {
//!     shoal::init();
//!     let client = Client::local()?;
//!     let squares = client.map(square, 1..=10u64)?;      // Vec<shoal::Future<u64>>
//!     let sum = client.submit(total, &squares)?;          // waits for all ten
//!     assert_eq!(sum.result()?, 385);
//!     assert_eq!(client.gather(&squares)?[2], 9);
//!     Ok(())
//! }
//! ```
//!
//! ## Tasks
//!
//! `#[shoal::task]` registers a function under its module path and name,
//! and turns its name into a *task handle*: pass `square` to
//! [`Client::submit`], [`Client::map`] or [`Task::lazy`]; call the function
//! itself with `square::call(x)`. Parameters and the result are rkyv types
//! ([`Data`]; put [`#[shoal::data]`](data) on your own). A task may return
//! `T` or `Result<T, E>` (written as such: an alias of `Result` is refused)
//! with `E` an `std::error::Error + Send + Sync + 'static` or a `Display`
//! type; an `Err` or a panic fails its future with a [`TaskFailure`] naming
//! the task, its `file:line`, its arguments and the error (type, message,
//! source chain; [`Error::downcast_ref`] in the threads mode), and every
//! task that needed it fails with an error naming that root cause.
//!
//! ## Zero-copy inputs
//!
//! A parameter declared `&Archived<T>` reads its input's rkyv archive in
//! place: in the multi-process modes that is the producer's shared memory,
//! never copied. In the threads mode a vector of primitives (`Vec<u8>`,
//! `Vec<f64>`, … of 64 KiB or more) is its own archive, so the reader gets
//! the producer's bytes; any other type is archived once, at its first
//! archived read, and then held by that archive alone (never twice). A
//! parameter declared `T` receives its own `T` (cloned, or deserialized from
//! the archive). So: take large inputs as `&Archived<T>`, and make large
//! results vectors of primitives where you can.
//!
//! ## Lazy graphs
//!
//! `square.lazy(x)` builds a node instead of running; nodes compose (a
//! `Vec<T>` parameter accepts a `Vec<Lazy<T>>`), and `.compute(&client)`
//! runs the whole graph, like `dask.delayed`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// The README's Rust code blocks, run as doc tests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

// So that `::shoal::…` paths in macro output work inside this crate too.
extern crate self as shoal;

mod args;
pub mod bag;
mod client;
mod client_cluster;
mod client_processes;
mod engine;
mod error;
mod future;
mod lazy;
mod monitor;
mod progress;
mod status;

pub use args::{IntoArg, IntoArgs, One};
pub use client::{Client, ClientOptions, SubmitOptions};
pub use client_cluster::{ClusterOptions, ENV_SECRET_FILE, TlsFiles};
pub use client_processes::{DEFAULT_WORKER_TTL, ProcessesOptions, StealStats};
pub use error::{Error, Result};
pub use future::{AsCompleted, Future, FutureStatus, as_completed, wait};
pub use lazy::Lazy;
pub use monitor::{DASHBOARD_ENV, PerformanceReport};
pub use progress::{ProgressBar, ProgressUpdate};
pub use rkyv;
pub use rkyv::Archived;
pub use shoal_core::failure::{MAX_ARGUMENT_CHARS, MAX_ARGUMENTS_CHARS, TaskError};
pub use shoal_core::object::{Alias, Data, Inputs};
pub use shoal_core::registry::InputError;
pub use shoal_core::registry::{RegistryError, TaskEntry};
pub use shoal_core::scheduler::GraphError;
pub use shoal_core::{Key, TaskFailure};
pub use shoal_macros::{data, func, task};
pub use shoal_shm::store::StoreStats;
pub use shoal_shm::{SpillBackend, SpillIo};
pub use status::{ClientStatus, NameStatus, StateCounts};

/// A registered task: the handle `#[shoal::task]` makes for a function.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a shoal task",
    label = "not a `#[shoal::task]` function",
    note = "write `#[shoal::task]` on a free function and pass its name: `client.submit(my_task, args)`",
    note = "closures and plain functions cannot be tasks: a task is found by its registered name in every process"
)]
pub trait Task: Copy + Send + Sync + 'static {
    /// The parameters' value types: `One<A>` for one, a tuple for several.
    type Params;
    /// The result's type.
    type Output: Data;

    /// The registry entry.
    fn entry(&self) -> &'static TaskEntry;

    /// Whether equal calls of this task may share one result (`false` for
    /// a `#[shoal::task(impure)]`: every call, lazy or submitted, is run).
    fn pure(&self) -> bool {
        true
    }

    /// A lazy call of this task: nothing runs until it is computed. It
    /// cannot fail: errors (of the task, or of its inputs) surface at
    /// `compute`, so a `dask.delayed`-style loop needs no `?` per node.
    fn lazy<A: IntoArgs<Self::Params>>(self, args: A) -> Lazy<Self::Output> {
        Lazy::new(self, args, &SubmitOptions::default())
    }

    /// A lazy call of a task without parameters.
    fn lazy_no_args(self) -> Lazy<Self::Output>
    where
        Self: Task<Params = ()>,
    {
        Lazy::new(self, (), &SubmitOptions::default())
    }

    /// [`lazy`](Task::lazy) with options (`pure(false)` makes this one
    /// node unique).
    fn lazy_with<A: IntoArgs<Self::Params>>(self, args: A, options: &SubmitOptions) -> Lazy<Self::Output> {
        Lazy::new(self, args, options)
    }
}

/// Take the role this process was started for.
///
/// Call it first in `main`, before any thread is started. In a program
/// started by a user it returns at once. The processes mode starts worker
/// processes from the same binary; there `init` runs the worker and never
/// returns. So it does in a process started as a cluster worker
/// (`SHOAL_WORKER=tcp://host:8786 ./app`, see [`Client::connect`]). On Linux a hook that runs before `main` does the same, so
/// binaries whose `main` is not yours (integration tests, benchmarks) can
/// be workers too; `init` is the explicit form, and harmless.
pub fn init() {
    #[cfg(target_os = "linux")]
    {
        std::hint::black_box(&engine::processes::WORKER_HOOK);
        std::hint::black_box(&engine::cluster::CLUSTER_HOOK);
    }
    shoal_shm::pool::worker::take_role();
    engine::cluster::take_role();
}

/// The registry fingerprint of this binary: processes exchange tasks only
/// when theirs are equal.
pub fn fingerprint() -> Result<u128> {
    Ok(shoal_core::registry::fingerprint()?)
}

/// What a program using shoal usually needs.
///
/// [`Future`] is not in it: Rust's own prelude (edition 2024) has the
/// `std::future::Future` trait, which a glob import would shadow, breaking
/// `impl Future<Output = T>` and other async code in the same module. A
/// shoal future rarely needs naming (`client.submit` and `map` return
/// one); where it does, write `shoal::Future<T>`.
pub mod prelude {
    pub use crate::{Archived, Client, Inputs, Lazy, SubmitOptions, Task, as_completed, wait};
}

/// Used by the code `#[shoal::task]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::One;
    pub use shoal_core::failure::TaskError;
    pub use shoal_core::object::{Input, Obj, Value, glue};
    pub use shoal_core::registry::{InputError, RunError, TASKS, TaskEntry, linkme};

    /// Wrap a task's return value (or the `Ok` value of its `Result`).
    pub fn finish_value<T: crate::Data>(value: T) -> Result<Obj, RunError> {
        Ok(Value::shared(value))
    }

    /// A task's [`Alias`](crate::Alias) result: the input's own object.
    pub fn finish_alias<T: crate::Data>(
        alias: crate::Alias<T>,
        inputs: &[Input],
        declared: &[Option<(std::any::TypeId, &'static str)>],
    ) -> Result<Obj, RunError> {
        Ok(glue::alias(alias, inputs, declared)?)
    }

    /// The `Err` of a task, on its way to a [`TaskError`]. Which conversion
    /// applies is chosen by autoref specialization in the generated code,
    /// where the error type is concrete: an `std::error::Error` keeps its
    /// type, its `source()` chain and itself (for downcasting); any other
    /// `Display` type (a `String`, say) keeps its text.
    pub struct Returned<E>(pub E);

    /// The conversion of an `std::error::Error` (tried first: by value).
    pub trait ViaError {
        fn into_run_error(self) -> RunError;
    }

    impl<E: std::error::Error + Send + Sync + 'static> ViaError for Returned<E> {
        fn into_run_error(self) -> RunError {
            // A `shoal::Error` made by `?` names the error it wraps.
            let inner =
                (&self.0 as &dyn std::any::Any).downcast_ref::<crate::Error>().and_then(|e| e.inner_type_name());
            let error = TaskError::from_error(self.0);
            RunError::Returned(match inner {
                Some(name) => error.with_type_name(name),
                None => error,
            })
        }
    }

    /// The conversion of a `Display` type (tried second: by reference).
    #[diagnostic::on_unimplemented(
        message = "a task's error type must implement `std::error::Error + Send + Sync + 'static` or `Display`",
        label = "the `E` of this task's `Result<T, E>`"
    )]
    pub trait ViaDisplay {
        fn into_run_error(self) -> RunError;
    }

    impl<E: std::fmt::Display> ViaDisplay for &Returned<E> {
        fn into_run_error(self) -> RunError {
            RunError::Returned(TaskError::from_parts(
                std::any::type_name::<E>().to_string(),
                self.0.to_string(),
                Vec::new(),
            ))
        }
    }

    /// The return type named in a probe (for [`require_plain_return`]).
    pub struct Probe<T>(std::marker::PhantomData<T>);

    impl<T> Clone for Probe<T> {
        fn clone(&self) -> Self {
            *self
        }
    }

    impl<T> Copy for Probe<T> {}

    impl<T> Probe<T> {
        pub const NEW: Probe<T> = Probe(std::marker::PhantomData);
    }

    /// Found first (by value on `&Probe`) when the return type is a `Result`.
    pub trait ProbeResult {
        fn check(self) -> ResultThroughAlias;
    }

    impl<T, E> ProbeResult for &Probe<Result<T, E>> {
        fn check(self) -> ResultThroughAlias {
            ResultThroughAlias
        }
    }

    /// Found otherwise (after a deref).
    pub trait ProbePlain {
        fn check(self) -> PlainReturn;
    }

    impl<T> ProbePlain for Probe<T> {
        fn check(self) -> PlainReturn {
            PlainReturn
        }
    }

    /// The return type is not a `Result`.
    pub struct PlainReturn;
    /// The return type is a `Result` not written `Result<…>`.
    pub struct ResultThroughAlias;

    #[diagnostic::on_unimplemented(
        message = "this task returns a `Result` through a type alias, which `#[shoal::task]` cannot see",
        label = "write this return type as `Result<T, E>` (or `shoal::Result<T>`, `io::Result<T>`)",
        note = "the macro finds a task's error by the return type's last name being `Result`; \
                through an alias an `Err` would be stored as a successful value",
        note = "to store a `Result` as a task's value on purpose, wrap it in a struct of your own"
    )]
    pub trait ReturnsPlainValue {}

    impl ReturnsPlainValue for PlainReturn {}

    /// Compiles only for a [`PlainReturn`].
    pub fn require_plain_return<X: ReturnsPlainValue>(_: X) {}
}
