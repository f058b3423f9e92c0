//! How task arguments and results are held in memory.
//!
//! In the threads mode a result is the task's own value behind an `Arc`
//! ([`Value<T>`]): dependents read it by reference and clone it only when a
//! parameter takes it by value. A consumer that asks for the *archived* form
//! (a parameter of type `&Archived<T>`, or each part of an [`Inputs<T>`])
//! reads an rkyv archive, validated once, that is never a second copy kept
//! beside the value:
//!
//! - a vector of primitives (`Vec<u8>`, `Vec<f64>`, … of at least
//!   [`IN_PLACE_MIN`] bytes) is archived *in its own buffer* when the task
//!   returns it ([`Object::archive_in_place`]: rkyv's root is written into
//!   the spare capacity after the elements): readers get the producer's
//!   bytes, with no copy;
//! - any other value is archived once, on its first archived read; the
//!   threads mode then stores the result by that archive alone
//!   ([`Object::archive_alone`], an [`ArchiveOf<T>`]) and the value is freed
//!   once its current readers are done; later by-value readers deserialize.
//!
//! The processes and cluster modes add objects that exist only as archives
//! in shared memory; they plug in as another [`Object`] implementation, so
//! the task glue below reads every kind the same way.
//!
//! # Zero-copy rule
//!
//! A parameter written `&Archived<T>` reads the producer's bytes in place in
//! every mode (in the threads mode, for a vector of primitives; any other
//! type is archived once there, at its first archived read). A parameter
//! written `T` gets its own `T`: a clone in the threads mode, a
//! deserialization where only an archive exists.
//!
//! # Size limit
//!
//! An archive is at most [`MAX_ARCHIVE_LEN`] bytes (2 GiB less 64 KiB): rkyv,
//! built with its default 32-bit relative pointers, cannot address more, and
//! *panics* when an offset does not fit. Every archive shoal makes goes
//! through an [`ArchiveWriter`], which refuses the write that would cross the
//! limit, so a larger value fails with [`ArchiveTooLarge`] — a clear error,
//! early (before its big bytes are copied), never a panic. In the threads
//! mode that fails only the consumers that ask for `&Archived<T>`; by-value
//! consumers never need the archive.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::primitive::FixedIsize;
use rkyv::rancor::{BoxedError, Source};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Archived, Deserialize, Serialize};

use crate::registry::InputError;

mod in_place;

pub use in_place::IN_PLACE_MIN;

/// What a task argument or result must be: an rkyv type (archivable,
/// validatable, deserializable) that can be cloned, shown with `Debug` (a
/// failing task's error shows its arguments) and shared across threads.
///
/// Implemented for every such type. On your own types write
/// `#[shoal::data]`, which derives all of it with the right paths. (Errors
/// of the bound use [`BoxedError`], which keeps its message in
/// release builds, unlike `rancor::Error`; serialization goes through an
/// [`ArchiveWriter`], which derived impls accept like any writer.)
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a shoal task argument or result",
    label = "not a shoal `Data` type",
    note = "put `#[shoal::data]` on your own types (it derives rkyv's `Archive, Serialize, Deserialize` \
            with the right crate path, plus `Clone` and `Debug`)",
    note = "std types work when rkyv supports them: use `String` rather than `PathBuf`/`&str`, \
            `Vec<T>` rather than slices"
)]
pub trait Data:
    Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<Self, HighDeserializer<BoxedError>>,
    > + for<'a> Serialize<HighSerializer<ArchiveWriter, ArenaHandle<'a>, BoxedError>>
    + Clone
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> Data for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>> + Deserialize<T, HighDeserializer<BoxedError>>,
        > + for<'a> Serialize<HighSerializer<ArchiveWriter, ArenaHandle<'a>, BoxedError>>
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The most bytes an rkyv relative pointer can span: `i32::MAX` with rkyv's
/// default 32-bit pointers (`FixedIsize`), far more with `pointer_width_64`.
const POINTER_SPAN: usize = FixedIsize::MAX as usize;

/// Room left under [`POINTER_SPAN`] for the one kind of write whose offsets
/// are computed before it is checked: an archived struct's own bytes. rkyv
/// resolves a struct's pointers at the position it is about to write it at,
/// then writes it; every earlier write was checked, so the struct starts at or
/// below the limit, and a pointer in its first 64 KiB still fits. (Only a
/// struct whose archived form has a pointer beyond its first 64 KiB, right at
/// the limit, could still hit rkyv's panic: in task code, the task then fails
/// as for any panic.)
const HEADROOM: usize = 64 << 10;

const _: () = assert!(POINTER_SPAN > 2 * HEADROOM);

/// The largest archive shoal makes, in bytes: 2 GiB less 64 KiB with rkyv's
/// 32-bit relative pointers (see the module docs).
pub const MAX_ARCHIVE_LEN: usize = POINTER_SPAN - HEADROOM;

