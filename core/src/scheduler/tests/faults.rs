//! Failures, event by event: retries, error propagation, cancellation,
//! lost workers and recomputation, `KilledWorker`, late results.

use std::sync::Arc;

use super::*;

fn panic(i: u64) -> TaskFailure {
    TaskFailure::Panic { key: key(i), item: None, message: "oops".into(), arguments: None }
}

#[test]
fn retryable_failures_are_retried_while_retries_remain() {
    let mut h = H::one_slot();
    let retrying = |i, retries| NewTask { retries, ..node(i, &[], true) };
    let (ids, out) = h.submit(vec![retrying(0, 2)]);
    let x = ids[0];
    assert_eq!(out, vec![run(x, W0)]);
    assert_eq!(h.fail(x, W0, panic(0)), vec![run(x, W0)]);
    assert_eq!(h.fail(x, W0, error(0)), vec![run(x, W0)]);
    assert_eq!(h.finish(x, W0, 1), vec![done(x)]);

    let (ids, _) = h.submit(vec![retrying(1, 1)]);
    let y = ids[0];
    assert_eq!(h.fail(y, W0, error(1)), vec![run(y, W0)]);
    let out = h.fail(y, W0, error(1));
    assert_eq!(out, vec![Action::ReportFailed { task: y, failure: Arc::new(error(1)) }]);
    assert_eq!(h.state(y), Some(TaskState::Erred));
    assert_eq!(h.s.failure(y).as_deref(), Some(&error(1)));

    // Not retryable, whatever the retries.
    let (ids, _) = h.submit(vec![retrying(2, 5)]);
    let z = ids[0];
    let cancelled = TaskFailure::Cancelled { key: key(2) };
    assert_eq!(h.fail(z, W0, cancelled.clone()), vec![Action::ReportFailed { task: z, failure: Arc::new(cancelled) }]);
}

#[test]
fn a_failure_reaches_exactly_its_transitive_dependents() {
    let mut h = H::new(1, 3);
    h.join(W0, 4);
    // a → b → c;  a, d → e;  d → f;  c, f → g
    let (ids, out) = h.submit(vec![
        node(0, &[], true),
        node(1, &[0], true),
        node(2, &[1], true),
        node(3, &[], true),
        node(4, &[0, 3], true),
        node(5, &[3], true),
        node(6, &[2, 5], true),
    ]);
    let [a, b, c, d, e, f, g] = ids[..] else { unreachable!() };
    assert_eq!(runs(&out), vec![a, d]);

    let out = h.fail(a, W0, error(0));
    let root = Arc::new(error(0));
    assert_eq!(reported_failure(&out, a), Some(error(0)));
    for (t, i) in [(b, 1), (c, 2), (e, 4), (g, 6)] {
        let expected = TaskFailure::DependencyFailed { key: key(i), item: None, cause: root.clone() };
        assert_eq!(reported_failure(&out, t), Some(expected.clone()), "task {i}");
        assert_eq!(h.s.failure(t).as_deref(), Some(&expected));
        assert_eq!(h.state(t), Some(TaskState::Erred));
    }
    assert_eq!(out.len(), 5, "five reports, nothing else: {out:?}");
    assert_eq!(h.s.count(TaskState::Erred), 5);

    // The rest goes on.
    assert_eq!(h.finish(d, W0, 1), vec![done(d), run(f, W0)]);
    assert_eq!(h.finish(f, W0, 1), vec![done(f)]);
    assert_eq!(h.s.count(TaskState::Memory), 2);
}

#[test]
fn the_root_cause_is_kept_through_dependency_failures() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], false), node(1, &[0], false), node(2, &[1], true)]);
    let out = h.fail(ids[0], W0, panic(0));
    let Some(TaskFailure::DependencyFailed { key: k, cause, .. }) = reported_failure(&out, ids[2]) else {
        panic!("{out:?}")
    };
    assert_eq!(k, key(2));
    assert_eq!(*cause, panic(0), "names the task that went wrong, not the one in between");
    // Nobody holds the failed ones: all forgotten but the reported one.
    assert_eq!(h.s.live_tasks(), 3, "`c` keeps its inputs for the failure's lineage");
    assert_eq!(h.drop_ref(ids[2]), vec![forget(ids[2]), forget(ids[1]), forget(ids[0])]);
}

