//! The worker process: what a re-executed binary does when the environment
//! says it is a shoal worker.
//!
//! # Life of a worker
//!
//! 1. **Before `main`.** The `.init_array` hook ([`WORKER_HOOK`]) runs in
//!    every process of a binary that can start workers. If
//!    [`ENV_FD`] is unset it returns at once and `main` runs as usual;
//!    otherwise it takes the worker role and never returns, so a test
//!    harness or a benchmark re-executed as a worker never runs its own
//!    `main`. [`crate::init`] does the same check, as the explicit form.
//! 2. **Tie to the parent.** `PR_SET_PDEATHSIG(SIGKILL)` first, then
//!    `getppid()` is compared with the pid the parent wrote in
//!    [`ENV_PARENT`]: if the parent died before the prctl, the worker exits.
//!    No worker outlives its client.
//! 3. **Take the socket.** The descriptor number in [`ENV_FD`] is checked
//!    (open, a socket), made close-on-exec again (task code that spawns
//!    processes must not hand it on), and the worker variables are removed
//!    from the environment (a task that re-executes the binary must not
//!    become a worker).
//! 4. **Handshake.** It sends `Hello { fingerprint, pid }`; the client
//!    refuses a different registry.
//! 5. **Serve.** The main thread (the reader) reads batches of runs and
//!    queues them on a work-stealing pool of `threads` threads; each job
//!    reads its inputs (inline archives, or segments mapped read-only),
//!    calls the task under `catch_unwind`, archives the result once
//!    (validated there) and posts `Done` — inline, or as a new sealed
//!    segment's descriptor — or `Failed` to the outbox. The worker keeps
//!    nothing after replying: the client holds every result.
//! 6. **Exit** on `Shutdown`, at the end of the stream (the client closed
//!    it or died), or on a malformed message (with its reason on stderr).
//!    Running tasks are not waited for.
//!
//! # Claims: a run starts here or is given back, never both
//!
//! Each queued run carries a claim, `QUEUED` when it arrives. A pool thread
//! that pops it swaps `QUEUED → STARTED` before touching it; the reader,
//! answering `Steal { count }`, swaps `QUEUED → STOLEN` on up to `count`
//! runs, newest first, and lists exactly those in its `Stolen` answer. Both
//! are one compare-and-swap on the same atomic, so exactly one side wins: a
//! stolen run is never started here (the pool drops it when it pops it), and
//! a started run is never listed as stolen.
//!
//! # Replies: batched without waiting
//!
//! Results go through an outbox. A pool thread that finishes a run while
//! no other run is queued here (it is about to go idle, or this was the last
//! of a batch) sends everything in the outbox itself, in one frame. One that
//! has more runs to go only leaves its result in the outbox and wakes the
//! sender thread, which sends everything there by the time it runs — so a
//! result waits for no other task, and a batch of short tasks goes back in
//! a frame or two instead of one per task. A `Stolen` answer is sent after
//! the results the outbox held, so the client sees those first. The reader
//! leaves it in the outbox too: the reader never blocks on sending, so it
//! always drains the socket, and a client blocked sending it runs (while
//! its own socket is full of this worker's results) cannot deadlock with it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rustix::fs::FileType;
use rustix::io::FdFlags;
use rustix::process::Signal;
use shoal_core::executor::{Local, Pool};
use shoal_core::object::Obj;
use shoal_core::registry::{self, RunError, TaskEntry};
use shoal_core::scheduler::TaskId;
use shoal_shm::fdpass;

use super::objects::{self, Outgoing};
use super::protocol::{self, Batcher, FailKind, Run, ToClient, WireObject, WireResult, WireTask, WorkerMsg};
use shoal_core::failure::panic_message;

/// The descriptor number of the worker's end of its socket: the worker role.
pub(crate) const ENV_FD: &str = "SHOAL_WORKER_FD";
/// The pid of the client that started the worker.
pub(crate) const ENV_PARENT: &str = "SHOAL_WORKER_PARENT";
/// Threads of the worker's pool.
pub(crate) const ENV_THREADS: &str = "SHOAL_WORKER_THREADS";
/// Test hook: a fingerprint (decimal) the worker announces instead of its
/// own, so tests can exercise the client's refusal of a different binary.
pub(crate) const ENV_FINGERPRINT_OVERRIDE: &str = "SHOAL_TEST_FINGERPRINT_OVERRIDE";
/// The argument workers are started with, so that a `main` that parses its
/// arguments before [`crate::init`] fails loudly instead of doing user work.
pub(crate) const WORKER_ARG: &str = "--shoal-worker";

