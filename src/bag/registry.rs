//! How a bag's functions and element types are found in every process.
//!
//! A bag runs as tasks, and a task may run in another process (the
//! processes and cluster modes), where no closure and no generic
//! instantiation of the driver can be named. So everything a bag task runs
//! is registered at link time (linkme), under a name that is the same in
//! every process of one binary:
//!
//! - a **function** (`#[shoal::func] fn f(x: A) -> B`) under its module path
//!   and name; its entry builds the partition-level adapters (`map`, and
//!   `filter` when `B` is `bool`, `flat_map` when `B` is a collection,
//!   `topk` by it when `B` is `Ord`, the whole-partition call);
//! - an **element type** `T` under `std::any::type_name::<T>()`; its entry
//!   builds the operations that need `T` itself (read a partition, store
//!   one, and `frequencies`/`distinct` when `T: Eq + Hash`, `sum` when
//!   `T: Add + Default`). `#[shoal::func]` registers its parameter and
//!   return types (and the item type of a `Vec`/`Option` return);
//!   `shoal::bag_item!(T)` registers any other, and the library registers
//!   `String`, the integers, `f64`, `bool` and `(String, u64)`.
//!
//! Which adapters exist is decided where the types are concrete, by autoref
//! specialization (a probe whose method resolves to `Some(adapter)` when the
//! bound holds and to `None` otherwise), so no generic code has to be
//! registered. A partition travels between adapters as a `Box<dyn Any>`
//! holding a `Vec<T>` or a [`Stream<T>`] (a boxed iterator): element-wise
//! adapters (`map`, `filter`, `flat_map`, `pluck`) chain iterators, so the
//! steps of a fused pipeline stream each element through without a `Vec`
//! per step; what needs the whole partition collects it. The types line up
//! because `Bag<T>`'s methods are typed at compile time, and a mismatch
//! (impossible through the typed API) is an error, not undefined behaviour.
//!
//! A name registered twice (the same type from several functions) is the
//! same code, so the first entry is kept.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use shoal_core::object::{Data, Obj, Object, Value, read_owned};
use shoal_core::registry::InputError;

use super::text::Words;

/// A partition between adapters: a boxed `Vec<T>` or [`Stream<T>`] (or a
/// reduction's value).
pub type Part = Box<dyn Any + Send>;

/// A partition's elements as they are made: element-wise steps chain their
/// iterators, so a fused pipeline makes no `Vec` per step; whatever needs
/// the whole partition (`map_partitions`, storing it, `topk`) collects it.
pub type Stream<T> = Box<dyn Iterator<Item = T> + Send>;

/// A stream as a partition.
pub fn streamed<T: 'static>(items: impl Iterator<Item = T> + Send + 'static) -> Part {
    Box::new(Box::new(items) as Stream<T>)
}

/// The hasher of the bag's counting maps (`frequencies`, `distinct`,
/// `foldby`'s and `groupby`'s groups): foldhash's, randomly seeded per map
/// like std's, several times faster than std's SipHash on short keys such
/// as words (where hashing was a quarter of a word count's time). The
/// shuffle's buckets use std's fixed-key hasher instead (see `bucket`).
pub type Fast = foldhash::fast::RandomState;

/// A partition's elements, one at a time (a `Vec`, a stream, or the
/// words of `split_whitespace`).
fn stream<T: Send + 'static>(part: Part) -> Result<Stream<T>, InputError> {
    let part = match part.downcast::<Vec<T>>() {
        Ok(v) => return Ok(Box::new(v.into_iter())),
        Err(part) => part,
    };
    // Words are a stream of `String`s (when `T` is not `String`, the
    // downcast below says it is a bug).
    let part = match part.downcast::<Words>() {
        Ok(words) => Box::new(Box::new(*words) as Stream<String>) as Part,
        Err(part) => part,
    };
    Ok(*downcast::<Stream<T>>(part)?)
}

/// `split_whitespace`: a partition of strings as their words (a
/// `Words` partition, which `frequencies` and `distinct` count in place).
pub fn split_words(part: Part) -> StepResult {
    Ok(Box::new(Words::new(stream::<String>(part)?)) as Part)
}

/// A partition's elements in a `Vec` (a stream is collected).
fn vec_of<T: Send + 'static>(part: Part) -> Result<Vec<T>, InputError> {
    match part.downcast::<Vec<T>>() {
        Ok(v) => Ok(*v),
        Err(part) => Ok(stream::<T>(part)?.collect()),
    }
}

