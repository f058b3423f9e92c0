//! Archiving a vector of primitives where it lies, with no copy.
//!
//! rkyv archives a `Vec<P>` whose elements are stored as they are archived
//! (bytes always; every primitive number on a little-endian machine: rkyv's
//! "copy optimization") as the elements' bytes, written in one go from the
//! vector's own buffer at position 0, then a few bytes of padding and the
//! root (a relative pointer back to the elements, and the length). So the
//! archive of such a vector can *be* its buffer, with that tail written into
//! the spare capacity after the elements: an `&Archived<Vec<P>>` reader then
//! reads the producer's own elements, and the result is held once.
//!
//! # Invariants
//!
//! - The tail is made by rkyv itself: the vector is serialized into a
//!   [`TailWriter`] that skips the one write of the elements (recognised by
//!   its address and length, at position 0) and keeps the rest. Any other
//!   pattern of writes (a type without copy optimization, a future rkyv that
//!   writes something first) is refused, and the caller falls back to an
//!   ordinary archive.
//! - The archive is validated like every archive shoal makes, before use.
//! - Its address is taken after the last change to the vector (growing it
//!   for the tail may move it); the owner never changes the vector again.
//! - The archive starts on a 16-byte boundary, as every archive shoal hands
//!   out does (a block from the system allocator does on 64-bit Linux; if
//!   not, the caller falls back).
//!
//! Growing the vector by the tail's few bytes costs no copy of the elements
//! for a large vector: glibc maps a large block whole pages at a time, so
//! the tail nearly always fits in its last page and `realloc` keeps it where
//! it is (no system call: a traced 64 MiB transfer made no `mremap` in the
//! client), and otherwise remaps its pages; a vector made with a little
//! spare capacity is not touched at all. A block in the middle of the heap
//! may be copied once by the allocator, which is still no more than the
//! ordinary archive costs, and nothing is kept beside.

use std::any::{Any, TypeId};

use rkyv::Archived;
use rkyv::rancor::{BoxedError, Source};
use rkyv::ser::{Positional, Writer};

use super::MAX_ARCHIVE_LEN;

/// The smallest vector (in bytes of elements) archived in place: below it an
/// ordinary archive costs less than growing the vector may (a copy of a few
/// KiB), and its copy beside the value is small.
pub const IN_PLACE_MIN: usize = 64 << 10;

/// The alignment every archive shoal hands out starts on.
const ARCHIVE_ALIGN: usize = 16;

/// An archive inside a vector's own buffer: its first `len` bytes.
pub(crate) struct InPlace {
    /// The buffer's address (kept as a number: the owner of the vector
    /// vouches for it, see [`InPlace::bytes`]).
    addr: usize,
    len: usize,
}

impl InPlace {
    /// The archive's bytes.
    ///
    /// # Safety
    ///
    /// The vector this was made from ([`archive`]) must be alive and must
    /// not have been changed since.
    pub(crate) unsafe fn bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: by the caller's promise the buffer still holds the
        // vector's elements followed by the tail written in `archive`
        // (`len` bytes in all, inside its allocation and initialized), and
        // nothing writes to it while the vector lives unchanged.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The archive's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Archive `value` in place if it is a vector of primitives of at least
/// [`IN_PLACE_MIN`] bytes; `None` leaves it to an ordinary archive.
pub(crate) fn archive<T: Any>(value: &mut T) -> Option<InPlace> {
    // The type tests compare constants of this instance: for any other
    // type the whole function folds to `None` (it runs for every result).
    macro_rules! each {
        ($($p:ty),*) => {$(
            if TypeId::of::<T>() == TypeId::of::<Vec<$p>>() {
                return archive_vec((value as &mut dyn Any).downcast_mut::<Vec<$p>>()?);
            }
        )*};
    }
    each!(u8, i8, u16, i16, u32, i32, u64, i64, u128, i128, f32, f64);
    None
}

fn archive_vec<P>(v: &mut Vec<P>) -> Option<InPlace>
where
    Vec<P>: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<TailWriter, rkyv::ser::allocator::ArenaHandle<'a>, BoxedError>,
        >,
    Archived<Vec<P>>: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, BoxedError>>,
{
    let payload = size_of_val(v.as_slice());
    if !(IN_PLACE_MIN..=MAX_ARCHIVE_LEN).contains(&payload) {
        // Too large: the ordinary archive refuses it with the error that
        // says what to do, when a reader asks.
        return None;
    }
    let writer = TailWriter { elements: (v.as_ptr() as usize, payload), skipped: false, tail: Vec::new() };
    let writer = rkyv::api::high::to_bytes_in::<_, BoxedError>(&*v, writer).ok()?;
    if !writer.skipped {
        return None;
    }
    let tail = writer.tail;
    let len = payload + tail.len();
    v.reserve_exact(tail.len().div_ceil(size_of::<P>()));
    if !(v.as_ptr() as usize).is_multiple_of(ARCHIVE_ALIGN) {
        return None;
    }
    // SAFETY: `reserve_exact` left room for at least `tail.len()` more bytes
    // after the `payload` bytes of elements, inside the allocation; they are
    // spare capacity, which the vector never reads, so writing bytes there
    // forms no `P` and breaks none of its invariants; the source is a
    // separate allocation.
    unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr(), v.as_mut_ptr().cast::<u8>().add(payload), tail.len()) };
    let in_place = InPlace { addr: v.as_ptr() as usize, len };
    // SAFETY: `v` is alive and unchanged since `in_place` was made from it.
    let bytes = unsafe { in_place.bytes() };
    rkyv::access::<Archived<Vec<P>>, BoxedError>(bytes).ok()?;
    Some(in_place)
}

