//! Placement and stealing weighed by transfer cost (`weigh_transfers`): a
//! task moves off its inputs' holder only when the move pays (see the
//! `steal` module's docs).

use super::*;
use crate::scheduler::Placement;

/// The readers' function (the producers' is 0).
const READ: u32 = 7;

fn weighing(extra_slots_per_thread: u32) -> H {
    H {
        s: Scheduler::new(SchedulerConfig {
            extra_slots_per_thread,
            weigh_transfers: true,
            placement: Placement::Locality,
            ..SchedulerConfig::default()
        }),
    }
}

/// A reader of `input` (a task of the `READ` function).
fn reader(i: u64, input: TaskId) -> NewTask {
    NewTask { key: Key { func: READ, token: [i, 1] }, ..node_on(i, &[input], true) }
}

/// Two workers of one thread; a block of `nbytes` made on W0; then
/// `readers` readers of it. Returns the harness, the readers, and the
/// actions of the block's finishing.
fn block_on_w0(h: &mut H, nbytes: u64, readers: u64) -> (Vec<TaskId>, Vec<Action>) {
    h.join(W0, 1);
    let (ids, out) = h.submit(vec![node(0, &[], true)]);
    assert_eq!(out, vec![run(ids[0], W0)]);
    h.join(W1, 1);
    let (rs, out) = h.submit((1..=readers).map(|i| reader(i, ids[0])).collect());
    assert_eq!(out, vec![]);
    let out = h.finish(ids[0], W0, nbytes);
    (rs, out)
}

fn on(out: &[Action], w: WorkerId) -> Vec<TaskId> {
    out.iter()
        .filter_map(|a| match a {
            Action::Run { task, worker } if *worker == w => Some(*task),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_whose_holder_is_full_waits_there_until_its_run_time_is_known_then_idle_workers_steal_small_inputs() {
    let mut h = weighing(0);
    let (rs, out) = block_on_w0(&mut h, 1_000, 6);
    // One runs on the holder; the others wait there (parked): the gain of
    // moving cannot be weighed before a reader's run time is known, so the
    // idle W1 gets nothing yet.
    assert_eq!(on(&out, W0), vec![rs[0]]);
    assert_eq!(on(&out, W1), vec![]);
    assert_eq!(h.s.parked_on(W0), 5);
    // The first reader took 50 ms; 1 kB costs ~1 ms to move: when it ends,
    // the holder takes its oldest parked reader and the idle W1 steals one
    // (it has one thread), the newest.
    assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 50_000 }), vec![]);
    let out = h.finish(rs[0], W0, 8);
    assert_eq!(out, vec![done(rs[0]), run(rs[1], W0), run(rs[5], W1)]);
    assert_eq!(h.s.parked_on(W0), 3);
    let out = h.finish(rs[5], W1, 8);
    assert_eq!(on(&out, W1), vec![rs[4]], "W1 steals again once idle");
    assert_eq!(h.s.parked_on(W0), 2);
}

#[test]
fn huge_inputs_of_short_tasks_stay_on_their_holder_while_another_worker_idles() {
    let mut h = weighing(0);
    // 1 GB at the default 100 MB/s is 10 s to move; a read takes 10 ms.
    let (rs, out) = block_on_w0(&mut h, 1_000_000_000, 6);
    assert_eq!(on(&out, W0), vec![rs[0]]);
    assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 10_000 }), vec![]);
    let mut ran_on_w0 = vec![rs[0]];
    let mut next = rs[0];
    for _ in 0..5 {
        let out = h.finish(next, W0, 8);
        assert_eq!(on(&out, W1), vec![], "moving 1 GB for a 10 ms task never pays");
        let got = on(&out, W0);
        assert_eq!(got.len(), 1);
        next = got[0];
        ran_on_w0.push(next);
        assert_eq!(h.ev(Event::RunTime { task: next, micros: 10_000 }), vec![]);
    }
    ran_on_w0.sort();
    assert_eq!(ran_on_w0, rs, "every reader ran on the holder");
}

#[test]
fn huge_inputs_of_long_tasks_move_when_the_backlog_outweighs_the_transfer() {
    let mut h = weighing(0);
    let (rs, _) = block_on_w0(&mut h, 1_000_000_000, 6);
    // 10 s to move, 100 s to run: even one task ahead pays for the move.
    assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 100_000_000 }), vec![]);
    let out = h.finish(rs[0], W0, 8);
    assert_eq!(on(&out, W1), vec![rs[5]]);
}

