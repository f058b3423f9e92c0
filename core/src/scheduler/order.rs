//! Static ordering of one submission, in the spirit of `dask.order`.
//!
//! Ready tasks run in priority order, and inside one submission the last
//! part of the priority is the order index computed here. The goal is the
//! one `dask.order` has: run the graph depth-first, so that a result is
//! consumed soon after it is produced and few results are alive at once.
//!
//! The rule is a post-order depth-first walk: starting from each *sink* (a
//! node no other node of the submission depends on), in submission order,
//! every dependency is numbered before the node that needs it, dependencies
//! in the order they are listed. For a binary tree reduction this numbers
//! `leaf0, leaf1, parent01, leaf2, leaf3, parent23, parent0123, …`, so one
//! thread holds O(depth) results at any time instead of a whole level; for
//! independent nodes (a `map`) it is plain submission order.
//!
//! The walk keeps its own stack on the heap: a chain of millions of nodes
//! must not overflow the thread's stack. It is O(nodes + edges).

use super::{Dep, NewTask};

/// `order[i]` of a node not reached yet.
const UNSEEN: u32 = u32::MAX;
/// `order[i]` of a node on the walk's stack (reached, not yet numbered).
const ON_STACK: u32 = u32::MAX - 1;

/// The largest submission [`order`] can number (the two sentinels above are
/// never valid indices).
pub(super) const MAX_NODES: usize = ON_STACK as usize;

/// The order index of every node of `graph`: a permutation of `0..len`.
///
/// `graph` must be topologically sorted (every `Dep::Node(j)` of node `i`
/// has `j < i`) and hold at most [`MAX_NODES`] nodes; `submit` checks both
/// before calling this.
pub(super) fn order(graph: &[NewTask]) -> Vec<u32> {
    debug_assert!(graph.len() <= MAX_NODES);
    let mut has_dependent = vec![false; graph.len()];
    for node in graph {
        for dep in &node.deps {
            if let Dep::Node(j) = *dep {
                has_dependent[j] = true;
            }
        }
    }

    let mut order = vec![UNSEEN; graph.len()];
    // (node, index of the next dependency to look at)
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut next: u32 = 0;
    for sink in (0..graph.len()).filter(|&i| !has_dependent[i]) {
        order[sink] = ON_STACK;
        stack.push((sink, 0));
        while let Some(top) = stack.last_mut() {
            let (node, k) = *top;
            let deps = &graph[node].deps;
            if k < deps.len() {
                top.1 += 1;
                if let Dep::Node(j) = deps[k]
                    && order[j] == UNSEEN
                {
                    order[j] = ON_STACK;
                    stack.push((j, 0));
                }
            } else {
                order[node] = next;
                next += 1;
                stack.pop();
            }
        }
    }
    // Every node is an ancestor of some sink (the graph is finite and
    // acyclic), so every node got a number.
    debug_assert_eq!(next as usize, graph.len());
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
