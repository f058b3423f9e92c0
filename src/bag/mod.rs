//! `shoal::bag`: a lazy, partitioned collection of records (Dask's Bag).
//!
//! ```
//! use shoal::bag;
//!
//! #[shoal::func]
//! fn words(line: String) -> Vec<String> {
//!     line.split_whitespace().map(str::to_string).collect()
//! }
//!
//! #[shoal::func]
//! fn by_count(pair: (String, u64)) -> u64 {
//!     pair.1
//! }
//!
//! fn main() -> shoal::Result<()> {
//!     shoal::init();
//!     let client = shoal::Client::threads(2)?;
//!     let lines = vec!["a b a".to_string(), "c a b".to_string()];
//!     let top = bag::from_vec(lines, 2)?.flat_map(words).frequencies().topk(1, by_count);
//!     assert_eq!(top.compute(&client)?, vec![("a".to_string(), 3)]);
//!     Ok(())
//! }
//! ```
//!
//! A [`Bag<T>`] is a list of partitions, each one task's result (a
//! `Vec<T>`), plus the element-wise steps still to apply. Nothing runs until
//! `compute` (or a reduction's `Lazy` is computed): a bag is only a graph,
//! so it runs unchanged in the threads, processes and cluster modes.
//!
//! # Functions cross processes by name
//!
//! A partition may be processed in another process, where a closure cannot
//! be sent. So the functions a bag applies are **registered**: write
//! `#[shoal::func]` on a free function of one parameter (`fn f(x: A) -> B`)
//! and pass its name, as for `#[shoal::task]`. `bag.map(f)` is typed at
//! compile time (`Bag<A>` → `Bag<B>`), and passing a closure is a compile
//! error that says so. Element types are registered too (see
//! [`bag_item!`](crate::bag_item)): the types a `#[shoal::func]` takes and
//! returns are, and so are `String`, the integers, `f64`, `bool` and
//! `(String, u64)`; write `shoal::bag_item!(MyType);` for any other type a
//! bag holds (a missing one fails the task with a message saying this).
//!
//! # Fusion and trees
//!
//! Consecutive element-wise steps (`map`, `filter`, `flat_map`,
//! `map_partitions`) and the per-partition part of a reduction fuse into
//! one task per partition: a five-step pipeline over N partitions is N
//! tasks. A reduction (`count`, `sum`, `fold`, `foldby`, `frequencies`,
//! `distinct`, `topk`) then combines the partitions' results in a tree,
//! `split_every` (default [`DEFAULT_SPLIT_EVERY`]) at a time; `topk` keeps
//! `k` per partition first, `foldby` one accumulator per key.
//!
//! # Grouping: `foldby` or `groupby`
//!
//! [`Bag::foldby`] reduces per key without moving elements: each partition
//! folds into a map, and the maps merge in a tree. [`Bag::groupby`] gathers
//! every element of a key into one partition, through a shuffle (one split
//! task per input partition, one gather task per output partition, fused
//! with the steps after it); use it when a group's elements are needed
//! together.
//!
//! # Fields: `pluck`
//!
//! [`Bag::pluck`] takes field 0 or 1 of pairs (`frequencies`' output,
//! `foldby`'s, `groupby`'s). A struct's field is a `map` by a
//! `#[shoal::func]` returning it, since Rust has no field access by name;
//! JSON is parsed into such a struct (`serde_json::Value` is no rkyv type,
//! so a bag cannot hold it).

mod registry;
mod run;
mod text;
mod words;

use std::marker::PhantomData;

use shoal_core::object::Data;

use crate::client::Client;
use crate::error::Result;
use crate::future::Future;
use crate::lazy::Lazy;
use crate::{Error, Task};
use run::{End, Kind, Origin, Plan, Run, Source, Step};

pub use text::{DEFAULT_BLOCK_SIZE, read_text, read_text_with};
pub use words::{WordCounts, WordCountsIntoIter};

