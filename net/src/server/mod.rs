//! The scheduler server: the core's [`Driver`] over TCP links, on tokio — the
//! `shoal scheduler` command.
//!
//! # Connections
//!
//! Every connection starts with the handshake of [`crate::auth`]. Then a
//! worker gets runs and sends results; a client submits graphs, holds and
//! drops futures, cancels, and gathers results; both sides send a
//! heartbeat every [`ServerConfig::heartbeat`], and a peer silent for
//! [`ServerConfig::dead_after`] is dropped. Each connection has a reader
//! task (which handles what arrives under the driver's lock, then carries
//! out the effects) and a writer task (which drains the connection's
//! queue). A bad frame or message closes that connection only, with a
//! logged reason and a CLOSE frame the peer can read.
//!
//! # Security
//!
//! Without a secret the server listens on loopback only, and says so;
//! asked to listen on any other address without a secret it refuses to
//! start, saying why — whoever can connect can run the tasks of the binary
//! its workers run, on any inputs. With a secret every peer must prove it
//! knows it (and the server proves it too). With TLS
//! ([`ServerConfig::tls`], see [`crate::tls`]) every connection is TLS
//! before the handshake, mutual when a CA is given.
//!
//! # The dashboard
//!
//! The server serves the live dashboard and Prometheus `/metrics` of its
//! driver (`shoal-dash`) on [`ServerConfig::dashboard`], by default
//! `127.0.0.1:8787` (Dask's port). If that port is taken it says so and
//! serves on another free port, as Dask does; on an address that is not
//! loopback the pages need the token printed at start. Task names come from
//! the clients, workers' figures from the workers (see [`crate::monitor`]).
//!
//! # Clients and their futures
//!
//! The server counts the client references each client holds per task
//! (each wanted node of a submission, each `Retain`, less each `Release`);
//! a release of a reference the client does not hold is ignored, so one
//! client cannot release another's results. When a client disconnects, all
//! its references are released. Pure keys are shared between clients, as
//! Dask shares them: the same call submitted by two clients is one task.
//! A client hears of the tasks it holds futures on when they finish or fail
//! (`Status`), including tasks that had finished before it took its future.

mod backend;
mod peers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::driver::Driver;
use shoal_core::scheduler::{Event, Scheduler, SchedulerConfig};
use shoal_dash::{Dashboard, DashboardError, DashboardOptions, Source};
use tokio::net::TcpListener;

pub use self::backend::{Cluster, ClusterDriver, Counts, Held, STORE};
use crate::auth::Secret;
use crate::error::{NetError, Result};
use crate::monitor::SchedulerSource;
use crate::tls::ServerTls;
pub use shoal_core::scheduler::Placement;

/// The port a scheduler listens on by default (Dask's).
pub const DEFAULT_PORT: u16 = 8786;
/// How often each side sends a heartbeat by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a peer may stay silent by default before it is dropped: several
/// heartbeats, so one late packet is not a death.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(5);
/// How long a connecting peer has for its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Runs a worker may hold beyond its threads, per thread, until the first
/// results say how long runs take; then `shoal_core::driver::pacing` keeps
/// about a millisecond of work queued per thread (1 to 64 runs beyond the
/// running one): short runs travel by the dozen per round trip, long ones
/// one or two at a time (the rest waits in the scheduler, where idle
/// machines can steal it: see `SchedulerConfig::weigh_transfers`).
pub const EXTRA_SLOTS_PER_THREAD: u32 = 4;
/// Where the scheduler serves its dashboard by default (Dask's port,
/// loopback only).
pub const DEFAULT_DASHBOARD: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8787);

