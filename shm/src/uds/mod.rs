//! The Unix-socket transport between a machine's driver (or agent) and its
//! worker processes: the protocol's messages ([`shoal_core::protocol`]) as
//! bounded frames with file descriptors beside them.
//!
//! - [`codec`]: the wire form, batches of runs and results cut into frames,
//!   and the checks on receipt;
//! - [`objects`]: how an object travels — its archive inline if short, else
//!   the descriptor of a sealed segment that every reader maps in place.

pub mod codec;
pub mod objects;

pub use codec::{
    Inbound, ProtocolError, ResultBatch, RunBatch, control_to_driver, control_to_worker, decode_inbound,
    decode_to_driver, decode_to_worker, introduce, wait_readable,
};
pub use objects::{INLINE_MAX, Outgoing, publish};
