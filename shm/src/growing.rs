//! A segment written before its size is known: a producer serializes its
//! result straight into shared memory.
//!
//! # Protocol
//!
//! 1. **Nothing until needed.** [`GrowingSegment::new`] only keeps a name: a
//!    result small enough to travel inside a message never makes a memory
//!    file ([`ArchiveSink`] is asked for room only past the threshold).
//! 2. **Grow.** The first [`reserve`](ArchiveSink::reserve) takes the
//!    process's warm file if one is ready ([`crate::warm`]: pages already
//!    allocated and mapped, so the archive is written at memory speed), or
//!    creates the memfd with [`FIRST_CAPACITY`] bytes or what is asked, maps it
//!    read-write, and each later one that asks for more doubles it
//!    (`ftruncate`, then `mremap`, which may move the mapping: the kernel
//!    moves page tables, not bytes). Capacity costs address space only:
//!    shared-memory pages are allocated when first written.
//! 3. **Seal.** [`GrowingSegment::seal`] unmaps, cuts the file to the
//!    archive's length, seals its size and content, and maps it read-only:
//!    a [`Segment`] like any other, shared by descriptor.
//!
//! # Invariants
//!
//! - While it grows the file's size is not sealed. Only this writer holds
//!   its descriptor (close-on-exec, never exposed, no name in any
//!   directory; the writable mapping is not inherited by a fork), so nothing
//!   else can shrink it under the mapping: the argument of
//!   [`SegmentWriter::create`](crate::SegmentWriter::create), less the size
//!   seals, which only hold off a process with ptrace rights over this one.
//! - Readers only ever see the sealed [`Segment`].

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use memmap2::{Advice, MmapMut, MmapOptions, RemapOptions};
use shoal_core::object::ArchiveSink;

use crate::ShmError;
use crate::segment::{Segment, memfd_create, memfd_name, seal_content, seal_size};
use crate::warm::WarmPool;

/// The capacity a segment starts with: four times the largest archive that
/// travels inline, so that results just past it grow once or not at all.
pub const FIRST_CAPACITY: usize = 256 << 10;

/// A memfd that grows as an archive is written into it (see the module
/// docs).
pub struct GrowingSegment {
    name: String,
    pub(crate) file: Option<(OwnedFd, MmapMut)>,
    /// Where the first file comes from when one is ready (`crate::warm`).
    pool: Option<Arc<WarmPool>>,
}

impl GrowingSegment {
    /// A segment to be called `name` (see [`crate::segment`] for its rules),
    /// made on the first [`reserve`](ArchiveSink::reserve): in the
    /// process's warm memory when it has some and a file is ready
    /// ([`crate::warm::global`]).
    pub fn new(name: String) -> GrowingSegment {
        GrowingSegment { name, file: None, pool: crate::warm::global() }
    }

    /// As [`new`](Self::new), with the first file from `pool` if it has one
    /// ready (`None`: always a fresh file).
    pub fn with_pool(name: String, pool: Option<Arc<WarmPool>>) -> GrowingSegment {
        GrowingSegment { name, file: None, pool }
    }

    /// Bytes the file can hold without growing (0 before the first reserve).
    pub fn capacity(&self) -> usize {
        self.file.as_ref().map_or(0, |(_, map)| map.len())
    }

    /// Seals the first `len` bytes as a read-only [`Segment`] (the rest is
    /// cut off and freed).
    pub fn seal(self, len: usize) -> Result<Segment, ShmError> {
        if let Some(pool) = &self.pool {
            pool.sealed(len);
        }
        let (fd, map) = match self.file {
            Some(file) => file,
            None => create(&self.name, 0)?,
        };
        if len > map.len() {
            return Err(ShmError::SizeOverflow { len: len as u128 });
        }
        drop(map);
        let size = u64::try_from(len).map_err(|_| ShmError::SizeOverflow { len: len as u128 })?;
        rustix::fs::ftruncate(&fd, size).map_err(|source| ShmError::Resize { len, source })?;
        seal_size(&fd)?;
        seal_content(&fd)?;
        Segment::map_sealed(fd, len)
    }

    fn grow(&mut self, len: usize) -> Result<(), ShmError> {
        if self.file.is_none()
            && let Some(warm) = self.pool.as_ref().and_then(|pool| pool.take(len, &self.name))
        {
            // The file is this writer's alone from here (warm.rs), as if it
            // had made it: zero-filled, never shared, not sealed yet.
            self.file = Some((warm.fd, warm.map));
            if self.capacity() >= len {
                return Ok(());
            }
        }
        let Some((fd, map)) = &mut self.file else {
            self.file = Some(create(&self.name, len.max(FIRST_CAPACITY))?);
            return Ok(());
        };
        let cap = len.max(map.len().saturating_mul(2));
        let size = u64::try_from(cap).map_err(|_| ShmError::SizeOverflow { len: cap as u128 })?;
        rustix::fs::ftruncate(&*fd, size).map_err(|source| ShmError::Resize { len: cap, source })?;
        // SAFETY: `remap` is unsafe because the old mapping's addresses
        // become invalid; `map` is owned here and no slice into it outlives
        // a call of this writer (`reserve` hands out a borrow of `self`).
        // The file was grown to `cap` just above, so the whole new mapping
        // is backed (see the module docs for why nothing else resizes it).
        unsafe { map.remap(cap, RemapOptions::new().may_move(true)) }.map_err(|source| ShmError::Map {
            len: cap,
            writable: true,
            source,
        })?;
        map.advise(Advice::DontFork).map_err(|source| ShmError::Map { len: cap, writable: true, source })
    }
}

