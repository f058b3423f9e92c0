//! A worker: the user's own binary, started as
//! `SHOAL_WORKER=tcp://host:8786 ./app`, runs tasks for a scheduler.
//!
//! # Life of a worker
//!
//! 1. **Take the role.** Before `main` (the facade's `.init_array` hook) or
//!    in `shoal::init()`, [`config_from_env`] finds `SHOAL_WORKER`; the
//!    worker variables are removed from the environment (a task that starts
//!    the binary again must not become a worker), and the process never
//!    returns to `main`.
//! 2. **Connect** to the scheduler, retrying with exponential backoff
//!    (from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]) for at most
//!    `SHOAL_WORKER_CONNECT_TIMEOUT` seconds ([`DEFAULT_CONNECT_FOR`]); then
//!    the handshake of [`crate::auth`]. A refusal (wrong secret, version or
//!    fingerprint) is final: the worker exits with the scheduler's reason.
//! 3. **Serve.** The core worker runtime ([`shoal_core::worker::Worker`],
//!    `SHOAL_WORKER_THREADS` threads, default one per core) runs the runs it
//!    is sent; its [`Outlet`] here encodes results (inline, or streamed in
//!    chunks) onto the connection's queue. Heartbeats go out at the period
//!    the scheduler gave; a scheduler silent for [`DEFAULT_DEAD_AFTER`] is
//!    lost.
//! 4. **Scheduler lost:** the session's runs are abandoned (the scheduler
//!    has rescheduled them), and the worker connects again as in step 2 —
//!    a new worker to the scheduler. It gives up, with a clear message,
//!    once the scheduler has been unreachable for the connect timeout.
//! 5. **Exit** on `Shutdown`.

use std::time::{Duration, Instant};

use shoal_core::object::{Input, Obj};
use shoal_core::protocol::{FailKind, Run, RunResult, ToWorker};
use shoal_core::scheduler::TaskId;
use shoal_core::worker::{Flow, Outlet, Worker};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::auth::{self, Secret};
use crate::conn::{FrameReader, FrameWriter, Outgoing, write_loop};
use crate::error::{NetError, Result};
use crate::wire::{
    self, ArchivedToWorkerMsg, ArchivedWireInput, FromWorkerMsg, MAX_ITEMS, ObjectsIn, ObjectsOut, Role, ToWorkerMsg,
    WireFailKind, WireResult,
};

/// The scheduler to serve: `tcp://host:port`. Its presence is the worker role.
pub const ENV_WORKER: &str = "SHOAL_WORKER";
/// Threads of the worker (default: one per core).
pub const ENV_THREADS: &str = "SHOAL_WORKER_THREADS";
/// A file holding the cluster's shared secret.
pub const ENV_SECRET_FILE: &str = "SHOAL_SECRET_FILE";
/// Seconds to keep trying to reach the scheduler (default 30).
pub const ENV_CONNECT_TIMEOUT: &str = "SHOAL_WORKER_CONNECT_TIMEOUT";
/// Test hook: a fingerprint (decimal) announced instead of the binary's own.
pub const ENV_FINGERPRINT_OVERRIDE: &str = "SHOAL_TEST_FINGERPRINT_OVERRIDE";

/// How long a worker keeps trying to reach its scheduler by default.
pub const DEFAULT_CONNECT_FOR: Duration = Duration::from_secs(30);
/// The first wait between two connection attempts; it doubles each time.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the scheduler may stay silent before the worker takes it as
/// gone (several of its heartbeats).
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(5);
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The scheduler, `host:port`.
    pub address: String,
    /// Worker threads.
    pub threads: usize,
    /// The shared secret, if the cluster has one.
    pub secret: Option<Secret>,
    /// How long to keep trying to reach the scheduler.
    pub connect_for: Duration,
    /// How long the scheduler may stay silent.
    pub dead_after: Duration,
    /// The registry fingerprint announced.
    pub fingerprint: u128,
}

