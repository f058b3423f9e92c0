//! A machine's store of results, as its agent keeps them: the results its
//! worker processes made (sealed segments), the copies it fetched from
//! other machines, and small results, by task — under the machine's memory
//! limit, spilling to disk past it. It is `shoal_shm::store::Store` (the
//! processes mode's store: the policy, the states of an object and their
//! invariants are documented there) keyed by the scheduler's task ids.
//!
//! - **What is counted.** Segments only (results of at least
//!   `shoal_shm::uds::INLINE_MAX` bytes). With worker processes every large
//!   result is one; a worker without processes keeps its results on its
//!   own heap, which is neither counted nor spilled (as the threads mode).
//! - **Where it is read.** By the agent's session (a run's input held
//!   here, sent to a process as the segment's descriptor), its data port
//!   (a peer's or a client's fetch) and its outlet (results stored). A
//!   spilled result is read back into a fresh segment by whichever needs it
//!   first ([`get`] blocks for that read), and stays in memory again.
//! - **I/O outside the lock.** Spill writes and read-backs run on the
//!   calling thread after the store's lock is released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_core::object::Obj;
use shoal_core::scheduler::TaskId;
use shoal_shm::store::{self as shm, Slot, StoreConfig, StoreEffects, StoreStats};

use crate::error::{NetError, Result};

/// The machine's store, shared by the agent's session, outlet and data port.
pub type Store = Arc<MachineStore>;

/// See the module docs.
pub struct MachineStore {
    inner: Mutex<Inner>,
    /// Names of the segments read back from spill files.
    prefix: String,
    next: AtomicU64,
}

struct Inner {
    store: shm::Store,
    slots: HashMap<TaskId, Slot>,
}

/// How a machine's store is set up.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// Bytes of result segments kept in memory before spilling.
    pub memory_limit: u64,
    /// Where the store makes its spill directory.
    pub spill_parent: PathBuf,
    /// Segments (open descriptors) kept at most before spilling; `None`:
    /// no bound but the memory limit.
    pub descriptors: Option<u64>,
}

impl MachineStore {
    /// A store with its own spill directory in `settings.spill_parent`.
    pub fn new(settings: &StoreSettings) -> Result<Store> {
        let config = StoreConfig {
            memory_limit: settings.memory_limit,
            spill_parent: settings.spill_parent.clone(),
            spill_io: Default::default(),
            descriptors: settings.descriptors,
        };
        let store = shm::Store::new(&config).map_err(|e| {
            NetError::Config(format!(
                "cannot make the machine's spill directory in {}: {e}",
                settings.spill_parent.display()
            ))
        })?;
        Ok(Arc::new(MachineStore {
            inner: Mutex::new(Inner { store, slots: HashMap::new() }),
            prefix: format!("shoal-a{}-back", std::process::id()),
            next: AtomicU64::new(0),
        }))
    }

    /// A store without a memory limit (its spill directory in the
    /// system's temporary directory, made and never written).
    pub fn unbounded() -> Result<Store> {
        MachineStore::new(&StoreSettings {
            memory_limit: u64::MAX,
            spill_parent: std::env::temp_dir(),
            descriptors: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock leaves the state half-made on a panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's memory and spill figures.
    pub fn stats(&self) -> StoreStats {
        self.lock().store.stats()
    }

    /// Whether the machine's runs should start one at a time, given whether
    /// they do now: over the memory limit with nothing left to spill (as
    /// the processes mode pauses; `shoal_shm::store::Store::should_pause`).
    pub fn should_pause(&self, paused: bool) -> bool {
        self.lock().store.should_pause(paused)
    }

    /// Carries out a store call's effects, outside the lock: objects
    /// dropped, files deleted, spills written (and recorded under the
    /// lock, which may spill more).
    fn settle(&self, mut effects: StoreEffects) {
        while !effects.spills.is_empty() || !effects.garbage.is_empty() || !effects.files.is_empty() {
            drop(std::mem::take(&mut effects.garbage));
            drop(std::mem::take(&mut effects.files));
            for job in std::mem::take(&mut effects.spills) {
                let (serial, obj, result) = job.write();
                let mut more = StoreEffects::default();
                if let Some(e) = self.lock().store.spill_done(serial, obj, result, &mut more) {
                    tracing::warn!("could not spill a result to disk; it stays in memory over the limit: {e}");
                }
                effects.garbage.append(&mut more.garbage);
                effects.files.append(&mut more.files);
                effects.spills.append(&mut more.spills);
            }
        }
    }
}

/// The object `task`'s result, if the store holds it (read back from its
/// spill file first if it was spilled: this blocks for that read).
pub fn get(store: &Store, task: TaskId) -> Option<Obj> {
    let mut effects = StoreEffects::default();
    let fetched = {
        let mut inner = store.lock();
        let slot = inner.slots.get(&task)?.clone();
        inner.store.fetch(&slot, &mut effects)
    };
    store.settle(effects);
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{e}");
            return None;
        }
    };
    let mut effects = StoreEffects::default();
    let name = || format!("{}{}", store.prefix, store.next.fetch_add(1, Ordering::Relaxed));
    let obj = shm::resolve(fetched, name, |cell, result| store.lock().store.loaded(cell, result, &mut effects));
    store.settle(effects);
    match obj {
        Ok(obj) => Some(obj),
        Err(e) => {
            tracing::error!("could not read a spilled result of {task:?} back: {e}");
            None
        }
    }
}

/// Keeps `obj` as `task`'s result (replacing an older copy), spilling
/// others if that takes the store over its limit.
pub fn put(store: &Store, task: TaskId, obj: Obj) {
    let mut effects = StoreEffects::default();
    {
        let mut inner = store.lock();
        let slot = inner.store.hold(obj, &mut effects);
        if let Some(old) = inner.slots.insert(task, slot) {
            inner.store.release(old, &mut effects);
        }
    }
    store.settle(effects);
}

/// Drops these results (and their spill files).
pub fn drop_all(store: &Store, tasks: impl IntoIterator<Item = TaskId>) {
    let mut effects = StoreEffects::default();
    {
        let mut inner = store.lock();
        for task in tasks {
            if let Some(slot) = inner.slots.remove(&task) {
                inner.store.release(slot, &mut effects);
            }
        }
    }
    store.settle(effects);
}

/// Drops every result (a new session with the scheduler: ids of the last
/// one mean nothing now).
pub fn clear(store: &Store) {
    let tasks: Vec<TaskId> = store.lock().slots.keys().copied().collect();
    drop_all(store, tasks);
}