#[test]
fn cancelling_a_running_task_fails_it_and_its_dependents_and_frees_the_slot() {
    let mut h = H::one_slot();
    let (ids, out) = h.submit(vec![node(0, &[], true), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    let out = h.ev(Event::Cancel { task: a });
    let cancelled = Arc::new(TaskFailure::Cancelled { key: key(0) });
    assert_eq!(
        out,
        vec![
            Action::ReportFailed { task: a, failure: cancelled.clone() },
            Action::ReportFailed {
                task: b,
                failure: Arc::new(TaskFailure::DependencyFailed { key: key(1), item: None, cause: cancelled.clone() })
            },
        ]
    );
    // The slot is free at once; the cancelled run's late result is released.
    let (ids, out) = h.submit(vec![node(2, &[], true)]);
    assert_eq!(out, vec![run(ids[0], W0)]);
    assert_eq!(h.finish(a, W0, 1), vec![release(a, W0)]);
    assert_eq!(h.ev(Event::Cancel { task: a }), vec![], "already failed");
    assert_eq!(h.drop_ref(a), vec![], "`b` still keeps it");
    assert_eq!(h.drop_ref(b), vec![forget(b), forget(a)]);
}

#[test]
fn cancelling_a_queued_task_means_it_never_runs() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], true), node(1, &[], true)]);
    let [busy, queued] = ids[..] else { unreachable!() };
    assert_eq!(h.state(queued), Some(TaskState::Ready));
    h.ev(Event::Cancel { task: queued });
    assert_eq!(h.state(queued), Some(TaskState::Erred));
    assert_eq!(h.finish(busy, W0, 1), vec![done(busy)]);
    assert_eq!(h.s.count(TaskState::Ready), 0);
}

#[test]
fn cancelling_a_finished_task_reports_it_cancelled_and_keeps_the_result() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], true), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    h.finish(a, W0, 1);
    let out = h.ev(Event::Cancel { task: a });
    assert_eq!(out, vec![Action::ReportFailed { task: a, failure: Arc::new(TaskFailure::Cancelled { key: key(0) }) }]);
    assert_eq!(h.state(a), Some(TaskState::Memory));
    assert_eq!(h.s.processing_on(b), Some(W0), "a dependent of a finished task is not touched");
    assert_eq!(h.finish(b, W0, 1), vec![done(b)]);
}

