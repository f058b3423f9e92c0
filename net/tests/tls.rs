//! TLS (`shoal_net::tls`) over real loopback sockets, with certificates
//! made by each test: who is let in, who is refused, and that every
//! refusal says why and disturbs nothing else.

#[path = "support/certs.rs"]
mod certs;

use std::sync::Arc;
use std::time::Duration;

use certs::{Ca, Dir, Pair};
use rkyv::util::AlignedVec;
use shoal_core::object::{Obj, RawArchive};
use shoal_core::scheduler::TaskId;
use shoal_net::auth::Introduce;
use shoal_net::client::{ClientConfig, Remote};
use shoal_net::data::{self, Fetcher, Gate};
use shoal_net::server::{self, ServerConfig, ServerHandle};
use shoal_net::tls::{PeerTls, ServerTls, TlsFiles};
use shoal_net::wire::Role;
use shoal_net::{NetError, Secret};

const FP: u128 = 0x7115;

/// A CA, the scheduler's certificate (for 127.0.0.1 and localhost), and a
/// peer's certificate, in a fresh directory.
struct Pki {
    dir: Dir,
    ca: Ca,
    server: Pair,
    peer: Pair,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = Dir::new(tag);
        let ca = Ca::new("shoal test CA");
        ca.write(&dir.0, "ca.pem");
        let server = ca.issue(&dir.0, "scheduler", &["127.0.0.1", "localhost"]);
        let peer = ca.issue(&dir.0, "peer", &["peer.example"]);
        Pki { dir, ca, server, peer }
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.0.join("ca.pem")
    }

    fn scheduler(&self, mutual: bool) -> ServerHandle {
        let ca = self.ca_file();
        let tls = ServerTls::new(&self.server.cert, &self.server.key, mutual.then_some(ca.as_path())).unwrap();
        scheduler(Some(tls))
    }

    /// A client's files: this CA, and the peer certificate if `cert`.
    fn files(&self, cert: bool) -> TlsFiles {
        TlsFiles {
            ca: Some(self.ca_file()),
            cert: cert.then(|| self.peer.cert.clone()),
            key: cert.then(|| self.peer.key.clone()),
            server_name: None,
        }
    }
}

fn scheduler(tls: Option<ServerTls>) -> ServerHandle {
    server::spawn(ServerConfig {
        port: 0,
        tls,
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
        dashboard: None,
        secret: Some(Secret::new(b"inside tls").unwrap()),
        ..ServerConfig::default()
    })
    .unwrap()
}

fn connect(url: &str, tls: Option<TlsFiles>) -> Result<Remote, NetError> {
    Remote::connect(ClientConfig {
        url: url.to_string(),
        tls: tls.map(|f| PeerTls::new(&f).unwrap()),
        secret: Some(Secret::new(b"inside tls").unwrap()),
        fingerprint: FP,
        connect_timeout: Duration::from_secs(5),
        dead_after: Duration::from_secs(2),
    })
}

fn tls_url(server: &ServerHandle) -> String {
    format!("tls://{}", server.addr())
}

fn plain_url(server: &ServerHandle) -> String {
    format!("tcp://{}", server.addr())
}

#[test]
fn a_tls_client_connects_with_the_secret_checked_inside_tls() {
    let pki = Pki::new("ok");
    let server = pki.scheduler(false);
    assert!(server.url().starts_with("tls://"));
    let remote = connect(&server.url(), Some(pki.files(false))).expect("a TLS client with the CA connects");
    drop(remote);
    // The secret is still checked inside TLS.
    let wrong = Remote::connect(ClientConfig {
        url: server.url(),
        tls: Some(PeerTls::new(&pki.files(false)).unwrap()),
        secret: Some(Secret::new(b"not it").unwrap()),
        fingerprint: FP,
        connect_timeout: Duration::from_secs(5),
        dead_after: Duration::from_secs(2),
    })
    .err()
    .expect("a wrong secret is refused over TLS too");
    assert!(wrong.to_string().contains("wrong secret"), "{wrong}");
}

