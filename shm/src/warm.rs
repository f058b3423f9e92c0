//! Warm memory for results: a memory file whose pages are allocated and
//! mapped writable before a result needs them, so that a producer writes
//! its archive at memory speed instead of faulting every page in.
//!
//! Why: a segment is fresh memory, and on this kind of virtual machine
//! making a page present costs about a microsecond (allocation, zeroing,
//! the page-table entry: ~1 GB/s per core, against ~8 GB/s for a copy into
//! memory already mapped). A sealed segment can never be written again, so
//! the memory of released results cannot be recycled without giving up the
//! seals; what a pool can do is make the next file's pages *ahead of need*,
//! on its own thread, while the producer computes (see ARCHITECTURE.md,
//! "Warm memory for results", for what was measured and why this shape).
//!
//! # Protocol
//!
//! 1. **Fill.** The pool's filler thread makes a memory file of the
//!    capacity it wants (`memfd_create`, close-on-exec), maps it read-write
//!    (not inherited by a fork) and populates every page
//!    (`MADV_POPULATE_WRITE`), then holds it ready. One file at a time.
//!    It makes the file [`CHUNK`] by [`CHUNK`] (allocate, populate), and
//!    checks between chunks whether a producer claimed it.
//! 2. **Take.** A producer's [`GrowingSegment`](crate::growing::GrowingSegment)
//!    takes the ready file at its first reserve ([`WarmPool::take`]) and is
//!    from then on its only owner (small results, under [`MIN_FILE`] after
//!    small ones, take none and start nothing). If the file is still being made, the
//!    producer claims it and gets it at the end of the current chunk, its
//!    first part warm (the filler's work is never lost, the producer never
//!    waits for more than a chunk, at most [`CLAIM_WAIT`]); a segment that
//!    gets none makes a fresh file as before.
//! 3. **Seal** as any growing segment: unmapped, cut to the archive's length
//!    (the unwritten tail's pages are freed), sealed, mapped read-only.
//!    [`WarmPool::sealed`] sizes the next file after the result's length
//!    and wakes the filler (none after a result under [`MIN_FILE`]):
//!    results of a graph tend to be alike, so little is made for nothing.
//! 4. **Idle.** A file ready for [`IDLE`] and not taken is freed: the pool
//!    holds memory only while results are being made.
//!
//! # Invariants
//!
//! - A pool file has one owner at a time — the filler, the pool, one
//!   writer — and only that owner holds its descriptor and mapping. Its
//!   descriptor is never sent: no reader can see it before it is sealed,
//!   exactly as for a file the writer made itself.
//! - A file serves one result only, and is never reused after sealing:
//!   readers' bytes are guarded by the seals as before, and every pool
//!   file starts zero-filled (nothing of an earlier result can show).
//! - A killed process leaks nothing: the pool's file is a descriptor and a
//!   mapping of this process; the filler thread ends with its pool.
//! - Worker processes have a pool ([`enable`]); a client has none. It
//!   holds at most `budget` bytes ([`ENV_WARM_MEMORY`]). They are
//!   shared memory of this process, outside the store's memory limit.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use memmap2::{Advice, MmapMut};

use crate::ShmError;

/// The environment variable that sets a process's pool budget in bytes
/// (`0` turns warm memory off). Default: [`default_budget`].
pub const ENV_WARM_MEMORY: &str = "SHOAL_WARM_MEMORY";

/// The smallest file the pool makes: below 1 MiB a result faults its
/// pages in within a millisecond, and the pool's thread would cost more.
pub const MIN_FILE: usize = 1 << 20;

/// A file has room for a result this much longer than the last, as a
/// fraction of it (1/64: 1.6%), rounded up to whole pages: results of a
/// graph tend to be alike, and a longer one grows its file with fresh pages
/// for the excess only. Kept small because the unused tail is populated
/// and then freed at the seal: with 2 MiB steps (before), a replayed
/// rechunk's 6.4 MB results wasted 2 MB each, a third of their filling.
const SLACK_DIVISOR: usize = 64;

/// The page size files are rounded to.
const PAGE: usize = 4096;

/// The default budget's share of the machine's (or cgroup's) memory: a
/// sixteenth, so that a 1 GiB result fits on a 16 GiB machine.
const DEFAULT_SHARE: u64 = 16;

