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
//!    `main`. `shoal::init` does the same check, as the explicit form.
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
//!    nothing after replying: the client holds every result. A heartbeat
//!    thread sends the runs it has started (`Running`) every
//!    [`ENV_HEARTBEAT_MS`] milliseconds, whatever its tasks do: a client
//!    that hears nothing for long declares it lost.
//!
//!    **Peers.** The client sends a worker, for each other worker of the
//!    pool, its end of a socket pair (`Peer { worker }` with the
//!    descriptor, checked to be a socket). The reader polls those beside
//!    its client socket: a peer sends only runs it gives this worker
//!    (`Runs`/`Stash` frames of the same codec, inputs inline or as
//!    segment descriptors), which the worker adopts; anything else from a
//!    peer is a protocol error (exit 71). When a peer's channel ends (it
//!    died or exited) the reader drops it and the worker says `PeerGone`.
//!    The sender thread gives runs over them (`Outlet::send_to_peer`).
//! 6. **Exit** on `Shutdown`, at the end of the stream (the client closed
//!    it or died), or on a malformed message or frame — over the frame
//!    limit, too many descriptors — with its reason on stderr and status
//!    71 (`EXIT_PROTOCOL`).
//!    Running tasks are not waited for.
//!
//! The runs themselves — queue, claims, outbox, calling the task — are
//! the worker runtime of `shoal_core::worker`, the same in every mode; this
//! file is what makes a process one, and its Unix-socket outlet.
//!
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::catch_unwind;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::fdpass;
use crate::uds::{self, Inbound, Outgoing, ResultBatch, RunBatch};
use rustix::fs::FileType;
use rustix::io::FdFlags;
use rustix::process::Signal;
use shoal_core::failure::panic_message;
use shoal_core::object::Obj;
use shoal_core::protocol::{FromWorker, Run, RunResult, ToWorker};
use shoal_core::registry;
use shoal_core::scheduler::{TaskId, WorkerId};
use shoal_core::worker::{Flow, Outlet, Worker};

/// The descriptor number of the worker's end of its socket: the worker role.
pub const ENV_FD: &str = "SHOAL_WORKER_FD";
/// The pid of the client that started the worker.
pub const ENV_PARENT: &str = "SHOAL_WORKER_PARENT";
/// Threads of the worker's pool.
pub const ENV_THREADS: &str = "SHOAL_WORKER_THREADS";
/// Milliseconds between the worker's heartbeats (unset or 0: none).
pub const ENV_HEARTBEAT_MS: &str = "SHOAL_WORKER_HEARTBEAT_MS";
/// Test hook: a fingerprint (decimal) the worker announces instead of its
/// own, so tests can exercise the client's refusal of a different binary.
pub const ENV_FINGERPRINT_OVERRIDE: &str = "SHOAL_TEST_FINGERPRINT_OVERRIDE";
/// Test hook: the worker dies before its hello — `abort` (SIGABRT),
/// `exit0` (exits 0, as a binary whose `main` never took the role would),
/// or `abort-once:<path>` (the worker that creates `<path>` aborts, the
/// others go on), so tests can exercise start-up retries and their errors.
pub const ENV_DIE_BEFORE_HELLO: &str = "SHOAL_TEST_DIE_BEFORE_HELLO";
/// The argument workers are started with, so that a `main` that parses its
/// arguments before `shoal::init` fails loudly instead of doing user work.
pub const WORKER_ARG: &str = "--shoal-worker";

/// Exit status of a worker that could not set itself up.
const EXIT_SETUP: i32 = 70;
/// Exit status of a worker that received a malformed message or frame.
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
pub static WORKER_HOOK: extern "C" fn() = worker_hook;

extern "C" fn worker_hook() {
    // Nothing may unwind out of an `extern "C"` function; `take_role`
    // catches panics itself, and returns only when this is no worker.
    take_role();
}

/// If this process was started as a worker, be one and never return.
pub fn take_role() {
    let Some(fd) = std::env::var_os(ENV_FD) else { return };
    let code = match catch_unwind(|| serve(fd)) {
        Ok(code) => code,
        Err(payload) => {
            tracing::error!("worker process {}: internal error: {}", std::process::id(), panic_message(&*payload));
            EXIT_SETUP
        }
    };
    std::process::exit(code)
}

/// Whether this process has the worker role but has not taken it (it was
/// started as a worker and the hook did not run).
pub fn has_untaken_role() -> bool {
    std::env::var_os(ENV_FD).is_some()
}

