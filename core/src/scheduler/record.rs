//! Task records and the slab that holds them.
//!
//! A record is kept small (128 bytes on 64-bit targets, checked by a test):
//! the threads engine holds a million live tasks within a budget of 256
//! bytes each for everything, the driver's share included. Inputs are a
//! boxed slice (the graph never changes them), the few counters are `u32`,
//! and a task has one worker field that means "runs there" while
//! processing and "holds the result" while in memory — the scheduler has no
//! replica action, so a result lives on the worker that computed it.
//!
//! Ids are `(slot, generation)`. Forgetting a task bumps its slot's
//! generation and puts the slot on a free list; every id that arrives from
//! outside is checked against the slot's current generation, so a stale id
//! can never touch the slot's next occupant.

use std::cmp::Ordering;
use std::sync::Arc;

use super::{TaskId, TaskState, WorkerId};
use crate::failure::TaskFailure;
use crate::key::Key;

/// Where a task stands in the run queue; greater runs first.
///
/// Dask's sort key is `(-user priority, submission generation, order)`,
/// lowest first; `Ord` here is the reverse of that, for `BinaryHeap`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Priority {
    pub user: i32,
    pub generation: u32,
    pub order: u32,
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.user
            .cmp(&other.user)
            .then_with(|| other.generation.cmp(&self.generation))
            .then_with(|| other.order.cmp(&self.order))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One task.
pub(super) struct Record {
    pub key: Key,
    /// Inputs, one entry per edge (a task listing an input twice has it
    /// twice; every count below is per edge, so that stays consistent).
    pub deps: Box<[TaskId]>,
    /// Tasks that list this one as an input. Entries of forgotten dependents
    /// go stale (their generation no longer matches) and are skipped;
    /// [`Slab::note_dependent_forgotten`] compacts the list once most of it
    /// is stale, so the cost stays amortised O(1) per dependent.
    pub dependents: Vec<TaskId>,
    /// Set in `Erred` only.
    pub failure: Option<Arc<TaskFailure>>,
    /// Size of the result, for placement (meaningful in `Memory`).
    pub nbytes: u64,
    pub priority: Priority,
    /// The slot's generation; the id of this record is `(slot, generation)`.
    pub generation: u32,
    /// Futures the client holds on this task.
    pub client_refs: u32,
    /// Dependency edges from dependents that still need this result: those
    /// in `Waiting`, `Ready` or `Processing`.
    pub needers: u32,
    /// Dependency edges from dependents not forgotten yet (whatever their
    /// state); while non-zero the record is kept, so lineage survives.
    pub live_dependents: u32,
    /// In `Waiting`: dependency edges whose input is not in memory.
    pub missing: u32,
    /// In `Processing` / `Memory`: index in the worker's processing / held
    /// list (so removal is O(1)).
    pub pos: u32,
    /// In `Processing`: where it runs. In `Memory`: who holds the result.
    pub worker: WorkerId,
    /// Retries left for retryable failures (more than `u16::MAX` asked for
    /// are `u16::MAX`: plenty, and two bytes fewer per task).
    pub retries: u16,
    /// Workers that died while running this task (saturating).
    pub deaths: u16,
    /// `None` for a free slot.
    state: Option<TaskState>,
}

impl Record {
    pub fn state(&self) -> TaskState {
        // A live record always has a state: only free slots have none, and
        // `Slab::get` never hands those out.
        self.state.unwrap_or(TaskState::Released)
    }

    /// Someone still needs the task's result: a client, or a dependent that
    /// has not finished.
    pub fn is_needed(&self) -> bool {
        self.client_refs > 0 || self.needers > 0
    }
}

/// States in which a task needs its inputs (and counts in their `needers`).
pub(super) fn needs_inputs(state: TaskState) -> bool {
    matches!(state, TaskState::Waiting | TaskState::Ready | TaskState::Processing)
}

const STATES: usize = 6;

fn state_index(state: TaskState) -> usize {
    match state {
        TaskState::Released => 0,
        TaskState::Waiting => 1,
        TaskState::Ready => 2,
        TaskState::Processing => 3,
        TaskState::Memory => 4,
        TaskState::Erred => 5,
    }
}

/// What a new record is made of.
pub(super) struct NewRecord {
    pub key: Key,
    pub deps: Box<[TaskId]>,
    pub priority: Priority,
    pub client_refs: u32,
    pub retries: u16,
}

/// All records, by slot.
#[derive(Default)]
pub(super) struct Slab {
    records: Vec<Record>,
    free: Vec<u32>,
    counts: [usize; STATES],
}

/// The largest number of slots: slot indices are `u32`.
pub(super) const MAX_SLOTS: usize = u32::MAX as usize;