/// What an adapter fails with.
pub type StepResult = Result<Part, InputError>;

/// A partition's distinct elements (a `Vec<T>`) and each element's index
/// among them.
pub type Groups = (Part, Vec<usize>);

/// Write a partition to a file, one element per line: how many lines.
pub type WriteLines = fn(Part, &std::path::Path) -> Result<u64, InputError>;

/// Several stored partial results merged into one stored result.
pub type Merge = fn(&[&dyn Object]) -> Result<Obj, InputError>;

/// Every `#[shoal::func]` of the binary.
#[shoal_core::registry::linkme::distributed_slice]
#[linkme(crate = shoal_core::registry::linkme)]
pub static FUNCS: [FuncEntry];

/// Every registered element type of the binary.
#[shoal_core::registry::linkme::distributed_slice]
#[linkme(crate = shoal_core::registry::linkme)]
pub static ITEMS: [ItemEntry];

/// One registered function: its name and how to build its adapters.
pub struct FuncEntry {
    /// `module_path::fn_name`.
    pub name: &'static str,
    /// Parameter and return types as written (`(x: u64) -> String`).
    pub signature: &'static str,
    /// Built once per process, on first use.
    pub fns: fn() -> FuncFns,
}

/// One registered element type.
pub struct ItemEntry {
    /// `std::any::type_name` of the type.
    pub name: fn() -> &'static str,
    /// Built once per process, on first use.
    pub ops: fn() -> ItemOps,
}

/// A function's partition-level adapters.
#[derive(Clone, Copy)]
pub struct FuncFns {
    /// `Vec<A>` → `Vec<B>` (functions of one parameter).
    pub map: Option<fn(Part) -> StepResult>,
    /// `A` (the whole partition, which is then a `Vec<_>`) → `B`.
    pub partition: Option<fn(Part) -> StepResult>,
    /// `Vec<A>` → `Vec<A>` keeping the elements it maps to `true`.
    pub filter: Option<fn(Part) -> StepResult>,
    /// `Vec<A>` → `Vec<B::Item>`.
    pub flat_map: Option<fn(Part) -> StepResult>,
    /// The `k` largest of a `Vec<A>` by this function, largest first.
    pub topk: Option<fn(Part, usize) -> StepResult>,
    /// For a key function `A -> K` with `K: Eq + Hash` (`groupby`, `foldby`).
    pub key: Option<KeyFns>,
    /// For `fn f(acc: X, y: Y) -> X` with `X: Default` (`fold`, `foldby`).
    pub fold: Option<FoldFns>,
    /// For `fn f(a: X, b: X) -> X` (the combine of `fold`, `foldby`).
    pub merge: Option<MergeFns>,
}

/// A key function's adapters (`fn key(x: A) -> K`, `K: Eq + Hash`).
#[derive(Clone, Copy)]
pub struct KeyFns {
    /// The keys of a partition's elements: `&Vec<A>` → `Vec<K>`.
    pub keys: fn(&Part) -> StepResult,
    /// A partition split into `n` buckets by the hash of each element's key
    /// (`Vec<A>` → stored `Vec<Vec<A>>`, bucket `i` = hash % n).
    pub split: fn(Part, usize) -> Result<Obj, InputError>,
    /// Bucket `i` of every split, grouped by key: `Vec<(K, Vec<A>)>`,
    /// groups in order of first appearance, each group's elements in order.
    pub gather: fn(&[&dyn Object], usize) -> StepResult,
}

/// A fold's adapters (`fn f(acc: X, y: Y) -> X`, `X: Default`).
#[derive(Clone, Copy)]
pub struct FoldFns {
    /// A partition's `Vec<Y>` folded from `X::default()`, stored.
    pub fold: fn(Part) -> Result<Obj, InputError>,
    /// `Vec<Y>` folded per group (`ids[j]` is element `j`'s group, of
    /// `n`), each from `X::default()`: `Vec<X>` of length `n`.
    pub fold_groups: fn(Part, &[usize], usize) -> StepResult,
}

/// A combine's adapters (`fn f(a: X, b: X) -> X`).
#[derive(Clone, Copy)]
pub struct MergeFns {
    /// Several stored `X` folded into one.
    pub merge: Merge,
    /// `Vec<X>` combined per group (as [`FoldFns::fold_groups`], each group
    /// starting from its first element; every group has one).
    pub merge_groups: fn(Part, &[usize], usize) -> StepResult,
}

