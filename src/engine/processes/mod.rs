//! The processes engine: the scheduler state machine in the client process,
//! tasks in worker processes re-executed from this binary
//! (`Client::processes(p)`), results in shared memory.
//!
//! # Pieces
//!
//! - this module: the engine — start, submission, waiting, shutdown — and
//!   the [`Engine`] implementation;
//! - [`state`]: what the engine keeps under its lock (scheduler, task specs,
//!   the client's store of results) and how scheduler actions are applied;
//! - [`store`]: the store of results under the memory limit — which are in
//!   shared memory, which are spilled to disk, and the moves between;
//! - [`workers`]: worker connections, their messages, the runs sent to
//!   them, the steals between them;
//! - [`supervisor`]: starts, replaces, stops and reaps worker processes, and
//!   runs one reader thread per worker connection;
//! - [`worker`]: the worker process (and the hook that makes a re-executed
//!   binary one);
//! - [`protocol`]: the messages and their checks; [`objects`]: inline
//!   archives and segments.
//!
//! # Protocol
//!
//! ```text
//! client                                       worker W (a process)
//!   spawn /proc/self/exe --shoal-worker  ───►  hook before main: PDEATHSIG, checks
//!                                        ◄───  Hello { fingerprint, pid }
//!   fingerprint ≠ ours: refuse (kill)
//!   else WorkerJoined { W, threads }
//!   a socket pair per other live worker P:
//!   Peer { P } + fd                      ───►  reader polls it beside the client's socket
//!   (and Peer { W } + the other end to P)
//!   scheduler: Run { T, W }, … (one pass)
//!   Runs [{ T, func, inputs: inline | fd }, …]
//!                                        ───►  reader: queue each run, its claim QUEUED
//!                                              pool thread: claim QUEUED → STARTED, invoke(T)
//!                                        ◄───  Results [Done { T, inline | fd, nbytes } | Failed { T, kind, message }, …]
//!   TaskFinished / TaskFailed
//!   nothing queued, W has a thread idle,
//!   V has more runs than threads:
//!   Give { count, to: W }                ───►  V's reader: claim QUEUED → STOLEN on up to
//!                                              `count` runs not started, newest first
//!                                        ◄───  Gave { [T, …], to: W } (V's sender thread, first)
//!                                              then Runs [T, …] + input fds, V → W on their pair
//!                                        ◄───  Adopted { [T, …], from: V } (on W's connection,
//!                                              before any result of T)
//!   the first of the two: TaskMoved { T, from: V, to: W } (no Run sent)
//!                                        ◄───  PeerGone(V) (on W's, when their pair ends)
//!   scheduler: Recall { T, W } (T cancelled, dropped, …)
//!   Recall [T, …]                        ───►  reader: claim QUEUED → STOLEN on those not started
//!                                        ◄───  Recalled [T, …] (if any; the others answer as they end)
//!   TaskStolen { T, from: W, to: None }: T's slot on W is free
//!                                        ◄───  Running [T, …] (heartbeat thread, every worker_ttl / 4;
//!                                              and before a run sent with report_start)
//!   TaskStarted { T, W }: a loss of W now counts against T
//!   W silent past worker_ttl: SIGKILL W (then as below)
//!   Shutdown (client dropped)            ───►  exit
//!   EOF / bad frame on W's socket: ProcessLost { W, heir: STORE }, kill and reap W, start a replacement
//! ```
//!
//! # Batches, and who wakes whom
//!
//! A message costs a `sendmsg`, a `recvmsg` and, above all, the wake-up of
//! the thread that reads it; so messages carry everything there is to send
//! at the moment they are sent, and nothing waits for a timer:
//!
//! - **Runs.** One pass over the scheduler's actions (a submission, or the
//!   messages of one reader pass) sends each worker all its runs in one
//!   `Runs` frame — cut into several only when its descriptors exceed
//!   `MAX_FDS_PER_MESSAGE` or its bytes `uds::codec::FRAME_BUDGET` — right
//!   after the engine lock is released.
//! - **Client readers.** A reader woken by one frame takes every complete
//!   frame already there, then handles them all under one lock: their
//!   results, one scheduler pass, one batch of runs per worker.
//! - **Worker replies.** A pool thread that finishes a run while other runs
//!   are queued in its worker leaves the result in an outbox (and wakes the
//!   worker's sender thread, which sends whatever the outbox holds when it
//!   runs); the one that finishes the last queued run sends the outbox
//!   itself. So a batch of short runs goes back in a frame or two, and a
//!   result never waits for another task to finish.
//! - **Pacing.** How many runs a worker holds bounds how many travel in
//!   one batch, so the client sets the scheduler's saturation (`extra`
//!   slots per thread, `Event::Saturation`) from how long runs take, as
//!   workers measure it (`shoal_core::driver::pacing::Pacing`): about a millisecond of work
//!   per thread, between 1 and 64 runs beyond the running one
//!   ([`EXTRA_SLOTS_PER_THREAD`] until the first results). Short tasks then
//!   go to a worker by the dozen; long ones one or two at a time, so the
//!   scheduler's priorities and stealing keep their say.
//! - Readers wait in `poll` rather than in `recvmsg` (see
//!   [`uds::wait_readable`]): a Unix socket wakes a `recvmsg` sleeper
//!   each time its peer reads, for nothing.
//!
//! # Who owns a task, and when it runs
//!
//! The scheduler in the client decides everything; workers never talk to
//! each other and never decide what to run. A task `T` is owned
//!
//! - by the scheduler until it emits `Run { T, W }`;
//! - by worker `W` from the moment the `Run` is sent (or the client reads
//!   the first notice of its move to `W`) until the client reads `W`'s
//!   `Done` or `Failed` for it, or the first notice of its move from `W` to
//!   another worker, or `W` is lost (its connection ends). Inside `W` the run is first
//!   *queued*, its claim `QUEUED`; then exactly one of two things happens to
//!   it, each a compare-and-swap on that claim: a pool thread claims it
//!   `STARTED` (then `W` runs it and answers `Done` or `Failed`, never
//!   `Gave`), or the reader, answering a `Give` (or a `Recall`), claims it
//!   `STOLEN` (then `W` lists it in its `Gave` and never starts it);
//! - by the scheduler again after that: a run given to a peer is that
//!   peer's (`TaskMoved { T, from, to }`), or back in the queue if the peer
//!   is gone; a lost worker's runs are taken
//!   back (`WorkerLost`) and rescheduled, or failed with `KilledWorker` after
//!   `max_worker_deaths` deaths in a row (counted only for runs `W` said had
//!   started: see "Failure model" in ARCHITECTURE.md).
//!
//! # Stealing between workers
//!
//! The scheduler gives a worker up to its threads × (1 + extra) runs, so
//! that it always has the next ones at hand and batches stay large; when the
//! scheduler's queue runs dry, some workers may then sit idle while others
//! still have runs waiting behind a long task. After every reader pass, and
//! when a worker joins or is lost, the client pairs workers with a thread
//! idle (fewer runs than threads) with workers holding more runs than
//! threads, if nothing is queued in the scheduler, and sends each chosen
//! victim `Give { count, to: thief }`: half the difference of the two
//! loads, at least one, at most the victim's runs beyond its threads. The
//! victim gives those it has not started, newest first (listed oldest
//! first, the order the thief should run them), **directly to the thief**
//! over their socket pair, with their inputs (inline archives, segment
//! descriptors: the thief maps the same pages). Neither the runs nor their
//! inputs pass through the client, which does not send them again: it
//! learns of the move from two notices (see [`workers`] for how every race
//! between them is decided).
//!
//! - At most one `Give` is on its way per victim and per thief.
//! - A victim whose `Gave` was empty (its runs had all started, or their
//!   results were on their way) is not asked again until it reports a
//!   result: no steal loops on a stale view of the loads.
//! - A moved run was never started on the victim (the claim), and its
//!   inputs stay pinned in the store, for the thief now.
//! - A worker takes part in steals once its peer channels are sent
//!   (`Link::peered`), so a victim never hears of a thief it has no
//!   channel to; one without a channel to the thief gives nothing.
//!
//! Why the client still decides: it alone knows every worker's load and
//! whether the scheduler has runs queued for an idle worker anyway; its
//! `Give` travels on the path the thief's last result just took, so the
//! thief waits for as many hops as if it had asked a peer itself (see
//! ARCHITECTURE.md).
//!
//! So a task runs twice only when it is recomputed: its worker died while
//! running it, its result was held by a worker that died and is needed
//! again, an input of it was lost while it ran (the scheduler takes it
//! back), or it failed and has `retries` left. A stolen run is not a second
//! run: it never started. A run the scheduler abandoned — the task was
//! cancelled or no longer needed while it was on its way — is recalled
//! (`Recall`), and keeps its slot on its worker until the worker gives it
//! back or answers for it; one that had started runs to its end, and its
//! result is dropped, as is any result for a run the scheduler no longer
//! waits for.
//!
//! # Objects
//!
//! A result is an rkyv archive: inline if short, else a sealed memfd segment
//! written once by the producing worker (see [`objects`]). The client keeps
//! each result (a `RawArchive` or a `SegmentObject`) until the scheduler
//! releases it, and passes it to the workers that need it: inline bytes are
//! copied into the `Run`, segments go as descriptors — every reader maps the
//! producer's pages. All results flow through the client's store (a star),
//! but no payload byte is copied between processes. Literal arguments are
//! archived once at submit time, and published as segments if large.
//!
//! A worker keeps nothing once it has replied (the client holds every
//! result), so there is no `Release` message: releasing a result is the
//! client dropping its object, and a segment is freed by the kernel when the
//! last process holding it lets go.
//!
//! # Memory limit and spill
//!
//! The client's store keeps at most `memory_limit` bytes of result segments
//! in shared memory (see [`store`] for the policy and the states an object
//! goes through). Past it, the least recently used segments that no run in
//! flight takes as input are written to files in the client's spill
//! directory (io_uring, or positioned I/O: `shoal_shm::spill`) and dropped;
//! a spilled result comes back into a fresh sealed segment when a run needs
//! it (read back while the run is sent, outside the lock) or the client
//! reads it. An object is always in exactly one place — its segment, its
//! spill file, or moving between them with the older copy still authoritative
//! — so nothing is lost to a spill; a failed spill leaves it in memory.
//! Spilling the client's copy of a segment a worker already received would be
//! safe (the worker maps the pages itself), but would free nothing until the
//! run ends: inputs of runs in flight are pinned instead.
//!
//! # Invariants
//!
//! - The engine lock is never held while task code runs (it runs in other
//!   processes), nor while a message is sent or received, nor during spill
//!   I/O.
//! - A run is in exactly one place at a time: the scheduler's queue, or one
//!   worker (sent, queued there, running, on its way to it from a peer, or
//!   its answer on its way); a worker answers every run it was sent or
//!   adopted exactly once — `Done`, `Failed`, or listed in `Recalled` or
//!   `Gave` — unless it is lost.
//! - A worker's reader never sends (its `Gave` and the runs it gives go
//!   through the outbox) nor runs a task, so it always drains what the
//!   client and its peers send: a
//!   client thread blocked sending runs to a worker whose results fill the
//!   other direction always gets through, and cannot deadlock with it.
//! - The client holds a task's result exactly while the scheduler counts it
//!   in memory on a live worker: it is dropped on `Release` for its holder,
//!   on `Forget`, and when its holder is lost (the scheduler then recomputes
//!   it if it is still needed). A finished task keeps its arguments: they
//!   are its lineage.
//! - Every worker process is reaped by the supervisor: killed with SIGKILL
//!   when lost, told to exit (then killed if it lingers) when the client
//!   shuts down; and it dies with the client process (PR_SET_PDEATHSIG)
//!   whatever happens.

