//! The client's store of results: which results are in shared memory and
//! which are spilled to disk, the memory limit, and the moves between them.
//!
//! # What is counted
//!
//! The limit (`ProcessesOptions::memory_limit`) bounds the bytes of result
//! **segments** the client holds — the sealed memfds of results of at least
//! [`INLINE_MAX`](crate::uds::INLINE_MAX) bytes. Inline results (under
//! 64 KiB each, on the client's heap) are neither counted nor spilled: a
//! spill file per object that small would cost more than it frees. Literal
//! arguments published as segments are lineage, not results, and are not
//! counted either.
//!
//! # Descriptors are counted too
//!
//! Each result segment the store holds is an open file descriptor of the
//! client process, and a process may open only `RLIMIT_NOFILE` (soft) of
//! them: at 1024, the common default, a thousand live results of 64 KiB
//! would make every `recvmsg` of a worker connection lose its descriptors
//! (`MSG_CTRUNC`) and the connection fail. So the store counts the segments
//! it holds beside their bytes, against `StoreConfig::descriptors` (by
//! default `crate::limits::descriptor_budget`: the soft limit, raised to
//! the hard one at start, less a reserve for the workers' sockets, the
//! frames in flight and spill I/O), and past that budget spills just as
//! past the byte limit: a spilled result is a file *path*, not an open
//! descriptor. Inline results and literal arguments (lineage, not results)
//! hold no descriptor of the store's and are not counted.
//!
//! # Where an object is
//!
//! Every stored result is in exactly one place at a time, changed only
//! under the engine lock; never in none:
//!
//! ```text
//!   Memory ──make_room──► Spilling ──write ok──► Spilled
//!     ▲ ▲                    │                     │
//!     │ └───write failed─────┘                     │ fetch: a run or the client needs it
//!     │                                            ▼
//!     └────────────read ok─────────────────── Loading ──read failed──► Spilled
//! ```
//!
//! - **Memory**: the segment, in the LRU index; counted.
//! - **Spilling**: the segment is still the object (readers get it as
//!   usual) while one thread writes it to a new file outside the lock;
//!   counted, and also counted as *leaving*, so that one pass does not pick
//!   more victims than it needs.
//! - **Spilled**: the file is the object; the segment is dropped (the kernel
//!   frees it once no worker maps it either). Not counted.
//! - **Loading**: the file is still the object while one thread reads it
//!   into a fresh segment outside the lock: the first thread to resolve
//!   the fetch claims the read-back, any other waits for its answer (a
//!   claimed read-back never waits on anything but its I/O and the engine
//!   lock, so this cannot deadlock). A fetch dropped unresolved is harmless:
//!   the object stays `Loading`, and the next thread to need it reads it.
//!   Counted from the fetch on (its room is made before the bytes arrive).
//!
//! A transition that finishes outside the lock (a spill, a load) finds its
//! entry again by serial number; if the entry was released meanwhile, the
//! new copy (file or segment) is dropped — deleted — with it.
//!
//! # The limit covers the workers' own memory too
//!
//! A running task's own data (what it allocates, the copies it makes, the
//! result it builds before it is archived) is private memory of its worker
//! process, not a segment; a limit over segments alone let a run limited
//! to 256 MB peak at 1.5 GB. So the engine measures the worker processes'
//! private memory (`RssAnon`, [`crate::limits::private_memory`]) every few
//! milliseconds, each above the least that worker was seen to hold (its
//! idle runtime), and hands the sum to [`Store::set_workers_memory`]; the
//! store counts it beside its own bytes, and spills results until both fit.
//! Result segments are shared memory, not in `RssAnon`: nothing is counted
//! twice. What the store cannot free (a task that alone needs more than the
//! limit) stays over it: the limit steers what is kept, it cannot stop a
//! task from allocating.
//!
//! # Over the limit, runs start one at a time
//!
//! Spilling frees only results that no run in flight reads. When the
//! counted bytes stay over the limit all the same (running tasks' own data,
//! pinned inputs), each further run would add its working memory to what is
//! already too much: so the engine pauses the scheduler
//! ([`Store::should_pause`], `Event::Pause`), which then starts a run only
//! when none is in flight. The graph still ends, one run at a time, and
//! the peak stays near the limit plus what the runs already under way
//! need. It resumes once the counted bytes are back under
//! [`RESUME_FRACTION`] of the limit (hysteresis, so that a count hovering
//! at the limit does not flip it every tick). Dask pauses a worker at 80%
//! of its limit the same way, to no run at all.
//!
//! # Policy
//!
//! - **When.** After a result is added or read back, and after a run ends
//!   (its inputs are unpinned): while the counted bytes, less those already
//!   leaving, are over the limit, the least recently used sealed segment
//!   that is neither pinned nor excluded is spilled.
//! - **LRU.** Used = stored, read back, fetched for a run, or read by the
//!   client (`result`, `gather`).
//! - **Pinned** objects — inputs of runs in flight, from the moment the
//!   run is built until the worker's `Done`/`Failed` or its loss — are not
//!   spilled. It would be *safe*: the client sent the worker a descriptor,
//!   the worker maps the segment itself, and the kernel keeps the pages for
//!   every mapping, so dropping the client's copy cannot pull the bytes from
//!   under a running task (segments are sealed: the copy on disk is exactly
//!   what the worker reads). It would only be *useless*: the memory is not
//!   freed until the run ends and the worker unmaps it, and it costs a write
//!   (and a read if the run is recomputed). So pins only steer the choice.
//! - **Too big.** The result being added (or read back) is never its own
//!   victim: a result larger than the limit spills everything else that can
//!   go and stays in memory, over the limit, until something newer needs the
//!   room.
//! - **Client reads.** Objects handed to the client's threads
//!   (`result`, `gather`) are not pinned: the store may spill its copy while
//!   a caller still deserializes its own `Arc`; that memory is freed when
//!   the caller lets go. So the limit bounds what the store holds; callers
//!   and workers may keep spilled segments alive a little longer.
//! - **Disk full.** A spill that fails (ENOSPC or any error) leaves the
//!   object in memory, over the limit, and logs a warning once per process;
//!   that object is not tried again until some spill file is deleted (room
//!   may have been made). Nothing is lost.
//! - **Read-back failures** (the file was removed or cut by someone else)
//!   fail the run that needed it (its task fails with the reason) or the
//!   client call, and leave the object spilled.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use shoal_core::object::Obj;
use shoal_core::scheduler::{SeededState, TaskId, WorkerId};