/// An element type's operations.
#[derive(Clone, Copy)]
pub struct ItemOps {
    /// Read a stored partition (`Vec<T>`).
    pub read: fn(&dyn Object) -> StepResult,
    /// Store a partition.
    pub store: fn(Part) -> Result<Obj, InputError>,
    /// A partition as a `Vec<T>` (a stream collected).
    pub collect: fn(Part) -> StepResult,
    /// The number of elements of a partition (a stream consumed).
    pub count: fn(Part) -> Result<usize, InputError>,
    /// Append the second partition to the first.
    pub append: fn(&mut Part, Part) -> Result<(), InputError>,
    /// Present when `T: Eq + Hash`.
    pub hash: Option<HashOps>,
    /// Present when `T: Add<Output = T> + Default`.
    pub sum: Option<SumOps>,
    /// Present when `T: Display`: write a partition to a file, one element
    /// per line; returns the number of lines.
    pub write_lines: Option<WriteLines>,
    /// Present when `T` is a pair `(A, B)`.
    pub pair: Option<PairOps>,
}

/// The operations of a pair type `(A, B)`.
#[derive(Clone, Copy)]
pub struct PairOps {
    /// `Vec<A>` and `Vec<B>` of one length → `Vec<(A, B)>`.
    pub zip: fn(Part, Part) -> StepResult,
    /// `Vec<(A, B)>` → `Vec<A>` and `Vec<B>`.
    pub unzip: fn(Part) -> Result<(Part, Part), InputError>,
    /// The first of each pair (a stream).
    pub first: fn(Part) -> StepResult,
    /// The second of each pair (a stream).
    pub second: fn(Part) -> StepResult,
}

/// Grouping operations of an `Eq + Hash` element type.
#[derive(Clone, Copy)]
pub struct HashOps {
    /// A partition → its counts, `Vec<(T, u64)>`.
    pub frequencies: fn(Part) -> Result<Obj, InputError>,
    /// Several `Vec<(T, u64)>` → their merged counts.
    pub merge_frequencies: fn(&[&dyn Object]) -> Result<Obj, InputError>,
    /// A partition → its distinct elements.
    pub distinct: fn(Part) -> Result<Obj, InputError>,
    /// Several `Vec<T>` → their distinct elements.
    pub merge_distinct: fn(&[&dyn Object]) -> Result<Obj, InputError>,
    /// `Vec<T>` → its distinct elements in order of first appearance, and
    /// each element's index among them.
    pub group: fn(Part) -> Result<Groups, InputError>,
}

/// Sums of an `Add + Default` element type.
#[derive(Clone, Copy)]
pub struct SumOps {
    /// A partition → its sum, `T`.
    pub sum: fn(Part) -> Result<Obj, InputError>,
    /// Several `T` → their sum.
    pub merge: fn(&[&dyn Object]) -> Result<Obj, InputError>,
}

struct Tables {
    funcs: HashMap<&'static str, FuncFns>,
    items: HashMap<&'static str, ItemOps>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut funcs = HashMap::new();
        for f in FUNCS.iter() {
            funcs.entry(f.name).or_insert_with(f.fns);
        }
        let mut items = HashMap::new();
        for i in ITEMS.iter() {
            items.entry((i.name)()).or_insert_with(i.ops);
        }
        Tables { funcs, items }
    })
}

// Bag functions and element types are found by name in every process, as
// tasks are: the registry fingerprint covers them, so a worker built with
// other bag functions is refused at its handshake.
#[shoal_core::registry::linkme::distributed_slice(shoal_core::registry::FINGERPRINTED)]
#[linkme(crate = shoal_core::registry::linkme)]
static BAG_NAMES: fn() -> Vec<String> = bag_names;

/// What the fingerprint covers of the bag: every function's name and
/// signature, every element type's name.
fn bag_names() -> Vec<String> {
    let funcs = FUNCS.iter().map(|f| format!("bag fn {}{}", f.name, f.signature));
    funcs.chain(ITEMS.iter().map(|i| format!("bag item {}", (i.name)()))).collect()
}

/// The adapters of the function registered under `name`.
pub fn func(name: &str) -> Result<FuncFns, InputError> {
    tables().funcs.get(name).copied().ok_or_else(|| {
        InputError(format!(
            "no #[shoal::func] named `{name}` in this binary: bag functions must be registered with \
             #[shoal::func], and every process must run the same binary"
        ))
    })
}

