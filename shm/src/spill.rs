//! Spill files: the bytes of a sealed segment written to local disk, and
//! read back into a new segment.
//!
//! This is the file layer of the memory limit (decision 7); *which* objects
//! spill and when is the store's business (the processes engine's
//! `store` module). Here: a [`SpillDir`] per store, one [`SpillFile`] per
//! spilled object, and the I/O between a segment's mapping and a file.
//!
//! # I/O
//!
//! Two backends, chosen once when the directory is made ([`SpillIo`]):
//!
//! - **io_uring** ([`SpillBackend::IoUring`]), where the kernel allows it:
//!   a ring is set up, probed for `READ`/`WRITE`, and a 4 KiB file is
//!   written and read back through it; any failure (EPERM from
//!   `kernel.io_uring_disabled` or a seccomp filter, ENOSYS, ENOMEM from the
//!   locked-memory limit, a kernel too old for the probe, a sandbox that
//!   fakes the syscalls) falls back to positioned I/O, with the reason logged
//!   once and kept ([`SpillDir::fallback_reason`]).
//! - **positioned I/O** ([`SpillBackend::Positioned`]): `pwrite`/`pread`
//!   through [`std::os::unix::fs::FileExt`]; forced by [`SpillIo::Positioned`].
//!
//! Both move the bytes straight between the segment's mapping and the file —
//! a write reads the sealed mapping, a read fills a fresh
//! [`SegmentWriter`]'s mapping — with no intermediate buffer. Both cut the
//! I/O into operations of at most [`DEFAULT_CHUNK`] bytes (io_uring keeps up
//! to [`QUEUE_DEPTH`] of them in flight), and both handle short transfers by
//! asking again for the rest. A read that meets the end of the file early is
//! [`SpillError::Truncated`], never a zero-filled object.
//!
//! # Files and directories
//!
//! - A spill directory is `<parent>/shoal-spill-<pid>-<n>` (mode 0700),
//!   made fresh by [`SpillDir::create`] and removed with everything in it
//!   when the last handle to it is dropped. Its owner holds an exclusive
//!   `flock` on `<dir>/lock` for its whole life.
//! - **Sweeping.** [`SpillDir::create`] first removes the spill directories
//!   in `parent` left by dead processes: the pid in the name is not a live
//!   process *and* the lock can be taken (so a live owner in another pid
//!   namespace is never swept) *and* the directory belongs to this user.
//! - A spill file is `<dir>/<n>.spill`, created exclusively (mode 0600). It
//!   is deleted when its [`SpillFile`] is dropped — when the object is
//!   released, or once it has been read back — and on any error while it is
//!   written. Descriptors are not kept open between the write and the read:
//!   a store with thousands of spilled objects must not run out of them.
//!
//! # Errors
//!
//! Every failure is a [`SpillError`] naming the file and what to do; nothing
//! here panics on I/O. A full disk is [`SpillError::Write`] with
//! [`SpillError::is_no_space`] true; the partial file is removed.
//!
//! # Limits
//!
//! Spill files go through the page cache: a spilled object's pages become
//! (dirty, then clean) file pages the kernel can write back and reclaim,
//! where shared-memory pages could only be swapped. A spill directory on
//! tmpfs frees no memory at all; [`SpillDir::create`] warns if it is.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;

use crate::uring::{ReadFailure, Ring, RingError};
use crate::{Segment, SegmentWriter, ShmError};

/// The most bytes one read or write operation moves (8 MiB): large enough
/// that per-operation costs vanish, small enough that a few in flight stay
/// cheap and a huge object is never one giant request.
pub const DEFAULT_CHUNK: usize = 8 << 20;

/// How many operations io_uring keeps in flight for one object.
pub const QUEUE_DEPTH: usize = 4;

/// The prefix of spill directory names: `shoal-spill-<pid>-<n>`.
pub const DIR_PREFIX: &str = "shoal-spill-";

