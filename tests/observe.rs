//! Seeing what runs: the progress counter (finished tasks in any order,
//! every task of a computed graph), `Client::status()` from the driver's
//! task events, `FutureStatus` queued or running, and the start order of
//! `map` items — in the threads and processes modes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::prelude::*;
use shoal::{ClientOptions, FutureStatus, ProcessesOptions, ProgressBar, ProgressUpdate};

static FIRST_DONE: AtomicBool = AtomicBool::new(false);

/// Item 0 sleeps long, the others briefly: they finish out of order.
#[shoal::task]
fn slow_first(i: u64) -> u64 {
    if i == 0 {
        std::thread::sleep(Duration::from_millis(600));
        FIRST_DONE.store(true, Ordering::SeqCst);
    } else {
        std::thread::sleep(Duration::from_millis(10));
    }
    i
}

#[shoal::task]
fn leaf(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(8));
    i
}

#[shoal::task]
fn plus(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::task]
fn maybe(i: u64) -> Result<u64, String> {
    if i.is_multiple_of(4) { Err(format!("{i} is a multiple of 4")) } else { Ok(i) }
}

static GATE: AtomicBool = AtomicBool::new(false);

#[shoal::task(impure)]
fn held(i: u64) -> u64 {
    while !GATE.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    i
}

static STARTS: AtomicUsize = AtomicUsize::new(0);
static START_ORDER: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[shoal::task]
fn note_start(i: u64) -> u64 {
    STARTS.fetch_add(1, Ordering::SeqCst);
    START_ORDER.lock().unwrap().push(i);
    std::thread::sleep(Duration::from_millis(3));
    i
}

/// Every progress update, and whether item 0 of `slow_first` had finished.
type Seen = Arc<Mutex<Vec<(ProgressUpdate, bool)>>>;

/// A client that hands every progress update to a list.
fn recording(n: usize) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let options = ClientOptions::default().progress(ProgressBar::Callback(Arc::new(move |u: &ProgressUpdate| {
        sink.lock().unwrap().push((*u, FIRST_DONE.load(Ordering::SeqCst)));
    })));
    (Client::threads_with(n, options).unwrap(), seen)
}

#[test]
fn progress_counts_tasks_finished_out_of_order() {
    let (client, seen) = recording(2);
    let futures = client.map(slow_first, 0..30u64).unwrap();
    let values = client.gather(&futures).unwrap();
    assert_eq!(values, (0..30).collect::<Vec<_>>());
    let seen = seen.lock().unwrap();
    // While item 0 still ran, the count rose with the items behind it (the
    // in-order prefix stayed at 0 all that time).
    let best_before_first = seen.iter().filter(|(_, first_done)| !first_done).map(|(u, _)| u.done).max();
    assert!(
        best_before_first.is_some_and(|d| d >= 10),
        "finished items behind a slow first one are counted: {best_before_first:?} in {:?}",
        seen.iter().map(|(u, _)| u.done).collect::<Vec<_>>()
    );
    assert!(seen.windows(2).all(|w| w[0].0.done <= w[1].0.done), "the count never goes back");
    let last = seen.last().unwrap().0;
    assert_eq!((last.done, last.total), (30, 30));
    assert!(
        seen.iter().any(|(u, _)| u.done > 0 && u.done < u.total && u.eta.is_some_and(|e| e > Duration::ZERO)),
        "an ETA from the observed rate while tasks remain"
    );
}

/// A pairwise sum over `leaves` leaves: `2 * leaves - 1` tasks.
fn tree(leaves: u64) -> Lazy<u64> {
    let mut level: Vec<Lazy<u64>> = (0..leaves).map(|i| leaf.lazy(i)).collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| plus.lazy((&p[0], &p[1]))).collect();
    }
    level.pop().unwrap()
}