struct Setup {
    socket: UnixStream,
    threads: usize,
    heartbeat: Option<Duration>,
    fingerprint: u128,
    /// [`ENV_DIE_BEFORE_HELLO`]'s value, if set.
    die_before_hello: Option<String>,
}

fn serve(fd: OsString) -> i32 {
    // No `main` of the program runs here: the logs go to stderr (inherited
    // from the client), filtered by the client's RUST_LOG.
    crate::logging::install_default();
    // Results are made here: their memory files are made ahead of need.
    crate::warm::enable();
    let setup = match set_up(fd) {
        Ok(Some(setup)) => setup,
        Ok(None) => {
            tracing::info!("worker process {}: the client that started it is gone; exiting", std::process::id());
            return 0;
        }
        Err(message) => {
            tracing::error!("worker process {}: cannot start: {message}", std::process::id());
            return EXIT_SETUP;
        }
    };
    // The channels to peers: the reader adds and removes them, the sender
    // thread gives runs over them.
    let peer_outs: PeerOuts = Arc::new(Mutex::new(HashMap::new()));
    let outlet = Uplink {
        pid: std::process::id(),
        socket: setup.socket,
        send_lock: Mutex::new(()),
        peers: Arc::clone(&peer_outs),
    };
    if let Some(how) = &setup.die_before_hello {
        die_before_hello(how);
    }
    let hello = FromWorker::Hello { fingerprint: setup.fingerprint, pid: std::process::id() };
    match uds::control_to_driver(&hello) {
        Ok(outgoing) => outlet.send(&outgoing),
        Err(e) => {
            tracing::warn!("worker process {}: {e}", std::process::id());
            return EXIT_SETUP;
        }
    }
    let socket = match outlet.socket.try_clone() {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("worker process {}: cannot read its socket: {e}", std::process::id());
            return EXIT_SETUP;
        }
    };
    let mut worker = match Worker::start(outlet, setup.threads, setup.heartbeat) {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!("worker process {}: cannot start {} threads: {e}", std::process::id(), setup.threads);
            return EXIT_SETUP;
        }
    };
    // Descriptors stashed for the next runs (see `uds::codec`).
    let mut stash = Vec::new();
    // Channels from peers (see "Peers" in the module docs).
    let mut peers: Vec<PeerIn> = Vec::new();
    let code = 'serve: loop {
        // See `uds::wait_readable` for why not block in `recv`.
        let ready = wait_any(&socket, &peers);
        // Peers first, newest last: one frame from each that has one.
        for i in (0..peers.len()).rev() {
            if !ready[i + 1] {
                continue;
            }
            match read_peer(&mut peers[i]) {
                Ok(Some(runs)) => worker.adopt(peers[i].id, runs),
                Ok(None) => {}
                Err(PeerEnd::Closed) => {
                    let gone = peers.swap_remove(i);
                    lock(&peer_outs).remove(&gone.id);
                    worker.peer_left(gone.id);
                }
                Err(PeerEnd::Malformed(e)) => {
                    tracing::error!(
                        "worker process {}: malformed frame from peer worker {}: {e}; exiting",
                        std::process::id(),
                        peers[i].id.0
                    );
                    break 'serve EXIT_PROTOCOL;
                }
            }
        }
        if !ready[0] {
            continue;
        }
        let message = match fdpass::recv(&socket) {
            Ok(Some(message)) => message,
            Ok(None) => break 0,
            Err(e) if is_protocol_error(&e) => {
                tracing::error!(
                    "worker process {}: protocol error: the client sent a frame this worker refuses ({e}); exiting",
                    std::process::id()
                );
                break EXIT_PROTOCOL;
            }
            Err(e) => {
                tracing::info!("worker process {}: lost the client connection: {e}", std::process::id());
                break 0;
            }
        };
        // This thread never runs a task and never blocks on sending, so it
        // always drains the socket — the client may be blocked sending to
        // it — and claims stolen runs while tasks run.
        match uds::decode_inbound(message, &mut stash) {
            Ok(Some(Inbound::Message(message))) => {
                if worker.handle(message) == Flow::Exit {
                    break 0;
                }
            }
            Ok(Some(Inbound::Peer { worker: id, socket })) => match socket.try_clone() {
                Ok(reading) => {
                    lock(&peer_outs).insert(id, Arc::new(PeerOut { socket, send_lock: Mutex::new(()) }));
                    peers.push(PeerIn { id, socket: reading, stash: Vec::new() });
                    worker.peer_joined(id);
                }
                // Without the channel, runs are never given to that peer.
                Err(e) => tracing::warn!("worker process {}: cannot use a peer channel: {e}", std::process::id()),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::error!(
                    "worker process {}: malformed message from the client: {e}; exiting",
                    std::process::id()
                );
                break EXIT_PROTOCOL;
            }
        }
    };
    // Exit without stopping the pool: running tasks are not waited for.
    worker.abandon();
    code
}