/// The filler makes a file by steps of this many bytes (32 MiB: tens of
/// milliseconds), so that a producer that claims it waits no longer.
pub const CHUNK: usize = 32 << 20;

/// The longest a producer waits for a claimed file (a loaded machine can
/// stall the filler): past it, it makes its own.
pub const CLAIM_WAIT: Duration = Duration::from_millis(100);

/// A ready file nobody took for this long is freed: long enough for a task
/// to compute its next result (a task longer than this pays for its
/// faults, a small share of its run), short enough that an idle process
/// does not hold the memory for long.
pub const IDLE: Duration = Duration::from_secs(30);

/// A file whose pages are allocated, mapped read-write and populated.
pub struct WarmFile {
    pub(crate) fd: OwnedFd,
    pub(crate) map: MmapMut,
}

/// What a pool did, for tests and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Files made (populated) by the filler.
    pub made: u64,
    /// Files a segment took ready.
    pub taken: u64,
    /// Files a segment claimed while they were being made, and got with
    /// their first chunks populated.
    pub handed: u64,
    /// First reserves that found no ready file.
    pub missed: u64,
    /// Ready files freed after [`IDLE`].
    pub idle_freed: u64,
}

/// A process's warm memory (see the module docs).
pub struct WarmPool {
    shared: Arc<Shared>,
}

struct Shared {
    budget: usize,
    idle: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    ready: Option<WarmFile>,
    /// The capacity of the next file; 0 until a result asked.
    want: usize,
    filler: bool,
    closed: bool,
    /// Making a file failed: the pool stays empty.
    broken: bool,
    /// The filler is making a file.
    making: bool,
    /// A producer waits for the file being made.
    claimed: bool,
    /// When the ready file became ready.
    ready_since: Option<Instant>,
    /// The next file's name: the last taker's, up to its last `-`, then
    /// `warm` (`shoal-w<pid>-t3.0` → `shoal-w<pid>-warm`), so that a
    /// segment still names the process that made it.
    name: String,
    stats: WarmStats,
}

impl WarmPool {
    /// A pool of at most `budget` bytes; its filler starts at the first
    /// [`take`](Self::take).
    pub fn new(budget: usize) -> WarmPool {
        WarmPool::with_idle(budget, IDLE)
    }

    /// As [`new`](Self::new), freeing a ready file after `idle` instead of
    /// [`IDLE`].
    pub fn with_idle(budget: usize, idle: Duration) -> WarmPool {
        let shared = Shared { budget, idle, state: Mutex::new(State::default()), wake: Condvar::new() };
        WarmPool { shared: Arc::new(shared) }
    }

    /// The pool's budget in bytes.
    pub fn budget(&self) -> usize {
        self.shared.budget
    }

    /// The ready file, if there is one; either way the filler makes the
    /// next (at least `need` bytes, within the budget, if no result has
    /// told its size yet), named after `name` (the taker's segment's).
    pub fn take(&self, need: usize, name: &str) -> Option<WarmFile> {
        let mut state = self.shared.lock();
        let prefix = name.rfind('-').map_or("shoal-", |at| &name[..=at]);
        if !state.name.starts_with(prefix) || state.name.len() != prefix.len() + "warm".len() {
            state.name = format!("{prefix}warm");
        }
        if let Some(file) = state.ready.take() {
            state.stats.taken += 1;
            // The next file is made once this result is sealed, at its size
            // (`sealed`): none if it ends small.
            state.want = 0;
            return Some(file);
        }
        if state.want == 0 {
            if need < MIN_FILE {
                // Small results (the last one was, and this one starts
                // small): they fault their few pages in faster than a file
                // is made, and a file made for them would mostly be cut.
                return None;
            }
            state.want = self.shared.size_for(need);
        }
        if !state.filler && !state.broken {
            let shared = Arc::clone(&self.shared);
            match std::thread::Builder::new().name("shoal-warm".into()).spawn(move || shared.fill()) {
                Ok(_) => state.filler = true,
                Err(e) => {
                    tracing::warn!("warm memory is off: cannot start its thread ({e})");
                    state.broken = true;
                }
            }
        }
        // None ready: the filler is making one (or starts now): claim it.
        let deadline = Instant::now() + CLAIM_WAIT;
        state.claimed = true;
        self.shared.wake.notify_all();
        while state.ready.is_none() && state.filler && !state.broken && !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.wake.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.claimed = false;
        let file = state.ready.take();
        match file {
            Some(_) => {
                state.stats.handed += 1;
                state.want = 0;
            }
            None => state.stats.missed += 1,
        }
        self.shared.wake.notify_all();
        file
    }