/// The suffix of spill file names: `<n>.spill`.
pub const FILE_SUFFIX: &str = ".spill";

const LOCK_NAME: &str = "lock";
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Which I/O a spill directory should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpillIo {
    /// io_uring if the kernel allows it (detected when the directory is
    /// made), positioned I/O otherwise.
    #[default]
    Auto,
    /// Positioned I/O (`pwrite`/`pread`) whatever the kernel offers.
    Positioned,
}

/// Which I/O a spill directory does use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpillBackend {
    /// io_uring: chunked operations, several in flight.
    IoUring,
    /// `pwrite`/`pread`, one chunk at a time.
    Positioned,
}

impl std::fmt::Display for SpillBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpillBackend::IoUring => "io_uring",
            SpillBackend::Positioned => "positioned I/O",
        })
    }
}

/// What went wrong while spilling or reading back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// The spill directory (or its parent) could not be made or locked.
    #[error(
        "cannot make the spill directory {path}: {source} — check that its parent exists or can be created, is \
         writable by this user and is on a local disk (set ProcessesOptions::spill_dir to choose another)"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The reason.
        source: io::Error,
    },

    /// Only a sealed segment can be spilled (an internal error).
    #[error("internal error: an object that is not a shared-memory segment was chosen to spill")]
    NotASegment,

    /// A spill file could not be created.
    #[error(
        "cannot create the spill file {path}: {source} — EMFILE: out of file descriptors (`ulimit -n`); \
         ENOENT: the spill directory was removed while in use; EACCES/EROFS: the spill directory is not writable"
    )]
    Create {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: io::Error,
    },

    /// Writing a spill file failed; the partial file was removed.
    #[error(
        "cannot write {len} bytes to the spill file {path} ({backend}): {source}{hint}",
        hint = if is_no_space(source) {
            " — the disk holding the spill directory is full (or the user's quota is used up): free space there, \
             point ProcessesOptions::spill_dir at a larger disk, or raise memory_limit"
        } else {
            " — the spill directory's disk failed or refused the write"
        }
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// How many bytes were to be written.
        len: usize,
        /// The backend that was writing.
        backend: SpillBackend,
        /// The reason (`ENOSPC` for a full disk).
        source: io::Error,
    },

    /// Opening or reading a spill file failed.
    #[error(
        "cannot read back the spill file {path} ({backend}): {source} — the spill directory's disk failed, or \
         something outside shoal removed or changed the file; the object it held is lost to this process"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The backend that was reading.
        backend: SpillBackend,
        /// The reason.
        source: io::Error,
    },

    /// A spill file is shorter than the object written to it.
    #[error(
        "the spill file {path} ends at byte {got}, but {expected} bytes were written to it — something outside \
         shoal truncated it; the object it held is lost to this process"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes expected.
        expected: usize,
        /// Where the file ended.
        got: usize,
    },

    /// The segment to read an object back into could not be made.
    #[error("cannot read a spilled object back into shared memory: {0}")]
    Segment(#[from] ShmError),
}

impl SpillError {
    /// Whether this is a write that failed for lack of space (`ENOSPC`, or
    /// `EDQUOT` for a user's quota).
    pub fn is_no_space(&self) -> bool {
        matches!(self, SpillError::Write { source, .. } if is_no_space(source))
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::NOSPC.raw_os_error() || code == Errno::DQUOT.raw_os_error())
}

/// A directory of spill files, owned by one store. See the module docs.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    /// Holds the `flock` that tells sweepers this directory is alive.
    _lock: File,
    ring: Option<Ring>,
    fallback_reason: Option<String>,
    next_file: AtomicU64,
    chunk: usize,
    /// Tests only: the most bytes one operation may move, while the loop
    /// still expects a whole chunk — every operation comes back short.
    short_ops: Option<usize>,
}

impl SpillDir {
    /// Makes a fresh spill directory in `parent` (created if missing), after
    /// sweeping the ones dead processes left there, and sets up its I/O.
    pub fn create(parent: &Path, io: SpillIo) -> Result<Arc<SpillDir>, SpillError> {
        SpillDir::create_with(parent, io, DEFAULT_CHUNK, None)
    }

