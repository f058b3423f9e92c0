//! The in-process work-stealing thread pool.
//!
//! # Protocol
//!
//! Each pool thread owns a [`crossbeam_deque::Worker`] used LIFO: a job that
//! a running job makes ready (a dependent of the task that just finished) is
//! pushed there and runs next on the same thread, while its input is still
//! in cache. Jobs from outside the pool (a client's `submit`) go into one
//! global [`Injector`]. A thread looks for work in this order: its own deque,
//! one job from the injector, then one job stolen FIFO (the oldest, so the
//! biggest pieces of work move) from another thread — the scheme of
//! Blumofe & Leiserson's work stealing as crossbeam-deque implements it
//! (Chase & Lev, "Dynamic circular work-stealing deque", SPAA 2005).
//!
//! # Sleeping
//!
//! A thread that found nothing for [`SPIN_ROUNDS`] rounds (and, in a pool
//! made with [`Pool::with_spin`], for that long more: see [`crate::spin`]) sleeps
//! on a condition variable, so an idle pool uses no CPU. The lost-wakeup race
//! (a job pushed between a thread's last look and its sleep) is closed as in
//! Dekker's algorithm: the sleeper announces itself (`sleepers += 1`), then
//! looks once more, all under the sleep mutex; a pusher publishes its job,
//! then reads `sleepers`, both sides with a `SeqCst` fence in between. Either
//! the sleeper's last look sees the job, or the pusher sees the sleeper and
//! notifies it under the mutex — it cannot miss both.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

/// Rounds of looking for work (yielding between rounds) before sleeping.
/// Short: on a machine with few cores a spinning thread takes CPU from the
/// thread that would produce the work.
pub const SPIN_ROUNDS: u32 = 16;

/// The pool thread's handle to its own deque, given to the job handler.
pub struct Local<'a, J> {
    worker: &'a Worker<J>,
    shared: &'a Shared<J>,
}

impl<J> Local<'_, J> {
    /// Queue a job on this thread (it runs next here unless stolen first).
    pub fn push(&self, job: J) {
        self.worker.push(job);
        self.shared.wake(1);
    }

    /// Queue jobs on this thread, the last one to run first, and wake as
    /// many sleeping threads as there are jobs (one look at the sleepers
    /// for the lot, not one per job).
    pub fn push_all(&self, jobs: impl IntoIterator<Item = J>) {
        let mut n = 0;
        for job in jobs {
            self.worker.push(job);
            n += 1;
        }
        self.shared.wake(n);
    }

    /// Whether no job waits in the pool's injector (a job pushed here now
    /// would not run before older ones queued there).
    pub fn injector_is_empty(&self) -> bool {
        self.shared.injector.is_empty()
    }
}

/// Where jobs go: onto the current pool thread's deque when called from a
/// job handler, otherwise into the global injector.
pub enum Sink<'a, J> {
    /// The current pool thread's own deque.
    Local(&'a Local<'a, J>),
    /// The pool's injector.
    Global(&'a Spawner<J>),
}

impl<J> Sink<'_, J> {
    /// Queue a job.
    pub fn push(&self, job: J) {
        match self {
            Sink::Local(local) => local.push(job),
            Sink::Global(spawner) => spawner.push(job),
        }
    }
}

/// A cloneable handle that queues jobs from any thread.
pub struct Spawner<J> {
    shared: Arc<Shared<J>>,
}

impl<J> Clone for Spawner<J> {
    fn clone(&self) -> Self {
        Spawner { shared: Arc::clone(&self.shared) }
    }
}

impl<J> Spawner<J> {
    /// Queue a job and wake a sleeping thread.
    pub fn push(&self, job: J) {
        self.shared.injector.push(job);
        self.shared.wake(1);
    }

    /// Queue jobs in order, and wake as many sleeping threads as there are
    /// jobs: one look at the sleepers for the lot. Waking once per job
    /// would make a system call per job while a woken thread has not yet
    /// left the sleepers' count (`Condvar::notify_one` always does one).
    pub fn push_all(&self, jobs: impl IntoIterator<Item = J>) {
        let mut n = 0;
        for job in jobs {
            self.shared.injector.push(job);
            n += 1;
        }
        self.shared.wake(n);
    }
}

/// What the pool's threads share: the injector, the stealers, the sleepers.
pub struct Shared<J> {
    injector: Injector<J>,
    stealers: Vec<Stealer<J>>,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wakeup: Condvar,
    shutdown: AtomicBool,
    /// How long an idle thread looks for work at least before it sleeps.
    spin: Duration,
}