use crate::{SegmentObject, SpillBackend, SpillDir, SpillError, SpillFile, SpillIo};

/// What a store call leaves to do after the caller's lock is released:
/// objects to drop, spill files to delete, spills to write.
#[derive(Default)]
pub struct StoreEffects {
    /// Objects to drop (segments freed with their last holder).
    pub garbage: Vec<Obj>,
    /// Segments to write to spill files ([`SpillJob::write`], then
    /// [`Store::spill_done`]).
    pub spills: Vec<SpillJob>,
    /// Spill files to delete (by dropping them).
    pub files: Vec<Arc<SpillFile>>,
}

/// What a store holds: see `Client::store_stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// The memory limit in bytes.
    pub memory_limit: u64,
    /// Result segments (each an open file descriptor of this process) the
    /// store keeps at most before spilling: `RLIMIT_NOFILE` less a reserve.
    pub descriptor_budget: u64,
    /// Bytes of results in shared memory (including those being written to
    /// or read back from disk). Over the limit only while inputs of running
    /// tasks, the newest result, or results that failed to spill need it.
    pub memory_bytes: u64,
    /// Results in shared memory.
    pub memory_objects: usize,
    /// The worker processes' private memory when last measured (running
    /// tasks' heaps): counted against the limit with `memory_bytes`.
    pub workers_memory_bytes: u64,
    /// Bytes of results in spill files now.
    pub spilled_bytes: u64,
    /// Results in spill files now.
    pub spilled_objects: usize,
    /// The most bytes in spill files at any one time so far.
    pub peak_spilled_bytes: u64,
    /// Results written to disk so far.
    pub spills: u64,
    /// Results read back from disk so far.
    pub unspills: u64,
    /// Spills that failed (disk full, I/O error); those results stayed in
    /// memory. The first failure is logged.
    pub spill_failures: u64,
    /// The spill I/O in use.
    pub spill_io: SpillBackend,
    /// The store's own spill directory (removed at shutdown).
    pub spill_dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing runs under these locks that could leave the state half-made.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of result segments to keep in shared memory.
    pub memory_limit: u64,
    /// The directory in which the store makes its own spill directory.
    pub spill_parent: PathBuf,
    /// Which spill I/O to use.
    pub spill_io: SpillIo,
    /// Result segments (open descriptors) to keep at most; `None`: the
    /// engine derives it from `RLIMIT_NOFILE` at start (see the module docs).
    pub descriptors: Option<u64>,
}

/// The default memory limit: half the machine's memory, or of the memory
/// limit of this process's cgroup if that is lower (the tightest on the
/// path from its own cgroup up to the root, v2 or v1: see
/// `crate::limits`), as Dask bounds each worker by the machine's memory
/// and its cgroup. `u64::MAX` if neither can be read.
pub fn default_memory_limit() -> u64 {
    let total = crate::limits::machine_memory();
    let cgroup = crate::limits::cgroup_memory_limit();
    match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c) / 2,
        (Some(t), None) => t / 2,
        (None, Some(c)) => c / 2,
        (None, None) => u64::MAX,
    }
}