/// A peer's channel, as the reader reads it.
struct PeerIn {
    id: WorkerId,
    socket: UnixStream,
    /// Descriptors stashed for the next runs from it (see `uds::codec`).
    stash: Vec<OwnedFd>,
}

/// A peer's channel, as the sender thread writes runs given to it.
struct PeerOut {
    socket: UnixStream,
    /// One message at a time: a batch may take several frames.
    send_lock: Mutex<()>,
}

/// Why reading a peer's channel stopped.
enum PeerEnd {
    /// It ended (the peer exited or died) or failed: everything it sent
    /// before was read.
    Closed,
    /// It sent something this worker refuses.
    Malformed(String),
}

/// One frame from a peer: runs it gave (`None` for a `Stash` frame, whose
/// descriptors wait for the next). A peer sends nothing but runs.
fn read_peer(peer: &mut PeerIn) -> Result<Option<Vec<Run>>, PeerEnd> {
    let message = match fdpass::recv(&peer.socket) {
        Ok(Some(message)) => message,
        Err(e) if is_protocol_error(&e) => return Err(PeerEnd::Malformed(e.to_string())),
        Ok(None) | Err(_) => return Err(PeerEnd::Closed),
    };
    match uds::decode_to_worker(message, &mut peer.stash) {
        Ok(Some(ToWorker::Runs(runs))) => Ok(Some(runs)),
        Ok(None) => Ok(None),
        Ok(Some(_)) => Err(PeerEnd::Malformed("a peer sent a message other than runs".into())),
        Err(e) => Err(PeerEnd::Malformed(e.to_string())),
    }
}

/// Waits until the driver's socket or a peer's has something (or ended):
/// which, the driver's first.
fn wait_any(driver: &UnixStream, peers: &[PeerIn]) -> Vec<bool> {
    use rustix::event::{PollFd, PollFlags};
    let mut fds: Vec<PollFd<'_>> =
        std::iter::once(driver).chain(peers.iter().map(|p| &p.socket)).map(|s| PollFd::new(s, PollFlags::IN)).collect();
    loop {
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => return fds.iter().map(|fd| !fd.revents().is_empty()).collect(),
            Err(rustix::io::Errno::INTR) => continue,
            // Cannot poll: try reading each, which then says what is wrong.
            Err(_) => return vec![true; fds.len()],
        }
    }
}

/// Whether a receive failed because of what the client sent (a frame over
/// the limit, too many descriptors) rather than because the connection
/// ended or broke: the first is a bug to report, with a failure status.
fn is_protocol_error(e: &crate::ShmError) -> bool {
    use crate::ShmError;
    matches!(e, ShmError::FrameTooLarge { .. } | ShmError::TooManyFds { .. } | ShmError::ControlTruncated { .. })
}

/// Steps 2 and 3 of the module docs; `None` if the parent is gone.
fn set_up(fd: OsString) -> Result<Option<Setup>, String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG failed: {e}"))?;
    // A worker holds a descriptor per queued input and unsent result: the
    // soft limit goes up to the hard one, as in the client. A worker that
    // cannot raise it works within the soft limit; it is said once.
    if let Err(e) = crate::limits::raise_nofile_limit() {
        tracing::warn!("worker process {}: {e}", std::process::id());
    }
    let parent: i32 = parse_var(ENV_PARENT)?;
    if rustix::process::getppid().map(|p| p.as_raw_pid()) != Some(parent) {
        return Ok(None);
    }
    let threads: usize = parse_var(ENV_THREADS)?;
    let heartbeat = match std::env::var_os(ENV_HEARTBEAT_MS) {
        Some(_) => Some(Duration::from_millis(parse_var(ENV_HEARTBEAT_MS)?)).filter(|d| !d.is_zero()),
        None => None,
    };
    let fingerprint = match std::env::var_os(ENV_FINGERPRINT_OVERRIDE) {
        Some(_) => parse_var(ENV_FINGERPRINT_OVERRIDE)?,
        None => registry::fingerprint().map_err(|e| e.to_string())?,
    };
    let raw: RawFd =
        fd.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{ENV_FD}={fd:?} is not a number"))?;
    let socket = adopt_socket(raw)?;
    let die_before_hello = std::env::var(ENV_DIE_BEFORE_HELLO).ok();
    for var in [ENV_FD, ENV_PARENT, ENV_THREADS, ENV_HEARTBEAT_MS, ENV_FINGERPRINT_OVERRIDE, ENV_DIE_BEFORE_HELLO] {
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
    Ok(Some(Setup { socket, threads: threads.max(1), heartbeat, fingerprint, die_before_hello }))
}

