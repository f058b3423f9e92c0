//! Values over 2 GiB, more than an rkyv archive can hold (rkyv's relative
//! pointers are 32-bit): wherever an archive is needed they fail with an
//! error that names the limit and what to do — never a panic, never a dead
//! worker — and where none is needed (a by-value consumer in the threads
//! mode) they work.
//!
//! A binary of its own, its tests one at a time ([`SERIAL`]): each makes a
//! 2 GiB value (zeros, so its pages are only mapped), and a by-value
//! consumer in the threads mode a real 2 GiB copy.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shoal::prelude::*;
use shoal::{ClientOptions, Error, FutureStatus, ProcessesOptions, TaskFailure};

/// 2 GiB + 1 MiB: just over the limit.
const BIG: usize = (2 << 30) + (1 << 20);

/// What every such failure says: the limit, and what to do.
const LIMIT: &str = "values over 2 GiB cannot be archived";
const ADVICE: &str = "split it into chunks under 2 GiB";

/// Zeros: `calloc` maps them lazily, so a 2 GiB value costs neither the
/// time nor the memory of writing it until something copies it.
#[shoal::task]
fn big(n: u64) -> Vec<u8> {
    vec![0u8; n as usize]
}

#[shoal::task]
fn owned_len(data: Vec<u8>) -> u64 {
    data.len() as u64
}

#[shoal::task]
fn archived_len(data: &Archived<Vec<u8>>) -> u64 {
    data.len() as u64
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn processes(n: usize) -> Client {
    Client::processes_with(
        ProcessesOptions { workers: n, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

/// The message of a task error (`TaskFailure::Error`, not a panic) about
/// the task `key`.
fn error_message(err: &Error, key: shoal::Key) -> String {
    match err.task_failure() {
        Some(TaskFailure::Error { key: k, error, .. }) if *k == key => error.message().to_string(),
        other => panic!("expected an error of task {key}, got {other:?}"),
    }
}

fn assert_explains_the_limit(message: &str) {
    assert!(message.contains(LIMIT) && message.contains(ADVICE), "{message}");
    assert!(message.contains(&format!("at least {BIG} bytes")), "the size it needs: {message}");
}

#[test]
fn threads_mode_a_by_value_consumer_works_an_archived_one_fails_clearly() {
    let _serial = serial();
    let client = Client::threads(2).unwrap();
    let data = client.submit(big, BIG as u64).unwrap();
    data.wait().unwrap();
    // By value: a clone of the producer's `Vec`, no archive involved.
    assert_eq!(client.submit(owned_len, &data).unwrap().result().unwrap(), BIG as u64);
    // As `&Archived<Vec<u8>>`: the archive cannot be made; that consumer
    // fails, with the reason, and so does the next one (the error is kept).
    for _ in 0..2 {
        let archived = client.submit(archived_len, &data).unwrap();
        let err = archived.result().expect_err("an archive over 2 GiB cannot be made");
        let message = error_message(&err, archived.key());
        assert_explains_the_limit(&message);
        assert!(message.contains("could not archive a alloc::vec::Vec<u8>"), "names the type: {message}");
    }
    // The producer's result is untouched, and the client goes on.
    assert_eq!(data.status(), FutureStatus::Finished);
    drop(data);
    assert_eq!(client.submit(archived_len, vec![2u8; 10]).unwrap().result().unwrap(), 10);
}

#[test]
fn processes_mode_the_producer_fails_clearly_and_its_worker_lives_on() {
    let _serial = serial();
    let client = processes(1);
    let workers = client.worker_pids();
    let data = client.submit(big, BIG as u64).unwrap();
    let consumer = client.submit(owned_len, &data).unwrap();
    assert!(data.wait_timeout(Duration::from_secs(60)).unwrap(), "the producer finished");
    let FutureStatus::Error(failure) = data.status() else { panic!("a result over 2 GiB must fail") };
    let message = error_message(&Error::Task(failure), data.key());
    assert_explains_the_limit(&message);
    assert!(message.contains("its result could not be stored"), "{message}");
    // Its dependents fail with it, naming it.
    let err = consumer.result().expect_err("its input failed");
    assert!(
        matches!(err.task_failure(), Some(TaskFailure::DependencyFailed { cause, .. }) if cause.key() == data.key())
    );
    // The same worker (no crash, no replacement) serves the next tasks, a
    // segment among them.
    assert_eq!(client.worker_pids(), workers, "the worker lives on");
    let fine = client.submit(big, 100_000).unwrap();
    assert_eq!(client.submit(archived_len, &fine).unwrap().result().unwrap(), 100_000);
    assert_eq!(client.worker_pids(), workers);
}

#[test]
fn a_literal_argument_over_2_gib() {
    let _serial = serial();
    // Processes mode: it must be archived to reach a worker, so `submit`
    // says why it cannot be (it used to panic hashing the argument).
    let client = processes(1);
    let err = client.submit(owned_len, vec![0u8; BIG]).expect_err("it cannot be sent to a worker");
    assert!(matches!(err, Error::Message(_)), "{err:?}");
    assert_explains_the_limit(&err.to_string());
    assert_eq!(client.submit(owned_len, vec![1u8; 10]).unwrap().result().unwrap(), 10, "the client goes on");
    drop(client);
    // Threads mode: no archive needed for a by-value parameter (the call's
    // key is unique instead of a hash of the bytes).
    let client = Client::threads(1).unwrap();
    assert_eq!(client.submit(owned_len, vec![0u8; BIG]).unwrap().result().unwrap(), BIG as u64);
}
