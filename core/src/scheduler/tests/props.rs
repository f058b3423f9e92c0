//! Property tests: random graphs, run by the simulator in a random (seeded)
//! order, with and without injected faults. The simulator checks the
//! scheduler's promises after every step (see [`crate::scheduler::sim`]);
//! these tests check the outcomes.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::scheduler::sim::Sim;

/// A random graph: each node's inputs (indices of earlier nodes, repeats
/// allowed) and whether the client wants it.
type Spec = Vec<(Vec<usize>, bool)>;

const MAX_NODES: usize = 60;
const MAX_INPUTS: usize = 4;

fn dag() -> impl Strategy<Value = Spec> {
    prop::collection::vec(
        (prop::collection::vec(any::<Index>(), 0..MAX_INPUTS), prop::bool::weighted(0.3)),
        1..MAX_NODES,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (inputs, wanted))| {
                let inputs = if i == 0 { Vec::new() } else { inputs.iter().map(|x| x.index(i)).collect() };
                (inputs, wanted)
            })
            .collect()
    })
}

fn graph(spec: &Spec, retries: u32) -> Vec<NewTask> {
    spec.iter()
        .enumerate()
        .map(|(i, (inputs, wanted))| NewTask { retries, ..node(i as u64, inputs, *wanted) })
        .collect()
}

/// Nodes a wanted node needs (itself included): those that must run.
fn needed(spec: &Spec) -> Vec<bool> {
    let mut needed: Vec<bool> = spec.iter().map(|(_, wanted)| *wanted).collect();
    for i in (0..spec.len()).rev() {
        if needed[i] {
            for &j in &spec[i].0 {
                needed[j] = true;
            }
        }
    }
    needed
}

/// Nodes that depend on `f`, directly or not, and `f` itself.
fn downstream(spec: &Spec, f: usize) -> Vec<bool> {
    let mut down = vec![false; spec.len()];
    down[f] = true;
    for i in f + 1..spec.len() {
        down[i] = spec[i].0.iter().any(|&j| down[j]);
    }
    down
}