/// The operations of the element type named `name`.
pub fn item(name: &str) -> Result<ItemOps, InputError> {
    tables().items.get(name).copied().ok_or_else(|| {
        let short = short_type_name(name);
        InputError(format!(
            "the bag element type `{short}` is not registered: write `shoal::bag_item!({short});` at module level \
             (types a #[shoal::func] takes or returns are registered already)"
        ))
    })
}

/// A type's name as its user writes it: `std::any::type_name`'s full
/// paths shortened to their last segment (`(alloc::string::String,
/// my::Point)` → `(String, Point)`), for messages that tell what to write.
pub fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Where the path being copied starts in `out`: a `::` drops what
    // came before it in the path.
    let mut path_start = 0;
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            out.truncate(path_start);
            rest = after;
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            path_start = out.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The registered name of `T`.
pub fn item_name<T: ?Sized>() -> &'static str {
    std::any::type_name::<T>()
}

fn downcast<T: 'static>(part: Part) -> Result<Box<T>, InputError> {
    part.downcast::<T>().map_err(|_| {
        InputError(format!(
            "a bag step got a partition that is not a `{}` (a bug in shoal::bag)",
            short_type_name(item_name::<T>())
        ))
    })
}

fn store_value<T: Data>(value: T) -> Result<Obj, InputError> {
    Ok(Value::shared(value))
}

/// The operations every element type has (the generic part of an
/// [`ItemOps`]; the bound-dependent parts come from the probes).
pub fn base_ops<T: Data>(
    hash: Option<HashOps>,
    sum: Option<SumOps>,
    write_lines: Option<WriteLines>,
    pair: Option<PairOps>,
) -> ItemOps {
    ItemOps {
        read: |obj| Ok(Box::new(read_owned::<Vec<T>>(obj)?) as Part),
        store: |part| store_value(vec_of::<T>(part)?),
        collect: |part| Ok(Box::new(vec_of::<T>(part)?) as Part),
        count: |part| match part.downcast::<Vec<T>>() {
            Ok(v) => Ok(v.len()),
            Err(part) => Ok(stream::<T>(part)?.count()),
        },
        append: |into, more| {
            let more = vec_of::<T>(more)?;
            let into = into
                .downcast_mut::<Vec<T>>()
                .ok_or_else(|| InputError(format!("not a Vec<{}> (a bug in shoal::bag)", item_name::<T>())))?;
            into.extend(more);
            Ok(())
        },
        hash,
        sum,
        write_lines,
        pair,
    }
}

/// `Some` when `T` is a pair.
pub trait PairProbe {
    /// The pair operations.
    fn pair_ops(&self) -> Option<PairOps>;
}

impl<A: Data, B: Data> PairProbe for Probe<(A, B)> {
    fn pair_ops(&self) -> Option<PairOps> {
        Some(PairOps {
            zip: |a, b| {
                let (a, b) = (vec_of::<A>(a)?, vec_of::<B>(b)?);
                if a.len() != b.len() {
                    return Err(InputError(format!(
                        "zip of {} and {} elements (a bug in shoal::bag)",
                        a.len(),
                        b.len()
                    )));
                }
                Ok(Box::new(a.into_iter().zip(b).collect::<Vec<(A, B)>>()) as Part)
            },
            unzip: |part| {
                let (a, b): (Vec<A>, Vec<B>) = stream::<(A, B)>(part)?.unzip();
                Ok((Box::new(a) as Part, Box::new(b) as Part))
            },
            first: |part| Ok(streamed(stream::<(A, B)>(part)?.map(|(a, _)| a))),
            second: |part| Ok(streamed(stream::<(A, B)>(part)?.map(|(_, b)| b))),
        })
    }
}

/// `None` otherwise.
pub trait NoPairProbe {
    /// No pair operations.
    fn pair_ops(&self) -> Option<PairOps>;
}

impl<T> NoPairProbe for &Probe<T> {
    fn pair_ops(&self) -> Option<PairOps> {
        None
    }
}

