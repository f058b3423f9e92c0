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
//!    is sent — or, with `SHOAL_WORKER_PROCESSES=N`, this worker is its
//!    machine's agent and its `N` worker processes run them
//!    ([`crate::machine`]); its [`Outlet`] here sends small results (at most
//!    [`ALWAYS_INLINE`] bytes) to the scheduler and keeps larger ones in the
//!    worker's store ([`crate::store`]: the machine's, under its memory
//!    limit, spilling past it), served to peers on its data port
//!    ([`crate::data`], bound before the hello that announces it). A run's input comes with
//!    it, is in the store, or is fetched from the worker holding it (one
//!    request per holder for the runs of one message, then kept in the
//!    store as a copy for later runs); a run whose input cannot be fetched
//!    is given back (`Unfetched`) after [`UNFETCHED_PAUSE`]. `Release`
//!    drops results and copies. Heartbeats go out at the period the
//!    scheduler gave; a scheduler silent for `SHOAL_WORKER_DEAD_AFTER`
//!    seconds ([`DEFAULT_DEAD_AFTER`]) is lost, and so is a fetch from a
//!    peer silent that long.
//! 4. **Scheduler lost:** the session's runs are abandoned (the scheduler
//!    has rescheduled them), its store emptied (the scheduler counts its
//!    results lost), and the worker connects again as in step 2 —
//!    a new worker to the scheduler. It gives up, with a clear message,
//!    once the scheduler has been unreachable for the connect timeout.
//! 5. **Exit** on `Shutdown`.
//!
//! Besides results, a worker sends its host name, resident memory and CPU
//! time every [`wire::FIGURES_EVERY`] (`Figures`), which the scheduler's
//! dashboard shows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::object::{Input, Obj};
use shoal_core::protocol::{FailKind, Run, RunResult, ToWorker};
use shoal_core::scheduler::TaskId;
use shoal_core::worker::{Flow, Outlet, Worker};
use shoal_shm::warm::{self, WarmPool};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::watch;

use crate::auth::{self, Introduce, Secret};
use crate::conn::{self, Incoming, Outgoing, write_loop};
use crate::data::{self, Fetcher, Gate, Store};
use crate::error::{NetError, Result};
use crate::machine::{Machine, MachineConfig};
use crate::store::{MachineStore, StoreSettings};
use crate::stream::{self, Reader, Writer};
use crate::tls::{self, PeerTls, ServerTls, TlsFiles};
use crate::wire::{
    self, ALWAYS_INLINE, ArchivedToWorkerMsg, ArchivedWireInput, ArchivedWireSource, FromWorkerMsg, MAX_ITEMS,
    ObjectsIn, Role, ToWorkerMsg, WireFailKind, WireFigures, WireObject, WireResult, WireTask,
};

/// The scheduler to serve: `tcp://host:port`. Its presence is the worker role.
pub const ENV_WORKER: &str = "SHOAL_WORKER";
/// Threads of the worker (default: one per core).
pub const ENV_THREADS: &str = "SHOAL_WORKER_THREADS";
/// A file holding the cluster's shared secret.
pub const ENV_SECRET_FILE: &str = "SHOAL_SECRET_FILE";
/// Seconds to keep trying to reach the scheduler (default 30).
pub const ENV_CONNECT_TIMEOUT: &str = "SHOAL_WORKER_CONNECT_TIMEOUT";
/// Seconds the scheduler (or a peer sending a result) may stay silent
/// before the worker takes it as gone (default 5).
pub const ENV_DEAD_AFTER: &str = "SHOAL_WORKER_DEAD_AFTER";
/// Worker processes of this machine (default 0: the agent runs the tasks
/// on threads of its own; see [`crate::machine`]). With processes,
/// [`ENV_THREADS`] is the threads of each.
pub const ENV_PROCESSES: &str = "SHOAL_WORKER_PROCESSES";
/// Bytes of result segments the machine's store keeps in memory before it
/// spills (default: half the machine's memory or of its cgroup's limit).
pub const ENV_MEMORY_LIMIT: &str = "SHOAL_WORKER_MEMORY_LIMIT";
/// The directory in which the machine's store makes its spill directory
/// (default: the system's temporary directory).
pub const ENV_SPILL_DIR: &str = "SHOAL_WORKER_SPILL_DIR";
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
/// How long a worker waits before giving back runs whose inputs it could
/// not fetch: the holder is likely dead, and the scheduler learns of it
/// within its `dead_after`; giving them back at once would only have them
/// sent here again, to fail again, in a tight loop.
pub const UNFETCHED_PAUSE: Duration = Duration::from_millis(200);

