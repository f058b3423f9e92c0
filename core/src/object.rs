//! How task arguments and results are held in memory.
//!
//! In the threads mode a result is the task's own value behind an `Arc`
//! ([`Value<T>`]): dependents read it by reference and clone it only when a
//! parameter takes it by value. A consumer that asks for the *archived* form
//! (a parameter of type `&Archived<T>`) gets it from an rkyv archive made
//! once, on first need, validated once, and kept beside the value.
//!
//! The processes and cluster modes add objects that exist only as archives
//! in shared memory; they plug in as another [`Object`] implementation, so
//! the task glue below reads every kind the same way.
//!
//! # Zero-copy rule
//!
//! A parameter written `&Archived<T>` reads the producer's bytes in place in
//! every mode. A parameter written `T` gets its own `T`: a clone in the
//! threads mode, a deserialization where only an archive exists.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Archived, Deserialize, Serialize};

use crate::registry::InputError;

/// What a task argument or result must be: an rkyv type (archivable,
/// validatable, deserializable) that can be cloned and shared across threads.
///
/// Implemented for every such type; derive `Archive, Serialize, Deserialize`
/// (and `Clone`) on your own types.
pub trait Data:
    Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Data for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

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
}

/// A shared handle to a stored object.
pub type Obj = Arc<dyn Object>;

/// A value held as itself, with its archive made on first need.
pub struct Value<T> {
    value: T,
    archive: OnceLock<Box<Result<AlignedVec, String>>>,
}

impl<T: Data> Value<T> {
    pub fn new(value: T) -> Value<T> {
        Value { value, archive: OnceLock::new() }
    }

    /// Wrap a value as a shared object.
    pub fn shared(value: T) -> Obj {
        Arc::new(Value::new(value))
    }

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
        match &**self.archive.get_or_init(|| Box::new(make_archive(&self.value))) {
            Ok(bytes) => Ok(bytes.as_slice()),
            Err(message) => Err(InputError(format!("could not archive a {}: {message}", std::any::type_name::<T>()))),
        }
    }
}

/// Serialize and validate once: the validated bytes can then be read with
/// `access_unchecked` for as long as they live.
fn make_archive<T: Data>(value: &T) -> Result<AlignedVec, String> {
    let bytes = rkyv::to_bytes::<rancor::Error>(value).map_err(|e| e.to_string())?;
    rkyv::access::<Archived<T>, rancor::Error>(&bytes).map_err(|e| e.to_string())?;
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
            Some(Ok(bytes)) => bytes.len() as u64,
            _ => size_of::<T>() as u64,
        }
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
/// deserialization of any other object's archive (validated first).
pub fn read_owned<T: Data>(obj: &dyn Object) -> Result<T, InputError> {
    if let Some(v) = obj.as_any().downcast_ref::<Value<T>>() {
        return Ok(v.value.clone());
    }
    let archived = read_foreign_archive::<T>(obj)?;
    rkyv::deserialize::<T, rancor::Error>(archived)
        .map_err(|e| InputError(format!("could not deserialize a {}: {e}", std::any::type_name::<T>())))
}

/// Read an object as `&Archived<T>` in place.
pub fn read_archived<T: Data>(obj: &dyn Object) -> Result<&Archived<T>, InputError> {
    if let Some(v) = obj.as_any().downcast_ref::<Value<T>>() {
        return v.archived();
    }
    read_foreign_archive::<T>(obj)
}

/// The archive of an object that is not a `Value<T>` of this process (an
/// inline message or a shared-memory segment from another process): its
/// bytes are validated as `Archived<T>` before use.
fn read_foreign_archive<T: Data>(obj: &dyn Object) -> Result<&Archived<T>, InputError> {
    if obj.type_name() != ARCHIVE_TYPE_NAME {
        return Err(mismatch::<T>(obj));
    }
    let bytes = obj.archived_bytes()?;
    rkyv::access::<Archived<T>, rancor::Error>(bytes)
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

/// Glue used by `#[shoal::task]` to read the `i`-th input for a parameter.
pub mod glue {
    use super::*;

    fn input(inputs: &[Obj], i: usize) -> Result<&dyn Object, InputError> {
        inputs.get(i).map(|obj| &**obj).ok_or_else(|| InputError(format!("argument {i} is missing")))
    }

    /// A by-value parameter `T`.
    pub fn owned<T: Data>(inputs: &[Obj], i: usize) -> Result<T, InputError> {
        read_owned::<T>(input(inputs, i)?)
    }

    /// A `&Archived<T>` parameter.
    pub fn archived<T: Data>(inputs: &[Obj], i: usize) -> Result<&Archived<T>, InputError> {
        read_archived::<T>(input(inputs, i)?)
    }
}

/// Make one `Vec<T>` object out of objects each holding a `T`: how a
/// `Vec<Future<T>>` or `Vec<Lazy<T>>` argument feeds a `Vec<T>` parameter.
pub fn assemble_list<T: Data>(items: &[Obj]) -> Result<Obj, InputError> {
    let list = items.iter().map(|obj| read_owned::<T>(&**obj)).collect::<Result<Vec<T>, InputError>>()?;
    Ok(Value::shared(list))
}

/// The type-erased form of [`assemble_list`].
pub type Assemble = fn(&[Obj]) -> Result<Obj, InputError>;
