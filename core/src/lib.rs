//! `shoal-core`: the parts of shoal that every mode shares.
//!
//! - [`registry`]: `#[shoal::task]` functions, found by a stable name, and
//!   the fingerprint processes compare at handshake;
//! - [`object`]: how a task's arguments and results are held (values shared
//!   by reference, archived once on first need);
//! - [`scheduler`]: the pure state machine every mode drives;
//! - [`driver`]: the scheduler with what every mode keeps beside it (task
//!   specs, waiting clients), one driver for every mode;
//! - [`protocol`]: the messages between a driver and its workers, as values;
//! - [`executor`]: the in-process work-stealing thread pool;
//! - [`worker`]: the worker runtime that runs tasks from a stream of
//!   messages, the same in every mode;
//! - [`claim`]: a queued run's claim, started or given back, never both;
//! - [`spin`]: looking again briefly before parking a thread.
//!
//! Users depend on the `shoal` facade, not on this crate directly.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod claim;
pub mod driver;
pub mod executor;
pub mod failure;
pub mod key;
pub mod object;
pub mod protocol;
pub mod registry;
pub mod scheduler;
pub mod spin;
pub mod worker;

pub use failure::TaskFailure;
pub use key::Key;