#[test]
fn the_measured_network_decides_between_waiting_and_moving() {
    // 100 MB for a 100 ms task with 2 waiting ahead of it on the holder
    // (backlog 3 → level 1): at the default 100 MB/s the move costs 1 s
    // (ratio 10, level 4): it waits; at a measured 10 GB/s, 10 ms (ratio
    // 0.1, level -3): it moves.
    for (bandwidth, moves) in [(None, false), (Some(10_000_000_000), true)] {
        let mut h = weighing(0);
        h.join(W0, 1);
        let (ids, _) = h.submit(vec![node(0, &[], true)]);
        h.finish(ids[0], W0, 100_000_000);
        let (rs, out) = h.submit((1..=4).map(|i| reader(i, ids[0])).collect());
        assert_eq!(on(&out, W0), vec![rs[0]]);
        assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 100_000 }), vec![]);
        if let Some(bandwidth) = bandwidth {
            assert_eq!(h.ev(Event::Network { bandwidth, latency_micros: 100 }), vec![]);
        }
        let out = h.join(W1, 1);
        assert_eq!(on(&out, W1).len(), usize::from(moves), "bandwidth {bandwidth:?}");
    }
}

#[test]
fn parked_tasks_of_a_lost_worker_are_queued_again_and_recomputed_inputs_placed_anew() {
    let mut h = weighing(0);
    let (rs, _) = block_on_w0(&mut h, 1_000_000_000, 4);
    assert_eq!(h.s.parked_on(W0), 3);
    // W0 dies with the block: the readers wait for it again, the block is
    // made again on W1, and the readers run there.
    let out = h.lose(W0);
    let block = h.s.deps(rs[0])[0];
    assert_eq!(out, vec![run(block, W1)]);
    let out = h.finish(block, W1, 1_000_000_000);
    assert_eq!(on(&out, W1).len(), 1);
    let mut next = on(&out, W1)[0];
    for _ in 0..3 {
        let out = h.finish(next, W1, 8);
        next = on(&out, W1)[0];
    }
    let out = h.finish(next, W1, 8);
    assert!(rs.iter().all(|&r| h.state(r) == Some(TaskState::Memory)), "{out:?}");
}

#[test]
fn without_weighing_a_task_whose_holder_is_full_goes_to_a_free_worker() {
    let mut h = H::new(0, 3);
    let (rs, out) = block_on_w0(&mut h, 1_000_000_000, 6);
    assert_eq!(on(&out, W0).len(), 1);
    assert_eq!(on(&out, W1).len(), 1, "the old rule moves 1 GB for a task of unknown length: {rs:?}");
}

#[test]
fn parked_tasks_of_a_lost_process_whose_results_live_on_are_queued_again() {
    let mut h = weighing(0);
    // W2: the machine's store, holding results, running nothing.
    h.join(W2, 0);
    let (rs, _) = block_on_w0(&mut h, 1_000_000_000, 4);
    assert_eq!(h.s.parked_on(W0), 3);
    // W0's process dies; its results live on in W2: the running reader and
    // the parked ones are queued again, and W1 (the only worker that runs
    // tasks) runs them all.
    let mut out = h.ev(Event::ProcessLost { worker: W0, heir: W2 });
    let mut done = 0;
    while let Some(&t) = on(&out, W1).first() {
        out = h.finish(t, W1, 8);
        done += 1;
    }
    assert_eq!(done, 4, "every reader ran");
    assert!(rs.iter().all(|&r| h.state(r) == Some(TaskState::Memory)));
}

#[test]
fn a_thief_steals_up_to_its_slots_not_only_its_threads() {
    // Two slots per thread: W1 takes two parked readers at once, as it
    // would take two from the queue (its paced queue hides the round trip).
    let mut h = weighing(1);
    let (rs, out) = block_on_w0(&mut h, 1_000, 6);
    assert_eq!(on(&out, W0), vec![rs[0], rs[1]]);
    assert_eq!(h.s.parked_on(W0), 4);
    assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 50_000 }), vec![]);
    let out = h.finish(rs[0], W0, 8);
    assert_eq!(on(&out, W0), vec![rs[2]]);
    assert_eq!(on(&out, W1), vec![rs[5], rs[4]]);
    assert_eq!(h.s.parked_on(W0), 1);
}

