//! Starting, replacing, stopping and reaping worker processes; reading
//! their connections.
//!
//! # Why one thread starts every worker
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the worker exits,
//! not the process. So every worker is forked by the supervisor thread,
//! which lives until all workers are reaped: a worker then dies exactly when
//! its client process dies (or shuts it down). Client threads ask the
//! supervisor for workers through a channel.
//!
//! # Spawning
//!
//! A worker is `/proc/self/exe` — this very binary, even if the file was
//! replaced since — started with `--shoal-worker` and the worker variables
//! in its environment (see [`super::worker`]). Its end of a
//! `UnixStream::pair()` is inherited: the descriptor is close-on-exec in
//! this process (so no other child inherits it) and made inheritable only in
//! the forked child, between fork and exec (`pre_exec`, one `fcntl`).
//!
//! # Connections
//!
//! After the hello, each worker's connection is read by a thread of its
//! own, which turns messages into scheduler events: each time it wakes it
//! takes every frame already there and hands them to the engine under one
//! lock (one scheduler pass, one batch of runs per worker). When the
//! connection ends — the worker died, or sent something malformed — the
//! reader closes it, reports the worker lost to the engine, and asks the
//! supervisor to reap the process (SIGKILL if it still runs, then `wait`)
//! and to start a replacement, so the pool keeps its size.
//!
//! # Heartbeats
//!
//! A worker sends `Running` every [`SpawnConfig::heartbeat_interval`] from
//! a thread of its own (whatever its tasks do), and every frame it sends
//! counts as hearing from it. The supervisor looks at every connection each
//! `WATCH_TICK` (1 s; a quarter of the limit if shorter): a worker silent for longer than
//! [`SpawnConfig::silence_limit`] while its reader listened (stopped with
//! SIGSTOP, stuck in the kernel, its heartbeat thread starved) is declared
//! lost: killed with SIGKILL, which ends its connection, so its reader
//! reports it lost and it is replaced as any dead worker.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};
use shoal_core::scheduler::WorkerId;

use shoal_core::protocol::FromWorker;

use super::worker::{ENV_FD, ENV_HEARTBEAT_MS, ENV_PARENT, ENV_THREADS, WORKER_ARG};
use super::{Conn, PoolError as Error, PoolHost};
use crate::{fdpass, uds};

type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a new worker has to say hello (a cold start of a large binary
/// on a busy machine can take a while).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutting down waits for workers to exit before killing them.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// Attempts at starting a replacement before giving up on it.
const REPLACE_ATTEMPTS: u32 = 3;
/// Attempts at starting each worker of a new client whose process died
/// before its hello (killed, crashed, out of memory: a machine under
/// pressure), as a replacement is retried; a worker that exits 0 without a
/// hello, or is refused, is not retried (it would do the same again).
const START_ATTEMPTS: u32 = 3;

/// How often the supervisor looks for silent workers, at most (and at
/// least a quarter of the silence limit, so a short limit is kept closely).
const WATCH_TICK: Duration = Duration::from_secs(1);
/// The longest heartbeat interval: workers beat at least this often (a
/// quarter of the silence limit if that is shorter).
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How each worker is started.
#[derive(Clone, Debug)]
pub struct SpawnConfig {
    /// Threads of each worker's pool.
    pub threads: usize,
    /// Variables added to each worker's environment.
    pub env: Vec<(String, String)>,
    /// A worker not heard from for this long (while its reader listened) is
    /// declared lost, killed and replaced (Dask's `worker-ttl`); `None`:
    /// never (and workers send no heartbeat).
    pub silence_limit: Option<Duration>,
}

impl SpawnConfig {
    /// How often workers send their heartbeat: a quarter of the silence
    /// limit, at most `MAX_HEARTBEAT_INTERVAL` (1 s), at least a millisecond.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.silence_limit.map(|limit| (limit / 4).clamp(Duration::from_millis(1), MAX_HEARTBEAT_INTERVAL))
    }

    fn watch_tick(&self) -> Duration {
        self.silence_limit.map_or(WATCH_TICK, |limit| (limit / 4).clamp(Duration::from_millis(1), WATCH_TICK))
    }
}