    /// A result of `len` bytes was sealed: the next file is made for one
    /// like it, none after a result under [`MIN_FILE`].
    pub fn sealed(&self, len: usize) {
        let want = if len < MIN_FILE { 0 } else { self.shared.size_for(len) };
        self.shared.lock().want = want;
        self.shared.wake.notify_all();
    }

    /// Waits up to `timeout` for a ready file, if one is wanted or being
    /// made (tests and the benchmark: a producer never waits).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        // Only a file wanted or being made is waited for.
        while state.ready.is_none() && !state.broken && (state.want > 0 || state.making) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.shared.wake.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.ready.is_some()
    }

    /// The capacity of the ready file, if any.
    pub fn ready_capacity(&self) -> Option<usize> {
        self.shared.lock().ready.as_ref().map(|f| f.map.len())
    }

    /// What the pool did so far.
    pub fn stats(&self) -> WarmStats {
        self.shared.lock().stats
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.ready = None;
        self.shared.wake.notify_all();
    }
}

/// See [`Shared::size_for`].
fn size_for(len: usize, budget: usize) -> usize {
    let room = len.saturating_add(len / SLACK_DIVISOR);
    room.checked_next_multiple_of(PAGE).unwrap_or(usize::MAX).clamp(MIN_FILE, budget.max(MIN_FILE))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The capacity for a result of `len` bytes: room for one a little
    /// longer ([`SLACK_DIVISOR`]), in whole pages, within bounds.
    fn size_for(&self, len: usize) -> usize {
        size_for(len, self.budget)
    }

    /// The filler thread: makes a file whenever none is ready and a size is
    /// wanted; frees a ready file left idle; ends when the pool is dropped.
    fn fill(&self) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let idle = state.ready_since.is_some_and(|t| t.elapsed() >= self.idle);
            if state.ready.is_some() && idle {
                let file = state.ready.take();
                state.stats.idle_freed += 1;
                // Nothing is wanted until the next take (a file freed now
                // would else be made again at once).
                state.want = 0;
                drop(state);
                drop(file);
                state = self.lock();
                continue;
            }
            if state.ready.is_none() && state.want > 0 {
                let (want, name) = (state.want, state.name.clone());
                state.making = true;
                drop(state);
                let made = self.make(want, &name);
                state = self.lock();
                state.making = false;
                match made {
                    Ok(file) if !state.closed => {
                        state.ready = Some(file);
                        state.ready_since = Some(Instant::now());
                        state.stats.made += 1;
                        self.wake.notify_all();
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!("warm memory is off: {e}");
                        state.broken = true;
                        self.wake.notify_all();
                        return;
                    }
                }
                continue;
            }
            let wait = match state.ready_since {
                Some(t) if state.ready.is_some() => self.idle.saturating_sub(t.elapsed()).max(Duration::from_millis(1)),
                _ => self.idle,
            };
            state = match self.wake.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

impl Shared {
    /// A fresh file of `len` bytes, mapped read-write, its pages present —
    /// all of them, or the first chunks if a producer claimed it meanwhile
    /// (or the pool was dropped).
    fn make(&self, len: usize, name: &str) -> Result<WarmFile, ShmError> {
        let (fd, map) = crate::growing::create(name, len)?;
        let mut at = 0;
        while at < len {
            let step = CHUNK.min(len - at);
            // Pages first, then their page-table entries: on this VM
            // allocating with `fallocate` and then populating the mapping
            // took ~0.85 s per GiB, populating an empty file ~1.1–1.5 s
            // (ARCHITECTURE.md).
            let (offset, size) = (at as u64, step as u64);
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), offset, size)
                .map_err(|source| ShmError::Resize { len, source })?;
            map.advise_range(Advice::PopulateWrite, at, step).map_err(|source| ShmError::Map {
                len,
                writable: true,
                source,
            })?;
            at += step;
            let state = self.lock();
            if state.claimed || state.closed {
                break;
            }
        }
        Ok(WarmFile { fd, map })
    }
}

