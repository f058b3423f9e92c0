//! The `shoal` command: `shoal scheduler` runs a cluster's scheduler
//! server (and its dashboard, on 127.0.0.1:8787 unless told otherwise);
//! `shoal worker` explains how to start workers (they are your own
//! program, started with `SHOAL_WORKER`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, Command, value_parser};
use shoal_net::server::{self, ServerConfig};

const WORKER_HELP: &str = "\
A shoal worker is your own program, started with the worker role in its
environment: the tasks it runs are the #[shoal::task] functions compiled
into it, so workers and clients must run the same build (the scheduler
refuses a worker whose task registry differs, naming both fingerprints).

    SHOAL_WORKER=tcp://HOST:8786 ./target/release/your_app

Before main (or in shoal::init(), which main should call first), the
program sees SHOAL_WORKER, connects to that scheduler and serves it until
the scheduler stops it; it never runs your main.

Environment:
    SHOAL_WORKER                  tcp://host:port of the scheduler (the role);
                                  tls://host:port for a scheduler started with
                                  --tls-cert
    SHOAL_WORKER_THREADS          threads that run tasks (default: one per core;
                                  with processes: threads of each)
    SHOAL_WORKER_PROCESSES        worker processes this machine's agent starts
                                  (default 0: tasks run in the agent itself);
                                  they read each other's results in place
    SHOAL_WORKER_MEMORY_LIMIT     bytes of results kept in memory before the
                                  machine spills to disk (default: half the
                                  machine's memory)
    SHOAL_WORKER_SPILL_DIR        an existing directory for spill files
                                  (default: the system's temporary directory)
    SHOAL_SECRET_FILE             file with the cluster's shared secret (the
                                  scheduler's --secret-file; clients read it too)
    SHOAL_TLS_CA                  with tls://: the CA (PEM) that signed the
                                  scheduler's and the workers' certificates
    SHOAL_TLS_CERT, SHOAL_TLS_KEY with tls://: this worker's certificate and key
                                  (PEM), signed by that CA; required: a worker
                                  serves its results to its peers over TLS
    SHOAL_TLS_SERVER_NAME         the name the scheduler's certificate carries,
                                  if not the host of the address
    SHOAL_WORKER_CONNECT_TIMEOUT  seconds to keep trying to reach the scheduler,
                                  at start and after losing it (default 30)
    SHOAL_WORKER_DEAD_AFTER       seconds the scheduler, or a peer sending a
                                  result, may stay silent (default 5)

A worker keeps the results it makes and serves them to the other workers
and the clients on a data port of its own, on the address it reaches the
scheduler from: give it an address of the scheduler that the other
machines can reach too.

A worker that loses its scheduler connects again with backoff, and exits
with a message once the scheduler has been unreachable for the timeout.
Then connect a client from your program: Client::connect(\"tcp://HOST:8786\")
(tls://HOST:8786 with the same SHOAL_TLS_ variables, or ClusterOptions::tls).";

fn command() -> Command {
    Command::new("shoal")
        .about("shoal: a parallel and distributed task runtime")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("scheduler")
                .about("Run a cluster's scheduler: workers and clients connect to it")
                .arg(
                    Arg::new("host")
                        .long("host")
                        .value_name("H")
                        .default_value("127.0.0.1")
                        .help("Address to listen on; anything but loopback needs --secret-file"),
                )
                .arg(
                    Arg::new("port")
                        .long("port")
                        .value_name("PORT")
                        .default_value("8786")
                        .value_parser(value_parser!(u16))
                        .help("Port to listen on (0: any free port)"),
                )
                .arg(
                    Arg::new("secret-file")
                        .long("secret-file")
                        .value_name("F")
                        .value_parser(value_parser!(PathBuf))
                        .help("File with the shared secret every worker and client must prove it knows"),
                )
                .arg(
                    Arg::new("tls-cert")
                        .long("tls-cert")
                        .value_name("F")
                        .value_parser(value_parser!(PathBuf))
                        .requires("tls-key")
                        .help("Speak TLS only, with this certificate chain (PEM); peers connect to tls://HOST:PORT"),
                )
                .arg(
                    Arg::new("tls-key")
                        .long("tls-key")
                        .value_name("F")
                        .value_parser(value_parser!(PathBuf))
                        .requires("tls-cert")
                        .help("The private key of --tls-cert (PEM)"),
                )
                .arg(
                    Arg::new("tls-ca")
                        .long("tls-ca")
                        .value_name("F")
                        .value_parser(value_parser!(PathBuf))
                        .requires("tls-cert")
                        .help("Mutual TLS: every worker and client must present a certificate signed by this CA (PEM)"),
                )
                .arg(
                    Arg::new("dashboard")
                        .long("dashboard")
                        .value_name("ADDR")
                        .default_value("127.0.0.1:8787")
                        .value_parser(value_parser!(SocketAddr))
                        .help(
                            "Serve the live dashboard and Prometheus /metrics here (if the port is taken, on another \
                             one, with a warning); anything but loopback needs the token printed at start",
                        ),
                )
                .arg(
                    Arg::new("no-dashboard")
                        .long("no-dashboard")
                        .action(ArgAction::SetTrue)
                        .conflicts_with("dashboard")
                        .help("Serve no dashboard"),
                )
                .arg(
                    Arg::new("dead-after")
                        .long("dead-after")
                        .value_name("SECONDS")
                        .default_value("5")
                        .value_parser(value_parser!(f64))
                        .help("Drop a worker or client that sends nothing (not even a heartbeat) for this long"),
                )
                .after_help(
                    "Benchmark and diagnostic control (never needed in use):\n    SHOAL_PLACEMENT=random[:SEED]  \
                     place ready tasks on a worker drawn at random (seeded, reproducible), ignoring where\n    \
                     their inputs are; `locality` (the default) places them where most input bytes are",
                ),
        )
        .subcommand(Command::new("worker").about("How to start workers (your own program, with SHOAL_WORKER set)"))
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    let matches = command().get_matches();
    match matches.subcommand() {
        Some(("scheduler", m)) => match scheduler(m) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("shoal scheduler: {e}");
                ExitCode::FAILURE
            }
        },
        Some(("worker", _)) => {
            println!("{WORKER_HELP}");
            ExitCode::SUCCESS
        }
        _ => ExitCode::FAILURE,
    }
}

fn scheduler(m: &clap::ArgMatches) -> shoal_net::Result<()> {
    let host = m.get_one::<String>("host").cloned().unwrap_or_else(|| "127.0.0.1".into());
    let port = m.get_one::<u16>("port").copied().unwrap_or(server::DEFAULT_PORT);
    let secret = match m.get_one::<PathBuf>("secret-file") {
        Some(path) => Some(shoal_net::Secret::from_file(path)?),
        None => None,
    };
    let tls = match (m.get_one::<PathBuf>("tls-cert"), m.get_one::<PathBuf>("tls-key")) {
        (Some(cert), Some(key)) => {
            Some(shoal_net::tls::ServerTls::new(cert, key, m.get_one::<PathBuf>("tls-ca").map(PathBuf::as_path))?)
        }
        _ => None,
    };
    let dead_after = m.get_one::<f64>("dead-after").copied().unwrap_or(5.0);
    if !(dead_after.is_finite() && dead_after > 0.0) {
        return Err(shoal_net::NetError::Config(format!(
            "--dead-after {dead_after} is not a positive number of seconds"
        )));
    }
    let dead_after = Duration::from_secs_f64(dead_after);
    let heartbeat = (dead_after / 10).max(Duration::from_millis(10));
    let dashboard = if m.get_flag("no-dashboard") {
        None
    } else {
        Some(m.get_one::<SocketAddr>("dashboard").copied().unwrap_or(server::DEFAULT_DASHBOARD))
    };
    server::serve_forever(ServerConfig {
        host,
        port,
        secret,
        tls,
        heartbeat,
        dead_after,
        dashboard,
        placement: server::placement_from_env()?,
        ..ServerConfig::default()
    })
}
