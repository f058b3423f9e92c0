//! A deterministic simulator that drives the scheduler the way a driver
//! does, with injected faults, and checks the scheduler's promises after
//! every step (tests only).
//!
//! It plays the workers (which runs are in flight, which results each
//! holds) and the client (how many futures it holds on each task). Runs
//! complete in an order drawn from a seeded generator, so a failing case
//! replays exactly. Every action is checked as it is applied: a `Run` needs
//! a live worker and every input held by a live worker, a `Release` must
//! name a copy that exists, a `Forget` must leave no copy behind. After
//! every step, [`Sim::check`] compares the scheduler's view with the
//! simulated one and checks that a result is held exactly while something
//! needs it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::{Action, Event, NewTask, Scheduler, SchedulerConfig, Submitted, TaskId, TaskState, WorkerId};
use crate::failure::TaskFailure;
use crate::key::Key;

/// SplitMix64: tiny, seedable, good enough to shuffle events.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How a run of a task ends, decided by its key.
#[derive(Default)]
pub(crate) struct Faults {
    /// Every run of these keys fails with an `Error` (retryable: a task with
    /// retries left fails once per retry, then for good).
    pub failing: HashSet<Key>,
    /// The first `n` runs of these keys panic (retryable), later ones succeed.
    pub flaky: HashMap<Key, u32>,
}

pub(crate) struct Sim {
    pub sched: Scheduler,
    pub rng: Rng,
    pub faults: Faults,
    pub alive: BTreeSet<WorkerId>,
    /// Chance (in %) that [`Sim::run`] lets a worker give back a run before
    /// each step (see [`Sim::steal_one`]).
    pub steal_percent: u64,
    nthreads: u32,
    next_worker: u32,
    /// Runs sent and not completed, with the key the task had then.
    pub running: Vec<(TaskId, WorkerId, Key)>,
    /// Whether the scheduler runs with `recall` (then every run in flight
    /// keeps its slot until answered, which [`Sim::check`] verifies).
    recall: bool,
    /// Whether it runs with `take_back`.
    take_back: bool,
    /// Runs asked back (`TakeBack`) and not answered: (task, from, for).
    pub taking: Vec<(TaskId, WorkerId, WorkerId)>,
    /// Results the workers hold.
    pub held: BTreeSet<(TaskId, WorkerId)>,
    /// Every id `submit` returned, and its inputs.
    pub deps: HashMap<TaskId, Vec<TaskId>>,
    pub dependents: HashMap<TaskId, Vec<TaskId>>,
    /// Futures the client holds.
    pub refs: HashMap<TaskId, u32>,
    pub forgotten: HashSet<TaskId>,
    pub runs: HashMap<TaskId, u32>,
    pub done: HashMap<TaskId, u32>,
    pub failed: HashMap<TaskId, Vec<Arc<TaskFailure>>>,
}

impl Sim {
    pub fn new(config: SchedulerConfig, workers: u32, nthreads: u32, seed: u64) -> Sim {
        let mut sim = Sim {
            sched: Scheduler::new(config),
            recall: config.recall,
            take_back: config.take_back,
            taking: Vec::new(),
            rng: Rng::new(seed),
            faults: Faults::default(),
            alive: BTreeSet::new(),
            steal_percent: 0,
            nthreads,
            next_worker: 0,
            running: Vec::new(),
            held: BTreeSet::new(),
            deps: HashMap::new(),
            dependents: HashMap::new(),
            refs: HashMap::new(),
            forgotten: HashSet::new(),
            runs: HashMap::new(),
            done: HashMap::new(),
            failed: HashMap::new(),
        };
        for _ in 0..workers {
            sim.join();
        }
        sim
    }

    /// Submits a graph as the client does: one future per wanted node.
    pub fn submit(&mut self, graph: Vec<NewTask>) -> Vec<Submitted> {
        let wanted: Vec<bool> = graph.iter().map(|n| n.wanted).collect();
        let mut out = Vec::new();
        let submitted = self.sched.submit(graph, &mut out).expect("the simulator submits valid graphs");
        for (s, wanted) in submitted.iter().zip(wanted) {
            if wanted {
                *self.refs.entry(s.id).or_default() += 1;
            }
            if s.new {
                let deps = self.sched.deps(s.id).to_vec();
                for &d in &deps {
                    self.dependents.entry(d).or_default().push(s.id);
                }
                self.deps.insert(s.id, deps);
            }
        }
        self.apply(out);
        submitted
    }