/// The budget when [`ENV_WARM_MEMORY`] is not set: a sixteenth of the
/// machine's memory, or of this process's cgroup limit if lower.
pub fn default_budget() -> usize {
    let machine = crate::limits::machine_memory();
    let memory = match (machine, crate::limits::cgroup_memory_limit()) {
        (Some(m), Some(c)) => m.min(c),
        (m, c) => m.or(c).unwrap_or(0),
    };
    usize::try_from(memory / DEFAULT_SHARE).unwrap_or(usize::MAX)
}

/// The process's pool, if [`enable`] (or [`set_global`]) made one: worker
/// processes do, where results are made; a client keeps none (a pool
/// would hold a memory file after the client is gone, and the literals it
/// publishes are not worth one).
pub fn global() -> Option<Arc<WarmPool>> {
    GLOBAL.get().and_then(|slot| slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
}

/// Gives this process a pool of [`ENV_WARM_MEMORY`] bytes (or
/// [`default_budget`]); a second call changes nothing.
pub fn enable() {
    GLOBAL.get_or_init(|| {
        let budget = match std::env::var(ENV_WARM_MEMORY) {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!("{ENV_WARM_MEMORY}={v:?} is not a number of bytes; warm memory is off");
                0
            }),
            Err(_) => default_budget(),
        };
        Mutex::new(pool_of(budget))
    });
}

/// Replaces the process's pool by one of `budget` bytes (0: none), as if
/// [`ENV_WARM_MEMORY`] said so (the benchmark compares both).
pub fn set_global(budget: usize) {
    let slot = GLOBAL.get_or_init(|| Mutex::new(None));
    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = pool_of(budget);
}

fn pool_of(budget: usize) -> Option<Arc<WarmPool>> {
    (budget >= MIN_FILE).then(|| Arc::new(WarmPool::new(budget)))
}

static GLOBAL: OnceLock<Mutex<Option<Arc<WarmPool>>>> = OnceLock::new();

#[cfg(test)]
mod tests {

    use shoal_core::object::{ArchiveIn, Object, Value, read_owned};

    use super::*;
    use crate::growing::GrowingSegment;
    use crate::segment::REQUIRED_SEALS;
    use crate::{Segment, SegmentObject};

    const WAIT: Duration = Duration::from_secs(60);

    /// A pool whose ready file is not freed while a slow (debug, loaded)
    /// test prepares its next value.
    fn pool(budget: usize) -> Arc<WarmPool> {
        Arc::new(WarmPool::with_idle(budget, Duration::from_secs(3600)))
    }

    /// `value` published through `pool` into a segment called `name`.
    fn publish(pool: &Arc<WarmPool>, value: Vec<u8>, name: &str) -> Segment {
        let obj = Value::new(value);
        let sink = Box::new(GrowingSegment::with_pool(name.into(), Some(Arc::clone(pool))));
        match obj.archive_or_sink(64 << 10, sink).unwrap() {
            ArchiveIn::Sunk { sink, len } => sink.into_any().downcast::<GrowingSegment>().unwrap().seal(len).unwrap(),
            ArchiveIn::Kept => panic!("a large value was kept"),
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
    }

    fn read(segment: &Segment) -> Vec<u8> {
        let fd = segment.try_clone_fd().unwrap();
        read_owned::<Vec<u8>>(&SegmentObject::new(Segment::from_fd(fd).unwrap())).unwrap()
    }

    /// Lines of `/proc/self/maps` and targets of `/proc/self/fd` naming `name`.
    fn held(name: &str) -> (usize, usize) {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps.lines().filter(|l| l.contains(name)).count();
        let fds = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains(name))
            .count();
        (mapped, fds)
    }

