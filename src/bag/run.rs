//! The two tasks every bag graph is made of, registered like any task.
//!
//! - `shoal::bag::run(plan, inputs)`: a [`Plan::Pipeline`] reads its one
//!   input partition, applies the fused element-wise steps in order, and ends
//!   with a per-partition [`End`] (store the partition, count it, count its
//!   distinct elements…): the whole pipeline is ONE task per partition. A
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
}

/// One step: what it does, and the registered function it calls.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub kind: Kind,
    /// The `#[shoal::func]`'s registered name.
    pub func: String,
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
    InputError(format!("the bag element type `{item}` has no {what} (a bug in shoal::bag: the typed API checks it)"))
}

fn run(inputs: &[Input]) -> Result<Obj, RunError> {
    let [plan, parts] = inputs else {
        return Err(input_error(format!("shoal::bag::run takes 2 arguments, got {}", inputs.len())));
    };
    let [plan] = plan.objects() else { return Err(input_error("shoal::bag::run: the plan is one value")) };
    let plan: Plan = read_owned(&**plan)?;
    let parts = parts.objects();
    match plan {
        Plan::Pipeline { input, steps, output, end } => {
            let mut part: Part = match (&input, parts) {
                (Origin::Stored { item }, [part]) => (registry::item(item)?.read)(&**part)?,
                (Origin::Text { path, start, end }, []) => Box::new(
                    super::text::read_lines(path, *start, *end)
                        .map_err(|e| RunError::Returned(shoal_core::failure::TaskError::from_error(e)))?,
                ),
                _ => {
                    return Err(input_error(format!(
                        "a bag pipeline from {input:?} got {} stored partitions (a bug in shoal::bag)",
                        parts.len()
                    )));
                }
            };
            for step in &steps {
                let f = registry::func(&step.func)?;
                let missing = |what: &str| InputError(format!("`{}` cannot be used with {what}", step.func));
                part = match step.kind {
                    Kind::Map => (f.map.ok_or_else(|| missing("map (it takes two parameters)"))?)(part)?,
                    Kind::Partition => {
                        (f.partition.ok_or_else(|| missing("map_partitions (it takes two parameters)"))?)(part)?
                    }
                    Kind::Filter => (f.filter.ok_or_else(|| missing("filter (it does not return bool)"))?)(part)?,
                    Kind::FlatMap => {
                        (f.flat_map.ok_or_else(|| missing("flat_map (it does not return a collection)"))?)(part)?
                    }
                };
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

/// The end of one partition's pipeline.
fn finish(end: &End, item: &str, ops: ItemOps, part: Part) -> Result<Obj, InputError> {
    match end {
        End::Collect => (ops.store)(part),
        End::Count => Ok(Value::shared((ops.len)(&part)? as u64)),
        End::Sum => (ops.sum.ok_or_else(|| missing("sum", item))?.sum)(part),
        End::Frequencies => (ops.hash.ok_or_else(|| missing("hash", item))?.frequencies)(part),
        End::Distinct => (ops.hash.ok_or_else(|| missing("hash", item))?.distinct)(part),
        End::TopK { k, key } => topk(ops, key, *k, part),
        End::Write { path } => {
            let n = (ops.write_lines.ok_or_else(|| missing("Display", item))?)(part, std::path::Path::new(path))?;
            Ok(Value::shared(n))
        }
        End::Fold { binop, .. } => {
            let f = registry::func(binop)?;
            (f.fold.ok_or_else(|| InputError(format!("`{binop}` cannot fold (not `fn(acc: X, x: T) -> X`)")))?)(part)
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
        End::Fold { combine, .. } => {
            let f = registry::func(combine)?;
            (f.merge.ok_or_else(|| InputError(format!("`{combine}` cannot combine (not `fn(a: X, b: X) -> X`)")))?)(
                objs,
            )
        }
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
