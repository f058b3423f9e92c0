//! io_uring for spill files: an object's bytes written or read at their
//! offsets, in chunks, several operations in flight.
//!
//! # How one object moves
//!
//! The buffer (a sealed segment's mapping to write from, a fresh
//! [`SegmentWriter`]'s mapping to read into) is cut into chunks; up to
//! [`QUEUE_DEPTH`] of them are in flight at once, each a `WRITE` or `READ`
//! at the chunk's own file offset (file offset = buffer offset), tagged with
//! its slot number. A completion that moved fewer bytes than asked (a short
//! transfer) puts the rest back in its slot for resubmission; `-EINTR` and
//! `-EAGAIN` resubmit as is; any other error, or zero bytes (the end of the
//! file on a read), stops new submissions — and the loop still waits until
//! every submitted operation has completed before it returns.
//!
//! # Invariants
//!
//! - **No operation outlives the call that submitted it.** The kernel reads
//!   from or writes into the caller's buffer only while the call runs: it
//!   returns only when no submitted operation is left, with one exception —
//!   the ring itself failing (`io_uring_enter` with an error other than
//!   EINTR/EAGAIN/EBUSY), when completions can no longer be waited for. Then
//!   the ring is marked broken for good (later I/O uses positioned I/O), a
//!   read's destination segment is leaked (`mem::forget`: its mapping stays,
//!   so a late kernel write lands in memory nobody else uses), and a write's
//!   source is only ever read by the kernel (at worst it faults, failing the
//!   operation, if the caller unmaps it).
//! - **One user at a time.** The ring is behind a mutex: slot numbers are
//!   unambiguous, and no completion of another call can be mistaken for ours.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, types};
use rustix::io::Errno;

use crate::SegmentWriter;
use crate::spill::{QUEUE_DEPTH, eof_error};

/// Submission queue entries: room for every slot, twice.
const ENTRIES: u32 = (2 * QUEUE_DEPTH) as u32;

/// A ring set up and checked for spill I/O.
pub(crate) struct Ring {
    ring: Mutex<IoUring>,
    broken: AtomicBool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("broken", &self.is_broken()).finish_non_exhaustive()
    }
}

/// How an io_uring transfer failed.
pub(crate) enum RingError {
    /// The ring cannot be used (broken earlier): nothing was submitted; use
    /// positioned I/O.
    Unavailable,
    /// An operation failed (or met the end of the file); no operation is in
    /// flight any more.
    Io(io::Error),
    /// The ring itself failed with operations possibly in flight; it is now
    /// broken for good.
    Stuck(io::Error),
}

impl RingError {
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            RingError::Unavailable => io::Error::other("the io_uring ring failed earlier and is no longer used"),
            RingError::Io(e) => e,
            RingError::Stuck(e) => io::Error::new(e.kind(), format!("io_uring failed with I/O in flight: {e}")),
        }
    }
}

/// A read into a segment that did not complete.
pub(crate) enum ReadFailure {
    /// The ring cannot be used; the writer is handed back untouched.
    Unavailable(SegmentWriter),
    /// The read failed; the writer is gone (dropped, or leaked if the ring
    /// broke with operations in flight).
    Failed(io::Error),
}

#[derive(Clone, Copy)]
struct Op {
    /// Offset in the buffer and in the file.
    offset: usize,
    /// Bytes still to move from `offset`.
    len: usize,
    submitted: bool,
}

