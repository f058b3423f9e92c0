//! TLS for every connection of a cluster (rustls, `ring` backend), by
//! option.
//!
//! # The scheme
//!
//! - **The scheduler** is given `--tls-cert F --tls-key F` (PEM): it then
//!   speaks only TLS. With `--tls-ca F` as well, TLS is **mutual**: every
//!   client and worker must present a certificate signed by that CA.
//! - **Workers and clients** turn TLS on with the scheduler's address
//!   `tls://host:port` (instead of `tcp://`); they trust the CA in
//!   `SHOAL_TLS_CA` (required then: there is no system trust store) and
//!   present the certificate `SHOAL_TLS_CERT` with its key `SHOAL_TLS_KEY`
//!   when they have one (a mutual scheduler requires it). The scheduler's
//!   certificate must name the host of the address (a DNS name or an IP
//!   address as a subject alternative name), or the name in
//!   `SHOAL_TLS_SERVER_NAME`. `Client::connect_with` takes the same as
//!   options.
//! - **Data ports** (peer-to-peer transfers, [`crate::data`]): in a TLS
//!   cluster each worker serves its results over TLS with its own
//!   certificate (so a worker needs `SHOAL_TLS_CERT` and `SHOAL_TLS_KEY`).
//!   A fetcher checks that the holder's certificate is signed by the CA but
//!   not which name it carries: holders are reached by the IP address the
//!   scheduler saw, which a certificate made before the machine joined
//!   cannot know (Dask's TLS does not check host names at all). A data port
//!   requires a fetcher's certificate exactly when the scheduler required
//!   one of its worker (mutual), and checks any certificate it is shown.
//! - The shared secret's challenge-response ([`crate::auth`]) runs inside
//!   TLS as before: TLS hides and protects the bytes, the secret (and a
//!   mutual CA) says who may join.
//! - A plain-TCP peer of a TLS scheduler (or data port) is told, in a plain
//!   CLOSE frame it can read, that TLS is required; a TLS peer of a plain
//!   scheduler gets a handshake error that says the scheduler may not speak
//!   TLS. Either way only that connection is closed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{NetError, Result};

/// The CA that workers and clients trust (PEM).
pub const ENV_TLS_CA: &str = "SHOAL_TLS_CA";
/// A worker's or client's own certificate chain (PEM).
pub const ENV_TLS_CERT: &str = "SHOAL_TLS_CERT";
/// The private key of [`ENV_TLS_CERT`] (PEM).
pub const ENV_TLS_KEY: &str = "SHOAL_TLS_KEY";
/// The name the scheduler's certificate must carry, when it is not the host
/// of the address.
pub const ENV_TLS_SERVER_NAME: &str = "SHOAL_TLS_SERVER_NAME";

/// Where a worker's or client's TLS material is (PEM files).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// The CA that signed the scheduler's (and the workers') certificates.
    pub ca: Option<PathBuf>,
    /// This process's certificate chain (a mutual scheduler requires one;
    /// a worker always needs one, for its data port).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name the scheduler's certificate must carry (default: the host
    /// of the address).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// The files named by `SHOAL_TLS_CA`, `SHOAL_TLS_CERT`, `SHOAL_TLS_KEY`
    /// and `SHOAL_TLS_SERVER_NAME`.
    pub fn from_env() -> TlsFiles {
        let path = |var| std::env::var_os(var).map(PathBuf::from);
        TlsFiles {
            ca: path(ENV_TLS_CA),
            cert: path(ENV_TLS_CERT),
            key: path(ENV_TLS_KEY),
            server_name: std::env::var(ENV_TLS_SERVER_NAME).ok(),
        }
    }

    /// Whether any of it is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, e: impl fmt::Display) -> NetError {
    NetError::Config(format!("TLS: {what}: {e}"))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| config_error(&format!("cannot read certificates from {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(NetError::Config(format!("TLS: {} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| config_error(&format!("cannot read a PEM private key from {}", path.display()), e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| config_error(&format!("the CA in {} is not usable", path.display()), e))?;
    }
    Ok(Arc::new(roots))
}

fn identity(cert: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>> {
    let key = key(key_path)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| config_error(&format!("the key in {} is not usable", key_path.display()), e))?;
    let certified = CertifiedKey::new(certs(cert)?, signing);
    certified.keys_match().map_err(|e| {
        config_error(&format!("the key in {} does not belong to {}", key_path.display(), cert.display()), e)
    })?;
    Ok(Arc::new(certified))
}

