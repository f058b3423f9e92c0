//! One object = one sealed memfd.
//!
//! # Protocol
//!
//! 1. **Create.** [`SegmentWriter::create`] makes an anonymous memory file
//!    (`memfd_create`, close-on-exec, sealing allowed, never executable),
//!    gives it its final size, seals the size at once (`SHRINK | GROW`) and
//!    maps it read-write.
//! 2. **Write.** The producer fills [`SegmentWriter::bytes_mut`] in place
//!    (an rkyv serializer writes straight into it).
//! 3. **Seal.** [`SegmentWriter::seal`] unmaps the writable view, adds
//!    `WRITE | SEAL`, and maps the segment read-only: a [`Segment`].
//! 4. **Share.** The segment's descriptor is sent to other processes
//!    ([`crate::fdpass`]); each receiver calls [`Segment::from_fd`], which
//!    refuses any descriptor not sealed against change, and maps it
//!    read-only. Every reader sees the same physical pages: nothing is copied.
//! 5. **Free.** The kernel frees the memory when the last descriptor and the
//!    last mapping of it are gone, in every process. A process killed by
//!    SIGKILL has its descriptors closed and mappings torn down by the
//!    kernel, so it cannot leak a segment.
//!
//! # Invariants
//!
//! - A [`Segment`]'s bytes never change and never shrink, for as long as it
//!   lives, whoever else holds the memfd: this is guaranteed by the seals
//!   (`SHRINK | GROW | WRITE`), which the kernel enforces on every
//!   descriptor and mapping of the file in every process — including root's,
//!   including a descriptor reopened through `/proc/<pid>/fd` — and which can
//!   never be removed. It is what makes handing out `&[u8]` into a shared
//!   mapping sound, and what rules out SIGBUS from a shrunk file.
//! - A segment's length is its file size, a `usize` end to end (a `u64` at
//!   the syscalls): segments over 4 GiB work on 64-bit targets.
//! - [`Segment::bytes`] starts on a page boundary, so it satisfies any
//!   alignment an archive needs (rkyv wants 16).
//!
//! # Decisions
//!
//! - **Read-only mappings are private** (`MAP_PRIVATE`, `PROT_READ`). Linux
//!   before 6.7 refuses a read-only *shared* mapping of a write-sealed memfd
//!   (EPERM; fixed by "mm: drop the assumption that VM_SHARED always implies
//!   writable"). A private mapping that is never written maps the very same
//!   page-cache pages — it is copy-on-write only on a write, and a read-only
//!   mapping cannot be written — and since the file can never change, a
//!   private view and a shared view cannot differ.
//! - **The size is sealed at creation**, the content at [`SegmentWriter::seal`]:
//!   a writer's mapping can then never lose its backing (no SIGBUS while
//!   writing), whoever else might get hold of the descriptor.
//! - **Zero-length segments are allowed.** They are well defined (an empty
//!   archive), memmap2 maps them without exposing any byte, and refusing
//!   them would only move a special case into every caller. In practice the
//!   store sends objects under its inline threshold inside control messages,
//!   so they should be rare.
//! - **Names are diagnostics.** The kernel shows them as `memfd:<name>` in
//!   `/proc/<pid>/fd` and `/proc/<pid>/maps`; names longer than
//!   [`MAX_NAME_LEN`] bytes are shortened (at a character boundary), and a
//!   NUL byte is an error.
//! - **Never executable.** Segments are created with `MFD_NOEXEC_SEAL` where
//!   the kernel knows it (6.3+; it is required when `vm.memfd_noexec = 2`),
//!   and without it on older kernels.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

/// Further attempts at sealing a segment whose pages are briefly held by
/// the kernel (see [`SegmentWriter::seal`]), and the pause before the
/// first of them (growing linearly): 10 + 20 + … + 50 ms at most.
const SEAL_RETRIES: u32 = 5;
const SEAL_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use crate::ShmError;

/// The seals a received segment must carry before it is mapped: it can
/// neither shrink (no SIGBUS), nor grow, nor be written (no change under a
/// reader). `SEAL` is not required: further seals only restrict more.
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::WRITE);

/// Seals added at creation, right after the size is set.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);
const SIZE_SEALS_NAME: &str = "SHRINK|GROW";

/// Seals added by [`SegmentWriter::seal`]: no more writes, no more seals.
const CONTENT_SEALS: SealFlags = SealFlags::WRITE.union(SealFlags::SEAL);
const CONTENT_SEALS_NAME: &str = "WRITE|SEAL";