impl<J> Shared<J> {
    /// Wakes up to `jobs` sleeping threads, after `jobs` jobs were
    /// published (see "Sleeping" in the module docs: the fence and the look
    /// at `sleepers` are the pusher's half of the handshake, whatever `jobs`).
    fn wake(&self, jobs: usize) {
        if jobs == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        let sleepers = self.sleepers.load(Ordering::SeqCst);
        if sleepers > 0 {
            let _guard = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            if jobs >= sleepers {
                self.wakeup.notify_all();
            } else {
                for _ in 0..jobs {
                    self.wakeup.notify_one();
                }
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn find(&self, local: &Worker<J>) -> Option<J> {
        if let Some(job) = local.pop() {
            return Some(job);
        }
        loop {
            let mut retry = false;
            // One job at a time from the injector, not a batch: a batch
            // would run LIFO from the local deque, reversing the priority
            // order in which the scheduler released the jobs.
            match self.injector.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for stealer in &self.stealers {
                match stealer.steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// Sleep until woken; returns false when the pool shuts down.
    fn sleep(&self) -> bool {
        let guard = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let guard = if self.has_work() || self.shutdown.load(Ordering::SeqCst) {
            guard
        } else {
            self.wakeup.wait(guard).unwrap_or_else(|p| p.into_inner())
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        !self.shutdown.load(Ordering::SeqCst)
    }
}

/// A fixed set of threads running jobs of type `J` with one handler.
pub struct Pool<J> {
    spawner: Spawner<J>,
    /// The deques of threads not started yet.
    unstarted: Vec<Worker<J>>,
    threads: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static> Pool<J> {
    /// A pool of `nthreads` (at least one) deques; jobs can be queued
    /// through [`spawner`](Pool::spawner) at once, and run once
    /// [`start`](Pool::start)ed.
    pub fn new(nthreads: usize) -> Pool<J> {
        Pool::with_spin(nthreads, Duration::ZERO)
    }

    /// [`Pool::new`] whose idle threads look for work for `spin` more
    /// (after [`SPIN_ROUNDS`] rounds) before they sleep: for a pool on a short
    /// exchange between processes, where a sleeping thread's wake-up is
    /// most of the time of a small task (see [`crate::spin`]).
    pub fn with_spin(nthreads: usize, spin: Duration) -> Pool<J> {
        let workers: Vec<Worker<J>> = (0..nthreads.max(1)).map(|_| Worker::new_lifo()).collect();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: workers.iter().map(Worker::stealer).collect(),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wakeup: Condvar::new(),
            shutdown: AtomicBool::new(false),
            spin,
        });
        Pool { spawner: Spawner { shared }, unstarted: workers, threads: Vec::new() }
    }

    /// Start the threads, named `{name}-{i}`, each running `handler` on the
    /// jobs it finds. On error the threads already started are stopped.
    pub fn start<H>(&mut self, name: &str, handler: H) -> std::io::Result<()>
    where
        H: Fn(J, &Local<'_, J>) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let base = self.threads.len();
        for (i, worker) in std::mem::take(&mut self.unstarted).into_iter().enumerate() {
            let shared = Arc::clone(&self.spawner.shared);
            let handler = Arc::clone(&handler);
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{}", base + i))
                .spawn(move || run_thread(&shared, &worker, &*handler));
            match thread {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    self.stop();
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl<J> Pool<J> {
    /// A handle that queues jobs from any thread.
    pub fn spawner(&self) -> &Spawner<J> {
        &self.spawner
    }

    /// Threads started and not stopped.
    pub fn nthreads(&self) -> usize {
        self.threads.len()
    }

    /// Stop the threads once they finish their current job (queued jobs are
    /// dropped) and wait for them.
    pub fn stop(&mut self) {
        let shared = &self.spawner.shared;
        shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            shared.wakeup.notify_all();
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // A pool thread that drops the pool cannot wait for itself; it
            // exits by itself after its current job.
            if t.thread().id() != me {
                // A thread that panicked outside a job already reported it;
                // there is nothing more to do with its result here.
                let _ = t.join();
            }
        }
    }
}

impl<J> Drop for Pool<J> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_thread<J, H>(shared: &Shared<J>, worker: &Worker<J>, handler: &H)
where
    H: Fn(J, &Local<'_, J>),
{
    let local = Local { worker, shared };
    let mut idle_rounds = 0;
    // When this thread's timed spin began (after its rounds).
    let mut idle_since: Option<Instant> = None;
    while !shared.shutdown.load(Ordering::Relaxed) {
        let Some(job) = shared.find(worker) else {
            if idle_rounds < SPIN_ROUNDS
                || (!shared.spin.is_zero() && idle_since.get_or_insert_with(Instant::now).elapsed() < shared.spin)
            {
                idle_rounds += 1;
                std::thread::yield_now();
                continue;
            }
            idle_rounds = 0;
            idle_since = None;
            if !shared.sleep() {
                break;
            }
            continue;
        };
        idle_rounds = 0;
        idle_since = None;
        handler(job, &local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_once_including_jobs_pushed_by_jobs() {
        let (tx, rx) = mpsc::channel::<u32>();
        let tx = Mutex::new(tx);
        // A job n > 0 pushes two jobs n-1 locally: 2^(d+1)-1 jobs in all.
        let mut pool = Pool::new(3);
        pool.start("test", move |n: u32, local: &Local<'_, u32>| {
            if n > 0 {
                local.push(n - 1);
                local.push(n - 1);
            }
            tx.lock().unwrap().send(n).unwrap();
        })
        .unwrap();
        pool.spawner().push(10);
        let got: Vec<u32> = (0..2047).map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
        assert_eq!(got.iter().filter(|&&n| n == 0).count(), 1024);
        assert!(rx.recv_timeout(std::time::Duration::from_millis(50)).is_err(), "no extra job ran");
    }

    #[test]
    fn idle_threads_sleep_and_wake_for_new_work() {
        let (tx, rx) = mpsc::channel::<u32>();
        let tx = Mutex::new(tx);
        let mut pool = Pool::new(2);
        pool.start("test", move |n: u32, _: &Local<'_, u32>| {
            tx.lock().unwrap().send(n).unwrap();
        })
        .unwrap();
        for round in 0..50 {
            // Let the threads fall asleep, then check one push wakes them.
            std::thread::sleep(std::time::Duration::from_millis(2));
            pool.spawner().push(round);
            assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(round));
        }
    }
}
