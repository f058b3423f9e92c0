//! The happy paths, event by event: transitions, release timing, dedup,
//! priorities, capacity, placement, stale ids, graph errors.

use super::*;

#[test]
fn chain_runs_in_order_and_releases_each_input_when_its_user_finishes() {
    let mut h = H::one_slot();
    let (ids, out) = h.submit(vec![node(0, &[], false), node(1, &[0], false), node(2, &[1], true)]);
    let [a, b, c] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    assert_eq!(h.state(b), Some(TaskState::Waiting));
    assert_eq!(h.state(c), Some(TaskState::Waiting));

    assert_eq!(h.finish(a, W0, 10), vec![run(b, W0)]);
    assert_eq!(h.s.holders(a), &[W0]);
    // `a` goes the moment `b`, its last user, is done; not before.
    assert_eq!(h.finish(b, W0, 10), vec![release(a, W0), run(c, W0)]);
    // Released, not forgotten: `b` (in memory) may need it recomputed.
    assert_eq!(h.state(a), Some(TaskState::Released));
    assert_eq!(h.finish(c, W0, 10), vec![done(c), release(b, W0)]);
    assert_eq!(h.state(c), Some(TaskState::Memory));
    assert_eq!(h.s.live_tasks(), 3);

    // The future goes: everything goes, the lineage with it.
    assert_eq!(h.drop_ref(c), vec![release(c, W0), forget(c), forget(b), forget(a)]);
    assert_eq!(h.s.live_tasks(), 0);
    assert_eq!(h.s.lookup(&key(0)), None);
}

#[test]
fn diamond_keeps_the_shared_input_until_both_users_finish() {
    let mut h = H::new(0, 3);
    h.join(W0, 1);
    h.join(W1, 1);
    let (ids, out) =
        h.submit(vec![node(0, &[], false), node(1, &[0], false), node(2, &[0], false), node(3, &[1, 2], true)]);
    let [a, b, c, d] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0)]);
    // `b` goes where `a` is; `c` to the other, free worker.
    assert_eq!(h.finish(a, W0, 100), vec![run(b, W0), run(c, W1)]);
    assert_eq!(h.finish(c, W1, 700), vec![], "`a` is still needed by `b`");
    assert_eq!(h.s.holders(a), &[W0]);
    // `d` goes where most of its input bytes are: `c`'s 700 on W1.
    assert_eq!(h.finish(b, W0, 5), vec![release(a, W0), run(d, W1)]);
    assert_eq!(h.finish(d, W1, 1), vec![done(d), release(c, W1), release(b, W0)]);
    assert_eq!(h.s.count(TaskState::Memory), 1);
    assert_eq!(h.s.count(TaskState::Released), 3);
}

#[test]
fn pure_keys_are_shared_across_and_within_submissions() {
    let mut h = H::one_slot();
    let (first, out) = h.submit_full(vec![node(7, &[], true)]);
    let x = first[0].id;
    assert!(first[0].new);
    assert_eq!(out, vec![run(x, W0)]);

    // Same key again: merged, one more client reference, no second run.
    let (again, out) = h.submit_full(vec![node(7, &[], true)]);
    assert_eq!(again, vec![Submitted { id: x, new: false }]);
    assert_eq!(out, vec![]);
    assert_eq!(h.finish(x, W0, 1), vec![done(x)]);
    assert_eq!(h.drop_ref(x), vec![], "one future is left");
    assert_eq!(h.drop_ref(x), vec![release(x, W0), forget(x)]);

    // Twice in one graph: the second node is the first; edges to both are
    // edges to it.
    let (s, out) = h.submit_full(vec![node(8, &[], false), node(8, &[], true), node(9, &[0, 1], true)]);
    assert_eq!(s[1], Submitted { id: s[0].id, new: false });
    assert_eq!(h.s.deps(s[2].id), &[s[0].id, s[0].id]);
    assert_eq!(out, vec![run(s[0].id, W0)]);
    assert_eq!(h.finish(s[0].id, W0, 1), vec![done(s[0].id), run(s[2].id, W0)]);

    // A merged, wanted node whose task is finished hears about it at once.
    let (again, out) = h.submit_full(vec![node(8, &[], true)]);
    assert_eq!(again, vec![Submitted { id: s[0].id, new: false }]);
    assert_eq!(out, vec![done(s[0].id)]);
}