pub(crate) mod state;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_core::driver::pacing::Pacing;
use shoal_core::driver::wait::lock;
use shoal_core::driver::{Driver, GraphNode, NodeArg};
use shoal_core::object::Obj;
use shoal_core::protocol::ToWorker;
use shoal_core::scheduler::{Event, Scheduler, SchedulerConfig, TaskId, WorkerId};
use shoal_shm::uds;

use self::state::{Effects, Procs, State};
use super::Mode;
use crate::error::{Error, Result};
use shoal_shm::pool::{Conn, PoolHost, SpawnConfig, Supervisor, worker};
use shoal_shm::store::{self, Store, StoreConfig};

pub(crate) use shoal_shm::pool::worker::WORKER_HOOK;

/// Runs a worker may hold beyond its threads, per thread, until the first
/// results say how long runs take (then `shoal_core::driver::pacing::Pacing` decides): the
/// next runs are at hand when one ends, and runs and results travel in
/// batches of about this size (each batch costs a frame and a wake-up on
/// each side). Stealing evens out what this lets pile up on one worker.
const EXTRA_SLOTS_PER_THREAD: u32 = 8;

/// The machine's store as the scheduler sees it: a worker without threads
/// that holds the results of worker processes that died (they live in the
/// client's store, not in the process), so they are not recomputed.
pub(crate) const STORE: WorkerId = WorkerId(u32::MAX);

