//! Lazy values: the `dask.delayed` of shoal.
//!
//! `task.lazy(args)` runs nothing: it makes a node that remembers the task
//! and its arguments (values, futures, or other lazy nodes). Nodes compose
//! into a graph, and `lazy.compute(&client)` (or `client.compute(&lazy)`)
//! submits the whole graph at once, so the scheduler can order it for low
//! memory and run independent branches in parallel.
//!
//! A node's key is fixed when it is made (a hash of the task and of its
//! arguments' tokens for a pure call), so equal calls built twice are
//! computed once.
//!
//! `Lazy::value(v)` makes a node of a plain value, so that a list of lazy
//! values may mix literals with computed nodes (`dask.delayed`'s
//! `f([x, 1, y])`). It is a node of the built-in task `shoal::value`, whose
//! result is its argument object itself: the scheduler, the transports and
//! every mode see an ordinary task, and nothing below the facade changes.
//! In the threads mode that result *is* the argument (no copy); in the
//! processes mode the value travels as any literal argument does and is
//! published as the node's result. Equal values (of one type) are one node.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use shoal_core::Key;
use shoal_core::object::{Data, Input, Obj};
use shoal_core::registry::{InputError, RunError, TaskEntry};
use shoal_core::scheduler::{Dep, SeededState};

use crate::Task;
use crate::args::{Arg, DepArg, IntoArgs, One, Tokenizer};
use crate::client::{Client, SubmitOptions};
use crate::error::Result;
use crate::future::Future;
use crate::future::FutureRef;
use shoal_core::driver::{GraphNode, NodeArg};

/// A value that a task will compute when its graph is computed.
pub struct Lazy<T> {
    pub(crate) node: Arc<LazyNode>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Lazy { node: Arc::clone(&self.node), _type: PhantomData }
    }
}

impl<T> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lazy({})", self.node.key)
    }
}

#[doc(hidden)]
pub struct LazyNode {
    pub(crate) key: Key,
    pub(crate) args: Vec<Arg>,
    pub(crate) options: SubmitOptions,
}

impl Drop for LazyNode {
    /// Drop long chains of nodes without recursion (a chain of a million
    /// lazy values would otherwise overflow the stack).
    fn drop(&mut self) {
        let mut stack: Vec<Arg> = std::mem::take(&mut self.args);
        while let Some(arg) = stack.pop() {
            let deps = match arg {
                Arg::Dep(dep) => vec![dep],
                Arg::List(deps) => deps,
                Arg::Value(_) => continue,
            };
            for dep in deps {
                if let DepArg::Lazy(node) = dep
                    && let Ok(mut node) = Arc::try_unwrap(node)
                {
                    stack.append(&mut node.args);
                }
            }
        }
    }
}

impl<T> Lazy<T> {
    /// The same node under another result type: the bag's tasks pass
    /// partitions whose element types travel by name (see `bag::run`).
    pub(crate) fn retype<U>(&self) -> Lazy<U> {
        Lazy { node: Arc::clone(&self.node), _type: PhantomData }
    }

    /// The number of tasks of the graph that ends here (this node and every
    /// lazy node it needs, each counted once): what computing it submits,
    /// short of results already computed.
    pub fn graph_len(&self) -> usize {
        let mut graph = GraphBuilder::new();
        graph.add_lazy(&self.node, true);
        graph.nodes.len()
    }
}

impl<T: Data> Lazy<T> {
    /// Never fails, so that a `dask.delayed`-style loop needs no `?` per
    /// node: the one thing that could go wrong, an invalid task registry,
    /// also refuses every `Client`, and [`Client::compute_all`] checks it
    /// again, so such a node is never computed (its key names no task).
    pub(crate) fn new<K: Task<Output = T>, A: IntoArgs<K::Params>>(
        task: K,
        args: A,
        options: &SubmitOptions,
    ) -> Lazy<T> {
        let entry = task.entry();
        let func = entry.index().unwrap_or(u32::MAX);
        let mut tokens = Tokenizer::new(options.pure && task.pure(), entry);
        let args = args.into_args(&mut tokens);
        let key = Key { func, token: tokens.finish() };
        let node = LazyNode { key, args, options: options.clone() };
        Lazy { node: Arc::new(node), _type: PhantomData }
    }

