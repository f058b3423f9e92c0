//! How a client thread waits for tasks, the same in every mode.
//!
//! The driver's state sits behind one mutex; a client thread checks its
//! condition under it. If the answer is not there yet, it looks again a few
//! times ([`CLIENT_SPINS`], yielding in between: a short task is done within
//! microseconds), then registers what it
//! waits for (an [`Interest`]) as *spinning*, lets go of the lock and
//! watches the driver's news counter until [`SPIN_BEFORE_PARK`] has passed
//! (a thread that parks costs a wake-up through the kernel: see
//! [`crate::spin`]); a report that matches
//! a spinning interest bumps the counter, and the client looks again under
//! the lock. Past that budget it registers its interest as *sleeping* and
//! sleeps on the driver's condition variable. A driver that reports a task
//! wakes the sleepers only if one of them is interested in it
//! ([`Waiters::reported`]), so a client waiting on one task is not woken by
//! every other, and a spinning client is not sent to the lock by every
//! other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::scheduler::TaskId;
use crate::spin::{SPIN_BEFORE_PARK, spin_until};

use super::DriverError;

/// How many times a waiting client looks again under the lock (yielding in
/// between) before it watches the news counter: a task done within a few
/// microseconds (the threads mode's round trip) is seen as before, without
/// registering an interest.
pub const CLIENT_SPINS: u32 = 32;

/// What a sleeping client thread waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// This task finishing.
    Task(TaskId),
    /// This task finishing, or any task failing: how a client waits for a
    /// long list ([`Driver::wait_prefix`](super::Driver::wait_prefix)).
    TaskOrFailure(TaskId),
    /// Any task finishing.
    Any,
}

/// The interests of the client threads spinning and sleeping right now,
/// and how many failures were reported so far.
#[derive(Default)]
pub struct Waiters {
    sleeping: Vec<Interest>,
    spinning: Vec<Interest>,
    failures: u64,
    /// Bumped when a report matches a spinning interest; spinning clients
    /// watch it without the lock (see the module docs).
    news: Arc<AtomicU64>,
}

impl Interest {
    fn matches(self, task: TaskId, failed: bool) -> bool {
        match self {
            Interest::Any => true,
            Interest::Task(t) => t == task,
            Interest::TaskOrFailure(t) => failed || t == task,
        }
    }
}

impl Waiters {
    /// `task` was reported (`failed`: as failed): whether a sleeper must
    /// be woken (a spinning client is told here).
    pub fn reported(&mut self, task: TaskId, failed: bool) -> bool {
        self.failures += u64::from(failed);
        if self.spinning.iter().any(|w| w.matches(task, failed)) {
            self.news.fetch_add(1, Ordering::Release);
        }
        self.sleeping.iter().any(|w| w.matches(task, failed))
    }

    /// The counter spinning clients watch: the driver keeps a copy of it
    /// beside its lock.
    pub fn news(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.news)
    }

    /// Tells the spinning clients to look again (the driver stopped or
    /// broke down: no report will come).
    pub fn alert_spinners(&self) {
        self.news.fetch_add(1, Ordering::Release);
    }

    /// How many failures were reported so far (any task's).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// A driver state a client can wait on.
pub trait Waitable {
    /// The sleepers' interests.
    fn waiters(&mut self) -> &mut Waiters;
    /// Why no wait on this driver can succeed any more (shut down, broken).
    fn stopped(&self) -> Option<DriverError>;
}

/// Lock a mutex of the driver (or of a mode). Task code never runs under these locks, so a
/// panic under one can only be a bug in shoal, and the state is the last
/// consistent one: carry on rather than poison every later call.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait until `check` answers `Ok`; while it answers `Err(interest)`, spin
/// for a while, then sleep, until something matching `interest` is
/// reported (or the deadline passes: `Ok(None)`). `news` is the driver's
/// copy of [`Waiters::news`].
pub fn block_until_with<S: Waitable, T>(
    state: &Mutex<S>,
    changed: &Condvar,
    news: &AtomicU64,
    deadline: Option<Instant>,
    mut check: impl FnMut(&S) -> std::result::Result<T, Interest>,
) -> Result<Option<T>, DriverError> {
    let mut st = lock(state);
    let mut spins = 0;
    let mut spin_start = None;
    loop {
        let interest = match check(&st) {
            Ok(answer) => return Ok(Some(answer)),
            Err(interest) => interest,
        };
        if let Some(error) = st.stopped() {
            return Err(error);
        }
        if spins < CLIENT_SPINS {
            // A short task: look again under the lock.
            spins += 1;
            drop(st);
            std::thread::yield_now();
            st = lock(state);
            continue;
        }
        let now = Instant::now();
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(now) {
                Some(t) if !t.is_zero() => Some(t),
                _ => return Ok(None),
            },
            None => None,
        };
        let spun = now.saturating_duration_since(*spin_start.get_or_insert(now));
        if let Some(budget) = SPIN_BEFORE_PARK.checked_sub(spun).filter(|b| !b.is_zero()) {
            let budget = timeout.map_or(budget, |t| t.min(budget));
            let seen = news.load(Ordering::Acquire);
            st.waiters().spinning.push(interest);
            drop(st);
            spin_until(budget, || news.load(Ordering::Acquire) != seen);
            st = lock(state);
            remove(&mut st.waiters().spinning, interest);
            continue;
        }
        st.waiters().sleeping.push(interest);
        st = match timeout {
            Some(t) => changed.wait_timeout(st, t).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
            None => changed.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
        remove(&mut st.waiters().sleeping, interest);
    }
}

/// Removes one registration of `interest`.
fn remove(list: &mut Vec<Interest>, interest: Interest) {
    if let Some(pos) = list.iter().position(|w| *w == interest) {
        list.swap_remove(pos);
    }
}

/// [`block_until_with`] for a condition with one fixed interest.
pub fn block_until<S: Waitable, T>(
    state: &Mutex<S>,
    changed: &Condvar,
    news: &AtomicU64,
    interest: Interest,
    deadline: Option<Instant>,
    mut done: impl FnMut(&S) -> Option<T>,
) -> Result<Option<T>, DriverError> {
    block_until_with(state, changed, news, deadline, |st| done(st).ok_or(interest))
}