/// The longest memfd name the kernel takes: `NAME_MAX` (255) minus the
/// `"memfd:"` prefix it adds.
pub const MAX_NAME_LEN: usize = 249;

/// Set once a kernel has refused `MFD_NOEXEC_SEAL` (before 6.3), so later
/// segments skip the failing attempt.
static NOEXEC_SEAL_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// A segment being written: the only handle to a fresh memfd, mapped
/// read-write. Turn it into a shareable [`Segment`] with [`seal`](Self::seal).
///
/// Its descriptor is deliberately not exposed: while it is writable, nothing
/// else may hold it.
#[derive(Debug)]
pub struct SegmentWriter {
    map: MmapMut,
    fd: OwnedFd,
}

impl SegmentWriter {
    /// Creates a segment of exactly `len` bytes (zero-filled), mapped
    /// read-write. `name` shows up as `memfd:<name>` in `/proc/<pid>/fd` and
    /// `/proc/<pid>/maps`; see the module docs for its rules.
    ///
    /// The memory is not reserved: pages are allocated as they are written.
    pub fn create(len: usize, name: &str) -> Result<SegmentWriter, ShmError> {
        let name = memfd_name(name)?;
        let fd = memfd_create(name).map_err(|source| ShmError::MemfdCreate { name: name.to_owned(), source })?;
        let size = u64::try_from(len).map_err(|_| ShmError::SizeOverflow { len: len as u128 })?;
        rustix::fs::ftruncate(&fd, size).map_err(|source| ShmError::Resize { len, source })?;
        rustix::fs::fcntl_add_seals(&fd, SIZE_SEALS)
            .map_err(|source| ShmError::Seal { seals: SIZE_SEALS_NAME, source })?;
        // SAFETY: memmap2's `map_mut` is unsafe because another handle to the
        // file could write it (racing our `&mut [u8]`) or shrink it (SIGBUS).
        // This memfd was created just above and `fd` is its only descriptor:
        // it is close-on-exec (no child inherits it), never exposed while
        // writable (the writer has no `as_fd`), and has no name in any
        // directory. Its size is `len` and sealed (`SHRINK | GROW`), so the
        // whole mapping stays backed whatever happens to the descriptor.
        // The one remaining way in is reopening `/proc/<pid>/fd/N`, which
        // takes ptrace access to this process — access that can as well
        // write any of its memory through `/proc/<pid>/mem`, and that no
        // program can defend against. Even then the size seals rule out
        // SIGBUS; and readers never see a segment before `seal`.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&fd) }.map_err(|source| ShmError::Map {
            len,
            writable: true,
            source,
        })?;
        // Not inherited by a child forked meanwhile (a worker being started
        // by another thread): its copy of this writable shared mapping would
        // make `seal` fail with EBUSY until the child calls exec. Found by
        // the chaos soak test (a read-back racing a replacement's start).
        map.advise(Advice::DontFork).map_err(|source| ShmError::Map { len, writable: true, source })?;
        Ok(SegmentWriter { map, fd })
    }

    /// The segment's bytes, to write the object into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// The segment's bytes as written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The segment's length in bytes, fixed at creation.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the segment has zero length.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Seals the segment against any change and maps it read-only.
    ///
    /// The writable mapping is unmapped first: the kernel refuses
    /// `F_SEAL_WRITE` with EBUSY while any writable shared mapping of the
    /// file exists. On error the segment is dropped (and freed).
    pub fn seal(self) -> Result<Segment, ShmError> {
        let SegmentWriter { map, fd } = self;
        let len = map.len();
        // Writes through a shared mapping are already in the page cache:
        // there is nothing to flush, only the mapping to remove.
        drop(map);
        seal_content(&fd)?;
        Segment::map_sealed(fd, len)
    }
}

/// Seals a memfd's content (`WRITE | SEAL`); its writable mappings must be
/// gone.
pub(crate) fn seal_content(fd: &OwnedFd) -> Result<(), ShmError> {
    // The kernel also refuses `F_SEAL_WRITE` (EBUSY, after waiting a
    // little itself) while something else holds an extra reference to
    // a page — transiently, e.g. while the kernel migrates or samples
    // pages (seen under the chaos soak test, 1 seal in ~1,000). Such a
    // reference goes away: try again a few times before failing.
    let mut attempt = 0;
    loop {
        match rustix::fs::fcntl_add_seals(fd, CONTENT_SEALS) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if attempt < SEAL_RETRIES => {
                attempt += 1;
                std::thread::sleep(SEAL_RETRY_PAUSE * attempt);
            }
            Err(source) => return Err(ShmError::Seal { seals: CONTENT_SEALS_NAME, source }),
        }
    }
}