/// The worker's settings from the environment, if this process is to be a
/// worker (`SHOAL_WORKER` is set); the worker variables are removed from
/// the environment. Call it before any thread is started.
pub fn config_from_env() -> Option<Result<AgentConfig>> {
    let url = std::env::var(ENV_WORKER).ok()?;
    let read = || -> Result<AgentConfig> {
        let address = crate::parse_url(&url)?;
        let threads =
            match std::env::var(ENV_THREADS) {
                Ok(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    NetError::Config(format!("{ENV_THREADS}={n:?} is not a positive number of threads"))
                })?,
                Err(_) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            };
        let secret = match std::env::var_os(ENV_SECRET_FILE) {
            Some(path) => Some(Secret::from_file(std::path::Path::new(&path))?),
            None => None,
        };
        let connect_for = match std::env::var(ENV_CONNECT_TIMEOUT) {
            Ok(s) => {
                Duration::from_secs_f64(s.parse::<f64>().ok().filter(|s| *s >= 0.0 && s.is_finite()).ok_or_else(
                    || NetError::Config(format!("{ENV_CONNECT_TIMEOUT}={s:?} is not a number of seconds")),
                )?)
            }
            Err(_) => DEFAULT_CONNECT_FOR,
        };
        let fingerprint = match std::env::var(ENV_FINGERPRINT_OVERRIDE) {
            Ok(s) => s.parse::<u128>().map_err(|_| NetError::Config(format!("bad {ENV_FINGERPRINT_OVERRIDE}")))?,
            Err(_) => shoal_core::registry::fingerprint().map_err(|e| NetError::Config(e.to_string()))?,
        };
        Ok(AgentConfig { address, threads, secret, connect_for, dead_after: DEFAULT_DEAD_AFTER, fingerprint })
    };
    let config = read();
    for var in [ENV_WORKER, ENV_THREADS, ENV_SECRET_FILE, ENV_CONNECT_TIMEOUT, ENV_FINGERPRINT_OVERRIDE] {
        // SAFETY: `remove_var` races only with other threads reading or
        // writing the environment; this runs before `main` (the hook) or
        // first in `main` (`shoal::init`, documented as to be called before
        // any thread is started), when this is the only thread.
        unsafe { std::env::remove_var(var) };
    }
    Some(config)
}

/// How a session with the scheduler ended.
enum Ended {
    /// The scheduler said to exit.
    Shutdown,
    /// The connection was lost (after the handshake): connect again.
    Lost(NetError),
}

/// Serves a scheduler until it says `Shutdown` (`Ok`), refuses this worker,
/// or stays unreachable for `connect_for` (`Err`, with why).
pub fn run(config: AgentConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        loop {
            let (halves, welcome) = connect(&config).await?;
            tracing::info!("worker {} serving the scheduler at {}", welcome.id, config.address);
            match session(&config, halves, welcome.heartbeat).await {
                Ended::Shutdown => return Ok(()),
                Ended::Lost(e) => {
                    tracing::warn!("lost the scheduler at {}: {e}; connecting again", config.address)
                }
            }
        }
    })
}

type Halves = (FrameReader<tokio::net::tcp::OwnedReadHalf>, FrameWriter<tokio::net::tcp::OwnedWriteHalf>);

/// Connects and shakes hands, retrying unreachable schedulers with backoff.
async fn connect(config: &AgentConfig) -> Result<(Halves, auth::Welcomed)>
where
{
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match TcpStream::connect(&config.address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                let mut reader = FrameReader::new(r, config.address.clone(), config.dead_after);
                let mut writer = FrameWriter::new(w);
                let nthreads = u32::try_from(config.threads).unwrap_or(u32::MAX);
                match auth::connect(
                    &mut reader,
                    &mut writer,
                    Role::Worker,
                    config.fingerprint,
                    nthreads,
                    config.secret.as_ref(),
                    HANDSHAKE_TIMEOUT,
                )
                .await
                {
                    Ok(welcome) => return Ok(((reader, writer), welcome)),
                    // Refused (or a scheduler that cannot prove the
                    // secret): trying again would not help.
                    Err(e @ (NetError::Refused { .. } | NetError::Config(_))) => return Err(e),
                    Err(e) => e,
                }
            }
            Err(e) => NetError::Io(e),
        };
        if started.elapsed() + backoff > config.connect_for {
            return Err(NetError::Lost {
                peer: config.address.clone(),
                reason: format!(
                    "could not reach the scheduler for {:?} (last error: {error}); is `shoal scheduler` running \
                     there?",
                    config.connect_for
                ),
            });
        }
        tracing::debug!("scheduler at {} not reachable yet ({error}); again in {backoff:?}", config.address);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(config: &AgentConfig, halves: Halves, heartbeat: Duration) -> Ended
where
{
    let (mut reader, writer) = halves;
    let (tx, rx) = mpsc::unbounded_channel();
    let beat = match wire::to_bytes(&FromWorkerMsg::Heartbeat) {
        Ok(b) => b,
        Err(e) => return Ended::Lost(e),
    };
    let writer = tokio::spawn(write_loop(writer, rx, beat, heartbeat));
    // The runtime's heartbeat lists the runs started here (`Running`), so
    // that a loss of this worker is counted only against those.
    let mut worker = match Worker::start(TcpOutlet { tx: tx.clone() }, config.threads, Some(heartbeat)) {
        Ok(w) => w,
        Err(e) => return Ended::Lost(e.into()),
    };
    let ended = loop {
        let message = match reader.message_or_end().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                break Ended::Lost(NetError::Lost {
                    peer: config.address.clone(),
                    reason: "it closed the connection".into(),
                });
            }
            Err(e) => break Ended::Lost(e),
        };
        match decode(&message.body, message.objects) {
            Ok(Some(msg)) => {
                if worker.handle(msg) == Flow::Exit {
                    break Ended::Shutdown;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Outgoing::Close(e.to_string()));
                break Ended::Lost(e);
            }
        }
    };
    // Runs still queued or running here are the scheduler's business now.
    worker.abandon();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    ended
}

