//! Placement and stealing weighed by transfer cost (with
//! [`super::SchedulerConfig::weigh_transfers`]; the cluster's scheduler).
//!
//! # The rule
//!
//! A ready task's *holder* is the worker holding most bytes of its inputs.
//! If the holder has a free slot, the task runs there. If not, and another
//! worker `f` has one, the task moves to `f` only when the expected gain
//! beats the cost of moving its inputs:
//!
//! - cost: `transfer = bytes not on f ÷ bandwidth + latency`, in units of
//!   the task's expected duration (the mean of its function's measured run
//!   times): `ratio = transfer ÷ duration`;
//! - gain: how many durations the task would wait on its holder, `backlog =
//!   (runs waiting there + 1) ÷ holder's threads` (runs waiting: sent beyond
//!   its threads, and parked);
//! - both in log2 levels, as Dask's work stealing buckets its cost ratio:
//!   move iff `ceil(log2 ratio) ≤ floor(log2 backlog)`. Rounding each
//!   against the move makes a move pay at least its cost, within a factor
//!   of two, so noisy estimates do not bounce tasks between machines.
//!
//! Otherwise the task is *parked* on its holder: it waits in that worker's
//! list (scheduler-side, nothing is sent) and runs there when a slot frees,
//! before anything from the global queue (it was popped first, so it comes
//! first in priority order). A function whose duration was never measured
//! is not moved: the gain cannot be weighed (its first run measures it).
//!
//! *Stealing*: after each dispatch, a worker that still has a free slot
//! (nothing left in the queue for it: it is idle, or its paced queue of
//! about a millisecond of work per thread is not full) takes parked tasks
//! from the worker with the longest parked list per thread, newest first
//! (they would wait longest), by the same rule, with the backlog the task
//! has on its holder. Least loaded thieves go first. So a long queue behind one machine drains to idle machines
//! exactly for the tasks whose inputs are cheap to move against their run
//! time: small inputs or long runs.
//!
//! # Taking runs back
//!
//! With [`super::SchedulerConfig::take_back`] (the cluster: a machine's
//! agent queues the runs it is sent, up to its slots), a worker with an idle
//! thread after the above (nothing queued, nothing parked pays) also takes
//! runs *already sent* to a busy worker and not started there (the driver
//! reports starts, [`super::Event::TaskStarted`]): from the victim with
//! most unstarted runs beyond its threads per thread, newest first, by the
//! same rule with the victim's backlog. The scheduler asks for each
//! ([`super::Action::TakeBack`]); the run keeps its slot on the victim until
//! the answer: `TaskStolen` if given back (the run then goes to the thief
//! if it still has a free slot, else to the queue), else the run's result.
//! A thief asks for at most its idle threads' worth at a time, and a run is
//! asked for once. Asks whose answer can no longer be a give-back (the run
//! ended or started, either worker is gone) are dropped lazily, at the
//! next pass that looks for runs to take back.
//!
//! The scheduler reads no clock: the measurements come in as events
//! ([`super::Event::RunTime`], [`super::Event::Network`]); before any, the
//! network is taken as [`DEFAULT_BANDWIDTH`] and [`DEFAULT_LATENCY_MICROS`].
//!
//! Parked entries are deleted lazily, as the queue's: an entry whose task
//! is no longer `Ready` when it comes up is dropped. A task that left
//! `Ready` and came back has a queue entry too; whichever comes first runs
//! it (on its holder then, a valid placement), and the other is dropped.
//! A worker that is lost puts its parked tasks that are still ready back in
//! the global queue.

use std::collections::HashMap;

use super::hash::SeededState;
use super::queue::Queued;
use super::state::Scheduler;
use super::{Action, TaskId, TaskState, WorkerId};

/// Bytes per second assumed before the driver measures the network: Dask's
/// default (`distributed.scheduler.bandwidth`, 100 MB/s), low on purpose so
/// that large inputs are not moved on a guess.
pub const DEFAULT_BANDWIDTH: f64 = 100e6;
/// The fixed cost of a move, before the driver measures one: a data
/// request's round trip on a kept connection, plus sending the run (about
/// a millisecond on a LAN; on loopback much less).
pub const DEFAULT_LATENCY_MICROS: u32 = 1_000;
/// The weight of a new run time in its function's mean (Dask's task-prefix
/// average: `0.5 old + 0.5 new`), so the mean follows a change in a few runs.
const DURATION_WEIGHT: f64 = 0.5;
/// Parked tasks an idle worker considers per victim per pass, newest first:
/// bounds a pass's work when lists are long (the rest are considered as
/// slots free again).
const STEAL_SCAN: usize = 8;