    /// A node whose value is `value`: for a list that mixes plain values
    /// with computed ones (`total.lazy(vec![Lazy::value(1), x, y])`), or
    /// wherever a `Lazy<T>` is wanted. It is one task of the built-in
    /// `shoal::value` (see the module docs); equal values share it.
    pub fn value(value: T) -> Lazy<T> {
        Lazy::new(Literal::new(), value, &SubmitOptions::default())
    }

    /// A node whose value is `future`'s result: one `shoal::value` task
    /// that depends on it and returns its object (no copy), so a graph can
    /// start from results computed already (`bag::from_futures`).
    pub(crate) fn of_future(future: &Future<T>) -> Lazy<T> {
        Lazy::new(Literal::new(), future, &SubmitOptions::default())
    }

    /// This node's key.
    pub fn key(&self) -> Key {
        self.node.key
    }

    /// Compute the graph that ends here and return the value (like
    /// `dask.compute`), with a progress bar over every task of the graph
    /// if the client shows one.
    pub fn compute(&self, client: &Client) -> Result<T> {
        client.compute_values(std::slice::from_ref(self))?.pop().ok_or(crate::Error::Closed)
    }
}

/// `shoal::value`'s body: the result is the argument's object itself.
fn literal(inputs: &[Input]) -> Result<Obj, RunError> {
    match inputs {
        [Input::One(obj)] => Ok(Arc::clone(obj)),
        _ => Err(RunError::Input(InputError("shoal::value takes one value (a bug in shoal)".into()))),
    }
}

#[shoal_core::registry::linkme::distributed_slice(shoal_core::registry::TASKS)]
#[linkme(crate = shoal_core::registry::linkme)]
static LITERAL: TaskEntry = TaskEntry::new("shoal::value", "(T) -> T", concat!(file!(), ":", line!()), literal);

/// The handle of `shoal::value` for a `T` (`Lazy::value`, `Client::scatter`).
pub(crate) struct Literal<T>(PhantomData<fn() -> T>);

impl<T> Literal<T> {
    pub(crate) fn new() -> Literal<T> {
        Literal(PhantomData)
    }
}

impl<T> Clone for Literal<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Literal<T> {}

impl<T: Data> Task for Literal<T> {
    type Params = One<T>;
    type Output = T;

    fn entry(&self) -> &'static TaskEntry {
        &LITERAL
    }
}

