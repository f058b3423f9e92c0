//! Looking again for a short while before parking a thread.
//!
//! # Why
//!
//! A thread that parks (a futex wait, a blocking `poll`) is woken through
//! the kernel, and if its CPU found nothing else to do it went idle — on a
//! virtual machine, a halted virtual CPU that the hypervisor must wake with
//! an interrupt. That wake-up, not the work, is most of a short exchange
//! between threads: a round trip of the processes mode (submit, then the
//! result of one no-op) crosses four threads that each wait for the one
//! before (the worker process's reader, its pool thread, the client's reader
//! of that worker, the client thread), and took 109 µs on a quiet 2-core
//! machine but 30–35 µs on a loaded one, where no CPU ever idles.
//!
//! So a thread on such a path, before it parks, keeps looking for
//! [`SPIN_BEFORE_PARK`], yielding its CPU between looks (a yielding thread
//! gives way to any thread ready on that CPU, so on a busy machine the spin
//! costs little; on a quiet one the CPU stays awake and the next message is
//! seen within a microsecond or two). The spin is bounded: a thread with
//! nothing to do for longer parks as before, so an idle runtime uses no CPU
//! (rayon's pool does the same: rounds of looking, then sleep).
//!
//! # Which threads spin
//!
//! Two: a client thread waiting for its tasks (`driver::wait`, watching an
//! atomic counter) and the pool threads of a worker runtime
//! (`executor::Pool::with_spin`). Through a round trip one or the other is
//! always spinning or working, so no CPU idles, and the two readers that
//! still park in `poll` (the worker's, the client's) are woken on a CPU
//! that is awake. The readers do not spin: each of their looks is a `poll`
//! system call, and spinning them too took CPU from the threads doing the
//! work of a `map` (measured on a loaded 2-core machine, `overhead
//! --processes 2 --quick`: with the worker's reader spinning as well, map
//! 1.37x and tree 1.29x the time of no spin at all).

use std::time::{Duration, Instant};

/// How long a thread on a short exchange keeps looking for its next message
/// before it parks (see the module docs): longer than a whole round trip on
/// a quiet machine (about 30 µs once no hop parks), so a client that
/// submits one task after another keeps every thread of the exchange awake,
/// and short enough that an idle thread spends a fraction of a millisecond
/// of CPU after its last message.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(100);

/// Looks at `ready` until it answers true (then true) or `budget` has passed
/// (then false), yielding the CPU between looks.
pub fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        std::thread::yield_now();
        if ready() {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_spin_ends_when_the_condition_holds_or_the_budget_is_spent() {
        let mut looks = 0;
        assert!(spin_until(Duration::from_secs(5), || {
            looks += 1;
            looks == 3
        }));
        assert_eq!(looks, 3);
        let start = Instant::now();
        assert!(!spin_until(Duration::from_millis(2), || false));
        assert!(start.elapsed() >= Duration::from_millis(2));
        assert!(!spin_until(Duration::ZERO, || false));
    }

    #[test]
    fn a_spin_sees_a_flag_set_by_another_thread() {
        let flag = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&flag);
        let t = std::thread::spawn(move || setter.store(true, Ordering::Release));
        assert!(spin_until(Duration::from_secs(10), || flag.load(Ordering::Acquire)));
        t.join().unwrap();
    }
}
