//! Failing tasks: errors and panics fail their future with the task's key
//! and message, dependents fail naming the root cause, the rest goes on.

use std::sync::atomic::{AtomicU32, Ordering};

use shoal::prelude::*;
use shoal::{FutureStatus, TaskFailure};

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn fallible(x: u64) -> Result<u64, String> {
    if x == 13 { Err(format!("unlucky number {x}")) } else { Ok(x) }
}

#[shoal::task]
fn explode(x: u64) -> u64 {
    if x > 0 {
        panic!("boom at {x}");
    }
    x
}

#[shoal::task]
fn io_error(path: String) -> shoal::Result<u64> {
    Ok(std::fs::read(path)?.len() as u64)
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails the first `n` calls (counted across the test binary).
#[shoal::task]
fn flaky(fail_first: u32) -> Result<u32, String> {
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    if call < fail_first { Err(format!("flaky failure {call}")) } else { Ok(call) }
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[test]
fn an_error_fails_its_future_with_key_and_message() {
    let client = Client::threads(2).unwrap();
    let bad = client.submit(fallible, 13).unwrap();
    let err = bad.result().expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains(&bad.key().to_string()), "names the key: {msg}");
    assert!(msg.contains("unlucky number 13"), "carries the message: {msg}");
    match err.task_failure() {
        Some(TaskFailure::Error { key, .. }) => assert_eq!(*key, bad.key()),
        other => panic!("expected an Error failure, got {other:?}"),
    }
    assert!(matches!(bad.status(), FutureStatus::Error(_)));
    let io = client.submit(io_error, "/definitely/not/here".to_string()).unwrap();
    let msg = io.result().expect_err("must fail").to_string();
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn dependents_fail_naming_the_root_cause_and_the_rest_goes_on() {
    let client = Client::threads(2).unwrap();
    let root = client.submit(fallible, 13).unwrap();
    let mid = client.submit(inc, &root).unwrap();
    let leaf = client.submit(inc, &mid).unwrap();
    let unrelated = client.map(fallible, 0..10u64).unwrap();
    let joined = client.submit(total, vec![mid.clone(), client.submit(inc, 1).unwrap()]).unwrap();

    for dependent in [&mid, &leaf, &joined] {
        let err = dependent.result().expect_err("dependent must fail");
        match err.task_failure() {
            Some(TaskFailure::DependencyFailed { key, cause, .. }) => {
                assert_eq!(*key, dependent.key());
                assert_eq!(cause.key(), root.key(), "names the root, not an intermediate");
                assert!(matches!(**cause, TaskFailure::Error { .. }));
            }
            other => panic!("expected DependencyFailed, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("unlucky number 13") && msg.contains(&root.key().to_string()), "{msg}");
    }
    assert_eq!(client.gather(&unrelated).unwrap(), (0..10).collect::<Vec<u64>>());
    // gather raises the first failure.
    assert!(client.gather(&[root.clone(), client.submit(fallible, 1).unwrap()]).is_err());
    // The client is still usable.
    assert_eq!(client.submit(inc, 1).unwrap().result().unwrap(), 2);
}

#[test]
fn a_panic_fails_only_its_future_and_the_workers_survive() {
    let client = Client::threads(2).unwrap();
    let boom = client.map(explode, 1..=8u64).unwrap();
    for f in &boom {
        let err = f.result().expect_err("must fail");
        assert!(matches!(err.task_failure(), Some(TaskFailure::Panic { .. })), "{err}");
        assert!(err.to_string().contains("boom at"), "{err}");
    }
    // Both threads are still there: more work than one thread's worth runs.
    let ok = client.map(inc, 0..1000u64).unwrap();
    assert_eq!(client.gather(&ok).unwrap().len(), 1000);
}

#[test]
fn retries_rerun_a_failing_task_until_it_succeeds_or_they_run_out() {
    let client = Client::threads(1).unwrap();
    // Sequential on one thread; the counter is shared, so compute relative.
    let start = FLAKY_CALLS.load(Ordering::SeqCst);
    let fail_first = start + 2;
    let opts = SubmitOptions::default().retries(2).pure(false);
    let f = client.submit_with(flaky, fail_first, &opts).unwrap();
    assert_eq!(f.result().unwrap(), start + 2, "third call succeeds");

    let start = FLAKY_CALLS.load(Ordering::SeqCst);
    let opts = SubmitOptions::default().retries(1).pure(false);
    let g = client.submit_with(flaky, start + 5, &opts).unwrap();
    let err = g.result().expect_err("runs out of retries");
    assert!(err.to_string().contains(&format!("flaky failure {}", start + 1)), "{err}");
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst) - start, 2, "one run plus one retry");
}
