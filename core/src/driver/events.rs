//! Task events: what ran where and when, recorded by the driver for every
//! mode (the dashboard, `/metrics`, the performance report and
//! `Client::status` read them).
//!
//! # What is recorded
//!
//! - One [`RunRecord`] per run that ended (succeeded or failed): the task's
//!   key (so its name), the worker and, where known, the thread that ran
//!   it, start and stop on the monotonic clock (nanoseconds since the
//!   driver started), the result's size, and how it ended. Records go into
//!   a ring of [`RING_CAPACITY`] entries, so memory stays flat however long
//!   the run: the oldest are overwritten, and a reader that fell behind is
//!   told how many it missed.
//! - Totals per task name ([`FuncTotals`]: runs done and failed, busy
//!   time, result bytes) and for the whole driver ([`Totals`]): cumulative,
//!   never lost to the ring.
//! - State transitions, as counters: runs started (`Processing`), results
//!   in memory, failures (`Erred`), late results dropped; and on demand the
//!   live count of tasks in each state, per task name
//!   ([`State::task_counts`](super::State::task_counts)), scanned from the
//!   scheduler rather than kept per transition (the scheduler stays pure
//!   and the hot path pays nothing for it).
//!
//! # Cost
//!
//! The modes take the two timestamps of a run where it runs, outside the
//! driver's lock, as nanoseconds on [`now_ns`]'s clock: the processor's
//! time-stamp counter scaled to nanoseconds (`quanta`'s raw counter, scaled), about 25 ns a read
//! here against 70 ns for `std::time::Instant::now` and its conversion
//! (a vDSO call on this VM's clock source), which two reads per task made
//! a visible share of a no-op task. Under the lock a run adds a
//! state lookup before and after the scheduler pass, one write into the
//! ring (preallocated in chunks as it fills) and a few counter increments.
//! Readers copy what they need under the lock and format outside it.

use std::sync::OnceLock;

use crate::Key;
use crate::scheduler::{TaskState, WorkerId};

/// Run records kept: the last this many runs. 16 Ki records of 64 bytes are
/// 1 MiB: small enough that writing them in turn stays mostly in cache (a
/// 4 MiB ring cost the fastest graphs a cache miss per task), and more
/// than a page draws (a few thousand bars) or a frame carries; totals do
/// not depend on it.
pub const RING_CAPACITY: usize = 1 << 14;

/// The thread of a run when the mode does not know it (a worker process
/// reports only its duration).
pub const UNKNOWN_THREAD: u32 = u32::MAX;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its result is in memory.
    Done,
    /// It failed (the task may be retried).
    Failed,
    /// It ended after the scheduler stopped waiting for it (cancelled, no
    /// longer needed, taken back): its result was dropped.
    Late,
}

/// One run that ended.
#[derive(Clone, Copy, Debug)]
pub struct RunRecord {
    /// The task; `key.func` names its function.
    pub key: Key,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// The worker's thread that ran it, or [`UNKNOWN_THREAD`].
    pub thread: u32,
    /// When it started, in nanoseconds since the driver started.
    pub start_ns: u64,
    /// When it stopped, in nanoseconds since the driver started.
    pub stop_ns: u64,
    /// The result's size in bytes (0 for a failure).
    pub nbytes: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Nanoseconds on a monotonic clock shared by the whole process (counted
/// from its first read), cheap enough to read twice per task (see the
/// module docs).
#[inline]
pub fn now_ns() -> u64 {
    // One clock and its first raw reading, kept here rather than reached
    // through `quanta::Instant::now`: that path checks a thread-local
    // override (for quanta's mock clock), goes through quanta's own global
    // and converts through `Duration` and `u128`, ~60 instructions a read
    // against ~15 here (cachegrind of the million-task graph: the two reads
    // per task were 122 instructions, a third of what events cost it).
    static CLOCK: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
    let (clock, epoch) = CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        (clock, epoch)
    });
    clock.delta_as_nanos(*epoch, clock.raw())
}

/// Where and when a run happened, as the mode measured it (outside the
/// driver's lock), on [`now_ns`]'s clock.
#[derive(Clone, Copy, Debug)]
pub struct RunTimes {
    /// The worker's thread, or [`UNKNOWN_THREAD`].
    pub thread: u32,
    /// When the run started ([`now_ns`]).
    pub start_ns: u64,
    /// When the run stopped ([`now_ns`]).
    pub stop_ns: u64,
}