/// What the scheduler knows of run times and the network.
#[derive(Debug)]
pub(super) struct Costs {
    /// Bytes per second between machines.
    bandwidth: f64,
    /// The fixed cost of a move, in seconds.
    latency: f64,
    /// The mean run time of each function (by `Key::func`), in seconds.
    durations: HashMap<u32, f64, SeededState>,
}

impl Default for Costs {
    fn default() -> Self {
        Costs {
            bandwidth: DEFAULT_BANDWIDTH,
            latency: f64::from(DEFAULT_LATENCY_MICROS) / 1e6,
            durations: HashMap::default(),
        }
    }
}

/// Where a ready task goes.
enum Placed {
    Run(WorkerId),
    Park(WorkerId),
}

impl Scheduler {
    /// A run of `t` took `micros`: its function's mean run time follows.
    pub(super) fn run_time(&mut self, t: TaskId, micros: u64) {
        let Some(r) = self.tasks.get(t) else { return };
        let seconds = micros as f64 / 1e6;
        let mean = self.costs.durations.entry(r.key().func).or_insert(seconds);
        *mean = (1.0 - DURATION_WEIGHT) * *mean + DURATION_WEIGHT * seconds;
    }

    /// The driver measured the network: `bandwidth` bytes per second (0:
    /// unchanged) and a move's fixed cost.
    pub(super) fn network(&mut self, bandwidth: u64, latency_micros: u32) {
        if bandwidth > 0 {
            self.costs.bandwidth = bandwidth as f64;
        }
        self.costs.latency = f64::from(latency_micros) / 1e6;
    }

    /// Whether moving `t` to `to` pays, when it would wait `backlog`
    /// durations on its holder (see the module docs).
    fn worth_moving(&self, t: TaskId, to: WorkerId, backlog: f64) -> bool {
        let r = self.tasks.at(t);
        let Some(&duration) = self.costs.durations.get(&r.key().func) else {
            return false; // never measured: the gain cannot be weighed
        };
        let bytes: u64 = r
            .deps
            .iter()
            .map(|&d| self.tasks.at(d))
            .filter(|dep| dep.worker != to)
            .fold(0, |sum, dep| sum.saturating_add(dep.nbytes));
        let transfer = bytes as f64 / self.costs.bandwidth + self.costs.latency;
        if transfer <= 0.0 {
            return true;
        }
        if duration <= 0.0 || backlog <= 0.0 {
            return false;
        }
        (transfer / duration).log2().ceil() <= backlog.log2().floor()
    }

    /// How many durations a task waits on `h` behind what `h` has: runs
    /// beyond its threads and parked ones, plus its own turn, per thread.
    fn backlog(&self, h: WorkerId, ahead_in_parked: usize) -> f64 {
        let Some(worker) = self.workers.map.get(&h) else { return 0.0 };
        let nthreads = worker.nthreads.max(1) as usize;
        let beyond = (worker.processing.len() + worker.abandoned.len()).saturating_sub(nthreads);
        (beyond + ahead_in_parked + 1) as f64 / nthreads as f64
    }

    /// Where ready `t` goes, weighing transfers; a worker must be free.
    fn place_weighing(&mut self, t: TaskId) -> Placed {
        // The holder of most input bytes among workers that run tasks (a
        // worker of no threads, such as the cluster's store, runs nothing).
        let mut best: Option<(u64, WorkerId)> = None;
        let mut bytes = std::mem::take(&mut self.placement);
        bytes.clear();
        for &d in self.tasks.at(t).deps.iter() {
            let dep = self.tasks.at(d);
            if dep.nbytes == 0 || dep.state() != TaskState::Memory {
                continue;
            }
            match bytes.iter_mut().find(|(w, _)| *w == dep.worker) {
                Some((_, b)) => *b = b.saturating_add(dep.nbytes),
                None => bytes.push((dep.worker, dep.nbytes)),
            }
        }
        for &(w, b) in &bytes {
            let runs = self.workers.map.get(&w).is_some_and(|worker| worker.capacity > 0);
            if runs && best.is_none_or(|(bb, bw)| b > bb || (b == bb && w < bw)) {
                best = Some((b, w));
            }
        }
        self.placement = bytes;
        let free = self.choose_worker(t);
        let Some((_, holder)) = best else { return Placed::Run(free) };
        if self.workers.has_free_slot(holder) {
            return Placed::Run(holder);
        }
        let parked = self.workers.map.get(&holder).map_or(0, |worker| worker.parked.len());
        if self.worth_moving(t, free, self.backlog(holder, parked)) { Placed::Run(free) } else { Placed::Park(holder) }
    }

