//! The one error type of this crate.
//!
//! Every message says what failed and, where there is one, what to do about
//! it: these errors end up in a worker's log or in a user's terminal, far
//! from the code that raised them.
//!
//! Syscall failures keep the kernel's [`Errno`] (callers can match on it,
//! e.g. `EPERM` for a sealed segment); failures reported by `std` or memmap2
//! keep their [`std::io::Error`].

use std::io;

use rustix::io::Errno;

/// What went wrong in the shared-memory layer.
///
/// After any error from [`crate::fdpass::recv`] or [`crate::frame::read_frame`]
/// the stream is at an unknown position inside a frame: close the connection,
/// never try to resynchronise it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    // ---- segments ----
    /// `memfd_create` refused to make a new segment.
    #[error(
        "memfd_create({name:?}) failed: {source} — EMFILE/ENFILE: the process or system is out of file \
         descriptors (raise `ulimit -n` or fs.file-max); ENOMEM: the machine is out of memory; EACCES: \
         vm.memfd_noexec forbids this memfd"
    )]
    MemfdCreate {
        /// The (possibly shortened) name given to the segment.
        name: String,
        /// The kernel's reason.
        source: Errno,
    },

    /// A segment name contained a NUL byte, which the kernel cannot take.
    #[error("segment name {name:?} contains a NUL byte — segment names are diagnostics; pass one without NUL")]
    InvalidName {
        /// The rejected name.
        name: String,
    },

    /// Giving a new segment its size failed.
    #[error(
        "cannot size a new shared-memory segment to {len} bytes: {source} — EFBIG/EINVAL: the size is \
         beyond what the kernel allows for one file; ENOMEM/ENOSPC: memory or a memory-cgroup limit is reached"
    )]
    Resize {
        /// The requested size in bytes.
        len: usize,
        /// The kernel's reason.
        source: Errno,
    },

    /// A size does not fit the type the kernel wants (only possible on a
    /// platform whose `usize` is wider than 64 bits, or for a corrupt `fstat`).
    #[error("segment size {len} does not fit in this platform's file offsets or address space")]
    SizeOverflow {
        /// The size, as far as it could be represented.
        len: u128,
    },

    /// `mmap` of a segment failed.
    #[error(
        "cannot map a {len}-byte segment {}: {source} — ENOMEM: the address space or vm.max_map_count \
         is exhausted (too many segments mapped at once?); EACCES/EPERM: the descriptor does not allow this access",
        if *writable { "read-write" } else { "read-only" }
    )]
    Map {
        /// The segment's size in bytes.
        len: usize,
        /// Whether a writable mapping was asked for.
        writable: bool,
        /// The reason reported by mmap.
        source: io::Error,
    },

    /// Adding seals to a segment failed.
    #[error(
        "cannot seal the segment ({seals}): {source} — EBUSY: a writable mapping of it still exists; \
         EPERM: it was already sealed against further seals"
    )]
    Seal {
        /// The seals that were being added, by name.
        seals: &'static str,
        /// The kernel's reason.
        source: Errno,
    },

    /// A received descriptor is not a memfd: it cannot carry seals.
    #[error(
        "the received descriptor is not a sealable memfd (F_GET_SEALS: {source}) — refusing it: only \
         sealed memfd segments can be shared; the sender sent the wrong descriptor"
    )]
    NotAMemfd {
        /// The kernel's answer to F_GET_SEALS (EINVAL for anything but a memfd).
        source: Errno,
    },

    /// A received memfd lacks the seals that make sharing it safe.
    #[error(
        "the received segment is not sealed against change (it has seals {found:#x}, needs SHRINK|GROW|WRITE \
         = {needed:#x}) — refusing it: an unsealed segment could change or shrink under its readers; the \
         sender must seal a segment before sharing it"
    )]
    NotSealed {
        /// The raw seal bits found on the descriptor.
        found: u32,
        /// The raw seal bits required.
        needed: u32,
    },

    /// `fstat` of a received segment failed.
    #[error("cannot read the size of a received segment (fstat): {source}")]
    Stat {
        /// The kernel's reason.
        source: Errno,
    },

    /// Duplicating a segment's descriptor failed.
    #[error(
        "cannot duplicate a segment's descriptor: {source} — the process may be out of file descriptors (`ulimit -n`)"
    )]
    Dup {
        /// The reason.
        source: io::Error,
    },

    // ---- frames ----
    /// A frame's length is over [`crate::frame::MAX_FRAME_LEN`].
    #[error(
        "frame of {len} bytes is over the limit of {max} bytes — a control message this large is a bug or a \
         hostile peer; large objects travel in shared-memory segments, not in frames"
    )]
    FrameTooLarge {
        /// The length claimed (on receive) or asked for (on send).
        len: u64,
        /// The limit.
        max: usize,
    },

    /// The peer closed the stream in the middle of a frame.
    #[error(
        "connection closed in the middle of a frame: got {got} of {expected} bytes of its {part} — the peer \
         died or closed the connection while sending"
    )]
    TruncatedFrame {
        /// "header" or "payload".
        part: &'static str,
        /// Bytes of that part received.
        got: usize,
        /// Bytes of that part expected.
        expected: usize,
    },

    /// Reading or writing the stream failed.
    #[error("{op} failed on the stream: {source}")]
    Io {
        /// What was being done ("reading a frame", "sendmsg", ...).
        op: &'static str,
        /// The reason.
        source: io::Error,
    },

    // ---- descriptor passing ----
    /// More descriptors than [`crate::fdpass::MAX_FDS_PER_MESSAGE`] in one message.
    #[error(
        "{count} file descriptors in one message, over the limit of {max} — send them in several messages \
         (on receive: the peer does not follow the protocol)"
    )]
    TooManyFds {
        /// How many were sent or received.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// The kernel truncated the control data of a received message.
    #[error(
        "received a message whose descriptors were cut off (MSG_CTRUNC) — the peer sent more than {max} \
         descriptors, or this process hit its descriptor limit (`ulimit -n`); the descriptors that did \
         arrive were closed"
    )]
    ControlTruncated {
        /// The number of descriptors the receive buffer holds.
        max: usize,
    },
}

impl ShmError {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        ShmError::Io { op, source }
    }
}