/// The agent's warm memory (for the objects it receives) takes at most this
/// fraction of the machine's memory limit: warm files are shared memory the
/// store does not count (a quarter, as the processes mode gives its
/// workers together).
const WARM_SHARE_OF_LIMIT: u64 = 4;

/// The agent's warm memory, where fetched inputs land (`shoal_shm::warm`:
/// the next received object's memory file is made, its pages present,
/// while the machine does other things, so a fetch copies from the socket
/// at memory speed). Its budget: `SHOAL_WARM_MEMORY` if set (`0`: none),
/// else the warm pool's default, at most a quarter of the
/// memory limit.
pub fn warm_pool(memory_limit: u64) -> Option<Arc<WarmPool>> {
    let budget = match std::env::var(warm::ENV_WARM_MEMORY) {
        Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| {
            tracing::warn!("{}={v:?} is not a number of bytes; warm memory is off", warm::ENV_WARM_MEMORY);
            0
        }),
        Err(_) => {
            let share = usize::try_from(memory_limit / WARM_SHARE_OF_LIMIT).unwrap_or(usize::MAX);
            warm::default_budget().min(share)
        }
    };
    (budget >= warm::MIN_FILE).then(|| Arc::new(WarmPool::new(budget)))
}

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The scheduler, `host:port`.
    pub address: String,
    /// The scheduler's host (the name its TLS certificate must carry).
    pub host: String,
    /// TLS (`tls://`), with the worker's certificate: every connection of
    /// the worker uses it (see [`crate::tls`]).
    pub tls: Option<PeerTls>,
    /// Worker threads (of each process, with processes).
    pub threads: usize,
    /// Worker processes (0: tasks run on the agent's own threads).
    pub processes: usize,
    /// The machine's store: memory limit and spill directory.
    pub store: StoreSettings,
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
        let endpoint = crate::parse_url(&url)?;
        let files = TlsFiles::from_env();
        let tls = match (endpoint.tls, files.any()) {
            (true, _) => {
                let tls = PeerTls::new(&files)?;
                // Checked now rather than at the first connection: the data
                // port serves over TLS with this certificate.
                tls.data_port(false)?;
                Some(tls)
            }
            (false, true) => {
                return Err(NetError::Config(format!(
                    "{} and the other SHOAL_TLS_ variables are set but {ENV_WORKER}={url:?} is not a tls:// address:                      write tls://host:port to use TLS",
                    tls::ENV_TLS_CA
                )));
            }
            (false, false) => None,
        };
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
        let seconds = |var: &str, default: Duration| match std::env::var(var) {
            Ok(s) => s
                .parse::<f64>()
                .ok()
                .filter(|s| *s >= 0.0 && s.is_finite())
                .map(Duration::from_secs_f64)
                .ok_or_else(|| NetError::Config(format!("{var}={s:?} is not a number of seconds"))),
            Err(_) => Ok(default),
        };
        let processes = match std::env::var(ENV_PROCESSES) {
            Ok(n) => n
                .parse::<usize>()
                .map_err(|_| NetError::Config(format!("{ENV_PROCESSES}={n:?} is not a number of worker processes")))?,
            Err(_) => 0,
        };
        let memory_limit = match std::env::var(ENV_MEMORY_LIMIT) {
            Ok(n) => n.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                NetError::Config(format!("{ENV_MEMORY_LIMIT}={n:?} is not a positive number of bytes"))
            })?,
            Err(_) => shoal_shm::store::default_memory_limit(),
        };
        let spill_parent = match std::env::var_os(ENV_SPILL_DIR) {
            Some(dir) if std::path::Path::new(&dir).is_dir() => std::path::PathBuf::from(dir),
            Some(dir) => {
                return Err(NetError::Config(format!(
                    "{ENV_SPILL_DIR}={dir:?} is not an existing directory; create it first"
                )));
            }
            None => std::env::temp_dir(),
        };
        // Each process's connection and the frames in flight take
        // descriptors of the agent's too (as the processes mode counts).
        let descriptors = (processes > 0).then(|| shoal_shm::store::descriptor_budget(processes));
        let store = StoreSettings { memory_limit, spill_parent, descriptors };
        let connect_for = seconds(ENV_CONNECT_TIMEOUT, DEFAULT_CONNECT_FOR)?;
        let dead_after = seconds(ENV_DEAD_AFTER, DEFAULT_DEAD_AFTER)?.max(Duration::from_millis(100));
        let fingerprint = match std::env::var(ENV_FINGERPRINT_OVERRIDE) {
            Ok(s) => s.parse::<u128>().map_err(|_| NetError::Config(format!("bad {ENV_FINGERPRINT_OVERRIDE}")))?,
            Err(_) => shoal_core::registry::fingerprint().map_err(|e| NetError::Config(e.to_string()))?,
        };
        Ok(AgentConfig {
            address: endpoint.address,
            host: endpoint.host,
            tls,
            threads,
            processes,
            store,
            secret,
            connect_for,
            dead_after,
            fingerprint,
        })
    };
    let config = read();
    for var in [
        ENV_WORKER,
        ENV_THREADS,
        ENV_PROCESSES,
        ENV_MEMORY_LIMIT,
        ENV_SPILL_DIR,
        ENV_SECRET_FILE,
        ENV_CONNECT_TIMEOUT,
        ENV_DEAD_AFTER,
        ENV_FINGERPRINT_OVERRIDE,
        tls::ENV_TLS_CA,
        tls::ENV_TLS_CERT,
        tls::ENV_TLS_KEY,
        tls::ENV_TLS_SERVER_NAME,
    ] {
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
    /// This machine cannot serve (its worker processes cannot start).
    Fatal(NetError),
}

