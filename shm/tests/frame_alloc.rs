//! A frame's claimed length is never allocated before it is validated, nor
//! before its bytes arrive: measured with a counting global allocator.
//!
//! The allocator records the largest single allocation made by a thread
//! while that thread is watching, so other threads of the harness cannot
//! disturb the measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_shm::frame::{self, INITIAL_CAPACITY, MAX_FRAME_LEN};
use shoal_shm::{ShmError, fdpass};

struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping before it neither allocates nor touches the memory.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and returns its result and the largest allocation it made.
fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    WATCHING.with(|watching| watching.set(true));
    let result = f();
    WATCHING.with(|watching| watching.set(false));
    (result, LARGEST.load(Ordering::Relaxed))
}

fn header(len: u32) -> Vec<u8> {
    len.to_le_bytes().to_vec()
}

/// One test, so that nothing else runs in this binary while it measures.
#[test]
fn claimed_lengths_are_not_allocated() {
    // Positive control: a real 1 MiB frame is seen, so a claimed length
    // that were allocated would be seen too.
    let mut real = header(1 << 20);
    real.resize(4 + (1 << 20), 1);
    let (result, largest) = largest_allocation_during(|| frame::read_frame(&mut Cursor::new(&real)));
    assert_eq!(result.unwrap().unwrap().len(), 1 << 20);
    assert!(largest >= 1 << 20, "the counter works: {largest}");

    // Over the limit: refused at the header, nothing sized by it.
    let over = header(u32::MAX);
    let (result, largest) = largest_allocation_during(|| frame::read_frame(&mut Cursor::new(&over)));
    assert!(matches!(result, Err(ShmError::FrameTooLarge { .. })));
    assert!(largest < 1024, "allocated {largest} bytes for a refused frame");

    // At the limit but only ten bytes sent: no more than the initial buffer.
    let mut liar = header(MAX_FRAME_LEN as u32);
    liar.extend_from_slice(b"ten bytes!");
    let (result, largest) = largest_allocation_during(|| frame::read_frame(&mut Cursor::new(&liar)));
    assert!(matches!(result, Err(ShmError::TruncatedFrame { got: 10, .. })));
    assert!(largest <= INITIAL_CAPACITY, "allocated {largest} bytes for 10 received");

    // The same lie through the descriptor-passing reader.
    let (mut tx, rx) = UnixStream::pair().unwrap();
    tx.write_all(&liar).unwrap();
    drop(tx);
    let (result, largest) = largest_allocation_during(|| fdpass::recv(&rx));
    assert!(matches!(result, Err(ShmError::TruncatedFrame { got: 10, .. })));
    assert!(largest <= INITIAL_CAPACITY, "allocated {largest} bytes for 10 received");

    let (mut tx, rx) = UnixStream::pair().unwrap();
    tx.write_all(&over).unwrap();
    let (result, largest) = largest_allocation_during(|| fdpass::recv(&rx));
    assert!(matches!(result, Err(ShmError::FrameTooLarge { .. })));
    assert!(largest < 1024, "allocated {largest} bytes for a refused frame");
}