/// How the engine is set up.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub workers: usize,
    pub threads_per_worker: usize,
    pub env: Vec<(String, String)>,
    pub worker_ttl: Option<std::time::Duration>,
    pub store: StoreConfig,
}

pub(crate) struct ProcessesEngine {
    driver: Driver<Procs>,
    supervisor: Mutex<Option<Supervisor>>,
    /// How many runs the workers queue, from how long runs take (taken
    /// under the engine lock).
    pacing: Mutex<Pacing>,
    nthreads: usize,
    /// Prefix of the segments this client creates (for literal arguments).
    segment_prefix: Arc<str>,
}

impl ProcessesEngine {
    /// Starts the workers and waits until all of them said hello.
    pub(crate) fn start(config: Config) -> Result<Arc<ProcessesEngine>> {
        shoal_shm::logging::install_default();
        if worker::has_untaken_role() {
            return Err(Error::Start(
                "this process was started as a shoal worker but did not take the role; call shoal::init() \
                 first in main"
                    .into(),
            ));
        }
        shoal_core::registry::check()?;
        let workers = config.workers.max(1);
        let mut store_config = config.store.clone();
        store_config.descriptors.get_or_insert_with(|| store::descriptor_budget(workers));
        let store = Store::new(&store_config).map_err(|e| Error::Start(e.to_string()))?;
        let threads = config.threads_per_worker.max(1);
        static ENGINES: AtomicU64 = AtomicU64::new(0);
        let sched = Scheduler::new(SchedulerConfig {
            extra_slots_per_thread: EXTRA_SLOTS_PER_THREAD,
            // Workers take back an abandoned run they have not started
            // (`Recall`), and answer for every run.
            recall: true,
            ..SchedulerConfig::default()
        });
        let mut sched = sched;
        sched.handle(Event::WorkerJoined { worker: STORE, nthreads: 0 }, &mut Vec::new());
        let engine = Arc::new(ProcessesEngine {
            driver: Driver::new(
                sched,
                Procs {
                    workers: HashMap::new(),
                    store,
                    moves: HashMap::new(),
                    gone: Default::default(),
                    stats: Default::default(),
                },
            ),
            supervisor: Mutex::new(None),
            pacing: Mutex::new(Pacing::new(EXTRA_SLOTS_PER_THREAD)),
            nthreads: workers * threads,
            segment_prefix: format!("shoal-c{}.{}", std::process::id(), ENGINES.fetch_add(1, Ordering::Relaxed)).into(),
        });
        let mut env = config.env;
        let name = shoal_shm::warm::ENV_WARM_MEMORY;
        let user_chose = std::env::var_os(name).is_some() || env.iter().any(|(k, _)| k == name);
        if let Some(budget) = warm_budget(user_chose, store_config.memory_limit, workers) {
            env.push((name.to_string(), budget.to_string()));
        }
        let spawn = SpawnConfig { threads, env, silence_limit: config.worker_ttl };
        let host: std::sync::Weak<dyn PoolHost> = Arc::downgrade(&engine) as std::sync::Weak<dyn PoolHost>;
        let supervisor = Supervisor::start(host, spawn)?;
        let ready = supervisor.start_workers(workers);
        *lock(&engine.supervisor) = Some(supervisor);
        if let Err(e) = ready {
            Mode::shutdown(&*engine);
            return Err(e.into());
        }
        let weak = Arc::downgrade(&engine);
        std::thread::Builder::new()
            .name("shoal-memory".into())
            .spawn(move || watch_workers_memory(weak))
            .map_err(|e| Error::Start(format!("cannot start the memory watcher thread: {e}")))?;
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.driver.lock()
    }