/// The accepting side's TLS: the scheduler's, or a worker's data port.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.mutual).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The scheduler's TLS: its certificate chain and key; with a CA,
    /// every peer must present a certificate signed by it.
    pub fn new(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<ServerTls> {
        let roots = ca.map(roots).transpose()?;
        ServerTls::build(identity(cert, key)?, roots, true)
    }

    fn build(identity: Arc<CertifiedKey>, roots: Option<Arc<RootCertStore>>, required: bool) -> Result<ServerTls> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("no protocol version", e))?;
        let mutual = roots.is_some() && required;
        let builder = match roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| config_error("the CA", e))?)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_cert_resolver(Arc::new(OneCert(identity)));
        Ok(ServerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), mutual })
    }

    /// Whether peers must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }
}

/// The one certificate a server presents, whatever name it is asked for.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// A worker's or client's TLS: whom it trusts and what it presents.
#[derive(Clone)]
pub struct PeerTls {
    roots: Arc<RootCertStore>,
    identity: Option<Arc<CertifiedKey>>,
    server_name: Option<ServerName<'static>>,
    /// Connections to data ports: the chain is checked, not the name.
    data: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("has_cert", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A connection to the scheduler about to be made: its client config, and
/// whether the scheduler asked for a certificate (known after the
/// handshake).
pub(crate) struct SchedulerDial {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) asked: Arc<AtomicBool>,
}

impl PeerTls {
    /// From files: the CA is required, the certificate and key go together.
    pub fn new(files: &TlsFiles) -> Result<PeerTls> {
        let Some(ca) = &files.ca else {
            return Err(NetError::Config(format!(
                "TLS (a tls:// address) needs the CA that signed the scheduler's certificate: set {ENV_TLS_CA}=FILE \
                 (PEM)"
            )));
        };
        let roots = roots(ca)?;
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some(identity(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(NetError::Config(format!(
                    "TLS: a certificate needs its key and a key its certificate: set both {ENV_TLS_CERT} and \
                     {ENV_TLS_KEY}"
                )));
            }
        };
        let server_name = match &files.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                config_error(&format!("{ENV_TLS_SERVER_NAME}={name:?} is not a DNS name or an IP address"), e)
            })?),
            None => None,
        };
        let verifier = AnyNameVerifier(
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
                .build()
                .map_err(|e| config_error("the CA", e))?,
        );
        let data = client_config(Arc::new(verifier), Resolver::new(identity.clone()))?;
        Ok(PeerTls { roots, identity, server_name, data: Arc::new(data) })
    }

    /// Whether it has a certificate to present.
    pub fn has_cert(&self) -> bool {
        self.identity.is_some()
    }

    /// The name the scheduler at `host` must prove.
    pub(crate) fn scheduler_name(&self, host: &str) -> Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|e| {
            config_error(&format!("{host:?} is not a name a certificate can carry (set {ENV_TLS_SERVER_NAME})"), e)
        })
    }

    /// A connector to the scheduler (the name is checked).
    pub(crate) fn scheduler(&self) -> Result<SchedulerDial> {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
            .build()
            .map_err(|e| config_error("the CA", e))?;
        let resolver = Resolver::new(self.identity.clone());
        let asked = Arc::clone(&resolver.asked);
        let config = client_config(verifier, resolver)?;
        Ok(SchedulerDial { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), asked })
    }

    /// A connector to data ports.
    pub(crate) fn data(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.data))
    }

    /// A worker's data port: its own certificate; a fetcher's certificate
    /// is required when `mutual` (the scheduler required this worker's).
    pub fn data_port(&self, mutual: bool) -> Result<ServerTls> {
        let Some(identity) = &self.identity else {
            return Err(NetError::Config(format!(
                "a worker of a TLS cluster serves its results to its peers over TLS and needs a certificate signed by \
                 the cluster's CA: set {ENV_TLS_CERT} and {ENV_TLS_KEY}"
            )));
        };
        ServerTls::build(Arc::clone(identity), Some(Arc::clone(&self.roots)), mutual)
    }
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>, resolver: Resolver) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("no protocol version", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(resolver)))
}

/// Presents this process's certificate, and notes whether the server asked
/// for one (how a worker learns that its cluster is mutual).
#[derive(Debug)]
struct Resolver {
    identity: Option<Arc<CertifiedKey>>,
    asked: Arc<AtomicBool>,
}

impl Resolver {
    fn new(identity: Option<Arc<CertifiedKey>>) -> Resolver {
        Resolver { identity, asked: Arc::new(AtomicBool::new(false)) }
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.identity.is_some()
    }
}

/// Checks a data port's certificate chain against the CA, whatever name
/// it carries (see the module docs: holders are reached by IP address).
#[derive(Debug)]
struct AnyNameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and revocation) before the name: a name
        // error means everything else held.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