    pub(crate) fn create_with(
        parent: &Path,
        io: SpillIo,
        chunk: usize,
        short_ops: Option<usize>,
    ) -> Result<Arc<SpillDir>, SpillError> {
        let dir_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpillError::Dir { path, source }
        };
        fs::create_dir_all(parent).map_err(dir_error(parent))?;
        let swept = sweep(parent);
        if swept > 0 {
            tracing::info!(
                "removed {swept} spill director{} left in {} by dead processes",
                plural(swept),
                parent.display()
            );
        }
        static NEXT_DIR: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let path = loop {
            let path = parent.join(format!("{DIR_PREFIX}{pid}-{}", NEXT_DIR.fetch_add(1, Ordering::Relaxed)));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break path,
                // Left by an earlier process that had this pid and is alive
                // no more but could not be swept: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(dir_error(&path)(e)),
            }
        };
        let lock = match take_lock(&path, true) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                let _ = fs::remove_dir_all(&path);
                return Err(dir_error(&path)(io::Error::other("its lock is held by another process")));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                return Err(dir_error(&path)(e));
            }
        };
        // `f_type`'s type differs between targets (i64 here, u32 elsewhere).
        #[allow(clippy::unnecessary_cast)]
        if let Ok(stat) = rustix::fs::statfs(&path)
            && matches!(stat.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
        {
            tracing::warn!(
                "the spill directory {} is on tmpfs, which lives in memory: spilling there frees no memory; \
                 set ProcessesOptions::spill_dir (or TMPDIR) to a directory on a disk",
                path.display()
            );
        }
        let chunk = chunk.clamp(1, u32::MAX as usize);
        let (ring, fallback_reason) = match io {
            SpillIo::Positioned => (None, None),
            SpillIo::Auto => match Ring::setup(&path) {
                Ok(ring) => (Some(ring), None),
                Err(reason) => {
                    tracing::info!("spill I/O uses positioned I/O (pwrite/pread): io_uring is unavailable: {reason}");
                    (None, Some(reason))
                }
            },
        };
        Ok(Arc::new(SpillDir {
            path,
            _lock: lock,
            ring,
            fallback_reason,
            next_file: AtomicU64::new(0),
            chunk,
            short_ops,
        }))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The I/O in use. io_uring turns to positioned I/O for good if its ring
    /// ever fails in a way that leaves operations unaccounted for.
    pub fn backend(&self) -> SpillBackend {
        match &self.ring {
            Some(ring) if !ring.is_broken() => SpillBackend::IoUring,
            _ => SpillBackend::Positioned,
        }
    }

    /// Why [`SpillIo::Auto`] fell back to positioned I/O, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Writes `bytes` (typically a sealed segment's mapping, read in place)
    /// to a new spill file. On error no file is left behind.
    pub fn write(self: &Arc<Self>, bytes: &[u8]) -> Result<SpillFile, SpillError> {
        let id = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{id}{FILE_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| SpillError::Create { path: path.clone(), source })?;
        let mut backend = self.backend();
        let mut written = Err(RingError::Unavailable);
        if let (Some(ring), SpillBackend::IoUring) = (&self.ring, backend) {
            written = ring.write_all_at(file.as_fd(), bytes, self.chunk, self.short_ops);
        }
        let written = match written {
            Ok(()) => Ok(()),
            // Not started (positioned I/O, or a ring broken meanwhile).
            Err(RingError::Unavailable) => {
                backend = SpillBackend::Positioned;
                write_all_at(&file, bytes, self.chunk, self.short_ops)
            }
            Err(e) => Err(e.into_io()),
        };
        drop(file);
        match written {
            Ok(()) => Ok(SpillFile { dir: Arc::clone(self), path, len: bytes.len() }),
            Err(source) => {
                let _ = fs::remove_file(&path);
                Err(SpillError::Write { path, len: bytes.len(), backend, source })
            }
        }
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // Every SpillFile holds an Arc of its directory, so all were dropped
        // (and deleted) by now; remove_dir_all also takes the lock file and
        // anything a failed unlink left.
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove the spill directory {}: {e}", self.path.display());
        }
    }
}

