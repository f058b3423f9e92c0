//! Priorities, cancellation and completion order.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{FutureStatus, TaskFailure};

static GATE_OPEN: AtomicBool = AtomicBool::new(false);
static RUN_ORDER: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Holds its thread until the gate opens (at most a few seconds).
#[shoal::task]
fn blocker(_x: u64) -> u64 {
    let start = Instant::now();
    while !GATE_OPEN.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

#[shoal::task]
fn record(x: u64) -> u64 {
    RUN_ORDER.lock().unwrap().push(x);
    x
}

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// One test for the gate, so the two uses of it cannot interleave.
#[test]
fn priority_orders_queued_tasks_and_cancel_stops_queued_ones() {
    let client = Client::threads(1).unwrap();
    GATE_OPEN.store(false, Ordering::SeqCst);
    let hold = client.submit(blocker, 1).unwrap();
    // The one thread is busy and its spare slot is taken by the filler:
    // everything after it waits in the scheduler's priority queue.
    let filler = client.submit(record, 0).unwrap();
    let low = client.submit_with(record, 1, &SubmitOptions::default().priority(-5)).unwrap();
    let mid = client.submit(record, 2).unwrap();
    let high = client.submit_with(record, 3, &SubmitOptions::default().priority(10)).unwrap();
    let doomed = client.submit(record, 4).unwrap();
    let doomed_child = client.submit(inc, &doomed).unwrap();
    doomed.cancel();
    assert_eq!(doomed.status(), FutureStatus::Cancelled);
    GATE_OPEN.store(true, Ordering::SeqCst);
    client.gather(&[hold, filler, low, mid, high]).unwrap();

    let order = RUN_ORDER.lock().unwrap().clone();
    let pos = |x: u64| order.iter().position(|&v| v == x).unwrap_or_else(|| panic!("{x} did not run: {order:?}"));
    assert!(pos(3) < pos(2) && pos(2) < pos(1), "high, then default, then low: {order:?}");
    assert!(!order.contains(&4), "a cancelled task does not run: {order:?}");

    let err = doomed.result().expect_err("cancelled");
    assert!(matches!(err.task_failure(), Some(TaskFailure::Cancelled { .. })), "{err}");
    let err = doomed_child.result().expect_err("dependent of a cancelled task fails");
    assert!(err.to_string().contains("cancelled"), "{err}");
}

static FINISHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sleeps, then returns its place in the order of finishing.
#[shoal::task]
fn sleep_then_rank(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    FINISHED.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn as_completed_yields_in_finishing_order() {
    let client = Client::threads(2).unwrap();
    let opts = SubmitOptions::default().pure(false);
    let futures: Vec<shoal::Future<u64>> =
        [300u64, 10, 150, 60].iter().map(|&ms| client.submit_with(sleep_then_rank, ms, &opts).unwrap()).collect();
    let ranks: Vec<u64> = shoal::as_completed(futures).map(|f| f.result().unwrap()).collect();
    let mut sorted = ranks.clone();
    sorted.sort_unstable();
    assert_eq!(ranks, sorted, "yielded in the order the tasks finished");
    assert_eq!(ranks.len(), 4);
}

#[test]
fn wait_and_done() {
    let client = Client::threads(2).unwrap();
    let slow = client.submit(sleepy, 200).unwrap();
    assert!(!slow.done());
    assert!(!slow.wait_timeout(Duration::from_millis(20)).unwrap());
    shoal::wait(std::slice::from_ref(&slow)).unwrap();
    assert!(slow.done());
}