/// What runs the tasks: the agent's own threads, or its machine's worker
/// processes.
enum Runner {
    Threads(Worker<TcpOutlet>),
    Processes(Arc<Machine<TcpOutlet>>),
}

impl Runner {
    fn handle(&mut self, message: ToWorker) -> Flow {
        match self {
            Runner::Threads(worker) => worker.handle(message),
            Runner::Processes(machine) => machine.handle(message),
        }
    }

    /// The session ended: runs still here are the scheduler's business.
    fn abandon(self) {
        match self {
            Runner::Threads(worker) => worker.abandon(),
            Runner::Processes(machine) => machine.stop(),
        }
    }
}

/// Serves a scheduler until it says `Shutdown` (`Ok`), refuses this worker,
/// or stays unreachable for `connect_for` (`Err`, with why).
pub fn run(config: AgentConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = MachineStore::new(&config.store)?;
    let warm = warm_pool(config.store.memory_limit);
    runtime.block_on(async {
        loop {
            let (halves, welcome, listener, data_tls) = connect(&config).await?;
            let data_address = listener.local_addr()?;
            tracing::info!(
                "worker {} serving the scheduler at {}; results served at {data_address}",
                welcome.id,
                config.address
            );
            // Results of an earlier session name tasks of that session.
            data::clear(&store);
            let gate = Gate { secret: config.secret.clone(), fingerprint: config.fingerprint, tls: data_tls };
            let port = tokio::spawn(data::serve(listener, Arc::clone(&store), gate));
            let ended = session(&config, halves, welcome.heartbeat, &store, &warm).await;
            port.abort();
            match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Fatal(e) => return Err(e),
                Ended::Lost(e) => {
                    tracing::warn!("lost the scheduler at {}: {e}; connecting again", config.address)
                }
            }
        }
    })
}

type Halves = (Reader, Writer);