/// One spilled object: a file of exactly [`len`](Self::len) bytes, deleted
/// when this is dropped.
#[derive(Debug)]
pub struct SpillFile {
    dir: Arc<SpillDir>,
    path: PathBuf,
    len: usize,
}

impl SpillFile {
    /// The object's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the object back into a new segment called `name` (read
    /// straight into its writable mapping), and seals it. The file stays
    /// until this `SpillFile` is dropped.
    pub fn read_segment(&self, name: &str) -> Result<Segment, SpillError> {
        let backend = self.dir.backend();
        let read_error = |source| SpillError::Read { path: self.path.clone(), backend, source };
        let file = File::open(&self.path).map_err(read_error)?;
        let size = file.metadata().map_err(read_error)?.len();
        if size < self.len as u64 {
            return Err(SpillError::Truncated { path: self.path.clone(), expected: self.len, got: size as usize });
        }
        let mut writer = SegmentWriter::create(self.len, name)?;
        let (chunk, short) = (self.dir.chunk, self.dir.short_ops);
        if let (Some(ring), SpillBackend::IoUring) = (&self.dir.ring, backend) {
            match ring.read_exact_at(file.as_fd(), writer, chunk, short) {
                Ok(filled) => return Ok(filled.seal()?),
                // The writer is gone (dropped, or kept mapped forever if the
                // ring broke with reads in flight): nothing to seal.
                Err(ReadFailure::Failed(e)) => return Err(self.read_failure(e, backend)),
                // Not started: the ring broke earlier; read positioned.
                Err(ReadFailure::Unavailable(untouched)) => writer = untouched,
            }
        }
        read_exact_at(&file, writer.bytes_mut(), chunk, short)
            .map_err(|e| self.read_failure(e, SpillBackend::Positioned))?;
        Ok(writer.seal()?)
    }

    fn read_failure(&self, e: io::Error, backend: SpillBackend) -> SpillError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                SpillError::Truncated { path: self.path.clone(), expected: self.len, got: eof_offset(&e).unwrap_or(0) }
            }
            _ => SpillError::Read { path: self.path.clone(), backend, source: e },
        }
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        // NotFound: the directory went first (cannot happen while we hold
        // it) or someone else removed the file; nothing is left either way.
        let _ = fs::remove_file(&self.path);
    }
}

/// `pwrite` until every byte is written: chunks of at most `chunk`, short
/// writes continued, EINTR retried.
fn write_all_at(file: &File, bytes: &[u8], chunk: usize, short: Option<usize>) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let end = bytes.len().min(done + chunk.min(short.unwrap_or(usize::MAX)));
        match file.write_at(&bytes[done..end], done as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `pread` until `buf` is full: chunks of at most `chunk`, short reads
/// continued, EINTR retried; the end of the file first is `UnexpectedEof`.
fn read_exact_at(file: &File, buf: &mut [u8], chunk: usize, short: Option<usize>) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let end = buf.len().min(done + chunk.min(short.unwrap_or(usize::MAX)));
        match file.read_at(&mut buf[done..end], done as u64) {
            Ok(0) => return Err(eof_error(done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The end of a file met at byte `at` while reading: `UnexpectedEof`,
/// carrying the offset.
pub(crate) fn eof_error(at: usize) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, EofAt(at))
}

/// The offset an [`eof_error`] carries.
pub(crate) fn eof_offset(e: &io::Error) -> Option<usize> {
    e.get_ref()?.downcast_ref::<EofAt>().map(|eof| eof.0)
}

#[derive(Debug)]
struct EofAt(usize);

impl std::fmt::Display for EofAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the file ends at byte {}", self.0)
    }
}