#[test]
fn user_priority_then_submission_then_order_decides_what_runs_first() {
    let mut h = H::new(0, 3);
    let prio = |i, p| NewTask { priority: p, ..node(i, &[], true) };
    let (ids, out) = h.submit(vec![prio(0, 0), prio(1, 5), prio(2, -1)]);
    let (later, _) = h.submit(vec![prio(3, 0)]);
    assert_eq!(out, vec![], "no worker yet: everything queues");
    assert_eq!(h.s.count(TaskState::Ready), 4);

    let mut order = runs(&h.join(W0, 1));
    for _ in 0..3 {
        let t = *order.last().unwrap();
        order.extend(runs(&h.finish(t, W0, 0)));
    }
    // Priority 5, then 0 (first submission before the second), then -1.
    assert_eq!(order, vec![ids[1], ids[0], later[0], ids[2]]);
}

#[test]
fn tree_reduction_runs_depth_first_on_one_slot() {
    let mut h = H::one_slot();
    let graph = vec![
        node(0, &[], false),
        node(1, &[], false),
        node(2, &[], false),
        node(3, &[], false),
        node(4, &[0, 1], false),
        node(5, &[2, 3], false),
        node(6, &[4, 5], true),
    ];
    let (ids, out) = h.submit(graph);
    let mut order = runs(&out);
    let mut most_held = 0;
    while let Some(&t) = order.last() {
        let next = runs(&h.finish(t, W0, 1));
        most_held = most_held.max(h.s.count(TaskState::Memory));
        if next.is_empty() {
            break;
        }
        order.extend(next);
    }
    let seq: Vec<usize> = order.iter().map(|t| ids.iter().position(|i| i == t).unwrap()).collect();
    assert_eq!(seq, vec![0, 1, 4, 2, 3, 5, 6]);
    assert!(most_held <= 3, "depth-first keeps few results: {most_held}");
}

#[test]
fn a_worker_takes_its_slots_and_the_rest_queues() {
    let mut h = H::new(1, 3);
    let graph: Vec<NewTask> = (0..10).map(|i| node(i, &[], true)).collect();
    let (ids, out) = h.submit(graph);
    assert_eq!(out, vec![], "no worker: nothing runs");
    assert_eq!(h.s.count(TaskState::Ready), 10);

    // 2 threads, one extra slot each: 4 in flight.
    assert_eq!(runs(&h.join(W0, 2)), ids[..4]);
    assert_eq!(h.s.count(TaskState::Processing), 4);
    assert_eq!(h.s.count(TaskState::Ready), 6);
    assert_eq!(h.finish(ids[0], W0, 0), vec![done(ids[0]), run(ids[4], W0)]);

    // A second worker with 1 thread takes 2.
    assert_eq!(h.join(W1, 1), vec![run(ids[5], W1), run(ids[6], W1)]);
    // W0 shrinks to 1 thread (2 slots) while running 4: it gets nothing more
    // until it is below 2.
    assert_eq!(h.join(W0, 1), vec![]);
    assert_eq!(h.finish(ids[1], W0, 0), vec![done(ids[1])]);
    assert_eq!(h.finish(ids[2], W0, 0), vec![done(ids[2])]);
    assert_eq!(h.finish(ids[3], W0, 0), vec![done(ids[3]), run(ids[7], W0)]);
}

#[test]
fn placement_without_locality_picks_the_least_loaded_then_the_lowest_id() {
    let mut h = H::new(1, 3);
    h.join(W2, 1);
    h.join(W1, 1);
    let (ids, out) = h.submit((0..3).map(|i| node(i, &[], true)).collect());
    assert_eq!(out, vec![run(ids[0], W1), run(ids[1], W2), run(ids[2], W1)]);
}

#[test]
fn placement_prefers_input_bytes_among_free_workers_only() {
    let mut h = H::new(0, 3);
    h.join(W0, 1);
    h.join(W1, 1);
    let (ids, out) =
        h.submit(vec![node(0, &[], false), node(1, &[], false), node(2, &[0, 1], true), node(3, &[], true)]);
    let [a, c, b, z] = ids[..] else { unreachable!() };
    assert_eq!(out, vec![run(a, W0), run(c, W1)]);
    assert_eq!(h.finish(a, W0, 1_000), vec![run(z, W0)]);
    // `b`'s big input is on W0, but W0 is full: W1, which holds the small one.
    assert_eq!(h.finish(c, W1, 1), vec![run(b, W1)]);
}