/// Distinct elements in order of first appearance, and each element's
/// index among them.
fn group_of<K: Eq + std::hash::Hash + Clone>(keys: Vec<K>) -> (Vec<K>, Vec<usize>) {
    let mut index: HashMap<K, usize, Fast> = HashMap::default();
    let mut distinct = Vec::new();
    let ids = keys
        .into_iter()
        .map(|k| {
            *index.entry(k).or_insert_with_key(|k| {
                distinct.push(k.clone());
                distinct.len() - 1
            })
        })
        .collect();
    (distinct, ids)
}

/// The bucket of a key among `n`: a hash that is the same in every process
/// of the binary (std's `DefaultHasher::new()` has fixed keys, unlike a
/// `HashMap`'s random ones), since splits run in different processes.
fn bucket<K: std::hash::Hash>(key: &K, n: usize) -> usize {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Bucket `i` of a stored split (`Vec<Vec<A>>`): cloned from a value of
/// this process, or only that bucket deserialized from an archive.
fn bucket_of<A: Data>(obj: &dyn Object, i: usize) -> Result<Vec<A>, InputError> {
    if let Some(v) = obj.as_any().downcast_ref::<Value<Vec<Vec<A>>>>() {
        return v.get().get(i).cloned().ok_or_else(|| no_bucket(i));
    }
    let split = shoal_core::object::read_archived::<Vec<Vec<A>>>(obj)?;
    let archived = split.get(i).ok_or_else(|| no_bucket(i))?;
    rkyv::deserialize::<Vec<A>, rkyv::rancor::BoxedError>(archived)
        .map_err(|e| InputError(format!("could not deserialize a bucket of a bag shuffle: {e}")))
}

fn no_bucket(i: usize) -> InputError {
    InputError(format!("a bag shuffle's split has no bucket {i} (a bug in shoal::bag)"))
}

/// `Some` when `T: Display`.
pub trait DisplayProbe {
    /// The writer.
    fn write_lines(&self) -> Option<WriteLines>;
}

impl<T: Data + std::fmt::Display> DisplayProbe for Probe<T> {
    fn write_lines(&self) -> Option<WriteLines> {
        Some(|part, path| {
            use std::io::Write;
            let failed = |e: std::io::Error| InputError(format!("could not write {}: {e}", path.display()));
            let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(failed)?);
            let mut n = 0u64;
            for x in stream::<T>(part)? {
                writeln!(out, "{x}").map_err(failed)?;
                n += 1;
            }
            out.flush().map_err(failed)?;
            Ok(n)
        })
    }
}

/// `None` otherwise.
pub trait NoDisplayProbe {
    /// No writer.
    fn write_lines(&self) -> Option<WriteLines>;
}

impl<T> NoDisplayProbe for &Probe<T> {
    fn write_lines(&self) -> Option<WriteLines> {
        None
    }
}

/// The probe that chooses adapters by the bounds of concrete types.
pub struct Probe<T>(std::marker::PhantomData<T>);

impl<T> Probe<T> {
    /// The probe value.
    pub const NEW: Probe<T> = Probe(std::marker::PhantomData);
}

/// `Some` when `T: Eq + Hash` (found first: on `Probe<T>`).
pub trait HashProbe {
    /// The grouping operations.
    fn hash_ops(&self) -> Option<HashOps>;
}

impl<T: Data + Eq + std::hash::Hash> HashProbe for Probe<T> {
    fn hash_ops(&self) -> Option<HashOps> {
        Some(HashOps {
            frequencies: |part| {
                let mut counts: HashMap<T, u64, Fast> = HashMap::default();
                for x in stream::<T>(part)? {
                    *counts.entry(x).or_insert(0) += 1;
                }
                store_value(counts.into_iter().collect::<Vec<(T, u64)>>())
            },
            merge_frequencies: |objs| {
                let mut counts: HashMap<T, u64, Fast> = HashMap::default();
                for obj in objs {
                    for (x, n) in read_owned::<Vec<(T, u64)>>(*obj)? {
                        *counts.entry(x).or_insert(0) += n;
                    }
                }
                store_value(counts.into_iter().collect::<Vec<(T, u64)>>())
            },
            distinct: |part| {
                let set: HashSet<T, Fast> = stream::<T>(part)?.collect();
                store_value(set.into_iter().collect::<Vec<T>>())
            },
            merge_distinct: |objs| {
                let mut set: HashSet<T, Fast> = HashSet::default();
                for obj in objs {
                    set.extend(read_owned::<Vec<T>>(*obj)?);
                }
                store_value(set.into_iter().collect::<Vec<T>>())
            },
            group: |part| {
                let (distinct, ids) = group_of(vec_of::<T>(part)?);
                Ok((Box::new(distinct) as Part, ids))
            },
        })
    }
}