/// How a scheduler server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address to listen on: an IP address (or `localhost`).
    pub host: String,
    /// The port (0: any free port).
    pub port: u16,
    /// The shared secret every peer must prove it knows.
    pub secret: Option<Secret>,
    /// How often heartbeats are sent, both ways.
    pub heartbeat: Duration,
    /// How long a peer may send nothing before it is dropped.
    pub dead_after: Duration,
    /// How long a connecting peer has for its handshake.
    pub handshake_timeout: Duration,
    /// TLS (`--tls-cert`, `--tls-key`, mutual with `--tls-ca`): then every
    /// peer must speak TLS (see [`crate::tls`]).
    pub tls: Option<ServerTls>,
    /// Where to serve the dashboard and `/metrics` (`None`: nowhere).
    /// Default [`DEFAULT_DASHBOARD`]; if its port is taken, another free
    /// port is used, with a warning. Not loopback: pages need a token.
    pub dashboard: Option<SocketAddr>,
    /// How ready tasks are placed: [`Placement::Locality`] (the default) or,
    /// as a benchmark and diagnostic control only, [`Placement::Random`]
    /// (`SHOAL_PLACEMENT=random[:SEED]` for `shoal scheduler`, see
    /// [`placement_from_env`]).
    pub placement: Placement,
    /// Weigh transfers against waiting (the default, `true`; see
    /// `SchedulerConfig::weigh_transfers`): `false` is the rule before it —
    /// a task whose holder is full goes to any free worker — kept for
    /// `shoal-bench locality` to compare.
    pub weigh_transfers: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            secret: None,
            tls: None,
            heartbeat: DEFAULT_HEARTBEAT,
            dead_after: DEFAULT_DEAD_AFTER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            dashboard: Some(DEFAULT_DASHBOARD),
            placement: Placement::Locality,
            weigh_transfers: true,
        }
    }
}

impl ServerConfig {
    /// The address to bind, checked against the security rule (see the
    /// module docs).
    pub fn address(&self) -> Result<SocketAddr> {
        let ip: IpAddr = if self.host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.host.parse().map_err(|_| {
                NetError::Config(format!(
                    "--host {:?} is not an IP address; give one, such as 127.0.0.1 (loopback only) or 0.0.0.0 \
                     (every interface, needs --secret-file)",
                    self.host
                ))
            })?
        };
        if self.secret.is_none() && !ip.is_loopback() {
            return Err(NetError::Config(format!(
                "refusing to listen on {ip} without a shared secret: anyone who can reach this port could make the \
                 workers run tasks. Pass --secret-file FILE (the same file to the workers and clients, as \
                 SHOAL_SECRET_FILE), or listen on 127.0.0.1 only"
            )));
        }
        if self.heartbeat.is_zero() || self.dead_after <= self.heartbeat {
            return Err(NetError::Config(format!(
                "the heartbeat ({:?}) must be positive and shorter than the silence after which a peer is dropped \
                 ({:?})",
                self.heartbeat, self.dead_after
            )));
        }
        Ok(SocketAddr::new(ip, self.port))
    }
}

/// The environment variable that sets [`ServerConfig::placement`] for
/// `shoal scheduler`: a benchmark and diagnostic control, never needed in use.
pub const PLACEMENT_VAR: &str = "SHOAL_PLACEMENT";
/// The seed of `SHOAL_PLACEMENT=random` without one.
pub const DEFAULT_PLACEMENT_SEED: u64 = 1;