#[test]
fn a_plain_client_of_a_tls_scheduler_is_told_tls_is_required_and_nothing_else_is_disturbed() {
    let pki = Pki::new("plain-to-tls");
    let server = pki.scheduler(false);
    let first = connect(&server.url(), Some(pki.files(false))).expect("a TLS client connects");
    let err = connect(&plain_url(&server), None).err().expect("a plain client is refused");
    assert!(matches!(err, NetError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("speaks TLS only") && err.to_string().contains("tls://"), "{err}");
    // The scheduler serves on: the connected client is still there, and a
    // new TLS client connects.
    assert!(first.monitor(0, 1).is_ok(), "the connected client is served on");
    let second = connect(&server.url(), Some(pki.files(false))).expect("a TLS client connects after the refusal");
    drop((first, second));
}

#[test]
fn a_tls_client_of_a_plain_scheduler_gets_a_clear_error() {
    let pki = Pki::new("tls-to-plain");
    let server = scheduler(None);
    let err = connect(&tls_url(&server), Some(pki.files(false))).err().expect("TLS to a plain scheduler fails");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
    connect(&server.url(), None).expect("the plain scheduler serves plain clients on");
}

#[test]
fn the_client_refuses_a_scheduler_of_another_ca_or_another_name() {
    let pki = Pki::new("server-check");
    let server = pki.scheduler(false);
    // Another CA: the scheduler's certificate is not signed by it.
    let other = Ca::new("another CA");
    let other_ca = other.write(&pki.dir.0, "other-ca.pem");
    let files = TlsFiles { ca: Some(other_ca), ..TlsFiles::default() };
    let err = connect(&server.url(), Some(files)).err().expect("a scheduler of another CA is refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
    // A certificate for another name than the address's host.
    let elsewhere = pki.ca.issue(&pki.dir.0, "elsewhere", &["scheduler.example"]);
    let named = scheduler(Some(ServerTls::new(&elsewhere.cert, &elsewhere.key, None).unwrap()));
    let err = connect(&named.url(), Some(pki.files(false))).err().expect("a certificate of another name is refused");
    assert!(err.to_string().contains("does not carry the name"), "{err}");
    // ... which is fine when that name is the one expected.
    let files = TlsFiles { server_name: Some("scheduler.example".into()), ..pki.files(false) };
    connect(&named.url(), Some(files)).expect("the name given is the certificate's");
}

#[test]
fn a_mutual_scheduler_refuses_clients_without_a_certificate_or_with_another_cas() {
    let pki = Pki::new("mutual");
    let server = pki.scheduler(true);
    let err = connect(&server.url(), Some(pki.files(false))).err().expect("no certificate: refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("SHOAL_TLS_CERT"), "{err}");
    // A certificate signed by another CA (trusting the right one).
    let other = Ca::new("another CA");
    let stranger = other.issue(&pki.dir.0, "stranger", &["stranger.example"]);
    let files = TlsFiles { cert: Some(stranger.cert), key: Some(stranger.key), ..pki.files(false) };
    let err = connect(&server.url(), Some(files)).err().expect("a certificate of another CA: refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("refused this process's certificate"), "{err}");
    connect(&server.url(), Some(pki.files(true))).expect("a client with a certificate of the CA connects");
}

fn object(len: usize) -> Obj {
    let mut bytes = AlignedVec::with_capacity(len);
    bytes.extend_from_slice(&(0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    Arc::new(RawArchive::new(bytes))
}

fn fetcher(tls: Option<PeerTls>) -> Fetcher {
    let me = Introduce { role: Role::Worker, fingerprint: FP, nthreads: 0, data_port: 0 };
    Fetcher::new(me, None, tls, Duration::from_secs(2))
}

#[tokio::test]
async fn a_tls_data_port_serves_over_tls_and_refuses_plain_and_certificateless_fetchers() {
    let pki = Pki::new("data");
    // The worker's certificate names nothing the fetchers dial (they dial
    // an IP address): data ports are checked against the CA, not by name.
    let worker = PeerTls::new(&pki.files(true)).unwrap();
    let store = shoal_net::store::MachineStore::unbounded().unwrap();
    let task = TaskId { index: 1, generation: 1 };
    data::put(&store, task, object(3 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let gate = Gate { secret: None, fingerprint: FP, tls: Some(worker.data_port(true).unwrap()) };
    tokio::spawn(data::serve(listener, Arc::clone(&store), gate));

    let got = fetcher(Some(worker.clone())).fetch(&address, &[task]).await.expect("a TLS fetch");
    assert_eq!(got[0].as_ref().unwrap().archived_bytes().unwrap(), object(3 << 20).archived_bytes().unwrap());

    let err = fetcher(None).fetch(&address, &[task]).await.err().expect("a plain fetch is refused");
    assert!(err.to_string().contains("speaks TLS only"), "{err}");
    let bare = PeerTls::new(&pki.files(false)).unwrap();
    let err = fetcher(Some(bare)).fetch(&address, &[task]).await.err().expect("no certificate: refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    // Another CA's holder is refused by the fetcher.
    let other = Ca::new("another CA");
    let other_ca = other.write(&pki.dir.0, "other-ca.pem");
    let trusting_other = TlsFiles { ca: Some(other_ca), ..pki.files(true) };
    let err = fetcher(Some(PeerTls::new(&trusting_other).unwrap())).fetch(&address, &[task]).await.err();
    let err = err.expect("a holder of another CA is refused");
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
    // The port still serves.
    assert!(fetcher(Some(worker)).fetch(&address, &[task]).await.unwrap()[0].is_some());
}

#[test]
fn a_peer_that_stalls_in_the_tls_handshake_is_dropped_within_the_timeout_and_others_are_served() {
    use std::io::{Read, Write};
    let pki = Pki::new("stall");
    let server = pki.scheduler(false); // a handshake timeout of 2 s
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    // The start of a TLS record, and then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let started = std::time::Instant::now();
    connect(&server.url(), Some(pki.files(false))).expect("a TLS client is served meanwhile");
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the stalled peer was answered instead of dropped");
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(1500) && after < Duration::from_secs(5), "dropped after {after:?}");
}