/// Workers chosen for 40 tasks, each reading 1 MB held on W0, under
/// `placement`, with three free workers of many slots.
fn placements_of_tasks_reading_w0(placement: super::super::Placement) -> Vec<WorkerId> {
    let mut h =
        H { s: Scheduler::new(SchedulerConfig { extra_slots_per_thread: 100, placement, ..Default::default() }) };
    for w in [W0, W1, W2] {
        h.join(w, 1);
    }
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let (consumers, _) = h.submit((1..=40).map(|i| node_on(i, &[ids[0]], true)).collect());
    let out = h.finish(ids[0], h.s.processing_on(ids[0]).unwrap_or(W0), 1_000_000);
    consumers
        .iter()
        .map(|&c| {
            out.iter()
                .find_map(|a| match a {
                    Action::Run { task, worker } if *task == c => Some(*worker),
                    _ => None,
                })
                .unwrap_or(WorkerId(u32::MAX))
        })
        .collect()
}

#[test]
fn random_placement_ignores_input_bytes_and_is_reproducible_from_its_seed() {
    use super::super::Placement;
    let holder = placements_of_tasks_reading_w0(Placement::Locality)[0];
    assert!(placements_of_tasks_reading_w0(Placement::Locality).iter().all(|&w| w == holder));
    let a = placements_of_tasks_reading_w0(Placement::Random { seed: 7 });
    assert_eq!(a, placements_of_tasks_reading_w0(Placement::Random { seed: 7 }), "same seed, same choices");
    assert_ne!(a, placements_of_tasks_reading_w0(Placement::Random { seed: 8 }), "another seed, other choices");
    for w in [W0, W1, W2] {
        let n = a.iter().filter(|&&x| x == w).count();
        assert!((5..=25).contains(&n), "{w:?} got {n} of 40 tasks: not a uniform draw ({a:?})");
    }
}

#[test]
fn a_stale_id_is_ignored_everywhere_and_its_slot_reused() {
    let mut h = H::new(0, 3);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let a = ids[0];
    assert_eq!(h.drop_ref(a), vec![forget(a)], "queued, then needed by nobody");
    assert_eq!(h.state(a), None);
    assert_eq!(h.s.key(a), None);
    assert_eq!(h.s.failure(a), None);
    assert_eq!(h.s.holders(a), &[] as &[WorkerId]);
    assert_eq!(h.s.deps(a), &[] as &[TaskId]);
    assert_eq!(h.s.processing_on(a), None);

    let (ids, _) = h.submit(vec![node(1, &[], true)]);
    let b = ids[0];
    assert_eq!((b.index, b.generation), (a.index, a.generation + 1));

    h.join(W0, 1);
    assert_eq!(h.s.processing_on(b), Some(W0));
    for event in [
        Event::TaskFinished { task: a, worker: W0, nbytes: 1 },
        Event::TaskFailed { task: a, worker: W0, failure: error(0) },
        Event::ClientReleased { task: a },
        Event::ClientRetained { task: a },
        Event::Cancel { task: a },
    ] {
        assert_eq!(h.ev(event), vec![]);
    }
    assert_eq!(h.s.processing_on(b), Some(W0), "the new occupant is untouched");
    assert_eq!(h.finish(b, W0, 1), vec![done(b)]);
    assert_eq!(h.drop_ref(b), vec![release(b, W0), forget(b)], "exactly one client reference");

    let mut out = Vec::new();
    let err = h.s.submit(vec![node_on(2, &[a], true)], &mut out).unwrap_err();
    assert_eq!(err, crate::scheduler::GraphError::UnknownTask { node: 0, task: a });
}

#[test]
fn events_for_unknown_workers_and_tasks_do_nothing() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let bogus = TaskId { index: 999, generation: 0 };
    assert_eq!(h.lose(W2), vec![]);
    assert_eq!(h.finish(bogus, W0, 1), vec![]);
    // A finish reported by the wrong worker is not this run's: its copy goes.
    assert_eq!(h.finish(ids[0], W0, 1), vec![done(ids[0])]);
    assert_eq!(h.finish(ids[0], W0, 1), vec![], "a duplicate of the held copy");
    h.join(W1, 1);
    assert_eq!(h.finish(ids[0], W1, 1), vec![release(ids[0], W1)], "an extra copy");
    assert_eq!(h.drop_ref(ids[0]), vec![release(ids[0], W0), forget(ids[0])]);
    assert_eq!(h.drop_ref(ids[0]), vec![]);
}