/// Exit status of a worker that could not set itself up.
const EXIT_SETUP: i32 = 70;
/// Exit status of a worker that received a malformed message.
const EXIT_PROTOCOL: i32 = 71;

/// Runs before `main` in every process of a binary that links it (see the
/// module docs). The client references it, so that any binary able to
/// start workers has it linked in.
// SAFETY (of placing it in `.init_array`): the dynamic loader (or the
// static start-up code) calls every entry of that section as a C function
// with `(argc, argv, envp)`, before `main`; an `extern "C" fn()` that ignores
// its arguments is sound to call that way on every Linux ABI. Unless this
// process is a worker it only reads the environment (libc's, set up before
// any constructor) and returns. A worker runs entirely here and exits: std
// needs nothing from `main`'s start-up on Linux (which names the main
// thread, ignores SIGPIPE — the worker does that itself — and records argv,
// which the worker does not read).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static WORKER_HOOK: extern "C" fn() = worker_hook;

extern "C" fn worker_hook() {
    // Nothing may unwind out of an `extern "C"` function; `take_role`
    // catches panics itself, and returns only when this is no worker.
    take_role();
}

/// If this process was started as a worker, be one and never return.
pub(crate) fn take_role() {
    let Some(fd) = std::env::var_os(ENV_FD) else { return };
    let code = match catch_unwind(|| serve(fd)) {
        Ok(code) => code,
        Err(payload) => {
            eprintln!("shoal worker {}: internal error: {}", std::process::id(), panic_message(&*payload));
            EXIT_SETUP
        }
    };
    std::process::exit(code)
}

/// Whether this process has the worker role but has not taken it (it was
/// started as a worker and the hook did not run).
pub(crate) fn has_untaken_role() -> bool {
    std::env::var_os(ENV_FD).is_some()
}

struct Setup {
    socket: UnixStream,
    threads: usize,
    fingerprint: u128,
}