/// The client's handle to the supervisor thread.
pub struct Supervisor {
    tx: Sender<Request>,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

enum Request {
    /// Start `count` workers; reply when all said hello, or at the first error.
    Start { count: usize, reply: Sender<Result<()>> },
    /// A worker's connection ended: reap it and start a replacement.
    Lost { worker: WorkerId, reason: String },
    /// Stop every worker and reap it; join the readers except `except` (the
    /// thread asking, which may be one of them).
    Stop { except: ThreadId },
}

impl Supervisor {
    /// Starts the supervisor thread, which reports to `engine`.
    pub fn start(engine: Weak<dyn PoolHost>, config: SpawnConfig) -> Result<Supervisor> {
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut state = Running {
            engine,
            config,
            tx: tx.clone(),
            stopping: Arc::clone(&stopping),
            children: HashMap::new(),
            readers: HashMap::new(),
            conns: HashMap::new(),
            next_id: 0,
            died_before_hello: false,
            exe_name: std::env::current_exe().map(|p| p.into_os_string()).unwrap_or_else(|_| "shoal-worker".into()),
        };
        let thread = std::thread::Builder::new()
            .name("shoal-supervisor".into())
            .spawn(move || state.run(rx))
            .map_err(|e| Error::Start(format!("could not start the supervisor thread: {e}")))?;
        Ok(Supervisor { tx, stopping, thread })
    }

    /// Starts `count` workers and waits until each said hello.
    pub fn start_workers(&self, count: usize) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        self.tx.send(Request::Start { count, reply }).map_err(|_| Error::Closed)?;
        answer.recv().unwrap_or(Err(Error::Start("the supervisor thread stopped".into())))
    }

    /// Stops and reaps every worker; returns once they are all gone (unless
    /// called on the supervisor thread itself, which then stops next).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let me = std::thread::current().id();
        let _ = self.tx.send(Request::Stop { except: me });
        if self.thread.thread().id() != me {
            // The supervisor catches nothing that could panic; if it did,
            // its workers still die with this process (PDEATHSIG).
            let _ = self.thread.join();
        }
    }
}

/// The supervisor thread's state.
struct Running {
    engine: Weak<dyn PoolHost>,
    config: SpawnConfig,
    /// For reader threads to report lost workers.
    tx: Sender<Request>,
    stopping: Arc<AtomicBool>,
    children: HashMap<WorkerId, Child>,
    readers: HashMap<WorkerId, JoinHandle<()>>,
    /// Connections of workers that said hello, watched for silence.
    conns: HashMap<WorkerId, Arc<Conn>>,
    next_id: u32,
    exe_name: OsString,
    /// Set when the last handshake failed because the process died (not
    /// exited 0) before its hello: worth another attempt.
    died_before_hello: bool,
}

/// A started worker that has not said hello yet.
struct Pending {
    id: WorkerId,
    pid: u32,
    socket: UnixStream,
}

