//! The client API in the threads mode: submit, map, gather, dependencies,
//! pure keys, options, futures' lifecycle.

use std::sync::atomic::{AtomicUsize, Ordering};

use shoal::prelude::*;

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[shoal::task]
fn nothing() -> u64 {
    42
}

static COUNTED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[shoal::task]
fn counted(x: u64) -> u64 {
    COUNTED_RUNS.fetch_add(1, Ordering::SeqCst);
    x * 2
}

#[test]
fn submit_with_a_future_argument_waits_for_it() {
    let client = Client::threads(2).unwrap();
    let a = client.submit(inc, 1).unwrap();
    let b = client.submit(add, (&a, 10)).unwrap();
    let c = client.submit(add, (a.clone(), b.clone())).unwrap();
    assert_eq!(c.result().unwrap(), 2 + 12);
    assert_eq!(b.result().unwrap(), 12);
    assert!(a.done());
    assert_eq!(a.status(), shoal::FutureStatus::Finished);
}

#[test]
fn map_and_gather_keep_order() {
    let client = Client::threads(2).unwrap();
    let futures = client.map(inc, 0..10_000u64).unwrap();
    let values = client.gather(&futures).unwrap();
    assert_eq!(values, (1..=10_000).collect::<Vec<u64>>());
    let pairs = client.map(add, (0..100u64).map(|i| (i, 1000))).unwrap();
    assert_eq!(client.gather(&pairs).unwrap()[7], 1007);
    let zero = client.submit(nothing, ()).unwrap();
    assert_eq!(zero.result().unwrap(), 42);
}

#[test]
fn a_vec_parameter_takes_a_list_of_futures() {
    let client = Client::threads(2).unwrap();
    let parts = client.map(inc, 0..100u64).unwrap();
    let sum = client.submit(total, &parts).unwrap();
    assert_eq!(sum.result().unwrap(), 5050);
    // A plain Vec is a value, not a list of dependencies.
    let direct = client.submit(total, vec![1, 2, 3]).unwrap();
    assert_eq!(direct.result().unwrap(), 6);
}

#[test]
fn pure_calls_share_a_key_and_run_once_impure_calls_do_not() {
    let client = Client::threads(2).unwrap();
    let before = COUNTED_RUNS.load(Ordering::SeqCst);
    let a = client.submit(counted, 7_000_001).unwrap();
    let b = client.submit(counted, 7_000_001).unwrap();
    assert_eq!(a.key(), b.key());
    assert_eq!((a.result().unwrap(), b.result().unwrap()), (14_000_002, 14_000_002));
    assert_eq!(COUNTED_RUNS.load(Ordering::SeqCst) - before, 1, "one run for two equal pure calls");

    let impure = SubmitOptions::default().pure(false);
    let c = client.submit_with(counted, 7_000_001, &impure).unwrap();
    let d = client.submit_with(counted, 7_000_001, &impure).unwrap();
    assert_ne!(c.key(), d.key());
    assert_ne!(c.key(), a.key());
    client.gather(&[c, d]).unwrap();
    assert_eq!(COUNTED_RUNS.load(Ordering::SeqCst) - before, 3);

    let other = client.submit(counted, 7_000_002).unwrap();
    assert_ne!(other.key(), a.key(), "different arguments, different keys");
    assert!(a.key().to_string().starts_with("counted-"), "{}", a.key());
}

#[test]
fn a_released_result_asked_for_again_is_recomputed() {
    let client = Client::threads(2).unwrap();
    let x = client.submit(inc, 900).unwrap();
    let y = client.submit(add, (&x, 1)).unwrap();
    assert_eq!(y.result().unwrap(), 902);
    // x's result is released now (nothing needs it), but its record stays
    // while y lives: an equal pure call must recompute it.
    drop(x);
    let again = client.submit(inc, 900).unwrap();
    assert_eq!(again.result().unwrap(), 901);
    assert_eq!(client.submit(add, (&again, 1)).unwrap().result().unwrap(), 902);
}

#[test]
fn a_dropped_client_leaves_finished_futures_readable() {
    let client = Client::threads(1).unwrap();
    let f = client.submit(inc, 41).unwrap();
    f.wait().unwrap();
    drop(client);
    assert_eq!(f.result().unwrap(), 42);
}

#[test]
fn futures_from_another_client_are_refused() {
    let one = Client::threads(1).unwrap();
    let two = Client::threads(1).unwrap();
    let f = one.submit(inc, 1).unwrap();
    let err = two.submit(add, (&f, 1)).expect_err("must be refused");
    assert!(err.to_string().contains("another Client"), "{err}");
}

#[test]
fn zero_workers_and_a_missing_spill_dir_are_refused_saying_so() {
    let message = |r: shoal::Result<Client>| match r {
        Err(shoal::Error::InvalidOption(m)) => m,
        Err(other) => panic!("expected InvalidOption, got {other}"),
        Ok(_) => panic!("expected InvalidOption, got a client"),
    };
    assert!(message(Client::threads(0)).contains("at least one worker thread"));
    assert!(message(Client::processes(0)).contains("at least one worker process"));
    let no_threads = shoal::ProcessesOptions { workers: 1, threads_per_worker: 0, ..Default::default() };
    assert!(message(Client::processes_with(no_threads, Default::default())).contains("threads_per_worker is 0"));
    let missing = std::env::temp_dir().join(format!("shoal-no-such-dir-{}", std::process::id()));
    let options = shoal::ProcessesOptions { workers: 1, spill_dir: Some(missing.clone()), ..Default::default() };
    let m = message(Client::processes_with(options, Default::default()));
    assert!(m.contains("not an existing directory") && m.contains(&missing.display().to_string()), "{m}");
    assert!(!missing.exists(), "not created");
}

/// Gates for `gated`: item `i` waits until `GATES[i]` is open.
static GATES: [std::sync::atomic::AtomicBool; 3] = [const { std::sync::atomic::AtomicBool::new(false) }; 3];

#[shoal::task]
fn gated(i: u64) -> shoal::Result<u64> {
    if i == 1 {
        return Err(shoal::Error::msg("item 1 fails"));
    }
    while !GATES[i as usize].load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(i)
}

/// `gather` waits on a long list by sleeping until its last unfinished task
/// ends; a failure must still end the wait as soon as everything before the
/// failed item is done, not when the slow items after it end.
#[test]
fn gather_reports_a_failure_without_waiting_for_the_items_after_it() {
    let client = Client::threads(3).unwrap();
    let futures = client.map(gated, 0..3u64).unwrap();
    let opener = std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        GATES[0].store(true, Ordering::SeqCst);
    });
    // Item 2 opens only after gather returned, or after 20 s (then the
    // assertion below fails instead of the test hanging).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = rx.recv_timeout(std::time::Duration::from_secs(20)).is_err();
        GATES[2].store(true, Ordering::SeqCst);
        timed_out
    });
    let err = client.gather(&futures).unwrap_err();
    tx.send(()).unwrap();
    assert!(!watchdog.join().unwrap(), "gather waited for item 2, after the failed item 1");
    opener.join().unwrap();
    assert!(err.to_string().contains("item 1 fails"), "{err}");
}