impl RunTimes {
    /// A run that took `micros` and whose end was seen at `at_ns`
    /// ([`now_ns`]): where the start was not measured on this clock
    /// (another process).
    pub fn ended_at(at_ns: u64, micros: u32) -> RunTimes {
        let start_ns = at_ns.saturating_sub(u64::from(micros) * 1000);
        RunTimes { thread: UNKNOWN_THREAD, start_ns, stop_ns: at_ns }
    }
}

/// Cumulative figures of one task name (one registered function).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuncTotals {
    /// Runs whose result went to memory.
    pub done: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs that ended late (result dropped).
    pub late: u64,
    /// Time spent running, summed over runs (ns).
    pub busy_ns: u64,
    /// Bytes of results produced.
    pub nbytes: u64,
}

/// Cumulative figures of the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tasks submitted (new tasks, not merged calls).
    pub submitted: u64,
    /// Runs handed to workers (transitions to `Processing`).
    pub started: u64,
    /// Runs whose result went to memory.
    pub done: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs that ended late.
    pub late: u64,
    /// Events fed to the scheduler (submissions count one per task).
    pub events: u64,
    /// Bytes of results produced.
    pub nbytes: u64,
    /// Bytes that crossed a process boundary (results from worker
    /// processes, inputs sent inline); 0 in the threads mode.
    pub transferred: u64,
}

/// What the driver records (see the module docs).
pub struct Events {
    /// When this driver started ([`now_ns`]).
    epoch_ns: u64,
    ring: Vec<RunRecord>,
    /// Records ever pushed; the next goes to `seq % RING_CAPACITY`.
    seq: u64,
    per_func: Vec<FuncTotals>,
    totals: Totals,
}

/// Records the ring grows by: most runs are short, so the ring's memory is
/// taken as it fills, not all at start.
const RING_CHUNK: usize = 4096;

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// Nothing recorded; the clock starts now.
    pub fn new() -> Events {
        Events { epoch_ns: now_ns(), ring: Vec::new(), seq: 0, per_func: Vec::new(), totals: Totals::default() }
    }

    /// Nanoseconds from this driver's start to `at_ns` ([`now_ns`]; 0
    /// before it).
    pub fn since_start(&self, at_ns: u64) -> u64 {
        at_ns.saturating_sub(self.epoch_ns)
    }

    /// A run ended.
    pub fn record(&mut self, record: RunRecord) {
        let t = &mut self.totals;
        let busy = record.stop_ns.saturating_sub(record.start_ns);
        let f = func_slot(&mut self.per_func, record.key.func);
        match record.outcome {
            Outcome::Done => {
                t.done += 1;
                f.done += 1;
            }
            Outcome::Failed => {
                t.failed += 1;
                f.failed += 1;
            }
            Outcome::Late => {
                t.late += 1;
                f.late += 1;
            }
        }
        t.nbytes += record.nbytes;
        f.nbytes += record.nbytes;
        f.busy_ns += busy;
        let at = (self.seq % RING_CAPACITY as u64) as usize;
        if at < self.ring.len() {
            self.ring[at] = record;
        } else {
            if self.ring.len() == self.ring.capacity() {
                self.ring.reserve_exact(RING_CHUNK.min(RING_CAPACITY - self.ring.len()));
            }
            self.ring.push(record);
        }
        self.seq += 1;
    }

    /// `n` new tasks were submitted (as `n` events).
    pub fn submitted(&mut self, n: u64) {
        self.totals.submitted += n;
        self.totals.events += n;
    }

    /// A run was handed to a worker.
    pub fn started(&mut self) {
        self.totals.started += 1;
    }

    /// One event went to the scheduler.
    pub fn event(&mut self) {
        self.totals.events += 1;
    }

    /// `bytes` crossed a process boundary.
    pub fn transferred(&mut self, bytes: u64) {
        self.totals.transferred += bytes;
    }

    /// The cumulative totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The cumulative figures per task name, by registry index (`func`).
    pub fn per_func(&self) -> &[FuncTotals] {
        &self.per_func
    }

    /// Records ever made (the sequence number of the next one).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The records from sequence number `since` on (those still in the
    /// ring, oldest first), at most `max` of them (the newest), and the
    /// sequence number to ask from next time.
    pub fn since(&self, since: u64, max: usize) -> (Vec<RunRecord>, u64) {
        let oldest = self.seq.saturating_sub(self.ring.len() as u64);
        let from = since.max(oldest).max(self.seq.saturating_sub(max as u64));
        let out = (from..self.seq).map(|s| self.ring[(s % RING_CAPACITY as u64) as usize]).collect();
        (out, self.seq)
    }
}

