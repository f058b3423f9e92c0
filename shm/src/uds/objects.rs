//! Objects on their way between processes: inline archives or segments.
//!
//! # Rules
//!
//! - An archive shorter than [`INLINE_MAX`] bytes travels inside the
//!   control message (copied: it is small); a longer one lives in a sealed
//!   memfd segment ([`SegmentObject`]) and travels as its descriptor, never
//!   copied between processes.
//! - A producer archives a value once ([`Object::archived_bytes`]
//!   serializes and validates it: the "validate at publish" of the design)
//!   and, if it is large, copies it once into a new segment.
//! - An object that is a segment already is passed on as its descriptor:
//!   every process that reads it maps the producer's pages.
//! - A value whose archive would pass `MAX_ARCHIVE_LEN` (2 GiB, rkyv's
//!   32-bit relative pointers) cannot be archived: `wire` and [`publish`]
//!   return the error that says so (the producer's task fails with it, or
//!   `submit` for a literal argument), found before any byte is copied.
//!
//! [`Object::archived_bytes`]: shoal_core::object::Object::archived_bytes

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rkyv::util::AlignedVec;
use shoal_core::object::{ArchiveIn, Obj};

use super::codec::{ProtocolError, WireObject};
use crate::SegmentObject;
use crate::growing::GrowingSegment;

/// Archives shorter than this travel inline in control messages; longer
/// ones in shared-memory segments (64 KiB: below it, a segment's syscalls
/// and page faults cost more than copying the bytes).
pub const INLINE_MAX: usize = 64 << 10;

/// A message ready to send: its payload and the segments whose descriptors
/// ride with it (kept alive until it is sent).
pub struct Outgoing {
    /// The frame's payload.
    pub payload: AlignedVec,
    /// The segments whose descriptors go with it, in the order the payload
    /// numbers them.
    pub segments: Vec<Obj>,
}

impl Outgoing {
    /// Sends it on `socket` (one message at a time per socket: the caller
    /// holds the socket's send lock).
    pub fn send(&self, socket: &std::os::unix::net::UnixStream) -> Result<(), String> {
        let fds = self.fds().map_err(|e| e.to_string())?;
        crate::fdpass::send(socket, &self.payload, &fds).map_err(|e| e.to_string())
    }

    /// The descriptors to attach, in the order the payload numbers them.
    pub fn fds(&self) -> Result<Vec<BorrowedFd<'_>>, ProtocolError> {
        self.segments
            .iter()
            .map(|obj| {
                obj.as_any()
                    .downcast_ref::<SegmentObject>()
                    .map(|s| s.segment().as_fd())
                    .ok_or_else(|| ProtocolError("internal error: a descriptor for a non-segment object".into()))
            })
            .collect()
    }
}

/// How `obj` travels: inline, or as a descriptor appended to `segments`.
/// A large object that is not a segment yet is published into a new one
/// called `name()`.
pub(crate) fn wire(obj: &Obj, name: impl FnOnce() -> String, segments: &mut Vec<Obj>) -> Result<WireObject, String> {
    if obj.as_any().downcast_ref::<SegmentObject>().is_none() {
        let bytes = obj.archived_bytes().map_err(|e| e.to_string())?;
        if bytes.len() < INLINE_MAX {
            return Ok(WireObject::Inline(bytes.to_vec()));
        }
    }
    let obj = publish(obj, name)?;
    let n = u32::try_from(segments.len()).map_err(|_| "too many segments in one message".to_string())?;
    segments.push(obj);
    Ok(WireObject::Fd(n))
}

/// `obj` as a segment if its archive is large (a new one called `name()`
/// unless it is one already), else `obj` itself.
pub fn publish(obj: &Obj, name: impl FnOnce() -> String) -> Result<Obj, String> {
    if obj.as_any().downcast_ref::<SegmentObject>().is_some() {
        return Ok(Arc::clone(obj));
    }
    // Serialized straight into its segment past the inline size (no
    // archive on the heap, no copy); an inline one stays with the object.
    let sink = Box::new(GrowingSegment::new(name()));
    match obj.archive_or_sink(INLINE_MAX, sink).map_err(|e| e.to_string())? {
        ArchiveIn::Kept => Ok(Arc::clone(obj)),
        ArchiveIn::Sunk { sink, len } => {
            let growing = sink
                .into_any()
                .downcast::<GrowingSegment>()
                .map_err(|_| "internal error: an archive went to another sink".to_string())?;
            let segment = growing.seal(len).map_err(|e| format!("could not publish an object: {e}"))?;
            Ok(Arc::new(SegmentObject::new(segment)))
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::object::{Value, read_owned};

    use super::*;

    fn name() -> String {
        "shoal-test-objects".into()
    }

    #[test]
    fn small_archives_go_inline_large_ones_in_segments() {
        let mut segments = Vec::new();
        let small: Obj = Value::shared(vec![1u8; 100]);
        assert!(matches!(wire(&small, name, &mut segments), Ok(WireObject::Inline(b)) if b.len() < INLINE_MAX));
        assert!(segments.is_empty());
        let large: Obj = Value::shared(vec![2u8; INLINE_MAX]);
        assert!(matches!(wire(&large, name, &mut segments), Ok(WireObject::Fd(0))));
        assert_eq!(segments.len(), 1);
        assert_eq!(read_owned::<Vec<u8>>(&*segments[0]).unwrap(), vec![2u8; INLINE_MAX]);
    }

    #[test]
    fn a_large_value_is_published_without_an_archive_on_the_heap() {
        let value: Obj = Value::shared(vec![5u8; INLINE_MAX * 4]);
        let published = publish(&value, name).unwrap();
        assert!(published.as_any().downcast_ref::<SegmentObject>().is_some());
        assert_eq!(read_owned::<Vec<u8>>(&*published).unwrap(), vec![5u8; INLINE_MAX * 4]);
        // The value was serialized into the segment: it keeps no archive
        // (its size estimate is still its in-memory size, not the archive's).
        assert_eq!(value.nbytes(), size_of::<Vec<u8>>() as u64);
        // A small one keeps its archive, as a reader's first read would.
        let small: Obj = Value::shared(vec![5u8; 100]);
        assert!(Arc::ptr_eq(&publish(&small, name).unwrap(), &small));
        assert!(small.nbytes() >= 100);
    }

    #[test]
    fn a_segment_is_passed_on_not_copied() {
        let large: Obj = Value::shared(vec![3u8; INLINE_MAX * 2]);
        let published = publish(&large, name).unwrap();
        assert!(published.as_any().downcast_ref::<SegmentObject>().is_some());
        let mut segments = Vec::new();
        assert!(matches!(wire(&published, || unreachable!("no new segment"), &mut segments), Ok(WireObject::Fd(0))));
        assert!(Arc::ptr_eq(&segments[0], &published), "the same segment object, not a copy");
        assert_eq!(Outgoing { payload: AlignedVec::new(), segments }.fds().unwrap().len(), 1);
    }
}