/// The [`ENV_DIE_BEFORE_HELLO`] test hook: returns only if this worker is
/// to go on.
fn die_before_hello(how: &str) {
    match how.split_once(':') {
        Some(("abort-once", path)) => {
            if std::fs::OpenOptions::new().write(true).create_new(true).open(path).is_ok() {
                std::process::abort();
            }
        }
        _ if how == "exit0" => std::process::exit(0),
        _ => std::process::abort(),
    }
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

/// The worker's end of its socket to the client: replies come from every
/// pool thread and the sender thread, so sending takes a lock (a message is
/// one `sendmsg` sequence). And its channels to its peers, for the runs it
/// gives them.
struct Uplink {
    /// This process's id, for naming segments (read once: `getpid` is a
    /// system call, and a name is made for every result).
    pid: u32,
    socket: UnixStream,
    send_lock: Mutex<()>,
    peers: PeerOuts,
}

/// The channels to peers, by peer.
type PeerOuts = Arc<Mutex<HashMap<WorkerId, Arc<PeerOut>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Uplink {
    /// Sends a frame. A worker whose client is gone has nothing left to do:
    /// it exits.
    fn send(&self, outgoing: &Outgoing) {
        let sent = {
            let _guard = lock(&self.send_lock);
            outgoing.send(&self.socket)
        };
        if let Err(e) = sent {
            tracing::info!("worker process {}: cannot reply to the client ({e}); exiting", std::process::id());
            std::process::exit(0)
        }
    }
}

impl Outlet for Uplink {
    /// Archives the result once (validated there) and, if large, writes it
    /// into a new sealed segment, on the pool thread that made it.
    fn seal(&self, task: TaskId, result: Obj) -> Result<(Obj, u64), String> {
        let pid = self.pid;
        let name = move || format!("shoal-w{pid}-t{}.{}", task.index, task.generation);
        // Published first: a large result is serialized straight into its
        // segment (archiving it here first would make the heap copy that
        // publishing avoids); its size is then the segment's.
        let published = uds::publish(&result, name)?;
        let nbytes = published.archived_bytes().map_err(|e| e.to_string())?.len() as u64;
        Ok((published, nbytes))
    }

    fn send_results(&self, results: Vec<RunResult>) {
        let mut batch = ResultBatch::new();
        for result in results {
            // Sealed already: nothing is published here.
            let name = || format!("shoal-w{}-late", std::process::id());
            if let Err(e) = batch.push(result, name) {
                tracing::error!("worker process {}: internal error: {e}", std::process::id());
            }
        }
        match batch.finish() {
            Ok(frames) => frames.iter().for_each(|frame| self.send(frame)),
            Err(e) => tracing::error!("worker process {}: internal error: {e}", std::process::id()),
        }
    }

    fn send_stolen(&self, tasks: Vec<TaskId>) {
        self.send_control(&FromWorker::Stolen(tasks));
    }

    fn send_recalled(&self, tasks: Vec<TaskId>) {
        self.send_control(&FromWorker::Recalled(tasks));
    }

    fn send_running(&self, tasks: Vec<TaskId>) {
        self.send_control(&FromWorker::Running(tasks));
    }

    fn send_notice(&self, notice: FromWorker) {
        self.send_control(&notice);
    }

    /// The runs' inputs go as they came: inline archives copied, segments
    /// as their descriptors (the peer maps the same pages).
    fn send_to_peer(&self, peer: WorkerId, runs: Vec<Run>) -> Result<(), String> {
        let Some(out) = lock(&self.peers).get(&peer).cloned() else {
            return Err(format!("no channel to peer worker {}", peer.0));
        };
        let mut batch = RunBatch::new();
        for run in runs {
            // Received objects are segments or short archives: nothing is
            // published here.
            batch.push(run, || format!("shoal-w{}-give", std::process::id()))?;
        }
        let frames = batch.finish().map_err(|e| e.to_string())?;
        let _guard = lock(&out.send_lock);
        frames.iter().try_for_each(|frame| frame.send(&out.socket))
    }
}

impl Uplink {
    /// Sends a message without objects.
    fn send_control(&self, message: &FromWorker) {
        match uds::control_to_driver(message) {
            Ok(frame) => self.send(&frame),
            Err(e) => tracing::error!("worker process {}: internal error: {e}", std::process::id()),
        }
    }
}