/// A scheduler that weighs transfers and takes runs back.
fn taking_back(extra_slots_per_thread: u32) -> H {
    let mut h = weighing(extra_slots_per_thread);
    h.s = Scheduler::new(SchedulerConfig {
        extra_slots_per_thread,
        weigh_transfers: true,
        take_back: true,
        placement: Placement::Locality,
        ..SchedulerConfig::default()
    });
    h
}

fn taken_back(out: &[Action]) -> Vec<(TaskId, WorkerId, WorkerId)> {
    out.iter()
        .filter_map(|a| match a {
            Action::TakeBack { task, from, to } => Some((*task, *from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_worker_takes_back_runs_queued_unstarted_on_a_busy_one_once_their_run_time_is_known() {
    let mut h = taking_back(4);
    h.join(W0, 1);
    // Five runs without inputs, all sent to W0 (one thread, four more
    // slots); W1 joins after, with nothing queued for it.
    let graph = (1..=5).map(|i| NewTask { key: Key { func: READ, token: [i, 1] }, ..node(i, &[], true) }).collect();
    let (rs, out) = h.submit(graph);
    assert_eq!(on(&out, W0).len(), 5);
    assert_eq!(h.ev(Event::TaskStarted { task: rs[0], worker: W0 }), vec![]);
    // Nothing is asked before a run time is known (the gain cannot be
    // weighed).
    assert_eq!(taken_back(&h.join(W1, 1)), vec![]);
    assert_eq!(h.ev(Event::RunTime { task: rs[0], micros: 50_000 }), vec![]);
    let out = h.finish(rs[0], W0, 8);
    // W1 has one idle thread: one run is asked back for it, an unstarted one.
    let asked = taken_back(&out);
    assert_eq!(asked.len(), 1, "{out:?}");
    let (t, from, to) = asked[0];
    assert_eq!((from, to), (W0, W1));
    assert!(rs[1..].contains(&t));
    // Until the answer, nothing more is asked for W1, and the run keeps its
    // slot on W0.
    assert_eq!(h.ev(Event::TaskStarted { task: rs[0], worker: W0 }), vec![]);
    assert_eq!(h.s.processing_on(t), Some(W0));
    let other = *rs[1..].iter().find(|&&r| r != t).unwrap();
    h.ev(Event::TaskStarted { task: other, worker: W0 });
    assert_eq!(h.ev(Event::RunTime { task: other, micros: 50_000 }), vec![]);
    assert_eq!(taken_back(&h.finish(other, W0, 8)), vec![]);
    // Given back: it runs on W1.
    assert_eq!(h.ev(Event::TaskStolen { task: t, from: W0, to: None }), vec![run(t, W1)]);
    assert_eq!(h.s.processing_on(t), Some(W1));
}

#[test]
fn an_ask_answered_by_a_start_frees_the_thief_to_ask_for_another_run() {
    let mut h = taking_back(4);
    h.join(W0, 1);
    let graph = (1..=5).map(|i| NewTask { key: Key { func: READ, token: [i, 1] }, ..node(i, &[], true) }).collect();
    let (rs, _) = h.submit(graph);
    h.join(W1, 1);
    h.ev(Event::TaskStarted { task: rs[0], worker: W0 });
    h.ev(Event::RunTime { task: rs[0], micros: 50_000 });
    let asked = taken_back(&h.finish(rs[0], W0, 8));
    assert_eq!(asked.len(), 1);
    let first = asked[0].0;
    // The run had started by the time the ask arrived (the worker will
    // answer with its result): the news frees the thief, which asks for
    // another at once.
    let out = h.ev(Event::TaskStarted { task: first, worker: W0 });
    let again = taken_back(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert!(again[0].0 != first && again[0].0 != rs[0] && again[0].1 == W0 && again[0].2 == W1);
    // The first's result answers it; nothing more is asked meanwhile.
    assert_eq!(h.finish(first, W0, 8), vec![done(first)]);
    assert_eq!(h.ev(Event::TaskStolen { task: again[0].0, from: W0, to: None }), vec![run(again[0].0, W1)]);
}

#[test]
fn without_take_back_runs_sent_stay_where_they_were_sent() {
    let mut h = weighing(4);
    h.join(W0, 1);
    let graph = (1..=5).map(|i| NewTask { key: Key { func: READ, token: [i, 1] }, ..node(i, &[], true) }).collect();
    let (rs, _) = h.submit(graph);
    h.join(W1, 1);
    h.ev(Event::RunTime { task: rs[0], micros: 50_000 });
    assert_eq!(taken_back(&h.finish(rs[0], W0, 8)), vec![]);
}