impl std::error::Error for EofAt {}

/// Opens (creating it if `create`) `<dir>/lock` and takes an exclusive
/// `flock` without waiting: `None` if another process holds it.
fn take_lock(dir: &Path, create: bool) -> io::Result<Option<File>> {
    let path = dir.join(LOCK_NAME);
    let file = OpenOptions::new().read(true).write(create).create(create).mode(0o600).open(path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the spill directories in `parent` whose owner is dead (see the
/// module docs); how many. Errors are skipped: sweeping is best effort.
pub fn sweep(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else { return 0 };
    let uid = rustix::process::geteuid().as_raw();
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        // Not following symlinks: a link named like a spill directory is
        // not ours to follow.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() && meta.uid() == uid => {}
            _ => continue,
        }
        let lock = match take_lock(&path, false) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => continue, // alive, in another pid namespace
            Err(e) if e.kind() == io::ErrorKind::NotFound => None, // died before locking
            Err(_) => continue,
        };
        if fs::remove_dir_all(&path).is_ok() {
            swept += 1;
        }
        drop(lock);
    }
    swept
}

/// The pid in a spill directory name `shoal-spill-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(DIR_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn segment(bytes: &[u8]) -> Segment {
        let mut writer = SegmentWriter::create(bytes.len(), "shoal-test-spill").unwrap();
        writer.bytes_mut().copy_from_slice(bytes);
        writer.seal().unwrap()
    }

    fn parent() -> tempdir::TempDir {
        tempdir::TempDir::new("spill")
    }

    /// A scratch directory of this test run, removed at the end.
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct TempDir(PathBuf);

        impl TempDir {
            pub fn new(what: &str) -> TempDir {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "shoal-test-{what}-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                TempDir(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const BACKENDS: [SpillIo; 2] = [SpillIo::Auto, SpillIo::Positioned];

    fn spill_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(FILE_SUFFIX))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn auto_chooses_io_uring_on_this_kernel() {
        // The machines shoal is built on allow io_uring; if this fails, the
        // fallback reason says why (and the positioned path is the one used).
        let parent = parent();
        let dir = SpillDir::create(parent.path(), SpillIo::Auto).unwrap();
        assert_eq!(dir.backend(), SpillBackend::IoUring, "fallback: {:?}", dir.fallback_reason());
        assert!(dir.fallback_reason().is_none());
        let forced = SpillDir::create(parent.path(), SpillIo::Positioned).unwrap();
        assert_eq!(forced.backend(), SpillBackend::Positioned);
    }

    #[test]
    fn round_trip_through_each_backend() {
        let parent = parent();
        for io in BACKENDS {
            // Small chunks so that objects take many operations, several in
            // flight, and lengths that do not divide evenly.
            let dir = SpillDir::create_with(parent.path(), io, 64 << 10, None).unwrap();
            for (i, len) in [0, 1, 4095, 4096, 65_537, 1_000_003].into_iter().enumerate() {
                let data = pattern(len, i as u64 + 1);
                let file = dir.write(segment(&data).bytes()).unwrap();
                assert_eq!(file.len(), len);
                assert_eq!(fs::metadata(file.path()).unwrap().len(), len as u64, "{io:?}");
                let back = file.read_segment("shoal-test-spill-back").unwrap();
                assert_eq!(back.len(), len);
                assert!(back.bytes() == &data[..], "{io:?}, {len} bytes: read back differs");
                let path = file.path().to_path_buf();
                drop(file);
                assert!(!path.exists(), "a dropped spill file is deleted");
            }
        }
    }

    #[test]
    fn short_operations_are_continued() {
        // Every operation moves at most 1000 bytes of a 64 KiB chunk: io_uring
        // completions come back short and the rest must be asked for again.
        let parent = parent();
        for io in BACKENDS {
            let dir = SpillDir::create_with(parent.path(), io, 64 << 10, Some(1000)).unwrap();
            let data = pattern(300_001, 7);
            let file = dir.write(&data).unwrap();
            assert_eq!(fs::read(file.path()).unwrap(), data, "{io:?}: written bytes");
            assert!(file.read_segment("shoal-test-spill-short").unwrap().bytes() == &data[..], "{io:?}");
        }
    }

    #[test]
    fn a_truncated_file_is_an_error_not_zeros() {
        let parent = parent();
        for io in BACKENDS {
            let dir = SpillDir::create_with(parent.path(), io, 4096, None).unwrap();
            let data = pattern(50_000, 3);
            let file = dir.write(&data).unwrap();
            // Cut by someone else: detected before reading anything.
            OpenOptions::new().write(true).open(file.path()).unwrap().set_len(20_000).unwrap();
            let err = file.read_segment("shoal-test-spill-cut").unwrap_err();
            assert!(matches!(err, SpillError::Truncated { expected: 50_000, got: 20_000, .. }), "{io:?}: {err}");
            // Also when the file shrinks after the length check: the read
            // loop meets the end of the file (a short read, then zero).
            let mut buf = vec![0u8; 50_000];
            let short = File::open(file.path()).unwrap();
            let e = read_exact_at(&short, &mut buf, 4096, None).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            if let Some(ring) = &dir.ring {
                let writer = SegmentWriter::create(50_000, "shoal-test-spill-cut2").unwrap();
                let Err(ReadFailure::Failed(e)) = ring.read_exact_at(short.as_fd(), writer, 4096, None) else {
                    panic!("{io:?}: reading past the end must fail")
                };
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                assert_eq!(eof_offset(&e), Some(20_000));
            }
        }
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let parent = parent();
        let dir = SpillDir::create(parent.path(), SpillIo::Positioned).unwrap();
        let file = dir.write(b"gone").unwrap();
        fs::remove_file(file.path()).unwrap();
        let err = file.read_segment("shoal-test-spill-gone").unwrap_err();
        assert!(matches!(err, SpillError::Read { .. }), "{err}");
        assert!(err.to_string().contains("outside shoal"), "{err}");
    }

    #[test]
    fn directory_is_made_locked_and_removed() {
        let parent = parent();
        let dir = SpillDir::create(parent.path(), SpillIo::Auto).unwrap();
        let path = dir.path().to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        assert!(take_lock(&path, false).unwrap().is_none(), "the owner holds the lock");
        let a = dir.write(&[1; 10]).unwrap();
        let b = dir.write(&[2; 20]).unwrap();
        assert_eq!(spill_files(&path).len(), 2);
        drop(a);
        assert_eq!(spill_files(&path).len(), 1);
        drop(dir); // `b` still holds the directory
        assert!(path.exists());
        drop(b);
        assert!(!path.exists(), "the directory goes with its last file");
    }

    #[test]
    fn sweep_removes_only_dead_owners() {
        let parent = parent();
        // A dead owner: a pid that cannot be a live process here.
        let dead_pid = (u32::MAX >> 1) - 7;
        let dead = parent.path().join(format!("{DIR_PREFIX}{dead_pid}-0"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("0.spill"), b"left behind").unwrap();
        // A "dead" pid whose lock is held (an owner in another pid namespace).
        let other_ns = parent.path().join(format!("{DIR_PREFIX}{}-1", dead_pid - 1));
        fs::create_dir(&other_ns).unwrap();
        let held = take_lock(&other_ns, true).unwrap().unwrap();
        // A live owner (this process's parent) and names that are not ours.
        let alive = parent.path().join(format!("{DIR_PREFIX}{}-0", std::os::unix::process::parent_id()));
        fs::create_dir(&alive).unwrap();
        let unrelated = parent.path().join("shoal-spill-notapid");
        fs::create_dir(&unrelated).unwrap();
        let dir = SpillDir::create(parent.path(), SpillIo::Positioned).unwrap();
        assert!(!dead.exists(), "a dead process's directory is swept");
        assert!(other_ns.exists() && alive.exists() && unrelated.exists());
        assert!(dir.path().exists());
        drop(held);
        assert_eq!(sweep(parent.path()), 1, "once its lock is free, it goes too");
        assert!(!other_ns.exists());
    }

    /// A full disk, for real: a 1 MiB tmpfs. Needs root (or CAP_SYS_ADMIN);
    /// skipped with the reason otherwise.
    #[test]
    fn a_full_disk_is_a_clear_error_and_leaves_no_file() {
        let parent = parent();
        let Some(mount) = TmpfsMount::new(&parent.path().join("tiny"), "1m") else { return };
        for io in BACKENDS {
            let dir = SpillDir::create_with(mount.path(), io, 256 << 10, None).unwrap();
            let backend = dir.backend();
            let data = pattern(4 << 20, 5);
            let err = dir.write(&data).unwrap_err();
            assert!(err.is_no_space(), "{io:?}: {err}");
            let message = err.to_string();
            assert!(message.contains("full") && message.contains("spill_dir"), "{message}");
            assert!(matches!(err, SpillError::Write { backend: b, len, .. } if b == backend && len == 4 << 20));
            assert!(spill_files(dir.path()).is_empty(), "the partial file is removed");
            // Smaller objects still fit afterwards.
            let file = dir.write(&data[..100_000]).unwrap();
            assert!(file.read_segment("shoal-test-spill-fits").unwrap().bytes() == &data[..100_000]);
        }
    }

    /// A tmpfs mounted for one test, unmounted when dropped.
    pub(crate) struct TmpfsMount(PathBuf);

    impl TmpfsMount {
        pub(crate) fn new(at: &Path, size: &str) -> Option<TmpfsMount> {
            fs::create_dir_all(at).unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(at)
                .stderr(std::process::Stdio::piped())
                .output();
            match status {
                Ok(out) if out.status.success() => Some(TmpfsMount(at.to_path_buf())),
                Ok(out) => {
                    eprintln!("SKIPPED: cannot mount a tmpfs ({})", String::from_utf8_lossy(&out.stderr).trim());
                    None
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run mount: {e}");
                    None
                }
            }
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TmpfsMount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// Spill throughput of each backend (run with `--ignored --nocapture`,
    /// in release mode): 256 MiB written from a sealed segment, then read back
    /// into a new one. The files go through the page cache; the write is
    /// timed up to the last byte handed to the kernel, plus an fsync figure.
    #[test]
    #[ignore]
    fn throughput_256_mib() {
        const LEN: usize = 256 << 20;
        let parent = parent();
        let data = segment(&pattern(LEN, 11));
        // The baseline: copying the bytes into a fresh segment in memory.
        for _ in 0..2 {
            let t = Instant::now();
            let copy = segment(data.bytes());
            eprintln!("memcpy into a new segment: {:.0} MiB/s", (LEN >> 20) as f64 / t.elapsed().as_secs_f64());
            drop(copy);
        }
        for io in BACKENDS {
            let dir = SpillDir::create(parent.path(), io).unwrap();
            for round in 0..3 {
                let t = Instant::now();
                let file = dir.write(data.bytes()).unwrap();
                let write = t.elapsed();
                let t = Instant::now();
                File::open(file.path()).unwrap().sync_all().unwrap();
                let sync = t.elapsed();
                let t = Instant::now();
                let back = file.read_segment("shoal-test-spill-tp").unwrap();
                let read = t.elapsed();
                assert!(back.bytes() == data.bytes());
                let mib = (LEN >> 20) as f64;
                eprintln!(
                    "{:>14} round {round}: write {:.0} MiB/s (+fsync {:.0} ms), read back {:.0} MiB/s",
                    dir.backend().to_string(),
                    mib / write.as_secs_f64(),
                    sync.as_secs_f64() * 1e3,
                    mib / read.as_secs_f64()
                );
            }
        }
    }
}