/// The writer every archive is made with: an [`AlignedVec`] that refuses to
/// grow past [`MAX_ARCHIVE_LEN`], so that a value too large for rkyv's
/// relative pointers fails with [`ArchiveTooLarge`] instead of panicking in
/// rkyv, and before its bytes are copied (a `Vec<u8>` is written in one go).
///
/// Given an [`ArchiveSink`], the archive moves there once it reaches the
/// sink's threshold and is written in place from then on (see
/// [`Object::archive_or_sink`]).
pub struct ArchiveWriter {
    bytes: AlignedVec,
    limit: usize,
    sink: Option<Sinking>,
}

/// An archive that goes to a sink past a threshold.
struct Sinking {
    sink: Box<dyn ArchiveSink>,
    threshold: usize,
    /// Bytes written into the sink; `None` while they are still in `bytes`.
    written: Option<usize>,
}

impl ArchiveWriter {
    /// A writer that appends to `bytes` (which may hold a prefix: its length
    /// counts against the limit, as rkyv's positions do).
    pub fn new(bytes: AlignedVec) -> ArchiveWriter {
        ArchiveWriter::with_limit(bytes, MAX_ARCHIVE_LEN)
    }

    fn with_limit(bytes: AlignedVec, limit: usize) -> ArchiveWriter {
        ArchiveWriter { bytes, limit, sink: None }
    }

    /// The bytes written.
    pub fn into_inner(self) -> AlignedVec {
        self.bytes
    }
}

impl Positional for ArchiveWriter {
    fn pos(&self) -> usize {
        match &self.sink {
            Some(Sinking { written: Some(n), .. }) => *n,
            _ => self.bytes.len(),
        }
    }
}

impl<E: Source> Writer<E> for ArchiveWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let len = self.pos();
        if bytes.len() > self.limit.saturating_sub(len) {
            return Err(E::new(ArchiveTooLarge { at_least: len.saturating_add(bytes.len()), limit: self.limit }));
        }
        let end = len + bytes.len();
        match &mut self.sink {
            Some(s) if s.written.is_some() || end >= s.threshold => {
                let room = s.sink.reserve(end).map_err(|e| E::new(SinkError(e)))?;
                if s.written.is_none() {
                    // Outgrew the heap: what was written moves once, and
                    // the heap buffer goes.
                    room[..len].copy_from_slice(&self.bytes);
                    self.bytes = AlignedVec::new();
                }
                room[len..end].copy_from_slice(bytes);
                s.written = Some(end);
            }
            _ => self.bytes.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// Memory that an archive too large for a message is written into in
/// place, growing as it is written: a result's memory file in the
/// processes mode (`core` knows no file: only this).
pub trait ArchiveSink: Any + Send {
    /// At least `len` writable bytes from the start of the archive (the
    /// first bytes already written keep their contents; the slice may move
    /// between calls). It starts on a 16-byte boundary.
    fn reserve(&mut self, len: usize) -> Result<&mut [u8], String>;
    /// The first `len` bytes written (`len` at most the last reserve).
    fn written(&self, len: usize) -> &[u8];
    /// For taking the concrete sink back.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// Where [`Object::archive_or_sink`] put an archive.
pub enum ArchiveIn {
    /// Under the threshold: kept by the object, as
    /// [`Object::archived_bytes`] returns it.
    Kept,
    /// In the sink: its first `len` bytes.
    Sunk {
        /// The sink, holding the archive.
        sink: Box<dyn ArchiveSink>,
        /// The archive's length.
        len: usize,
    },
}

/// A sink that could not grow.
#[derive(Debug)]
struct SinkError(String);

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not write the archive into shared memory: {}", self.0)
    }
}

impl std::error::Error for SinkError {}

/// A value whose archive would exceed [`MAX_ARCHIVE_LEN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveTooLarge {
    /// Bytes the archive needs at least (serialization stops at the first
    /// write past the limit).
    pub at_least: usize,
    /// The limit it crossed.
    pub limit: usize,
}

impl fmt::Display for ArchiveTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = (POINTER_SPAN as u128 + 1) >> 30;
        let bits = FixedIsize::BITS;
        write!(
            f,
            "values over {gib} GiB cannot be archived: this one needs at least {} bytes, over the limit of {} bytes \
             set by rkyv's {bits}-bit relative pointers; split it into chunks under {gib} GiB \
             (one task result or argument each)",
            self.at_least, self.limit
        )
    }
}

impl std::error::Error for ArchiveTooLarge {}

