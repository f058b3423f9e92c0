//! `shoal-net`: shoal's cluster mode — the TCP wire protocol, the scheduler
//! server, the worker agent and the client's link to a scheduler.
//!
//! - [`frame`]: length-delimited frames with a size limit; large objects
//!   streamed in chunks;
//! - [`wire`]: the messages as rkyv types, validated on receipt;
//! - [`conn`]: a connection's reader and writer (heartbeats, liveness);
//! - [`stream`]: one stream type for plain TCP and TLS;
//! - [`tls`]: TLS by option (rustls, `ring`), mutual with a CA;
//! - [`data`]: peer-to-peer transfers: workers serve the results they hold;
//! - [`store`]: a machine's store of results (memory limit, spill);
//! - [`auth`]: the handshake — protocol version, shared secret by
//!   challenge-response, registry fingerprint;
//! - [`server`]: the scheduler server (`shoal scheduler`), which serves
//!   the dashboard and `/metrics` of its driver (`shoal-dash`);
//! - [`monitor`]: what the dashboard and clients see of a cluster (task
//!   events, names from clients, workers' figures);
//! - [`agent`]: a worker: the user's binary started with `SHOAL_WORKER`;
//! - [`machine`]: with `SHOAL_WORKER_PROCESSES`, that worker is its
//!   machine's agent, and runs tasks in worker processes it starts;
//! - [`client`]: a client's link to a scheduler (behind
//!   `Client::connect`).
//!
//! The protocol, its invariants and the decisions behind them are in
//! `net/README.md`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod auth;
pub mod client;
pub mod conn;
pub mod data;
pub mod error;
pub mod frame;
pub mod machine;
pub mod monitor;
pub mod server;
pub mod store;
pub mod stream;
pub mod tls;
// rkyv's derives generate resolver types for enum variants with no docs to
// copy; every type written here is documented.
#[allow(missing_docs)]
pub mod wire;

pub use auth::Secret;
pub use error::{NetError, Result};

/// A scheduler's address, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, to connect to.
    pub address: String,
    /// The host alone (the name a TLS certificate must carry).
    pub host: String,
    /// `tls://`: the connection is TLS (see [`tls`]).
    pub tls: bool,
}

/// Parses `tcp://host:port`, `tls://host:port` or `host:port` (plain TCP).
pub fn parse_url(url: &str) -> Result<Endpoint> {
    let (rest, tls) = match (url.strip_prefix("tcp://"), url.strip_prefix("tls://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => (url, false),
    };
    if rest.contains("://") {
        return Err(NetError::Config(format!(
            "{url:?}: a scheduler address is tcp://host:8786, or tls://host:8786 for TLS"
        )));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(NetError::Config(format!("{url:?} has no port: write tcp://host:8786")));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(NetError::Config(format!("{url:?} is not tcp://host:port (for example tcp://127.0.0.1:8786)")));
    }
    Ok(Endpoint { address: rest.to_string(), host: host.to_string(), tls })
}
