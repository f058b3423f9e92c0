//! The scheduler through its public API only, as a driver uses it: a small
//! diamond on two workers, one of which dies halfway.

use shoal_core::key::Key;
use shoal_core::scheduler::{Action, Dep, Event, GraphError, NewTask, Scheduler, SchedulerConfig, TaskState, WorkerId};

fn node(i: u64, deps: Vec<Dep>, wanted: bool) -> NewTask {
    NewTask { key: Key { func: 0, token: [i, 7] }, deps, wanted, priority: 0, retries: 0 }
}

#[test]
fn a_diamond_survives_a_worker_death() {
    let (w0, w1) = (WorkerId(10), WorkerId(11));
    let mut s = Scheduler::new(SchedulerConfig {
        extra_slots_per_thread: 0,
        max_worker_deaths: 3,
        recall: false,
        ..SchedulerConfig::default()
    });
    let mut out = Vec::new();
    s.handle(Event::WorkerJoined { worker: w0, nthreads: 1 }, &mut out);
    s.handle(Event::WorkerJoined { worker: w1, nthreads: 1 }, &mut out);
    let ids: Vec<_> = s
        .submit(
            vec![
                node(0, vec![], false),
                node(1, vec![Dep::Node(0)], false),
                node(2, vec![Dep::Node(0)], false),
                node(3, vec![Dep::Node(1), Dep::Node(2)], true),
            ],
            &mut out,
        )
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();

    // A driver loop: run whatever is sent, but kill w0 the first time it
    // holds a result some task still needs.
    let mut killed = false;
    let mut done = Vec::new();
    for _ in 0..100 {
        let actions: Vec<Action> = std::mem::take(&mut out);
        if actions.is_empty() {
            break;
        }
        for action in actions {
            match action {
                // A run the scheduler took back since it sent it (the loss
                // below does that) is skipped, as a worker would drop it.
                Action::Run { task, worker } if s.processing_on(task) != Some(worker) => {}
                Action::Run { task, worker } => {
                    for &d in s.deps(task) {
                        assert_eq!(s.state(d), Some(TaskState::Memory));
                    }
                    if !killed && worker == w0 && s.count(TaskState::Memory) > 0 {
                        killed = true;
                        s.handle(Event::WorkerLost { worker: w0 }, &mut out);
                        s.handle(Event::WorkerJoined { worker: WorkerId(12), nthreads: 1 }, &mut out);
                    } else {
                        s.handle(Event::TaskFinished { task, worker, nbytes: 8 }, &mut out);
                    }
                }
                Action::ReportDone { task } => done.push(task),
                Action::ReportFailed { task, failure } => panic!("{task:?} failed: {failure}"),
                Action::Release { .. } | Action::Forget { .. } | Action::Recall { .. } | Action::TakeBack { .. } => {}
            }
        }
    }
    assert!(killed);
    assert_eq!(done, vec![ids[3]]);
    s.handle(Event::ClientReleased { task: ids[3] }, &mut out);
    assert_eq!(s.live_tasks(), 0);

    let err = s.submit(vec![node(9, vec![Dep::Node(0)], true)], &mut out).unwrap_err();
    assert_eq!(err, GraphError::NotTopological { node: 0, dep: 0 });
}