/// A stored argument or result, of any kind.
pub trait Object: Any + Send + Sync {
    /// For downcasting to the concrete object type.
    fn as_any(&self) -> &dyn Any;
    /// The name of the value's type, for error messages.
    fn type_name(&self) -> &'static str;
    /// The archive of the value: 16-byte aligned bytes, already validated
    /// for the value's type.
    fn archived_bytes(&self) -> Result<&[u8], InputError>;
    /// A cheap estimate of the value's size in bytes (for placement and the
    /// memory limit): the archive's length if it exists, else the in-memory
    /// size of the top-level value.
    fn nbytes(&self) -> u64;
    /// The archive of the value, made where it will live: kept by the
    /// object (as [`archived_bytes`](Self::archived_bytes) returns it)
    /// while it is under `threshold` bytes, else written into `sink` — a
    /// value not archived yet is serialized straight into it, with no
    /// archive on the heap and no copy (a large result crossed memory
    /// three times otherwise: made, archived, copied into its segment).
    fn archive_or_sink(&self, threshold: usize, mut sink: Box<dyn ArchiveSink>) -> Result<ArchiveIn, InputError> {
        let bytes = self.archived_bytes()?;
        if bytes.len() < threshold {
            return Ok(ArchiveIn::Kept);
        }
        sink.reserve(bytes.len()).map_err(InputError)?[..bytes.len()].copy_from_slice(bytes);
        Ok(ArchiveIn::Sunk { sink, len: bytes.len() })
    }
    /// Make the archive inside the value's own memory, where its shape
    /// allows that without copying (a vector of primitives of at least
    /// [`IN_PLACE_MIN`] bytes: the archive is its elements followed by a
    /// few bytes written into its spare capacity); otherwise nothing. Called
    /// on a fresh result before anyone else holds it, so that an
    /// `&Archived<T>` reader in the threads mode reads the producer's
    /// bytes and no copy is kept beside them.
    fn archive_in_place(&mut self) {}
    /// The same object held by its archive alone, if a copy was made
    /// beside the value (a reader asked for `&Archived<T>` of a type that
    /// cannot be archived in place): the threads mode stores it instead, so
    /// the value is freed once its current readers are done and the result
    /// is held once. `None` for every other object.
    fn archive_alone(&self) -> Option<Obj> {
        None
    }
    /// Write the value for a failure's message (its `Debug`, where the type
    /// is known), stopping once `out` is full.
    fn describe(&self, out: &mut Bounded) -> fmt::Result {
        use fmt::Write;
        write!(out, "<{}, {} bytes>", self.type_name(), self.nbytes())
    }
}

/// A string that takes at most `limit` characters, then refuses (so a
/// `Debug` of a huge value stops early instead of rendering it all).
pub struct Bounded {
    text: String,
    limit: usize,
    cut: bool,
}

impl Bounded {
    /// An empty string that will hold at most `limit` characters.
    pub fn new(limit: usize) -> Bounded {
        Bounded { text: String::new(), limit, cut: false }
    }

    /// The text, ending with `…` if it was cut.
    pub fn finish(mut self) -> String {
        if self.cut {
            self.text.push('…');
        }
        self.text
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.text.chars().count());
        if s.chars().count() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        self.text.extend(s.chars().take(room));
        self.cut = true;
        Err(fmt::Error)
    }
}

/// A short rendering of a task's inputs for its failure message:
/// `("data/part-00007.txt", 3)`, each input cut at
/// [`MAX_ARGUMENT_CHARS`](crate::failure::MAX_ARGUMENT_CHARS) characters,
/// all of them at [`MAX_ARGUMENTS_CHARS`](crate::failure::MAX_ARGUMENTS_CHARS).
pub fn describe<'a>(inputs: impl IntoIterator<Item = &'a dyn Object>) -> String {
    use crate::failure::{MAX_ARGUMENT_CHARS, MAX_ARGUMENTS_CHARS};
    let mut all = Bounded::new(MAX_ARGUMENTS_CHARS);
    let mut parts = Vec::new();
    for input in inputs {
        let mut one = Bounded::new(MAX_ARGUMENT_CHARS);
        // An `Err` only says the bound was reached; the text is kept.
        let _ = input.describe(&mut one);
        parts.push(one.finish());
    }
    let _ = fmt::Write::write_fmt(&mut all, format_args!("({})", parts.join(", ")));
    all.finish()
}

/// A shared handle to a stored object.
pub type Obj = Arc<dyn Object>;

/// A value held as itself, with its archive made on first need (or at
/// once, inside the value's own buffer, by [`Object::archive_in_place`]).
pub struct Value<T> {
    value: T,
    archive: OnceLock<Box<Result<Kept, String>>>,
}

/// Where a [`Value`]'s archive is.
enum Kept {
    /// Beside the value: a copy, shared with the [`ArchiveOf`] that
    /// replaces the value in the threads mode's store
    /// ([`Object::archive_alone`]).
    Beside(Arc<AlignedVec>),
    /// Inside the value's own buffer (a vector of primitives, see
    /// `in_place`): no copy, nothing beside.
    InPlace(in_place::InPlace),
}

impl<T: Data> Value<T> {
    /// Hold a value (its archive is made when first needed).
    pub fn new(value: T) -> Value<T> {
        Value { value, archive: OnceLock::new() }
    }

    /// Wrap a value as a shared object.
    pub fn shared(value: T) -> Obj {
        Arc::new(Value::new(value))
    }

    /// The value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// The archived form, made (and validated) on the first call.
    pub fn archived(&self) -> Result<&Archived<T>, InputError> {
        let bytes = self.archive_bytes()?;
        // SAFETY: `archive_bytes` only returns bytes that `rkyv::access`
        // validated as `Archived<T>` when they were made (in `make_archive`),
        // and they are never modified afterwards (the buffer is owned by the
        // `OnceLock` and only shared immutably), so the bytes are still a
        // valid `Archived<T>` at their root position.
        Ok(unsafe { rkyv::access_unchecked::<Archived<T>>(bytes) })
    }