/// How many partial results one node of a reduction tree combines, by
/// default (Dask's `split_every` default is 8 too): deep enough trees to
/// spread the work, few enough levels that the root is near.
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// A registered bag function (`#[shoal::func]`) taking an `A`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a registered bag function taking `{A}`",
    label = "not a `#[shoal::func]` function of one `{A}` parameter",
    note = "write `#[shoal::func]` on a free function `fn f(x: {A}) -> B` and pass its name: `bag.map(f)`",
    note = "closures cannot be bag functions: a partition may be processed in another process, which finds \
            the function by its registered name"
)]
pub trait BagFn<A>: __private::Call<A> + Copy + Send + Sync + 'static {
    /// The registered name (module path and function name).
    fn name(&self) -> &'static str;
}

/// A registered bag function of two parameters (`#[shoal::func] fn f(a: X,
/// b: Y) -> X`), for [`Bag::fold`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a registered bag function taking `({X}, {Y})`",
    label = "not a `#[shoal::func]` function `fn f(acc: {X}, x: {Y}) -> {X}`",
    note = "closures cannot be bag functions: a partition may be processed in another process, which finds \
            the function by its registered name"
)]
pub trait BagFn2<X, Y>: __private::Call2<X, Y> + Copy + Send + Sync + 'static {
    /// The registered name (module path and function name).
    fn name(&self) -> &'static str;
}

/// A lazy, partitioned collection of `T` (see the [module docs](self)).
pub struct Bag<T> {
    /// The source partitions, each a `Vec` of the `input` element type.
    parts: Vec<PartSrc>,
    /// The registered name of the source partitions' element type.
    input: &'static str,
    /// Element-wise steps not applied yet (fused into one task each).
    steps: Vec<Step>,
    split_every: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Self {
        Bag {
            parts: self.parts.clone(),
            input: self.input,
            steps: self.steps.clone(),
            split_every: self.split_every,
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Bag<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bag")
            .field("partitions", &self.parts.len())
            .field("input", &self.input)
            .field("steps", &self.steps)
            .finish()
    }
}

/// Where a partition comes from.
#[derive(Clone)]
enum PartSrc {
    /// A task's result.
    Stored(Lazy<()>),
    /// Lines of a block of a text file, read by the partition's own
    /// pipeline task (fused: no task, no stored `Vec<String>` of its own).
    Text { path: String, start: u64, end: u64 },
    /// Every line of a gzip file, read by the partition's pipeline task.
    Gzip { path: String },
    /// Bucket `index` of a shuffle's splits, grouped by `key`: gathered by
    /// the partition's own pipeline task (fused, as a text block is).
    Gather { key: String, index: u64, splits: Vec<Lazy<()>> },
}

/// The bag's arguments were refused.
fn invalid(what: String) -> Error {
    Error::InvalidArgument(what)
}

/// A bag of `values` in `npartitions` partitions of (nearly) equal length,
/// in order (like `dask.bag.from_sequence(values, npartitions=…)`).
pub fn from_vec<T: Data>(values: Vec<T>, npartitions: usize) -> Result<Bag<T>> {
    if npartitions == 0 {
        return Err(invalid("bag::from_vec needs at least one partition (npartitions = 0)".into()));
    }
    let n = values.len();
    let mut parts = Vec::with_capacity(npartitions);
    let mut rest = values.into_iter();
    for i in 0..npartitions {
        // Partition i holds items [n*i/p, n*(i+1)/p): sizes differ by at most one.
        let len = n * (i + 1) / npartitions - n * i / npartitions;
        let part: Vec<T> = rest.by_ref().take(len).collect();
        let lazy = Source::<T>::HANDLE.lazy((registry::item_name::<T>().to_string(), part));
        parts.push(PartSrc::Stored(lazy.retype()));
    }
    Ok(Bag::from_parts(parts, registry::item_name::<T>()))
}

/// A bag whose partitions are these lazy values (each a `Vec<T>`).
pub fn from_lazy<T: Data>(partitions: Vec<Lazy<Vec<T>>>) -> Result<Bag<T>> {
    if partitions.is_empty() {
        return Err(invalid("bag::from_lazy needs at least one partition".into()));
    }
    let parts = partitions.iter().map(|p| PartSrc::Stored(p.retype())).collect();
    Ok(Bag::from_parts(parts, registry::item_name::<T>()))
}

/// A bag whose partitions are the results of these futures (each a
/// `Vec<T>`, computed already or still running): Dask's
/// `db.from_delayed` of futures. The bag's tasks wait for them; nothing is
/// copied in the threads mode. The bag holds a reference to each future, as
/// any lazy node that takes one does, so dropping the futures is fine.
pub fn from_futures<T: Data>(partitions: &[Future<Vec<T>>]) -> Result<Bag<T>> {
    if partitions.is_empty() {
        return Err(invalid("bag::from_futures needs at least one partition".into()));
    }
    from_lazy(partitions.iter().map(Lazy::of_future).collect())
}

impl<T> Bag<T> {
    fn from_parts(parts: Vec<PartSrc>, input: &'static str) -> Bag<T> {
        Bag { parts, input, steps: Vec::new(), split_every: DEFAULT_SPLIT_EVERY, _type: PhantomData }
    }