fn func_slot(per_func: &mut Vec<FuncTotals>, func: u32) -> &mut FuncTotals {
    let i = func as usize;
    if per_func.len() <= i {
        per_func.resize(i + 1, FuncTotals::default());
    }
    &mut per_func[i]
}

/// Live tasks by state (as counted when asked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Known but not needed now (a released result kept as lineage).
    pub released: u64,
    /// Waiting for inputs.
    pub waiting: u64,
    /// Ready, queued in the scheduler for a free slot.
    pub queued: u64,
    /// Handed to a worker (running, or next in its queue).
    pub processing: u64,
    /// Result in memory.
    pub memory: u64,
    /// Failed.
    pub erred: u64,
}

impl StateCounts {
    /// Count one task in `state`.
    pub fn add(&mut self, state: TaskState) {
        match state {
            TaskState::Released => self.released += 1,
            TaskState::Waiting => self.waiting += 1,
            TaskState::Ready => self.queued += 1,
            TaskState::Processing => self.processing += 1,
            TaskState::Memory => self.memory += 1,
            TaskState::Erred => self.erred += 1,
        }
    }

    /// Every live task counted.
    pub fn total(&self) -> u64 {
        self.released + self.waiting + self.queued + self.processing + self.memory + self.erred
    }
}

/// Live tasks by state, for all tasks and per task name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// All live tasks.
    pub all: StateCounts,
    /// Per task name, by registry index (`func`); names with no live task
    /// have all zeros.
    pub per_func: Vec<StateCounts>,
}

/// Everything a monitor reads in one look (taken under the driver's lock,
/// formatted outside it).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Run records since the sequence number asked for (at most as many as
    /// asked, the newest).
    pub runs: Vec<RunRecord>,
    /// The sequence number to ask from next time.
    pub next: u64,
    /// Nanoseconds since the driver started, when the snapshot was taken.
    pub now_ns: u64,
    /// Cumulative totals.
    pub totals: Totals,
    /// Cumulative totals per task name, by registry index.
    pub per_func: Vec<FuncTotals>,
    /// Live tasks by state.
    pub counts: TaskCounts,
    /// Runs handed to each worker and not finished, by worker.
    pub loads: Vec<(WorkerId, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(func: u32, i: u64, outcome: Outcome) -> RunRecord {
        RunRecord {
            key: Key { func, token: [i, 0] },
            worker: WorkerId(0),
            thread: 0,
            start_ns: i * 10,
            stop_ns: i * 10 + 5,
            nbytes: 8,
            outcome,
        }
    }

    #[test]
    fn the_ring_stays_bounded_and_totals_count_everything() {
        let mut ev = Events::new();
        let n = RING_CAPACITY as u64 + 1000;
        for i in 0..n {
            ev.record(rec((i % 3) as u32, i, if i % 10 == 0 { Outcome::Failed } else { Outcome::Done }));
        }
        assert_eq!(ev.ring.len(), RING_CAPACITY, "the ring never grows past its capacity");
        assert_eq!(ev.seq(), n);
        let t = ev.totals();
        assert_eq!(t.done + t.failed, n);
        assert_eq!(t.failed, n.div_ceil(10));
        assert_eq!(ev.per_func().iter().map(|f| f.done + f.failed).sum::<u64>(), n);
        assert_eq!(ev.per_func()[0].busy_ns, 5 * n.div_ceil(3));
        // A reader from the start gets only what is left, oldest first.
        let (got, next) = ev.since(0, usize::MAX);
        assert_eq!(next, n);
        assert_eq!(got.len(), RING_CAPACITY);
        assert_eq!(got[0].key.token[0], n - RING_CAPACITY as u64);
        assert_eq!(got.last().map(|r| r.key.token[0]), Some(n - 1));
        // A reader asking for the latest few.
        let (got, _) = ev.since(n - 5, usize::MAX);
        assert_eq!(got.iter().map(|r| r.key.token[0]).collect::<Vec<_>>(), (n - 5..n).collect::<Vec<_>>());
        let (got, _) = ev.since(0, 3);
        assert_eq!(got.iter().map(|r| r.key.token[0]).collect::<Vec<_>>(), (n - 3..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_run_ended_elsewhere_starts_its_duration_before_it_was_seen() {
        let at = now_ns() + 10_000_000;
        let t = RunTimes::ended_at(at, 1500);
        assert_eq!(t.stop_ns - t.start_ns, 1_500_000);
        assert_eq!(t.thread, UNKNOWN_THREAD);
    }
}