    fn archive_bytes(&self) -> Result<&[u8], InputError> {
        match &**self.archive.get_or_init(|| Box::new(make_archive(&self.value).map(|b| Kept::Beside(Arc::new(b))))) {
            Ok(kept) => Ok(self.kept_bytes(kept)),
            Err(message) => Err(InputError(format!("could not archive a {}: {message}", std::any::type_name::<T>()))),
        }
    }

    fn kept_bytes<'a>(&'a self, kept: &'a Kept) -> &'a [u8] {
        match kept {
            Kept::Beside(bytes) => bytes.as_slice(),
            // SAFETY: an `InPlace` is only stored by `archive_in_place`, made
            // from `self.value` after its last change; `Value` never changes
            // its value afterwards (`archive_in_place`, its only `&mut`
            // method, returns at once once an archive is stored), and the
            // value lives as long as `&'a self`.
            Kept::InPlace(in_place) => unsafe { in_place.bytes() },
        }
    }

    /// Whether the archive, if made, is the value's own buffer (no copy).
    pub fn archived_in_place(&self) -> bool {
        matches!(self.archive.get().map(|b| &**b), Some(Ok(Kept::InPlace(_))))
    }
}

/// Serialize and validate once: the validated bytes can then be read with
/// `access_unchecked` for as long as they live. A value over
/// [`MAX_ARCHIVE_LEN`] fails early with [`ArchiveTooLarge`]'s message.
fn make_archive<T: Data>(value: &T) -> Result<AlignedVec, String> {
    make_archive_in(value, ArchiveWriter::new(AlignedVec::new()))
}

