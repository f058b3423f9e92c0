//! Results live exactly as long as something needs them.

use std::sync::atomic::{AtomicIsize, Ordering};

use shoal::prelude::*;
use shoal::rkyv::{Archive, Deserialize, Serialize};

/// Counts its live instances, so the tests see when results are freed.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = shoal::rkyv)]
struct Tracked(u64);

static LIVE: AtomicIsize = AtomicIsize::new(0);

impl Tracked {
    fn new(v: u64) -> Tracked {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Tracked(v)
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked::new(self.0)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

#[shoal::task]
fn make(v: u64) -> Tracked {
    Tracked::new(v)
}

#[shoal::task]
fn read(t: Tracked) -> u64 {
    t.0
}

#[shoal::task]
fn read_in_place(t: &Archived<Tracked>) -> u64 {
    t.0.to_native()
}

/// Whether no `Tracked` is alive within a second.
fn eventually_zero() -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(1) {
        if LIVE.load(Ordering::SeqCst) == 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// One test, so that nothing else creates `Tracked` values meanwhile.
#[test]
fn results_are_freed_when_no_future_and_no_waiting_dependent_needs_them() {
    let client = Client::threads(2).unwrap();

    // Held by a future: alive; future dropped: freed.
    let a = client.submit(make, 1).unwrap();
    assert_eq!(a.result().unwrap().0, 1);
    assert_eq!(LIVE.load(Ordering::SeqCst), 1, "the stored result only");
    drop(a);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0, "freed with its last future");

    // An intermediate result nobody holds is freed once its dependents ran.
    let ends: Vec<shoal::Future<u64>> = {
        let mid = client.submit(make, 2).unwrap();
        let ends = vec![client.submit(read, &mid).unwrap(), client.submit(read_in_place, &mid).unwrap()];
        ends
    };
    assert_eq!(client.gather(&ends).unwrap(), vec![2, 2]);
    // Freed by the worker thread right after it reports the last dependent
    // (a spurious wake-up of this thread could come a moment before).
    assert!(eventually_zero(), "intermediate freed after both dependents finished");

    // A lazy graph keeps nothing but what the client asked for.
    let root = read.lazy(make.lazy(3));
    assert_eq!(root.compute(&client).unwrap(), 3);
    assert!(eventually_zero(), "the lazy intermediate is freed");

    // Clones of a future share one reference: freed after the last clone.
    let b = client.submit(make, 4).unwrap();
    let b2 = b.clone();
    b.wait().unwrap();
    drop(b);
    assert_eq!(LIVE.load(Ordering::SeqCst), 1);
    drop(b2);
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}