/// Connects and shakes hands, retrying unreachable schedulers with backoff;
/// the data port is bound on the address this worker reaches the scheduler
/// from (so loopback when the scheduler is on loopback), before the hello
/// that announces it. With TLS, also the data port's TLS: it requires
/// fetchers' certificates when the scheduler required this worker's.
async fn connect(config: &AgentConfig) -> Result<(Halves, auth::Welcomed, TcpListener, Option<ServerTls>)> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match stream::tcp(&config.address).await {
            Ok(stream) => {
                let local = stream.local_addr()?.ip();
                let listener = TcpListener::bind((local, 0))
                    .await
                    .map_err(|e| NetError::Config(format!("cannot bind a data port on {local}: {e}")))?;
                let data_port = listener.local_addr()?.port();
                match shake(config, stream, data_port).await {
                    Ok((halves, welcome, asked)) => {
                        let data_tls = config.tls.as_ref().map(|t| t.data_port(asked)).transpose()?;
                        return Ok((halves, welcome, listener, data_tls));
                    }
                    // Refused, a TLS failure (certificates) or a scheduler
                    // that cannot prove the secret: trying again would not
                    // help.
                    Err(e @ (NetError::Refused { .. } | NetError::Config(_) | NetError::Tls { .. })) => return Err(e),
                    Err(e) => e,
                }
            }
            Err(e) => e,
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

/// TLS (if on) and the handshake on a connection to the scheduler; whether
/// the scheduler asked for this worker's certificate (mutual TLS).
async fn shake(
    config: &AgentConfig,
    tcp: tokio::net::TcpStream,
    data_port: u16,
) -> Result<(Halves, auth::Welcomed, bool)> {
    let (tls, asked) = match &config.tls {
        Some(t) => {
            let dial = t.scheduler()?;
            (Some((dial.connector, t.scheduler_name(&config.host)?)), Some(dial.asked))
        }
        None => (None, None),
    };
    let stream =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream::secure(tcp, tls, &config.address)).await.map_err(|_| {
            NetError::Timeout { what: "for the TLS handshake with the scheduler", after: HANDSHAKE_TIMEOUT }
        })??;
    let (mut reader, mut writer) = stream.framed(config.address.clone(), config.dead_after);
    let nthreads = u32::try_from(config.threads * config.processes.max(1)).unwrap_or(u32::MAX);
    let me = Introduce { role: Role::Worker, fingerprint: config.fingerprint, nthreads, data_port };
    let welcome = auth::connect(&mut reader, &mut writer, me, config.secret.as_ref(), HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| stream::explain_io(&config.address, e))?;
    let asked = asked.is_some_and(|a| a.load(std::sync::atomic::Ordering::Relaxed));
    Ok(((reader, writer), welcome, asked))
}

/// What the fetching tasks hand back to the session.
enum Fetched {
    /// Runs whose inputs are all here now.
    Runs(Vec<Run>),
    /// Runs whose inputs could not be fetched: given back to the scheduler.
    Unfetched(Vec<TaskId>),
}

