//! Task arguments: what `submit`, `map` and `lazy` accept for each
//! parameter, and the token that names a pure call.
//!
//! A parameter of type `A` (or `&Archived<A>`) accepts
//!
//! | argument | meaning |
//! |---|---|
//! | `A` | a value, shared with the task |
//! | `&A` | a copy of the value (`&str` too, for a `String` parameter; `&[T]` for a `Vec<T>`) |
//! | `Future<A>`, `&Future<A>` | the result of a submitted task (a dependency) |
//! | `Lazy<A>`, `&Lazy<A>` | the result of a lazy node (computed with the graph) |
//!
//! and a parameter of type `Vec<A>` also accepts `Vec<Future<A>>`,
//! `&[Future<A>]`, `Vec<Lazy<A>>` or `&[Lazy<A>]`: the task receives the
//! list of their results, as `dask.delayed` does for a list of delayed values.
//!
//! A task with one parameter takes its argument as is; a task with several
//! takes a tuple, `(a, b)`; a task with none takes `()` (or use
//! `Client::submit_no_args`). `map` takes any iterator of arguments, so
//! `map(task, &files)` (items `&String`) works like `map(task, files)`.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rkyv::rancor;
use rkyv::util::AlignedVec;
use shoal_core::Key;
use shoal_core::object::{ArchiveWriter, Data, Obj, Value};
use shoal_core::registry::TaskEntry;
use shoal_core::scheduler::TaskId;
use xxhash_rust::xxh3::xxh3_128;

use crate::future::{Future, FutureRef};
use crate::lazy::{Lazy, LazyNode};

/// The parameter list of a one-parameter task (tasks with several use a
/// tuple of their parameter types).
pub struct One<A>(PhantomData<A>);

/// An argument, once converted.
#[doc(hidden)]
pub enum Arg {
    Value(Obj),
    Dep(DepArg),
    /// Several dependencies feeding one `Vec` parameter.
    List(Vec<DepArg>),
}

/// An argument that is the result of another task.
#[doc(hidden)]
pub enum DepArg {
    Future(FutureRef),
    Lazy(Arc<LazyNode>),
}

/// Hashes the arguments of a pure call into its key's token.
///
/// The bytes to hash (the task's name, each value's rkyv archive, each
/// dependency's id) are appended to one buffer, reused across calls on this
/// thread, and hashed at once with XXH3-128: cheaper than a streaming hasher
/// for the small arguments most calls have.
#[doc(hidden)]
pub struct Tokenizer {
    /// `None` for an impure call.
    buffer: Option<AlignedVec>,
}

thread_local! {
    static BUFFER: RefCell<Option<AlignedVec>> = const { RefCell::new(None) };
}

impl Tokenizer {
    pub(crate) fn new(pure: bool, entry: &TaskEntry) -> Tokenizer {
        let buffer = pure.then(|| {
            let mut buf = BUFFER.with(|cell| cell.borrow_mut().take()).unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(entry.name().as_bytes());
            buf
        });
        Tokenizer { buffer }
    }

    fn update(&mut self, bytes: &[u8]) {
        if let Some(buf) = &mut self.buffer {
            buf.extend_from_slice(bytes);
        }
    }

    /// A dependency is named by its task id: unique among live tasks, and a
    /// task is kept alive by every task that depends on it, so two live
    /// calls can only share an id-derived key if they share the dependency.
    fn task(&mut self, id: TaskId) {
        self.update(&id.index.to_le_bytes());
        self.update(&id.generation.to_le_bytes());
    }

    fn key(&mut self, key: &Key) {
        self.update(&key.func.to_le_bytes());
        self.update(&key.token[0].to_le_bytes());
        self.update(&key.token[1].to_le_bytes());
    }

    fn value<A: Data>(&mut self, value: &A) {
        let Some(mut buf) = self.buffer.take() else { return };
        buf.extend_from_slice(std::any::type_name::<A>().as_bytes());
        // Appending keeps the hash a function of (prefix, value) only.
        match rkyv::api::high::to_bytes_in::<_, rancor::BoxedError>(value, ArchiveWriter::new(buf)) {
            Ok(writer) => self.buffer = Some(writer.into_inner()),
            // A value that cannot be serialized (e.g. one over rkyv's 2 GiB
            // limit) cannot be compared either: the call becomes impure
            // rather than risk sharing a wrong key.
            Err(_) => self.buffer = None,
        }
    }

    /// The token: the hash for a pure call, a fresh unique number otherwise.
    pub(crate) fn finish(mut self) -> [u64; 2] {
        match self.buffer.take() {
            Some(buf) => {
                let t = xxh3_128(&buf);
                // Keep a modest buffer for the next call on this thread.
                if buf.capacity() <= MAX_KEPT_BUFFER {
                    BUFFER.with(|cell| *cell.borrow_mut() = Some(buf));
                }
                [(t >> 64) as u64, t as u64]
            }
            None => unique_token(),
        }
    }
}