    fn then<U>(&self, kind: Kind, func: &str) -> Bag<U> {
        let mut steps = self.steps.clone();
        steps.push(Step { kind, func: func.to_string(), input: registry::item_name::<T>().to_string() });
        Bag { parts: self.parts.clone(), input: self.input, steps, split_every: self.split_every, _type: PhantomData }
    }

    /// The number of partitions.
    pub fn npartitions(&self) -> usize {
        self.parts.len()
    }

    /// Reductions combine this many partial results per task (at least 2).
    pub fn split_every(mut self, n: usize) -> Bag<T> {
        self.split_every = n.max(2);
        self
    }
}

impl<T: Data> Bag<T> {
    /// `f` applied to each element.
    pub fn map<F: BagFn<T>>(&self, f: F) -> Bag<F::Out>
    where
        F::Out: Data,
    {
        self.then(Kind::Map, f.name())
    }

    /// The elements for which `f` is `true`.
    pub fn filter<F: BagFn<T, Out = bool>>(&self, f: F) -> Bag<T> {
        self.then(Kind::Filter, f.name())
    }

    /// The items of the collections `f` makes of each element, in order.
    pub fn flat_map<F: BagFn<T>>(&self, f: F) -> Bag<<F::Out as IntoIterator>::Item>
    where
        F::Out: IntoIterator<Item: Data, IntoIter: Send + 'static>,
    {
        self.then(Kind::FlatMap, f.name())
    }

    /// `f` applied to each whole partition (`fn f(xs: Vec<T>) -> Vec<U>`).
    pub fn map_partitions<F: BagFn<Vec<T>, Out = Vec<U>>, U: Data>(&self, f: F) -> Bag<U> {
        self.then(Kind::Partition, f.name())
    }

    /// One lazy `Vec<T>` per partition, with the pending steps applied (one
    /// task per partition, whatever the number of steps).
    pub fn to_lazy(&self) -> Vec<Lazy<Vec<T>>> {
        let mut pipelines = self.pipelines(End::Collect).into_iter();
        // A stored partition with no step pending is its own result.
        self.parts
            .iter()
            .zip(pipelines.by_ref())
            .map(|(part, pipeline)| match part {
                PartSrc::Stored(lazy) if self.steps.is_empty() => lazy.retype(),
                _ => pipeline,
            })
            .collect()
    }