fn make_archive_in<T: Data>(value: &T, writer: ArchiveWriter) -> Result<AlignedVec, String> {
    let bytes = rkyv::api::high::to_bytes_in::<_, BoxedError>(value, writer).map_err(|e| e.to_string())?;
    let bytes = bytes.into_inner();
    rkyv::access::<Archived<T>, BoxedError>(&bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

impl<T: Data> Object for Value<T> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn archived_bytes(&self) -> Result<&[u8], InputError> {
        self.archive_bytes()
    }

    fn nbytes(&self) -> u64 {
        match self.archive.get().map(|b| &**b) {
            Some(Ok(Kept::Beside(bytes))) => bytes.len() as u64,
            Some(Ok(Kept::InPlace(in_place))) => in_place.len() as u64,
            _ => size_of::<T>() as u64,
        }
    }

    fn archive_alone(&self) -> Option<Obj> {
        match self.archive.get().map(|b| &**b) {
            Some(Ok(Kept::Beside(bytes))) => {
                Some(Arc::new(ArchiveOf::<T> { bytes: Arc::clone(bytes), of: std::marker::PhantomData }))
            }
            _ => None,
        }
    }

    fn archive_in_place(&mut self) {
        if self.archive.get().is_none()
            && let Some(made) = in_place::archive(&mut self.value)
        {
            // Set once, here, after the value's last change (see `kept_bytes`).
            let _ = self.archive.set(Box::new(Ok(Kept::InPlace(made))));
        }
    }

    fn archive_or_sink(&self, threshold: usize, sink: Box<dyn ArchiveSink>) -> Result<ArchiveIn, InputError> {
        if self.archive.get().is_some() {
            // Archived already (a reader asked): that archive is copied.
            let bytes = self.archive_bytes()?;
            let mut sink = sink;
            if bytes.len() < threshold {
                return Ok(ArchiveIn::Kept);
            }
            sink.reserve(bytes.len()).map_err(InputError)?[..bytes.len()].copy_from_slice(bytes);
            return Ok(ArchiveIn::Sunk { sink, len: bytes.len() });
        }
        let failed =
            |message: String| InputError(format!("could not archive a {}: {message}", std::any::type_name::<T>()));
        let mut writer = ArchiveWriter::new(AlignedVec::new());
        writer.sink = Some(Sinking { sink, threshold, written: None });
        let writer =
            rkyv::api::high::to_bytes_in::<_, BoxedError>(&self.value, writer).map_err(|e| failed(e.to_string()))?;
        match writer.sink {
            Some(Sinking { sink, written: Some(len), .. }) => {
                rkyv::access::<Archived<T>, BoxedError>(sink.written(len)).map_err(|e| failed(e.to_string()))?;
                Ok(ArchiveIn::Sunk { sink, len })
            }
            _ => {
                // Small: the object keeps it, as if a reader had asked.
                let bytes = writer.bytes;
                let checked = rkyv::access::<Archived<T>, BoxedError>(&bytes).map(|_| ()).map_err(|e| e.to_string());
                let kept = self.archive.get_or_init(|| Box::new(checked.map(|()| Kept::Beside(Arc::new(bytes)))));
                match &**kept {
                    Ok(_) => Ok(ArchiveIn::Kept),
                    Err(message) => Err(failed(message.clone())),
                }
            }
        }
    }

    fn describe(&self, out: &mut Bounded) -> fmt::Result {
        fmt::Write::write_fmt(out, format_args!("{:?}", self.value))
    }
}

impl<T: fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

fn mismatch<T>(found: &dyn Object) -> InputError {
    InputError(format!(
        "expected a {}, found a {} (the same binary must run everywhere)",
        std::any::type_name::<T>(),
        found.type_name()
    ))
}

/// Read an object as an owned `T`: a clone of a [`Value<T>`], or a
/// deserialization of any other object's archive (validated first, unless
/// this process validated it when it made it).
pub fn read_owned<T: Data>(obj: &dyn Object) -> Result<T, InputError> {
    if let Some(v) = obj.as_any().downcast_ref::<Value<T>>() {
        return Ok(v.value.clone());
    }
    let archived = match obj.as_any().downcast_ref::<ArchiveOf<T>>() {
        Some(alone) => alone.archived(),
        None => read_foreign_archive::<T>(obj)?,
    };
    rkyv::deserialize::<T, BoxedError>(archived)
        .map_err(|e| InputError(format!("could not deserialize a {}: {e}", std::any::type_name::<T>())))
}

/// Read an object as `&Archived<T>` in place.
pub fn read_archived<T: Data>(obj: &dyn Object) -> Result<&Archived<T>, InputError> {
    if let Some(v) = obj.as_any().downcast_ref::<Value<T>>() {
        return v.archived();
    }
    if let Some(alone) = obj.as_any().downcast_ref::<ArchiveOf<T>>() {
        return Ok(alone.archived());
    }
    read_foreign_archive::<T>(obj)
}

/// A result of this process held by its archive alone: what a [`Value<T>`]
/// becomes in the threads mode once a reader had it archived beside the
/// value ([`Object::archive_alone`]). Its bytes were validated when they
/// were made; a by-value reader deserializes them.
pub struct ArchiveOf<T> {
    bytes: Arc<AlignedVec>,
    of: std::marker::PhantomData<fn() -> T>,
}

impl<T: Data> ArchiveOf<T> {
    fn archived(&self) -> &Archived<T> {
        // SAFETY: the bytes were validated as `Archived<T>` by
        // `make_archive` before the `Value<T>` stored them (the only way an
        // `ArchiveOf<T>` is made is `Value::<T>::archive_alone`, from those
        // bytes), and they are never modified (shared immutably by `Arc`).
        unsafe { rkyv::access_unchecked::<Archived<T>>(self.bytes.as_slice()) }
    }
}

impl<T: Data> Object for ArchiveOf<T> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn archived_bytes(&self) -> Result<&[u8], InputError> {
        Ok(self.bytes.as_slice())
    }

    fn nbytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The archive of an object that is not a `Value<T>` of this process (an
/// inline message or a shared-memory segment from another process): its
/// bytes are validated as `Archived<T>` before use.
fn read_foreign_archive<T: Data>(obj: &dyn Object) -> Result<&Archived<T>, InputError> {
    if obj.type_name() != ARCHIVE_TYPE_NAME {
        return Err(mismatch::<T>(obj));
    }
    let bytes = obj.archived_bytes()?;
    rkyv::access::<Archived<T>, BoxedError>(bytes)
        .map_err(|e| InputError(format!("invalid archive of a {}: {e}", std::any::type_name::<T>())))
}

/// The [`Object::type_name`] of objects that hold only an archive of an
/// unknown type (they are validated on every typed read).
pub const ARCHIVE_TYPE_NAME: &str = "archive";

/// An object that exists only as archived bytes of an unknown type
/// (received from another process); validated on every typed read.
pub struct RawArchive {
    bytes: AlignedVec,
}

impl RawArchive {
    /// Hold archived bytes (validated on every typed read).
    pub fn new(bytes: AlignedVec) -> RawArchive {
        RawArchive { bytes }
    }
}

impl Object for RawArchive {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        ARCHIVE_TYPE_NAME
    }

    fn archived_bytes(&self) -> Result<&[u8], InputError> {
        Ok(self.bytes.as_slice())
    }

    fn nbytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// One input of a task run, one per parameter: an object, or the objects
/// of a list argument (a `Vec<Future<T>>` or `Vec<Lazy<T>>` for a `Vec<T>`
/// parameter), which the task's glue assembles where the task runs — no
/// function pointer crosses the driver, so a process without user code can
/// drive any graph.
#[derive(Clone)]
pub enum Input {
    /// The parameter's value.
    One(Obj),
    /// The items of a `Vec` parameter, in order.
    List(Vec<Obj>),
}

impl Input {
    /// Every object this input names.
    pub fn objects(&self) -> &[Obj] {
        match self {
            Input::One(obj) => std::slice::from_ref(obj),
            Input::List(items) => items,
        }
    }
}

/// Several inputs of one type, each read in place: a task's zero-copy
/// fan-in. A parameter `parts: Inputs<T>` takes a list argument — a
/// `Vec<Future<T>>` or `Vec<Lazy<T>>` (or one `Vec<T>`) — and hands out
/// `&Archived<T>` of each item, in order, without assembling or copying
/// them: in the processes and cluster modes each points into its
/// producer's shared memory; in the threads mode, a vector of primitives
/// is its producer's own buffer, and any other item is archived once, on
/// first need, as for any `&Archived<T>` parameter.)
pub struct Inputs<'a, T: Archive> {
    items: Vec<&'a Archived<T>>,
}

impl<'a, T: Archive> Inputs<'a, T> {
    /// How many inputs.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `i`-th input, if there is one.
    pub fn get(&self, i: usize) -> Option<&'a Archived<T>> {
        self.items.get(i).copied()
    }

    /// The inputs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a Archived<T>> + '_ {
        self.items.iter().copied()
    }
}

