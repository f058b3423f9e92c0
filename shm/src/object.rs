//! A sealed segment as a shoal object: how a task result in shared memory
//! plugs into the object model of `shoal-core`.
//!
//! A [`SegmentObject`] holds one [`Segment`] whose bytes are an rkyv archive
//! of a type this process does not know statically (it came from another
//! process). Its [`Object::type_name`] is [`ARCHIVE_TYPE_NAME`], so every
//! typed read (`read_owned`, `read_archived`) validates the bytes with
//! `rkyv::access` before use; a `&Archived<T>` parameter then reads the
//! mapped pages in place — the producer's pages, never a copy.
//!
//! # Invariants
//!
//! - The bytes never change (the segment is sealed) and start on a page
//!   boundary, so they satisfy rkyv's 16-byte alignment.
//! - The object owns one descriptor and one mapping of the memfd; dropping
//!   the last `Arc` of it gives both back, and the kernel frees the memory
//!   once no process holds either.

use std::any::Any;

use shoal_core::object::{ARCHIVE_TYPE_NAME, Object};
use shoal_core::registry::InputError;

use crate::{Segment, SegmentWriter, ShmError};

/// A stored object whose archive lives in a sealed shared-memory segment.
#[derive(Debug)]
pub struct SegmentObject {
    segment: Segment,
}

impl SegmentObject {
    /// Wraps a sealed segment holding an archive.
    pub fn new(segment: Segment) -> SegmentObject {
        SegmentObject { segment }
    }

    /// Writes `bytes` (an archive) into a new segment called `name`, seals it
    /// and wraps it: the one copy a producer makes to publish an object.
    pub fn copy_of(bytes: &[u8], name: &str) -> Result<SegmentObject, ShmError> {
        let mut writer = SegmentWriter::create(bytes.len(), name)?;
        writer.bytes_mut().copy_from_slice(bytes);
        Ok(SegmentObject { segment: writer.seal()? })
    }

    /// The segment (for its descriptor, to share it with another process).
    pub fn segment(&self) -> &Segment {
        &self.segment
    }
}

impl Object for SegmentObject {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        ARCHIVE_TYPE_NAME
    }

    fn archived_bytes(&self) -> Result<&[u8], InputError> {
        Ok(self.segment.bytes())
    }

    fn nbytes(&self) -> u64 {
        self.segment.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_core::object::{Obj, read_archived, read_owned};

    use super::*;

    #[test]
    fn typed_reads_validate_and_read_in_place() {
        let value: Vec<u64> = (0..10_000).collect();
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&value).unwrap();
        let obj = SegmentObject::copy_of(&archive, "shoal-test-object").unwrap();
        let start = obj.segment().bytes().as_ptr() as usize;
        let end = start + obj.segment().len();
        let obj: Obj = Arc::new(obj);
        assert_eq!(read_owned::<Vec<u64>>(&*obj).unwrap(), value);
        let archived = read_archived::<Vec<u64>>(&*obj).unwrap();
        let at = archived.as_ptr() as usize;
        assert!(start <= at && at < end, "read in place, inside the segment");
        assert_eq!(obj.nbytes(), archive.len() as u64);
    }

    #[test]
    fn a_wrong_type_is_an_input_error_not_a_panic() {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&7u8).unwrap();
        let obj: Obj = Arc::new(SegmentObject::copy_of(&archive, "shoal-test-object-bad").unwrap());
        assert!(read_owned::<String>(&*obj).is_err());
    }
}