/// `None` otherwise (found after an autoref).
pub trait NoHashProbe {
    /// No grouping operations.
    fn hash_ops(&self) -> Option<HashOps>;
}

impl<T> NoHashProbe for &Probe<T> {
    fn hash_ops(&self) -> Option<HashOps> {
        None
    }
}

/// `Some` when `T: Add<Output = T> + Default`.
pub trait SumProbe {
    /// The sums.
    fn sum_ops(&self) -> Option<SumOps>;
}

impl<T: Data + std::ops::Add<Output = T> + Default> SumProbe for Probe<T> {
    fn sum_ops(&self) -> Option<SumOps> {
        Some(SumOps {
            sum: |part| store_value(stream::<T>(part)?.fold(T::default(), |a, b| a + b)),
            merge: |objs| {
                let mut total = T::default();
                for obj in objs {
                    total = total + read_owned::<T>(*obj)?;
                }
                store_value(total)
            },
        })
    }
}

/// `None` otherwise.
pub trait NoSumProbe {
    /// No sums.
    fn sum_ops(&self) -> Option<SumOps>;
}

impl<T> NoSumProbe for &Probe<T> {
    fn sum_ops(&self) -> Option<SumOps> {
        None
    }
}

/// A registered element function, as the generated handle implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[shoal::func]` function taking `{A}`",
    label = "closures and unregistered functions cannot be bag functions"
)]
pub trait Call<A> {
    /// The result type.
    type Out;
    /// The function itself.
    fn call(a: A) -> Self::Out;
}

/// The adapters every function has.
pub fn base_fns<F: Call<A, Out = B> + 'static, A: Data, B: Data>(
    filter: Option<fn(Part) -> StepResult>,
    flat_map: Option<fn(Part) -> StepResult>,
    topk: Option<fn(Part, usize) -> StepResult>,
    key: Option<KeyFns>,
) -> FuncFns {
    FuncFns {
        map: Some(|part| Ok(streamed(stream::<A>(part)?.map(F::call)))),
        partition: Some(|part| Ok(Box::new(F::call(*downcast::<A>(part)?)) as Part)),
        filter,
        flat_map,
        topk,
        key,
        fold: None,
        merge: None,
    }
}

/// `key` adapters exist when `B: Eq + Hash`.
pub trait KeyProbe {
    /// The adapters.
    fn key_fns(&self) -> Option<KeyFns>;
}

impl<F: Call<A, Out = B>, A: Data, B: Data + Eq + std::hash::Hash> KeyProbe for FnProbe<F, A, B> {
    fn key_fns(&self) -> Option<KeyFns> {
        Some(KeyFns {
            keys: |part| {
                let v = part
                    .downcast_ref::<Vec<A>>()
                    .ok_or_else(|| InputError(format!("not a Vec<{}> (a bug in shoal::bag)", item_name::<A>())))?;
                Ok(Box::new(v.iter().map(|x| F::call(x.clone())).collect::<Vec<B>>()) as Part)
            },
            split: |part, n| {
                let n = n.max(1);
                let mut buckets: Vec<Vec<A>> = (0..n).map(|_| Vec::new()).collect();
                for x in stream::<A>(part)? {
                    buckets[bucket(&F::call(x.clone()), n)].push(x);
                }
                store_value(buckets)
            },
            gather: |objs, i| {
                let mut index: HashMap<B, usize, Fast> = HashMap::default();
                let mut groups: Vec<(B, Vec<A>)> = Vec::new();
                for obj in objs {
                    for x in bucket_of::<A>(*obj, i)? {
                        let k = F::call(x.clone());
                        match index.get(&k) {
                            Some(&g) => groups[g].1.push(x),
                            None => {
                                index.insert(k.clone(), groups.len());
                                groups.push((k, vec![x]));
                            }
                        }
                    }
                }
                Ok(Box::new(groups) as Part)
            },
        })
    }
}

/// Otherwise none.
pub trait NoKeyProbe {
    /// No adapters.
    fn key_fns(&self) -> Option<KeyFns>;
}

impl<F, A, B> NoKeyProbe for &FnProbe<F, A, B> {
    fn key_fns(&self) -> Option<KeyFns> {
        None
    }
}