/// Raises this process's descriptor soft limit to its hard limit (workers
/// inherit it) and returns the store's descriptor budget for `workers`
/// worker connections (see the module docs). A limit that cannot be raised,
/// or a budget at its floor, is logged: the store still works within it.
pub fn descriptor_budget(workers: usize) -> u64 {
    use crate::limits;
    let soft = limits::raise_nofile_limit().unwrap_or_else(|e| {
        tracing::warn!("{e}");
        limits::nofile_limit()
    });
    let budget = limits::descriptor_budget(soft, workers);
    if budget == limits::MIN_FD_BUDGET {
        tracing::warn!(
            "this process may open only {soft} file descriptors (`ulimit -n`), too few for {workers} \
             workers and the results they make; results will spill early, and the client may still run out. \
             Raise the hard limit (`ulimit -Hn`, or LimitNOFILE= under systemd)."
        );
    }
    budget
}

/// Where a task's result is, as its spec records it.
#[derive(Clone)]
pub enum Slot {
    /// A small result, on the client's heap; not counted, never spilled.
    Inline(Obj),
    /// A segment result, in the store under this serial number.
    Stored(u64),
}

/// A result fetched for a run or for the client.
pub enum Fetched {
    /// In hand.
    Ready(Obj),
    /// Spilled: to be read back (or waited for) outside the lock, by
    /// [`resolve`]. Dropping it unresolved is harmless: the
    /// next thread that resolves the same object reads it back.
    Load(Arc<LoadCell>),
}

/// One read-back of a spilled object. The first thread to resolve it reads
/// the file (the *leader*, claiming it); others wait for its answer.
pub struct LoadCell {
    serial: u64,
    file: Arc<SpillFile>,
    claim: Mutex<Claim>,
    ready: Condvar,
}

enum Claim {
    Unclaimed,
    Claimed,
    Done(Result<Obj, String>),
}

