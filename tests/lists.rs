//! List arguments (`Vec<Future<T>>`, `Vec<Lazy<T>>` for a `Vec<T>`
//! parameter) are sent as lists of results and assembled by the task's glue
//! where the task runs — in a worker process in the processes mode — so no
//! function pointer travels with the graph. The same job runs in both modes.

use shoal::prelude::*;

/// An alias: the glue sees through it (the compiler resolves it).
type Sizes = Vec<u64>;

#[shoal::task]
fn size(i: u64) -> u64 {
    i * 10
}

#[shoal::task]
fn sum_sizes(xs: Sizes) -> u64 {
    xs.iter().sum()
}

/// Over the inline limit: each result is a segment of its own.
#[shoal::task]
fn blob(i: u64) -> Vec<u8> {
    vec![i as u8; 70_000]
}

#[shoal::task]
fn total_len(parts: Vec<Vec<u8>>) -> u64 {
    parts.iter().map(|p| p.len() as u64 + u64::from(p[0])).sum()
}

#[shoal::task]
fn total_len_archived(parts: &Archived<Vec<Vec<u8>>>) -> u64 {
    parts.iter().map(|p| p.len() as u64 + u64::from(p[0])).sum()
}

/// A whole `Vec` from one future still works for a `Vec` parameter.
#[shoal::task]
fn all_sizes(n: u64) -> Vec<u64> {
    (0..n).map(|i| i * 10).collect()
}

fn check(client: &Client) {
    let sizes = client.map(size, 0..100u64).unwrap();
    assert_eq!(client.submit(sum_sizes, &sizes).unwrap().result().unwrap(), 49_500);
    let whole = client.submit(all_sizes, 100u64).unwrap();
    assert_eq!(client.submit(sum_sizes, &whole).unwrap().result().unwrap(), 49_500);

    // 70 inputs in shared memory: more than one message carries (32), so
    // the processes mode stashes descriptors ahead of the run.
    let n = 70u64;
    let blobs = client.map(blob, 0..n).unwrap();
    let expected: u64 = (0..n).map(|i| 70_000 + i).sum();
    assert_eq!(client.submit(total_len, &blobs).unwrap().result().unwrap(), expected);
    assert_eq!(client.submit(total_len_archived, &blobs).unwrap().result().unwrap(), expected);

    // The same as a lazy graph.
    let lazy: Vec<Lazy<u64>> = (0..10u64).map(|i| size.lazy(i)).collect();
    assert_eq!(sum_sizes.lazy(lazy).compute(client).unwrap(), 450);
}

#[test]
fn list_arguments_are_assembled_where_the_task_runs_threads() {
    check(&Client::threads(2).unwrap());
}

#[test]
fn list_arguments_are_assembled_where_the_task_runs_processes() {
    check(&Client::processes(2).unwrap());
}

/// Fan-in by reference: every part read in place, none assembled or copied.
#[shoal::task]
fn total_len_in_place(parts: Inputs<Vec<u8>>) -> u64 {
    parts.iter().map(|p| p.len() as u64 + u64::from(p[0])).sum()
}

/// Where each part's bytes are: the name of the mapping that holds them.
#[shoal::task]
fn where_parts_are(parts: Inputs<Vec<u8>>) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    parts
        .iter()
        .map(|p| {
            let at = p.as_ptr() as u64;
            maps.lines()
                .find_map(|line| {
                    let (range, rest) = line.split_once(' ')?;
                    let (lo, hi) = range.split_once('-')?;
                    let (lo, hi) = (u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?);
                    (lo <= at && at < hi).then(|| rest.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
                })
                .unwrap_or_default()
        })
        .collect()
}

fn check_fan_in(client: &Client) {
    let n = 40u64;
    let blobs = client.map(blob, 0..n).unwrap();
    let expected: u64 = (0..n).map(|i| 70_000 + i).sum();
    assert_eq!(client.submit(total_len_in_place, &blobs).unwrap().result().unwrap(), expected);
    // One whole Vec<T> feeds an Inputs<T> too.
    let whole = client.submit(all_blobs, 3u64).unwrap();
    assert_eq!(client.submit(total_len_in_place, &whole).unwrap().result().unwrap(), 3 * 70_000 + 3);
}

