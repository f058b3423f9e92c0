//! The two tasks every bag graph is made of, registered like any task.
//!
//! - `shoal::bag::run(plan, inputs)`: a [`Plan::Pipeline`] reads its
//!   partition (its one stored input, a block of a text file, or its bucket
//!   of every split of a shuffle), applies the fused element-wise steps in
//!   order, and ends with a per-partition [`End`] (store the partition,
//!   count it, count its distinct elements, split it for a shuffle…): the
//!   whole pipeline is ONE task per partition. A
//!   [`Plan::Combine`] merges up to `split_every` partial results into one,
//!   a level of a reduction tree.
//! - `shoal::bag::source(item, values)`: a partition given by the driver
//!   (`bag::from_vec`), stored as a task result so that every pipeline reads
//!   its partition the same way.
//!
//! Steps and element types are named (see [`super::registry`]), so a plan is
//! plain data that any process of the binary can run.

use std::marker::PhantomData;

use shoal_core::object::{Input, Obj, Value, read_owned};
use shoal_core::registry::{InputError, RunError, TaskEntry};

use super::registry::{self, ItemOps, Part};
use super::text::Words;
use crate::Task;

/// What one element-wise step does.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `map(f)`.
    Map,
    /// `filter(f)`.
    Filter,
    /// `flat_map(f)`.
    FlatMap,
    /// `map_partitions(f)`: `f` takes the whole partition.
    Partition,
    /// `pluck::<I>()` of a pair: the step's `func` names the pair type.
    Pluck(u8),
    /// `split_whitespace()`: every string's words (no function).
    Words,
}

/// One step: what it does, and the registered function it calls.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub kind: Kind,
    /// The `#[shoal::func]`'s registered name (for `pluck`, the pair type's).
    pub func: String,
    /// The registered name of the element type the step takes.
    pub input: String,
}

/// How a partition (or a level of the tree) ends.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Keep the partition (`Vec<T>`); combining concatenates.
    Collect,
    /// Its number of elements (`u64`); combining adds.
    Count,
    /// Its sum (`T`).
    Sum,
    /// Its counts per distinct element (`Vec<(T, u64)>`).
    Frequencies,
    /// Its distinct elements (`Vec<T>`).
    Distinct,
    /// Its elements folded by `binop` from the accumulator's default;
    /// combining folds the partial results with `combine`.
    Fold {
        /// `fn(acc: X, x: T) -> X`'s registered name.
        binop: String,
        /// `fn(a: X, b: X) -> X`'s registered name.
        combine: String,
    },
    /// Write it to the file `path`, one element per line (`u64`: how many).
    Write {
        /// The file.
        path: String,
    },
    /// Its `k` largest by the function `key`, largest first (`Vec<T>`).
    TopK {
        /// How many.
        k: u64,
        /// The key function's registered name.
        key: String,
    },
    /// Its elements folded by `binop` per key (`Vec<(K, X)>`); combining
    /// merges equal keys' accumulators with `combine`.
    FoldBy {
        /// `fn(x: T) -> K`'s registered name.
        key: String,
        /// `fn(acc: X, x: T) -> X`'s registered name.
        binop: String,
        /// `fn(a: X, b: X) -> X`'s registered name.
        combine: String,
        /// `K`'s registered name.
        key_item: String,
        /// `X`'s registered name.
        acc_item: String,
        /// `(K, X)`'s registered name.
        pair_item: String,
    },
    /// Split into `n` buckets by the hash of `key` (a shuffle's first
    /// half: stored `Vec<Vec<T>>`); no combine.
    Split {
        /// `fn(x: T) -> K`'s registered name.
        key: String,
        /// How many buckets (the shuffle's output partitions).
        n: u64,
    },
}

/// Where a pipeline's partition comes from.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The task's one input, a stored `Vec` of this element type.
    Stored {
        /// The element type's registered name.
        item: String,
    },
    /// The lines starting in `[start, end)` of a text file (`read_text`).
    Text {
        /// The file.
        path: String,
        /// The block's first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Every line of a gzip file (`read_text` of a `.gz`: one partition).
    Gzip {
        /// The file.
        path: String,
    },
    /// A shuffle's second half: bucket `index` of every input (each an
    /// [`End::Split`]), grouped by `key` (`(K, Vec<T>)` pairs).
    Gather {
        /// `fn(x: T) -> K`'s registered name.
        key: String,
        /// Which bucket (the output partition).
        index: u64,
    },
}