    /// Every element, in order (the partitions' tasks run in parallel).
    pub fn compute(&self, client: &Client) -> Result<Vec<T>> {
        let parts = client.compute_values(&self.to_lazy())?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// The number of elements.
    pub fn count(&self) -> Lazy<u64> {
        self.reduce(End::Count)
    }

    /// The sum of the elements (`T::default()` for none).
    pub fn sum(&self) -> Lazy<T>
    where
        T: std::ops::Add<Output = T> + Default,
    {
        self.reduce(End::Sum)
    }

    /// Each distinct element with its number of occurrences, in one
    /// partition (in no particular order: sort it, or take a `topk`).
    pub fn frequencies(&self) -> Bag<(T, u64)>
    where
        T: Eq + std::hash::Hash,
    {
        let root: Lazy<Vec<(T, u64)>> = self.reduce(End::Frequencies);
        Bag::from_parts(vec![PartSrc::Stored(root.retype())], registry::item_name::<(T, u64)>())
    }

    /// The distinct elements, in one partition (in no particular order).
    pub fn distinct(&self) -> Bag<T>
    where
        T: Eq + std::hash::Hash,
    {
        let root: Lazy<Vec<T>> = self.reduce(End::Distinct);
        Bag::from_parts(vec![PartSrc::Stored(root.retype())], registry::item_name::<T>())
    }

    /// The `k` largest elements by `by` (a `#[shoal::func]` returning an
    /// `Ord` key), largest first, in one partition; among equal keys the
    /// earlier element comes first. Each partition keeps its own `k` before
    /// the tree combines them.
    pub fn topk<F: BagFn<T>>(&self, k: usize, by: F) -> Bag<T>
    where
        F::Out: Ord,
    {
        let root: Lazy<Vec<T>> = self.reduce(End::TopK { k: k as u64, key: by.name().to_string() });
        Bag::from_parts(vec![PartSrc::Stored(root.retype())], registry::item_name::<T>())
    }

    /// The elements folded with `binop` (`fn(acc: X, x: T) -> X`) from
    /// `X::default()` in each partition, and the partitions' results
    /// combined with `combine` (`fn(a: X, b: X) -> X`) in a tree (Dask's
    /// `fold(binop, combine, initial)`, with the initial value the
    /// default). `combine` must be associative, and `binop` agree with it,
    /// since how elements are grouped depends on the partitions and the tree.
    pub fn fold<X, F, C>(&self, binop: F, combine: C) -> Lazy<X>
    where
        X: Data + Default,
        F: BagFn2<X, T, Out = X>,
        C: BagFn2<X, X, Out = X>,
    {
        self.reduce(End::Fold { binop: binop.name().to_string(), combine: combine.name().to_string() })
    }

    /// Dask's `foldby`: the elements grouped by `key` (a `#[shoal::func]`
    /// `fn(x: T) -> K`), each group folded with `binop` (`fn(acc: X, x: T)
    /// -> X`) from `X::default()`, as `(key, accumulator)` pairs in one
    /// partition (in no particular order). Each partition folds its own
    /// groups into a map first; the maps are then merged in a tree
    /// (`split_every` at a time), equal keys' accumulators combined with
    /// `combine` (`fn(a: X, b: X) -> X`), which must be associative and
    /// agree with `binop`, as for [`fold`](Bag::fold). No element crosses a
    /// partition: use this rather than [`groupby`](Bag::groupby) for a
    /// per-key reduction.
    ///
    /// The pair type `(K, X)` must be a registered element type: it is
    /// when `X` is `u64`; otherwise write `shoal::bag_item!((K, X));` at
    /// module level (this call checks it, and says so).
    pub fn foldby<K, X, F, B, C>(&self, key: F, binop: B, combine: C) -> Result<Bag<(K, X)>>
    where
        K: Data + Eq + std::hash::Hash,
        X: Data + Default,
        F: BagFn<T, Out = K>,
        B: BagFn2<X, T, Out = X>,
        C: BagFn2<X, X, Out = X>,
    {
        let pair_item = registry::item_name::<(K, X)>();
        for name in [registry::item_name::<K>(), registry::item_name::<X>(), pair_item] {
            registry::item(name).map_err(|e| invalid(format!("Bag::foldby: {}", e.0)))?;
        }
        let end = End::FoldBy {
            key: key.name().to_string(),
            binop: binop.name().to_string(),
            combine: combine.name().to_string(),
            key_item: registry::item_name::<K>().to_string(),
            acc_item: registry::item_name::<X>().to_string(),
            pair_item: pair_item.to_string(),
        };
        let root: Lazy<Vec<(K, X)>> = self.reduce(end);
        Ok(Bag::from_parts(vec![PartSrc::Stored(root.retype())], pair_item))
    }

    /// The elements grouped by `key` (a `#[shoal::func]` `fn(x: T) -> K`),
    /// as `(key, elements)` pairs, through a shuffle into as many
    /// partitions as this bag has (see [`groupby_with`](Bag::groupby_with)).
    pub fn groupby<K, F>(&self, key: F) -> Bag<(K, Vec<T>)>
    where
        K: Data + Eq + std::hash::Hash,
        F: BagFn<T, Out = K>,
    {
        self.shuffle(key, self.parts.len())
    }

    /// The elements grouped by `key`, in `npartitions` partitions, through
    /// an explicit shuffle (Dask's `groupby(method="tasks")` in one stage):
    /// one task per input partition runs its pipeline and splits the
    /// elements into `npartitions` buckets by a hash of their key, then one
    /// task per output partition gathers its bucket from every split and
    /// groups it, fused with the steps that follow (as `read_text` reads
    /// its blocks in the first task of their pipelines). N inputs and M
    /// outputs make N + M tasks (and N × M
    /// buckets, each read once). All of a key's elements land in one
    /// partition, as one `(key, elements)` pair, in their order in the
    /// bag; the groups of a partition come in order of first appearance.
    /// Every element crosses the shuffle: when only a per-key reduction is
    /// needed, [`foldby`](Bag::foldby) moves far less.
    pub fn groupby_with<K, F>(&self, key: F, npartitions: usize) -> Result<Bag<(K, Vec<T>)>>
    where
        K: Data + Eq + std::hash::Hash,
        F: BagFn<T, Out = K>,
    {
        if npartitions == 0 {
            return Err(invalid("Bag::groupby_with needs at least one output partition (npartitions = 0)".into()));
        }
        Ok(self.shuffle(key, npartitions))
    }

    fn shuffle<K: Data, F: BagFn<T, Out = K>>(&self, key: F, n: usize) -> Bag<(K, Vec<T>)> {
        let splits: Vec<Lazy<()>> = self.pipelines(End::Split { key: key.name().to_string(), n: n as u64 });
        let parts = (0..n)
            .map(|i| PartSrc::Gather { key: key.name().to_string(), index: i as u64, splits: splits.clone() })
            .collect();
        let mut bag = Bag::from_parts(parts, registry::item_name::<(K, Vec<T>)>());
        bag.split_every = self.split_every;
        bag
    }

    /// Field `I` of each element, for pairs (Dask's `pluck(0)` / `pluck(1)`
    /// on tuples): `Bag<(A, B)>::pluck::<0>()` is a `Bag<A>`. Rust has no
    /// field access by name, so a record's field is taken by `map` with a
    /// `#[shoal::func]` that returns it (`fn name(p: Person) -> String`);
    /// JSON is parsed into such a record first (`serde_json::Value` is not
    /// an rkyv type, so a bag cannot hold it). The plucked type must be a
    /// registered element type, as every type a bag holds.
    pub fn pluck<const I: usize>(&self) -> Bag<<T as Pluck<I>>::Out>
    where
        T: Pluck<I>,
    {
        self.then(Kind::Pluck(I as u8), registry::item_name::<T>())
    }

    /// One pipeline task per partition, ending with `end`.
    fn pipelines<R: Data>(&self, end: End) -> Vec<Lazy<R>> {
        self.pipelines_with(|_| end.clone())
    }

    /// One pipeline task per partition, partition `i` ending with `end(i)`.
    fn pipelines_with<R: Data>(&self, end: impl Fn(usize) -> End) -> Vec<Lazy<R>> {
        let output = registry::item_name::<T>().to_string();
        self.parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let (input, stored) = match part {
                    PartSrc::Stored(lazy) => (Origin::Stored { item: self.input.to_string() }, vec![lazy.clone()]),
                    PartSrc::Text { path, start, end } => {
                        (Origin::Text { path: path.clone(), start: *start, end: *end }, Vec::new())
                    }
                    PartSrc::Gzip { path } => (Origin::Gzip { path: path.clone() }, Vec::new()),
                    PartSrc::Gather { key, index, splits } => {
                        (Origin::Gather { key: key.clone(), index: *index }, splits.clone())
                    }
                };
                let plan = Plan::Pipeline { input, steps: self.steps.clone(), output: output.clone(), end: end(i) };
                Run::<R>::HANDLE.lazy((plan, stored))
            })
            .collect()
    }