impl<'a, T: Archive> IntoIterator for Inputs<'a, T> {
    type Item = &'a Archived<T>;
    type IntoIter = std::vec::IntoIter<&'a Archived<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, T: Archive> std::ops::Index<usize> for Inputs<'a, T> {
    type Output = Archived<T>;

    fn index(&self, i: usize) -> &Archived<T> {
        self.items[i]
    }
}

impl<T: Archive> fmt::Debug for Inputs<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Inputs({} items)", self.items.len())
    }
}

/// A task's result that is one of its own inputs, passed on as it is (Dask's
/// graph alias): a task declared `-> Alias<T>` (or `-> Result<Alias<T>, E>`)
/// has output `T` and returns `Alias::input(i)` to make its `i`-th argument
/// (counted from 0, which must be one result or value of type `T`, not a
/// list) its result.
///
/// In the threads mode the result *is* the input's object: nothing is
/// copied, whatever its size. In the processes and cluster modes the
/// worker writes the input's archive into the result's own segment: one
/// copy (a segment shared by two results is not done yet).
pub struct Alias<T> {
    input: usize,
    of: std::marker::PhantomData<fn() -> T>,
}

impl<T> Alias<T> {
    /// The task's `index`-th argument (from 0) as its result.
    pub fn input(index: usize) -> Alias<T> {
        Alias { input: index, of: std::marker::PhantomData }
    }

    /// Which argument.
    pub fn index(&self) -> usize {
        self.input
    }
}

impl<T> fmt::Debug for Alias<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Alias::input({})", self.input)
    }
}

/// Glue used by `#[shoal::task]` to read the `i`-th input for a parameter.
///
/// A parameter of type `Vec<A>` may receive a list input, assembled here;
/// any other type receives one object. Which read applies is decided at
/// compile time by method resolution on a [`Param`](glue::Param) (the "autoref
/// specialization" pattern): [`ReadList`](glue::ReadList) is implemented for `Param<Vec<A>>`
/// and found first; [`ReadOne`](glue::ReadOne) is implemented for `&Param<T>`, one
/// auto-reference further, for every other `T`. Type aliases of `Vec` work,
/// since the compiler sees through them.
pub mod glue {
    use std::marker::PhantomData;

    use super::*;

    fn input(inputs: &[Input], i: usize) -> Result<&Input, InputError> {
        inputs.get(i).ok_or_else(|| InputError(format!("argument {i} is missing")))
    }

    /// The type of one parameter, for choosing its read.
    pub struct Param<T>(PhantomData<fn() -> T>);

    impl<T> Param<T> {
        /// The read for a parameter of type `T`.
        pub const fn new() -> Param<T> {
            Param(PhantomData)
        }
    }

    impl<T> Default for Param<T> {
        fn default() -> Self {
            Param::new()
        }
    }

    /// An object to read an archived parameter from: an input's own, or a
    /// list assembled for it.
    pub enum Held<'a> {
        /// The input's object, read in place.
        Borrowed(&'a dyn Object),
        /// A `Vec` assembled from a list input.
        Assembled(Obj),
    }