/// A message from the scheduler as the worker runtime takes it (`None`
/// for a heartbeat).
fn decode(body: &[u8], mut objects: ObjectsIn) -> Result<Option<ToWorker>> {
    let message = match wire::access::<ToWorkerMsg>(body)? {
        ArchivedToWorkerMsg::Heartbeat => return Ok(None),
        ArchivedToWorkerMsg::Shutdown => ToWorker::Shutdown,
        ArchivedToWorkerMsg::Steal(count) => ToWorker::Steal { count: count.to_native() },
        ArchivedToWorkerMsg::Recall(tasks) => ToWorker::Recall(tasks.iter().map(TaskId::from).collect()),
        ArchivedToWorkerMsg::Runs(runs) => {
            let runs = runs
                .iter()
                .map(|run| {
                    let inputs = run
                        .inputs
                        .iter()
                        .map(|input| match input {
                            ArchivedWireInput::One(obj) => objects.take(obj).map(Input::One),
                            ArchivedWireInput::List(items) => {
                                items.iter().map(|o| objects.take(o)).collect::<Result<_>>().map(Input::List)
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Run {
                        task: TaskId::from(&run.task),
                        func: run.func.to_native(),
                        inputs,
                        report_start: run.report_start,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            ToWorker::Runs(runs)
        }
    };
    objects.finish()?;
    Ok(Some(message))
}

/// The worker runtime's way back to the scheduler: messages on the
/// connection's queue. A queue whose connection is gone drops them (the
/// reader notices the loss and starts a new session).
struct TcpOutlet {
    tx: UnboundedSender<Outgoing>,
}

impl Outlet for TcpOutlet {
    /// Archives the result here, on the pool thread (once: the object keeps
    /// it), so the writer only copies bytes.
    fn seal(&self, _task: TaskId, result: Obj) -> std::result::Result<(Obj, u64), String> {
        let nbytes = result.archived_bytes().map_err(|e| e.to_string())?.len() as u64;
        Ok((result, nbytes))
    }

    fn send_results(&self, results: Vec<RunResult>) {
        let mut out = ObjectsOut::default();
        let mut batch = Vec::new();
        for result in results {
            let wire = match result {
                RunResult::Done { task, result, nbytes, micros } => match out.object(&result) {
                    Ok(obj) => WireResult::Done { task: task.into(), result: obj, nbytes, micros },
                    Err(message) => WireResult::Failed {
                        task: task.into(),
                        kind: WireFailKind::Input,
                        message: format!("its result could not be sent: {message}"),
                        type_name: String::new(),
                        chain: Vec::new(),
                        micros,
                    },
                },
                RunResult::Failed { task, kind, message, type_name, chain, micros } => WireResult::Failed {
                    task: task.into(),
                    kind: match kind {
                        FailKind::Error => WireFailKind::Error,
                        FailKind::Panic => WireFailKind::Panic,
                        FailKind::Input => WireFailKind::Input,
                    },
                    message: wire::bounded(&message),
                    type_name: wire::bounded(&type_name),
                    chain: chain.iter().map(|c| wire::bounded(c)).collect(),
                    micros,
                },
            };
            batch.push(wire);
            if batch.len() >= MAX_ITEMS || out.inline_bytes() >= wire::INLINE_BUDGET {
                self.queue(FromWorkerMsg::Results(std::mem::take(&mut batch)), std::mem::take(&mut out).blobs);
            }
        }
        if !batch.is_empty() {
            self.queue(FromWorkerMsg::Results(batch), out.blobs);
        }
    }

    fn send_stolen(&self, tasks: Vec<TaskId>) {
        self.queue(FromWorkerMsg::Stolen(tasks.into_iter().map(Into::into).collect()), Vec::new());
    }

    fn send_running(&self, tasks: Vec<TaskId>) {
        self.queue(FromWorkerMsg::Running(tasks.into_iter().map(Into::into).collect()), Vec::new());
    }

    fn send_recalled(&self, tasks: Vec<TaskId>) {
        self.queue(FromWorkerMsg::Recalled(tasks.into_iter().map(Into::into).collect()), Vec::new());
    }

    /// A worker of this transport has no peers (the scheduler sends no
    /// `Give`, and the agent introduces none), so it makes no notice of a
    /// direct steal: one here is a bug, logged.
    fn send_notice(&self, _notice: shoal_core::protocol::FromWorker) {
        tracing::error!("internal error: a direct-steal notice on a TCP worker, which has no peers");
    }

    fn send_to_peer(&self, peer: shoal_core::scheduler::WorkerId, _runs: Vec<Run>) -> std::result::Result<(), String> {
        Err(format!("a TCP worker has no channel to peer {}", peer.0))
    }
}

impl TcpOutlet {
    fn queue(&self, message: FromWorkerMsg, blobs: Vec<Obj>) {
        match wire::to_bytes(&message) {
            Ok(body) => {
                let _ = self.tx.send(Outgoing::Message { body, blobs });
            }
            Err(e) => tracing::error!("could not encode results: {e}"),
        }
    }
}
