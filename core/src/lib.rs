//! `shoal-core`: the parts of shoal that every mode shares.
//!
//! - [`registry`]: `#[shoal::task]` functions, found by a stable name, and
//!   the fingerprint processes compare at handshake;
//! - [`object`]: how a task's arguments and results are held (values shared
//!   by reference, archived once on first need);
//! - [`scheduler`]: the pure state machine every mode drives;
//! - [`executor`]: the in-process work-stealing thread pool.
//!
//! Users depend on the `shoal` facade, not on this crate directly.

#![deny(missing_docs)]

pub mod executor;
pub mod failure;
pub mod key;
pub mod object;
pub mod registry;
pub mod scheduler;

pub use failure::TaskFailure;
pub use key::Key;