/// A fresh memfd of `len` bytes, mapped read-write and not inherited by a
/// fork.
pub(crate) fn create(name: &str, len: usize) -> Result<(OwnedFd, MmapMut), ShmError> {
    let name = memfd_name(name)?;
    let fd = memfd_create(name).map_err(|source| ShmError::MemfdCreate { name: name.to_owned(), source })?;
    let size = u64::try_from(len).map_err(|_| ShmError::SizeOverflow { len: len as u128 })?;
    rustix::fs::ftruncate(&fd, size).map_err(|source| ShmError::Resize { len, source })?;
    // SAFETY: as in `SegmentWriter::create`: this memfd was created just
    // above and `fd` is its only descriptor (close-on-exec, never exposed
    // while writable); its size changes only through this writer, which
    // remaps after growing and unmaps before shrinking (module docs).
    let map = unsafe { MmapOptions::new().len(len).map_mut(&fd) }.map_err(|source| ShmError::Map {
        len,
        writable: true,
        source,
    })?;
    // A child forked meanwhile must not hold a writable mapping: `seal`
    // would fail with EBUSY (see `SegmentWriter::create`).
    map.advise(Advice::DontFork).map_err(|source| ShmError::Map { len, writable: true, source })?;
    Ok((fd, map))
}

impl ArchiveSink for GrowingSegment {
    fn reserve(&mut self, len: usize) -> Result<&mut [u8], String> {
        if self.capacity() < len || self.file.is_none() {
            self.grow(len).map_err(|e| e.to_string())?;
        }
        match &mut self.file {
            Some((_, map)) => Ok(&mut map[..]),
            None => Err("internal error: a grown segment has no file".into()),
        }
    }

    fn written(&self, len: usize) -> &[u8] {
        self.file.as_ref().map_or(&[], |(_, map)| &map[..len.min(map.len())])
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::object::{ArchiveIn, Object, Value, read_owned};

    use super::*;
    use crate::SegmentObject;

    fn sink() -> Box<dyn ArchiveSink> {
        Box::new(GrowingSegment::with_pool("shoal-test-growing".into(), None))
    }

    fn sunk(obj: &dyn Object, threshold: usize) -> Option<Segment> {
        match obj.archive_or_sink(threshold, sink()).unwrap() {
            ArchiveIn::Kept => None,
            ArchiveIn::Sunk { sink, len } => {
                let growing = sink.into_any().downcast::<GrowingSegment>().unwrap();
                Some(growing.seal(len).unwrap())
            }
        }
    }

    #[test]
    fn a_large_value_is_serialized_into_a_sealed_segment_and_reads_back() {
        // Over the first capacity, so the file grows (and the map moves).
        let value: Vec<u64> = (0..200_000).collect();
        let obj = Value::new(value.clone());
        let segment = sunk(&obj, 64 << 10).expect("over the threshold");
        assert!(segment.len() >= 200_000 * 8 && segment.len() < 200_000 * 8 + 4096, "{}", segment.len());
        assert_eq!(read_owned::<Vec<u64>>(&SegmentObject::new(segment)).unwrap(), value);
        // Nothing was archived on the heap on the way.
        assert_eq!(obj.nbytes(), size_of::<Vec<u64>>() as u64);
    }

    #[test]
    fn a_small_value_keeps_its_archive_and_makes_no_file() {
        let obj = Value::new(vec![7u8; 100]);
        assert!(sunk(&obj, 64 << 10).is_none());
        assert!(obj.archived_bytes().unwrap().len() >= 100);
        let mut unused = GrowingSegment::with_pool("shoal-test-unused".into(), None);
        assert_eq!(unused.capacity(), 0);
        assert_eq!(unused.reserve(10).unwrap().len(), FIRST_CAPACITY);
    }

    #[test]
    fn a_value_crossing_the_threshold_midway_keeps_what_was_written_before() {
        // Many small writes: the archive moves from the heap into the file
        // once, in the middle of the serialization.
        let value: Vec<String> = (0..20_000).map(|i| format!("item {i}")).collect();
        let obj = Value::new(value.clone());
        let segment = sunk(&obj, 4096).expect("over the threshold");
        assert_eq!(read_owned::<Vec<String>>(&SegmentObject::new(segment)).unwrap(), value);
    }

    #[test]
    fn an_archived_value_or_raw_archive_is_copied_into_the_segment() {
        let obj = Value::new(vec![3u8; 1 << 20]);
        let expected = obj.archived_bytes().unwrap().to_vec();
        let segment = sunk(&obj, 64 << 10).unwrap();
        assert_eq!(segment.bytes(), &expected[..]);
    }
}
