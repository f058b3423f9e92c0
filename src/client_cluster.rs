//! The cluster mode's constructors: `Client::connect(url)` and
//! `Client::connect_with(..)`.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Client, ClientOptions};
use crate::engine::cluster::ClusterEngine;
use crate::error::{Error, Result};

/// The variable naming the file that holds a cluster's shared secret, read
/// by clients (when [`ClusterOptions::secret_file`] is `None`) and workers.
pub const ENV_SECRET_FILE: &str = shoal_net::agent::ENV_SECRET_FILE;

/// Where a client's (or worker's) TLS material is: the CA it trusts, its
/// own certificate and key (see [`ClusterOptions::tls`]).
pub use shoal_net::tls::TlsFiles;

/// Settings of a connection to a scheduler.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// A file holding the cluster's shared secret (the scheduler's
    /// `--secret-file`). `None`: the file named by `SHOAL_SECRET_FILE`, if
    /// set; else no secret (only a loopback scheduler accepts that).
    pub secret_file: Option<PathBuf>,
    /// TLS files, for a `tls://` address. `None`: the files named by
    /// `SHOAL_TLS_CA`, `SHOAL_TLS_CERT`, `SHOAL_TLS_KEY` (and the name in
    /// `SHOAL_TLS_SERVER_NAME`). The CA is required; a mutual scheduler
    /// (`--tls-ca`) requires the certificate and key too.
    pub tls: Option<TlsFiles>,
    /// How long connecting and the handshake may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long the scheduler may stay silent (it sends heartbeats) before
    /// every pending call fails with [`Error::Disconnected`] (default 5 s).
    pub dead_after: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            secret_file: None,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            dead_after: shoal_net::agent::DEFAULT_DEAD_AFTER,
        }
    }
}

impl Client {
    /// A client of the scheduler at `url` (`tcp://host:8786`, or
    /// `tls://host:8786` for a scheduler started with `--tls-cert`: see
    /// [`ClusterOptions::tls`]), started with `shoal scheduler`; tasks run on the workers connected to it — this
    /// same binary, started as `SHOAL_WORKER=tcp://host:8786 ./app`.
    ///
    /// The program is the same as in the other modes. Results live on the
    /// workers that made them until no future needs them (small ones in
    /// the scheduler too); workers fetch the inputs they need from each
    /// other, and the client fetches the results it gathers from their
    /// holders. A worker that dies loses its runs and its results, which
    /// are computed again elsewhere. If the scheduler goes away, every
    /// pending and later call fails with [`Error::Disconnected`].
    pub fn connect(url: &str) -> Result<Client> {
        Client::connect_with(url, ClusterOptions::default(), ClientOptions::default())
    }

    /// [`connect`](Client::connect) with options.
    pub fn connect_with(url: &str, cluster: ClusterOptions, options: ClientOptions) -> Result<Client> {
        #[cfg(target_os = "linux")]
        std::hint::black_box(&crate::engine::cluster::CLUSTER_HOOK);
        shoal_core::registry::check()?;
        let secret_file = cluster.secret_file.or_else(|| std::env::var_os(ENV_SECRET_FILE).map(PathBuf::from));
        let secret = match secret_file {
            Some(path) => Some(shoal_net::Secret::from_file(&path).map_err(|e| Error::InvalidOption(e.to_string()))?),
            None => None,
        };
        let endpoint = shoal_net::parse_url(url).map_err(|e| Error::InvalidOption(e.to_string()))?;
        let tls = match (endpoint.tls, cluster.tls) {
            (true, files) => {
                let files = files.unwrap_or_else(TlsFiles::from_env);
                Some(shoal_net::tls::PeerTls::new(&files).map_err(|e| Error::InvalidOption(e.to_string()))?)
            }
            (false, Some(_)) => {
                return Err(Error::InvalidOption(format!(
                    "TLS options are given but {url:?} is not a tls:// address: write tls://host:port"
                )));
            }
            (false, None) => None,
        };
        let remote = shoal_net::client::Remote::connect(shoal_net::client::ClientConfig {
            url: url.to_string(),
            tls,
            secret,
            fingerprint: shoal_core::registry::fingerprint()?,
            connect_timeout: cluster.connect_timeout,
            dead_after: cluster.dead_after,
        })
        .map_err(|e| Error::Start(format!("cannot connect to the shoal scheduler at {url}: {e}")))?;
        Client::from_engine(ClusterEngine::new(remote), options)
    }
}
