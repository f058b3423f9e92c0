//! The index of live tasks by key, for pure-key deduplication.
//!
//! Every task's key is in here, so its size is per-task memory. A std
//! `HashMap<Key, TaskId>` costs 32 bytes an entry at up to twice the entries
//! (it grows by doubling, at 7/8 full), and repeats the key the record already
//! holds. This table stores, per bucket, only the task's slot and 32 bits of
//! its key's hash — 8 bytes, at 2 to 4 buckets per task — and compares keys
//! against the records themselves, which it only reads when the 32 bits
//! match. It is small enough to stay in cache for a million tasks, which
//! matters as much: a key lookup is on the path of every submitted and every
//! forgotten task.
//!
//! Open addressing with linear probing, kept at most half full; removal
//! shifts the following entries back (no tombstones), so lookups never slow
//! down with churn. The bucket's 32 hash bits give its home position too,
//! so growing and shifting never re-hash a key.

use std::hash::BuildHasher;

use super::TaskId;
use super::hash::SeededState;
use super::record::Slab;
use crate::key::Key;

/// The slot of an empty bucket (slot indices are below `u32::MAX`).
const EMPTY: u32 = u32::MAX;

/// The fewest buckets of a table that has any.
const MIN_BUCKETS: usize = 16;

#[derive(Clone, Copy)]
struct Bucket {
    slot: u32,
    hash: u32,
}

const VACANT: Bucket = Bucket { slot: EMPTY, hash: 0 };

#[derive(Default)]
pub(super) struct KeyIndex {
    /// A power of two long (or empty).
    buckets: Vec<Bucket>,
    len: usize,
    hasher: SeededState,
}

impl KeyIndex {
    fn hash(&self, key: &Key) -> u32 {
        let h = self.hasher.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask()
    }

    /// Room for `more` keys without growing along the way.
    pub fn reserve(&mut self, more: usize) {
        let want = (self.len + more).saturating_mul(2).max(MIN_BUCKETS).next_power_of_two();
        if want > self.buckets.len() {
            self.rebuild(want);
        }
    }

    /// The live task with `key`.
    pub fn get(&self, key: &Key, tasks: &Slab) -> Option<TaskId> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hash(key);
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b.slot == EMPTY {
                return None;
            }
            if b.hash == hash {
                let id = tasks.id_in_slot(b.slot);
                if tasks.at(id).key() == *key {
                    return Some(id);
                }
            }
            i = (i + 1) & self.mask();
        }
    }

    /// With no key left, frees the buckets (see `Slab::give_back`).
    pub fn give_back(&mut self) {
        if self.len == 0 {
            self.buckets = Vec::new();
        }
    }

    /// Records `id` (live, its key absent) under `key`.
    pub fn insert(&mut self, key: &Key, id: TaskId) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.rebuild((self.buckets.len() * 2).max(MIN_BUCKETS));
        }
        let hash = self.hash(key);
        self.place(Bucket { slot: id.index, hash });
        self.len += 1;
    }

    /// Removes `id`, whose key is `key`.
    pub fn remove(&mut self, key: &Key, id: TaskId) {
        if self.len == 0 {
            debug_assert!(false, "removing {id:?} from an empty key index");
            return;
        }
        let mut i = self.home(self.hash(key));
        loop {
            match self.buckets[i].slot {
                slot if slot == id.index => break,
                EMPTY => {
                    debug_assert!(false, "{id:?} not in the key index");
                    return;
                }
                _ => i = (i + 1) & self.mask(),
            }
        }
        // Shift back every following entry of the run whose home is not
        // between the hole and it, so no lookup stops early at the hole.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask();
            let b = self.buckets[j];
            if b.slot == EMPTY {
                break;
            }
            let home = self.home(b.hash);
            // `home` is cyclically in (hole, j]: the entry stays.
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = VACANT;
        self.len -= 1;
        // Give memory back after a big graph is gone.
        if self.buckets.len() > MIN_BUCKETS && self.len * 8 < self.buckets.len() {
            self.rebuild(self.buckets.len() / 2);
        }
    }

    fn place(&mut self, bucket: Bucket) {
        let mut i = self.home(bucket.hash);
        while self.buckets[i].slot != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.buckets[i] = bucket;
    }

    fn rebuild(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![VACANT; buckets]);
        for b in old.into_iter().filter(|b| b.slot != EMPTY) {
            self.place(b);
        }
    }

    /// Keys in the index (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::scheduler::record::{NewRecord, Priority};
    use crate::scheduler::sim::Rng;

    fn new_task(tasks: &mut Slab, key: Key) -> TaskId {
        tasks.alloc(NewRecord {
            key,
            deps: Box::default(),
            priority: Priority { user: 0, generation: 0, order: 0 },
            client_refs: 0,
            retries: 0,
        })
    }

    /// Random inserts and removals, against a `HashMap`; few distinct keys
    /// and a poor spread (`func` only) so runs collide and wrap around.
    #[test]
    fn agrees_with_a_hash_map_under_churn() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let mut tasks = Slab::default();
            let mut index = KeyIndex::default();
            let mut model: HashMap<Key, TaskId> = HashMap::new();
            for _ in 0..3_000 {
                let key = Key { func: rng.below(300) as u32, token: [0, 0] };
                match model.get(&key).copied() {
                    Some(id) if rng.chance(60) => {
                        index.remove(&key, id);
                        tasks.free(id);
                        model.remove(&key);
                    }
                    Some(id) => assert_eq!(index.get(&key, &tasks), Some(id)),
                    None => {
                        assert_eq!(index.get(&key, &tasks), None);
                        let id = new_task(&mut tasks, key);
                        index.insert(&key, id);
                        model.insert(key, id);
                    }
                }
                assert_eq!(index.len(), model.len());
            }
            for (key, id) in &model {
                assert_eq!(index.get(key, &tasks), Some(*id));
            }
        }
    }

    #[test]
    fn shrinks_when_emptied() {
        let mut tasks = Slab::default();
        let mut index = KeyIndex::default();
        let ids: Vec<(Key, TaskId)> = (0..10_000)
            .map(|i| {
                let key = Key { func: 0, token: [i, 1] };
                let id = new_task(&mut tasks, key);
                index.insert(&key, id);
                (key, id)
            })
            .collect();
        assert!(index.buckets.len() >= 20_000);
        for (key, id) in ids {
            index.remove(&key, id);
        }
        assert_eq!(index.buckets.len(), MIN_BUCKETS);
    }
}
