//! Who a lost worker is counted against (only runs known to have started;
//! the others become suspects), and runs taken back (`recall`): an
//! abandoned run keeps its slot until its worker answers for it.

use super::*;

fn recall(task: TaskId, worker: WorkerId) -> Action {
    Action::Recall { task, worker }
}

/// The `ReportFailed` actions of `out` that are `KilledWorker`, as keys.
fn killed_keys(out: &[Action]) -> Vec<Key> {
    out.iter()
        .filter_map(|a| match a {
            Action::ReportFailed { failure, .. } => match &**failure {
                TaskFailure::KilledWorker { key, .. } => Some(*key),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn with_recall(extra_slots_per_thread: u32, max_worker_deaths: u32) -> H {
    H {
        s: Scheduler::new(SchedulerConfig {
            extra_slots_per_thread,
            max_worker_deaths,
            recall: true,
            ..SchedulerConfig::default()
        }),
    }
}

#[test]
fn a_lost_worker_counts_only_against_runs_that_started() {
    // One death fails a task: anything counted shows at once.
    let mut h = H::new(3, 1);
    h.join(W0, 1);
    let (ids, out) = h.submit((0..4).map(|i| node(i, &[], true)).collect());
    assert_eq!(runs(&out), ids, "one thread, three queued behind it");
    h.started(ids[0], W0);
    let out = h.lose(W0);
    assert_eq!(killed_keys(&out), vec![key(0)], "only the run that started is blamed");
    for &t in &ids[1..] {
        assert_eq!(h.state(t), Some(TaskState::Ready), "queued only: retried");
        assert!(h.s.is_suspect(t), "its start was not known: the next run must say so first");
    }
    assert!(!h.s.is_suspect(ids[0]));
}

#[test]
fn a_suspect_that_starts_and_kills_again_is_counted_and_fails_in_the_end() {
    let mut h = H::new(0, 2);
    h.join(W0, 1);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let x = ids[0];
    // First loss: its start was not known yet (it aborted at once).
    h.join(W1, 1);
    assert_eq!(h.lose(W0), vec![run(x, W1)], "not counted");
    assert!(h.s.is_suspect(x));
    // Its runs now report their start first: two counted losses fail it.
    h.join(W2, 1);
    h.started(x, W1);
    assert_eq!(h.lose(W1), vec![run(x, W2)], "one counted death");
    h.started(x, W2);
    let out = h.lose(W2);
    assert_eq!(killed_keys(&out), vec![key(0)]);
    assert_eq!(
        reported_failure(&out, x),
        Some(TaskFailure::KilledWorker { key: key(0), item: None, attempts: 2 }),
        "the uncounted loss is not in the count"
    );
}

#[test]
fn an_innocent_task_queued_behind_a_culprit_is_never_counted_and_a_good_run_clears_it() {
    let mut h = H::new(1, 2);
    h.join(W0, 1);
    let (ids, out) = h.submit(vec![node(0, &[], true), node(1, &[], true)]);
    let [culprit, innocent] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(culprit, W0), run(innocent, W0)]);
    // Twice the culprit kills the worker both are on; the innocent one,
    // queued behind it, never started.
    h.started(culprit, W0);
    h.join(W1, 1);
    assert_eq!(h.lose(W0), vec![run(culprit, W1), run(innocent, W1)]);
    h.started(culprit, W1);
    let out = h.lose(W1);
    assert_eq!(killed_keys(&out), vec![key(0)], "the culprit, after two counted deaths");
    assert_eq!(h.state(innocent), Some(TaskState::Ready), "never counted, still needed");
    assert!(h.s.is_suspect(innocent));
    assert_eq!(h.join(W2, 1), vec![run(innocent, W2)]);
    assert_eq!(h.finish(innocent, W2, 1), vec![done(innocent)]);
    assert!(!h.s.is_suspect(innocent), "a good run clears it");
}

#[test]
fn a_start_reported_for_a_run_no_longer_waited_for_is_ignored() {
    let mut h = H::new(0, 1);
    h.join(W0, 1);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let x = ids[0];
    h.join(W1, 1);
    // A stale report from another worker, or about a finished run.
    h.started(x, W1);
    assert_eq!(h.lose(W1), vec![]);
    assert_eq!(h.finish(x, W0, 1), vec![done(x)]);
    h.started(x, W0);
    assert_eq!(h.state(x), Some(TaskState::Memory));
}

#[test]
fn with_recall_a_cancelled_run_keeps_its_slot_until_taken_back() {
    let mut h = with_recall(0, 3);
    h.join(W0, 1);
    let (ids, out) = h.submit((0..3).map(|i| node(i, &[], true)).collect());
    let [a, b, c] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    let out = h.ev(Event::Cancel { task: a });
    assert_eq!(out[..1], [recall(a, W0)], "{out:?}");
    assert_eq!(runs(&out), vec![], "nothing sent in its place yet");
    assert_eq!(h.s.load(W0), Some(1));
    // The worker gives it back: the slot is free, `b` goes.
    assert_eq!(h.ev(Event::TaskStolen { task: a, from: W0, to: None }), vec![run(b, W0)]);
    assert_eq!(h.state(a), Some(TaskState::Erred));
    // Cancelling `b` and `c` (queued) in order sends nothing in between.
    let out = h.ev(Event::Cancel { task: b });
    assert_eq!(out[..1], [recall(b, W0)]);
    let out = h.ev(Event::Cancel { task: c });
    assert_eq!(runs(&out), vec![]);
    // `b` had started: it answers with its result, which is released, and
    // the slot is free.
    assert_eq!(h.finish(b, W0, 1), vec![release(b, W0)]);
    assert_eq!(h.s.load(W0), Some(0));
    let (ids, out) = h.submit(vec![node(9, &[], true)]);
    assert_eq!(out, vec![run(ids[0], W0)]);
}

#[test]
fn with_recall_a_released_run_keeps_its_slot_even_once_forgotten() {
    let mut h = with_recall(0, 3);
    h.join(W0, 1);
    let (ids, out) = h.submit(vec![node(0, &[], true), node(1, &[], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    // The client drops `a`: forgotten, its run recalled, its slot kept.
    assert_eq!(h.drop_ref(a), vec![recall(a, W0), forget(a)]);
    assert_eq!(h.state(b), Some(TaskState::Ready));
    // The worker's answer for the forgotten id frees the slot.
    assert_eq!(h.fail(a, W0, error(0)), vec![run(b, W0)]);
    assert_eq!(h.finish(b, W0, 1), vec![done(b)]);
    assert_eq!(h.s.load(W0), Some(0));
}

#[test]
fn with_recall_a_lost_worker_takes_its_abandoned_runs_along() {
    let mut h = with_recall(1, 3);
    h.join(W0, 1);
    let (ids, _) = h.submit(vec![node(0, &[], true), node(1, &[], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    assert_eq!(h.ev(Event::Cancel { task: a })[..1], [recall(a, W0)]);
    h.join(W1, 1);
    assert_eq!(h.lose(W0), vec![run(b, W1)]);
    // A late answer from the dead worker changes nothing.
    assert_eq!(h.ev(Event::TaskStolen { task: a, from: W0, to: None }), vec![]);
    assert_eq!(h.s.load(W1), Some(1));
}

#[test]
fn without_recall_an_abandoned_run_frees_its_slot_at_once() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], true), node(1, &[], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    let out = h.ev(Event::Cancel { task: a });
    assert_eq!(runs(&out), vec![b], "the threads mode cannot take a run back");
    assert!(!out.iter().any(|a| matches!(a, Action::Recall { .. })));
}

#[test]
fn a_moved_run_is_the_thief_s_without_a_second_run() {
    let moved = |task, from, to| Event::TaskMoved { task, from, to };
    let mut h = with_recall(3, 1);
    h.join(W0, 1);
    let (ids, out) = h.submit((0..4).map(|i| node(i, &[], true)).collect());
    assert_eq!(runs(&out), ids, "one worker with 4 slots takes all 4");
    h.join(W1, 1);
    // W0 gave ids[3] to W1 directly: no `Run`, it is W1's now.
    assert_eq!(h.ev(moved(ids[3], W0, W1)), vec![]);
    assert_eq!(h.s.processing_on(ids[3]), Some(W1));
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(3), Some(1)));
    // The second notice of the same move (or a move to itself) changes nothing.
    assert_eq!(h.ev(moved(ids[3], W0, W1)), vec![]);
    assert_eq!(h.ev(moved(ids[3], W1, W1)), vec![]);
    assert_eq!(h.s.processing_on(ids[3]), Some(W1));
    // The victim's loss does not touch it; the thief's does, and counts no
    // death (it never started): W1's run goes back and runs on W0.
    assert_eq!(h.finish(ids[0], W0, 1), vec![done(ids[0])]);
    let out = h.lose(W1);
    assert_eq!(runs(&out), vec![ids[3]]);
    assert_eq!(h.s.processing_on(ids[3]), Some(W0));
    assert_eq!(h.finish(ids[3], W0, 1), vec![done(ids[3])]);

    // A move to a worker lost before the move was heard of: queued again.
    h.join(W2, 1);
    let out = h.ev(moved(ids[2], W0, W1));
    assert_eq!(runs(&out), vec![ids[2]], "{out:?}");
    assert_eq!(h.s.processing_on(ids[2]), Some(W2), "the least loaded worker takes it");

    // A run abandoned (cancelled) on the victim before the move is heard
    // of: abandoned on the thief, which is told to give it back.
    let out = h.ev(Event::Cancel { task: ids[1] });
    assert_eq!(out[..1], [recall(ids[1], W0)], "{out:?}");
    assert_eq!(h.ev(moved(ids[1], W0, W2)), vec![recall(ids[1], W2)]);
    assert_eq!((h.s.load(W0), h.s.load(W2)), (Some(0), Some(2)), "its slot moved with it");
    assert_eq!(h.ev(Event::TaskStolen { task: ids[1], from: W2, to: None }), vec![]);
    assert_eq!(h.s.load(W2), Some(1));
}