    /// Write each partition to a text file, one element per line (its
    /// `Display`), and return the files' paths: `pattern` holds one `*`,
    /// replaced by the partition's number, zero-padded so that the names
    /// sort in order (`out/part-*.txt` → `out/part-0000.txt`, …), as Dask's
    /// `to_textfiles`. The directory must exist. The files are written
    /// where the tasks run: on this machine, except in the cluster mode.
    pub fn to_textfiles(&self, client: &Client, pattern: &str) -> Result<Vec<String>>
    where
        T: std::fmt::Display,
    {
        if pattern.matches('*').count() != 1 {
            return Err(invalid(format!(
                "to_textfiles: the pattern `{pattern}` must hold exactly one `*` (the partition's number)"
            )));
        }
        let width = (self.parts.len().saturating_sub(1)).to_string().len().max(4);
        let paths: Vec<String> =
            (0..self.parts.len()).map(|i| pattern.replacen('*', &format!("{i:0width$}"), 1)).collect();
        let writes: Vec<Lazy<u64>> = self.pipelines_with(|i| End::Write { path: paths[i].clone() });
        client.compute_values(&writes)?;
        Ok(paths)
    }

    /// The per-partition tasks of `end`, then a tree of combines.
    fn reduce<R: Data>(&self, end: End) -> Lazy<R> {
        let item = registry::item_name::<T>().to_string();
        let mut level: Vec<Lazy<R>> = self.pipelines(end.clone());
        while level.len() > 1 {
            level = level
                .chunks(self.split_every)
                .map(|chunk| {
                    let inputs: Vec<Lazy<()>> = chunk.iter().map(Lazy::retype).collect();
                    Run::<R>::HANDLE.lazy((Plan::Combine { item: item.clone(), end: end.clone() }, inputs))
                })
                .collect();
        }
        // A bag has at least one partition (its sources refuse none).
        level.pop().unwrap_or_else(|| self.pipelines::<R>(end).swap_remove(0))
    }
}