/// What a `shoal::bag::run` task does.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// One partition through the fused steps, then `end`.
    Pipeline {
        /// Where the partition comes from.
        input: Origin,
        /// The steps, in order.
        steps: Vec<Step>,
        /// The element type after the last step.
        output: String,
        /// What the task returns.
        end: End,
    },
    /// Several partial results of `end` merged into one.
    Combine {
        /// The element type reduced.
        item: String,
        /// The reduction.
        end: End,
    },
}

fn input_error(msg: impl Into<String>) -> RunError {
    RunError::Input(InputError(msg.into()))
}

fn missing(what: &str, item: &str) -> InputError {
    InputError(format!(
        "the bag element type `{}` has no {what} (a bug in shoal::bag: the typed API checks it)",
        registry::short_type_name(item)
    ))
}

fn run(inputs: &[Input]) -> Result<Obj, RunError> {
    let [plan, parts] = inputs else {
        return Err(input_error(format!("shoal::bag::run takes 2 arguments, got {}", inputs.len())));
    };
    let [plan] = plan.objects() else { return Err(input_error("shoal::bag::run: the plan is one value")) };
    let plan: Plan = read_owned(&**plan)?;
    let parts = parts.objects();
    match plan {
        Plan::Pipeline { input, mut steps, output, end } => {
            let mut part: Part = match (&input, parts) {
                (Origin::Stored { item }, [part]) => (registry::item(item)?.read)(&**part)?,
                (Origin::Text { path, start, end }, []) => text_part(
                    super::text::read_lines(path, *start, *end)
                        .map_err(|e| RunError::Returned(shoal_core::failure::TaskError::from_error(e)))?,
                    &mut steps,
                ),
                (Origin::Gzip { path }, []) => text_part(
                    super::text::read_gzip_lines(path)
                        .map_err(|e| RunError::Returned(shoal_core::failure::TaskError::from_error(e)))?,
                    &mut steps,
                ),
                (Origin::Gather { key, index }, splits) => {
                    let objs: Vec<&dyn shoal_core::object::Object> = splits.iter().map(|o| &**o).collect();
                    let index = usize::try_from(*index).map_err(|_| input_error("a shuffle bucket past usize"))?;
                    (key_fns(key)?.gather)(&objs, index)?
                }
                _ => {
                    return Err(input_error(format!(
                        "a bag pipeline from {input:?} got {} stored partitions (a bug in shoal::bag)",
                        parts.len()
                    )));
                }
            };
            for step in &steps {
                part = apply(step, part)?;
            }
            Ok(finish(&end, &output, registry::item(&output)?, part)?)
        }
        Plan::Combine { item, end } => {
            let ops = registry::item(&item)?;
            let objs: Vec<&dyn shoal_core::object::Object> = parts.iter().map(|o| &**o).collect();
            Ok(combine(&end, &item, ops, &objs)?)
        }
    }
}

/// A text block as a partition: its lines, or, when the first step splits
/// them into words, its words straight from the block (that step is then
/// done: no `String` per line).
fn text_part(lines: super::text::Lines, steps: &mut Vec<Step>) -> Part {
    if steps.first().is_some_and(|s| s.kind == Kind::Words) {
        steps.remove(0);
        Box::new(lines.into_words())
    } else {
        registry::streamed(lines)
    }
}

/// One element-wise step applied to a partition.
fn apply(step: &Step, part: Part) -> Result<Part, InputError> {
    if step.kind == Kind::Words {
        return registry::split_words(part);
    }
    if let Kind::Pluck(i) = step.kind {
        let pair = registry::item(&step.func)?.pair.ok_or_else(|| missing("pair operations", &step.func))?;
        return if i == 0 { (pair.first)(part) } else { (pair.second)(part) };
    }
    let f = registry::func(&step.func)?;
    let missing = |what: &str| InputError(format!("`{}` cannot be used with {what}", step.func));
    let adapter = match step.kind {
        Kind::Map => f.map.ok_or_else(|| missing("map (it takes two parameters)"))?,
        Kind::Partition => {
            let whole = f.partition.ok_or_else(|| missing("map_partitions (it takes two parameters)"))?;
            // It takes the whole partition: the stream so far is collected.
            return whole((registry::item(&step.input)?.collect)(part)?);
        }
        Kind::Filter => f.filter.ok_or_else(|| missing("filter (it does not return bool)"))?,
        Kind::FlatMap => f.flat_map.ok_or_else(|| missing("flat_map (it does not return a collection)"))?,
        Kind::Pluck(_) | Kind::Words => return Err(missing("this step (a bug in shoal::bag: it names no function)")),
    };
    adapter(part)
}