/// A registered function of two parameters (`fold`'s), as the generated
/// handle implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[shoal::func]` function taking `({X}, {Y})`",
    label = "closures and unregistered functions cannot be bag functions"
)]
pub trait Call2<X, Y> {
    /// The result type.
    type Out;
    /// The function itself.
    fn call(a: X, b: Y) -> Self::Out;
}

/// The adapters of a function of two parameters.
pub fn fold_fns(fold: Option<FoldFns>, merge: Option<MergeFns>) -> FuncFns {
    FuncFns { map: None, partition: None, filter: None, flat_map: None, topk: None, key: None, fold, merge }
}

/// `fold` exists for `fn f(acc: X, y: Y) -> X` when `X: Default`.
pub trait FoldProbe {
    /// The adapters.
    fn fold_fn(&self) -> Option<FoldFns>;
}

impl<F: Call2<X, Y, Out = X>, X: Data + Default, Y: Data> FoldProbe for FnProbe<F, (X, Y), X> {
    fn fold_fn(&self) -> Option<FoldFns> {
        Some(FoldFns {
            fold: |part| store_value(stream::<Y>(part)?.fold(X::default(), F::call)),
            fold_groups: |part, ids, n| {
                let mut accs: Vec<Option<X>> = (0..n).map(|_| None).collect();
                for (y, &g) in stream::<Y>(part)?.zip(ids) {
                    let acc = accs.get_mut(g).ok_or_else(|| bad_group(g, n))?;
                    *acc = Some(F::call(acc.take().unwrap_or_default(), y));
                }
                Ok(Box::new(accs.into_iter().map(Option::unwrap_or_default).collect::<Vec<X>>()) as Part)
            },
        })
    }
}

fn bad_group(g: usize, n: usize) -> InputError {
    InputError(format!("group {g} of {n} (a bug in shoal::bag)"))
}

/// Otherwise none.
pub trait NoFoldProbe {
    /// No adapter.
    fn fold_fn(&self) -> Option<FoldFns>;
}

impl<F, A, B> NoFoldProbe for &FnProbe<F, A, B> {
    fn fold_fn(&self) -> Option<FoldFns> {
        None
    }
}

/// `merge` exists for `fn f(a: X, b: X) -> X`.
pub trait MergeProbe {
    /// The adapters.
    fn merge_fn(&self) -> Option<MergeFns>;
}

impl<F: Call2<X, X, Out = X>, X: Data> MergeProbe for FnProbe<F, (X, X), X> {
    fn merge_fn(&self) -> Option<MergeFns> {
        Some(MergeFns { merge: merge_all::<F, X>, merge_groups: merge_groups::<F, X> })
    }
}

fn merge_groups<F: Call2<X, X, Out = X>, X: Data>(part: Part, ids: &[usize], n: usize) -> StepResult {
    let mut accs: Vec<Option<X>> = (0..n).map(|_| None).collect();
    for (x, &g) in stream::<X>(part)?.zip(ids) {
        let acc = accs.get_mut(g).ok_or_else(|| bad_group(g, n))?;
        *acc = Some(match acc.take() {
            Some(a) => F::call(a, x),
            None => x,
        });
    }
    let merged: Option<Vec<X>> = accs.into_iter().collect();
    Ok(Box::new(merged.ok_or_else(|| InputError("an empty group in a bag foldby (a bug in shoal::bag)".into()))?)
        as Part)
}

fn merge_all<F: Call2<X, X, Out = X>, X: Data>(objs: &[&dyn Object]) -> Result<Obj, InputError> {
    let mut acc: Option<X> = None;
    for obj in objs {
        let x = read_owned::<X>(*obj)?;
        acc = Some(match acc {
            Some(a) => F::call(a, x),
            None => x,
        });
    }
    store_value(acc.ok_or_else(|| InputError("a fold combine with no input (a bug in shoal::bag)".into()))?)
}

/// Otherwise none.
pub trait NoMergeProbe {
    /// No adapter.
    fn merge_fn(&self) -> Option<MergeFns>;
}

impl<F, A, B> NoMergeProbe for &FnProbe<F, A, B> {
    fn merge_fn(&self) -> Option<MergeFns> {
        None
    }
}

/// The probe of a function `F: A -> B`.
pub struct FnProbe<F, A, B>(std::marker::PhantomData<(F, A, B)>);