    /// Dispatch with transfers weighed: parked tasks on workers with a
    /// free slot, then the queue (moving or parking each task, see the
    /// module docs), then steals by idle workers.
    pub(super) fn dispatch_weighing(&mut self, out: &mut Vec<Action>) {
        self.run_parked(out);
        while !self.workers.free.is_empty() && self.may_start() {
            let Some(Queued { priority, slot }) = self.queue.pop() else { break };
            let Some(task) = self.tasks.ready_in_slot(slot, priority) else { continue };
            match self.place_weighing(task) {
                Placed::Run(w) => self.send(task, w, out),
                Placed::Park(h) => {
                    self.workers.update(h, |worker| worker.parked.push_back(task));
                    self.workers.with_parked.insert(h);
                }
            }
        }
        self.steal_parked(out);
        if self.config.take_back {
            self.take_back(out);
        }
    }

    fn send(&mut self, t: TaskId, w: WorkerId, out: &mut Vec<Action>) {
        self.tasks.set_state(t, TaskState::Processing);
        self.start_processing(t, w);
        out.push(Action::Run { task: t, worker: w });
    }

    /// Parked tasks run on their worker while it has a free slot, oldest
    /// (highest priority) first.
    fn run_parked(&mut self, out: &mut Vec<Action>) {
        let parked: Vec<WorkerId> = self.workers.with_parked.iter().copied().collect();
        for w in parked {
            while self.workers.has_free_slot(w) && self.may_start() {
                let Some(t) = self.workers.map.get_mut(&w).and_then(|worker| worker.parked.pop_front()) else {
                    break;
                };
                if self.tasks.get(t).is_some_and(|r| r.state() == TaskState::Ready) {
                    self.send(t, w, out);
                }
            }
            if self.workers.map.get(&w).is_none_or(|worker| worker.parked.is_empty()) {
                self.workers.with_parked.remove(&w);
            }
        }
    }

    /// Workers with a free slot take parked tasks whose move pays (module
    /// docs).
    fn steal_parked(&mut self, out: &mut Vec<Action>) {
        if self.workers.with_parked.is_empty() {
            return;
        }
        // Workers with a free slot, least loaded first (the free set's
        // order): the queue is empty, or they would have taken from it.
        let thieves: Vec<WorkerId> = self.workers.free.iter().map(|&(_, w)| w).collect();
        for thief in thieves {
            while self.workers.has_free_slot(thief) && self.may_start() {
                if !self.steal_one(thief, out) {
                    break;
                }
            }
        }
    }