/// Seals a memfd's size (`SHRINK | GROW`).
pub(crate) fn seal_size(fd: &OwnedFd) -> Result<(), ShmError> {
    rustix::fs::fcntl_add_seals(fd, SIZE_SEALS).map_err(|source| ShmError::Seal { seals: SIZE_SEALS_NAME, source })
}

/// A sealed segment, mapped read-only: immutable bytes shared by every
/// process that holds its descriptor. Dropping it unmaps the bytes and
/// closes this process's descriptor; the memory is freed once no process
/// holds either.
#[derive(Debug)]
pub struct Segment {
    map: Mmap,
    fd: OwnedFd,
}

impl Segment {
    /// Takes a segment received from another process (or from anywhere):
    /// checks that it is a memfd sealed with at least [`REQUIRED_SEALS`],
    /// reads its size, and maps it read-only.
    ///
    /// A descriptor that is not a memfd, or that could still change, is
    /// refused (and closed): a reader must never map bytes that can change or
    /// shrink under it.
    pub fn from_fd(fd: OwnedFd) -> Result<Segment, ShmError> {
        // Seals first, size second: once the seals are seen they hold forever,
        // so the size read after them is final.
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|source| ShmError::NotAMemfd { source })?;
        if !seals.contains(REQUIRED_SEALS) {
            return Err(ShmError::NotSealed { found: seals.bits(), needed: REQUIRED_SEALS.bits() });
        }
        let stat = rustix::fs::fstat(&fd).map_err(|source| ShmError::Stat { source })?;
        let len = u64::try_from(stat.st_size)
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .ok_or(ShmError::SizeOverflow { len: stat.st_size.unsigned_abs().into() })?;
        Segment::map_sealed(fd, len)
    }

    /// Maps a memfd that carries [`REQUIRED_SEALS`] and whose size is `len`.
    pub(crate) fn map_sealed(fd: OwnedFd, len: usize) -> Result<Segment, ShmError> {
        // SAFETY: memmap2's `map_copy_read_only` is unsafe because the file
        // under a mapping could be modified (making the `&[u8]` we hand out
        // change under its borrowers) or truncated (SIGBUS on access). Both
        // callers established that this memfd carries `SHRINK | GROW | WRITE`
        // (`seal` added them, `from_fd` checked them), and `len` is its size
        // (set before the size seals, or read by fstat after seeing them).
        // Seals cannot be removed and bind every descriptor and mapping of the
        // file in every process: no write(2), no new writable shared mapping,
        // no hole punching, no truncation (each fails with EPERM), and no
        // writable shared mapping can predate the WRITE seal (adding it fails
        // with EBUSY while one exists). So the `len` mapped bytes are backed
        // and constant for the mapping's whole life. The mapping is private
        // and read-only, so this process cannot write it either.
        let map = unsafe { MmapOptions::new().len(len).map_copy_read_only(&fd) }.map_err(|source| ShmError::Map {
            len,
            writable: false,
            source,
        })?;
        Ok(Segment { map, fd })
    }

    /// The segment's bytes: constant, and page-aligned (at least 16-byte
    /// aligned, as rkyv needs). Empty for a zero-length segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The segment's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the segment has zero length.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The segment's descriptor, to send it to another process with
    /// [`crate::fdpass::send`].
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new descriptor for the same segment (close-on-exec), e.g. to hand it
    /// to a spill thread while this mapping stays in use.
    pub fn try_clone_fd(&self) -> Result<OwnedFd, ShmError> {
        self.fd.try_clone().map_err(|source| ShmError::Dup { source })
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// Segments are shared between threads (behind an `Arc` in the store), and a
// writer may be filled on one thread and sealed on another.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Segment>();
    shareable::<SegmentWriter>();
};

