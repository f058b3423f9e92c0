//! A machine's worker processes: started from this very binary, told
//! apart from the program by their environment, replaced when they die,
//! reaped always.
//!
//! - [`supervisor`]: starts, replaces, stops and reaps worker processes,
//!   and runs one reader thread per worker connection, which hands what it
//!   reads to the [`PoolHost`] (the driver of the processes mode, or a
//!   machine's agent in a cluster);
//! - [`worker`]: the worker process itself — the hook that makes a
//!   re-executed binary one, and its end of the socket, over which the
//!   worker runtime of `shoal_core::worker` runs tasks.

pub mod supervisor;
pub mod worker;

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_core::protocol::FromWorker;
use shoal_core::scheduler::WorkerId;

use crate::uds::Outgoing;

pub use supervisor::{SpawnConfig, Supervisor};

/// Why the pool could not do what it was asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The pool was shut down.
    #[error("the worker pool was shut down")]
    Closed,
    /// A worker process could not be started; why.
    #[error("{0}")]
    Start(String),
    /// A worker runs a different binary.
    #[error(
        "worker runs a different binary: registry fingerprint {worker:032x} ≠ {client:032x}; \
         run the same build everywhere"
    )]
    FingerprintMismatch {
        /// The worker's fingerprint.
        worker: u128,
        /// This process's.
        client: u128,
    },
}

/// The driver's end of one worker process's socket.
pub struct Conn {
    /// The driver's name for the worker.
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// The socket.
    pub socket: UnixStream,
    /// Threads of the worker's pool.
    pub nthreads: u32,
    /// One message at a time: a message may take several `sendmsg` calls.
    send_lock: Mutex<()>,
    /// When the connection was made: the origin of `heard`.
    since: Instant,
    /// Milliseconds from `since` to the last time its reader heard from
    /// the worker, or went back to listening after handling what it heard.
    heard: AtomicU64,
    /// Its reader is handling messages (under the engine's lock): silence
    /// then is this side's, not the worker's.
    handling: AtomicBool,
}

impl Conn {
    /// The connection to worker `id`, process `pid`.
    pub fn new(id: WorkerId, pid: u32, socket: UnixStream, nthreads: u32) -> Conn {
        Conn {
            id,
            pid,
            socket,
            nthreads,
            send_lock: Mutex::new(()),
            since: Instant::now(),
            heard: AtomicU64::new(0),
            handling: AtomicBool::new(false),
        }
    }

    /// Notes that the worker was heard from now (or that its reader is
    /// listening again after handling what it heard).
    pub fn heard_now(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard.store(ms, Ordering::Relaxed);
    }

    /// Marks the reader as handling messages (`true`) or listening.
    pub fn set_handling(&self, handling: bool) {
        self.handling.store(handling, Ordering::Relaxed);
        if !handling {
            self.heard_now();
        }
    }

    /// How long the worker has been silent while its reader listened
    /// (zero while the reader handles messages).
    pub fn silence(&self) -> Duration {
        if self.handling.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let heard = Duration::from_millis(self.heard.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(heard)
    }

    /// Sends one frame.
    pub fn send(&self, outgoing: &Outgoing) -> Result<(), String> {
        let _guard = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        outgoing.send(&self.socket)
    }

    /// Sends the worker its end of a channel to peer `peer` (see
    /// [`crate::uds::Inbound::Peer`]).
    pub fn introduce(&self, peer: WorkerId, channel: &UnixStream) -> Result<(), String> {
        let _guard = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        crate::uds::introduce(&self.socket, peer, channel).map_err(|e| e.to_string())
    }

    /// Ends the connection both ways: the worker reads the end of the
    /// stream, and so does this side's reader thread.
    pub fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Who the pool reports to: the driver of the processes mode, or a
/// machine's agent.
pub trait PoolHost: Send + Sync + 'static {
    /// A worker said hello and can take tasks. `false` if the host is shut
    /// down (the worker is then stopped).
    fn joined(&self, conn: Arc<Conn>) -> bool;
    /// The messages a worker's reader took in one pass, to handle under
    /// one lock. `Err` with a reason if one breaks the protocol: the
    /// connection is then dropped.
    fn messages(&self, conn: &Arc<Conn>, messages: Vec<FromWorker>) -> Result<(), String>;
    /// A worker's connection ended (it died, closed it, or broke the
    /// protocol). `false` if the host is shut down (no replacement then).
    fn lost(&self, worker: WorkerId) -> bool;
    /// No worker is left and none can be started; why.
    fn broken(&self, reason: String);
}
