//! Lazy graphs (`dask.delayed`): build, compose, compute.

use std::sync::atomic::{AtomicUsize, Ordering};

use shoal::prelude::*;

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[shoal::task]
fn load(i: u64) -> Vec<u8> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    vec![i as u8; 1000]
}

#[shoal::task]
fn process(data: &Archived<Vec<u8>>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[shoal::task]
fn address(data: &Archived<Vec<u8>>) -> u64 {
    data.as_ptr() as u64
}

#[shoal::task]
fn summarize(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[test]
fn a_loop_builds_a_graph_that_computes_at_once() {
    let client = Client::threads(2).unwrap();
    let results: Vec<Lazy<u64>> = (0..20u64).map(|i| process.lazy(load.lazy(i))).collect();
    let summary = summarize.lazy(&results);
    let expected: u64 = (0..20u64).map(|i| i * 1000).sum();
    assert_eq!(summary.compute(&client).unwrap(), expected);
    // Several outputs of one graph, computed together.
    let both = client.compute_values(&[summary.clone(), results[3].clone()]).unwrap();
    assert_eq!(both, vec![expected, 3000]);
}

#[test]
fn shared_nodes_are_computed_once() {
    let client = Client::threads(2).unwrap();
    let before = LOADS.load(Ordering::SeqCst);
    let data = load.lazy(200);
    let a = process.lazy(&data);
    let b = process.lazy(&data);
    // Built twice from equal calls: same key, still one node.
    let again = load.lazy(200);
    let c = process.lazy(again);
    let total = summarize.lazy(vec![a, b, c]);
    assert_eq!(total.compute(&client).unwrap(), 3 * 200 * 1000);
    assert_eq!(LOADS.load(Ordering::SeqCst) - before, 1);
}

#[test]
fn consumers_of_the_archived_form_share_one_archive() {
    let client = Client::threads(2).unwrap();
    let data = client.submit(load, 7).unwrap();
    let a = client.submit(address, &data).unwrap();
    let b = client.submit(address, &data).unwrap();
    assert_eq!(a.result().unwrap(), b.result().unwrap(), "archived once, read in place by both");
}

#[test]
fn a_deep_chain_neither_overflows_building_computing_nor_dropping() {
    let client = Client::threads(2).unwrap();
    let mut node = inc.lazy(0);
    for _ in 1..200_000 {
        node = inc.lazy(node);
    }
    assert_eq!(node.compute(&client).unwrap(), 200_000);
    drop(node);
}

#[test]
fn lazy_and_futures_mix() {
    let client = Client::threads(2).unwrap();
    let f = client.submit(inc, 1).unwrap();
    let l = inc.lazy(&f);
    let g = client.submit(inc, &l).unwrap();
    assert_eq!(g.result().unwrap(), 4);
}
