//! Task records and the slab that holds them.
//!
//! A record is kept small (96 bytes on 64-bit targets, checked by a test):
//! the threads engine holds a million live tasks within a budget of 256
//! bytes each for everything, the driver's share included. So: inputs are a
//! boxed slice (the graph never changes them); dependents are inline when
//! there are none or one (most tasks); the counters are `u32` or smaller;
//! the key is stored split, so its 4-byte `func` packs with the counters;
//! one field is the missing-input count while `Waiting` and the position in
//! a worker's list while `Processing` or `Memory`; the failure, which few
//! tasks have, lives in a side table; and a task has one worker field that
//! means "runs there" while processing and "holds the result" while in
//! memory — the scheduler has no replica action, so a result lives on the
//! worker that computed it.
//!
//! Ids are `(slot, generation)`. Forgetting a task bumps its slot's
//! generation and puts the slot on a free list; every id that arrives from
//! outside is checked against the slot's current generation, so a stale id
//! can never touch the slot's next occupant.

use std::cmp::Ordering;
use std::sync::Arc;

use std::collections::HashMap;

use super::hash::SeededState;
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
    /// The key's token; see [`Record::key`].
    key_token: [u64; 2],
    /// The key's function index.
    key_func: u32,
    /// Inputs, one entry per edge (a task listing an input twice has it
    /// twice; every count below is per edge, so that stays consistent).
    pub deps: Box<[TaskId]>,
    /// Tasks that list this one as an input. Entries of forgotten dependents
    /// go stale (their generation no longer matches) and are skipped;
    /// [`Slab::note_dependent_forgotten`] compacts the list once most of it
    /// is stale, so the cost stays amortised O(1) per dependent.
    pub dependents: Dependents,
    /// Size of the result, for placement (meaningful in `Memory`).
    pub nbytes: u64,
    pub priority: Priority,
    /// Futures the client holds on this task.
    pub client_refs: u32,
    /// Dependency edges from dependents that still need this result: those
    /// in `Waiting`, `Ready` or `Processing`.
    pub needers: u32,
    /// Dependency edges from dependents not forgotten yet (whatever their
    /// state); while non-zero the record is kept, so lineage survives.
    pub live_dependents: u32,
    /// In `Waiting`: dependency edges whose input is not in memory. In
    /// `Processing` / `Memory`: index in the worker's processing / held
    /// list (so removal is O(1)). See [`Record::missing`], [`Record::pos`].
    missing_or_pos: u32,
    /// In `Processing`: where it runs. In `Memory`: who holds the result.
    pub worker: WorkerId,
    /// Retries left for retryable failures (more than `u16::MAX` asked for
    /// are `u16::MAX`).
    pub retries: u16,
    /// Workers that died in a row while running this task (saturating at
    /// 255: a `max_worker_deaths` above that never fails a task).
    pub deaths: u8,
    /// `None` for a free slot.
    state: Option<TaskState>,
}

impl Record {
    pub fn key(&self) -> Key {
        Key { func: self.key_func, token: self.key_token }
    }

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

    /// Inputs not in memory (meaningful in `Waiting`).
    pub fn missing(&mut self) -> &mut u32 {
        &mut self.missing_or_pos
    }

    /// Index in the worker's list (meaningful in `Processing` / `Memory`).
    pub fn pos(&self) -> usize {
        self.missing_or_pos as usize
    }

    pub fn set_pos(&mut self, pos: usize) {
        // A worker's lists are indexed by `u32` like the slots they name.
        self.missing_or_pos = pos as u32;
    }
}

/// A task's dependents: most tasks have none or one (maps, chains, trees),
/// which are kept inline, so that they cost no allocation. More are a boxed
/// `Vec` (one more indirection for those few, 8 bytes less for every task).
#[derive(Default)]
pub(super) enum Dependents {
    #[default]
    None,
    One(TaskId),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<TaskId>>),
}