fn serve(fd: OsString) -> i32 {
    let setup = match set_up(fd) {
        Ok(Some(setup)) => setup,
        Ok(None) => {
            eprintln!("shoal worker {}: the client that started it is gone; exiting", std::process::id());
            return 0;
        }
        Err(message) => {
            eprintln!("shoal worker {}: cannot start: {message}", std::process::id());
            return EXIT_SETUP;
        }
    };
    let conn = Arc::new(Conn {
        socket: setup.socket,
        send_lock: Mutex::new(()),
        outbox: Mutex::new(Outbox { results: Vec::new(), stolen: Vec::new(), sender_asleep: false }),
        outbox_filled: Condvar::new(),
        queued: AtomicUsize::new(0),
    });
    let hello =
        ToClient::Hello { fingerprint: protocol::split_fingerprint(setup.fingerprint), pid: std::process::id() };
    if !conn.send(&hello, Vec::new()) {
        return 0;
    }
    let for_sender = Arc::clone(&conn);
    if let Err(e) = std::thread::Builder::new().name("shoal-worker-send".into()).spawn(move || for_sender.sender()) {
        eprintln!("shoal worker {}: cannot start its sender thread: {e}", std::process::id());
        return EXIT_SETUP;
    }
    let mut pool = Pool::<Job>::new(setup.threads);
    let spawner = pool.spawner().clone();
    let for_jobs = Arc::clone(&conn);
    if let Err(e) = pool.start("shoal-worker", move |job: Job, _: &Local<'_, Job>| for_jobs.run(job)) {
        eprintln!("shoal worker {}: cannot start {} threads: {e}", std::process::id(), setup.threads);
        return EXIT_SETUP;
    }
    // The runs queued here, oldest first, with their claims (see the module
    // docs); entries whose run started are dropped as they are met. Only
    // this thread touches it.
    let mut queue: VecDeque<(TaskId, Arc<AtomicU8>)> = VecDeque::new();
    let code = loop {
        // See `protocol::wait_readable` for why not block in `recv`.
        protocol::wait_readable(&conn.socket, true);
        let message = match fdpass::recv(&conn.socket) {
            Ok(Some(message)) => message,
            Ok(None) => break 0,
            Err(e) => {
                eprintln!("shoal worker {}: lost the client connection: {e}", std::process::id());
                break 0;
            }
        };
        match protocol::decode_to_worker(message) {
            // This thread never runs a task (an unknown task number is
            // answered from the pool too) and never blocks on sending, so
            // it always drains the socket — the client may be blocked
            // sending to it — and claims stolen runs while tasks run.
            Ok(WorkerMsg::Runs(runs)) => {
                while queue.front().is_some_and(|(_, claim)| claim.load(Ordering::Acquire) != QUEUED) {
                    queue.pop_front();
                }
                // All counted before the pool sees the first: a pool thread
                // that finishes one of them knows more are coming, and leaves
                // its result to be sent with theirs.
                conn.queued.fetch_add(runs.len(), Ordering::AcqRel);
                for Run { task, func, inputs } in runs {
                    let claim = Arc::new(AtomicU8::new(QUEUED));
                    queue.push_back((task, Arc::clone(&claim)));
                    let entry = registry::entries().get(func as usize).copied();
                    spawner.push(Job { task, func, entry, inputs, claim });
                }
            }
            Ok(WorkerMsg::Steal { count }) => {
                let mut stolen = Vec::new();
                while stolen.len() < count as usize {
                    let Some((task, claim)) = queue.pop_back() else { break };
                    if claim.compare_exchange(QUEUED, STOLEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        conn.queued.fetch_sub(1, Ordering::AcqRel);
                        stolen.push(WireTask::from(task));
                    }
                }
                // Oldest first: the thief runs them in the order they were
                // sent here (the scheduler's priority order).
                stolen.reverse();
                conn.post_stolen(stolen);
            }
            Ok(WorkerMsg::Shutdown) => break 0,
            Err(e) => {
                eprintln!("shoal worker {}: malformed message from the client: {e}; exiting", std::process::id());
                break EXIT_PROTOCOL;
            }
        }
    };
    // Exit without stopping the pool: running tasks are not waited for.
    std::mem::forget(pool);
    code
}

/// Steps 2 and 3 of the module docs; `None` if the parent is gone.
fn set_up(fd: OsString) -> Result<Option<Setup>, String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG failed: {e}"))?;
    let parent: i32 = parse_var(ENV_PARENT)?;
    if rustix::process::getppid().map(|p| p.as_raw_pid()) != Some(parent) {
        return Ok(None);
    }
    let threads: usize = parse_var(ENV_THREADS)?;
    let fingerprint = match std::env::var_os(ENV_FINGERPRINT_OVERRIDE) {
        Some(_) => parse_var(ENV_FINGERPRINT_OVERRIDE)?,
        None => registry::fingerprint().map_err(|e| e.to_string())?,
    };
    let raw: RawFd =
        fd.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{ENV_FD}={fd:?} is not a number"))?;
    let socket = adopt_socket(raw)?;
    for var in [ENV_FD, ENV_PARENT, ENV_THREADS, ENV_FINGERPRINT_OVERRIDE] {
        // SAFETY: `remove_var` races with other threads reading or writing
        // the environment. This runs in a worker process before it starts
        // any thread: from the `.init_array` hook, before `main` (no thread
        // of this program exists yet), or from `shoal::init()`, which is
        // documented to be called first in `main`.
        unsafe { std::env::remove_var(var) };
    }
    // Task code in a worker behaves as in any Rust program, where the
    // runtime ignores SIGPIPE before `main` (which a worker never reaches).
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code; it is what std itself does at start-up.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(Some(Setup { socket, threads: threads.max(1), fingerprint }))
}

fn parse_var<T: std::str::FromStr>(name: &str) -> Result<T, String> {
    let value = std::env::var(name).map_err(|_| format!("{name} is not set (or not UTF-8)"))?;
    value.parse().map_err(|_| format!("{name}={value:?} is not a valid value"))
}

