//! The shared-memory layer of shoal's processes mode: objects in sealed
//! memfd segments, their descriptors passed between processes, and the
//! frames that carry control messages beside them.
//!
//! # Pieces
//!
//! - [`segment`]: one object = one memfd, written once through a writable
//!   mapping, then sealed against any change ([`SegmentWriter`] →
//!   [`Segment`]) and mapped read-only by every reader.
//! - [`fdpass`]: a frame plus up to [`MAX_FDS_PER_MESSAGE`] descriptors
//!   over a Unix stream socket (`SCM_RIGHTS`).
//! - [`frame`]: `u32` little-endian length + payload, bounded by
//!   [`MAX_FRAME_LEN`], over any byte stream.
//! - [`object`]: a sealed segment holding an rkyv archive, as a shoal
//!   object ([`SegmentObject`]) that tasks read in place.
//! - [`limits`]: the memory limit of this process's cgroup (v2 and v1,
//!   walked up to the tightest), the machine's memory, and the file
//!   descriptor limit raised to its hard limit.
//! - [`pool`]: a machine's worker processes, started from this binary,
//!   replaced when they die, reaped always; the worker process itself.
//! - [`uds`]: the protocol's messages over a Unix socket, objects inline
//!   or as descriptors (the transport between a machine and its worker
//!   processes).
//! - [`store`]: a machine's store of results under a memory limit and a
//!   descriptor budget: which are in shared memory, which spilled, and the
//!   moves between.
//! - [`spill`]: sealed segments written to local disk and read back into
//!   new segments ([`SpillDir`], [`SpillFile`]), through io_uring where the
//!   kernel allows it and positioned I/O otherwise.
//!
//! # Invariants
//!
//! - A [`Segment`]'s bytes never change while any process can see them: the
//!   kernel's seals guarantee it, and [`Segment::from_fd`] refuses a
//!   descriptor without them.
//! - Segments are freed by the kernel when the last descriptor and mapping
//!   are gone; a process killed by SIGKILL cannot leak one.
//! - Descriptors are owned ([`std::os::fd::OwnedFd`]) from the moment they
//!   exist: every error path closes them.
//! - Frames and messages are bounded before anything is allocated for them,
//!   and no input makes this crate panic.
//!
//! Linux only (memfd, seals, `SCM_RIGHTS` with `MSG_CMSG_CLOEXEC`). The
//! lifecycle and the plan for what comes next are in this crate's README.
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use shoal_shm::{Segment, SegmentWriter, fdpass};
//!
//! let mut writer = SegmentWriter::create(5, "example")?;
//! writer.bytes_mut().copy_from_slice(b"hello");
//! let segment = writer.seal()?;
//!
//! let (a, b) = UnixStream::pair()?;
//! fdpass::send(&a, b"object 1", &[segment.as_fd()])?;
//! let mut message = fdpass::recv(&b)?.expect("a message");
//! let received = Segment::from_fd(message.fds.remove(0))?;
//! assert_eq!(received.bytes(), b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod fdpass;
pub mod frame;
pub mod growing;
pub mod limits;
pub mod logging;
pub mod object;
pub mod pool;
pub mod segment;
pub mod spill;
pub mod store;
#[cfg(test)]
mod test_util;
pub mod uds;
mod uring;
pub mod warm;

pub use error::ShmError;
pub use fdpass::{FdMessage, MAX_FDS_PER_MESSAGE};
pub use frame::MAX_FRAME_LEN;
pub use object::SegmentObject;
pub use segment::{Segment, SegmentWriter};
pub use spill::{SpillBackend, SpillDir, SpillError, SpillFile, SpillIo};