    #[test]
    fn a_warm_file_is_taken_written_and_sealed_like_a_fresh_one() {
        let pool = pool(8 << 20);
        let name = "shoal-test-warm1-t1";
        // The first result finds nothing ready: it claims the file the
        // filler starts making for it.
        let first = publish(&pool, pattern(3 << 20, 1), name);
        assert_eq!((pool.stats().handed, pool.stats().taken), (1, 0), "{:?}", pool.stats());
        assert!(pool.wait_ready(WAIT), "the filler makes a file");
        // Sized after the first result (3 MiB and a few bytes), with a
        // little room, in pages.
        let cap = pool.ready_capacity().unwrap();
        assert!((3 << 20) + (48 << 10) < cap && cap <= (3 << 20) + (56 << 10), "{cap}");
        let second = publish(&pool, pattern(3 << 20, 2), name);
        assert_eq!(pool.stats().taken, 1);
        for (segment, seed) in [(&first, 1), (&second, 2)] {
            let seals = rustix::fs::fcntl_get_seals(segment.as_fd()).unwrap();
            assert!(seals.contains(REQUIRED_SEALS), "{seals:?}");
            assert_eq!(read(segment), pattern(3 << 20, seed));
        }
        // The warm file kept its process's name; no writable mapping of
        // it is left once sealed (only read-only ones; the pool's next file
        // is another inode).
        let inode = rustix::fs::fstat(second.as_fd()).unwrap().st_ino.to_string();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mine: Vec<&str> = maps.lines().filter(|l| l.split_whitespace().nth(4) == Some(&inode[..])).collect();
        assert!(!mine.is_empty() && mine.iter().all(|l| l.contains("/memfd:shoal-test-warm1-warm")), "{mine:?}");
        assert!(mine.iter().all(|l| l.split_whitespace().nth(1).is_some_and(|p| p.starts_with("r--"))), "{mine:?}");
    }

    #[test]
    fn a_ready_file_is_refused_by_readers_until_sealed() {
        let pool = pool(2 << 20);
        drop(pool.take(1 << 20, "shoal-test-warm2-t1"));
        pool.sealed(1 << 20);
        assert!(pool.wait_ready(WAIT));
        let file = pool.take(1 << 20, "shoal-test-warm2-t1").unwrap();
        assert!(file.map.iter().all(|&b| b == 0), "a warm file starts zero-filled");
        let leaked = file.fd.try_clone().unwrap();
        assert!(matches!(Segment::from_fd(leaked), Err(crate::ShmError::NotSealed { .. })));
    }

    #[test]
    fn bytes_a_reader_saw_do_not_change_while_the_pool_makes_and_hands_out_more() {
        let pool = pool(4 << 20);
        let name = "shoal-test-warm3-t1";
        drop(publish(&pool, pattern(2 << 20, 0), name));
        assert!(pool.wait_ready(WAIT));
        let seen = publish(&pool, pattern(2 << 20, 7), name);
        let before = seen.bytes().to_vec();
        for seed in 10..16 {
            assert!(pool.wait_ready(WAIT));
            drop(publish(&pool, pattern(2 << 20, seed), name));
        }
        assert!(pool.stats().taken >= 6, "{:?}", pool.stats());
        assert_eq!(seen.bytes(), &before[..]);
        assert_eq!(read(&seen), pattern(2 << 20, 7));
        assert_eq!(rustix::io::pwrite(seen.as_fd(), b"x", 0), Err(rustix::io::Errno::PERM));
    }

    #[test]
    fn a_result_larger_than_the_pool_still_works() {
        let pool = pool(MIN_FILE);
        let name = "shoal-test-warm4-t1";
        drop(pool.take(MIN_FILE, name));
        pool.sealed(MIN_FILE);
        assert!(pool.wait_ready(WAIT));
        let big = publish(&pool, pattern(9 << 20, 3), name);
        assert_eq!(pool.stats().taken, 1);
        assert_eq!(read(&big), pattern(9 << 20, 3));
        // Sized to the budget, not to the result.
        assert!(pool.wait_ready(WAIT));
        assert_eq!(pool.ready_capacity(), Some(MIN_FILE));
    }