fn key_fns(key: &str) -> Result<registry::KeyFns, InputError> {
    registry::func(key)?
        .key
        .ok_or_else(|| InputError(format!("`{key}` cannot be a key (it does not return Eq + Hash)")))
}

fn fold_fns(binop: &str) -> Result<registry::FoldFns, InputError> {
    registry::func(binop)?
        .fold
        .ok_or_else(|| InputError(format!("`{binop}` cannot fold (not `fn(acc: X, x: T) -> X`)")))
}

fn merge_fns(combine: &str) -> Result<registry::MergeFns, InputError> {
    registry::func(combine)?
        .merge
        .ok_or_else(|| InputError(format!("`{combine}` cannot combine (not `fn(a: X, b: X) -> X`)")))
}

/// The registered operations a `foldby` needs: of `K`, `X` and `(K, X)`.
struct FoldBy {
    keys: ItemOps,
    hash: registry::HashOps,
    accs: ItemOps,
    pairs: ItemOps,
    pair: registry::PairOps,
}

impl FoldBy {
    fn new(key_item: &str, acc_item: &str, pair_item: &str) -> Result<FoldBy, InputError> {
        let keys = registry::item(key_item)?;
        let pairs = registry::item(pair_item)?;
        Ok(FoldBy {
            keys,
            hash: keys.hash.ok_or_else(|| missing("hash", key_item))?,
            accs: registry::item(acc_item)?,
            pairs,
            pair: pairs.pair.ok_or_else(|| missing("pair operations", pair_item))?,
        })
    }

    /// Distinct keys and accumulators, stored as `Vec<(K, X)>`.
    fn store(&self, keys: Part, accs: Part) -> Result<Obj, InputError> {
        (self.pairs.store)((self.pair.zip)(keys, accs)?)
    }
}

/// How many groups `ids` (each element's group) name.
fn groups(ids: &[usize]) -> usize {
    ids.iter().max().map_or(0, |m| m + 1)
}

/// The end of one partition's pipeline.
fn finish(end: &End, item: &str, ops: ItemOps, part: Part) -> Result<Obj, InputError> {
    match end {
        End::Collect => (ops.store)(part),
        End::Count => Ok(Value::shared((ops.count)(part)? as u64)),
        End::Sum => (ops.sum.ok_or_else(|| missing("sum", item))?.sum)(part),
        // The words of `split_whitespace` are counted in place (one
        // `String` per distinct word); they are `String`s, so the result
        // is what `String`'s own operations would store.
        End::Frequencies => match part.downcast::<Words>() {
            Ok(words) => Ok(Value::shared(words.frequencies())),
            Err(part) => (ops.hash.ok_or_else(|| missing("hash", item))?.frequencies)(part),
        },
        End::Distinct => match part.downcast::<Words>() {
            Ok(words) => Ok(Value::shared(words.distinct())),
            Err(part) => (ops.hash.ok_or_else(|| missing("hash", item))?.distinct)(part),
        },
        End::TopK { k, key } => topk(ops, key, *k, part),
        End::Write { path } => {
            let n = (ops.write_lines.ok_or_else(|| missing("Display", item))?)(part, std::path::Path::new(path))?;
            Ok(Value::shared(n))
        }
        End::Fold { binop, .. } => (fold_fns(binop)?.fold)(part),
        End::FoldBy { key, binop, key_item, acc_item, pair_item, .. } => {
            let by = FoldBy::new(key_item, acc_item, pair_item)?;
            // The keys are computed from the whole partition (a stream is collected).
            let part = (ops.collect)(part)?;
            let keys = (key_fns(key)?.keys)(&part)?;
            let (distinct, ids) = (by.hash.group)(keys)?;
            let accs = (fold_fns(binop)?.fold_groups)(part, &ids, groups(&ids))?;
            by.store(distinct, accs)
        }
        End::Split { key, n } => {
            (key_fns(key)?.split)(part, usize::try_from(*n).map_err(|_| InputError("a shuffle past usize".into()))?)
        }
    }
}

fn topk(ops: ItemOps, key: &str, k: u64, part: Part) -> Result<Obj, InputError> {
    let f = registry::func(key)?;
    let topk = f.topk.ok_or_else(|| InputError(format!("`{key}` cannot be a topk key (it does not return Ord)")))?;
    (ops.store)(topk(part, usize::try_from(k).unwrap_or(usize::MAX))?)
}