impl Dependents {
    pub fn push(&mut self, id: TaskId) {
        match self {
            Dependents::None => *self = Dependents::One(id),
            Dependents::One(first) => *self = Dependents::Many(Box::new(vec![*first, id])),
            Dependents::Many(ids) => ids.push(id),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(TaskId) -> bool) {
        match self {
            Dependents::None => {}
            Dependents::One(id) => {
                if !keep(*id) {
                    *self = Dependents::None;
                }
            }
            Dependents::Many(ids) => {
                ids.retain(|&id| keep(id));
                match ids[..] {
                    [] => *self = Dependents::None,
                    [id] => *self = Dependents::One(id),
                    _ => ids.shrink_to(2 * ids.len()),
                }
            }
        }
    }
}

impl std::ops::Deref for Dependents {
    type Target = [TaskId];

    fn deref(&self) -> &[TaskId] {
        match self {
            Dependents::None => &[],
            Dependents::One(id) => std::slice::from_ref(id),
            Dependents::Many(ids) => ids.as_slice(),
        }
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
    /// Each slot's generation: its record's id is `(slot, generation)`; a
    /// free slot's is the one its next record will get, which no id has
    /// yet. Kept apart from the records, densely, so that telling whether an
    /// id is live reads 4 bytes, not a record's cache line (the key index
    /// sweeps do that for every key).
    generations: Vec<u32>,
    /// Why each `Erred` task failed, by slot (few tasks fail: a side table
    /// costs them, not every record).
    failures: HashMap<u32, Arc<TaskFailure>, SeededState>,
    free: Vec<u32>,
    counts: [usize; STATES],
    /// The generation new slots start at: above every generation issued
    /// before the table was last given back, so that no id from before can
    /// name a task made after.
    generation_floor: u32,
}

/// Slots past which an empty table gives its memory back (see
/// [`Slab::give_back`]): below, keeping it is cheaper than growing again.
pub(super) const KEEP_SLOTS: usize = 1 << 14;

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

    /// Room for `more` records without reallocating.
    pub fn reserve(&mut self, more: usize) {
        let more = more.saturating_sub(self.free.len());
        self.records.reserve(more);
        self.generations.reserve(more);
    }

    /// Whether `id` names the slot's current generation. For an id this
    /// scheduler issued, that means live (a free slot's generation was never
    /// issued); an id from outside also needs [`Slab::get`]'s state check.
    fn current(&self, id: TaskId) -> bool {
        self.generations.get(id.index as usize) == Some(&id.generation)
    }

    /// The live record for `id`, or `None` for a stale or unknown id.
    pub fn get(&self, id: TaskId) -> Option<&Record> {
        if !self.current(id) {
            return None;
        }
        self.records.get(id.index as usize).filter(|r| r.state.is_some())
    }

    pub fn get_mut(&mut self, id: TaskId) -> Option<&mut Record> {
        if !self.current(id) {
            return None;
        }
        self.records.get_mut(id.index as usize).filter(|r| r.state.is_some())
    }

    pub fn is_live(&self, id: TaskId) -> bool {
        self.get(id).is_some()
    }

    /// Whether `id`, issued by this scheduler, is live: the cheap check.
    pub fn issued_id_is_live(&self, id: TaskId) -> bool {
        debug_assert_eq!(self.current(id), self.is_live(id));
        self.current(id)
    }

    /// The id of the live task in `slot` (one the scheduler itself holds).
    pub fn id_in_slot(&self, slot: u32) -> TaskId {
        TaskId { index: slot, generation: self.generations[slot as usize] }
    }

    /// The id of the `Ready` task in `slot` if it has `priority` (which no
    /// other task ever had: see `workers::Queued`).
    pub fn ready_in_slot(&self, slot: u32, priority: Priority) -> Option<TaskId> {
        let r = self.records.get(slot as usize)?;
        (r.state == Some(TaskState::Ready) && r.priority == priority)
            .then(|| TaskId { index: slot, generation: self.generations[slot as usize] })
    }

    /// The record of an id the scheduler itself holds and knows is live
    /// (never one taken from an event: those go through [`Slab::get`]).
    pub fn at(&self, id: TaskId) -> &Record {
        debug_assert!(self.is_live(id), "stale internal id {id:?}");
        &self.records[id.index as usize]
    }

    pub fn at_mut(&mut self, id: TaskId) -> &mut Record {
        debug_assert!(self.is_live(id), "stale internal id {id:?}");
        &mut self.records[id.index as usize]
    }