impl<F, A, B> FnProbe<F, A, B> {
    /// The probe value.
    pub const NEW: FnProbe<F, A, B> = FnProbe(std::marker::PhantomData);
}

/// `filter` exists when `B` is `bool`.
pub trait FilterProbe {
    /// The adapter.
    fn filter_fn(&self) -> Option<fn(Part) -> StepResult>;
}

impl<F: Call<A, Out = bool> + 'static, A: Data> FilterProbe for FnProbe<F, A, bool> {
    fn filter_fn(&self) -> Option<fn(Part) -> StepResult> {
        Some(|part| Ok(streamed(stream::<A>(part)?.filter(|x| F::call(x.clone())))))
    }
}

/// Otherwise none.
pub trait NoFilterProbe {
    /// No adapter.
    fn filter_fn(&self) -> Option<fn(Part) -> StepResult>;
}

impl<F, A, B> NoFilterProbe for &FnProbe<F, A, B> {
    fn filter_fn(&self) -> Option<fn(Part) -> StepResult> {
        None
    }
}

/// `flat_map` exists when `B: IntoIterator` of `Data` items.
pub trait FlatProbe {
    /// The adapter.
    fn flat_fn(&self) -> Option<fn(Part) -> StepResult>;
}

impl<F: Call<A, Out = B> + 'static, A: Data, B: IntoIterator<Item: Data, IntoIter: Send + 'static> + 'static> FlatProbe
    for FnProbe<F, A, B>
{
    fn flat_fn(&self) -> Option<fn(Part) -> StepResult> {
        Some(|part| Ok(streamed(stream::<A>(part)?.flat_map(F::call))))
    }
}

/// Otherwise none.
pub trait NoFlatProbe {
    /// No adapter.
    fn flat_fn(&self) -> Option<fn(Part) -> StepResult>;
}

impl<F, A, B> NoFlatProbe for &FnProbe<F, A, B> {
    fn flat_fn(&self) -> Option<fn(Part) -> StepResult> {
        None
    }
}

/// `topk` by the function exists when `B: Ord`.
pub trait TopkProbe {
    /// The adapter.
    fn topk_fn(&self) -> Option<fn(Part, usize) -> StepResult>;
}

impl<F: Call<A, Out = B>, A: Data, B: Ord> TopkProbe for FnProbe<F, A, B> {
    fn topk_fn(&self) -> Option<fn(Part, usize) -> StepResult> {
        Some(|part, k| {
            let mut keyed: Vec<(B, A)> = stream::<A>(part)?.map(|x| (F::call(x.clone()), x)).collect();
            // Largest first; among equal keys the earlier element first
            // (a stable sort), so the answer does not depend on the tree.
            keyed.sort_by(|a, b| b.0.cmp(&a.0));
            keyed.truncate(k);
            Ok(Box::new(keyed.into_iter().map(|(_, x)| x).collect::<Vec<A>>()) as Part)
        })
    }
}

/// Otherwise none.
pub trait NoTopkProbe {
    /// No adapter.
    fn topk_fn(&self) -> Option<fn(Part, usize) -> StepResult>;
}

impl<F, A, B> NoTopkProbe for &FnProbe<F, A, B> {
    fn topk_fn(&self) -> Option<fn(Part, usize) -> StepResult> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[crate::func]
    fn fingerprinted_len(s: String) -> u64 {
        s.len() as u64
    }

    #[test]
    fn bag_functions_and_items_are_in_the_registry_fingerprint() {
        let names = shoal_core::registry::fingerprinted_names();
        let name = format!("bag fn {}::fingerprinted_len(s : String) -> u64", module_path!());
        assert!(names.contains(&name), "{name} not in {names:?}");
        assert!(names.contains(&"bag item alloc::string::String".to_string()), "{names:?}");
        assert_eq!(fingerprinted_len::call("abc".into()), 3);
    }

    #[test]
    fn type_names_are_shortened_to_what_a_user_writes() {
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(short_type_name("(alloc::string::String, (u64, u64))"), "(String, (u64, u64))");
        assert_eq!(
            short_type_name("alloc::vec::Vec<(my_crate::a::Point, core::option::Option<f64>)>"),
            "Vec<(Point, Option<f64>)>"
        );
        assert_eq!(short_type_name("[u8; 4]"), "[u8; 4]");
        assert_eq!(short_type_name(std::any::type_name::<(String, Vec<u64>)>()), "(String, Vec<u64>)");
    }
}