#[shoal::task]
fn all_blobs(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![i as u8; 70_000]).collect()
}

#[test]
fn fan_in_by_reference_threads() {
    check_fan_in(&Client::threads(2).unwrap());
}

#[test]
fn fan_in_by_reference_reads_the_producers_segments_in_place_processes() {
    let client = Client::processes(2).unwrap();
    check_fan_in(&client);
    let blobs = client.map(blob, 0..40u64).unwrap();
    let places = client.submit(where_parts_are, &blobs).unwrap().result().unwrap();
    assert_eq!(places.len(), 40);
    for place in &places {
        // The producer's sealed segment, mapped here: no copy was made.
        assert!(place.starts_with("/memfd:shoal-w") && place.ends_with("(deleted)"), "{places:?}");
    }
}

/// A list may mix plain values (`Lazy::value`) with computed nodes, for a
/// `Vec` parameter and for a fan-in by reference, small values and values
/// over the inline size alike.
fn check_mixed(client: &Client) {
    let mixed = vec![Lazy::value(7u64), size.lazy(3), Lazy::value(100u64), size.lazy(4)];
    assert_eq!(sum_sizes.lazy(&mixed).compute(client).unwrap(), 7 + 30 + 100 + 40);
    // A value on its own computes to itself.
    assert_eq!(Lazy::value(41u64).compute(client).unwrap(), 41);
    let parts = vec![blob.lazy(1), Lazy::value(vec![9u8; 80_000]), Lazy::value(vec![5u8; 10]), blob.lazy(2)];
    let expected = (70_000 + 1) + (80_000 + 9) + (10 + 5) + (70_000 + 2);
    assert_eq!(total_len_in_place.lazy(&parts).compute(client).unwrap(), expected);
    assert_eq!(total_len.lazy(parts).compute(client).unwrap(), expected);
    // Equal values are one node.
    assert_eq!(Lazy::value(3u64).key(), Lazy::value(3u64).key());
    assert_ne!(Lazy::value(3u64).key(), Lazy::value(4u64).key());
}

#[test]
fn a_list_mixes_plain_values_and_lazy_nodes_threads() {
    check_mixed(&Client::threads(2).unwrap());
}

#[test]
fn a_list_mixes_plain_values_and_lazy_nodes_processes() {
    check_mixed(&Client::processes(2).unwrap());
}

/// A list of futures may mix scattered values (`Client::scatter`, Dask's
/// `client.scatter`) with computed results, for a `Vec` parameter and for a
/// fan-in by reference, small values and values over the inline size alike.
fn check_scattered(client: &Client) {
    let mixed = vec![client.scatter(7u64).unwrap(), client.submit(size, 3).unwrap(), client.scatter(100u64).unwrap()];
    assert_eq!(client.submit(sum_sizes, &mixed).unwrap().result().unwrap(), 7 + 30 + 100);
    // A scattered value's future holds the value itself.
    assert_eq!(client.scatter(41u64).unwrap().result().unwrap(), 41);
    let mut parts = client.scatter_many([vec![9u8; 80_000], vec![5u8; 10]]).unwrap();
    parts.push(client.submit(blob, 1).unwrap());
    let expected = (80_000 + 9) + (10 + 5) + (70_000 + 1);
    assert_eq!(client.submit(total_len_in_place, &parts).unwrap().result().unwrap(), expected);
    assert_eq!(client.submit(total_len, &parts).unwrap().result().unwrap(), expected);
    // Equal values are one task, as equal pure calls are.
    assert_eq!(client.scatter(3u64).unwrap().key(), client.scatter(3u64).unwrap().key());
    assert_ne!(client.scatter(3u64).unwrap().key(), client.scatter(4u64).unwrap().key());
}

#[test]
fn a_list_of_futures_mixes_scattered_values_and_results_threads() {
    check_scattered(&Client::threads(2).unwrap());
}

#[test]
fn a_list_of_futures_mixes_scattered_values_and_results_processes() {
    check_scattered(&Client::processes(2).unwrap());
}