    pub fn event(&mut self, event: Event) {
        let mut out = Vec::new();
        self.sched.handle(event, &mut out);
        self.apply(out);
    }

    pub fn join(&mut self) -> WorkerId {
        let w = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.alive.insert(w);
        self.event(Event::WorkerJoined { worker: w, nthreads: self.nthreads });
        w
    }

    /// Kills a random worker, and starts a replacement so work goes on.
    /// Before it dies, the driver learns that some of its runs started (at
    /// random): only those count against their tasks.
    pub fn kill_one(&mut self) {
        let w = *self.alive.iter().nth(self.rng.below(self.alive.len())).expect("a worker");
        let on_w: Vec<TaskId> = self.running.iter().filter(|r| r.1 == w).map(|r| r.0).collect();
        for t in on_w {
            if self.rng.chance(50) {
                self.event(Event::TaskStarted { task: t, worker: w });
            }
        }
        self.alive.remove(&w);
        self.held.retain(|&(_, h)| h != w);
        self.running.retain(|&(_, h, _)| h != w);
        self.event(Event::WorkerLost { worker: w });
        self.join();
    }

    /// A worker gives back a run in flight, chosen at random (the simulated
    /// workers start a run only when they complete it, so any run in flight
    /// is one not started), naming a random live thief or none, as a driver
    /// that steals does. That run never executes. False if none is in flight.
    pub fn steal_one(&mut self) -> bool {
        if self.running.is_empty() {
            return false;
        }
        let (t, from, _) = self.running.swap_remove(self.rng.below(self.running.len()));
        *self.runs.get_mut(&t).expect("a run in flight was counted") -= 1;
        let to = match self.rng.below(4) {
            0 => None,
            _ => self.alive.iter().nth(self.rng.below(self.alive.len())).copied(),
        };
        self.event(Event::TaskStolen { task: t, from, to });
        true
    }

    /// A worker answers one ask (`TakeBack`), chosen at random: it gives
    /// the run back if it is still in flight there (the simulated workers
    /// start a run only when they complete it), and that run never
    /// executes; an ask whose run ended or died with its worker is dropped
    /// (its answer was the result, or the loss). False if none is pending.
    pub fn answer_take_back(&mut self) -> bool {
        if self.taking.is_empty() {
            return false;
        }
        let (t, from, _) = self.taking.swap_remove(self.rng.below(self.taking.len()));
        if let Some(i) = self.running.iter().position(|&(r, w, _)| r == t && w == from) {
            self.running.swap_remove(i);
            *self.runs.get_mut(&t).expect("a run in flight was counted") -= 1;
            self.event(Event::TaskStolen { task: t, from, to: None });
        }
        true
    }

    /// The client drops one future on `t`.
    pub fn release(&mut self, t: TaskId) {
        let refs = self.refs.get_mut(&t).expect("a future to release");
        *refs -= 1;
        if *refs == 0 {
            self.refs.remove(&t);
        }
        self.event(Event::ClientReleased { task: t });
    }

    /// Drops every future the client holds.
    pub fn release_all(&mut self) {
        let mut held: Vec<(TaskId, u32)> = self.refs.iter().map(|(&t, &n)| (t, n)).collect();
        held.sort();
        for (t, n) in held {
            for _ in 0..n {
                self.release(t);
            }
        }
    }