/// Takes ownership of the inherited socket descriptor `raw`, after checking
/// that it is an open socket, and makes it close-on-exec.
fn adopt_socket(raw: RawFd) -> Result<UnixStream, String> {
    if raw < 3 {
        return Err(format!("{ENV_FD}={raw} names a standard stream, not the worker socket"));
    }
    // SAFETY: a borrow of `raw` for the checks below only; fcntl and fstat
    // on a closed descriptor fail with EBADF rather than misbehave.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    rustix::io::fcntl_getfd(borrowed).map_err(|e| format!("{ENV_FD}={raw} is not an open descriptor: {e}"))?;
    let stat = rustix::fs::fstat(borrowed).map_err(|e| format!("fstat of {ENV_FD}={raw}: {e}"))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(format!("{ENV_FD}={raw} is not a socket"));
    }
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC).map_err(|e| format!("making the socket close-on-exec: {e}"))?;
    // SAFETY: `raw` is open (checked above) and is the worker's end of the
    // socket pair, which the parent left open in this process for exactly
    // this purpose; nothing else in this process knows its number (it came
    // from the environment, now cleared), so this is its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(UnixStream::from(owned))
}

/// A run's claim (see the module docs).
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const STOLEN: u8 = 2;

/// A task to run, with its inputs.
struct Job {
    task: TaskId,
    func: u32,
    /// `None` if this binary has no task number `func`.
    entry: Option<&'static TaskEntry>,
    inputs: Vec<Obj>,
    claim: Arc<AtomicU8>,
}

/// The worker's end of the connection. Replies come from every pool
/// thread, the sender thread and the reader, so sending takes a lock (a
/// message is one `sendmsg` sequence).
struct Conn {
    socket: UnixStream,
    send_lock: Mutex<()>,
    outbox: Mutex<Outbox>,
    /// Signalled when the outbox gets results for the sender thread.
    outbox_filled: Condvar,
    /// Runs received and neither started nor stolen.
    queued: AtomicUsize,
}

/// Results not sent yet, each with the segments it names.
/// Messages not sent yet: results, each with the segments it names, and
/// answers to steals (sent after the results that were there with them).
struct Outbox {
    results: Vec<(WireResult, Vec<Obj>)>,
    stolen: Vec<Vec<WireTask>>,
    sender_asleep: bool,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.results.is_empty() && self.stolen.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    /// Sends a message; `false` if it could not be encoded (logged). A
    /// worker whose client is gone has nothing left to do: it exits.
    fn send(&self, message: &ToClient, segments: Vec<Obj>) -> bool {
        let outgoing = match protocol::encode(message) {
            Ok(payload) => Outgoing { payload, segments },
            Err(e) => {
                eprintln!("shoal worker {}: {e}", std::process::id());
                return true;
            }
        };
        let sent = outgoing.fds().map_err(|e| e.to_string()).and_then(|fds| {
            let _guard = lock(&self.send_lock);
            fdpass::send(&self.socket, &outgoing.payload, &fds).map_err(|e| e.to_string())
        });
        match sent {
            Ok(()) => true,
            Err(e) => {
                // The client is gone or the connection broke: a worker
                // without a client has nothing left to do.
                eprintln!("shoal worker {}: cannot reply to the client ({e}); exiting", std::process::id());
                std::process::exit(0)
            }
        }
    }

    /// Sends these results, as few frames as the descriptor limit allows.
    fn send_results(&self, results: Vec<(WireResult, Vec<Obj>)>) {
        let mut batcher = Batcher::new();
        for (result, segments) in results {
            // A result names at most one segment: always fits.
            if let Err(e) = batcher.push(result, segments) {
                eprintln!("shoal worker {}: internal error: {e}", std::process::id());
            }
        }
        for (results, segments) in batcher.finish() {
            self.send(&ToClient::Results { results }, segments);
        }
    }

    /// Sends what `outbox` holds (unlocking it first): the results, then
    /// the steal answers.
    fn send_outbox(&self, mut outbox: MutexGuard<'_, Outbox>) {
        let results = std::mem::take(&mut outbox.results);
        let stolen = std::mem::take(&mut outbox.stolen);
        drop(outbox);
        if !results.is_empty() {
            self.send_results(results);
        }
        for tasks in stolen {
            self.send(&ToClient::Stolen { tasks }, Vec::new());
        }
    }