    /// Why `id` (an `Erred` task) failed.
    pub fn failure(&self, id: TaskId) -> Option<&Arc<TaskFailure>> {
        self.failures.get(&id.index)
    }

    /// Marks `id` `Erred` with `failure`.
    pub fn set_erred(&mut self, id: TaskId, failure: Arc<TaskFailure>) {
        self.set_state(id, TaskState::Erred);
        self.failures.insert(id.index, failure);
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
        let record = Record {
            key_token: key.token,
            key_func: key.func,
            deps,
            dependents: Dependents::None,
            nbytes: 0,
            priority,
            client_refs,
            needers: 0,
            live_dependents: 0,
            missing_or_pos: 0,
            worker: WorkerId(0),
            retries,
            deaths: 0,
            state: Some(TaskState::Released),
        };
        self.counts[state_index(TaskState::Released)] += 1;
        if let Some(index) = self.free.pop() {
            self.records[index as usize] = record;
            TaskId { index, generation: self.generations[index as usize] }
        } else {
            let index = self.records.len() as u32;
            debug_assert!(self.records.len() < MAX_SLOTS, "submit checks the slot limit");
            self.records.push(record);
            let generation = self.generation_floor;
            self.generations.push(generation);
            TaskId { index, generation }
        }
    }

    /// Slots allocated (live or free).
    pub fn slots(&self) -> usize {
        self.records.len()
    }

    /// With no live record left, frees the table's memory (a million-task
    /// graph leaves ~100 MB of slots behind otherwise, until the client
    /// goes). Ids issued before stay stale: new slots start above every
    /// generation issued so far. `false` if there was nothing to give back.
    pub fn give_back(&mut self) -> bool {
        if self.live() != 0 || self.records.len() <= KEEP_SLOTS {
            return false;
        }
        let top = self.generations.iter().copied().max().unwrap_or(0);
        // The largest is a free slot's next generation, never issued.
        self.generation_floor = self.generation_floor.max(top);
        self.records = Vec::new();
        self.generations = Vec::new();
        self.free = Vec::new();
        self.failures = HashMap::default();
        true
    }

    /// Drops the record; its slot's next occupant gets the next generation.
    pub fn free(&mut self, id: TaskId) {
        debug_assert!(self.is_live(id));
        let generation = &mut self.generations[id.index as usize];
        *generation = generation.wrapping_add(1);
        let r = &mut self.records[id.index as usize];
        if let Some(old) = r.state.take() {
            self.counts[state_index(old)] -= 1;
            if old == TaskState::Erred {
                self.failures.remove(&id.index);
            }
        }
        // Free the heap parts now, not when the slot is reused.
        r.deps = Box::default();
        r.dependents = Dependents::None;
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
            dependents.retain(|d| self.issued_id_is_live(d));
            self.records[id.index as usize].dependents = dependents;
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_inline_then_spill_then_shrink_back() {
        let id = |index| TaskId { index, generation: 0 };
        let mut ds = Dependents::default();
        assert!(ds.is_empty());
        ds.push(id(1));
        assert!(matches!(ds, Dependents::One(_)));
        ds.push(id(2));
        ds.push(id(3));
        assert_eq!(&ds[..], &[id(1), id(2), id(3)]);
        ds.retain(|d| d.index != 2);
        assert_eq!(&ds[..], &[id(1), id(3)]);
        ds.retain(|d| d.index == 3);
        assert!(matches!(ds, Dependents::One(d) if d == id(3)));
        ds.retain(|_| false);
        assert!(ds.is_empty());
    }

    #[test]
    fn record_stays_small() {
        // The threads engine's budget is 256 bytes per task for everything.
        assert!(std::mem::size_of::<Record>() <= 96, "Record is {} bytes", std::mem::size_of::<Record>());
    }

    #[test]
    fn higher_user_priority_then_earlier_submission_then_order_runs_first() {
        let p = |user, generation, order| Priority { user, generation, order };
        assert!(p(1, 5, 5) > p(0, 0, 0));
        assert!(p(0, 1, 9) > p(0, 2, 0));
        assert!(p(0, 1, 0) > p(0, 1, 1));
    }
}