async fn session(
    config: &AgentConfig,
    halves: Halves,
    heartbeat: Duration,
    store: &Store,
    warm: &Option<Arc<WarmPool>>,
) -> Ended {
    let (mut reader, writer) = halves;
    let (tx, rx) = mpsc::unbounded_channel();
    let beat = match wire::to_bytes(&FromWorkerMsg::Heartbeat) {
        Ok(b) => b,
        Err(e) => return Ended::Lost(e),
    };
    let writer = tokio::spawn(write_loop(writer, rx, beat, heartbeat));
    // The reader runs on its own task: a message and its chunks are read
    // whole (reading is not cancel-safe in the middle of a message), while
    // the session also waits for fetched inputs.
    let (incoming_tx, mut incoming) = mpsc::unbounded_channel::<Result<Option<Incoming>>>();
    let read = tokio::spawn(async move {
        loop {
            let next = reader.message_or_end().await;
            let end = !matches!(next, Ok(Some(_)));
            if incoming_tx.send(next).is_err() || end {
                return;
            }
        }
    });
    // Fetched inputs land in memory files of their own (warm ones when
    // ready): the store keeps them as they came, processes map them, and
    // none is copied again.
    let fetcher = Arc::new(
        Fetcher::new(
            Introduce { role: Role::Worker, fingerprint: config.fingerprint, nthreads: 0, data_port: 0 },
            config.secret.clone(),
            config.tls.clone(),
            config.dead_after,
        )
        .landing(conn::Landing::Segment { pool: warm.clone() }),
    );
    let (fetched_tx, mut fetched) = mpsc::unbounded_channel::<Fetched>();
    let landing = Lander { landings: Landings::default(), in_segment: config.processes > 0 };
    let figures = tokio::spawn(send_figures(tx.clone()));
    // The runtime's heartbeat lists the runs started here (`Running`), so
    // that a loss of this worker is counted only against those.
    let outlet = TcpOutlet { tx: tx.clone(), store: Arc::clone(store) };
    let mut worker = if config.processes == 0 {
        match Worker::start(outlet, config.threads, Some(heartbeat)) {
            Ok(w) => Runner::Threads(w),
            Err(e) => return Ended::Lost(e.into()),
        }
    } else {
        let machine =
            MachineConfig { processes: config.processes, threads: config.threads, silence_limit: config.dead_after };
        // Blocking (each process's hello): off the runtime's thread, which
        // keeps the heartbeats to the scheduler going meanwhile.
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || Machine::start(&machine, outlet, store)).await {
            Ok(Ok(machine)) => {
                tracing::info!("worker processes of this machine: pids {:?}", machine.pids());
                Runner::Processes(machine)
            }
            Ok(Err(e)) => return Ended::Fatal(e),
            Err(e) => return Ended::Fatal(NetError::Config(format!("starting the worker processes: {e}"))),
        }
    };
    let ended = loop {
        let message = tokio::select! {
            next = incoming.recv() => next,
            Some(done) = fetched.recv() => {
                match done {
                    Fetched::Runs(runs) => {
                        if worker.handle(ToWorker::Runs(runs)) == Flow::Exit {
                            break Ended::Shutdown;
                        }
                    }
                    Fetched::Unfetched(tasks) => {
                        let tasks = tasks.into_iter().map(WireTask::from).collect();
                        queue(&tx, FromWorkerMsg::Unfetched(tasks));
                    }
                }
                continue;
            }
        };
        let message = match message {
            Some(Ok(Some(m))) => m,
            Some(Ok(None)) | None => {
                break Ended::Lost(NetError::Lost {
                    peer: config.address.clone(),
                    reason: "it closed the connection".into(),
                });
            }
            Some(Err(e)) => break Ended::Lost(e),
        };
        match decode(&message.body, message.objects, store) {
            Ok(Some(Decoded::Worker(msg))) => {
                if worker.handle(msg) == Flow::Exit {
                    break Ended::Shutdown;
                }
            }
            Ok(Some(Decoded::Runs { ready, fetch })) => {
                if !ready.is_empty() && worker.handle(ToWorker::Runs(ready)) == Flow::Exit {
                    break Ended::Shutdown;
                }
                if !fetch.is_empty() {
                    tokio::spawn(fetch_inputs(
                        Arc::clone(&fetcher),
                        Arc::clone(store),
                        fetch,
                        fetched_tx.clone(),
                        landing.clone(),
                    ));
                }
            }
            Ok(Some(Decoded::Release(tasks))) => data::drop_all(store, tasks),
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Outgoing::Close(e.to_string()));
                break Ended::Lost(e);
            }
        }
    };
    read.abort();
    // Runs still queued or running here are the scheduler's business now.
    worker.abandon();
    figures.abort();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    ended
}

/// An input of a run that waits for fetches: ready, or to be fetched.
enum Source {
    Ready(Obj),
    Fetch { task: TaskId, address: String },
}

/// A run with inputs held on other workers.
struct Waiting {
    task: TaskId,
    func: u32,
    inputs: Vec<Vec<Source>>,
    /// Whether each input is a list (else one object).
    lists: Vec<bool>,
    report_start: bool,
}

/// A message from the scheduler, as the session takes it.
enum Decoded {
    Worker(ToWorker),
    /// Runs: those with every input here, and those that need fetches.
    Runs {
        ready: Vec<Run>,
        fetch: Vec<Waiting>,
    },
    Release(Vec<TaskId>),
}

/// Fetches in flight on this machine, by task: a run that needs an input
/// another fetch is bringing waits for that one (so an object lands once,
/// whatever the runs and messages that need it). The value is `None` while
/// the fetch runs, then the object (`None` inside: the fetch failed).
type Landings = Arc<std::sync::Mutex<HashMap<TaskId, watch::Receiver<Option<Option<Obj>>>>>>;

/// How a fetched object lands in the machine's store.
#[derive(Clone)]
struct Lander {
    landings: Landings,
    /// Copied once into a segment of its own (the machine has worker
    /// processes, which then map it; else tasks read it on the heap here).
    /// A large object arrives in one already (`conn::Landing::Segment`)
    /// and is kept as it came.
    in_segment: bool,
}

