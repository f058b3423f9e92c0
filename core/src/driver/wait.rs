//! How a client thread waits for tasks, the same in every mode.
//!
//! The driver's state sits behind one mutex; a client thread checks its
//! condition under it. If the answer is not there yet, it looks again a few
//! times ([`CLIENT_SPINS`], yielding in between: a short task is done within
//! microseconds), then registers what it waits for (an [`Interest`]) and
//! sleeps on the driver's condition variable. A driver that reports a task
//! wakes the sleepers only if one of them is interested in it
//! ([`Waiters::reported`]), so a client waiting on one task is not woken by
//! every other.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::scheduler::TaskId;

use super::DriverError;

/// How many times a waiting client looks again (yielding in between)
/// before it sleeps.
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

/// The interests of the client threads sleeping right now, and how many
/// failures were reported so far.
#[derive(Default)]
pub struct Waiters {
    sleeping: Vec<Interest>,
    failures: u64,
}

impl Waiters {
    /// `task` was reported (`failed`: as failed): whether a sleeper must
    /// be woken.
    pub fn reported(&mut self, task: TaskId, failed: bool) -> bool {
        self.failures += u64::from(failed);
        self.sleeping.iter().any(|w| match *w {
            Interest::Any => true,
            Interest::Task(t) => t == task,
            Interest::TaskOrFailure(t) => failed || t == task,
        })
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

/// Wait until `check` answers `Ok`; while it answers `Err(interest)`, sleep
/// until something matching `interest` is reported (or the deadline passes:
/// `Ok(None)`).
pub fn block_until_with<S: Waitable, T>(
    state: &Mutex<S>,
    changed: &Condvar,
    deadline: Option<Instant>,
    mut check: impl FnMut(&S) -> std::result::Result<T, Interest>,
) -> Result<Option<T>, DriverError> {
    let mut st = lock(state);
    let mut spins = 0;
    loop {
        let interest = match check(&st) {
            Ok(answer) => return Ok(Some(answer)),
            Err(interest) => interest,
        };
        if let Some(error) = st.stopped() {
            return Err(error);
        }
        if spins < CLIENT_SPINS {
            spins += 1;
            drop(st);
            std::thread::yield_now();
            st = lock(state);
            continue;
        }
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(t) if !t.is_zero() => Some(t),
                _ => return Ok(None),
            },
            None => None,
        };
        st.waiters().sleeping.push(interest);
        st = match timeout {
            Some(t) => changed.wait_timeout(st, t).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
            None => changed.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
        let waiters = &mut st.waiters().sleeping;
        if let Some(pos) = waiters.iter().position(|w| *w == interest) {
            waiters.swap_remove(pos);
        }
    }
}

/// [`block_until_with`] for a condition with one fixed interest.
pub fn block_until<S: Waitable, T>(
    state: &Mutex<S>,
    changed: &Condvar,
    interest: Interest,
    deadline: Option<Instant>,
    mut done: impl FnMut(&S) -> Option<T>,
) -> Result<Option<T>, DriverError> {
    block_until_with(state, changed, deadline, |st| done(st).ok_or(interest))
}
