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
//! 5. **Serve.** The main thread reads `Run`s and queues them on a
//!    work-stealing pool of `threads` threads; each job reads its inputs
//!    (inline archives, or segments mapped read-only), calls the task under
//!    `catch_unwind`, archives the result once (validated there) and sends
//!    `Done` — inline, or as a new sealed segment's descriptor — or
//!    `Failed`. The worker keeps nothing after replying: the client holds
//!    every result.
//! 6. **Exit** on `Shutdown`, at the end of the stream (the client closed
//!    it or died), or on a malformed message (with its reason on stderr).
//!    Running tasks are not waited for.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use rustix::fs::FileType;
use rustix::io::FdFlags;
use rustix::process::Signal;
use shoal_core::executor::{Local, Pool};
use shoal_core::object::Obj;
use shoal_core::registry::{self, RunError, TaskEntry};
use shoal_core::scheduler::TaskId;
use shoal_shm::fdpass;

use super::objects::{self, Outgoing};
use super::protocol::{self, FailKind, ToClient, WireObject, WorkerMsg};
use crate::engine::threads::panic_message;

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
    let conn = Arc::new(Conn { socket: setup.socket, send_lock: Mutex::new(()) });
    let hello =
        ToClient::Hello { fingerprint: protocol::split_fingerprint(setup.fingerprint), pid: std::process::id() };
    if !conn.send(&hello, &[]) {
        return 0;
    }
    let mut pool = Pool::<Job>::new(setup.threads);
    let spawner = pool.spawner().clone();
    let for_jobs = Arc::clone(&conn);
    if let Err(e) = pool.start("shoal-worker", move |job: Job, _: &Local<'_, Job>| for_jobs.run(job)) {
        eprintln!("shoal worker {}: cannot start {} threads: {e}", std::process::id(), setup.threads);
        return EXIT_SETUP;
    }
    let code = loop {
        let message = match fdpass::recv(&conn.socket) {
            Ok(Some(message)) => message,
            Ok(None) => break 0,
            Err(e) => {
                eprintln!("shoal worker {}: lost the client connection: {e}", std::process::id());
                break 0;
            }
        };
        match protocol::decode_to_worker(message) {
            // An unknown task number is answered from the pool too: this
            // thread never blocks on sending, so it always drains the socket.
            Ok(WorkerMsg::Run { task, func, inputs }) => {
                spawner.push(Job { task, func, entry: registry::entries().get(func as usize).copied(), inputs })
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

/// A task to run, with its inputs.
struct Job {
    task: TaskId,
    func: u32,
    /// `None` if this binary has no task number `func`.
    entry: Option<&'static TaskEntry>,
    inputs: Vec<Obj>,
}

/// The worker's end of the connection. Replies come from every pool
/// thread, so sending takes a lock (a message is one `sendmsg` sequence).
struct Conn {
    socket: UnixStream,
    send_lock: Mutex<()>,
}

impl Conn {
    /// Sends a message; `false` if the client is gone (the worker then exits).
    fn send(&self, message: &ToClient, segments: &[Obj]) -> bool {
        let outgoing = match protocol::encode(message) {
            Ok(payload) => Outgoing { payload, segments: segments.to_vec() },
            Err(e) => {
                eprintln!("shoal worker {}: {e}", std::process::id());
                return true;
            }
        };
        let sent = outgoing.fds().map_err(|e| e.to_string()).and_then(|fds| {
            let _guard = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Runs one job on a pool thread and replies.
    fn run(&self, job: Job) {
        let Job { task, func, entry, inputs } = job;
        let mut segments = Vec::new();
        let reply = match entry {
            None => failed(task, FailKind::Input, format!("this worker has no task number {func}")),
            Some(entry) => match catch_unwind(AssertUnwindSafe(|| result_message(task, entry, &inputs, &mut segments)))
            {
                Ok(reply) => reply,
                Err(payload) => failed(task, FailKind::Panic, panic_message(&*payload)),
            },
        };
        // The inputs are unmapped before the reply: once the client sees a
        // task done, the task holds nothing of its inputs any more.
        drop(inputs);
        self.send(&reply, &segments);
    }
}

fn failed(task: TaskId, kind: FailKind, message: String) -> ToClient {
    ToClient::Failed { task: task.into(), kind, message }
}

/// Calls the task and turns what it returned into the reply.
fn result_message(task: TaskId, entry: &TaskEntry, inputs: &[Obj], segments: &mut Vec<Obj>) -> ToClient {
    let obj = match catch_unwind(AssertUnwindSafe(|| entry.invoke(inputs))) {
        Ok(Ok(obj)) => obj,
        Ok(Err(RunError::Returned(message))) => return failed(task, FailKind::Error, message),
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
            ToClient::Done { task: task.into(), result, nbytes }
        }
        // E.g. an archive over rkyv's 2 GiB limit, or no memory for a segment.
        Err(e) => failed(task, FailKind::Error, format!("its result could not be stored: {e}")),
    }
}