#[test]
fn lazy_compute_and_compute_values_count_every_task_of_the_graph() {
    let (client, seen) = recording(2);
    assert_eq!(tree(64).compute(&client).unwrap(), (0..64).sum::<u64>());
    {
        let seen = seen.lock().unwrap();
        let last = seen.last().expect("Lazy::compute shows progress").0;
        assert_eq!((last.done, last.total), (127, 127), "every task of the graph, not 0/1");
        assert!(seen.iter().any(|(u, _)| u.done > 1 && u.done < 127), "intermediate counts were shown");
        seen.len()
    };
    seen.lock().unwrap().clear();
    let values = client.compute_values(&[tree(16), tree(8)]).unwrap();
    assert_eq!(values, vec![(0..16).sum::<u64>(), (0..8).sum::<u64>()]);
    let last = seen.lock().unwrap().last().expect("compute_values shows progress").0;
    // tree(8) is the first half of tree(16): equal lazy calls are one task.
    assert_eq!((last.done, last.total), (31, 31));
}

#[test]
fn status_counts_runs_and_live_tasks_per_task_name() {
    let client = Client::local_with(ClientOptions::default().progress(ProgressBar::Never)).unwrap();
    let futures = client.map(maybe, 0..40u64).unwrap();
    shoal::wait(&futures).unwrap();
    let status = client.status();
    let name = status.name("maybe").expect("the task name is listed");
    assert_eq!((name.done, name.failed), (30, 10));
    assert_eq!((name.live.memory, name.live.erred), (30, 10), "live futures hold 30 results and 10 failures");
    assert_eq!(status.tasks.total(), 40);
    drop(futures);
    let status = client.status();
    assert_eq!(status.tasks.total(), 0, "released futures leave no live task");
    assert_eq!(status.name("maybe").map(|n| (n.done, n.failed)), Some((30, 10)), "runs stay counted");
}

#[test]
fn future_status_tells_queued_from_running() {
    let client = Client::threads(1).unwrap();
    // One thread takes the first run; the rest wait in the scheduler's
    // queue (the threads mode keeps no run queued beyond its threads).
    let futures = client.map(held, 0..4u64).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while futures[0].status() != FutureStatus::Running && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(futures[0].status(), FutureStatus::Running);
    assert_eq!(futures[3].status(), FutureStatus::Queued);
    let status = client.status();
    assert_eq!((status.tasks.processing, status.tasks.queued), (1, 3));
    assert_eq!(futures[1].status(), FutureStatus::Queued);
    GATE.store(true, Ordering::SeqCst);
    shoal::wait(&futures).unwrap();
    assert!(futures.iter().all(|f| f.status() == FutureStatus::Finished));
}

#[test]
fn map_items_start_in_submission_order_in_the_threads_mode() {
    let client = Client::threads(2).unwrap();
    let futures = client.map(note_start, 0..200u64).unwrap();
    client.gather(&futures).unwrap();
    let order = START_ORDER.lock().unwrap().clone();
    assert_eq!(order.len(), 200);
    // Two threads start items two at a time: an item may start before its
    // neighbour, never long after the items behind it.
    let out_of_order: Vec<(usize, u64)> =
        order.iter().enumerate().filter(|&(pos, &i)| (pos as i64 - i as i64).abs() > 2).map(|(p, &i)| (p, i)).collect();
    assert!(out_of_order.is_empty(), "items started far from their place: {out_of_order:?} in {order:?}");
}

#[test]
fn status_and_progress_in_the_processes_mode() {
    let seen: Arc<Mutex<Vec<ProgressUpdate>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let options = ClientOptions::default()
        .progress(ProgressBar::Callback(Arc::new(move |u: &ProgressUpdate| sink.lock().unwrap().push(*u))));
    let client =
        Client::processes_with(ProcessesOptions { workers: 2, ..ProcessesOptions::default() }, options).unwrap();
    assert_eq!(tree(32).compute(&client).unwrap(), (0..32).sum::<u64>());
    let last = *seen.lock().unwrap().last().expect("progress shown");
    assert_eq!((last.done, last.total), (63, 63));
    let status = client.status();
    assert_eq!(status.name("leaf").map(|n| n.done), Some(32));
    assert_eq!(status.name("plus").map(|n| n.done), Some(31));
    assert!(status.name("leaf").is_some_and(|n| n.busy >= Duration::from_millis(32 * 8)), "{status:?}");
}