impl LoadCell {
    /// `None` if this thread is to read the object back (it claimed it);
    /// otherwise waits for the thread that does, and returns its answer.
    fn claim_or_wait(&self) -> Option<Result<Obj, String>> {
        let mut claim = lock(&self.claim);
        loop {
            match &*claim {
                Claim::Unclaimed => {
                    *claim = Claim::Claimed;
                    return None;
                }
                Claim::Done(result) => return Some(result.clone()),
                Claim::Claimed => claim = self.ready.wait(claim).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn set(&self, claim: Claim) {
        *lock(&self.claim) = claim;
        self.ready.notify_all();
    }
}

/// A spill to carry out after unlocking: write `obj`'s segment to a file.
pub struct SpillJob {
    serial: u64,
    obj: Obj,
    dir: Arc<SpillDir>,
}

enum Place {
    Memory(Obj),
    Spilling(Obj),
    Spilled(Arc<SpillFile>),
    /// The cell holds the file.
    Loading(Arc<LoadCell>),
}

struct Entry {
    len: u64,
    /// Its key in the LRU index while in `Memory`.
    last_use: u64,
    /// Runs in flight that take it as an input.
    pins: u32,
    /// Its last spill failed at this `space_epoch`: not tried again until
    /// the epoch moves (a spill file was deleted).
    failed_at: Option<u64>,
    place: Place,
}

/// Paused runs resume when the counted bytes are back under this fraction
/// of the limit, as (numerator, denominator): 9/10, far enough under that a
/// count that hovers at the limit does not flip the pause every tick, near
/// enough that one freed result of a modest size resumes the graph.
pub const RESUME_FRACTION: (u64, u64) = (9, 10);

/// The store (see the module docs).
pub struct Store {
    limit: u64,
    /// Segments (descriptors) to hold at most.
    fd_budget: u64,
    /// `None` once the engine is shut down.
    dir: Option<Arc<SpillDir>>,
    dir_path: PathBuf,
    /// By serial. A fast hasher (`SeededState`): an insert, lookups and a
    /// removal per result.
    entries: HashMap<u64, Entry, SeededState>,
    /// `Memory` entries by last use (oldest first).
    lru: BTreeMap<u64, u64>,
    clock: u64,
    next_serial: u64,
    /// Bytes counted: `Memory`, `Spilling` and `Loading`.
    resident: u64,
    /// The worker processes' private memory, last measured
    /// ([`Store::set_workers_memory`]): counted against the limit beside
    /// `resident`.
    workers: u64,
    /// Bytes of `Spilling` entries.
    leaving: u64,
    /// Entries counted in `resident` (each holds a segment: a descriptor),
    /// and those of them `Spilling`.
    held: u64,
    held_leaving: u64,
    /// Bytes and number of spill files (`Spilled` and `Loading`).
    on_disk: u64,
    files: usize,
    /// Inputs of the runs in flight, by task and worker.
    runs: HashMap<(TaskId, WorkerId), Vec<u64>, SeededState>,
    /// Moves each time a spill file is deleted.
    space_epoch: u64,
    spills: u64,
    unspills: u64,
    spill_failures: u64,
    peak_on_disk: u64,
}

impl Store {
    /// Makes the spill directory (sweeping those of dead clients) and sets
    /// up its I/O.
    pub fn new(config: &StoreConfig) -> Result<Store, SpillError> {
        let dir = SpillDir::create(&config.spill_parent, config.spill_io)?;
        Ok(Store {
            limit: config.memory_limit,
            fd_budget: config.descriptors.unwrap_or(u64::MAX),
            dir_path: dir.path().to_path_buf(),
            dir: Some(dir),
            entries: HashMap::default(),
            lru: BTreeMap::new(),
            clock: 0,
            next_serial: 0,
            resident: 0,
            workers: 0,
            leaving: 0,
            held: 0,
            held_leaving: 0,
            on_disk: 0,
            files: 0,
            runs: HashMap::default(),
            space_epoch: 0,
            spills: 0,
            unspills: 0,
            spill_failures: 0,
            peak_on_disk: 0,
        })
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Keeps a task's result: segments in the store (which may spill others
    /// to make room), small results inline.
    pub fn hold(&mut self, obj: Obj, effects: &mut StoreEffects) -> Slot {
        let Some(segment) = obj.as_any().downcast_ref::<SegmentObject>() else { return Slot::Inline(obj) };
        let len = segment.segment().len() as u64;
        let serial = self.next_serial;
        self.next_serial += 1;
        let last_use = self.tick();
        self.lru.insert(last_use, serial);
        self.entries.insert(serial, Entry { len, last_use, pins: 0, failed_at: None, place: Place::Memory(obj) });
        self.resident += len;
        self.held += 1;
        self.make_room(Some(serial), effects);
        Slot::Stored(serial)
    }

    /// A result is no longer kept: its segment or file goes (after unlocking).
    pub fn release(&mut self, slot: Slot, effects: &mut StoreEffects) {
        let serial = match slot {
            Slot::Inline(obj) => return effects.garbage.push(obj),
            Slot::Stored(serial) => serial,
        };
        let Some(entry) = self.entries.remove(&serial) else { return };
        match entry.place {
            Place::Memory(obj) => {
                self.lru.remove(&entry.last_use);
                self.resident -= entry.len;
                self.held -= 1;
                effects.garbage.push(obj);
            }
            Place::Spilling(obj) => {
                // The spill's completion finds no entry and deletes its file.
                self.resident -= entry.len;
                self.leaving -= entry.len;
                self.held -= 1;
                self.held_leaving -= 1;
                effects.garbage.push(obj);
            }
            Place::Spilled(file) => {
                self.forget_file(entry.len);
                effects.files.push(file);
            }
            Place::Loading(cell) => {
                // A leader finishes, answers its followers, and drops its
                // copy of the file: deleted then.
                self.resident -= entry.len;
                self.held -= 1;
                self.forget_file(entry.len);
                effects.files.push(Arc::clone(&cell.file));
            }
        }
    }

    fn forget_file(&mut self, len: u64) {
        self.on_disk -= len;
        self.files -= 1;
        self.space_epoch += 1;
    }

    /// A result for a run or the client: in hand if in memory, else a ticket
    /// to read it back. Marks it used.
    pub fn fetch(&mut self, slot: &Slot, effects: &mut StoreEffects) -> Result<Fetched, String> {
        let serial = match slot {
            Slot::Inline(obj) => return Ok(Fetched::Ready(Arc::clone(obj))),
            Slot::Stored(serial) => *serial,
        };
        let now = self.tick();
        let Some(entry) = self.entries.get_mut(&serial) else {
            return Err("internal error: a stored result is missing from the store".into());
        };
        let load = match &entry.place {
            Place::Memory(obj) => {
                let obj = Arc::clone(obj);
                self.lru.remove(&entry.last_use);
                entry.last_use = now;
                self.lru.insert(now, serial);
                return Ok(Fetched::Ready(obj));
            }
            Place::Spilling(obj) => return Ok(Fetched::Ready(Arc::clone(obj))),
            Place::Loading(cell) => return Ok(Fetched::Load(Arc::clone(cell))),
            Place::Spilled(file) => Arc::clone(file),
        };
        let cell =
            Arc::new(LoadCell { serial, file: load, claim: Mutex::new(Claim::Unclaimed), ready: Condvar::new() });
        entry.place = Place::Loading(Arc::clone(&cell));
        entry.last_use = now;
        // Counted from now: room is made before the bytes arrive.
        self.resident += entry.len;
        self.held += 1;
        self.make_room(Some(serial), effects);
        Ok(Fetched::Load(cell))
    }

    /// A leader's read-back ended: the object is in memory again (counted,
    /// most recently used, its file deleted), or still spilled.
    pub fn loaded(&mut self, cell: &Arc<LoadCell>, result: &Result<Obj, String>, effects: &mut StoreEffects) {
        let now = self.tick();
        let serial = cell.serial;
        let Some(entry) = self.entries.get_mut(&serial) else { return };
        if !matches!(&entry.place, Place::Loading(c) if Arc::ptr_eq(c, cell)) {
            return;
        }
        let file = Arc::clone(&cell.file);
        match result {
            Ok(obj) => {
                entry.place = Place::Memory(Arc::clone(obj));
                entry.last_use = now;
                let len = entry.len;
                self.lru.insert(now, serial);
                self.forget_file(len);
                self.unspills += 1;
                effects.files.push(file);
                self.make_room(Some(serial), effects);
            }
            Err(_) => {
                entry.place = Place::Spilled(file);
                self.resident -= entry.len;
                self.held -= 1;
            }
        }
    }

    /// A spill ended: the object is on disk (its segment dropped), or back
    /// in memory if the write failed. A file for an entry released meanwhile
    /// is deleted.
    pub fn spill_done(
        &mut self,
        serial: u64,
        obj: Obj,
        result: Result<SpillFile, SpillError>,
        effects: &mut StoreEffects,
    ) -> Option<SpillError> {
        let now = self.tick();
        let entry = match self.entries.get_mut(&serial) {
            Some(entry) if matches!(entry.place, Place::Spilling(_)) => entry,
            _ => {
                effects.garbage.push(obj);
                if let Ok(file) = result {
                    effects.files.push(Arc::new(file));
                }
                return None;
            }
        };
        let len = entry.len;
        self.leaving -= len;
        self.held_leaving -= 1;
        // The job's `obj` and the entry's are the same segment.
        let (old, failure) = match result {
            Ok(file) => {
                self.resident -= len;
                self.held -= 1;
                self.on_disk += len;
                self.files += 1;
                self.peak_on_disk = self.peak_on_disk.max(self.on_disk);
                self.spills += 1;
                effects.garbage.push(obj);
                (std::mem::replace(&mut entry.place, Place::Spilled(Arc::new(file))), None)
            }
            Err(e) => {
                entry.failed_at = Some(self.space_epoch);
                entry.last_use = now;
                self.lru.insert(now, serial);
                self.spill_failures += 1;
                (std::mem::replace(&mut entry.place, Place::Memory(obj)), Some(e))
            }
        };
        if let Place::Spilling(old) = old {
            effects.garbage.push(old);
        }
        failure
    }

    /// Spills least recently used, unpinned segments (but not `keep`) until
    /// the counted bytes and segments not already leaving fit the limit and
    /// the descriptor budget, or nothing more can go.
    fn make_room(&mut self, keep: Option<u64>, effects: &mut StoreEffects) {
        let Some(dir) = &self.dir else { return };
        while self.counted() > self.limit || self.held - self.held_leaving > self.fd_budget {
            let epoch = self.space_epoch;
            let victim = self.lru.iter().map(|(_, &serial)| serial).find(|serial| {
                Some(*serial) != keep
                    && self.entries.get(serial).is_some_and(|e| e.pins == 0 && e.failed_at.is_none_or(|at| at < epoch))
            });
            let Some(serial) = victim else { return };
            let Some(entry) = self.entries.get_mut(&serial) else { return };
            self.lru.remove(&entry.last_use);
            let Place::Memory(obj) = &entry.place else { continue };
            let obj = Arc::clone(obj);
            entry.place = Place::Spilling(Arc::clone(&obj));
            self.leaving += entry.len;
            self.held_leaving += 1;
            effects.spills.push(SpillJob { serial, obj, dir: Arc::clone(dir) });
        }
    }

    /// The bytes counted against the limit: results in memory, less those
    /// already leaving for disk, and the workers' own memory.
    fn counted(&self) -> u64 {
        self.resident.saturating_sub(self.leaving).saturating_add(self.workers)
    }

    /// Whether runs should start one at a time (see "Over the limit, runs
    /// start one at a time" in the module docs), given whether they do now:
    /// over the limit to pause, under [`RESUME_FRACTION`] of it to resume.
    /// Bytes already leaving for disk count as gone.
    pub fn should_pause(&self, paused: bool) -> bool {
        let counted = self.counted();
        if paused {
            // Integer arithmetic: the fraction's numerator and denominator.
            counted.saturating_mul(RESUME_FRACTION.1) > self.limit.saturating_mul(RESUME_FRACTION.0)
        } else {
            counted > self.limit
        }
    }

    /// The worker processes now hold `bytes` of private memory (running
    /// tasks' own data: their heaps, the copies they make): the limit covers
    /// it too, so results spill to leave it room (see "The limit covers the
    /// workers' own memory too" in the module docs).
    pub fn set_workers_memory(&mut self, bytes: u64, effects: &mut StoreEffects) {
        self.workers = bytes;
        self.make_room(None, effects);
    }

    /// A run was sent to `worker` with these inputs: they are pinned until
    /// it ends.
    pub fn run_started(&mut self, task: TaskId, worker: WorkerId, inputs: Vec<u64>) {
        if inputs.is_empty() && self.runs.is_empty() {
            return; // the common case of small tasks: no hashing at all
        }
        for serial in &inputs {
            if let Some(entry) = self.entries.get_mut(serial) {
                entry.pins += 1;
            }
        }
        if let Some(old) = self.runs.insert((task, worker), inputs) {
            self.unpin(&old);
        }
    }

    /// A run ended (done, failed, or not sent): its inputs are unpinned, and
    /// may now make room.
    pub fn run_ended(&mut self, task: TaskId, worker: WorkerId, effects: &mut StoreEffects) {
        if self.runs.is_empty() {
            return;
        }
        if let Some(inputs) = self.runs.remove(&(task, worker)) {
            self.unpin(&inputs);
            self.make_room(None, effects);
        }
    }

    /// A run moved from worker `from` to worker `to` before it started (a
    /// direct steal): its inputs stay pinned, for `to` now.
    pub fn run_moved(&mut self, task: TaskId, from: WorkerId, to: WorkerId) {
        if let Some(inputs) = self.runs.remove(&(task, from))
            && let Some(old) = self.runs.insert((task, to), inputs)
        {
            self.unpin(&old);
        }
    }

    /// Every run on a lost worker ended.
    pub fn worker_lost(&mut self, worker: WorkerId, effects: &mut StoreEffects) {
        let ended: Vec<(TaskId, WorkerId)> = self.runs.keys().filter(|(_, w)| *w == worker).copied().collect();
        for key in ended {
            if let Some(inputs) = self.runs.remove(&key) {
                self.unpin(&inputs);
            }
        }
        self.make_room(None, effects);
    }

    fn unpin(&mut self, inputs: &[u64]) {
        for serial in inputs {
            if let Some(entry) = self.entries.get_mut(serial) {
                entry.pins = entry.pins.saturating_sub(1);
            }
        }
    }

    /// What the store holds, for `Client::store_stats`.
    pub fn stats(&self) -> StoreStats {
        let in_memory = self.entries.values().filter(|e| !matches!(e.place, Place::Spilled(_))).count();
        StoreStats {
            memory_limit: self.limit,
            descriptor_budget: self.fd_budget,
            memory_bytes: self.resident,
            workers_memory_bytes: self.workers,
            memory_objects: in_memory,
            spilled_bytes: self.on_disk,
            spilled_objects: self.files,
            peak_spilled_bytes: self.peak_on_disk,
            spills: self.spills,
            unspills: self.unspills,
            spill_failures: self.spill_failures,
            spill_io: self.dir.as_ref().map(|d| d.backend()).unwrap_or(SpillBackend::Positioned),
            spill_dir: self.dir_path.clone(),
        }
    }

    /// Shutting down: everything the store holds, to drop after unlocking
    /// (segments freed, files deleted, and the directory removed once no
    /// spill in flight holds it any more).
    pub fn close(&mut self) -> Closed {
        self.lru.clear();
        self.runs.clear();
        Closed { _entries: std::mem::take(&mut self.entries), _dir: self.dir.take() }
    }
}

/// What a closed store held; dropping it frees and deletes everything.
pub struct Closed {
    _entries: HashMap<u64, Entry, SeededState>,
    _dir: Option<Arc<SpillDir>>,
}

impl SpillJob {
    /// Writes the object to a new spill file (outside any lock): then
    /// [`Store::spill_done`] records the outcome.
    pub fn write(self) -> (u64, Obj, Result<SpillFile, SpillError>) {
        let SpillJob { serial, obj, dir } = self;
        let result = match obj.as_any().downcast_ref::<SegmentObject>() {
            // Straight from the sealed mapping: no copy.
            Some(segment) => dir.write(segment.segment().bytes()),
            None => Err(SpillError::NotASegment),
        };
        (serial, obj, result)
    }
}

/// The object behind a fetch: read back from its spill file into a new
/// segment called `name()`, or waited for if another thread is doing that.
/// `loaded` records the outcome in the store (under the caller's lock,
/// with [`Store::loaded`]) before followers are answered.
pub fn resolve(
    fetched: Fetched,
    name: impl FnOnce() -> String,
    loaded: impl FnOnce(&Arc<LoadCell>, &Result<Obj, String>),
) -> Result<Obj, String> {
    let cell = match fetched {
        Fetched::Ready(obj) => return Ok(obj),
        Fetched::Load(cell) => cell,
    };
    if let Some(answer) = cell.claim_or_wait() {
        return answer;
    }
    // Whatever happens below, the claim is given up or answered.
    let guard = Unclaim(&cell);
    // Straight into the new segment's mapping: no copy.
    let result = cell
        .file
        .read_segment(&name())
        .map(|segment| Arc::new(SegmentObject::new(segment)) as Obj)
        .map_err(|e| e.to_string());
    loaded(&cell, &result);
    cell.set(Claim::Done(result.clone()));
    std::mem::forget(guard);
    result
}

/// Gives a claimed read-back up if its leader never answered (a panic
/// between claiming and answering): the next thread claims it again.
struct Unclaim<'a>(&'a LoadCell);

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        self.0.set(Claim::Unclaimed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJ: usize = 100_000;

    fn config(limit: u64, parent: &std::path::Path) -> StoreConfig {
        StoreConfig {
            memory_limit: limit,
            spill_parent: parent.to_path_buf(),
            spill_io: SpillIo::Auto,
            descriptors: None,
        }
    }

    fn segment(fill: u8) -> Obj {
        Arc::new(SegmentObject::copy_of(&vec![fill; OBJ], "shoal-test-store").unwrap())
    }

    fn serial(slot: &Slot) -> u64 {
        match slot {
            Slot::Stored(serial) => *serial,
            Slot::Inline(_) => panic!("a segment result is stored"),
        }
    }

    /// Carries out the spills `effects` asks for, as `run_spills` does.
    fn spill(store: &mut Store, effects: &mut StoreEffects) -> Vec<u64> {
        let jobs = std::mem::take(&mut effects.spills);
        let mut spilled = Vec::new();
        for SpillJob { serial, obj, dir } in jobs {
            let bytes = obj.as_any().downcast_ref::<SegmentObject>().unwrap().segment().bytes().to_vec();
            let result = dir.write(&bytes);
            assert!(store.spill_done(serial, obj, result, effects).is_none());
            spilled.push(serial);
        }
        spilled
    }

    /// A spill parent for one test, removed at its end, pass or fail.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(what: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("shoal-test-store-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    #[test]
    fn runs_pause_over_the_limit_and_resume_under_nine_tenths_of_it() {
        let parent = scratch("pause");
        let limit = 10 * OBJ as u64;
        let mut store = Store::new(&config(limit, &parent.0)).unwrap();
        let mut fx = StoreEffects::default();
        let a = store.hold(segment(1), &mut fx);
        store.run_started(TaskId { index: 0, generation: 0 }, WorkerId(0), vec![serial(&a)]);
        assert!(!store.should_pause(false), "one result of ten: room");
        // The running task's own data takes the rest and more; its input is
        // pinned, so nothing can spill: pause.
        store.set_workers_memory(limit, &mut fx);
        assert!(fx.spills.is_empty(), "a pinned input never spills");
        assert!(store.should_pause(false), "over the limit with nothing to spill");
        // Back at the limit (the input and the task's data): still paused
        // (hysteresis), and not paused anew.
        store.set_workers_memory(limit - OBJ as u64, &mut fx);
        assert!(store.should_pause(true), "at the limit a paused store stays paused");
        assert!(!store.should_pause(false), "at the limit, not over it");
        // 9.5 tenths: still paused; 8.5 tenths: resume.
        store.set_workers_memory(limit - 3 * OBJ as u64 / 2, &mut fx);
        assert!(store.should_pause(true), "9.5 tenths: still paused");
        store.set_workers_memory(limit - 5 * OBJ as u64 / 2, &mut fx);
        assert!(!store.should_pause(true), "8.5 tenths: resume");
    }

    #[test]
    fn the_workers_private_memory_counts_against_the_limit() {
        let parent = scratch("workers");
        let mut store = Store::new(&config(3 * OBJ as u64, &parent.0)).unwrap();
        let mut fx = StoreEffects::default();
        let a = store.hold(segment(1), &mut fx);
        let b = store.hold(segment(2), &mut fx);
        assert!(fx.spills.is_empty(), "two results fit in three");
        // A running task takes 1.5 results' worth of its own: the oldest result goes.
        store.set_workers_memory(OBJ as u64 + OBJ as u64 / 2, &mut fx);
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&a)]);
        assert_eq!(store.stats().workers_memory_bytes, OBJ as u64 + OBJ as u64 / 2);
        // It ends: room again, and a new result is kept beside `b` with no spill.
        store.set_workers_memory(0, &mut fx);
        let _c = store.hold(segment(3), &mut fx);
        assert!(fx.spills.is_empty());
        let s = store.stats();
        assert_eq!((s.memory_objects, s.spilled_objects), (2, 1));
        let _ = b;
    }