impl Running {
    fn run(&mut self, rx: Receiver<Request>) {
        let tick = self.config.watch_tick();
        loop {
            let request = match rx.recv_timeout(tick) {
                Ok(request) => request,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill_silent();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.kill_silent();
            match request {
                Request::Start { count, reply } => {
                    let _ = reply.send(self.start_workers(count));
                }
                Request::Lost { worker, reason } => {
                    let status = self.reap(worker);
                    if self.stopping.load(Ordering::SeqCst) {
                        continue;
                    }
                    tracing::warn!(
                        "worker {} was lost: {reason} ({status}). The runs it had go back to the queue (the \
                         results it made stay in this machine's store), and a replacement is started.",
                        worker.0
                    );
                    self.replace();
                }
                Request::Stop { except } => {
                    self.stop_all(except);
                    return;
                }
            }
        }
        // Every sender is gone (the engine was dropped without a stop).
        self.stop_all(std::thread::current().id());
    }

    /// Kills every worker silent past the limit (see "Heartbeats" in the
    /// module docs); its reader then reports it lost.
    fn kill_silent(&mut self) {
        let Some(limit) = self.config.silence_limit else { return };
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let silent: Vec<Arc<Conn>> = self.conns.values().filter(|c| c.silence() > limit).cloned().collect();
        for conn in silent {
            tracing::warn!(
                "shoal: worker {} (pid {}) sent nothing for {:.1} s (limit {:.1} s: stopped or stuck); killing it, \
                 its runs go back to the queue and a replacement is started",
                conn.id.0,
                conn.pid,
                conn.silence().as_secs_f64(),
                limit.as_secs_f64()
            );
            self.conns.remove(&conn.id);
            if let Some(child) = self.children.get_mut(&conn.id) {
                let _ = child.kill();
            }
            conn.close();
        }
    }

    fn start_workers(&mut self, count: usize) -> Result<()> {
        let mut pending = Vec::with_capacity(count);
        for _ in 0..count {
            pending.push(self.spawn()?);
        }
        for p in pending {
            self.join_or_retry(p)?;
        }
        Ok(())
    }

    /// Joins a starting worker; if it died before its hello, starts another
    /// in its place, up to [`START_ATTEMPTS`] in all.
    fn join_or_retry(&mut self, first: Pending) -> Result<()> {
        let mut p = first;
        let mut attempt = 1;
        loop {
            self.died_before_hello = false;
            match self.join(p) {
                Err(e) if self.died_before_hello && attempt < START_ATTEMPTS => {
                    tracing::warn!("a starting worker died before its handshake, so another is started: {e}");
                    attempt += 1;
                    p = self.spawn()?;
                }
                Err(Error::Start(m)) if self.died_before_hello => {
                    return Err(Error::Start(format!("{m}; that was the last of {START_ATTEMPTS} attempts")));
                }
                result => return result,
            }
        }
    }

    fn replace(&mut self) {
        let mut last = String::new();
        for attempt in 1..=REPLACE_ATTEMPTS {
            match self.spawn().and_then(|p| self.join(p)) {
                Ok(()) => return,
                Err(Error::Closed) => return,
                Err(e) => {
                    tracing::warn!("could not start a replacement worker (attempt {attempt}): {e}");
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
            }
        }
        if let Some(engine) = self.engine.upgrade() {
            engine.broken(format!("every worker process was lost and none could be started again: {last}"));
        }
    }

    /// Forks and executes a worker.
    fn spawn(&mut self) -> Result<Pending> {
        let failed = |e: std::io::Error| Error::Start(format!("could not start a worker process: {e}"));
        let (ours, theirs) = UnixStream::pair().map_err(failed)?;
        // Descriptors 0-2 are replaced in the child by its standard streams:
        // keep the socket above them (possible if this process closed one).
        let theirs: OwnedFd = if theirs.as_raw_fd() < 3 {
            rustix::io::fcntl_dupfd_cloexec(&theirs, 3).map_err(|e| failed(e.into()))?
        } else {
            theirs.into()
        };
        let raw = theirs.as_raw_fd();
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(&self.exe_name)
            .arg(WORKER_ARG)
            .env(ENV_FD, raw.to_string())
            .env(ENV_PARENT, std::process::id().to_string())
            .env(ENV_THREADS, self.config.threads.to_string())
            .env(ENV_HEARTBEAT_MS, self.config.heartbeat_interval().map_or(0, |d| d.as_millis()).to_string())
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        // A process group of its own, in the client's session: the
        // terminal's Ctrl-C (SIGINT to its foreground process group) reaches
        // the client, which may handle it, and not its workers; they still
        // die with the client (PR_SET_PDEATHSIG), as Dask's nannies' workers
        // do. Not a session of its own (`setsid`): with the kernel's
        // autogroup scheduling (on by default in desktop and many server
        // kernels), every session is a scheduling group of its own, and
        // workers in other groups than their client lost the wake-up
        // handoff between them: a chain of tasks ran 2x slower per hop
        // (~27 -> ~50 µs; see ARCHITECTURE.md, "Worker processes share their
        // client's session").
        command.process_group(0);
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe calls are allowed: it makes one fcntl
        // syscall (rustix calls the kernel directly: no allocation, no lock),
        // one `signal` (a sigaction syscall, async-signal-safe by POSIX),
        // and converts an errno into an `io::Error` (a plain integer, no
        // allocation). `raw` is open in the child: fork copied the
        // descriptor table while `theirs`, which owns it here, is alive
        // (dropped only after `spawn` returns).
        unsafe {
            command.pre_exec(move || {
                let fd = BorrowedFd::borrow_raw(raw);
                rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(std::io::Error::from)?;
                // A background process group that writes to a terminal set
                // to `stty tostop` is stopped by SIGTTOU; ignored (it stays
                // ignored across exec), the worker's log lines go through.
                if libc::signal(libc::SIGTTOU, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(failed)?;
        drop(theirs);
        let pid = child.id();
        self.children.insert(id, child);
        Ok(Pending { id, pid, socket: ours })
    }

    /// Waits for the worker's hello, checks it, and hands the worker to the
    /// engine; on error the worker is killed and reaped.
    fn join(&mut self, p: Pending) -> Result<()> {
        let id = p.id;
        let result = self.handshake(&p).and_then(|()| self.register(p));
        if result.is_err() {
            self.reap(id);
        }
        result
    }

    fn handshake(&mut self, p: &Pending) -> Result<()> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            let mut fds = [PollFd::new(&p.socket, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 50_000_000 })) {
                Ok(n) if n > 0 => break,
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(Error::Start(format!("waiting for worker process {}: {e}", p.pid))),
            }
            if Instant::now() >= deadline {
                return Err(Error::Start(format!(
                    "worker process {} did not answer within {} s",
                    p.pid,
                    HANDSHAKE_TIMEOUT.as_secs()
                )));
            }
        }
        let message = match fdpass::recv(&p.socket) {
            Ok(Some(message)) => message,
            Ok(None) => {
                let status = self.children.get_mut(&p.id).map(|c| c.wait());
                // Exit status 0 without a hello: the binary ran its own main
                // instead of taking the worker role. Anything else (a signal,
                // a failure status) is a death, not a missing init().
                if let Some(Ok(s)) = &status
                    && s.success()
                {
                    return Err(Error::Start(format!(
                        "worker process {} exited with status 0 before its handshake: the binary did not take \
                         the worker role; a binary whose main is its own must call shoal::init() first",
                        p.pid
                    )));
                }
                self.died_before_hello = true;
                let status = status.map(describe).unwrap_or_else(|| "status unknown".into());
                return Err(Error::Start(format!("worker process {} died before its handshake ({status})", p.pid)));
            }
            Err(e) => return Err(Error::Start(format!("handshake with worker process {}: {e}", p.pid))),
        };
        match uds::decode_to_driver(message) {
            Ok(FromWorker::Hello { fingerprint, pid }) => {
                let ours = shoal_core::registry::fingerprint().map_err(|e| Error::Start(e.to_string()))?;
                if fingerprint != ours {
                    return Err(Error::FingerprintMismatch { worker: fingerprint, client: ours });
                }
                if pid != p.pid {
                    return Err(Error::Start(format!("worker process {} introduced itself as pid {pid}", p.pid)));
                }
                Ok(())
            }
            Ok(_) => Err(Error::Start(format!("worker process {} did not start with a hello", p.pid))),
            Err(e) => Err(Error::Start(format!("worker process {} sent a malformed hello: {e}", p.pid))),
        }
    }

    /// Hands a worker that said hello to the engine and starts its reader.
    fn register(&mut self, p: Pending) -> Result<()> {
        let nthreads = u32::try_from(self.config.threads).unwrap_or(u32::MAX);
        let conn = Arc::new(Conn::new(p.id, p.pid, p.socket, nthreads));
        let engine = self.engine.upgrade().ok_or(Error::Closed)?;
        if !engine.joined(Arc::clone(&conn)) {
            return Err(Error::Closed);
        }
        let (weak, tx, reader_conn) = (Arc::downgrade(&engine), self.tx.clone(), Arc::clone(&conn));
        drop(engine);
        let reader = std::thread::Builder::new()
            .name(format!("shoal-conn-{}", p.id.0))
            .spawn(move || read_connection(&weak, &reader_conn, &tx));
        match reader {
            Ok(handle) => {
                self.readers.insert(p.id, handle);
                self.conns.insert(p.id, conn);
                Ok(())
            }
            Err(e) => {
                conn.close();
                if let Some(engine) = self.engine.upgrade() {
                    engine.lost(p.id);
                }
                Err(Error::Start(format!("could not start a thread to read worker {}: {e}", p.id.0)))
            }
        }
    }

    /// Kills (if it still runs) and reaps a worker, and joins its reader;
    /// how it ended.
    fn reap(&mut self, worker: WorkerId) -> String {
        self.conns.remove(&worker);
        let status = match self.children.remove(&worker) {
            Some(mut child) => {
                let _ = child.kill();
                format!("pid {}, {}", child.id(), describe(child.wait()))
            }
            None => "no such process".into(),
        };
        if let Some(reader) = self.readers.remove(&worker) {
            // Reporting the loss was the reader's last act.
            let _ = reader.join();
        }
        status
    }

    /// Gives every worker a moment to exit (the engine told them to), then
    /// kills and reaps the rest; joins the readers.
    fn stop_all(&mut self, except: ThreadId) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + EXIT_GRACE;
        for (_, mut child) in self.children.drain() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        for (_, reader) in self.readers.drain() {
            if reader.thread().id() != except {
                let _ = reader.join();
            }
        }
    }
}

/// Messages one pass of a reader takes at most before handling them.
const MESSAGES_PER_PASS: usize = 256;

/// Reads one worker's messages until its connection ends, then reports the
/// worker lost (see the module docs). Each pass blocks for one message,
/// takes every other complete one already there, and hands them all to the
/// engine under one lock: a reader woken once handles all that arrived.
fn read_connection(engine: &Weak<dyn PoolHost>, conn: &Arc<Conn>, tx: &Sender<Request>) {
    let mut messages = Vec::new();
    let reason = 'read: loop {
        // Descriptors received this pass and not yet handed to the store:
        // a pass ends at the first frame that carries any, so a reader
        // holds at most one frame's (the store's budget reserves that).
        let mut pass_fds = 0;
        // See `uds::wait_readable` for why not block in `recv`.
        uds::wait_readable(&conn.socket, true);
        loop {
            let message = match fdpass::recv(&conn.socket) {
                Ok(Some(message)) => message,
                Ok(None) => break 'read "its connection closed (the process exited or was killed)".to_string(),
                Err(e) => break 'read format!("its connection failed: {e}"),
            };
            conn.heard_now();
            pass_fds += message.fds.len();
            match uds::decode_to_driver(message) {
                Ok(message) => messages.push(message),
                Err(e) => break 'read format!("it sent a malformed message ({e}), so its connection was closed"),
            }
            if messages.len() >= MESSAGES_PER_PASS || pass_fds > 0 || !uds::wait_readable(&conn.socket, false) {
                break;
            }
        }
        let Some(engine) = engine.upgrade() else { return };
        conn.set_handling(true);
        let handled = engine.messages(conn, std::mem::take(&mut messages));
        conn.set_handling(false);
        if let Err(e) = handled {
            break format!("it broke the protocol ({e}), so its connection was closed");
        }
    };
    conn.close();
    if engine.upgrade().is_some_and(|e| e.lost(conn.id)) {
        let _ = tx.send(Request::Lost { worker: conn.id, reason });
    }
}

/// How a process ended, for the log.
fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
            _ => format!("{s}"),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => " (SIGILL)",
        6 => " (SIGABRT: the process aborted)",
        7 => " (SIGBUS)",
        8 => " (SIGFPE)",
        9 => " (SIGKILL: killed, or out of memory)",
        11 => " (SIGSEGV: invalid memory access)",
        15 => " (SIGTERM)",
        _ => "",
    }
}