fn config(extra_slots_per_thread: u32, max_worker_deaths: u32) -> SchedulerConfig {
    SchedulerConfig { extra_slots_per_thread, max_worker_deaths, recall: false, ..SchedulerConfig::default() }
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cases(192))]

    /// Without faults every needed node runs exactly once (others never),
    /// however many runs workers give back (steals), every wanted node is
    /// reported done once, and once the client lets go nothing is left.
    #[test]
    fn without_faults_every_needed_task_runs_once(
        spec in dag(),
        seed in any::<u64>(),
        workers in 1..=3u32,
        nthreads in 1..=2u32,
        extra in 0..=1u32,
        steal_percent in prop_oneof![Just(0u64), 1..=50u64],
    ) {
        let mut sim = Sim::new(config(extra, 3), workers, nthreads, seed);
        sim.steal_percent = steal_percent;
        let ids: Vec<TaskId> = sim.submit(graph(&spec, 0)).iter().map(|s| s.id).collect();
        sim.check();
        sim.run(0, 0);
        let needed = needed(&spec);
        for (i, &t) in ids.iter().enumerate() {
            prop_assert_eq!(sim.runs.get(&t).copied().unwrap_or(0), u32::from(needed[i]), "node {}", i);
            if spec[i].1 {
                prop_assert_eq!(sim.done.get(&t).copied(), Some(1), "node {}", i);
            }
        }
        prop_assert!(sim.failed.is_empty());
        sim.release_all();
        sim.check();
        sim.check_empty();
    }

    /// Submitting the same graph twice at once shares every task.
    #[test]
    fn resubmitting_pure_keys_shares_the_tasks(spec in dag(), seed in any::<u64>()) {
        let mut sim = Sim::new(config(1, 3), 2, 1, seed);
        let first = sim.submit(graph(&spec, 0));
        let second = sim.submit(graph(&spec, 0));
        let needed = needed(&spec);
        for i in 0..spec.len() {
            if needed[i] {
                prop_assert_eq!(second[i], Submitted { id: first[i].id, new: false });
            }
        }
        sim.run(0, 0);
        for (i, s) in first.iter().enumerate() {
            prop_assert_eq!(sim.runs.get(&s.id).copied().unwrap_or(0), u32::from(needed[i]));
        }
        sim.release_all();
        sim.check_empty();
    }

    /// One task always fails: exactly it and what depends on it fail, each
    /// naming it as the root; every other wanted task succeeds.
    #[test]
    fn a_failure_reaches_exactly_the_tasks_downstream(
        spec in dag(),
        seed in any::<u64>(),
        f in any::<Index>(),
        retries in 0..=2u32,
        workers in 1..=3u32,
    ) {
        let f = f.index(spec.len());
        let mut sim = Sim::new(config(1, 3), workers, 1, seed);
        sim.faults.failing.insert(key(f as u64));
        let ids: Vec<TaskId> = sim.submit(graph(&spec, retries)).iter().map(|s| s.id).collect();
        sim.run(0, 0);
        let down = downstream(&spec, f);
        let needed = needed(&spec);
        let root = TaskFailure::error(key(f as u64), "injected error");
        for (i, &t) in ids.iter().enumerate() {
            if !spec[i].1 {
                continue;
            }
            if down[i] {
                let failures = sim.failed.get(&t).cloned().unwrap_or_default();
                prop_assert_eq!(failures.len(), 1, "node {}", i);
                let expected = if i == f {
                    root.clone()
                } else {
                    TaskFailure::DependencyFailed { key: key(i as u64), item: None, cause: Arc::new(root.clone()) }
                };
                prop_assert_eq!(&*failures[0], &expected);
                prop_assert!(!sim.done.contains_key(&t));
            } else {
                prop_assert_eq!(sim.done.get(&t).copied(), Some(1), "node {}", i);
                prop_assert!(!sim.failed.contains_key(&t));
            }
        }
        let f_runs = sim.runs.get(&ids[f]).copied().unwrap_or(0);
        prop_assert_eq!(f_runs, if needed[f] { retries + 1 } else { 0 });
        sim.release_all();
        sim.check_empty();
    }

    /// Flaky tasks (a few panics, then success) with enough retries all
    /// succeed.
    #[test]
    fn retries_absorb_flaky_runs(spec in dag(), seed in any::<u64>(), flaky in prop::collection::vec((any::<Index>(), 1..=2u32), 0..8)) {
        let mut sim = Sim::new(config(0, 3), 2, 2, seed);
        for (i, n) in flaky {
            sim.faults.flaky.insert(key(i.index(spec.len()) as u64), n);
        }
        let ids: Vec<TaskId> = sim.submit(graph(&spec, 2)).iter().map(|s| s.id).collect();
        sim.run(0, 0);
        for (i, &t) in ids.iter().enumerate() {
            if spec[i].1 {
                prop_assert_eq!(sim.done.get(&t).copied(), Some(1), "node {}", i);
            }
        }
        prop_assert!(sim.failed.is_empty());
        sim.release_all();
        sim.check_empty();
    }

    /// Workers die now and then (each replaced): lost results are recomputed
    /// and every wanted result still arrives.
    #[test]
    fn wanted_results_survive_worker_deaths(
        spec in dag(),
        seed in any::<u64>(),
        workers in 1..=3u32,
        kill_percent in 2..30u64,
        max_kills in 1..6u32,
    ) {
        let mut sim = Sim::new(config(1, 1_000), workers, 1, seed);
        let ids: Vec<TaskId> = sim.submit(graph(&spec, 0)).iter().map(|s| s.id).collect();
        sim.run(kill_percent, max_kills);
        for (i, &t) in ids.iter().enumerate() {
            if spec[i].1 {
                prop_assert!(sim.done.get(&t).copied().unwrap_or(0) >= 1, "node {}", i);
                prop_assert_eq!(sim.sched.state(t), Some(TaskState::Memory), "node {}", i);
            }
        }
        prop_assert!(sim.failed.is_empty());
        sim.release_all();
        sim.check_empty();
    }

    /// With few deaths allowed, a wanted task either succeeds or fails with
    /// `KilledWorker` of itself or of a task it depends on.
    #[test]
    fn killed_workers_fail_only_what_they_ran_and_what_needs_it(
        spec in dag(),
        seed in any::<u64>(),
        max_deaths in 1..=2u32,
        kill_percent in 10..40u64,
    ) {
        let mut sim = Sim::new(config(1, max_deaths), 2, 1, seed);
        let ids: Vec<TaskId> = sim.submit(graph(&spec, 0)).iter().map(|s| s.id).collect();
        sim.run(kill_percent, 8);
        for (i, &t) in ids.iter().enumerate() {
            if !spec[i].1 {
                continue;
            }
            match sim.sched.state(t) {
                Some(TaskState::Memory) => prop_assert!(sim.done.contains_key(&t)),
                Some(TaskState::Erred) => {
                    let failure = sim.sched.failure(t).unwrap();
                    let TaskFailure::KilledWorker { key: culprit, attempts, .. } = failure.root().clone() else {
                        return Err(TestCaseError::fail(format!("node {i}: {failure:?}")));
                    };
                    prop_assert_eq!(attempts, max_deaths);
                    let culprit = culprit.token[0] as usize;
                    prop_assert!(downstream(&spec, culprit)[i], "node {} failed for unrelated {}", i, culprit);
                    prop_assert!(sim.failed.contains_key(&t));
                }
                other => return Err(TestCaseError::fail(format!("node {i} ended {other:?}"))),
            }
        }
        sim.release_all();
        sim.check_empty();
    }

    /// Everything at once, in random order: failures, retries, deaths,
    /// cancellations, futures dropped early, a second graph on top of the
    /// first. The simulator's checks must hold throughout, and once the
    /// client lets go, nothing may be left.
    #[test]
    fn chaos_keeps_the_invariants_and_leaks_nothing(
        spec in dag(),
        second in dag(),
        seed in any::<u64>(),
        failing in prop::collection::vec(any::<Index>(), 0..3),
        workers in 1..=3u32,
        extra in 0..=1u32,
        max_deaths in 1..=3u32,
        recall in any::<bool>(),
        weigh_transfers in any::<bool>(),
        take_back in any::<bool>(),
    ) {
        let config = SchedulerConfig { recall, weigh_transfers, take_back, ..config(extra, max_deaths) };
        let mut sim = Sim::new(config, workers, 1, seed);
        for f in &failing {
            sim.faults.failing.insert(key(f.index(spec.len()) as u64));
        }
        let first: Vec<TaskId> = sim.submit(graph(&spec, 1)).iter().map(|s| s.id).collect();
        let mut submitted_second = false;
        let mut kills = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            let roll = sim.rng.below(100);
            if roll < 3 && kills < 4 {
                kills += 1;
                sim.kill_one();
            } else if roll < 8 {
                // Drop a random future.
                let mut held: Vec<TaskId> = sim.refs.keys().copied().collect();
                held.sort();
                if !held.is_empty() {
                    let t = held[sim.rng.below(held.len())];
                    sim.release(t);
                }
            } else if roll < 11 {
                let t = first[sim.rng.below(first.len())];
                sim.event(Event::Cancel { task: t });
            } else if roll < 13 {
                // Another future on a task the client holds.
                let mut held: Vec<TaskId> = sim.refs.keys().copied().collect();
                held.sort();
                if !held.is_empty() {
                    let t = held[sim.rng.below(held.len())];
                    *sim.refs.get_mut(&t).unwrap() += 1;
                    sim.event(Event::ClientRetained { task: t });
                }
            } else if roll < 14 {
                // A worker answers an ask for a run back, or gives one back
                // on its own.
                if !sim.answer_take_back() {
                    sim.steal_one();
                }
            } else if roll < 15 {
                if sim.rng.below(2) == 0 {
                    let extra = sim.rng.below(3) as u32;
                    sim.event(Event::Saturation { extra_slots_per_thread: extra });
                } else {
                    // Over or under the memory limit: paused, the graph
                    // still ends (one run at a time), as `sim.run` checks.
                    let paused = sim.rng.below(2) == 0;
                    sim.event(Event::Pause { paused });
                }
            } else if roll < 17 && !submitted_second {
                submitted_second = true;
                let graph = second_graph(&mut sim, &second, spec.len());
                sim.submit(graph);
            } else if !sim.step() && steps > 20 {
                break;
            }
            sim.check();
        }
        sim.release_all();
        sim.check();
        sim.run(5, 2);
        sim.check_empty();
    }
}

/// A graph for a second submission: some nodes reuse keys of the first
/// (merged while alive), some inputs are tasks the client holds futures on.
fn second_graph(sim: &mut Sim, spec: &Spec, first_len: usize) -> Vec<NewTask> {
    let mut held: Vec<TaskId> = sim.refs.keys().copied().collect();
    held.sort();
    let mut used_keys = HashSet::new();
    spec.iter()
        .enumerate()
        .map(|(i, (inputs, wanted))| {
            let reuse = sim.rng.chance(20);
            let k = if reuse { sim.rng.below(first_len) as u64 } else { 1_000 + i as u64 };
            let k = if used_keys.insert(k) { k } else { 1_000 + i as u64 };
            let mut deps: Vec<Dep> = inputs.iter().map(|&j| Dep::Node(j)).collect();
            if !held.is_empty() && sim.rng.chance(30) {
                deps.push(Dep::Task(held[sim.rng.below(held.len())]));
            }
            NewTask { key: key(k), deps, wanted: *wanted, priority: 0, retries: 0 }
        })
        .collect()
}