impl Bag<String> {
    /// The whitespace-separated words of every element, in order (Dask's
    /// `.str.split().flatten()`; the words of `str::split_whitespace`). It
    /// fuses like the other steps, and right after [`read_text`] it splits
    /// the text block in place: no `String` per line, one per word.
    pub fn split_whitespace(&self) -> Bag<String> {
        self.then(Kind::Words, "")
    }
}

/// The type of field `I` of a bag element (see [`Bag::pluck`]): pairs
/// have fields 0 and 1.
pub trait Pluck<const I: usize> {
    /// The field's type.
    type Out: Data;
}

impl<A: Data, B: Data> Pluck<0> for (A, B) {
    type Out = A;
}

impl<A: Data, B: Data> Pluck<1> for (A, B) {
    type Out = B;
}

/// Register `T` as a bag element type (and `(T, u64)`, what `frequencies`
/// makes of it), so that every process can read, store, count, group and
/// sum partitions of it. Write it at module level for a type a bag holds
/// that no `#[shoal::func]` takes or returns.
#[macro_export]
macro_rules! bag_item {
    ($t:ty) => {
        const _: () = {
            $crate::__bag_item_one!($t);
            $crate::__bag_item_one!(($t, u64));
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bag_item_one {
    ($t:ty) => {
        const _: () = {
            fn __name() -> &'static str {
                $crate::bag::__private::item_name::<$t>()
            }
            fn __ops() -> $crate::bag::__private::ItemOps {
                #[allow(unused_imports)]
                use $crate::bag::__private::{
                    DisplayProbe as _, HashProbe as _, NoDisplayProbe as _, NoHashProbe as _, NoPairProbe as _,
                    NoSumProbe as _, PairProbe as _, SumProbe as _,
                };
                let __probe = &$crate::bag::__private::Probe::<$t>::NEW;
                $crate::bag::__private::base_ops::<$t>(
                    __probe.hash_ops(),
                    __probe.sum_ops(),
                    __probe.write_lines(),
                    __probe.pair_ops(),
                )
            }
            #[$crate::__private::linkme::distributed_slice($crate::bag::__private::ITEMS)]
            #[linkme(crate = $crate::__private::linkme)]
            static __ITEM: $crate::bag::__private::ItemEntry =
                $crate::bag::__private::ItemEntry { name: __name, ops: __ops };
        };
    };
}

crate::bag_item!(String);
crate::bag_item!(u64);
crate::bag_item!(i64);
crate::bag_item!(u32);
crate::bag_item!(i32);
crate::bag_item!(usize);
crate::bag_item!(f64);
crate::bag_item!(bool);

/// Used by the code `#[shoal::func]` and `bag_item!` generate; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use super::registry::*;
}
