//! The processes mode's constructors: `Client::processes(p)` and
//! `Client::processes_with(..)`; its options and store figures.

use std::path::PathBuf;
use std::time::Duration;

use shoal_shm::SpillIo;

use crate::client::{Client, ClientOptions};
use crate::engine::processes::{Config, ProcessesEngine, WORKER_HOOK};
use crate::error::{Error, Result};
use shoal_shm::store::{StoreConfig, StoreStats, default_memory_limit};

/// Settings of the processes mode.
///
/// ```no_run
/// use shoal::{Client, ClientOptions, ProcessesOptions};
///
/// let client = Client::processes_with(
///     ProcessesOptions { workers: 4, threads_per_worker: 2, ..ProcessesOptions::default() },
///     ClientOptions::default(),
/// )?;
/// # Ok::<(), shoal::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProcessesOptions {
    /// Worker processes (default: one per core; 0 is refused).
    pub workers: usize,
    /// Threads per worker process (default 1: the isolation is per process;
    /// 0 is refused).
    pub threads_per_worker: usize,
    /// Extra environment variables for the worker processes (for example
    /// `OMP_NUM_THREADS=1`). They inherit this process's environment besides.
    pub env: Vec<(String, String)>,
    /// Bytes of results the client's store keeps in shared memory; past
    /// it, the least recently used results spill to `spill_dir` and are
    /// read back when needed. Counted: results in segments (64 KiB and
    /// over), and the worker processes' own memory beyond what each holds
    /// idle (a running task's data and copies, measured every 10 ms), so
    /// results leave memory while tasks need it; small results travel
    /// inline and are not counted. A task that alone needs more than the
    /// limit still runs.
    ///
    /// `None` (the default): half of the machine's memory (`MemTotal` in
    /// `/proc/meminfo`), or of this process's memory cgroup limit if lower
    /// (the tightest from its own cgroup, as `/proc/self/cgroup` names it,
    /// up to the root; cgroup v2 or v1) — like Dask, which bounds workers
    /// by the machine's memory and spills well before it. `Some(u64::MAX)` turns spilling off.
    pub memory_limit: Option<u64>,
    /// Where spill files go: shoal makes its own directory inside,
    /// `shoal-spill-<pid>-<n>`, removes it at shutdown, and at start removes
    /// those of clients that died (killed, crashed) without doing so.
    /// `None` (the default): the system's temporary directory
    /// (`std::env::temp_dir()`, so `TMPDIR` if set). Choose a local disk:
    /// spilling to tmpfs frees no memory. A directory given here must
    /// exist: a missing one is refused with [`Error::InvalidOption`], never
    /// created.
    pub spill_dir: Option<PathBuf>,
    /// Spill I/O: io_uring where the kernel allows it, detected at start
    /// (`Auto`, the default), or positioned I/O (`pwrite`/`pread`) always.
    /// [`StoreStats::spill_io`] says which is in use.
    pub spill_io: SpillIo,
    /// A worker process not heard from for this long is declared lost:
    /// killed (SIGKILL) and replaced, its runs sent elsewhere — Dask's
    /// `worker-ttl`. Each worker sends a heartbeat from a thread of its own
    /// every quarter of this (at most every second), whatever its tasks do,
    /// so a long task is not silence; a stopped (SIGSTOP) or wedged process
    /// is. Default: 60 s. `None`: never (and no heartbeats). A zero
    /// duration is refused.
    pub worker_ttl: Option<Duration>,
}

/// The default [`ProcessesOptions::worker_ttl`]: long against any pause of
/// a healthy process (a swap storm, a debugger's breakpoint, a busy
/// machine), short against a job waiting for a stopped one.
pub const DEFAULT_WORKER_TTL: Duration = Duration::from_secs(60);

impl Default for ProcessesOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ProcessesOptions {
            workers: cores,
            threads_per_worker: 1,
            env: Vec::new(),
            memory_limit: None,
            spill_dir: None,
            spill_io: SpillIo::Auto,
            worker_ttl: Some(DEFAULT_WORKER_TTL),
        }
    }
}

