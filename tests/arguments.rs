//! What a task accepts as arguments, and pure vs impure calls.

use std::sync::atomic::{AtomicU64, Ordering};

use shoal::prelude::*;

#[shoal::task]
fn greet(name: String) -> String {
    format!("hello {name}")
}

#[shoal::task]
fn count(path: String) -> u64 {
    path.len() as u64
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[shoal::task]
fn answer() -> u64 {
    42
}

#[shoal::task]
fn parse(s: String) -> Result<u64, String> {
    s.parse::<u64>().map_err(|e| format!("{s:?}: {e}"))
}

static TICKS: AtomicU64 = AtomicU64::new(0);

/// Reads a "clock": every call must run.
#[shoal::task(impure)]
fn tick(_label: String) -> u64 {
    TICKS.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn strings_and_references_are_accepted_for_owned_parameters() {
    let client = Client::threads(2).unwrap();
    assert_eq!(client.submit(greet, "alice").unwrap().result().unwrap(), "hello alice");
    let name = String::from("bob");
    assert_eq!(client.submit(greet, &name).unwrap().result().unwrap(), "hello bob");
    assert_eq!(name, "bob", "still ours");
    let files: Vec<String> = vec!["a".into(), "bb".into(), "ccc".into()];
    let by_ref = client.map(count, &files).unwrap();
    assert_eq!(client.gather(&by_ref).unwrap(), [1, 2, 3]);
    let from_slice = client.map(count, files[1..].iter()).unwrap();
    assert_eq!(client.gather(&from_slice).unwrap(), [2, 3]);
    let numbers = vec![1u64, 2, 3];
    assert_eq!(client.submit(total, &numbers[..2]).unwrap().result().unwrap(), 3);
    assert_eq!(client.submit(total, &numbers).unwrap().result().unwrap(), 6);
}

#[test]
fn a_task_without_parameters_has_a_short_form() {
    let client = Client::threads(1).unwrap();
    assert_eq!(client.submit_no_args(answer).unwrap().result().unwrap(), 42);
    assert_eq!(answer.lazy_no_args().compute(&client).unwrap(), 42);
}

#[test]
fn a_delayed_loop_needs_no_question_mark_and_errors_surface_at_compute() {
    let client = Client::threads(2).unwrap();
    let mut parsed = Vec::new();
    for s in ["1", "2", "x"] {
        parsed.push(parse.lazy(s));
    }
    let sum = total.lazy(parsed);
    let err = sum.compute(&client).expect_err("\"x\" does not parse");
    assert!(err.to_string().contains("invalid digit"), "{err}");
    let ok: Vec<Lazy<u64>> = ["4", "5"].iter().map(|s| parse.lazy(*s)).collect();
    assert_eq!(total.lazy(ok).compute(&client).unwrap(), 9);
}

#[test]
fn calls_of_an_impure_task_are_never_shared() {
    let client = Client::threads(2).unwrap();
    let (a, b) = (tick.lazy("same"), tick.lazy("same"));
    assert_ne!(a.key(), b.key(), "impure lazy calls are unique");
    let (p, q) = (greet.lazy("same"), greet.lazy("same"));
    assert_eq!(p.key(), q.key(), "pure ones are shared");
    let before = TICKS.load(Ordering::SeqCst);
    let both = client.compute_values(&[a, b]).unwrap();
    assert_ne!(both[0], both[1]);
    let f = client.submit(tick, "same").unwrap();
    let g = client.submit(tick, "same").unwrap();
    assert_ne!(f.key(), g.key());
    f.result().unwrap();
    g.result().unwrap();
    assert_eq!(TICKS.load(Ordering::SeqCst) - before, 4, "every call ran");
}