    #[test]
    fn least_recently_used_unpinned_segments_spill_first() {
        let parent = scratch("lru");
        let mut store = Store::new(&config(2 * OBJ as u64 + OBJ as u64 / 2, &parent.0)).unwrap();
        let mut fx = StoreEffects::default();
        let a = store.hold(segment(1), &mut fx);
        let b = store.hold(segment(2), &mut fx);
        assert!(fx.spills.is_empty(), "two fit");
        // `a` is used again: `b` is now the least recently used.
        assert!(matches!(store.fetch(&a, &mut fx), Ok(Fetched::Ready(_))));
        let c = store.hold(segment(3), &mut fx);
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&b)]);
        // A run takes `a` as input: pinned, so `c` goes rather than `a`
        // (and never the result being added, `d`).
        let (task, worker) = (TaskId { index: 1, generation: 0 }, WorkerId(0));
        store.run_started(task, worker, vec![serial(&a)]);
        let d = store.hold(segment(4), &mut fx);
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&c)]);
        let s = store.stats();
        assert_eq!((s.memory_objects, s.spilled_objects), (2, 2));
        assert!(s.memory_bytes <= s.memory_limit);
        // The run ends: nothing is over the limit, nothing moves.
        store.run_ended(task, worker, &mut fx);
        assert!(fx.spills.is_empty());
        // Reading `b` back makes room again: `a` is the oldest now.
        let Ok(Fetched::Load(cell)) = store.fetch(&b, &mut fx) else { panic!("b is spilled") };
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&a)]);
        let back: Obj = Arc::new(SegmentObject::new(cell.file.read_segment("shoal-test-store-back").unwrap()));
        assert_eq!(back.archived_bytes().unwrap(), &vec![2u8; OBJ][..], "read back byte for byte");
        store.loaded(&cell, &Ok(back), &mut fx);
        drop(cell); // as the leader does: the file goes with the last holder
        assert!(matches!(store.fetch(&b, &mut fx), Ok(Fetched::Ready(_))), "in memory again");
        let s = store.stats();
        assert_eq!((s.memory_objects, s.spilled_objects, s.spills, s.unspills), (2, 2, 3, 1));
        // Releasing everything deletes every file.
        for slot in [a, b, c, d] {
            store.release(slot, &mut fx);
        }
        drop(fx);
        let s = store.stats();
        assert_eq!((s.memory_bytes, s.spilled_bytes, s.memory_objects, s.spilled_objects), (0, 0, 0, 0));
        let files = std::fs::read_dir(&s.spill_dir)
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "spill")))
            .count();
        assert_eq!(files, 0);
        drop(store.close());
        assert!(!s.spill_dir.exists());
    }

    #[test]
    fn a_release_during_a_spill_deletes_the_new_file() {
        let parent = scratch("race");
        let mut store = Store::new(&config(OBJ as u64, &parent.0)).unwrap();
        let mut fx = StoreEffects::default();
        let a = store.hold(segment(1), &mut fx);
        let _b = store.hold(segment(2), &mut fx);
        let job = fx.spills.pop().unwrap();
        // Released while its spill is being written.
        store.release(a, &mut fx);
        let file = job.dir.write(&[0; 10]).unwrap();
        let path = file.path().to_path_buf();
        assert!(store.spill_done(job.serial, job.obj, Ok(file), &mut fx).is_none());
        drop(fx);
        assert!(!path.exists(), "the file of a released object is deleted");
        assert_eq!(store.stats().spilled_objects, 0);
        drop(store.close());
    }

    #[test]
    fn past_the_descriptor_budget_segments_spill_as_past_the_byte_limit() {
        let parent = scratch("fds");
        let mut store = Store::new(&StoreConfig { descriptors: Some(2), ..config(u64::MAX, &parent.0) }).unwrap();
        let mut fx = StoreEffects::default();
        let a = store.hold(segment(1), &mut fx);
        let b = store.hold(segment(2), &mut fx);
        assert!(fx.spills.is_empty(), "two segments fit the budget");
        let c = store.hold(segment(3), &mut fx);
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&a)], "the oldest goes; bytes are far under the limit");
        let s = store.stats();
        assert_eq!((s.memory_objects, s.spilled_objects, s.descriptor_budget), (2, 1, 2));
        // Reading `a` back counts its new descriptor: `b` goes.
        let Ok(Fetched::Load(cell)) = store.fetch(&a, &mut fx) else { panic!("a is spilled") };
        assert_eq!(spill(&mut store, &mut fx), vec![serial(&b)]);
        drop(cell);
        // Releasing frees a place: nothing more moves.
        store.release(c, &mut fx);
        assert!(fx.spills.is_empty());
        drop(fx);
        drop(store.close());
    }

    #[test]
    fn the_default_limit_is_half_the_memory() {
        let limit = default_memory_limit();
        let total: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024;
        assert!(limit > 0 && limit <= total / 2, "{limit} of {total}");
    }
}