impl ProcessesOptions {
    /// Refuse what shoal would otherwise have to correct silently.
    fn check(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidOption(message));
        if self.workers == 0 {
            return invalid(
                "ProcessesOptions::workers is 0 (Client::processes(0)): at least one worker process is needed \
                 (the default is one per core)"
                    .into(),
            );
        }
        if self.threads_per_worker == 0 {
            return invalid("ProcessesOptions::threads_per_worker is 0: each worker needs at least one thread".into());
        }
        if self.worker_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return invalid(
                "ProcessesOptions::worker_ttl is zero: every worker would be declared lost at once; give a \
                 duration (default 60 s), or None to never declare a silent worker lost"
                    .into(),
            );
        }
        if let Some(dir) = &self.spill_dir
            && !dir.is_dir()
        {
            return invalid(format!(
                "ProcessesOptions::spill_dir {} is not an existing directory; create it first \
                 (shoal does not, so that a mistyped path cannot put spill files somewhere unexpected), \
                 or leave spill_dir at None for the system's temporary directory",
                dir.display()
            ));
        }
        Ok(())
    }
}

impl Client {
    /// `p` worker processes on this machine, each one thread: the user's
    /// own binary, started again as workers. Results live in shared memory
    /// and are read in place by the tasks that take them as `&Archived<T>`.
    ///
    /// A worker that dies (crash, abort, SIGKILL, out of memory) loses only
    /// its results: they are recomputed, and the worker is replaced. Workers
    /// die with this process. Call [`shoal::init()`](crate::init) first in
    /// `main` (binaries whose `main` is not yours — tests, benchmarks — work
    /// without it on Linux).
    pub fn processes(p: usize) -> Result<Client> {
        Client::processes_with(ProcessesOptions { workers: p, ..ProcessesOptions::default() }, ClientOptions::default())
    }

    /// [`processes`](Client::processes) with options. Fails with
    /// [`Error::FingerprintMismatch`](crate::Error::FingerprintMismatch) if
    /// a worker runs a different registry of tasks.
    pub fn processes_with(processes: ProcessesOptions, options: ClientOptions) -> Result<Client> {
        processes.check()?;
        // Keep the worker hook linked into every binary that can start
        // workers: an unreferenced static could be left out by the linker.
        #[cfg(target_os = "linux")]
        std::hint::black_box(&WORKER_HOOK);
        let engine = ProcessesEngine::start(Config {
            workers: processes.workers,
            threads_per_worker: processes.threads_per_worker,
            env: processes.env,
            worker_ttl: processes.worker_ttl,
            store: StoreConfig {
                memory_limit: processes.memory_limit.unwrap_or_else(default_memory_limit),
                spill_parent: processes.spill_dir.unwrap_or_else(std::env::temp_dir),
                spill_io: processes.spill_io,
                descriptors: None,
            },
        })?;
        Client::from_engine(engine, options)
    }

    /// The process ids of the live worker processes (empty in the threads
    /// mode). A replaced worker has a new pid. Meant for monitoring and
    /// tests (e.g. to kill one and watch the job recover).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.engine().worker_pids()
    }

    /// The result store's memory and spill figures (processes mode; `None`
    /// in the threads mode, which keeps results as values and has no limit).
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.engine().store_stats()
    }

    /// How many runs the client sent to worker processes, and how many
    /// moved from one worker process to another without it (processes
    /// mode; `None` in the other modes). Meant for monitoring and tests.
    pub fn steal_stats(&self) -> Option<StealStats> {
        self.engine().steal_stats()
    }
}

/// Runs sent and moved in the processes mode ([`Client::steal_stats`]).
///
/// An idle worker process takes runs queued on a busy one of the same
/// machine directly, worker to worker: the client orders the move, but
/// neither the runs nor their inputs pass through it, and it does not send
/// them again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealStats {
    /// Runs the client sent to workers.
    pub runs_sent: u64,
    /// Of those, runs of a task the client had sent a run of before (a
    /// retry, a recomputation, a run back from a lost worker).
    pub runs_sent_again: u64,
    /// Runs that moved from one worker process to another before they
    /// started.
    pub moves: u64,
}
