//! In the threads mode an `&Archived<T>` reader of a vector of primitives
//! costs no copy and no memory beside the result (issue 12, cause 1): the
//! result's archive is its own buffer (`Object::archive_in_place`), so a
//! reader — one parameter, or each part of an `Inputs<T>` fan-in — gets the
//! producer's bytes.
//!
//! A binary of its own: it counts every byte the process allocates (a
//! counting global allocator), so its tests run one at a time ([`serial`])
//! and nothing else runs in the process meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use shoal::prelude::*;

/// Every byte asked of the allocator: new blocks, and what a block grows by.
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
/// Blocks of exactly [`ODD`] bytes freed (the strings of [`strings`]).
static FREED_ODD: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == ODD {
            FREED_ODD.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()) as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// 32 MiB: far above anything else the run allocates.
const N: usize = 32 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where each producer's bytes are, by seed (the threads mode runs tasks in
/// this process).
static MADE_AT: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// `n` bytes of `seed`, exactly as long as asked (no spare capacity).
#[shoal::task]
fn exact(n: u64, seed: u64) -> Vec<u8> {
    vec![seed as u8; n as usize]
}

/// `n` bytes of `seed` with a little spare capacity, so that the buffer
/// cannot move when its archive is completed; records where it is.
#[shoal::task]
fn roomy(n: u64, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize + 64);
    v.resize(n as usize, seed as u8);
    MADE_AT.lock().unwrap_or_else(PoisonError::into_inner).push((seed, v.as_ptr() as u64));
    v
}

/// The length, a sampled sum, and where the bytes read are (`reader` keeps
/// several readers of one input apart: calls are pure).
#[shoal::task]
fn read_archived(data: &Archived<Vec<u8>>, reader: u64) -> (u64, u64, u64) {
    let _ = reader;
    let sum = data.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    (data.len() as u64, sum, data.as_ptr() as u64)
}

/// Where each part's bytes are, in order.
#[shoal::task]
fn where_parts_are(parts: Inputs<Vec<u8>>) -> Vec<u64> {
    parts.iter().map(|p| p.as_ptr() as u64).collect()
}

/// A length no other block in these tests has.
const ODD: usize = 1013;

/// `n` strings of [`ODD`] bytes: a type that cannot be archived in place.
#[shoal::task]
fn strings(n: u64) -> Vec<String> {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8).to_string().repeat(ODD)).collect()
}

#[shoal::task]
fn count_archived(items: &Archived<Vec<String>>) -> u64 {
    items.iter().map(|s| s.len() as u64).sum()
}

fn client() -> Client {
    Client::threads(2).expect("threads client")
}

#[test]
fn an_archived_read_in_the_threads_mode_allocates_nothing_proportional_to_the_input() {
    let _one = serial();
    let client = client();
    // A first run, so that one-time allocations (threads, tables) are done.
    let warm = exact.lazy((1u64 << 20, 1u64));
    read_archived.lazy((&warm, 0)).compute(&client).unwrap();
    for (seed, consumers) in [(2u64, 1u64), (3, 3)] {
        let before = ALLOCATED.load(Ordering::Relaxed);
        let data = client.submit(exact, (N as u64, seed)).unwrap();
        let reads: Vec<_> = (0..consumers).map(|r| client.submit(read_archived, (&data, r)).unwrap()).collect();
        drop(data);
        for read in reads {
            let (len, sum, _) = read.result().unwrap();
            assert_eq!(len, N as u64);
            assert_eq!(sum, seed * (N as u64 / 4096));
        }
        let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
        // The producer's own N bytes, and small change; an archive made
        // beside the value would add N more.
        assert!(
            allocated < N as u64 + N as u64 / 4,
            "{consumers} archived reader(s) of {N} bytes: {allocated} bytes allocated in all"
        );
    }
}

#[test]
fn an_archived_read_in_the_threads_mode_reads_the_producers_bytes() {
    let _one = serial();
    let client = client();
    let data = client.submit(roomy, (N as u64, 7u64)).unwrap();
    let (len, _, at) = client.submit(read_archived, (&data, 0)).unwrap().result().unwrap();
    assert_eq!(len, N as u64);
    let made = MADE_AT.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|(s, _)| *s == 7).map(|m| m.1);
    assert_eq!(Some(at), made, "the reader got the producer's buffer");
    // A by-value reader and the client still get the whole value.
    assert_eq!(data.result().unwrap(), vec![7u8; N]);
}

#[test]
fn fan_in_by_reference_in_the_threads_mode_hands_out_the_producers_bytes() {
    let _one = serial();
    let client = client();
    let seeds = 10u64..14;
    let parts: Vec<_> = seeds.clone().map(|s| roomy.lazy((1u64 << 20, s))).collect();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let places = where_parts_are.lazy(&parts).compute(&client).unwrap();
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    let made = MADE_AT.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let expected: Vec<u64> =
        seeds.map(|s| made.iter().find(|(seed, _)| *seed == s).map(|m| m.1).expect("a producer ran")).collect();
    assert_eq!(places, expected, "each part is its producer's buffer");
    // The producers' 4 MiB, and nothing like a second copy.
    assert!(allocated < 5 << 20, "{allocated} bytes allocated for 4 MiB of parts");
}

#[test]
fn a_value_archived_for_a_reader_is_then_held_by_its_archive_alone() {
    let _one = serial();
    let client = client();
    let n = 2_000u64;
    let made = client.submit(strings, n).unwrap();
    made.wait().unwrap();
    let before = FREED_ODD.load(Ordering::Relaxed);
    assert_eq!(client.submit(count_archived, &made).unwrap().result().unwrap(), n * ODD as u64);
    // The result is alive (`made` holds it), yet its value's strings are
    // gone: the archive made for the reader replaced it.
    assert_eq!(FREED_ODD.load(Ordering::Relaxed) - before, n, "every string of the value was freed");
    let value = made.result().unwrap();
    assert_eq!(value.len(), n as usize);
    assert!(value.iter().enumerate().all(|(i, s)| s.len() == ODD && s.starts_with(char::from(b'a' + (i % 26) as u8))));
    // A second reader reads the same archive.
    assert_eq!(client.submit(count_archived, &made).unwrap().result().unwrap(), n * ODD as u64);
}

/// Passes its input on as its result.
#[shoal::task]
fn pass_on(data: &Archived<Vec<u8>>) -> shoal::Alias<Vec<u8>> {
    let _ = data;
    shoal::Alias::input(0)
}

#[test]
fn a_task_returning_its_input_in_the_threads_mode_copies_nothing() {
    let _one = serial();
    let client = client();
    let data = client.submit(roomy, (N as u64, 21u64)).unwrap();
    data.wait().unwrap();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let passed = client.submit(pass_on, &data).unwrap();
    let (len, _, at) = client.submit(read_archived, (&passed, 1)).unwrap().result().unwrap();
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    assert_eq!(len, N as u64);
    let made = MADE_AT.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|(s, _)| *s == 21).map(|m| m.1);
    assert_eq!(Some(at), made, "the alias's reader got the producer's buffer");
    assert!(allocated < N as u64 / 4, "{allocated} bytes allocated to pass {N} bytes on");
}