/// Checks a segment name and shortens it to what the kernel takes.
pub(crate) fn memfd_name(name: &str) -> Result<&str, ShmError> {
    if name.contains('\0') {
        return Err(ShmError::InvalidName { name: name.to_owned() });
    }
    let mut end = name.len().min(MAX_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Ok(&name[..end])
}

/// `memfd_create` with `MFD_NOEXEC_SEAL` where the kernel has it.
pub(crate) fn memfd_create(name: &str) -> Result<OwnedFd, Errno> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    if !NOEXEC_SEAL_UNSUPPORTED.load(Ordering::Relaxed) {
        // EINVAL here can only mean an unknown flag: the name is checked and
        // shortened above. Any other error is the real answer.
        match rustix::fs::memfd_create(name, flags | MemfdFlags::NOEXEC_SEAL) {
            Err(Errno::INVAL) => NOEXEC_SEAL_UNSUPPORTED.store(true, Ordering::Relaxed),
            result => return result,
        }
    }
    rustix::fs::memfd_create(name, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn sealed(data: &[u8], name: &str) -> Segment {
        let mut writer = SegmentWriter::create(data.len(), name).unwrap();
        writer.bytes_mut().copy_from_slice(data);
        writer.seal().unwrap()
    }

    #[test]
    fn write_seal_read_back() {
        for len in [1, 100, 4096, 4097, 1 << 20] {
            let data = pattern(len, 7);
            let segment = sealed(&data, "shoal-test-roundtrip");
            assert_eq!(segment.len(), len);
            assert_eq!(segment.bytes(), &data[..]);
        }
    }

    #[test]
    fn new_segment_is_zeroed_and_sized() {
        let writer = SegmentWriter::create(10_000, "shoal-test-zeroed").unwrap();
        assert_eq!(writer.len(), 10_000);
        assert!(writer.bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn bytes_are_page_aligned() {
        let page = 4096; // the smallest page size Linux has
        for len in [1, 17, 5000] {
            let segment = sealed(&pattern(len, 1), "shoal-test-aligned");
            assert_eq!(segment.bytes().as_ptr() as usize % page, 0);
            assert_eq!(segment.bytes().as_ptr() as usize % 16, 0);
        }
    }

    #[test]
    fn zero_length_segment_is_empty_and_sealed() {
        let segment = SegmentWriter::create(0, "shoal-test-empty").unwrap().seal().unwrap();
        assert!(segment.is_empty());
        assert_eq!(segment.bytes(), &[] as &[u8]);
        let again = Segment::from_fd(segment.try_clone_fd().unwrap()).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn sealed_segment_refuses_every_change() {
        let data = pattern(8192, 3);
        let segment = sealed(&data, "shoal-test-refuses");
        let fd = segment.as_fd();
        assert_eq!(rustix::io::write(fd, b"overwrite"), Err(Errno::PERM), "write(2)");
        assert_eq!(rustix::io::pwrite(fd, b"x", 100), Err(Errno::PERM), "pwrite(2)");
        assert_eq!(rustix::fs::ftruncate(fd, 0), Err(Errno::PERM), "shrink");
        assert_eq!(rustix::fs::ftruncate(fd, 1 << 20), Err(Errno::PERM), "grow");
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        assert_eq!(rustix::fs::fallocate(fd, punch, 0, 4096), Err(Errno::PERM), "punch a hole");
        assert_eq!(rustix::fs::fcntl_add_seals(fd, SealFlags::FUTURE_WRITE), Err(Errno::PERM), "more seals");
        // SAFETY: expected to fail; were it to succeed, the mapping is
        // dropped without being written, so no byte of `segment` changes.
        let writable = unsafe { MmapOptions::new().len(data.len()).map_mut(&fd) };
        assert!(writable.is_err(), "a writable shared mapping of a sealed segment must be refused");
        // A descriptor reopened through /proc is bound by the same seals.
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let reopened = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        assert_eq!(rustix::io::write(&reopened, b"x"), Err(Errno::PERM), "write(2) through /proc");
        assert_eq!(segment.bytes(), &data[..]);
    }

    #[test]
    fn write_seal_needs_the_writable_mapping_gone() {
        // Why `seal` unmaps before sealing: the kernel refuses F_SEAL_WRITE
        // while a writable shared mapping exists.
        let writer = SegmentWriter::create(4096, "shoal-test-ebusy").unwrap();
        assert_eq!(rustix::fs::fcntl_add_seals(&writer.fd, SealFlags::WRITE), Err(Errno::BUSY));
        assert!(writer.seal().is_ok());
    }

    #[test]
    fn size_is_sealed_while_writing() {
        let writer = SegmentWriter::create(4096, "shoal-test-size-sealed").unwrap();
        assert_eq!(rustix::fs::ftruncate(&writer.fd, 0), Err(Errno::PERM));
        assert_eq!(rustix::fs::ftruncate(&writer.fd, 8192), Err(Errno::PERM));
    }

    #[test]
    fn from_fd_refuses_unsealed_memfd() {
        let fd =
            rustix::fs::memfd_create("shoal-test-unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let keep = fd.try_clone().unwrap();
        assert!(matches!(Segment::from_fd(fd), Err(ShmError::NotSealed { .. })));
        // Sealed against resizing but still writable: refused as well.
        rustix::fs::fcntl_add_seals(&keep, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        let err = Segment::from_fd(keep.try_clone().unwrap()).unwrap_err();
        assert!(matches!(err, ShmError::NotSealed { .. }), "{err}");
        assert!(err.to_string().contains("refusing"), "{err}");
        // FUTURE_WRITE is not WRITE: writable mappings made before it live on.
        rustix::fs::fcntl_add_seals(&keep, SealFlags::FUTURE_WRITE).unwrap();
        assert!(matches!(Segment::from_fd(keep.try_clone().unwrap()), Err(ShmError::NotSealed { .. })));
        // Once truly sealed, it is accepted.
        rustix::fs::fcntl_add_seals(&keep, SealFlags::WRITE).unwrap();
        assert_eq!(Segment::from_fd(keep).unwrap().len(), 4096);
    }

    #[test]
    fn from_fd_refuses_memfd_without_sealing() {
        // Without MFD_ALLOW_SEALING a memfd carries F_SEAL_SEAL only.
        let fd = rustix::fs::memfd_create("shoal-test-nosealing", MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(Segment::from_fd(fd), Err(ShmError::NotSealed { .. })));
    }

    #[test]
    fn from_fd_refuses_non_memfd() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = Segment::from_fd(a.into()).unwrap_err();
        assert!(matches!(err, ShmError::NotAMemfd { .. }), "{err}");
    }

    #[test]
    fn from_fd_maps_the_same_bytes() {
        let data = pattern(70_000, 9);
        let segment = sealed(&data, "shoal-test-from-fd");
        let again = Segment::from_fd(segment.try_clone_fd().unwrap()).unwrap();
        assert_eq!(again.len(), data.len());
        assert_eq!(again.bytes(), &data[..]);
        let (a, b) = (rustix::fs::fstat(segment.as_fd()).unwrap(), rustix::fs::fstat(again.as_fd()).unwrap());
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }

    #[test]
    fn names_are_checked_and_shortened() {
        assert!(matches!(SegmentWriter::create(1, "a\0b"), Err(ShmError::InvalidName { .. })));
        let long = "é".repeat(200); // 400 bytes, two per char
        let short = memfd_name(&long).unwrap();
        assert!(short.len() <= MAX_NAME_LEN && short.len() >= MAX_NAME_LEN - 1);
        let writer = SegmentWriter::create(1, &long).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&writer.fd)));
        assert!(link.unwrap().to_string_lossy().contains(short));
    }

    #[test]
    fn segments_are_not_executable() {
        // MFD_NOEXEC_SEAL (kernel 6.3+) adds F_SEAL_EXEC; older kernels lack
        // both, and the segment is still never mapped executable by us.
        let segment = sealed(b"code?", "shoal-test-noexec");
        let seals = rustix::fs::fcntl_get_seals(segment.as_fd()).unwrap();
        assert!(seals.contains(REQUIRED_SEALS | SealFlags::SEAL));
        if !NOEXEC_SEAL_UNSUPPORTED.load(Ordering::Relaxed) {
            assert!(seals.contains(SealFlags::EXEC));
        }
    }

    /// Lengths are `usize`/`u64` end to end: a 5 GiB segment keeps its size
    /// and its last byte. Sparse: only the two touched pages are allocated.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn segment_over_4_gib() {
        const LEN: usize = 5 << 30;
        let mut writer = SegmentWriter::create(LEN, "shoal-test-huge").unwrap();
        writer.bytes_mut()[0] = 0xAB;
        writer.bytes_mut()[LEN - 1] = 0xCD;
        let segment = writer.seal().unwrap();
        assert_eq!(segment.len(), LEN);
        let again = Segment::from_fd(segment.try_clone_fd().unwrap()).unwrap();
        assert_eq!(again.len(), LEN);
        assert_eq!((again.bytes()[0], again.bytes()[LEN - 1]), (0xAB, 0xCD));
        assert_eq!(rustix::fs::fstat(again.as_fd()).unwrap().st_size, LEN as i64);
    }
}