#[test]
fn a_late_result_for_a_task_nobody_needs_is_released_or_dropped() {
    let mut h = H::one_slot();
    // `a` runs for `b`; `b` is cancelled, so `a` is needed by nobody.
    let (ids, _) = h.submit(vec![node(0, &[], false), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    h.ev(Event::Cancel { task: b });
    assert_eq!(h.state(a), Some(TaskState::Released), "kept: the erred `b` lists it");
    assert_eq!(h.s.processing_on(a), None);
    assert_eq!(h.finish(a, W0, 1), vec![release(a, W0)]);

    // `x` runs for the client, who lets go: `x` is forgotten, its result
    // dropped by the driver (the id is stale: no action).
    let (ids, _) = h.submit(vec![node(2, &[], true)]);
    let x = ids[0];
    assert_eq!(h.s.processing_on(x), Some(W0));
    assert_eq!(h.drop_ref(x), vec![forget(x)]);
    assert_eq!(h.finish(x, W0, 1), vec![]);
}

#[test]
fn a_lost_worker_s_work_is_rescheduled_and_its_results_recomputed_from_lineage() {
    let mut h = H::new(0, 3);
    h.join(W0, 2);
    let (ids, out) = h.submit(vec![node(0, &[], false), node(1, &[0], false), node(2, &[1], true)]);
    let [a, b, c] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    assert_eq!(h.finish(a, W0, 0), vec![run(b, W0)]);
    let (ids, out) = h.submit(vec![node(9, &[], true)]);
    let z = ids[0];
    assert_eq!(out, vec![run(z, W0)]);
    h.join(W1, 1);
    // `b` finishes on W0 (zero bytes: no locality); `c` goes to idle W1.
    assert_eq!(h.finish(b, W0, 0), vec![release(a, W0), run(c, W1)]);

    // W0 dies with `b`'s result and `z`'s run. `c` (on W1) cannot have its
    // input any more: back to waiting. `b` is recomputed, and `a` before it
    // (released, but kept as lineage). `a` (first submission) beats `z`.
    assert_eq!(h.lose(W0), vec![run(a, W1)]);
    assert_eq!(h.state(b), Some(TaskState::Waiting));
    assert_eq!(h.state(c), Some(TaskState::Waiting));
    assert_eq!(h.state(z), Some(TaskState::Ready));
    // `c`'s run on W1 from before finishes: not this run's, released.
    assert_eq!(h.finish(c, W1, 1), vec![release(c, W1)]);
    assert_eq!(h.finish(a, W1, 0), vec![run(b, W1)]);
    assert_eq!(h.finish(b, W1, 0), vec![release(a, W1), run(c, W1)]);
    assert_eq!(h.finish(c, W1, 0), vec![done(c), release(b, W1), run(z, W1)]);
    assert_eq!(h.finish(z, W1, 0), vec![done(z)]);
}

#[test]
fn a_lost_result_nobody_needs_any_more_is_not_recomputed() {
    // One death is enough to fail a task.
    let mut h = H::new(0, 1);
    h.join(W0, 1);
    h.join(W1, 1);
    let (ids, out) = h.submit(vec![node(0, &[], false), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    assert_eq!(h.finish(a, W0, 1), vec![run(b, W0)]);
    // W0 dies with `a`'s result and `b`'s run, which had started: `b`
    // fails, so `a` is needed by nobody and stays released (kept: the erred
    // `b` lists it).
    h.started(b, W0);
    let killed = Arc::new(TaskFailure::KilledWorker { key: key(1), item: None, attempts: 1 });
    assert_eq!(h.lose(W0), vec![Action::ReportFailed { task: b, failure: killed }]);
    assert_eq!(h.state(a), Some(TaskState::Released));
    assert_eq!(h.drop_ref(b), vec![forget(b), forget(a)]);
}

#[test]
fn a_task_that_kills_enough_workers_fails_with_killed_worker() {
    let mut h = H::new(0, 2);
    h.join(W0, 1);
    let (ids, out) = h.submit(vec![node(0, &[], true), node(1, &[0], true)]);
    let [x, y] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(x, W0)]);
    h.started(x, W0);
    assert_eq!(h.lose(W0), vec![], "no worker left: queued");
    assert_eq!(h.state(x), Some(TaskState::Ready));
    assert_eq!(h.join(W1, 1), vec![run(x, W1)]);
    h.started(x, W1);
    let out = h.lose(W1);
    let killed = Arc::new(TaskFailure::KilledWorker { key: key(0), item: None, attempts: 2 });
    assert_eq!(
        out,
        vec![
            Action::ReportFailed { task: x, failure: killed.clone() },
            Action::ReportFailed {
                task: y,
                failure: Arc::new(TaskFailure::DependencyFailed { key: key(1), item: None, cause: killed })
            },
        ]
    );
}

#[test]
fn deaths_count_in_a_row_a_good_run_resets_them() {
    let mut h = H::new(0, 2);
    h.join(W0, 1);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let x = ids[0];
    h.join(W1, 1);
    assert_eq!(h.lose(W0), vec![run(x, W1)], "one death");
    assert_eq!(h.finish(x, W1, 1), vec![done(x)]);
    h.join(W2, 1);
    // W1 dies holding the result: recomputed on W2, whose death is the first
    // of a new row — rescheduled, not `KilledWorker`.
    assert_eq!(h.lose(W1), vec![run(x, W2)]);
    assert_eq!(h.lose(W2), vec![]);
    assert_eq!(h.state(x), Some(TaskState::Ready));
}

/// A process dies after its results were stored in its machine's store:
/// they move to the heir (the store, joined as a worker without threads),
/// nothing is recomputed, and only its runs are taken back.
#[test]
fn results_outlive_a_lost_process_when_its_machine_keeps_them() {
    const STORE: WorkerId = WorkerId(u32::MAX);
    let mut h = H::new(0, 3);
    assert_eq!(h.join(STORE, 0), vec![], "a worker without threads gets nothing");
    h.join(W0, 1);
    h.join(W1, 1);
    // a on W0, b on W1; c needs both.
    let (ids, out) = h.submit(vec![node(0, &[], false), node(1, &[], false), node(2, &[0, 1], true)]);
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(out, vec![run(a, W0), run(b, W1)]);
    assert_eq!(h.finish(a, W0, 100), vec![]);
    // W0 dies holding `a`, with nothing running.
    let out = h.ev(Event::ProcessLost { worker: W0, heir: STORE });
    assert!(runs(&out).is_empty(), "nothing recomputed: {out:?}");
    assert_eq!(h.state(a), Some(TaskState::Memory));
    assert_eq!(h.s.holders(a), &[STORE]);
    // `c` runs on W1 once `b` is done; `a` is released from the store.
    let out = h.finish(b, W1, 100);
    assert_eq!(out, vec![run(c, W1)]);
    let out = h.finish(c, W1, 8);
    assert!(out.contains(&release(a, STORE)) && out.contains(&release(b, W1)), "{out:?}");
    // A process lost while running: its run goes back, counted as a death.
    let (ids, out) = h.submit(vec![node(3, &[], true)]);
    assert_eq!(out, vec![run(ids[0], W1)]);
    let out = h.ev(Event::ProcessLost { worker: W1, heir: STORE });
    assert!(runs(&out).is_empty(), "no worker with threads left");
    assert_eq!(h.state(ids[0]), Some(TaskState::Ready));
    // With no live heir it is a plain loss: the result is recomputed.
    let mut h = H::new(0, 3);
    h.join(W0, 1);
    h.join(W1, 1);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    h.finish(ids[0], W0, 1);
    let out = h.ev(Event::ProcessLost { worker: W0, heir: W2 });
    assert_eq!(out, vec![run(ids[0], W1)], "recomputed: the heir is not a live worker");
}