    /// Pids of the live worker processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.lock().backend.workers.values().map(|l| l.conn.pid).collect();
        pids.sort_unstable();
        pids
    }
}

impl Drop for ProcessesEngine {
    fn drop(&mut self) {
        Mode::shutdown(self);
    }
}

impl Mode for ProcessesEngine {
    type Backend = Procs;

    fn driver(&self) -> &Driver<Procs> {
        &self.driver
    }

    fn finish(&self, fx: Effects) {
        self.carry_out(fx);
    }

    /// Archives literal arguments before locking (once; large ones into
    /// segments of their own), so that sending a run copies no big value.
    fn prepare(&self, nodes: &mut [GraphNode]) -> Result<()> {
        for node in nodes {
            for arg in &mut node.args {
                if let NodeArg::Value(obj) = arg {
                    // Named only if it needs a segment (most are small).
                    let prefix = Arc::clone(&self.segment_prefix);
                    *obj = uds::publish(obj, move || workers::segment_name(&prefix, "arg")).map_err(Error::Message)?;
                }
            }
        }
        Ok(())
    }

    /// Results in memory are taken under one lock per pass; a spilled one
    /// ends the pass and is read back outside the lock (one at a time, so
    /// that reading many back spills as few others as it can).
    fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>> {
        let mut out = Vec::with_capacity(ids.len());
        while out.len() < ids.len() {
            let mut effects = Effects::default();
            let mut load = None;
            let mut failed = None;
            {
                let mut st = self.lock();
                for &id in &ids[out.len()..] {
                    match state::result(&mut st, id, &mut effects) {
                        Ok(store::Fetched::Ready(obj)) => out.push(obj),
                        Ok(fetched) => {
                            load = Some(fetched);
                            break;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            self.carry_out(effects);
            if let Some(e) = failed {
                return Err(e);
            }
            if let Some(fetched) = load {
                out.push(self.resolve(fetched).map_err(spill_error)?);
            }
        }
        Ok(out)
    }

    fn store_stats(&self) -> Option<shoal_shm::store::StoreStats> {
        Some(self.lock().backend.store.stats())
    }

    fn steal_stats(&self) -> Option<crate::StealStats> {
        Some(self.lock().backend.stats)
    }

    fn nthreads(&self) -> usize {
        self.nthreads
    }

    fn workers(&self) -> Vec<(WorkerId, u32, u32)> {
        let mut workers: Vec<(WorkerId, u32, u32)> =
            self.lock().backend.workers.values().map(|l| (l.conn.id, l.conn.pid, l.conn.nthreads)).collect();
        workers.sort_unstable();
        workers
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.pids()
    }

    /// Tells every worker to exit, then (through the supervisor) waits a
    /// moment for them, kills those left, and reaps them all. Stored results
    /// and arguments are dropped: their segments are freed.
    fn shutdown(&self) {
        let (conns, specs, store) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            let conns: Vec<Arc<Conn>> = st.backend.workers.drain().map(|(_, l)| l.conn).collect();
            let specs = st.take_specs();
            (conns, specs, st.backend.store.close())
        };
        self.driver.wake_clients();
        if let Ok(outgoing) = uds::control_to_worker(&ToWorker::Shutdown) {
            for conn in &conns {
                // A worker that cannot be told is killed by the supervisor.
                let _ = conn.send(&outgoing);
            }
        }
        for conn in &conns {
            conn.close();
        }
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor {
            supervisor.stop();
        }
        drop(specs);
        // Segments freed, spill files deleted, the spill directory removed
        // (or, if a spill is being written right now, once it ends).
        drop(store);
    }
}

/// How often the workers' private memory is measured for the store's limit
/// (see `shoal_shm::store`, "The limit covers the workers' own memory too"): a task
/// writes memory at a few GB/s, so at this pace the store learns of a
/// large allocation after some tens of MB. Reading `/proc/PID/status` of
/// a worker costs ~20 µs.
const MEMORY_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A change of the workers' private memory smaller than this is not worth
/// taking the engine lock for.
const MEMORY_WATCH_STEP: u64 = 1 << 20;

/// The memory watcher thread: measures the live workers' private memory
/// (above each one's idle floor) and tells the store, until the engine is
/// dropped or shut down.
fn watch_workers_memory(engine: std::sync::Weak<ProcessesEngine>) {
    let mut told = 0u64;
    let mut floors: HashMap<u32, u64> = HashMap::new();
    loop {
        std::thread::sleep(MEMORY_WATCH_INTERVAL);
        // The engine is held only while locked, never across the reads of
        // `/proc`: the client's last drop (which shuts the workers down)
        // then almost always happens on the client's thread, not here.
        let pids = {
            let Some(engine) = engine.upgrade() else { return };
            let st = engine.lock();
            if st.closed {
                return;
            }
            st.backend.workers.values().map(|l| l.conn.pid).collect::<Vec<u32>>()
        };
        // Each worker's growth over the least it was ever seen to hold: an
        // idle worker's own runtime (code, thread stacks, buffers) is not
        // what the limit is for; what its tasks allocate, and what the
        // allocator keeps of it afterwards, is.
        floors.retain(|pid, _| pids.contains(pid));
        let mut bytes = 0;
        for &pid in &pids {
            let Some(now) = shoal_shm::limits::private_memory(pid) else { continue };
            let floor = floors.entry(pid).or_insert(now);
            *floor = (*floor).min(now);
            bytes += now - *floor;
        }
        let Some(engine) = engine.upgrade() else { return };
        let mut effects = Effects::default();
        {
            let mut st = engine.lock();
            if bytes.abs_diff(told) >= MEMORY_WATCH_STEP {
                told = bytes;
                st.backend.store.set_workers_memory(bytes, &mut effects.store);
            }
            // Checked every tick: results come and go between two of them.
            pause_or_resume(&mut st, &mut effects);
        }
        engine.carry_out(effects);
    }
}

/// Each worker's warm memory (`shoal_shm::warm`: the next result's file,
/// made ahead of need) lives outside the store's count, so it takes at
/// most a [`WARM_SHARE_OF_LIMIT`]th of the memory limit between the
/// workers, and no more than its own default; `None` when the user chose
/// (`SHOAL_WARM_MEMORY` in the client's environment or the options' `env`).
fn warm_budget(user_chose: bool, memory_limit: u64, workers: usize) -> Option<usize> {
    if user_chose {
        return None;
    }
    let share = memory_limit / WARM_SHARE_OF_LIMIT / workers.max(1) as u64;
    Some(shoal_shm::warm::default_budget().min(usize::try_from(share).unwrap_or(usize::MAX)))
}

/// The warm files of all workers together take at most this fraction of
/// the memory limit (a quarter: results and running tasks keep the rest).
const WARM_SHARE_OF_LIMIT: u64 = 4;

/// Runs start one at a time while the machine stays over its memory limit
/// (see `shoal_shm::store`, "Over the limit, runs start one at a time"),
/// and resume once it is back under.
fn pause_or_resume(st: &mut State, effects: &mut Effects) {
    let paused = st.sched.paused();
    let pause = st.backend.store.should_pause(paused);
    if pause == paused {
        return;
    }
    let s = st.backend.store.stats();
    let mib = |b: u64| b >> 20;
    if pause {
        tracing::warn!(
            "memory over the limit ({} MiB of results in memory + {} MiB of the workers' own, limit {} MiB) \
             with nothing more to spill: runs start one at a time until it is back under",
            mib(s.memory_bytes),
            mib(s.workers_memory_bytes),
            mib(s.memory_limit)
        );
    } else {
        tracing::info!("memory back under the limit: runs start on every free slot again");
    }
    st.handle(Event::Pause { paused: pause }, effects);
    if pause {
        // Runs queued on the workers would start all the same, with their
        // inputs pinned: take back those not started yet (`Recall`; the
        // workers answer with the ones they gave back, which the scheduler
        // then starts one at a time, and their inputs may spill meanwhile).
        for (&worker, link) in &st.backend.workers {
            for &task in st.sched.processing_of(worker) {
                effects.recalls.push((Arc::clone(&link.conn), task));
            }
        }
    }
}

/// A result that could not be read back from its spill file.
fn spill_error(message: String) -> Error {
    Error::Io(std::io::Error::other(message))
}

#[cfg(test)]
mod tests {
    use super::warm_budget;

    #[test]
    fn the_workers_warm_memory_takes_a_quarter_of_the_limit_at_most() {
        const MIB: u64 = 1 << 20;
        let default = shoal_shm::warm::default_budget();
        // 64 MiB between 2 workers: 8 MiB each (or less, if the default is).
        assert_eq!(warm_budget(false, 64 * MIB, 2), Some(default.min(8 << 20)));
        // A limit far above the default leaves the default.
        assert_eq!(warm_budget(false, u64::MAX, 1), Some(default));
        // The user's choice stands.
        assert_eq!(warm_budget(true, 64 * MIB, 2), None);
    }
}