#[test]
fn graph_errors_name_the_node_and_leave_the_scheduler_untouched() {
    use crate::scheduler::GraphError;
    let mut h = H::one_slot();
    let mut out = Vec::new();
    let forward = h.s.submit(vec![node(0, &[], true), node(1, &[2], true), node(2, &[], true)], &mut out);
    assert_eq!(forward, Err(GraphError::NotTopological { node: 1, dep: 2 }));
    let message = forward.unwrap_err().to_string();
    assert!(message.contains("node 1") && message.contains("topological"), "{message}");
    let itself = h.s.submit(vec![node(0, &[0], true)], &mut out);
    assert_eq!(itself, Err(GraphError::NotTopological { node: 0, dep: 0 }));
    assert_eq!(out, vec![]);
    assert_eq!(h.s.live_tasks(), 0);
    assert_eq!(h.s.lookup(&key(0)), None);
}

#[test]
fn existing_tasks_as_inputs_in_memory_released_or_erred() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], false), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    h.finish(a, W0, 1);
    h.finish(b, W0, 1);
    assert_eq!(h.state(a), Some(TaskState::Released));

    // On a task in memory: ready at once.
    let (ids, out) = h.submit(vec![node_on(2, &[b], true)]);
    assert_eq!(out, vec![run(ids[0], W0)]);
    h.finish(ids[0], W0, 1);

    // On a released task (kept for lineage): it is computed again.
    let (ids, out) = h.submit(vec![node_on(3, &[a], true)]);
    assert_eq!(out, vec![run(a, W0)]);
    assert_eq!(h.finish(a, W0, 1), vec![run(ids[0], W0)]);
    assert_eq!(h.finish(ids[0], W0, 1), vec![done(ids[0]), release(a, W0)]);

    // On an erred task: erred at once, reported with the root cause.
    let (ids, _) = h.submit(vec![node(4, &[], true)]);
    let e = ids[0];
    h.fail(e, W0, error(4));
    let (ids, out) = h.submit(vec![node_on(5, &[e], true), node_on(6, &[e], false)]);
    assert_eq!(
        reported_failure(&out, ids[0]),
        Some(TaskFailure::DependencyFailed { key: key(5), item: None, cause: error(4).into() })
    );
    assert_eq!(out.len(), 2, "reported, and the unwanted node forgotten: {out:?}");
    assert_eq!(out[1], forget(ids[1]));
}

#[test]
fn a_node_nothing_wants_is_forgotten_at_submission() {
    let mut h = H::one_slot();
    let (ids, out) = h.submit(vec![node(0, &[], false), node(1, &[0], false), node(2, &[], true)]);
    assert_eq!(out, vec![forget(ids[1]), forget(ids[0]), run(ids[2], W0)]);
    assert_eq!(h.s.live_tasks(), 1);
}

#[test]
fn client_retained_adds_a_reference_and_restarts_a_released_task() {
    let mut h = H::one_slot();
    let (ids, _) = h.submit(vec![node(0, &[], false), node(1, &[0], true)]);
    let [a, b] = ids[..] else { unreachable!() };
    h.finish(a, W0, 1);
    h.finish(b, W0, 1);
    // The client gets a future on `a` (released, kept for lineage).
    assert_eq!(h.ev(Event::ClientRetained { task: a }), vec![run(a, W0)]);
    assert_eq!(h.finish(a, W0, 1), vec![done(a)]);
    assert_eq!(h.ev(Event::ClientRetained { task: b }), vec![]);
    assert_eq!(h.drop_ref(b), vec![]);
    assert_eq!(h.drop_ref(b), vec![release(b, W0), forget(b)]);
    assert_eq!(h.drop_ref(a), vec![release(a, W0), forget(a)]);
}

#[test]
fn long_chains_do_not_recurse() {
    const N: u64 = 100_000;
    let mut h = H::one_slot();
    let graph: Vec<NewTask> = (0..N)
        .map(|i| {
            let deps: &[usize] = if i == 0 { &[] } else { &[i as usize - 1] };
            node(i, deps, i == N - 1)
        })
        .collect();
    let (ids, out) = h.submit(graph);
    let mut next = runs(&out);
    let mut ran = 0;
    while let Some(t) = next.pop() {
        ran += 1;
        next = runs(&h.finish(t, W0, 8));
    }
    assert_eq!(ran, N);
    assert_eq!(h.state(ids[N as usize - 1]), Some(TaskState::Memory));
    assert_eq!(h.s.live_tasks(), N as usize, "lineage kept while the result is held");
    let out = h.drop_ref(ids[N as usize - 1]);
    assert_eq!(out.len(), N as usize + 1);
    assert_eq!(h.s.live_tasks(), 0);
}