/// A token buffer larger than this (a call with a big argument) is freed
/// rather than kept for the thread's next call.
const MAX_KEPT_BUFFER: usize = 1 << 16;

/// A token no other call of this process has: a counter in the high word,
/// this process's random seed in the low word.
fn unique_token() -> [u64; 2] {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() | 1
    });
    [COUNTER.fetch_add(1, Ordering::Relaxed), seed]
}

/// Something that can be passed for a parameter of type `A`.
pub trait IntoArg<A> {
    #[doc(hidden)]
    fn into_arg(self, tokens: &mut Tokenizer) -> Arg;
}

impl<A: Data> IntoArg<A> for A {
    fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
        tokens.value(&self);
        Arg::Value(Value::shared(self))
    }
}

/// A reference to a value: the task gets its own copy (`submit(greet, &name)`,
/// `map(count_letters, &files)`).
impl<A: Data> IntoArg<A> for &A {
    fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
        self.clone().into_arg(tokens)
    }
}

/// A string slice for a `String` parameter (`submit(greet, "alice")`).
impl IntoArg<String> for &str {
    fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
        self.to_string().into_arg(tokens)
    }
}

/// A slice for a `Vec<T>` parameter: a copy of its items.
impl<A: Data> IntoArg<Vec<A>> for &[A] {
    fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
        self.to_vec().into_arg(tokens)
    }
}

/// A future or lazy value, as one dependency.
#[doc(hidden)]
pub trait IntoDep<A> {
    fn into_dep(self, tokens: &mut Tokenizer) -> DepArg;
}

impl<A: Data> IntoDep<A> for Future<A> {
    fn into_dep(self, tokens: &mut Tokenizer) -> DepArg {
        tokens.task(self.core.id);
        DepArg::Future(self.core)
    }
}

impl<A: Data> IntoDep<A> for &Future<A> {
    fn into_dep(self, tokens: &mut Tokenizer) -> DepArg {
        self.clone().into_dep(tokens)
    }
}

impl<A: Data> IntoDep<A> for Lazy<A> {
    fn into_dep(self, tokens: &mut Tokenizer) -> DepArg {
        tokens.key(&self.node.key);
        DepArg::Lazy(self.node)
    }
}

impl<A: Data> IntoDep<A> for &Lazy<A> {
    fn into_dep(self, tokens: &mut Tokenizer) -> DepArg {
        self.clone().into_dep(tokens)
    }
}

macro_rules! dep_args {
    ($($t:ty),+) => {$(
        impl<A: Data> IntoArg<A> for $t {
            fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
                Arg::Dep(self.into_dep(tokens))
            }
        }
    )+};
}

dep_args!(Future<A>, &Future<A>, Lazy<A>, &Lazy<A>);

fn list<A: Data, X: IntoDep<A>>(items: impl ExactSizeIterator<Item = X>, tokens: &mut Tokenizer) -> Arg {
    tokens.update(&(items.len() as u64).to_le_bytes());
    let deps = items.map(|x| x.into_dep(tokens)).collect();
    Arg::List(deps)
}

macro_rules! list_args {
    ($($t:ty => $iter:ident),+) => {$(
        impl<A: Data> IntoArg<Vec<A>> for $t {
            fn into_arg(self, tokens: &mut Tokenizer) -> Arg {
                list::<A, _>(self.$iter(), tokens)
            }
        }
    )+};
}

list_args!(
    Vec<Future<A>> => into_iter,
    &[Future<A>] => iter,
    &Vec<Future<A>> => iter,
    Vec<Lazy<A>> => into_iter,
    &[Lazy<A>] => iter,
    &Vec<Lazy<A>> => iter
);

/// The whole argument list of a task with parameter list `P`.
pub trait IntoArgs<P> {
    #[doc(hidden)]
    fn into_args(self, tokens: &mut Tokenizer) -> Vec<Arg>;
}

impl<A, X: IntoArg<A>> IntoArgs<One<A>> for X {
    fn into_args(self, tokens: &mut Tokenizer) -> Vec<Arg> {
        vec![self.into_arg(tokens)]
    }
}

impl IntoArgs<()> for () {
    fn into_args(self, _: &mut Tokenizer) -> Vec<Arg> {
        Vec::new()
    }
}

macro_rules! tuple_args {
    ($($a:ident $x:ident $i:tt),+) => {
        impl<$($a, $x: IntoArg<$a>),+> IntoArgs<($($a,)+)> for ($($x,)+) {
            fn into_args(self, tokens: &mut Tokenizer) -> Vec<Arg> {
                vec![$(self.$i.into_arg(tokens)),+]
            }
        }
    };
}

tuple_args!(A0 X0 0, A1 X1 1);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2, A3 X3 3);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2, A3 X3 3, A4 X4 4);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2, A3 X3 3, A4 X4 4, A5 X5 5);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2, A3 X3 3, A4 X4 4, A5 X5 5, A6 X6 6);
tuple_args!(A0 X0 0, A1 X1 1, A2 X2 2, A3 X3 3, A4 X4 4, A5 X5 5, A6 X6 6, A7 X7 7);