    /// Wakes the sender thread if it sleeps; called with the outbox locked,
    /// after adding to it.
    fn wake_sender(&self, outbox: &mut Outbox) {
        if outbox.sender_asleep {
            outbox.sender_asleep = false;
            self.outbox_filled.notify_one();
        }
    }

    /// The sender thread: sends what the pool threads and the reader leave
    /// in the outbox.
    fn sender(&self) {
        let mut outbox = lock(&self.outbox);
        loop {
            if outbox.is_empty() {
                outbox.sender_asleep = true;
                outbox = self.outbox_filled.wait(outbox).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            self.send_outbox(outbox);
            outbox = lock(&self.outbox);
        }
    }

    /// The reader's answer to a steal, left to the sender thread: the reader
    /// never blocks on sending (see the module docs).
    fn post_stolen(&self, tasks: Vec<WireTask>) {
        let mut outbox = lock(&self.outbox);
        outbox.stolen.push(tasks);
        self.wake_sender(&mut outbox);
    }

    /// A pool thread's result: sent now if this worker has nothing else
    /// queued, else left to the sender thread (see the module docs).
    fn post(&self, result: WireResult, segments: Vec<Obj>) {
        let more = self.queued.load(Ordering::Acquire) > 0;
        let mut outbox = lock(&self.outbox);
        outbox.results.push((result, segments));
        if more {
            self.wake_sender(&mut outbox);
            return;
        }
        self.send_outbox(outbox);
    }

    /// Runs one job on a pool thread, unless it was stolen, and posts its
    /// result.
    fn run(&self, job: Job) {
        let Job { task, func, entry, inputs, claim } = job;
        if claim.compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return; // given back to the client: it runs elsewhere
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let started = Instant::now();
        let mut segments = Vec::new();
        let mut result = match entry {
            None => failed(task, FailKind::Input, format!("this worker has no task number {func}")),
            Some(entry) => match catch_unwind(AssertUnwindSafe(|| run_task(task, entry, &inputs, &mut segments))) {
                Ok(result) => result,
                Err(payload) => failed(task, FailKind::Panic, panic_message(&*payload)),
            },
        };
        // The inputs are unmapped before the reply: once the client sees a
        // task done, the task holds nothing of its inputs any more.
        drop(inputs);
        let took = u32::try_from(started.elapsed().as_micros() + 1).unwrap_or(u32::MAX);
        match &mut result {
            WireResult::Done { micros, .. } | WireResult::Failed { micros, .. } => *micros = took,
        }
        self.post(result, segments);
    }
}

fn failed(task: TaskId, kind: FailKind, message: String) -> WireResult {
    WireResult::Failed { task: task.into(), kind, message, type_name: String::new(), chain: Vec::new(), micros: 0 }
}

/// Calls the task and turns what it returned into its result.
fn run_task(task: TaskId, entry: &TaskEntry, inputs: &[Obj], segments: &mut Vec<Obj>) -> WireResult {
    let obj = match catch_unwind(AssertUnwindSafe(|| entry.invoke(inputs))) {
        Ok(Ok(obj)) => obj,
        Ok(Err(RunError::Returned(error))) => {
            let (type_name, message, chain) = error.into_parts();
            return WireResult::Failed {
                task: task.into(),
                kind: FailKind::Error,
                message,
                type_name,
                chain,
                micros: 0,
            };
        }
        Ok(Err(RunError::Input(e))) => return failed(task, FailKind::Input, e.to_string()),
        Err(payload) => return failed(task, FailKind::Panic, panic_message(&*payload)),
    };
    let name = || format!("shoal-w{}-t{}.{}", std::process::id(), task.index, task.generation);
    match objects::wire(&obj, name, segments) {
        Ok(result) => {
            let nbytes = match &result {
                WireObject::Inline(bytes) => bytes.len() as u64,
                WireObject::Fd(_) => obj.archived_bytes().map(|b| b.len() as u64).unwrap_or(0),
            };
            WireResult::Done { task: task.into(), result, nbytes, micros: 0 }
        }
        // E.g. an archive over rkyv's 2 GiB limit, or no memory for a segment.
        Err(e) => failed(task, FailKind::Error, format!("its result could not be stored: {e}")),
    }
}
