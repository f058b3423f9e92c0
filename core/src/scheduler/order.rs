//! Static ordering of one submission, in the spirit of `dask.order`.
//!
//! Ready tasks run in priority order, and inside one submission the last
//! part of the priority is the order index computed here. The goal is the
//! one `dask.order` has: run the graph as a single thread would that keeps
//! as few results alive as it can — finish what was started before opening
//! new work, so that a result is consumed soon after it is produced.
//!
//! # The walk
//!
//! It is the walk of `dask.order` (Rocklin's original algorithm, before its
//! 2024 rewrite), a depth-first search that goes down to what a node needs
//! and, once a node is numbered, *up* to what it unlocks:
//!
//! 1. Start from the sinks (nodes nothing in the submission needs), the one
//!    with the largest subgraph first, then in submission order.
//! 2. A node whose dependencies are not all numbered goes back on the stack
//!    under those dependencies, the heaviest (largest subgraph) on top:
//!    start the hard part first, so its result waits less for its partner.
//! 3. A numbered node climbs to its dependents that are not numbered, those
//!    with the fewest dependents of their own (the least new work) first:
//!    the ones it made ready run before anything else on the stack (so a
//!    node's ready users all finish before new work opens), then those that
//!    miss one more input ([`MAX_MISSING_TO_CLIMB`]: popping one walks down
//!    into that input right away). One that still waits for many is reached
//!    when its last input is done. (`dask.order`'s original walk
//!    climbs to every dependent not already waiting on the stack, which
//!    opens a whole new reduction as soon as one of its inputs is done.)
//!
//! Step 3 is what a plain post-order walk from the sinks lacks. On `(x +
//! x.T).mean(axis=0)` over n × n blocks, block `(i, j)` needs `x[i, j]` and
//! `x[j, i]`: a walk that only goes down produces row `j` of `x` while it
//! does column `j`, and keeps it until column `i` comes, O(n²) blocks alive;
//! going up from `x[j, i]` to both of its users finishes them while their
//! inputs are fresh, and keeps O(1) blocks alive (`live_set` below checks
//! it). For a tree reduction it is the depth-first post-order
//! (`leaf0, leaf1, parent01, leaf2, …`), for independent nodes (a `map`)
//! plain submission order.
//!
//! The walk keeps its own stack on the heap (a chain of millions of nodes
//! must not overflow the thread's stack), and is O((nodes + edges) log
//! fan-out): a node is pushed once per input it waits for at most (step 3
//! skips the others), and each push of inputs sorts them.

use super::{Dep, NewTask};

/// Step 3 climbs to a user only if it misses at most this many inputs
/// besides the one just numbered: finishing it is then close (one more
/// input's subgraph), while a user that still misses many (a column's
/// aggregate, a total over a whole map) would open new work before the
/// current one is done; it is reached from its last input instead.
const MAX_MISSING_TO_CLIMB: u32 = 1;

/// `order[i]` of a node not numbered yet.
const UNNUMBERED: u32 = u32::MAX;

/// The largest submission [`order`] can number (the sentinel above is never
/// a valid index).
pub(super) const MAX_NODES: usize = UNNUMBERED as usize;

/// A graph's edges both ways, as flat arrays (compressed sparse rows): a
/// million-node submission must not cost a `Vec` per node.
struct Edges {
    /// `deps[dep_at[i]..dep_at[i + 1]]` are node `i`'s inputs, each once.
    dep_at: Vec<u32>,
    deps: Vec<u32>,
    /// `users[user_at[i]..user_at[i + 1]]` are the nodes that need `i`.
    user_at: Vec<u32>,
    users: Vec<u32>,
}

impl Edges {
    fn new(graph: &[NewTask]) -> Edges {
        let n = graph.len();
        let mut dep_at = Vec::with_capacity(n + 1);
        let mut deps = Vec::new();
        let mut user_count = vec![0u32; n + 1];
        dep_at.push(0);
        for (i, node) in graph.iter().enumerate() {
            let start = deps.len();
            for dep in &node.deps {
                // Within-submission inputs only, each once (a node may name
                // one twice); `submit` checked `j < i`.
                if let Dep::Node(j) = *dep
                    && !deps[start..].contains(&(j as u32))
                {
                    deps.push(j as u32);
                    user_count[j] += 1;
                }
            }
            debug_assert!(deps[start..].iter().all(|&j| (j as usize) < i));
            dep_at.push(deps.len() as u32);
        }
        let mut user_at = vec![0u32; n + 1];
        for i in 0..n {
            user_at[i + 1] = user_at[i] + user_count[i];
        }
        let mut fill = user_at.clone();
        let mut users = vec![0u32; deps.len()];
        for i in 0..n {
            for &j in &deps[dep_at[i] as usize..dep_at[i + 1] as usize] {
                users[fill[j as usize] as usize] = i as u32;
                fill[j as usize] += 1;
            }
        }
        Edges { dep_at, deps, user_at, users }
    }