/// One level of a reduction tree.
fn combine(end: &End, item: &str, ops: ItemOps, objs: &[&dyn shoal_core::object::Object]) -> Result<Obj, InputError> {
    let concat = || -> Result<Part, InputError> {
        let mut all = (ops.read)(*objs.first().ok_or_else(|| InputError("a bag combine with no input".into()))?)?;
        for obj in &objs[1..] {
            (ops.append)(&mut all, (ops.read)(*obj)?)?;
        }
        Ok(all)
    };
    match end {
        End::Collect => (ops.store)(concat()?),
        End::Count => {
            let mut n = 0u64;
            for obj in objs {
                n += read_owned::<u64>(*obj)?;
            }
            Ok(Value::shared(n))
        }
        End::Sum => (ops.sum.ok_or_else(|| missing("sum", item))?.merge)(objs),
        End::Frequencies => (ops.hash.ok_or_else(|| missing("hash", item))?.merge_frequencies)(objs),
        End::Distinct => (ops.hash.ok_or_else(|| missing("hash", item))?.merge_distinct)(objs),
        End::TopK { k, key } => topk(ops, key, *k, concat()?),
        End::Write { .. } => Err(InputError("a bag write has no combine step (a bug in shoal::bag)".into())),
        End::Fold { combine, .. } => (merge_fns(combine)?.merge)(objs),
        End::FoldBy { combine, key_item, acc_item, pair_item, .. } => {
            let ops = FoldBy::new(key_item, acc_item, pair_item)?;
            let (mut keys, mut accs): (Option<Part>, Option<Part>) = (None, None);
            for obj in objs {
                let (k, x) = (ops.pair.unzip)((ops.pairs.read)(*obj)?)?;
                match (&mut keys, &mut accs) {
                    (Some(keys), Some(accs)) => {
                        (ops.keys.append)(keys, k)?;
                        (ops.accs.append)(accs, x)?;
                    }
                    _ => (keys, accs) = (Some(k), Some(x)),
                }
            }
            let (Some(keys), Some(accs)) = (keys, accs) else {
                return Err(InputError("a bag combine with no input (a bug in shoal::bag)".into()));
            };
            let (distinct, ids) = (ops.hash.group)(keys)?;
            let accs = (merge_fns(combine)?.merge_groups)(accs, &ids, groups(&ids))?;
            ops.store(distinct, accs)
        }
        End::Split { .. } => Err(InputError("a bag shuffle's split has no combine step (a bug in shoal::bag)".into())),
    }
}

fn source(inputs: &[Input]) -> Result<Obj, RunError> {
    let [item, values] = inputs else {
        return Err(input_error(format!("shoal::bag::source takes 2 arguments, got {}", inputs.len())));
    };
    let ([item], [values]) = (item.objects(), values.objects()) else {
        return Err(input_error("shoal::bag::source takes two values"));
    };
    let ops = registry::item(&read_owned::<String>(&**item)?)?;
    Ok((ops.store)((ops.read)(&**values)?)?)
}

#[shoal_core::registry::linkme::distributed_slice(shoal_core::registry::TASKS)]
#[linkme(crate = shoal_core::registry::linkme)]
static RUN: TaskEntry =
    TaskEntry::new("shoal::bag::run", "(Plan, Vec<partition>) -> partition", concat!(file!(), ":", line!()), run);

#[shoal_core::registry::linkme::distributed_slice(shoal_core::registry::TASKS)]
#[linkme(crate = shoal_core::registry::linkme)]
static SOURCE: TaskEntry =
    TaskEntry::new("shoal::bag::source", "(String, Vec<T>) -> Vec<T>", concat!(file!(), ":", line!()), source);

/// The handle of `shoal::bag::run` whose result is an `O`. Its inputs are
/// typed `()` here: their element types travel in the plan, by name.
pub(crate) struct Run<O>(PhantomData<fn() -> O>);

impl<O> Run<O> {
    pub(crate) const HANDLE: Run<O> = Run(PhantomData);
}

impl<O> Clone for Run<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for Run<O> {}

impl<O: crate::Data> Task for Run<O> {
    type Params = (Plan, Vec<()>);
    type Output = O;

    fn entry(&self) -> &'static TaskEntry {
        &RUN
    }
}

/// The handle of `shoal::bag::source` for a partition of `T`.
pub(crate) struct Source<T>(PhantomData<fn() -> T>);

impl<T> Source<T> {
    pub(crate) const HANDLE: Source<T> = Source(PhantomData);
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Source<T> {}

impl<T: crate::Data> Task for Source<T> {
    type Params = (String, Vec<T>);
    type Output = Vec<T>;

    fn entry(&self) -> &'static TaskEntry {
        &SOURCE
    }
}
