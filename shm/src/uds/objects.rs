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

use std::any::Any;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rkyv::util::AlignedVec;
use shoal_core::object::{ArchiveIn, ArchiveSink, Obj};

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
    let obj = if obj.as_any().downcast_ref::<SegmentObject>().is_some() {
        Arc::clone(obj)
    } else {
        let bytes = obj.archived_bytes().map_err(|e| e.to_string())?;
        if bytes.len() < INLINE_MAX {
            return Ok(WireObject::Inline(bytes.to_vec()));
        }
        // Large and not a segment yet: one is made, so it is named now.
        let name = name();
        publish(obj, move || name)?
    };
    let n = u32::try_from(segments.len()).map_err(|_| "too many segments in one message".to_string())?;
    segments.push(obj);
    Ok(WireObject::Fd(n))
}

/// `obj` as a segment if its archive is large (a new one called `name()`
/// unless it is one already), else `obj` itself.
///
/// `name` is called only if a segment is made: most objects are small (a
/// literal `u64` argument, a task's small result), and formatting a name
/// for each cost more than archiving it.
pub fn publish<F>(obj: &Obj, name: F) -> Result<Obj, String>
where
    F: FnOnce() -> String + Send + 'static,
{
    if obj.as_any().downcast_ref::<SegmentObject>().is_some() {
        return Ok(Arc::clone(obj));
    }
    // Serialized straight into its segment past the inline size (no
    // archive on the heap, no copy); an inline one stays with the object.
    let sink = Box::new(Deferred { name: Some(name), segment: None });
    match obj.archive_or_sink(INLINE_MAX, sink).map_err(|e| e.to_string())? {
        ArchiveIn::Kept => Ok(Arc::clone(obj)),
        ArchiveIn::Sunk { sink, len } => {
            let deferred = sink
                .into_any()
                .downcast::<Deferred<F>>()
                .map_err(|_| "internal error: an archive went to another sink".to_string())?;
            let growing = deferred.segment.ok_or("internal error: an archive was sunk into no segment")?;
            let segment = growing.seal(len).map_err(|e| format!("could not publish an object: {e}"))?;
            Ok(Arc::new(SegmentObject::new(segment)))
        }
    }
}

/// A [`GrowingSegment`] made, and named, on the first byte written into it
/// (an archive under the threshold writes none).
struct Deferred<F> {
    name: Option<F>,
    segment: Option<GrowingSegment>,
}

impl<F: FnOnce() -> String + Send + 'static> ArchiveSink for Deferred<F> {
    fn reserve(&mut self, len: usize) -> Result<&mut [u8], String> {
        let name = &mut self.name;
        let segment =
            self.segment.get_or_insert_with(|| GrowingSegment::new(name.take().map_or_else(String::new, |f| f())));
        segment.reserve(len)
    }

    fn written(&self, len: usize) -> &[u8] {
        self.segment.as_ref().map_or(&[], |segment| segment.written(len))
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
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
    fn a_segment_is_named_only_when_one_is_made() {
        // Small: no segment, so no name is made.
        let small: Obj = Value::shared(7u64);
        let kept = publish(&small, || panic!("a small object was given a segment name")).unwrap();
        assert!(Arc::ptr_eq(&kept, &small));
        // Large: named once, with the name given.
        let large: Obj = Value::shared(vec![9u8; INLINE_MAX * 2]);
        let named = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&named);
        let published = publish(&large, move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "shoal-test-named".into()
        })
        .unwrap();
        assert_eq!(named.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(read_owned::<Vec<u8>>(&*published).unwrap(), vec![9u8; INLINE_MAX * 2]);
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