#[test]
fn a_long_lived_input_forgets_its_dependents_as_they_come_and_go() {
    let mut h = H::new(0, 3);
    let (ids, _) = h.submit(vec![node(0, &[], true)]);
    let x = ids[0];
    let (ids, _) = h.submit(vec![node_on(999, &[x], true)]);
    let z = ids[0];
    // Many dependents, each dropped before it could run: forgotten, leaving
    // stale entries in `x`'s dependents list, which must be compacted.
    for i in 1..=200 {
        let (ids, _) = h.submit(vec![node_on(i, &[x], true)]);
        assert_eq!(h.drop_ref(ids[0]), vec![forget(ids[0])]);
    }
    assert!(h.s.tasks.at(x).dependents.len() < 30, "stale dependents pile up");
    // A live dependent is still found when `x` finishes.
    let (ids, _) = h.submit(vec![node_on(1_000, &[x], true)]);
    let y = ids[0];
    assert_eq!(runs(&h.join(W0, 1)), vec![x]);
    assert_eq!(h.finish(x, W0, 1), vec![done(x), run(z, W0)]);
    assert_eq!(h.finish(z, W0, 1), vec![done(z), run(y, W0)]);
}

#[test]
fn a_stolen_run_moves_to_the_thief_or_back_to_the_queue() {
    let stolen = |task, from, to| Event::TaskStolen { task, from, to };
    let mut h = H::new(3, 3);
    h.join(W0, 1);
    let (ids, out) = h.submit((0..4).map(|i| node(i, &[], true)).collect());
    assert_eq!(runs(&out), ids, "one worker with 4 slots takes all 4");
    assert_eq!(h.join(W1, 1), vec![], "nothing is queued for the newcomer");
    assert_eq!((h.s.load(W0), h.s.load(W1), h.s.load(W2)), (Some(4), Some(0), None));

    // W0 gave back the run of ids[3]: it goes straight to the thief.
    assert_eq!(h.ev(stolen(ids[3], W0, Some(W1))), vec![run(ids[3], W1)]);
    assert_eq!(h.s.processing_on(ids[3]), Some(W1));
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(3), Some(1)));
    // A second answer for the same run (or any run not on `from`) is ignored.
    assert_eq!(h.ev(stolen(ids[3], W0, Some(W1))), vec![]);
    assert_eq!(h.ev(stolen(ids[3], W0, None)), vec![]);
    assert_eq!(h.s.processing_on(ids[3]), Some(W1));

    // No thief named: back to the queue, and placement picks the least
    // loaded worker (W1, with 1 against W0's 2).
    assert_eq!(h.ev(stolen(ids[2], W0, None)), vec![run(ids[2], W1)]);
    // A thief that is unknown (lost meanwhile) or is the victim itself: the
    // queue too; now W0 (1) is the least loaded, so the run goes back there.
    assert_eq!(h.ev(stolen(ids[1], W0, Some(W2))), vec![run(ids[1], W0)]);
    assert_eq!(h.ev(stolen(ids[1], W0, Some(W0))), vec![run(ids[1], W0)]);
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(2), Some(2)));

    // A full thief does not take it: fill both workers' 4 slots.
    let (more, out) = h.submit((4..8).map(|i| node(i, &[], true)).collect());
    assert_eq!(out, vec![run(more[0], W0), run(more[1], W1), run(more[2], W0), run(more[3], W1)]);
    assert_eq!(h.finish(more[0], W0, 0), vec![done(more[0])]);
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(3), Some(4)));
    // W1 is full: the stolen run is queued, and W0 (free) takes it back.
    assert_eq!(h.ev(stolen(ids[0], W0, Some(W1))), vec![run(ids[0], W0)]);

    // Stolen runs finish where they went, and count no death.
    assert_eq!(h.finish(ids[3], W1, 1), vec![done(ids[3])]);
    assert_eq!(h.finish(ids[2], W1, 1), vec![done(ids[2])]);
    assert_eq!(h.state(ids[3]), Some(TaskState::Memory));
}