    #[test]
    fn many_results_leave_no_descriptor_or_mapping_behind() {
        let name = "shoal-test-warm5";
        {
            let pool = pool(2 << 20);
            for i in 0..24u8 {
                if i % 2 == 0 {
                    // Half of them find a file ready, half claim one.
                    pool.wait_ready(WAIT);
                }
                let len = (1 << 20) + usize::from(i) * 4096;
                let segment = publish(&pool, vec![i; len], &format!("{name}-t{i}"));
                let bytes = read(&segment);
                assert!(bytes.len() == len && bytes[0] == i && bytes[len - 1] == i);
            }
            // Every result took a file ready, was handed one being made, or
            // missed; which of them depends on the filler's pace (a release
            // build's producer may outrun it), so only the sums are fixed.
            let s = pool.stats();
            assert_eq!(s.taken + s.handed + s.missed, 24, "{s:?}");
            assert!(s.taken + s.handed >= 12, "the half that waited got a file: {s:?}");
            pool.wait_ready(WAIT);
            assert!(held(name).1 >= 1, "the ready file is held");
        }
        // The pool dropped its ready file; its filler ends.
        let deadline = Instant::now() + WAIT;
        while held(name) != (0, 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(held(name), (0, 0), "descriptors or mappings left");
    }

    #[test]
    fn an_idle_file_is_freed_and_made_again_at_the_next_take() {
        let pool = Arc::new(WarmPool::with_idle(2 << 20, Duration::from_millis(100)));
        let name = "shoal-test-warm6-t1";
        drop(pool.take(1 << 20, name));
        pool.sealed(1 << 20);
        assert!(pool.wait_ready(WAIT));
        let deadline = Instant::now() + WAIT;
        while pool.stats().idle_freed == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.stats().idle_freed, 1);
        assert_eq!(pool.ready_capacity(), None);
        // The count comes first, the filler closes the file a moment after.
        let deadline = Instant::now() + WAIT;
        while held("shoal-test-warm6-warm") != (0, 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(held("shoal-test-warm6-warm"), (0, 0));
        drop(pool.take(1 << 20, name));
        pool.sealed(1 << 20);
        assert!(pool.wait_ready(WAIT), "made again");
    }

    #[test]
    fn a_file_being_made_is_handed_to_the_producer_that_claims_it() {
        // Many chunks: a claim arrives long before the file is complete.
        let budget = 64 * CHUNK;
        let pool = pool(budget);
        pool.sealed(budget - (2 << 20));
        let name = "shoal-test-warm7-t1";
        let started = Instant::now();
        let file = pool.take(1, name).expect("the file being made is handed over");
        let waited = started.elapsed();
        assert_eq!(file.map.len(), budget);
        assert_eq!(pool.stats().handed, 1, "{:?}", pool.stats());
        assert!(waited <= CLAIM_WAIT + Duration::from_millis(100), "{waited:?}");
        // A partly populated file is written and sealed as any other.
        let mut segment = GrowingSegment::with_pool(name.into(), None);
        segment.file = Some((file.fd, file.map));
        let room = shoal_core::object::ArchiveSink::reserve(&mut segment, 3 * CHUNK).unwrap();
        room[..3 * CHUNK].fill(9);
        let sealed = segment.seal(3 * CHUNK).unwrap();
        assert!(sealed.bytes().iter().step_by(4096).all(|&b| b == 9));
    }

    #[test]
    fn a_file_has_little_room_beyond_the_last_result() {
        let budget = 1 << 30;
        // A rechunk's 6.4 MB slice: room for 100 KB more, not 2 MB.
        let cap = size_for(6_400_008, budget);
        assert_eq!(cap % PAGE, 0);
        assert!((6_400_008 + 100_000..6_400_008 + 100_000 + PAGE).contains(&cap), "{cap}");
        assert_eq!(size_for(10, budget), MIN_FILE, "at least the smallest file");
        assert_eq!(size_for(budget, budget), budget, "at most the budget");
        assert_eq!(size_for(usize::MAX, budget), budget, "no overflow");
    }

    #[test]
    fn small_results_make_no_file() {
        let pool = pool(64 << 20);
        let name = "shoal-test-warm8";
        for i in 0..8u8 {
            let segment = publish(&pool, vec![i; 200 << 10], &format!("{name}-t{i}"));
            assert_eq!(read(&segment).len(), 200 << 10);
        }
        assert_eq!(pool.stats().made, 0, "{:?}", pool.stats());
        assert_eq!(held(&format!("{name}-warm")), (0, 0));
        // A large one after them starts the pool.
        drop(publish(&pool, vec![1; 3 << 20], &format!("{name}-t9")));
        assert!(pool.wait_ready(WAIT));
        assert!(pool.ready_capacity().is_some_and(|cap| cap > 3 << 20));
        // A small one takes the ready file (it cannot know it ends small)
        // and no other is made after it.
        drop(publish(&pool, vec![2; 200 << 10], &format!("{name}-t10")));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(pool.ready_capacity(), None);
    }
}