/// A writer that keeps everything rkyv writes except the vector's elements,
/// which must be the first write, made from the vector's own buffer.
pub(crate) struct TailWriter {
    /// The elements' address and length in bytes.
    elements: (usize, usize),
    skipped: bool,
    tail: Vec<u8>,
}

/// rkyv wrote something else first (not a layout this module knows), or
/// more than an archive may hold.
#[derive(Debug)]
struct NotInPlace;

impl std::fmt::Display for NotInPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive does not start with the vector's elements")
    }
}

impl std::error::Error for NotInPlace {}

impl Positional for TailWriter {
    fn pos(&self) -> usize {
        if self.skipped { self.elements.1 + self.tail.len() } else { self.tail.len() }
    }
}

impl<E: Source> Writer<E> for TailWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if bytes.is_empty() {
            return Ok(());
        }
        // As `ArchiveWriter` does, refuse the write past the limit before
        // rkyv resolves a pointer it cannot hold (which would panic).
        if bytes.len() > MAX_ARCHIVE_LEN.saturating_sub(self.pos()) {
            return Err(E::new(NotInPlace));
        }
        if !self.skipped {
            if (bytes.as_ptr() as usize, bytes.len()) != self.elements || !self.tail.is_empty() {
                return Err(E::new(NotInPlace));
            }
            self.skipped = true;
            return Ok(());
        }
        self.tail.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<P: Copy + PartialEq + std::fmt::Debug + 'static>(mut v: Vec<P>) -> Vec<P>
    where
        Vec<P>: rkyv::Archive,
    {
        let expected = v.clone();
        let made = archive(&mut v).expect("archived in place");
        assert_eq!(v, expected, "the vector is unchanged");
        // SAFETY: `v` is alive and unchanged since.
        let bytes = unsafe { made.bytes() };
        assert_eq!(bytes.as_ptr() as usize, v.as_ptr() as usize, "the archive is the vector's buffer");
        assert!(bytes.len() > size_of_val(v.as_slice()) && bytes.len() <= size_of_val(v.as_slice()) + 16);
        v
    }

    #[test]
    fn vectors_of_primitives_are_archived_in_their_own_buffer_and_read_back() {
        check((0..(1u32 << 17)).map(|i| i as u8).collect::<Vec<u8>>());
        // Odd lengths need padding before the root.
        check(vec![7u8; IN_PLACE_MIN + 3]);
        let floats = check((0..20_000).map(|i| i as f64 * 0.5).collect::<Vec<f64>>());
        let mut again = floats.clone();
        let made = archive(&mut again).unwrap();
        // SAFETY: `again` is alive and unchanged since.
        let read = rkyv::access::<Archived<Vec<f64>>, BoxedError>(unsafe { made.bytes() }).unwrap();
        assert_eq!(read.iter().map(|x| x.to_native()).collect::<Vec<f64>>(), floats);
        check((0..20_000u64).collect::<Vec<u64>>());
    }

    #[test]
    fn spare_capacity_is_used_without_moving_the_vector() {
        let mut v = Vec::with_capacity(IN_PLACE_MIN + 64);
        v.resize(IN_PLACE_MIN, 3u8);
        let addr = v.as_ptr() as usize;
        let made = archive(&mut v).unwrap();
        assert_eq!(v.as_ptr() as usize, addr);
        // SAFETY: `v` is alive and unchanged since.
        let read = rkyv::access::<Archived<Vec<u8>>, BoxedError>(unsafe { made.bytes() }).unwrap();
        assert_eq!(read.as_ptr() as usize, addr, "the archived elements are the vector's");
        assert_eq!(read.len(), IN_PLACE_MIN);
    }

    #[test]
    fn small_vectors_and_other_types_are_left_to_an_ordinary_archive() {
        assert!(archive(&mut vec![1u8; IN_PLACE_MIN - 1]).is_none());
        assert!(archive(&mut vec![String::from("x"); 100_000]).is_none());
        assert!(archive(&mut 5u64).is_none());
    }
}