#[test]
fn saturation_changes_every_worker_s_slots() {
    let saturation = |extra_slots_per_thread| Event::Saturation { extra_slots_per_thread };
    let mut h = H::new(0, 3);
    h.join(W0, 2);
    h.join(W1, 1);
    let (ids, out) = h.submit((0..12).map(|i| node(i, &[], true)).collect());
    assert_eq!(runs(&out).len(), 3, "one slot per thread");
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(2), Some(1)));
    // Three slots per thread: W0 takes 4 more, W1 2 more.
    let out = h.ev(saturation(2));
    assert_eq!(runs(&out).len(), 6);
    assert_eq!((h.s.load(W0), h.s.load(W1)), (Some(6), Some(3)));
    assert_eq!(h.ev(saturation(2)), vec![], "no change, nothing to do");
    // Back to one slot per thread: nothing is taken back, nothing more sent
    // until a worker is below its slots again.
    assert_eq!(h.ev(saturation(0)), vec![]);
    let running: Vec<TaskId> = ids.iter().copied().filter(|&t| h.s.processing_on(t) == Some(W1)).collect();
    assert_eq!(h.finish(running[0], W1, 0), vec![done(running[0])]);
    assert_eq!(h.finish(running[1], W1, 0), vec![done(running[1])]);
    let out = h.finish(running[2], W1, 0);
    assert_eq!((out[0].clone(), runs(&out).len()), (done(running[2]), 1), "below its one slot: one more run");
    // A worker joining now gets the new slots.
    h.join(W2, 1);
    assert_eq!(h.s.load(W2), Some(1));
    assert_eq!(h.s.count(TaskState::Ready), 12 - 9 - 1 - 1);
}

/// Over the memory limit, runs start one at a time: never a second while
/// one is in flight, but always one when none is, so the graph finishes.
#[test]
fn a_paused_scheduler_starts_one_run_at_a_time_and_resumes() {
    let pause = |paused| Event::Pause { paused };
    let mut h = H::new(0, 3);
    h.join(W0, 2);
    h.join(W1, 2);
    let (ids, out) = h.submit((0..10).map(|i| node(i, &[], true)).collect());
    let mut running = runs(&out);
    assert_eq!(running.len(), 4, "one run per slot before the pause");
    // Paused: runs already sent stay, and none is added while they run.
    assert_eq!(h.ev(pause(true)), vec![]);
    assert!(h.s.paused());
    for t in running.drain(..3) {
        assert_eq!(
            h.finish(t, h.s.processing_on(t).unwrap_or(W0), 0),
            vec![done(t)],
            "no new run while one is in flight"
        );
    }
    // The last in flight ends: exactly one more starts, on a free worker.
    let last = running[0];
    let out = h.finish(last, h.s.processing_on(last).unwrap_or(W0), 0);
    assert_eq!(out[0], done(last));
    let next = runs(&out);
    assert_eq!(next.len(), 1, "one run at a time while paused");
    assert_eq!(h.s.count(TaskState::Processing), 1);
    // Resumed: every free slot fills again.
    let out = h.ev(pause(false));
    assert_eq!(runs(&out).len(), 3, "the other three slots fill");
    assert_eq!(h.s.count(TaskState::Processing), 4);
    assert!(!h.s.paused());
    assert_eq!(h.s.count(TaskState::Memory), 4);
    assert_eq!(ids.len(), 10);
}

/// A graph forgotten whole gives the tables' memory back, and no id from
/// before can name a task made after.
#[test]
fn the_last_task_forgotten_gives_the_tables_back_and_old_ids_stay_stale() {
    let mut h = H::new(0, 3);
    h.join(W0, 4);
    let n = 20_000;
    let (ids, out) = h.submit((0..n).map(|i| node(i, &[], true)).collect());
    assert_eq!(runs(&out).len(), 4, "one per slot");
    // Run everything, then drop every future.
    let mut pending: Vec<TaskId> = runs(&out);
    while let Some(t) = pending.pop() {
        pending.extend(runs(&h.finish(t, W0, 8)));
    }
    assert!(ids.iter().all(|&t| h.state(t) == Some(TaskState::Memory)));
    assert!(h.s.table_slots() >= n as usize);
    for &t in &ids[..ids.len() - 1] {
        h.drop_ref(t);
    }
    assert!(h.s.table_slots() >= n as usize, "one task still alive: nothing given back");
    h.drop_ref(ids[ids.len() - 1]);
    assert_eq!(h.s.table_slots(), 0, "the tables were given back");
    // Old ids are stale, and new tasks get ids none of them had.
    assert!(ids.iter().all(|&t| h.state(t).is_none()));
    let (new, _) = h.submit((0..100).map(|i| node(n + i, &[], true)).collect());
    assert!(new.iter().all(|t| !ids.contains(t)), "a new id equals an old one");
    assert!(ids.iter().all(|&t| h.state(t).is_none()), "an old id names a new task");
    assert_eq!(h.s.live_tasks(), 100);
}