impl Lander {
    /// Keeps `obj` (fetched as `task`'s result) in the store, in a segment
    /// if the machine has processes; the object as kept.
    fn land(&self, store: &Store, task: TaskId, obj: Obj) -> Obj {
        let obj = if self.in_segment {
            let name = move || format!("shoal-a{}-fetched-t{}.{}", std::process::id(), task.index, task.generation);
            shoal_shm::uds::publish(&obj, name).unwrap_or_else(|e| {
                // The heap copy still serves (each run sent then copies
                // it into a segment of its own).
                tracing::warn!("could not copy a fetched input into shared memory: {e}");
                obj
            })
        } else {
            obj
        };
        data::put(store, task, Arc::clone(&obj));
        obj
    }
}

/// Fetches the inputs of `runs` from their holders (one request per holder,
/// all holders at once; an input that another fetch of this machine is
/// bringing is waited for instead), keeps the copies in the store, and hands
/// back the runs that have their inputs now and those that cannot.
async fn fetch_inputs(
    fetcher: Arc<Fetcher>,
    store: Store,
    runs: Vec<Waiting>,
    done: UnboundedSender<Fetched>,
    landing: Lander,
) {
    let mut wanted: HashMap<String, Vec<TaskId>> = HashMap::new();
    let mut leading: HashMap<TaskId, watch::Sender<Option<Option<Obj>>>> = HashMap::new();
    let mut following: Vec<(TaskId, watch::Receiver<Option<Option<Obj>>>)> = Vec::new();
    let mut got: HashMap<TaskId, Obj> = HashMap::new();
    {
        let mut landings = landing.landings.lock().unwrap_or_else(|p| p.into_inner());
        for run in &runs {
            for source in run.inputs.iter().flatten() {
                let Source::Fetch { task, address } = source else { continue };
                let task = *task;
                if leading.contains_key(&task) || got.contains_key(&task) || following.iter().any(|(t, _)| *t == task) {
                    continue;
                }
                if let Some(rx) = landings.get(&task) {
                    following.push((task, rx.clone()));
                } else if let Some(obj) = data::get(&store, task) {
                    // Landed since the message was decoded.
                    got.insert(task, obj);
                } else {
                    let (tx, rx) = watch::channel(None);
                    landings.insert(task, rx);
                    leading.insert(task, tx);
                    wanted.entry(address.clone()).or_default().push(task);
                }
            }
        }
    }
    let mut fetches = tokio::task::JoinSet::new();
    for (address, tasks) in wanted {
        let fetcher = Arc::clone(&fetcher);
        fetches.spawn(async move {
            let got = fetcher.fetch(&address, &tasks).await;
            (address, tasks, got)
        });
    }
    while let Some(joined) = fetches.join_next().await {
        let Ok((address, tasks, answer)) = joined else { continue };
        match answer {
            Ok(objects) => {
                for (task, obj) in tasks.into_iter().zip(objects) {
                    match obj {
                        Some(obj) => {
                            got.insert(task, landing.land(&store, task, obj));
                        }
                        None => tracing::warn!("the worker at {address} does not hold {task:?}"),
                    }
                }
            }
            Err(e) => tracing::warn!("could not fetch inputs from the worker at {address}: {e}"),
        }
    }
    {
        // Landed (in the store) or failed: followers are answered, and a
        // later run finds the object in the store.
        let mut landings = landing.landings.lock().unwrap_or_else(|p| p.into_inner());
        for (task, tx) in leading {
            landings.remove(&task);
            let _ = tx.send(Some(got.get(&task).cloned()));
        }
    }
    for (task, mut rx) in following {
        // A leader that ended without an answer (its task aborted) counts
        // as a failed fetch.
        if let Ok(value) = rx.wait_for(Option::is_some).await
            && let Some(Some(obj)) = value.as_ref()
        {
            got.insert(task, Arc::clone(obj));
        }
    }
    let mut ready = Vec::new();
    let mut unfetched = Vec::new();
    'runs: for run in runs {
        let mut inputs = Vec::with_capacity(run.inputs.len());
        for (sources, list) in run.inputs.into_iter().zip(run.lists) {
            let mut objects = Vec::with_capacity(sources.len());
            for source in sources {
                match source {
                    Source::Ready(obj) => objects.push(obj),
                    Source::Fetch { task, .. } => match got.get(&task) {
                        Some(obj) => objects.push(Arc::clone(obj)),
                        None => {
                            unfetched.push(run.task);
                            continue 'runs;
                        }
                    },
                }
            }
            inputs.push(input(list, objects));
        }
        ready.push(Run { task: run.task, func: run.func, inputs, report_start: run.report_start });
    }
    if !ready.is_empty() {
        let _ = done.send(Fetched::Runs(ready));
    }
    if !unfetched.is_empty() {
        tokio::time::sleep(UNFETCHED_PAUSE).await;
        let _ = done.send(Fetched::Unfetched(unfetched));
    }
}