/// A dependents list is compacted when it holds more than this many stale
/// entries beyond twice its live ones (small lists are never worth it).
const COMPACT_SLACK: usize = 8;

impl Slab {
    pub fn live(&self) -> usize {
        self.records.len() - self.free.len()
    }

    pub fn count(&self, state: TaskState) -> usize {
        self.counts[state_index(state)]
    }

    /// The live record for `id`, or `None` for a stale or unknown id.
    pub fn get(&self, id: TaskId) -> Option<&Record> {
        self.records.get(id.index as usize).filter(|r| r.generation == id.generation && r.state.is_some())
    }

    pub fn get_mut(&mut self, id: TaskId) -> Option<&mut Record> {
        self.records.get_mut(id.index as usize).filter(|r| r.generation == id.generation && r.state.is_some())
    }

    pub fn is_live(&self, id: TaskId) -> bool {
        self.get(id).is_some()
    }

    /// The record of an id the scheduler itself holds and knows is live
    /// (never one taken from an event: those go through [`Slab::get`]).
    pub fn at(&self, id: TaskId) -> &Record {
        let r = &self.records[id.index as usize];
        debug_assert!(r.generation == id.generation && r.state.is_some(), "stale internal id {id:?}");
        r
    }

    pub fn at_mut(&mut self, id: TaskId) -> &mut Record {
        let r = &mut self.records[id.index as usize];
        debug_assert!(r.generation == id.generation && r.state.is_some(), "stale internal id {id:?}");
        r
    }

    pub fn set_state(&mut self, id: TaskId, state: TaskState) {
        let r = &mut self.records[id.index as usize];
        if let Some(old) = r.state {
            self.counts[state_index(old)] -= 1;
        }
        self.counts[state_index(state)] += 1;
        r.state = Some(state);
    }

    /// A new record in state `Released`.
    pub fn alloc(&mut self, new: NewRecord) -> TaskId {
        let NewRecord { key, deps, priority, client_refs, retries } = new;
        let mut record = Record {
            key,
            deps,
            dependents: Vec::new(),
            failure: None,
            nbytes: 0,
            priority,
            generation: 0,
            client_refs,
            needers: 0,
            live_dependents: 0,
            missing: 0,
            pos: 0,
            worker: WorkerId(0),
            retries,
            deaths: 0,
            state: Some(TaskState::Released),
        };
        self.counts[state_index(TaskState::Released)] += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.records[index as usize];
            let generation = slot.generation;
            record.generation = generation;
            *slot = record;
            TaskId { index, generation }
        } else {
            let index = self.records.len() as u32;
            debug_assert!(self.records.len() < MAX_SLOTS, "submit checks the slot limit");
            self.records.push(record);
            TaskId { index, generation: 0 }
        }
    }

    /// Drops the record; its slot's next occupant gets the next generation.
    pub fn free(&mut self, id: TaskId) {
        let r = &mut self.records[id.index as usize];
        debug_assert!(r.generation == id.generation && r.state.is_some());
        if let Some(old) = r.state.take() {
            self.counts[state_index(old)] -= 1;
        }
        r.generation = r.generation.wrapping_add(1);
        // Free the heap parts now, not when the slot is reused.
        r.deps = Box::default();
        r.dependents = Vec::new();
        r.failure = None;
        self.free.push(id.index);
    }

    /// One dependent edge of `id` is gone. Compacts the dependents list when
    /// stale entries dominate. Returns the live dependent edges left.
    pub fn note_dependent_forgotten(&mut self, id: TaskId) -> u32 {
        let r = &mut self.records[id.index as usize];
        debug_assert!(r.live_dependents > 0);
        r.live_dependents -= 1;
        let live = r.live_dependents;
        if r.dependents.len() > 2 * live as usize + COMPACT_SLACK {
            let mut dependents = std::mem::take(&mut self.records[id.index as usize].dependents);
            dependents.retain(|&d| self.is_live(d));
            dependents.shrink_to(2 * dependents.len());
            self.records[id.index as usize].dependents = dependents;
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small() {
        // The threads engine's budget is 256 bytes per task for everything.
        assert!(std::mem::size_of::<Record>() <= 128, "Record is {} bytes", std::mem::size_of::<Record>());
    }

    #[test]
    fn higher_user_priority_then_earlier_submission_then_order_runs_first() {
        let p = |user, generation, order| Priority { user, generation, order };
        assert!(p(1, 5, 5) > p(0, 0, 0));
        assert!(p(0, 1, 9) > p(0, 2, 0));
        assert!(p(0, 1, 0) > p(0, 1, 1));
    }
}