impl Ring {
    /// Sets up a ring and proves it works here: probes `READ` and `WRITE`,
    /// then writes a small file in `dir` and reads it back through it. The
    /// reason, if io_uring cannot be used.
    pub(crate) fn setup(dir: &Path) -> Result<Ring, String> {
        let ring = IoUring::builder().dontfork().build(ENTRIES).map_err(|e| {
            let hint = match Errno::from_io_error(&e) {
                Some(Errno::PERM) => " (disabled by kernel.io_uring_disabled, or blocked by a seccomp filter)",
                Some(Errno::NOSYS) => " (this kernel has no io_uring)",
                Some(Errno::NOMEM) => " (the locked-memory limit, `ulimit -l`, is too low)",
                _ => "",
            };
            format!("io_uring_setup: {e}{hint}")
        })?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| format!("io_uring probe: {e} (kernel before 5.6?)"))?;
        for (name, code) in [("READ", opcode::Read::CODE), ("WRITE", opcode::Write::CODE)] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring has no {name} operation on this kernel"));
            }
        }
        let ring = Ring { ring: Mutex::new(ring), broken: AtomicBool::new(false) };
        ring.self_test(dir)?;
        Ok(ring)
    }

    /// A 4 KiB round trip through the ring, in a file removed afterwards.
    fn self_test(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join("io_uring-probe");
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
            self.write_all_at(file.as_fd(), &data, 1024, None)
                .map_err(|e| format!("a test write failed: {}", e.into_io()))?;
            let mut back = vec![0u8; data.len()];
            // SAFETY: `back` is a live, exclusively borrowed buffer of
            // `back.len()` bytes that nothing else touches during the call.
            // If the ring breaks with reads in flight (`Stuck`), `back` is
            // leaked below so a late kernel write still lands in it.
            let read =
                unsafe { self.transfer(file.as_raw_fd(), back.as_mut_ptr(), back.len(), Kind::Read, 1024, None) };
            match read {
                Ok(()) => {}
                Err(RingError::Stuck(e)) => {
                    std::mem::forget(back);
                    return Err(format!("a test read broke the ring: {e}"));
                }
                Err(e) => return Err(format!("a test read failed: {}", e.into_io())),
            }
            if back != data {
                return Err("a test read returned other bytes than were written".into());
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Writes all of `bytes` to `fd` at offset 0 (file offset = buffer offset).
    pub(crate) fn write_all_at(
        &self,
        fd: BorrowedFd<'_>,
        bytes: &[u8],
        chunk: usize,
        short: Option<usize>,
    ) -> Result<(), RingError> {
        // SAFETY: `bytes` is borrowed for the whole call and the kernel only
        // reads through a WRITE's pointer (the `*mut` is never written
        // through). On `Stuck` the kernel may still read it after we return;
        // if the caller then unmaps it, the kernel's copy faults and fails
        // that operation: no memory of this process is written either way.
        unsafe { self.transfer(fd.as_raw_fd(), bytes.as_ptr().cast_mut(), bytes.len(), Kind::Write, chunk, short) }
    }

    /// Fills `writer` from `fd`, reading from offset 0; the writer, filled.
    pub(crate) fn read_exact_at(
        &self,
        fd: BorrowedFd<'_>,
        mut writer: SegmentWriter,
        chunk: usize,
        short: Option<usize>,
    ) -> Result<SegmentWriter, ReadFailure> {
        let buf = writer.bytes_mut();
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        // SAFETY: `writer` is owned here and its mapping (`len` bytes at
        // `ptr`, writable, shared with nobody: the memfd's only descriptor is
        // inside the writer) lives until it is dropped, which happens only
        // after `transfer` returned. On `Stuck`, the kernel may write into
        // the mapping later, so the writer is leaked (`mem::forget`): the
        // mapping is never unmapped, nothing else is ever placed there, and
        // nothing reads it.
        match unsafe { self.transfer(fd.as_raw_fd(), ptr, len, Kind::Read, chunk, short) } {
            Ok(()) => Ok(writer),
            Err(RingError::Unavailable) => Err(ReadFailure::Unavailable(writer)),
            Err(RingError::Io(e)) => Err(ReadFailure::Failed(e)),
            Err(stuck @ RingError::Stuck(_)) => {
                std::mem::forget(writer);
                Err(ReadFailure::Failed(stuck.into_io()))
            }
        }
    }

    /// Moves `len` bytes between `base` and `fd` (buffer offset = file
    /// offset) in chunks of at most `chunk` bytes, up to [`QUEUE_DEPTH`] in
    /// flight. `short` (tests) caps what each operation asks for, so that
    /// every completion comes back short.
    ///
    /// # Safety
    ///
    /// `base..base + len` must stay valid until this returns anything but
    /// `Err(Stuck)` — readable for [`Kind::Write`]; writable, and neither
    /// read nor written by anyone else, for [`Kind::Read`]. After
    /// `Err(Stuck)` the kernel may still access it at any time: a read's
    /// buffer must then never be freed or reused.
    unsafe fn transfer(
        &self,
        fd: RawFd,
        base: *mut u8,
        len: usize,
        kind: Kind,
        chunk: usize,
        short: Option<usize>,
    ) -> Result<(), RingError> {
        let Ok(mut ring) = self.ring.lock() else { return Err(RingError::Unavailable) };
        if self.is_broken() {
            return Err(RingError::Unavailable);
        }
        let chunk = chunk.clamp(1, u32::MAX as usize);
        let ask_max = short.unwrap_or(usize::MAX).max(1);
        let mut ops: [Option<Op>; QUEUE_DEPTH] = [None; QUEUE_DEPTH];
        let mut next = 0usize;
        let mut failure: Option<io::Error> = None;
        // Where a read first met the end of the file (several reads in
        // flight past it each report theirs: the lowest is the true end).
        let mut eof_at: Option<usize> = None;
        loop {
            if failure.is_none() && eof_at.is_none() {
                for slot in ops.iter_mut().filter(|s| s.is_none()) {
                    if next >= len {
                        break;
                    }
                    let n = chunk.min(len - next);
                    *slot = Some(Op { offset: next, len: n, submitted: false });
                    next += n;
                }
            }
            // After a failure nothing more is submitted: only what is in
            // flight is waited for. After the end of the file, only the rest
            // of short reads before it, to learn exactly where it is.
            for slot in ops.iter_mut() {
                if slot
                    .is_some_and(|op| !op.submitted && (failure.is_some() || eof_at.is_some_and(|at| op.offset >= at)))
                {
                    *slot = None;
                }
            }
            let mut sq = ring.submission();
            for (i, slot) in ops.iter_mut().enumerate() {
                let Some(op) = slot.as_mut().filter(|op| !op.submitted) else { continue };
                // `op.len <= chunk <= u32::MAX`, so the cast is exact.
                let ask = op.len.min(ask_max) as u32;
                // SAFETY: pointer arithmetic only: `op.offset + op.len <= len`,
                // so the pointer stays inside the caller's buffer.
                let ptr = unsafe { base.add(op.offset) };
                let entry = match kind {
                    Kind::Write => {
                        opcode::Write::new(types::Fd(fd), ptr.cast_const(), ask).offset(op.offset as u64).build()
                    }
                    Kind::Read => opcode::Read::new(types::Fd(fd), ptr, ask).offset(op.offset as u64).build(),
                }
                .user_data(i as u64);
                // SAFETY: the entry points at `ask <= op.len` bytes at
                // `base + op.offset`, inside the caller's buffer, which the
                // caller keeps valid (see `# Safety`) until this function
                // returns; and it returns only once every submitted operation
                // has completed (`in_flight == 0` below) — or by `Stuck`,
                // whose callers keep a read's buffer alive forever. `fd` is
                // open for the whole call (borrowed by our caller), and the
                // kernel takes its own reference to the file at submission.
                // Slot numbers (user_data) are unique among operations in
                // flight: a slot holds one operation until it completes.
                if unsafe { sq.push(&entry) }.is_err() {
                    // Cannot happen (ENTRIES >= 2 × QUEUE_DEPTH, and the
                    // queue is submitted before more is pushed); try again
                    // after the next submission.
                    break;
                }
                op.submitted = true;
            }
            drop(sq);
            let in_flight = ops.iter().flatten().filter(|op| op.submitted).count();
            if in_flight == 0 {
                break;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::INTR | Errno::AGAIN | Errno::BUSY)) => {}
                Err(e) => {
                    self.broken.store(true, Ordering::Relaxed);
                    tracing::warn!("the spill io_uring failed ({e}); spilling goes on with positioned I/O");
                    return Err(RingError::Stuck(e));
                }
            }
            for cqe in ring.completion() {
                let i = cqe.user_data() as usize;
                let Some(op) = ops.get_mut(i).and_then(Option::take) else { continue };
                let res = cqe.result();
                if res < 0 {
                    let errno = Errno::from_raw_os_error(-res);
                    if matches!(errno, Errno::INTR | Errno::AGAIN) && failure.is_none() {
                        ops[i] = Some(Op { submitted: false, ..op });
                    } else {
                        failure.get_or_insert_with(|| io::Error::from_raw_os_error(-res));
                    }
                    continue;
                }
                let n = res as usize;
                if n == 0 {
                    match kind {
                        Kind::Write => {
                            failure.get_or_insert_with(|| {
                                io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes")
                            });
                        }
                        Kind::Read => eof_at = Some(eof_at.map_or(op.offset, |at| at.min(op.offset))),
                    }
                } else if n < op.len {
                    ops[i] = Some(Op { offset: op.offset + n, len: op.len - n, submitted: false });
                }
            }
        }
        match (failure, eof_at) {
            (Some(e), _) => Err(RingError::Io(e)),
            (None, Some(at)) => Err(RingError::Io(eof_error(at))),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
}
