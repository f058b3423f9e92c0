//! The run queue: ready tasks waiting for a free worker slot, best first.
//!
//! A plain binary heap is the right structure for tasks that become ready
//! one by one (as their inputs finish), but the big queues come from
//! submissions — a `map` over a million items makes a million tasks ready at
//! once — and popping a heap of a million entries costs a cache miss per
//! level. So the tasks that a submission makes ready are sorted once (they
//! arrive nearly in priority order, which the sort detects) and kept as a
//! *batch*, popped from its end; `pop` takes the better of the batch's best
//! and the heap's best. Only one batch is kept: when a new one comes, the
//! smaller of the two is poured into the heap. Each entry is poured at most
//! once per larger batch that arrives after it, which the larger batch pays
//! for, so the cost stays amortised O(log n) per entry, and O(1) for the
//! common case.
//!
//! Deletion is lazy: see [`super::workers`].

use std::collections::BinaryHeap;

use super::record::Priority;

/// An entry of the run queue; greater is better.
///
/// It names the task by slot only (16 bytes, not 20: a million queued tasks
/// is a common case). The priority tells a stale entry: priorities are
/// unique among the tasks ever submitted (submission, order index), so a
/// slot whose record has another priority holds another task now.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct Queued {
    pub priority: Priority,
    pub slot: u32,
}

/// Batches smaller than this go straight into the heap.
const MIN_BATCH: usize = 64;

/// Entries of capacity the staging buffer keeps between submissions.
const SCRATCH_KEEP: usize = 4096;

#[derive(Default)]
pub(super) struct RunQueue {
    heap: BinaryHeap<Queued>,
    /// Sorted ascending: the best entry is last.
    batch: Vec<Queued>,
    /// Entries pushed since [`RunQueue::begin_batch`].
    staged: Vec<Queued>,
    staging: bool,
}

impl RunQueue {
    /// Drops every entry and its memory (no task is ready: they are all
    /// stale).
    pub fn give_back(&mut self) {
        *self = RunQueue::default();
    }

    /// Entries pushed from now until [`RunQueue::end_batch`] form a batch.
    pub fn begin_batch(&mut self) {
        self.staging = true;
    }

    pub fn end_batch(&mut self) {
        self.staging = false;
        let mut staged = std::mem::take(&mut self.staged);
        if staged.len() >= MIN_BATCH {
            staged.sort_unstable();
            if staged.len() > self.batch.len() {
                std::mem::swap(&mut staged, &mut self.batch);
            }
        }
        self.heap.extend(staged.drain(..));
        if staged.capacity() <= SCRATCH_KEEP {
            self.staged = staged; // reused by the next submission
        }
    }

    pub fn push(&mut self, entry: Queued) {
        if self.staging {
            self.staged.push(entry);
        } else {
            self.heap.push(entry);
        }
    }

    /// The best entry.
    pub fn pop(&mut self) -> Option<Queued> {
        debug_assert!(!self.staging, "dispatch runs after the batch is closed");
        let from_heap = match (self.heap.peek(), self.batch.last()) {
            (Some(h), Some(b)) => h > b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_heap {
            return self.heap.pop();
        }
        let entry = self.batch.pop();
        if self.batch.is_empty() && self.batch.capacity() > 0 {
            // Give back a big batch's memory once it is used up.
            self.batch = Vec::new();
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(order: u32) -> Queued {
        Queued { priority: Priority { user: 0, generation: 1, order }, slot: order }
    }

    /// Pops everything; returns the orders.
    fn drain(queue: &mut RunQueue) -> Vec<u32> {
        std::iter::from_fn(|| queue.pop()).map(|e| e.slot).collect()
    }

    #[test]
    fn batches_and_single_pushes_pop_in_priority_order() {
        let mut queue = RunQueue::default();
        // A big batch, shuffled a little, then a smaller batch that goes to
        // the heap, then a bigger one that replaces the first.
        let mut expected = Vec::new();
        for round in 0..3u32 {
            let len = [500, 100, 900][round as usize];
            queue.begin_batch();
            for i in (0..len).rev() {
                let order = round * 10_000 + i * 7 % len;
                queue.push(q(order));
                expected.push(order);
            }
            queue.end_batch();
            queue.push(q(round * 10_000 + 5_000));
            expected.push(round * 10_000 + 5_000);
        }
        expected.sort_unstable();
        assert_eq!(drain(&mut queue), expected);
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn interleaved_pops_and_pushes_stay_ordered() {
        let mut queue = RunQueue::default();
        queue.begin_batch();
        for i in 0..200 {
            queue.push(q(2 * i));
        }
        queue.end_batch();
        assert_eq!(queue.pop().map(|e| e.slot), Some(0));
        queue.push(q(1));
        queue.push(q(3));
        assert_eq!(drain(&mut queue)[..4], [1, 2, 3, 4]);
    }
}