    /// One parked task moves to `thief` if one pays; whether one did.
    fn steal_one(&mut self, thief: WorkerId, out: &mut Vec<Action>) -> bool {
        // Victims, longest parked list per thread first.
        let mut victims: Vec<(f64, WorkerId)> = self
            .workers
            .with_parked
            .iter()
            .filter(|&&v| v != thief)
            .filter_map(|&v| {
                let worker = self.workers.map.get(&v)?;
                Some((worker.parked.len() as f64 / f64::from(worker.nthreads.max(1)), v))
            })
            .collect();
        victims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, victim) in victims {
            let Some(worker) = self.workers.map.get(&victim) else { continue };
            let candidates: Vec<(usize, TaskId)> =
                worker.parked.iter().copied().enumerate().rev().take(STEAL_SCAN).collect();
            for (at, t) in candidates {
                if self.tasks.get(t).is_none_or(|r| r.state() != TaskState::Ready) {
                    continue; // stale: dropped when it comes up
                }
                if self.worth_moving(t, thief, self.backlog(victim, at)) {
                    let left = self.workers.update(victim, |worker| {
                        worker.parked.remove(at);
                        worker.parked.len()
                    });
                    if left == Some(0) {
                        self.workers.with_parked.remove(&victim);
                    }
                    self.send(t, thief, out);
                    return true;
                }
            }
        }
        false
    }

    /// Workers with an idle thread ask busy workers for runs they have not
    /// started (see "Taking runs back" in the module docs).
    fn take_back(&mut self, out: &mut Vec<Action>) {
        if self.workers.free.is_empty() || !self.may_start() {
            return;
        }
        self.prune_taking();
        let thieves: Vec<WorkerId> = self.workers.free.iter().map(|&(_, w)| w).collect();
        for thief in thieves {
            let Some(worker) = self.workers.map.get(&thief) else { continue };
            let asked = self.taking.values().filter(|&&(_, to)| to == thief).count();
            let busy = worker.processing.len() + worker.abandoned.len() + asked;
            let idle = (worker.nthreads as usize).saturating_sub(busy);
            for _ in 0..idle {
                if !self.take_back_one(thief, out) {
                    break;
                }
            }
        }
    }

    /// Drops the asks whose answer can no longer be a give-back.
    fn prune_taking(&mut self) {
        if self.taking.is_empty() {
            return;
        }
        let mut taking = std::mem::take(&mut self.taking);
        taking.retain(|&t, &mut (from, to)| self.unstarted_on(t, from) && self.workers.contains(to));
        self.taking = taking;
    }

    /// Whether `t` is processing on `w` and not known to have started.
    fn unstarted_on(&self, t: TaskId, w: WorkerId) -> bool {
        self.is_processing_on(t, w)
            && self.workers.map.get(&w).is_some_and(|worker| {
                let pos = self.tasks.at(t).pos();
                worker.processing.get(pos) == Some(&t) && worker.started.get(pos) == Some(&false)
            })
    }

    /// Asks for one unstarted run for `thief` if one pays; whether it did.
    fn take_back_one(&mut self, thief: WorkerId, out: &mut Vec<Action>) -> bool {
        // Victims: unstarted runs beyond their threads not asked for yet,
        // most per thread first.
        let mut victims: Vec<(f64, WorkerId, usize)> = self
            .workers
            .map
            .iter()
            .filter(|&(&v, _)| v != thief)
            .filter_map(|(&v, worker)| {
                let asked = self.taking.values().filter(|&&(from, _)| from == v).count();
                let nthreads = worker.nthreads.max(1) as usize;
                let spare = worker.processing.len().saturating_sub(nthreads).saturating_sub(asked);
                (spare > 0).then(|| (spare as f64 / nthreads as f64, v, spare))
            })
            .collect();
        victims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, victim, _) in victims {
            let Some(worker) = self.workers.map.get(&victim) else { continue };
            let candidates: Vec<TaskId> = worker
                .processing
                .iter()
                .zip(&worker.started)
                .rev()
                .filter(|&(t, &started)| !started && !self.taking.contains_key(t))
                .map(|(&t, _)| t)
                .take(STEAL_SCAN)
                .collect();
            let backlog = self.backlog(victim, 0);
            for t in candidates {
                if self.worth_moving(t, thief, backlog) {
                    self.taking.insert(t, (victim, thief));
                    out.push(Action::TakeBack { task: t, from: victim, to: thief });
                    return true;
                }
            }
        }
        false
    }

    /// A lost worker's parked tasks that are still ready go back to the
    /// global queue.
    pub(super) fn unpark_all(&mut self, parked: impl IntoIterator<Item = TaskId>) {
        for t in parked {
            if let Some(r) = self.tasks.get(t)
                && r.state() == TaskState::Ready
            {
                let priority = r.priority;
                self.queue.push(Queued { priority, slot: t.index });
            }
        }
    }

    /// Ready tasks parked on `w`, waiting for a slot there (with
    /// `weigh_transfers`; stale entries included): for tests and monitoring.
    pub fn parked_on(&self, w: WorkerId) -> usize {
        self.workers.map.get(&w).map_or(0, |worker| worker.parked.len())
    }
}
