//! Workers, the run queue and placement.
//!
//! A worker takes up to `nthreads * (1 + extra_slots_per_thread)` tasks;
//! ready tasks beyond what the workers take wait in one global priority
//! queue (Dask's "queued" tasks), so a big graph never floods a worker and
//! the order computed in [`super::order`] decides what runs next.
//!
//! The queue ([`super::queue`]) deletes lazily: a task that leaves `Ready`
//! while queued (it erred, was lost, or is no longer needed) keeps its
//! entry, and [`Scheduler::dispatch`] drops entries whose task is not
//! `Ready` any more. A task that comes back to `Ready` is pushed again; its
//! priority never changes, so whichever of its entries pops first is as
//! good as any.
//!
//! A run that a worker gives back before starting it (`TaskStolen`) moves
//! straight to the thief the driver names, if it has a free slot, or goes
//! back to the queue.
//!
//! A run the scheduler gives up on (`abandon_run`: cancelled, no longer
//! needed, an input lost) leaves `processing`. With
//! [`super::SchedulerConfig::recall`] it moves to the worker's `abandoned`
//! list and keeps its slot until the worker answers for it (its result, its
//! failure, or `TaskStolen` once taken back); otherwise its slot is free at
//! once. Either way the scheduler no longer waits for it.
//!
//! Placement: among workers with a free slot, the one holding the most bytes
//! of the task's inputs, then the one processing fewest tasks, then the
//! lowest id — deterministic, so the simulator's runs are reproducible.
//! With [`super::Placement::Random`] (a benchmark control) a free worker is
//! drawn from a seeded generator instead, as reproducibly.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};

use super::hash::SeededState;
use super::queue::Queued;
use super::state::Scheduler;
use super::{Action, TaskId, TaskState, WorkerId};

pub(super) struct Worker {
    pub nthreads: u32,
    pub capacity: u32,
    /// Tasks sent to it and not finished; a task's `pos` is its index here.
    pub processing: Vec<TaskId>,
    /// Beside `processing`, entry for entry: the driver said the run started
    /// (`TaskStarted`), so a loss of the worker is counted against it.
    pub started: Vec<bool>,
    /// Runs the scheduler gave up on that the worker has not answered yet
    /// (see "Abandoned runs" in the module docs of the scheduler): they keep
    /// their slot until `TaskFinished`, `TaskFailed` or `TaskStolen` names
    /// them. Only with [`super::SchedulerConfig::recall`]. A short list.
    pub abandoned: Vec<TaskId>,
    /// Tasks whose result it holds; a task's `pos` is its index here.
    pub held: Vec<TaskId>,
    /// Ready tasks waiting for a slot here, where their inputs are (with
    /// `weigh_transfers`, see [`super::steal`]), in priority order.
    pub parked: VecDeque<TaskId>,
}

impl Worker {
    pub fn load(&self) -> u32 {
        // `processing` and `abandoned` never exceed a `u32` capacity by more
        // than the tasks a shrinking `WorkerJoined` left on it, all of which
        // were sent within an earlier `u32` capacity.
        u32::try_from(self.processing.len() + self.abandoned.len()).unwrap_or(u32::MAX)
    }

    fn has_free_slot(&self) -> bool {
        self.load() < self.capacity
    }
}

#[derive(Default)]
pub(super) struct Workers {
    pub map: HashMap<WorkerId, Worker, SeededState>,
    /// The workers with a free slot, as `(tasks processing, id)`: the first
    /// is the least loaded, lowest id.
    pub free: BTreeSet<(u32, WorkerId)>,
    /// The workers with parked tasks (maybe only stale ones).
    pub with_parked: BTreeSet<WorkerId>,
}

impl Workers {
    pub fn contains(&self, w: WorkerId) -> bool {
        self.map.contains_key(&w)
    }

    /// Runs sent to `w` and not answered: processing, and abandoned.
    pub fn load(&self, w: WorkerId) -> Option<usize> {
        self.map.get(&w).map(|worker| worker.processing.len() + worker.abandoned.len())
    }

    pub fn has_free_slot(&self, w: WorkerId) -> bool {
        self.map.get(&w).is_some_and(Worker::has_free_slot)
    }