    /// Completes one run in flight, chosen at random. False if none is.
    pub fn step(&mut self) -> bool {
        if self.running.is_empty() {
            return false;
        }
        let (t, w, key) = self.running.swap_remove(self.rng.below(self.running.len()));
        let failure = if self.faults.failing.contains(&key) {
            Some(TaskFailure::error(key, "injected error"))
        } else {
            match self.faults.flaky.get_mut(&key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Some(TaskFailure::Panic { key, item: None, message: "injected panic".into(), arguments: None })
                }
                _ => None,
            }
        };
        match failure {
            Some(failure) => self.event(Event::TaskFailed { task: t, worker: w, failure }),
            None => {
                // The driver drops a result for an id it was told to forget.
                if !self.forgotten.contains(&t) {
                    self.held.insert((t, w));
                }
                let nbytes = self.rng.next() % 1000;
                // A run time for transfer weighing (ignored without it).
                let micros = self.rng.next() % 20_000;
                self.event(Event::RunTime { task: t, micros });
                self.event(Event::TaskFinished { task: t, worker: w, nbytes });
            }
        }
        true
    }

    /// Steps until nothing is in flight, with a fault now and then; checks
    /// everything after every step.
    pub fn run(&mut self, kill_percent: u64, max_kills: u32) {
        let mut kills = 0;
        loop {
            if kills < max_kills && !self.running.is_empty() && self.rng.chance(kill_percent) {
                kills += 1;
                self.kill_one();
                self.check();
            }
            if self.steal_percent > 0 && self.rng.chance(self.steal_percent) && self.steal_one() {
                self.check();
            }
            if self.take_back && self.rng.chance(50) && self.answer_take_back() {
                self.check();
            }
            if !self.step() {
                break;
            }
            self.check();
        }
        self.check_quiet();
    }

    fn apply(&mut self, out: Vec<Action>) {
        for action in out {
            match action {
                Action::Run { task, worker } => {
                    assert!(self.alive.contains(&worker), "{task:?} sent to dead worker {worker:?}");
                    assert_eq!(self.sched.processing_on(task), Some(worker));
                    for &d in self.deps.get(&task).expect("a submitted task") {
                        assert!(
                            self.held.iter().any(|&(t, h)| t == d && self.alive.contains(&h)),
                            "{task:?} runs but its input {d:?} is held by no live worker"
                        );
                    }
                    let key = self.sched.key(task).expect("a live task");
                    *self.runs.entry(task).or_default() += 1;
                    self.running.push((task, worker, key));
                }
                Action::Recall { task, worker } => {
                    assert!(self.recall, "Recall of {task:?} without SchedulerConfig::recall");
                    assert!(self.alive.contains(&worker), "Recall of {task:?} from dead {worker:?}");
                    assert!(
                        self.running.iter().any(|&(t, w, _)| t == task && w == worker),
                        "Recall of {task:?} on {worker:?}, which is not running it"
                    );
                    assert_ne!(self.sched.processing_on(task), Some(worker), "Recall of a run still waited for");
                }
                Action::TakeBack { task, from, to } => {
                    assert!(self.take_back, "TakeBack of {task:?} without SchedulerConfig::take_back");
                    assert!(self.alive.contains(&from), "TakeBack of {task:?} from dead {from:?}");
                    assert!(self.alive.contains(&to), "TakeBack of {task:?} for dead {to:?}");
                    assert_ne!(from, to, "TakeBack of {task:?} for the worker that has it");
                    assert!(
                        self.running.iter().any(|&(t, w, _)| t == task && w == from),
                        "TakeBack of {task:?} on {from:?}, which is not running it"
                    );
                    assert_eq!(self.sched.processing_on(task), Some(from), "TakeBack of a run not waited for");
                    // An ask of an earlier run of the task there was
                    // answered by that run's end.
                    self.taking.retain(|&(t, f, _)| (t, f) != (task, from));
                    self.taking.push((task, from, to));
                }
                Action::Release { task, worker } => {
                    assert!(self.held.remove(&(task, worker)), "Release of {task:?} on {worker:?}, not held there");
                }
                Action::ReportDone { task } => {
                    assert_eq!(self.sched.state(task), Some(TaskState::Memory));
                    assert!(self.refs.contains_key(&task), "ReportDone for {task:?}, which no future holds");
                    *self.done.entry(task).or_default() += 1;
                }
                Action::ReportFailed { task, failure } => {
                    assert!(self.refs.contains_key(&task), "ReportFailed for {task:?}, which no future holds");
                    self.failed.entry(task).or_default().push(failure);
                }
                Action::Forget { task } => {
                    assert!(self.sched.state(task).is_none(), "Forget of live {task:?}");
                    assert!(!self.held.iter().any(|&(t, _)| t == task), "{task:?} forgotten while held");
                    assert!(self.forgotten.insert(task), "{task:?} forgotten twice");
                    assert!(!self.refs.contains_key(&task), "{task:?} forgotten while the client holds it");
                }
            }
        }
    }

    /// Someone needs `t`'s result, by the simulator's own account: a future,
    /// or a dependent on its way.
    fn needed(&self, t: TaskId) -> bool {
        self.refs.contains_key(&t)
            || self.dependents.get(&t).is_some_and(|ds| {
                ds.iter().any(|&d| {
                    matches!(self.sched.state(d), Some(TaskState::Waiting | TaskState::Ready | TaskState::Processing))
                })
            })
    }

    /// The scheduler's view agrees with the simulated one, and results are
    /// held exactly while needed.
    pub fn check(&self) {
        let mut live = 0;
        for (&t, deps) in &self.deps {
            let Some(state) = self.sched.state(t) else {
                assert!(self.forgotten.contains(&t), "{t:?} vanished without Forget");
                continue;
            };
            live += 1;
            let inputs_in_memory = deps.iter().all(|&d| self.sched.state(d) == Some(TaskState::Memory));
            match state {
                TaskState::Memory => {
                    let holders = self.sched.holders(t);
                    assert_eq!(holders.len(), 1);
                    assert!(self.held.contains(&(t, holders[0])), "{t:?} in memory but not held");
                    assert!(self.needed(t), "{t:?} still held though nothing needs it");
                }
                TaskState::Processing => {
                    let w = self.sched.processing_on(t).expect("processing somewhere");
                    assert!(self.alive.contains(&w), "{t:?} processing on dead {w:?}");
                    assert!(inputs_in_memory, "{t:?} processing without its inputs");
                    assert!(self.needed(t));
                }
                TaskState::Ready => {
                    assert!(inputs_in_memory, "{t:?} ready without its inputs");
                    assert!(self.needed(t));
                }
                TaskState::Waiting => {
                    assert!(!inputs_in_memory, "{t:?} waiting though its inputs are in memory");
                    assert!(self.needed(t));
                }
                TaskState::Released => {
                    assert!(!self.needed(t), "{t:?} released though needed");
                }
                TaskState::Erred => assert!(self.sched.failure(t).is_some()),
            }
        }
        assert_eq!(live, self.sched.live_tasks());
        let by_state: usize = [
            TaskState::Released,
            TaskState::Waiting,
            TaskState::Ready,
            TaskState::Processing,
            TaskState::Memory,
            TaskState::Erred,
        ]
        .into_iter()
        .map(|s| self.sched.count(s))
        .sum();
        assert_eq!(by_state, live);
        for &(t, w) in &self.held {
            assert_eq!(self.sched.holders(t), &[w], "{t:?} held on {w:?} unknown to the scheduler");
        }
        // Slots: with `recall`, every run in flight keeps its slot until it
        // is answered; without, abandoned runs free theirs at once.
        for &w in &self.alive {
            let in_flight = self.running.iter().filter(|r| r.1 == w).count();
            let load = self.sched.load(w).expect("a live worker is known");
            if self.recall {
                assert_eq!(load, in_flight, "{w:?}: slots taken ≠ runs not answered");
            } else {
                assert!(load <= in_flight, "{w:?}: more slots taken than runs in flight");
            }
        }
    }

    /// Nothing is in flight: so nothing may be left on its way either.
    fn check_quiet(&self) {
        for s in [TaskState::Waiting, TaskState::Ready, TaskState::Processing] {
            assert_eq!(self.sched.count(s), 0, "tasks stuck in {s:?} with nothing in flight");
        }
    }

    /// After the client released everything: nothing is left anywhere.
    pub fn check_empty(&self) {
        assert_eq!(self.sched.live_tasks(), 0, "{:?}", self.sched);
        assert!(self.held.is_empty(), "results never released: {:?}", self.held);
        assert_eq!(self.sched.keys.len(), 0, "keys left behind");
        assert!(self.refs.is_empty());
    }
}