    fn deps(&self, i: usize) -> &[u32] {
        &self.deps[self.dep_at[i] as usize..self.dep_at[i + 1] as usize]
    }

    fn users(&self, i: usize) -> &[u32] {
        &self.users[self.user_at[i] as usize..self.user_at[i + 1] as usize]
    }
}

/// The order index of every node of `graph`: a permutation of `0..len`
/// that numbers every node after all its inputs.
///
/// `graph` must be topologically sorted (every `Dep::Node(j)` of node `i`
/// has `j < i`) and hold at most [`MAX_NODES`] nodes; `submit` checks both
/// before calling this.
pub(super) fn order(graph: &[NewTask]) -> Vec<u32> {
    debug_assert!(graph.len() <= MAX_NODES);
    let n = graph.len();
    // Independent nodes (a `map`'s chunk: inputs only from earlier
    // submissions) run in submission order, which is what the walk would
    // give them; skip building it for the most common submission.
    if graph.iter().all(|node| node.deps.iter().all(|d| matches!(d, Dep::Task(_)))) {
        return (0..n as u32).collect();
    }
    let edges = Edges::new(graph);
    // Subgraph sizes, counted with repetition (a shared input counts once
    // per path), saturating: only their ranking matters.
    let mut below = vec![1u64; n];
    for i in 0..n {
        below[i] = edges.deps(i).iter().fold(1u64, |acc, &j| acc.saturating_add(below[j as usize]));
    }
    let mut above = vec![1u64; n];
    for i in (0..n).rev() {
        above[i] = edges.users(i).iter().fold(1u64, |acc, &u| acc.saturating_add(above[u as usize]));
    }
    // Inputs not numbered yet.
    let mut waiting: Vec<u32> = (0..n).map(|i| edges.deps(i).len() as u32).collect();
    let mut order = vec![UNNUMBERED; n];
    let mut next: u32 = 0;

    // Popped last = run first: the stack is pushed in the reverse of the
    // wanted order. Ties go to the earlier submitted node.
    let mut stack: Vec<u32> = (0..n as u32).filter(|&i| edges.users(i as usize).is_empty()).collect();
    stack.sort_by_key(|&i| (below[i as usize], std::cmp::Reverse(i)));
    // Users whose inputs are all numbered: they run before anything on
    // `stack`, so a node's ready users finish before a user that still
    // misses an input opens new work (step 3).
    let mut ready: Vec<u32> = Vec::new();
    let mut scratch: Vec<u32> = Vec::new();
    while let Some(item) = ready.pop().or_else(|| stack.pop()) {
        let item = item as usize;
        if order[item] != UNNUMBERED {
            continue;
        }
        if waiting[item] > 0 {
            // Step 2: down into the inputs still missing, heaviest on top.
            stack.push(item as u32);
            scratch.clear();
            scratch.extend(edges.deps(item).iter().copied().filter(|&j| order[j as usize] == UNNUMBERED));
            scratch.sort_by_key(|&j| (below[j as usize], std::cmp::Reverse(j)));
            stack.extend_from_slice(&scratch);
            continue;
        }
        order[item] = next;
        next += 1;
        // Step 3: up to what it unlocks, the least new work on top: ready
        // users first, then those that miss one more input.
        let first_ready = ready.len();
        scratch.clear();
        for &u in edges.users(item) {
            let u = u as usize;
            waiting[u] -= 1;
            if order[u] != UNNUMBERED {
                continue;
            }
            if waiting[u] == 0 {
                ready.push(u as u32);
            } else if waiting[u] <= MAX_MISSING_TO_CLIMB {
                scratch.push(u as u32);
            }
        }
        let by_least_work = |&u: &u32| std::cmp::Reverse((above[u as usize], u));
        ready[first_ready..].sort_by_key(by_least_work);
        scratch.sort_by_key(by_least_work);
        stack.extend_from_slice(&scratch);
    }
    // Every node is an input of some sink (the graph is finite and
    // acyclic), so every node got a number.
    debug_assert_eq!(next as usize, n);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn node(i: u64, deps: &[usize]) -> NewTask {
        NewTask {
            key: Key { func: 0, token: [i, 0] },
            deps: deps.iter().map(|&j| Dep::Node(j)).collect(),
            wanted: false,
            priority: 0,
            retries: 0,
        }
    }

    /// The nodes of `graph` sorted by their order index.
    fn run_sequence(graph: &[NewTask]) -> Vec<usize> {
        let order = order(graph);
        let mut seq: Vec<usize> = (0..graph.len()).collect();
        seq.sort_by_key(|&i| order[i]);
        seq
    }

    /// The most "big" results alive at once when the nodes run one at a time
    /// in `order`: a result lives from its run until its last user's run (a
    /// sink's, until the end).
    fn live_set(graph: &[NewTask], order: &[u32], big: impl Fn(usize) -> bool) -> usize {
        let mut seq: Vec<usize> = (0..graph.len()).collect();
        seq.sort_by_key(|&i| order[i]);
        let mut users_left = vec![0usize; graph.len()];
        for n in graph {
            for d in &n.deps {
                let Dep::Node(j) = *d else { unreachable!() };
                users_left[j] += 1;
            }
        }
        let (mut alive, mut peak) = (0usize, 0usize);
        for i in seq {
            if big(i) {
                alive += 1;
            }
            peak = peak.max(alive);
            for d in &graph[i].deps {
                let Dep::Node(j) = *d else { unreachable!() };
                users_left[j] -= 1;
                if users_left[j] == 0 && big(j) {
                    alive -= 1;
                }
            }
        }
        peak
    }

    /// The walk this module used before: post-order from each sink, going
    /// only down (for comparison).
    fn post_order(graph: &[NewTask]) -> Vec<u32> {
        let edges = Edges::new(graph);
        let mut order = vec![UNNUMBERED; graph.len()];
        let mut next = 0;
        fn visit(i: usize, edges: &Edges, order: &mut [u32], next: &mut u32) {
            if order[i] != UNNUMBERED {
                return;
            }
            for &j in edges.deps(i) {
                visit(j as usize, edges, order, next);
            }
            order[i] = *next;
            *next += 1;
        }
        for i in (0..graph.len()).filter(|&i| edges.users(i).is_empty()) {
            visit(i, &edges, &mut order, &mut next);
        }
        order
    }

    /// `(x + x.T).mean(axis=0)` over `n × n` blocks: per block a transpose,
    /// a sum and a partial mean (small), then one aggregate per column; or,
    /// `fused`, as dask runs it after blockwise fusion: one task per block
    /// from `x[i, j]` and `x[j, i]` to the partial mean. Returns the graph
    /// and which nodes are big.
    #[allow(clippy::needless_range_loop)] // block indices read like the math
    fn add_transpose_mean(n: usize, fused: bool) -> (Vec<NewTask>, Vec<bool>) {
        let mut graph = Vec::new();
        let mut big = Vec::new();
        let mut add = |deps: &[usize], is_big: bool, graph: &mut Vec<NewTask>| {
            graph.push(node(graph.len() as u64, deps));
            big.push(is_big);
            graph.len() - 1
        };
        let x: Vec<Vec<usize>> = (0..n).map(|_| (0..n).map(|_| add(&[], true, &mut graph)).collect()).collect();
        if fused {
            let part: Vec<Vec<usize>> =
                (0..n).map(|i| (0..n).map(|j| add(&[x[i][j], x[j][i]], false, &mut graph)).collect()).collect();
            for j in 0..n {
                let column: Vec<usize> = (0..n).map(|i| part[i][j]).collect();
                add(&column, false, &mut graph);
            }
            return (graph, big);
        }
        let t: Vec<Vec<usize>> = (0..n).map(|i| (0..n).map(|j| add(&[x[j][i]], true, &mut graph)).collect()).collect();
        let sum: Vec<Vec<usize>> =
            (0..n).map(|i| (0..n).map(|j| add(&[x[i][j], t[i][j]], true, &mut graph)).collect()).collect();
        let part: Vec<Vec<usize>> =
            (0..n).map(|i| (0..n).map(|j| add(&[sum[i][j]], false, &mut graph)).collect()).collect();
        for j in 0..n {
            let column: Vec<usize> = (0..n).map(|i| part[i][j]).collect();
            add(&column, false, &mut graph);
        }
        (graph, big)
    }

    #[test]
    fn add_transpose_mean_keeps_a_few_blocks_alive_not_a_row_per_column() {
        // As dask runs it: dask.order keeps 2 blocks of 8 MB alive (16.9 MB
        // measured); shoal's former down-only walk kept 208 (1,664 MB).
        let (graph, big) = add_transpose_mean(20, true);
        let ours = live_set(&graph, &order(&graph), |i| big[i]);
        let down_only = live_set(&graph, &post_order(&graph), |i| big[i]);
        assert!(ours <= 2, "{ours} blocks alive at once (the down-only walk: {down_only})");
        assert!(down_only >= 100, "the comparison walk: {down_only}");
        // Unfused, as a shoal program writes it: the transposed block and
        // the sum are results too, so 4 big results are the least a single
        // thread can hold (x[i,j], x[j,i], x[j,i].T, their sum).
        let (graph, big) = add_transpose_mean(20, false);
        let ours = live_set(&graph, &order(&graph), |i| big[i]);
        let down_only = live_set(&graph, &post_order(&graph), |i| big[i]);
        assert!(ours <= 4, "{ours} big results alive at once (the down-only walk: {down_only})");
        assert!(down_only >= 100, "the comparison walk: {down_only}");
    }

    #[test]
    fn a_load_process_summarize_pipeline_finishes_each_file_first() {
        // Per file: load (big) → process (big) → summary (small); then one
        // total over the summaries, and a second total over the processed.
        let files = 50;
        let mut graph = Vec::new();
        let mut big = Vec::new();
        let mut summaries = Vec::new();
        let mut processed = Vec::new();
        for f in 0..files {
            graph.push(node(3 * f as u64, &[]));
            big.push(true);
            graph.push(node(3 * f as u64 + 1, &[graph.len() - 1]));
            big.push(true);
            processed.push(graph.len() - 1);
            graph.push(node(3 * f as u64 + 2, &[graph.len() - 1]));
            big.push(false);
            summaries.push(graph.len() - 1);
        }
        graph.push(node(1000, &summaries));
        big.push(false);
        let ours = live_set(&graph, &order(&graph), |i| big[i]);
        assert!(ours <= 2, "{ours} big results alive at once");
    }

    #[test]
    fn flat_map_keeps_submission_order() {
        let graph: Vec<NewTask> = (0..5).map(|i| node(i, &[])).collect();
        assert_eq!(run_sequence(&graph), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn tree_reduction_is_depth_first() {
        // Submitted level by level: leaves 0..4, then 4 = (0,1), 5 = (2,3), 6 = (4,5).
        let graph = vec![
            node(0, &[]),
            node(1, &[]),
            node(2, &[]),
            node(3, &[]),
            node(4, &[0, 1]),
            node(5, &[2, 3]),
            node(6, &[4, 5]),
        ];
        assert_eq!(run_sequence(&graph), vec![0, 1, 4, 2, 3, 5, 6]);
    }

    #[test]
    fn shared_dependency_is_numbered_once_before_all_users() {
        // 0 feeds 1 and 2; both are sinks.
        let graph = vec![node(0, &[]), node(1, &[0]), node(2, &[0])];
        assert_eq!(run_sequence(&graph), vec![0, 1, 2]);
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let graph: Vec<NewTask> =
            (0..n).map(|i| if i == 0 { node(0, &[]) } else { node(i as u64, &[i - 1]) }).collect();
        let order = order(&graph);
        assert!(order.iter().enumerate().all(|(i, &o)| o as usize == i));
    }

    #[test]
    fn every_order_is_a_permutation_with_dependencies_first() {
        // A small irregular DAG.
        let graph = vec![
            node(0, &[]),
            node(1, &[0]),
            node(2, &[]),
            node(3, &[1, 2, 1]),
            node(4, &[0]),
            node(5, &[3, 4]),
            node(6, &[2]),
        ];
        let order = order(&graph);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..graph.len() as u32).collect::<Vec<_>>());
        for (i, n) in graph.iter().enumerate() {
            for d in &n.deps {
                let Dep::Node(j) = *d else { unreachable!() };
                assert!(order[j] < order[i], "dependency {j} of {i} ordered after it");
            }
        }
    }
}