    /// Takes `w` out, with everything it was running and holding.
    pub fn remove(&mut self, w: WorkerId) -> Option<Worker> {
        let worker = self.map.remove(&w)?;
        self.free.remove(&(worker.load(), w));
        self.with_parked.remove(&w);
        Some(worker)
    }

    /// Runs `change` on worker `w` and keeps the free set in step with it.
    pub fn update<R>(&mut self, w: WorkerId, change: impl FnOnce(&mut Worker) -> R) -> Option<R> {
        let worker = self.map.get_mut(&w)?;
        let was_free = worker.has_free_slot().then(|| worker.load());
        let result = change(worker);
        let now_free = worker.has_free_slot().then(|| worker.load());
        if was_free != now_free {
            if let Some(load) = was_free {
                self.free.remove(&(load, w));
            }
            if let Some(load) = now_free {
                self.free.insert((load, w));
            }
        }
        Some(result)
    }
}

/// The next number of a splitmix64 generator (Vigna's constants): small,
/// fast and well mixed, enough to draw workers reproducibly.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Slots of a worker with `nthreads` threads.
fn capacity(nthreads: u32, extra_slots_per_thread: u32) -> u32 {
    nthreads.saturating_mul(extra_slots_per_thread.saturating_add(1))
}

impl Scheduler {
    /// A worker joined, or changed its thread count.
    pub(super) fn worker_joined(&mut self, w: WorkerId, nthreads: u32) {
        let capacity = capacity(nthreads, self.config.extra_slots_per_thread);
        match self.workers.map.entry(w) {
            Entry::Occupied(_) => {
                self.workers.update(w, |worker| {
                    worker.nthreads = nthreads;
                    worker.capacity = capacity;
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(Worker {
                    nthreads,
                    capacity,
                    processing: Vec::new(),
                    started: Vec::new(),
                    abandoned: Vec::new(),
                    held: Vec::new(),
                    parked: VecDeque::new(),
                });
                if capacity > 0 {
                    self.workers.free.insert((0, w));
                }
            }
        }
    }

    /// Every worker's slots follow a new `extra_slots_per_thread`. A worker
    /// that now runs more than its slots gets nothing more until it is below
    /// them again.
    pub(super) fn set_saturation(&mut self, extra_slots_per_thread: u32) {
        if extra_slots_per_thread == self.config.extra_slots_per_thread {
            return;
        }
        self.config.extra_slots_per_thread = extra_slots_per_thread;
        let ids: Vec<WorkerId> = self.workers.map.keys().copied().collect();
        for w in ids {
            self.workers.update(w, |worker| worker.capacity = capacity(worker.nthreads, extra_slots_per_thread));
        }
    }

    /// Puts a task whose inputs are all in memory into the run queue.
    pub(super) fn enqueue(&mut self, t: TaskId) {
        self.tasks.set_state(t, TaskState::Ready);
        let priority = self.tasks.at(t).priority;
        self.queue.push(Queued { priority, slot: t.index });
    }

    /// Sends queued tasks, highest priority first, while a worker has a
    /// free slot.
    pub(super) fn dispatch(&mut self, out: &mut Vec<Action>) {
        // Random placement (a benchmark control) ignores inputs, weighed or not.
        if self.config.weigh_transfers && self.config.placement == super::Placement::Locality {
            return self.dispatch_weighing(out);
        }
        while !self.workers.free.is_empty() && self.may_start() {
            let Some(Queued { priority, slot }) = self.queue.pop() else { break };
            let Some(task) = self.tasks.ready_in_slot(slot, priority) else {
                continue; // a stale entry (see the module docs)
            };
            let w = self.choose_worker(task);
            self.tasks.set_state(task, TaskState::Processing);
            self.start_processing(task, w);
            out.push(Action::Run { task, worker: w });
        }
    }

    /// The worker for `t`; there must be a free one.
    pub(super) fn choose_worker(&mut self, t: TaskId) -> WorkerId {
        if let super::Placement::Random { .. } = self.config.placement {
            return self.random_free_worker();
        }
        // Bytes of `t`'s inputs held by each free worker (a short list: at
        // most one entry per worker, usually one or two).
        let mut bytes = std::mem::take(&mut self.placement);
        bytes.clear();
        for &d in self.tasks.at(t).deps.iter() {
            let dep = self.tasks.at(d);
            debug_assert_eq!(dep.state(), TaskState::Memory);
            if dep.nbytes == 0 || dep.state() != TaskState::Memory {
                continue;
            }
            let holder = dep.worker;
            match bytes.iter_mut().find(|(w, _)| *w == holder) {
                Some((_, b)) => *b = b.saturating_add(dep.nbytes),
                None => {
                    if self.workers.map.get(&holder).is_some_and(Worker::has_free_slot) {
                        bytes.push((holder, dep.nbytes));
                    }
                }
            }
        }
        // Most bytes, then fewest processing, then lowest id.
        let local = bytes
            .iter()
            .map(|&(w, b)| (b, std::cmp::Reverse((self.workers.map[&w].load(), w))))
            .max()
            .map(|(_, std::cmp::Reverse((_, w)))| w);
        self.placement = bytes;
        // Without any input bytes on a free worker, the least loaded wins;
        // the caller made sure the free set is not empty.
        local.or_else(|| self.workers.free.first().map(|&(_, w)| w)).unwrap_or(WorkerId(0))
    }

    /// A worker drawn uniformly among those with a free slot
    /// ([`super::Placement::Random`]); there must be one. The free set is
    /// ordered, so the draw depends only on the seed and the events.
    fn random_free_worker(&mut self) -> WorkerId {
        let n = self.workers.free.len().max(1) as u64;
        let i = usize::try_from(splitmix64(&mut self.rng) % n).unwrap_or(0);
        self.workers.free.iter().nth(i).map(|&(_, w)| w).unwrap_or(WorkerId(0))
    }

    /// `t`'s run on `from` was taken back before it started (see
    /// "Stealing" in the module docs): it goes to `to` if that worker is
    /// live with a free slot, else back to the queue.
    /// A run asked back for an idle worker (`Action::TakeBack`) goes to
    /// that worker when `to` is not given.
    pub(super) fn task_stolen(&mut self, t: TaskId, from: WorkerId, to: Option<WorkerId>, out: &mut Vec<Action>) {
        let asked_for = self.taking.remove(&t).and_then(|(asked, thief)| (asked == from).then_some(thief));
        let to = to.or(asked_for);
        if !self.is_processing_on(t, from) {
            // A run nobody waits for any more; if it was abandoned, its slot
            // is free now.
            self.abandoned_answered(t, from);
            return;
        }
        self.stop_processing(t);
        match to.filter(|&w| w != from && self.workers.has_free_slot(w)) {
            Some(w) => {
                self.start_processing(t, w);
                out.push(Action::Run { task: t, worker: w });
            }
            None => self.enqueue(t),
        }
    }

    /// `t`'s run on `from` moved to `to`, worker to worker, before it
    /// started (see `Event::TaskMoved`).
    pub(super) fn task_moved(&mut self, t: TaskId, from: WorkerId, to: WorkerId, out: &mut Vec<Action>) {
        if from == to {
            return; // not a move: the run stays where it is
        }
        if !self.is_processing_on(t, from) {
            // An abandoned run keeps its slot, now on `to`, until `to`
            // answers for it; a run the scheduler forgot, or a second
            // notice of a move, changes nothing.
            if self.abandoned_answered(t, from) && self.workers.contains(to) {
                self.workers.update(to, |worker| worker.abandoned.push(t));
                out.push(Action::Recall { task: t, worker: to });
            }
            return;
        }
        self.stop_processing(t);
        if self.workers.contains(to) {
            self.start_processing(t, to);
        } else {
            self.enqueue(t);
        }
    }

    /// Whether `t` is live and processing on `w` (a run the scheduler waits
    /// for there).
    pub(super) fn is_processing_on(&self, t: TaskId, w: WorkerId) -> bool {
        self.tasks.get(t).is_some_and(|r| r.state() == TaskState::Processing && r.worker == w)
    }

    pub(super) fn start_processing(&mut self, t: TaskId, w: WorkerId) {
        let pos = self.workers.update(w, |worker| {
            worker.processing.push(t);
            worker.started.push(false);
            worker.processing.len() - 1
        });
        debug_assert!(pos.is_some(), "dispatch chose an unknown worker");
        let r = self.tasks.at_mut(t);
        r.worker = w;
        r.set_pos(pos.unwrap_or(0));
    }

    /// Whether `t` (processing) still has its entry on its worker's list:
    /// false once its run ended or was abandoned, or its worker is gone.
    fn has_open_run(&self, t: TaskId) -> bool {
        let r = self.tasks.at(t);
        self.workers.map.get(&r.worker).is_some_and(|worker| worker.processing.get(r.pos()) == Some(&t))
    }

    /// Takes `t` (processing) off its worker's list, freeing the slot; the
    /// run ended (or is the worker's no more). The worker may be gone
    /// already (`WorkerLost` takes its lists first), and the entry too (a
    /// run that ended, then the task failed): then nothing happens.
    pub(super) fn stop_processing(&mut self, t: TaskId) {
        if !self.has_open_run(t) {
            return;
        }
        let (w, pos) = {
            let r = self.tasks.at(t);
            (r.worker, r.pos())
        };
        let moved = self.workers.update(w, |worker| {
            worker.processing.swap_remove(pos);
            worker.started.swap_remove(pos);
            worker.processing.get(pos).copied()
        });
        if let Some(Some(moved)) = moved {
            self.tasks.at_mut(moved).set_pos(pos);
        }
    }

    /// The scheduler stops waiting for `t`'s run (processing), which may
    /// still run. A driver that can take runs back
    /// ([`super::SchedulerConfig::recall`]) is told to (`Recall`), and the
    /// run keeps its slot until the worker answers for it; otherwise the
    /// slot is free at once. Nothing happens if the run is not open (it
    /// ended, or its worker is gone).
    pub(super) fn abandon_run(&mut self, t: TaskId, out: &mut Vec<Action>) {
        if !self.has_open_run(t) {
            return;
        }
        if !self.config.recall {
            self.stop_processing(t);
            return;
        }
        let (w, pos) = {
            let r = self.tasks.at(t);
            (r.worker, r.pos())
        };
        // The load is unchanged (one entry moves between the lists), so the
        // free set needs no update.
        let moved = self.workers.map.get_mut(&w).and_then(|worker| {
            worker.processing.swap_remove(pos);
            worker.started.swap_remove(pos);
            worker.abandoned.push(t);
            worker.processing.get(pos).copied()
        });
        if let Some(moved) = moved {
            self.tasks.at_mut(moved).set_pos(pos);
        }
        out.push(Action::Recall { task: t, worker: w });
    }

    /// `w` answered for a run of `t` the scheduler no longer waits for: if
    /// it was abandoned there, its slot is free now. Whether it was.
    pub(super) fn abandoned_answered(&mut self, t: TaskId, w: WorkerId) -> bool {
        self.workers
            .update(w, |worker| match worker.abandoned.iter().position(|&x| x == t) {
                Some(i) => {
                    worker.abandoned.swap_remove(i);
                    true
                }
                None => false,
            })
            .unwrap_or(false)
    }

    /// The driver learned that `t`'s run on `w` started.
    pub(super) fn task_started(&mut self, t: TaskId, w: WorkerId) {
        if !self.is_processing_on(t, w) {
            return; // ended, abandoned or lost meanwhile: nothing to note
        }
        let pos = self.tasks.at(t).pos();
        if let Some(worker) = self.workers.map.get_mut(&w)
            && let Some(started) = worker.started.get_mut(pos)
        {
            *started = true;
        }
    }

    /// Records that `w` holds `t`'s result.
    pub(super) fn add_held(&mut self, t: TaskId, w: WorkerId) {
        let pos = self.workers.map.get_mut(&w).map(|worker| {
            worker.held.push(t);
            worker.held.len() - 1
        });
        debug_assert!(pos.is_some(), "a result held by an unknown worker");
        let r = self.tasks.at_mut(t);
        r.worker = w;
        r.set_pos(pos.unwrap_or(0));
    }

    /// Forgets that `t`'s holder holds it.
    pub(super) fn remove_held(&mut self, t: TaskId) {
        let (w, pos) = {
            let r = self.tasks.at(t);
            (r.worker, r.pos())
        };
        let moved = self.workers.map.get_mut(&w).and_then(|worker| {
            debug_assert_eq!(worker.held.get(pos), Some(&t));
            worker.held.swap_remove(pos);
            worker.held.get(pos).copied()
        });
        if let Some(moved) = moved {
            self.tasks.at_mut(moved).set_pos(pos);
        }
    }
}