/// Tells the scheduler this process's host name, memory and CPU time (for
/// its dashboard) at once and every [`wire::FIGURES_EVERY`], until the
/// connection's queue is gone.
async fn send_figures(tx: UnboundedSender<Outgoing>) {
    let mut tick = tokio::time::interval(wire::FIGURES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(WireFigures, Instant)> = None;
    loop {
        tick.tick().await;
        let figures = crate::monitor::own_figures(before.as_ref().map(|(f, at)| (f, at.elapsed())));
        before = Some((figures.clone(), Instant::now()));
        let body = match wire::to_bytes(&FromWorkerMsg::Figures(figures)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("could not encode the worker's figures: {e}");
                return;
            }
        };
        if tx.send(Outgoing::message(body)).is_err() {
            return;
        }
    }
}

/// A message from the scheduler as the session takes it (`None` for a
/// heartbeat). A run's inputs come with it, are in the store (results made
/// here, copies fetched before), or are to be fetched from their holder.
fn decode(body: &[u8], mut objects: ObjectsIn, store: &Store) -> Result<Option<Decoded>> {
    let message = match wire::access::<ToWorkerMsg>(body)? {
        ArchivedToWorkerMsg::Heartbeat => return Ok(None),
        ArchivedToWorkerMsg::Shutdown => Decoded::Worker(ToWorker::Shutdown),
        ArchivedToWorkerMsg::Steal(count) => Decoded::Worker(ToWorker::Steal { count: count.to_native() }),
        ArchivedToWorkerMsg::Recall(tasks) => {
            Decoded::Worker(ToWorker::Recall(tasks.iter().map(TaskId::from).collect()))
        }
        ArchivedToWorkerMsg::Release(tasks) => Decoded::Release(tasks.iter().map(TaskId::from).collect()),
        ArchivedToWorkerMsg::Runs(runs) => {
            let mut ready = Vec::new();
            let mut fetch = Vec::new();
            for run in runs.iter() {
                let mut inputs = Vec::with_capacity(run.inputs.len());
                let mut lists = Vec::with_capacity(run.inputs.len());
                let mut remote = false;
                for input in run.inputs.iter() {
                    let (sources, list) = match input {
                        ArchivedWireInput::One(source) => (std::slice::from_ref(source), false),
                        ArchivedWireInput::List(items) => (items.as_slice(), true),
                    };
                    let mut resolved = Vec::with_capacity(sources.len());
                    for source in sources {
                        let source = resolve(source, &mut objects, store)?;
                        remote |= matches!(source, Source::Fetch { .. });
                        resolved.push(source);
                    }
                    inputs.push(resolved);
                    lists.push(list);
                }
                let waiting = Waiting {
                    task: TaskId::from(&run.task),
                    func: run.func.to_native(),
                    inputs,
                    lists,
                    report_start: run.report_start,
                };
                if remote {
                    fetch.push(waiting);
                } else {
                    ready.push(ready_run(waiting));
                }
            }
            Decoded::Runs { ready, fetch }
        }
    };
    objects.finish()?;
    Ok(Some(message))
}

/// Where one input object is now.
fn resolve(source: &ArchivedWireSource, objects: &mut ObjectsIn, store: &Store) -> Result<Source> {
    Ok(match source {
        ArchivedWireSource::Object(obj) => Source::Ready(objects.take(obj)?),
        ArchivedWireSource::Local(task) => {
            let task = TaskId::from(task);
            Source::Ready(data::get(store, task).ok_or_else(|| {
                NetError::protocol(format!(
                    "the scheduler says this worker holds the result of {task:?}, and it does not (a shoal bug:                      please report it)"
                ))
            })?)
        }
        ArchivedWireSource::Remote { task, address } => {
            let task = TaskId::from(task);
            match data::get(store, task) {
                Some(copy) => Source::Ready(copy),
                None => Source::Fetch { task, address: address.as_str().to_string() },
            }
        }
    })
}

