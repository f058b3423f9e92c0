//! Faults around a worker's life: killed while starting, sent a frame over
//! the limit, and the terminal's Ctrl-C.

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

#[shoal::task]
fn square(x: u64) -> u64 {
    x * x
}

/// The test hook that makes starting workers die before their hello.
const DIE_BEFORE_HELLO: &str = "SHOAL_TEST_DIE_BEFORE_HELLO";

fn start(workers: usize, die: &str) -> shoal::Result<Client> {
    Client::processes_with(
        ProcessesOptions { workers, env: vec![(DIE_BEFORE_HELLO.into(), die.into())], ..ProcessesOptions::default() },
        ClientOptions::default(),
    )
}

#[test]
fn a_worker_killed_during_start_up_is_started_again() {
    // The first worker to start aborts before its hello; the client starts
    // another in its place and comes up whole.
    let marker = std::env::temp_dir().join(format!("shoal-test-die-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let client = start(2, &format!("abort-once:{}", marker.display())).expect("start-up retries the dead worker");
    assert!(marker.exists(), "a worker did die before its hello");
    assert_eq!(client.worker_pids().len(), 2);
    let squares = client.map(square, 0..100u64).unwrap();
    assert_eq!(client.gather(&squares).unwrap(), (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn workers_that_always_die_fail_start_up_without_blaming_init() {
    let err = start(1, "abort").err().expect("no worker can start");
    let msg = err.to_string();
    assert!(msg.contains("died before its handshake") && msg.contains("SIGABRT"), "{msg}");
    assert!(msg.contains("last of 3 attempts"), "{msg}");
    assert!(!msg.contains("shoal::init"), "a crash is not a missing init: {msg}");
}

#[test]
fn a_worker_that_exits_0_without_hello_points_at_init() {
    let err = start(1, "exit0").err().expect("no worker takes the role");
    let msg = err.to_string();
    assert!(msg.contains("exited with status 0") && msg.contains("must call shoal::init() first"), "{msg}");
}
