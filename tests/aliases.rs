//! A task may return one of its inputs as its result (`Alias<T>`, Dask's
//! graph alias): the dependents and the client get that input, in both
//! modes; an alias of a list argument, or of a missing one, fails the task
//! with an error that says so. (That the threads mode copies nothing is in
//! `zero_copy_threads.rs`.)

use shoal::prelude::*;
use shoal::{Alias, TaskFailure};

#[shoal::task]
fn bytes(n: u64, seed: u64) -> Vec<u8> {
    vec![seed as u8; n as usize]
}

/// The larger of two inputs, passed on as it is.
#[shoal::task]
fn larger(a: &Archived<Vec<u8>>, b: &Archived<Vec<u8>>) -> Alias<Vec<u8>> {
    if a.len() >= b.len() { Alias::input(0) } else { Alias::input(1) }
}

/// A fallible alias.
#[shoal::task]
fn checked(data: &Archived<Vec<u8>>, limit: u64) -> Result<Alias<Vec<u8>>, String> {
    if data.len() as u64 > limit { Err(format!("{} bytes, over {limit}", data.len())) } else { Ok(Alias::input(0)) }
}

#[shoal::task]
fn sum(data: &Archived<Vec<u8>>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

/// A wrong alias: argument 1 is a list.
#[shoal::task]
fn alias_of_a_list(first: Vec<u64>, rest: Vec<u64>) -> Alias<Vec<u64>> {
    let _ = (first, rest);
    Alias::input(1)
}

/// A wrong alias: argument 1 is not a `u64`.
#[shoal::task]
fn alias_of_another_type(first: u64, rest: Vec<u64>) -> Alias<u64> {
    let _ = (first, rest);
    Alias::input(1)
}

/// A wrong alias: argument 0 is a fan-in.
#[shoal::task]
fn alias_of_a_fan_in(parts: Inputs<u64>) -> Alias<u64> {
    let _ = parts;
    Alias::input(0)
}

/// A wrong alias: there is no argument 2.
#[shoal::task]
fn alias_of_nothing(first: u64) -> Alias<u64> {
    let _ = first;
    Alias::input(2)
}

#[shoal::task]
fn plus_one(x: u64) -> u64 {
    x + 1
}

fn check(client: &Client) {
    // Over the processes mode's inline size (64 KiB), and under it.
    for n in [200_000u64, 1_000] {
        let a = client.submit(bytes, (n, 3)).unwrap();
        let b = client.submit(bytes, (n / 2, 5)).unwrap();
        let picked = client.submit(larger, (&a, &b)).unwrap();
        assert_eq!(picked.result().unwrap(), vec![3u8; n as usize]);
        assert_eq!(client.submit(sum, &picked).unwrap().result().unwrap(), 3 * n);
        // A lazy graph, and a literal argument as the aliased input.
        let lazy = larger.lazy((bytes.lazy((n / 4, 7)), vec![9u8; n as usize]));
        assert_eq!(sum.lazy(&lazy).compute(client).unwrap(), 9 * n);
        assert_eq!(client.submit(checked, (&a, n)).unwrap().result().unwrap().len(), n as usize);
        let err = client.submit(checked, (&a, n - 1)).unwrap().result().unwrap_err();
        assert!(err.to_string().contains("over"), "{err}");
    }
    let items = client.map(plus_one, [1u64, 2]).unwrap();
    let failures = [
        (
            client.submit(alias_of_a_list, (vec![1u64], &items)).unwrap().result().map(|_| ()),
            "that argument is a list of 2",
        ),
        (client.submit(alias_of_another_type, (1u64, vec![2u64, 3])).unwrap().result().map(|_| ()), "Vec<u64>, but"),
        (client.submit(alias_of_a_fan_in, &items).unwrap().result().map(|_| ()), "is a fan-in"),
        (client.submit(alias_of_nothing, 1u64).unwrap().result().map(|_| ()), "it has 1 arguments"),
    ];
    for (outcome, needle) in failures {
        let err = outcome.unwrap_err();
        match err.task_failure() {
            Some(TaskFailure::Error { error, .. }) => assert!(error.message().contains(needle), "{error:?}"),
            other => panic!("expected a task error, got {other:?}"),
        }
    }
}

#[test]
fn a_task_returns_one_of_its_inputs_threads() {
    check(&Client::threads(2).unwrap());
}

#[test]
fn a_task_returns_one_of_its_inputs_processes() {
    check(&Client::processes(2).unwrap());
}
