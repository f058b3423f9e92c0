//! Model checks (loom) of the two lock-free protocols shoal relies on,
//! under every interleaving and memory ordering loom explores:
//!
//! - the claim on a queued run ([`shoal_core::claim::Claim`], the real
//!   type, built over loom's atomics): a run is started or given back,
//!   never both, never neither;
//! - the pool's sleep/wake (`core/src/executor.rs`, "Sleeping"): a job
//!   pushed while a thread goes to sleep is never left with every thread
//!   asleep. The pool itself is built on crossbeam-deque, which loom cannot
//!   see into, so this checks a copy of its `sleep` and `wake` (for one job), step
//!   for step, with the deque as an atomic count of jobs.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shoal-core --test loom --release`
//! (`.ci/run` does, in a target directory of its own).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use shoal_core::claim::Claim;

#[test]
fn a_run_is_started_or_stolen_exactly_once() {
    loom::model(|| {
        let claim = Arc::new(Claim::new());
        let (ran, stolen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = {
            let (claim, ran) = (Arc::clone(&claim), Arc::clone(&ran));
            loom::thread::spawn(move || {
                if claim.start() {
                    ran.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let reader = {
            let (claim, stolen) = (Arc::clone(&claim), Arc::clone(&stolen));
            loom::thread::spawn(move || {
                // The reader skips runs no longer queued, then claims.
                if claim.is_queued() && claim.steal() {
                    stolen.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // A second pool thread popping the same run (it cannot happen with
        // a deque, but the claim must hold even so).
        let again = claim.start();
        pool.join().unwrap();
        reader.join().unwrap();
        let runs = ran.load(Ordering::Relaxed) + usize::from(again);
        assert_eq!(runs + stolen.load(Ordering::Relaxed), 1, "exactly one claim wins");
        assert!(!claim.is_queued());
    });
}

/// The executor's `Shared`, with an atomic count of jobs for its deques.
struct Shared {
    jobs: AtomicUsize,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wakeup: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    /// `Spawner::push`: publish the job, then `wake(1)`.
    fn push(&self) {
        // Crossbeam's push is a release store of the new tail.
        self.jobs.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.sleep_lock.lock().unwrap();
            self.wakeup.notify_one();
        }
    }

    /// `find`: take a job if there is one.
    fn take(&self) -> bool {
        let mut n = self.jobs.load(Ordering::Acquire);
        while n > 0 {
            match self.jobs.compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// `Shared::sleep`, line for line.
    fn sleep(&self) -> bool {
        let guard = self.sleep_lock.lock().unwrap();
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let guard = if self.jobs.load(Ordering::Acquire) > 0 || self.shutdown.load(Ordering::SeqCst) {
            guard
        } else {
            self.wakeup.wait(guard).unwrap()
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        !self.shutdown.load(Ordering::SeqCst)
    }
}

#[test]
fn a_pushed_job_always_wakes_a_sleeping_thread() {
    loom::model(|| {
        let shared = Arc::new(Shared {
            jobs: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wakeup: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        // A pool thread: looks, sleeps when it finds nothing, until it has
        // run the one job. A lost wake-up leaves it asleep forever, which
        // loom reports as a deadlock.
        let thread = {
            let shared = Arc::clone(&shared);
            loom::thread::spawn(move || {
                while !shared.take() {
                    assert!(shared.sleep(), "no shutdown in this model");
                }
            })
        };
        shared.push();
        thread.join().unwrap();
        assert_eq!(shared.jobs.load(Ordering::Relaxed), 0);
    });
}
