//! Tests of the scheduler: event by event (`events`, `faults`), and
//! property tests over random graphs driven by the simulator (`props`).

mod blame;
mod events;
mod faults;
mod perf;
mod props;
mod steal;

use super::{Action, Dep, Event, NewTask, Scheduler, SchedulerConfig, Submitted, TaskId, TaskState, WorkerId};
use crate::failure::TaskFailure;
use crate::key::Key;

const W0: WorkerId = WorkerId(0);
const W1: WorkerId = WorkerId(1);
const W2: WorkerId = WorkerId(2);

fn key(i: u64) -> Key {
    Key { func: 0, token: [i, 0] }
}

/// A node with inputs from the same submission.
fn node(i: u64, deps: &[usize], wanted: bool) -> NewTask {
    NewTask { key: key(i), deps: deps.iter().map(|&j| Dep::Node(j)).collect(), wanted, priority: 0, retries: 0 }
}

/// A node with inputs that are existing tasks.
fn node_on(i: u64, deps: &[TaskId], wanted: bool) -> NewTask {
    NewTask { deps: deps.iter().map(|&t| Dep::Task(t)).collect(), ..node(i, &[], wanted) }
}

fn run(task: TaskId, worker: WorkerId) -> Action {
    Action::Run { task, worker }
}

fn release(task: TaskId, worker: WorkerId) -> Action {
    Action::Release { task, worker }
}

fn done(task: TaskId) -> Action {
    Action::ReportDone { task }
}

fn forget(task: TaskId) -> Action {
    Action::Forget { task }
}

/// A scheduler and the actions of the last call, for tests that go event
/// by event.
struct H {
    s: Scheduler,
}

impl H {
    fn new(extra_slots_per_thread: u32, max_worker_deaths: u32) -> H {
        H {
            s: Scheduler::new(SchedulerConfig {
                extra_slots_per_thread,
                max_worker_deaths,
                recall: false,
                ..SchedulerConfig::default()
            }),
        }
    }

    /// One worker with one slot: the order of runs is fully visible.
    fn one_slot() -> H {
        let mut h = H::new(0, 3);
        assert_eq!(h.join(W0, 1), vec![]);
        h
    }

    fn submit(&mut self, graph: Vec<NewTask>) -> (Vec<TaskId>, Vec<Action>) {
        let (submitted, out) = self.submit_full(graph);
        (submitted.iter().map(|s| s.id).collect(), out)
    }

    fn submit_full(&mut self, graph: Vec<NewTask>) -> (Vec<Submitted>, Vec<Action>) {
        let mut out = Vec::new();
        let submitted = self.s.submit(graph, &mut out).expect("a valid graph");
        (submitted, out)
    }

    fn ev(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.s.handle(event, &mut out);
        out
    }

    fn join(&mut self, worker: WorkerId, nthreads: u32) -> Vec<Action> {
        self.ev(Event::WorkerJoined { worker, nthreads })
    }

    fn lose(&mut self, worker: WorkerId) -> Vec<Action> {
        self.ev(Event::WorkerLost { worker })
    }

    /// The driver learned that `task`'s run on `worker` started.
    fn started(&mut self, task: TaskId, worker: WorkerId) {
        assert_eq!(self.ev(Event::TaskStarted { task, worker }), vec![]);
    }

    fn finish(&mut self, task: TaskId, worker: WorkerId, nbytes: u64) -> Vec<Action> {
        self.ev(Event::TaskFinished { task, worker, nbytes })
    }

    fn fail(&mut self, task: TaskId, worker: WorkerId, failure: TaskFailure) -> Vec<Action> {
        self.ev(Event::TaskFailed { task, worker, failure })
    }

    fn drop_ref(&mut self, task: TaskId) -> Vec<Action> {
        self.ev(Event::ClientReleased { task })
    }

    fn state(&self, task: TaskId) -> Option<TaskState> {
        self.s.state(task)
    }
}

fn error(i: u64) -> TaskFailure {
    TaskFailure::error(key(i), "boom")
}

/// The failure a `ReportFailed` in `out` carries for `task`.
fn reported_failure(out: &[Action], task: TaskId) -> Option<TaskFailure> {
    out.iter().find_map(|a| match a {
        Action::ReportFailed { task: t, failure } if *t == task => Some((**failure).clone()),
        _ => None,
    })
}

/// The tasks `out` runs, in order.
fn runs(out: &[Action]) -> Vec<TaskId> {
    out.iter()
        .filter_map(|a| match a {
            Action::Run { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}