    impl Held<'_> {
        /// The object.
        pub fn object(&self) -> &dyn Object {
            match self {
                Held::Borrowed(obj) => *obj,
                Held::Assembled(obj) => &**obj,
            }
        }
    }

    /// Reads of a `Vec<A>` parameter: one object, or a list of `A`s.
    pub trait ReadList {
        /// The parameter's type.
        type Out;
        /// An owned value.
        fn owned(&self, inputs: &[Input], i: usize) -> Result<Self::Out, InputError>;
        /// The object to read the archived form from.
        fn held<'a>(&self, inputs: &'a [Input], i: usize) -> Result<Held<'a>, InputError>;
    }

    impl<A: Data> ReadList for Param<Vec<A>> {
        type Out = Vec<A>;

        fn owned(&self, inputs: &[Input], i: usize) -> Result<Vec<A>, InputError> {
            match input(inputs, i)? {
                Input::One(obj) => read_owned::<Vec<A>>(&**obj),
                Input::List(items) => items.iter().map(|obj| read_owned::<A>(&**obj)).collect(),
            }
        }

        fn held<'a>(&self, inputs: &'a [Input], i: usize) -> Result<Held<'a>, InputError> {
            match input(inputs, i)? {
                Input::One(obj) => Ok(Held::Borrowed(&**obj)),
                // An archived view of a list needs one archive: the items
                // are assembled, then archived once on first read.
                Input::List(_) => Ok(Held::Assembled(Value::shared(self.owned(inputs, i)?))),
            }
        }
    }

    /// Reads of any other parameter: exactly one object. (The `Data` bound
    /// is on the methods, not the impl, so that a parameter type that is not
    /// `Data` gets the bound's own diagnostic, which names the fix.)
    pub trait ReadOne<T> {
        /// An owned value.
        fn owned(&self, inputs: &[Input], i: usize) -> Result<T, InputError>
        where
            T: Data;
        /// The object to read the archived form from.
        fn held<'a>(&self, inputs: &'a [Input], i: usize) -> Result<Held<'a>, InputError>;
    }

    impl<T> ReadOne<T> for &Param<T> {
        fn owned(&self, inputs: &[Input], i: usize) -> Result<T, InputError>
        where
            T: Data,
        {
            read_owned::<T>(one(inputs, i)?)
        }

        fn held<'a>(&self, inputs: &'a [Input], i: usize) -> Result<Held<'a>, InputError> {
            one(inputs, i).map(Held::Borrowed)
        }
    }

    fn one(inputs: &[Input], i: usize) -> Result<&dyn Object, InputError> {
        match input(inputs, i)? {
            Input::One(obj) => Ok(&**obj),
            Input::List(items) => Err(InputError(format!(
                "argument {i} is a list of {} results, but its parameter is not a Vec",
                items.len()
            ))),
        }
    }

    /// An [`Inputs<T>`](super::Inputs) parameter: every item of a list
    /// input (or of one `Vec<T>` input) read in place.
    pub fn inputs<T: Data>(inputs: &[Input], i: usize) -> Result<super::Inputs<'_, T>, InputError> {
        let items = match input(inputs, i)? {
            Input::List(items) => items.iter().map(|obj| read_archived::<T>(&**obj)).collect::<Result<_, _>>()?,
            Input::One(obj) => read_archived::<Vec<T>>(&**obj)?.iter().collect(),
        };
        Ok(super::Inputs { items })
    }

    /// The result of a task that returned [`Alias::input(i)`](super::Alias):
    /// the `i`-th input's own object, if parameter `i` was declared a `T`
    /// (`declared`: each parameter's type, `None` for a fan-in). The task's
    /// reads checked every input against its parameter's type before the
    /// task ran (a value by its type, an archive by validation), so the
    /// object holds a `T`: a check of the object itself could not tell
    /// archives of some types apart anyway (8 bytes validate as a `u64`).
    pub fn alias<T: Data>(
        alias: super::Alias<T>,
        inputs: &[Input],
        declared: &[Option<(std::any::TypeId, &'static str)>],
    ) -> Result<Obj, InputError> {
        let i = alias.index();
        match declared.get(i) {
            Some(Some((ty, _))) if *ty == std::any::TypeId::of::<T>() => {}
            Some(Some((_, name))) => {
                return Err(InputError(format!(
                    "the task returned its argument {i} as its result, a {name}, but its result is a {}",
                    std::any::type_name::<T>()
                )));
            }
            Some(None) => {
                return Err(InputError(format!(
                    "the task returned its argument {i} as its result, but that parameter is a fan-in \
                     (`Inputs<T>`), not one result"
                )));
            }
            None => {
                return Err(InputError(format!(
                    "the task returned its argument {i} as its result, but it has {} arguments",
                    declared.len()
                )));
            }
        }
        match inputs.get(i) {
            Some(Input::One(obj)) => Ok(Arc::clone(obj)),
            Some(Input::List(items)) => Err(InputError(format!(
                "the task returned its argument {i} as its result, but that argument is a list of {} results",
                items.len()
            ))),
            None => Err(InputError(format!(
                "the task returned its argument {i} as its result, but it has {} arguments",
                inputs.len()
            ))),
        }
    }

    /// A `&Archived<T>` parameter, from what [`ReadList::held`] or
    /// [`ReadOne::held`] gave.
    pub fn archived<'a, T: Data>(held: &'a Held<'_>) -> Result<&'a Archived<T>, InputError> {
        read_archived::<T>(held.object())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with_limit<T: Data>(value: &T, limit: usize) -> Result<AlignedVec, String> {
        make_archive_in(value, ArchiveWriter::with_limit(AlignedVec::new(), limit))
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the borrow is what picks the read
    fn a_vec_parameter_reads_one_object_or_a_list_and_others_refuse_a_list() {
        use glue::{Param, ReadList, ReadOne};
        let list = [Input::List(vec![Value::shared(1u64), Value::shared(2u64)])];
        let one = [Input::One(Value::shared(vec![3u64, 4]))];
        assert_eq!((&Param::<Vec<u64>>::new()).owned(&list, 0).unwrap(), vec![1, 2]);
        assert_eq!((&Param::<Vec<u64>>::new()).owned(&one, 0).unwrap(), vec![3, 4]);
        let held = (&Param::<Vec<u64>>::new()).held(&list, 0).unwrap();
        assert_eq!(glue::archived::<Vec<u64>>(&held).unwrap().iter().map(|x| x.to_native()).sum::<u64>(), 3);
        let err = (&Param::<u64>::new()).owned(&list, 0).unwrap_err();
        assert!(err.0.contains("not a Vec"), "{err}");
        assert!((&Param::<u64>::new()).owned(&list, 1).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn an_archive_may_fill_the_limit_exactly_and_not_one_byte_more() {
        // An `ArchivedVec<u8>` is the bytes, padded to 4, then an 8-byte
        // header (a 32-bit relative pointer and a 32-bit length).
        let fits = archive_with_limit(&vec![7u8; 992], 1000).unwrap();
        assert_eq!(fits.len(), 1000);
        let err = archive_with_limit(&vec![7u8; 993], 1000).unwrap_err();
        assert!(err.contains("cannot be archived") && err.contains("at least 1004 bytes"), "{err}");
    }

    #[test]
    fn the_write_that_would_cross_the_limit_is_refused_before_it_is_copied() {
        let mut writer = ArchiveWriter::with_limit(AlignedVec::new(), 100);
        Writer::<BoxedError>::write(&mut writer, &[1; 60]).unwrap();
        let err = Writer::<BoxedError>::write(&mut writer, &[2; 1 << 20]).unwrap_err();
        assert!(err.to_string().contains(&format!("at least {} bytes", 60 + (1 << 20))), "{err}");
        assert_eq!(writer.pos(), 60, "nothing of the refused write was copied");
        // A prefix already in the buffer counts, as it does in rkyv's positions.
        let mut prefixed = AlignedVec::new();
        prefixed.extend_from_slice(&[0; 90]);
        assert!(Writer::<BoxedError>::write(&mut ArchiveWriter::with_limit(prefixed, 100), &[1; 11]).is_err());
    }

    #[test]
    fn nested_values_near_the_limit_fail_cleanly_or_round_trip() {
        // Every length around the limit, for a value with pointers at two
        // levels (strings over 8 bytes are out of line): an error or a valid
        // archive, never a panic.
        let (mut fit, mut refused) = (0, 0);
        for n in 0..40u8 {
            let value: Vec<String> = (0..n).map(|i| "x".repeat(usize::from(i % 5) * 4)).collect();
            match archive_with_limit(&value, 400) {
                Ok(bytes) => {
                    assert!(bytes.len() <= 400);
                    assert_eq!(rkyv::from_bytes::<Vec<String>, BoxedError>(&bytes).unwrap(), value);
                    fit += 1;
                }
                Err(e) => {
                    assert!(e.contains("cannot be archived"), "{e}");
                    refused += 1;
                }
            }
        }
        assert!(fit > 5 && refused > 5, "both sides of the limit: {fit} fit, {refused} refused");
    }

    #[test]
    fn the_real_limit_is_2_gib_less_the_headroom_and_the_error_says_what_to_do() {
        assert_eq!(MAX_ARCHIVE_LEN, i32::MAX as usize - (64 << 10));
        let message = ArchiveTooLarge { at_least: 3 << 30, limit: MAX_ARCHIVE_LEN }.to_string();
        for needle in ["over 2 GiB cannot be archived", "32-bit relative pointers", "split it into chunks under 2 GiB"]
        {
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn a_vector_archived_in_place_is_read_from_its_own_buffer_by_value_and_archived() {
        let mut value = Value::new(vec![5u8; IN_PLACE_MIN * 2]);
        Object::archive_in_place(&mut value);
        assert!(value.archived_in_place());
        let archived = read_archived::<Vec<u8>>(&value).unwrap();
        assert_eq!(archived.as_ptr(), value.get().as_ptr(), "the archived elements are the value's");
        assert_eq!(archived.len(), IN_PLACE_MIN * 2);
        assert_eq!(read_owned::<Vec<u8>>(&value).unwrap(), vec![5u8; IN_PLACE_MIN * 2]);
        assert_eq!(value.nbytes(), IN_PLACE_MIN as u64 * 2 + 8, "the elements and the root");
        // Other shapes keep the ordinary archive, made on first read.
        let mut strings = Value::new(vec![String::from("x"); 10]);
        Object::archive_in_place(&mut strings);
        assert!(!strings.archived_in_place());
        assert_eq!(read_archived::<Vec<String>>(&strings).unwrap().len(), 10);
    }

    #[test]
    fn a_value_too_large_to_archive_fails_its_archived_readers_every_time() {
        // The error is kept: a second reader does not serialize again.
        let value = Value::new(vec![1u8; 100]);
        assert!(
            value
                .archive
                .set(Box::new(archive_with_limit(&value.value, 50).map(|b| Kept::Beside(Arc::new(b)))))
                .is_ok()
        );
        for _ in 0..2 {
            let err = read_archived::<Vec<u8>>(&value).unwrap_err();
            assert!(err.0.contains("could not archive") && err.0.contains("cannot be archived"), "{err}");
        }
        assert_eq!(read_owned::<Vec<u8>>(&value).unwrap(), vec![1u8; 100], "by value needs no archive");
    }
}