/// Reads a placement: `locality`, `random` or `random:SEED` (a benchmark
/// and diagnostic control: random placement ignores where inputs are, to
/// measure what locality-aware placement saves).
pub fn parse_placement(text: &str) -> Result<Placement> {
    let text = text.trim();
    let bad = || {
        NetError::Config(format!(
            "{PLACEMENT_VAR}={text:?} is not a placement: give `locality` (the default) or `random` / `random:SEED` \
             (a benchmark and diagnostic control)"
        ))
    };
    match text.split_once(':') {
        None if text == "locality" => Ok(Placement::Locality),
        None if text == "random" => Ok(Placement::Random { seed: DEFAULT_PLACEMENT_SEED }),
        Some(("random", seed)) => seed.trim().parse().map(|seed| Placement::Random { seed }).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The placement `SHOAL_PLACEMENT` asks for ([`parse_placement`]); locality
/// when it is not set. A non-random placement is logged, so a benchmark's
/// figures cannot be mistaken for the normal rule's.
pub fn placement_from_env() -> Result<Placement> {
    match std::env::var(PLACEMENT_VAR) {
        Ok(text) => {
            let placement = parse_placement(&text)?;
            if placement != Placement::Locality {
                tracing::warn!("{PLACEMENT_VAR}: tasks are placed {placement:?}, ignoring where their inputs are");
            }
            Ok(placement)
        }
        Err(std::env::VarError::NotPresent) => Ok(Placement::Locality),
        Err(std::env::VarError::NotUnicode(_)) => Err(NetError::Config(format!("{PLACEMENT_VAR} is not UTF-8"))),
    }
}

/// What the connection tasks share.
pub(crate) struct Shared {
    pub(crate) driver: ClusterDriver,
    pub(crate) config: ServerConfig,
    /// Ids of peers (workers and clients alike).
    pub(crate) next_id: std::sync::atomic::AtomicU32,
}

/// A bound scheduler server, not serving yet (its dashboard, if any, is
/// served already).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// Read by the dashboard (weakly): dropped with the server.
    _source: Option<Arc<SchedulerSource>>,
    dashboard: Option<Dashboard>,
}

impl Server {
    /// Binds the listening socket (checked against the security rule).
    pub async fn bind(config: ServerConfig) -> Result<Server> {
        let addr = config.address()?;
        let listener =
            TcpListener::bind(addr).await.map_err(|e| NetError::Config(format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        match &config.tls {
            Some(tls) if tls.mutual() => tracing::info!("TLS on: peers must present a certificate signed by the CA"),
            Some(_) => tracing::info!("TLS on (peers are not asked for certificates: give --tls-ca for that)"),
            None => {}
        }
        if config.secret.is_none() {
            tracing::warn!(
                "shoal scheduler listening on {local} without a shared secret: loopback only (give --secret-file to \
                 listen on other addresses)"
            );
        } else {
            tracing::info!("shoal scheduler listening on {local}; peers must prove the shared secret");
        }
        let mut sched = Scheduler::new(SchedulerConfig {
            extra_slots_per_thread: EXTRA_SLOTS_PER_THREAD,
            placement: config.placement,
            weigh_transfers: config.weigh_transfers,
            // A machine's agent gives back runs it has not started
            // (`Recall`): idle machines take runs queued on busy ones.
            take_back: config.weigh_transfers,
            ..SchedulerConfig::default()
        });
        sched.handle(Event::WorkerJoined { worker: STORE, nthreads: 0 }, &mut Vec::new());
        let dashboard_at = config.dashboard;
        let shared = Arc::new(Shared {
            driver: Driver::new(sched, Cluster::default()),
            config,
            next_id: std::sync::atomic::AtomicU32::new(0),
        });
        let (source, dashboard) = match dashboard_at {
            Some(addr) => {
                let source = Arc::new(SchedulerSource(Arc::clone(&shared)));
                let dashboard = start_dashboard(&source, addr)?;
                (Some(source), Some(dashboard))
            }
            None => (None, None),
        };
        Ok(Server { listener, shared, _source: source, dashboard })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The dashboard's URL (with its token if it needs one), if it serves one.
    pub fn dashboard_url(&self) -> Option<String> {
        self.dashboard.as_ref().map(Dashboard::url)
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!("could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(peers::serve(Arc::clone(&self.shared), stream, addr));
        }
    }
}

/// Serves the dashboard of `source` on `addr`; if its port is taken,
/// says so and serves on another free port of the same address (what Dask
/// users expect). Prints the URL when it needs a token.
fn start_dashboard(source: &Arc<SchedulerSource>, addr: SocketAddr) -> Result<Dashboard> {
    let weak = || Arc::downgrade(source) as std::sync::Weak<dyn Source>;
    let dashboard = match Dashboard::start(weak(), DashboardOptions { addr }) {
        Err(DashboardError::Bind { source: e, .. })
            if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 =>
        {
            let other = SocketAddr::new(addr.ip(), 0);
            let dashboard = Dashboard::start(weak(), DashboardOptions { addr: other })
                .map_err(|e| NetError::Config(format!("the scheduler's dashboard: {e}")))?;
            tracing::warn!(
                "port {} is already in use (another scheduler, or a program with a dashboard?); the dashboard is \
                 served on port {} instead: {}",
                addr.port(),
                dashboard.addr().port(),
                dashboard.url()
            );
            dashboard
        }
        other => other
            .map_err(|e| NetError::Config(format!("the scheduler's dashboard: {e} (--no-dashboard serves none)")))?,
    };
    // `Dashboard::start` logged the URL; the token must be seen whatever
    // logging is set up (the one way to learn it).
    if dashboard.token().is_some() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "shoal dashboard: {}", dashboard.url());
    }
    Ok(dashboard)
}

/// A scheduler server running on a thread of its own.
pub struct ServerHandle {
    addr: SocketAddr,
    dashboard_url: Option<String>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tasks the scheduler knows now (for tests and monitoring): a
    /// client's tasks are gone once it released them or disconnected.
    pub fn live_tasks(&self) -> usize {
        self.shared.driver.lock().sched.live_tasks()
    }

    /// Workers connected now.
    pub fn workers(&self) -> usize {
        self.shared.driver.lock().backend.workers.len()
    }

    /// What moved where so far (for tests and monitoring): run inputs
    /// fetched between workers, result bytes the scheduler received.
    pub fn counts(&self) -> Counts {
        self.shared.driver.lock().backend.counts
    }

    /// Each worker's pid and last figures, by its id (for tests and
    /// monitoring).
    pub fn figures(&self) -> Vec<(u32, u32, crate::wire::WireFigures)> {
        let st = self.shared.driver.lock();
        let mut all: Vec<(u32, u32, crate::wire::WireFigures)> =
            st.backend.workers.iter().map(|(id, link)| (id.0, link.pid, link.figures.clone())).collect();
        all.sort_by_key(|(id, _, _)| *id);
        all
    }

    /// The dashboard's URL (with its token if it needs one), if it serves one.
    pub fn dashboard_url(&self) -> Option<String> {
        self.dashboard_url.clone()
    }

    /// Its URL, `tcp://host:port` (`tls://host:port` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() { "tls" } else { "tcp" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops it: every connection is closed, as if the process had died.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Starts a scheduler server on a thread of its own (with its own tokio
/// runtime); it serves until the handle is stopped or dropped.
pub fn spawn(config: ServerConfig) -> Result<ServerHandle> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (bound, bound_rx) = std::sync::mpsc::channel();
    // Everything tokio happens on the new thread, so this may be called
    // from inside another runtime (an async test) as well as from plain code.
    let thread = std::thread::Builder::new().name("shoal-scheduler".into()).spawn(move || {
        let runtime = match runtime() {
            Ok(r) => r,
            Err(e) => {
                let _ = bound.send(Err(e));
                return;
            }
        };
        runtime.block_on(async {
            let server = match Server::bind(config).await.and_then(|s| Ok((s.local_addr()?, s))) {
                Ok((addr, server)) => {
                    let _ = bound.send(Ok((addr, server.dashboard_url(), Arc::clone(&server.shared))));
                    server
                }
                Err(e) => {
                    let _ = bound.send(Err(e));
                    return;
                }
            };
            tokio::select! {
                _ = server.run() => {}
                _ = stopped => {}
            }
        });
        // Dropping the runtime drops every connection task: sockets close.
        drop(runtime);
    })?;
    let (addr, dashboard_url, shared) = match bound_rx.recv() {
        Ok(result) => result?,
        Err(_) => return Err(NetError::Config("the scheduler thread ended before it listened".into())),
    };
    Ok(ServerHandle { addr, dashboard_url, shared, stop: Some(stop), thread: Some(thread) })
}

/// Serves forever on the calling thread (the `shoal scheduler` command).
pub fn serve_forever(config: ServerConfig) -> Result<()> {
    let runtime = runtime()?;
    runtime.block_on(async { Server::bind(config).await?.run().await })
}

/// The scheduler's runtime: one thread, as Dask's scheduler has. It parses
/// messages and moves small results (tasks run elsewhere), and every
/// connection's task takes the driver's lock anyway; with two threads, a
/// message read on one woke the writer task on the other (a futex wake
/// and a context switch more per message, on a machine whose cores the
/// workers and the client need).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_read_as_locality_random_or_random_with_a_seed_and_anything_else_is_refused() {
        assert_eq!(parse_placement("locality").ok(), Some(Placement::Locality));
        assert_eq!(parse_placement("random").ok(), Some(Placement::Random { seed: DEFAULT_PLACEMENT_SEED }));
        assert_eq!(parse_placement(" random:42 ").ok(), Some(Placement::Random { seed: 42 }));
        for bad in ["", "Random", "random:", "random:x", "locality:1", "spread"] {
            let e = parse_placement(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("SHOAL_PLACEMENT") && e.contains("locality"), "{bad:?}: {e}");
        }
    }
}