/// A run whose inputs are all ready.
fn ready_run(run: Waiting) -> Run {
    let inputs = run
        .inputs
        .into_iter()
        .zip(run.lists)
        .map(|(sources, list)| {
            let objects = sources
                .into_iter()
                .filter_map(|s| match s {
                    Source::Ready(obj) => Some(obj),
                    Source::Fetch { .. } => None,
                })
                .collect();
            input(list, objects)
        })
        .collect();
    Run { task: run.task, func: run.func, inputs, report_start: run.report_start }
}

/// A parameter's input from its objects: a list, or the one object.
fn input(list: bool, mut objects: Vec<Obj>) -> Input {
    if !list && objects.len() == 1 { Input::One(objects.remove(0)) } else { Input::List(objects) }
}

/// The worker runtime's way back to the scheduler: messages on the
/// connection's queue. A queue whose connection is gone drops them (the
/// reader notices the loss and starts a new session).
#[derive(Clone)]
struct TcpOutlet {
    tx: UnboundedSender<Outgoing>,
    /// Where results over [`ALWAYS_INLINE`] stay (served on the data port).
    store: Store,
}

impl Outlet for TcpOutlet {
    /// Archives the result here, on the pool thread (once: the object keeps
    /// it), so the writer only copies bytes.
    fn seal(&self, _task: TaskId, result: Obj) -> std::result::Result<(Obj, u64), String> {
        let nbytes = result.archived_bytes().map_err(|e| e.to_string())?.len() as u64;
        Ok((result, nbytes))
    }

    /// A small result travels to the scheduler (which keeps it and sends
    /// it with the runs that need it); a larger one stays in the store
    /// (before the message that says it is there), and only its size goes.
    fn send_results(&self, results: Vec<RunResult>) {
        let mut batch = Vec::new();
        let mut inline = 0;
        for result in results {
            let wire = match result {
                RunResult::Done { task, result, nbytes, micros } => {
                    let small = match result.archived_bytes() {
                        Ok(bytes) if bytes.len() <= ALWAYS_INLINE => Some(Ok(bytes.to_vec())),
                        Ok(_) => None,
                        Err(e) => Some(Err(e.to_string())),
                    };
                    match small {
                        Some(Ok(bytes)) => {
                            inline += bytes.len();
                            WireResult::Done {
                                task: task.into(),
                                result: Some(WireObject::Inline(bytes)),
                                nbytes,
                                micros,
                            }
                        }
                        None => {
                            data::put(&self.store, task, result);
                            WireResult::Done { task: task.into(), result: None, nbytes, micros }
                        }
                        Some(Err(message)) => WireResult::Failed {
                            task: task.into(),
                            kind: WireFailKind::Input,
                            message: format!("its result could not be archived: {message}"),
                            type_name: String::new(),
                            chain: Vec::new(),
                            micros,
                        },
                    }
                }
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
            if batch.len() >= MAX_ITEMS || inline >= wire::INLINE_BUDGET {
                queue(&self.tx, FromWorkerMsg::Results(std::mem::take(&mut batch)));
                inline = 0;
            }
        }
        if !batch.is_empty() {
            queue(&self.tx, FromWorkerMsg::Results(batch));
        }
    }

    fn send_stolen(&self, tasks: Vec<TaskId>) {
        queue(&self.tx, FromWorkerMsg::Stolen(tasks.into_iter().map(Into::into).collect()));
    }

    fn send_running(&self, tasks: Vec<TaskId>) {
        queue(&self.tx, FromWorkerMsg::Running(tasks.into_iter().map(Into::into).collect()));
    }

    fn send_recalled(&self, tasks: Vec<TaskId>) {
        queue(&self.tx, FromWorkerMsg::Recalled(tasks.into_iter().map(Into::into).collect()));
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

/// Queues a message to the scheduler.
fn queue(tx: &UnboundedSender<Outgoing>, message: FromWorkerMsg) {
    match wire::to_bytes(&message) {
        Ok(body) => {
            let _ = tx.send(Outgoing::message(body));
        }
        Err(e) => tracing::error!("could not encode a message to the scheduler: {e}"),
    }
}