/// Turns argument trees (values, futures, lazy nodes) into the flat,
/// topologically ordered node list an engine submits.
pub(crate) struct GraphBuilder {
    pub nodes: Vec<GraphNode>,
    /// Lazy nodes already added, by key (equal calls are one node).
    seen: HashMap<Key, usize, SeededState>,
    /// Futures named by the graph, kept alive until it is submitted.
    pub futures: Vec<FutureRef>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder { nodes: Vec::new(), seen: HashMap::default(), futures: Vec::new() }
    }

    /// Add one call (with its lazy inputs, first) and return its index;
    /// `item` is the call's index in its `map`, if a `map` makes it.
    pub fn add_call(
        &mut self,
        key: Key,
        args: Vec<Arg>,
        options: &SubmitOptions,
        wanted: bool,
        item: Option<u32>,
    ) -> usize {
        let args = args.into_iter().map(|a| self.convert_owned(a)).collect();
        let i = self.push(key, args, options, wanted);
        self.nodes[i].item = item;
        i
    }

    /// [`convert`](Self::convert) for an argument we own: its futures move
    /// into `self.futures` instead of being cloned.
    fn convert_owned(&mut self, arg: Arg) -> NodeArg {
        match arg {
            Arg::Value(obj) => NodeArg::Value(obj),
            Arg::Dep(dep) => NodeArg::Dep(self.dep_owned(dep)),
            Arg::List(deps) => NodeArg::List(deps.into_iter().map(|d| self.dep_owned(d)).collect()),
        }
    }

    fn dep_owned(&mut self, dep: DepArg) -> Dep {
        match dep {
            DepArg::Future(core) => {
                let id = core.id;
                self.futures.push(core);
                Dep::Task(id)
            }
            DepArg::Lazy(node) => self.dep(&DepArg::Lazy(node)),
        }
    }

    /// Add a lazy node and everything it needs; iterative post-order so
    /// deep graphs cannot overflow the stack.
    pub fn add_lazy(&mut self, root: &Arc<LazyNode>, wanted: bool) -> usize {
        if let Some(&i) = self.seen.get(&root.key) {
            if wanted {
                self.nodes[i].wanted = true;
            }
            return i;
        }
        // (node, whether its inputs have been pushed already)
        let mut stack: Vec<(&Arc<LazyNode>, bool)> = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if self.seen.contains_key(&node.key) {
                continue;
            }
            if !expanded {
                stack.push((node, true));
                let mut pending = Vec::new();
                for arg in &node.args {
                    collect_lazy(arg, &mut pending);
                }
                for input in pending.into_iter().rev() {
                    if !self.seen.contains_key(&input.key) {
                        stack.push((input, false));
                    }
                }
                continue;
            }
            let args = node.args.iter().map(|a| self.convert(a)).collect();
            let i = self.push(node.key, args, &node.options, false);
            self.seen.insert(node.key, i);
        }
        let i = self.seen[&root.key];
        if wanted {
            self.nodes[i].wanted = true;
        }
        i
    }

    fn push(&mut self, key: Key, args: Vec<NodeArg>, options: &SubmitOptions, wanted: bool) -> usize {
        let i = self.nodes.len();
        self.nodes.push(GraphNode {
            key,
            args,
            wanted,
            priority: options.priority,
            retries: options.retries,
            item: None,
        });
        i
    }

    /// Convert an argument whose lazy inputs are all added already.
    fn convert(&mut self, arg: &Arg) -> NodeArg {
        match arg {
            Arg::Value(obj) => NodeArg::Value(Arc::clone(obj)),
            Arg::Dep(dep) => NodeArg::Dep(self.dep(dep)),
            Arg::List(deps) => NodeArg::List(deps.iter().map(|d| self.dep(d)).collect()),
        }
    }

    fn dep(&mut self, dep: &DepArg) -> Dep {
        match dep {
            DepArg::Future(core) => {
                self.futures.push(core.clone());
                Dep::Task(core.id)
            }
            DepArg::Lazy(node) => match self.seen.get(&node.key) {
                Some(&i) => Dep::Node(i),
                None => Dep::Node(self.add_lazy(node, false)),
            },
        }
    }
}

fn collect_lazy<'a>(arg: &'a Arg, out: &mut Vec<&'a Arc<LazyNode>>) {
    let mut push = |dep: &'a DepArg| {
        if let DepArg::Lazy(node) = dep {
            out.push(node);
        }
    };
    match arg {
        Arg::Dep(dep) => push(dep),
        Arg::List(deps) => deps.iter().for_each(push),
        Arg::Value(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::object::Value;

    #[test]
    fn a_value_node_s_result_is_its_argument_object_itself() {
        let arg: Obj = Value::shared(vec![1u8; 1000]);
        let result = literal(&[Input::One(Arc::clone(&arg))]).unwrap();
        assert!(Arc::ptr_eq(&arg, &result), "no copy, not even of the Arc's contents");
        assert!(literal(&[]).is_err());
    }
}
