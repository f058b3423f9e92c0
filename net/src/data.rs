//! Peer-to-peer transfers: each worker serves the results it holds on a
//! data port; a worker that needs an input held elsewhere, and a client
//! that gathers a result, fetch it from there directly — never through the
//! scheduler.
//!
//! # Protocol
//!
//! ```text
//! fetcher (worker or client)                      holder's data port (a worker)
//!   the handshake of crate::auth (version, secret, fingerprint) ─►   ◄─ as the scheduler's
//!   DataRequest { tasks }                     ───►
//!                                             ◄───  DataReply { [Some(object) | None] } + CHUNK frames
//!   DataRequest { tasks } …                   (the connection is kept for the next request)
//! ```
//!
//! - **Where.** A worker binds its data port on the address it reaches the
//!   scheduler from (loopback when the scheduler is on loopback) and
//!   announces the port in its hello; the scheduler names the holder's
//!   address (the IP it sees the worker connect from, and that port) in
//!   each run input and gather answer that lives there.
//! - **Streamed, validated on receipt.** Objects over
//!   [`crate::wire::INLINE_MAX`] follow the reply as CHUNK frames (no
//!   object sits whole in a frame); the receiver checks every length
//!   against the archive limit before reading a byte and copies each object
//!   into aligned memory once; the fetching worker keeps it in its store,
//!   so later runs there read it without another transfer.
//! - **Bounded.** Connecting and the handshake take at most
//!   [`CONNECT_TIMEOUT`]; every read at most the fetcher's `idle` (chunks
//!   count): a fetch from a dead or cut-off peer fails, it never hangs. A
//!   kept connection that fails is dialled again once.
//! - **TLS** in a TLS cluster (see [`crate::tls`]): the data port speaks
//!   TLS with the worker's certificate; fetchers check it against the CA
//!   (not its name), and present theirs, required when the cluster is
//!   mutual. The handshake above runs inside TLS.
//! - **Landing.** A fetcher lands what it receives as its
//!   [`Landing`] says: a machine's agent reads large objects straight into
//!   memory files of their own, warm ones when ready (see
//!   [`crate::conn`]), a client on the heap.
//! - `None` in a reply: the holder does not hold it (released, or lost and
//!   started again); the fetcher treats it as a failed fetch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_core::object::Obj;
use shoal_core::scheduler::TaskId;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{self, Accept, Introduce, Secret};
use crate::conn::{Landing, Outgoing};
use crate::error::{NetError, Result};
use crate::stream::{self, Reader, Writer};
use crate::tls::{PeerTls, ServerTls};
use crate::wire::{self, DataReply, DataRequest, MAX_ITEMS, ObjectsOut, WireTask};

/// How long connecting to a data port and its handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a data port keeps a connection nobody asks anything on.
pub const SERVE_IDLE: Duration = Duration::from_secs(60);

pub use crate::store::{Store, clear, drop_all, get, put};

/// Bytes of results this process's data port served so far (the
/// worker's figures carry it: how much left this machine).
pub static SERVED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes of results this process fetched from data ports so far.
pub static FETCHED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Microseconds spent fetching them (each request, first byte asked to
/// last byte in; overlapping fetches each count their own time).
pub static FETCH_MICROS: AtomicU64 = AtomicU64::new(0);

/// Bytes of the objects present in a reply.
fn bytes_of(objects: &[Option<Obj>]) -> u64 {
    objects.iter().flatten().map(|o| o.archived_bytes().map_or(0, |b| b.len() as u64)).sum()
}

/// Who may fetch from a data port: peers with the cluster's secret and
/// fingerprint.
#[derive(Clone)]
pub struct Gate {
    /// The cluster's secret, if it has one.
    pub secret: Option<Secret>,
    /// The fingerprint every fetcher must have (this worker's).
    pub fingerprint: u128,
    /// TLS, in a TLS cluster.
    pub tls: Option<ServerTls>,
}

/// Serves `store` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, store: Store, gate: Gate) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("data port: could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (store, gate) = (Arc::clone(&store), gate.clone());
        tokio::spawn(async move {
            match serve_one(stream, addr, store, gate).await {
                Ok(()) => tracing::debug!("data port: {addr} done"),
                Err(e) => tracing::warn!("data port: {addr} dropped: {e}"),
            }
        });
    }
}

async fn serve_one(stream: TcpStream, addr: SocketAddr, store: Store, gate: Gate) -> Result<()> {
    let stream = stream::accept(stream, gate.tls.as_ref(), CONNECT_TIMEOUT).await?;
    let (mut reader, mut writer) = stream.framed(addr.to_string(), SERVE_IDLE);
    let settings = Accept { secret: gate.secret.as_ref(), timeout: CONNECT_TIMEOUT, heartbeat: SERVE_IDLE };
    let fingerprint = gate.fingerprint;
    auth::accept(&mut reader, &mut writer, settings, |info| {
        if info.fingerprint == fingerprint {
            Ok(0)
        } else {
            Err(format!(
                "registry fingerprint mismatch: the fetcher (pid {}) has {:032x}, this worker {fingerprint:032x}",
                info.pid, info.fingerprint
            ))
        }
    })
    .await?;
    loop {
        let Some(message) = (match reader.message_or_end().await {
            Err(NetError::Lost { .. }) => return Ok(()), // idle: a kept connection nobody uses
            other => other?,
        }) else {
            return Ok(());
        };
        message.objects.finish()?;
        let request = wire::access::<DataRequest>(&message.body)?;
        if request.tasks.len() > MAX_ITEMS {
            return Err(NetError::protocol(format!("a request of {} results, over {MAX_ITEMS}", request.tasks.len())));
        }
        let tasks: Vec<TaskId> = request.tasks.iter().map(TaskId::from).collect();
        // A spilled result is read back first: blocking I/O, off the
        // runtime's thread.
        let held = Arc::clone(&store);
        let objects: Vec<Option<Obj>> =
            tokio::task::spawn_blocking(move || tasks.into_iter().map(|t| get(&held, t)).collect())
                .await
                .map_err(|e| NetError::protocol(format!("reading results for a peer failed: {e}")))?;
        SERVED_BYTES.fetch_add(bytes_of(&objects), Ordering::Relaxed);
        let mut out = ObjectsOut::default();
        let items = objects.iter().map(|o| o.as_ref().and_then(|o| out.object(o).ok())).collect();
        let body = wire::to_bytes(&DataReply { items })?;
        writer.send(&Outgoing::Message { body, blobs: out.blobs }).await?;
        writer.flush().await?;
    }
}

type Conn = (Reader, Writer);

/// The fetching side: connections to data ports, kept for the next fetch.
pub struct Fetcher {
    me: Introduce,
    secret: Option<Secret>,
    tls: Option<PeerTls>,
    idle: Duration,
    landing: Landing,
    kept: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Fetcher {
    /// A fetcher that introduces itself as `me`, proves `secret`, speaks
    /// TLS when given it, and gives a silent holder `idle` before it fails
    /// the fetch.
    pub fn new(me: Introduce, secret: Option<Secret>, tls: Option<PeerTls>, idle: Duration) -> Fetcher {
        Fetcher { me, secret, tls, idle, landing: Landing::Heap, kept: Mutex::new(HashMap::new()) }
    }

    /// The same fetcher, landing the large objects it receives as `landing`
    /// says (on the heap by default).
    pub fn landing(mut self, landing: Landing) -> Fetcher {
        self.landing = landing;
        self
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The results of `tasks` held at `address` (`None` for each it does
    /// not hold), in order.
    pub async fn fetch(&self, address: &str, tasks: &[TaskId]) -> Result<Vec<Option<Obj>>> {
        let kept = self.kept().get_mut(address).and_then(Vec::pop);
        if let Some(conn) = kept {
            match request(conn, tasks).await {
                Ok((conn, objects)) => {
                    self.kept().entry(address.to_string()).or_default().push(conn);
                    return Ok(objects);
                }
                Err(e) => tracing::debug!("a kept data connection to {address} failed ({e}); dialling again"),
            }
        }
        let conn = self.dial(address).await?;
        let (conn, objects) = request(conn, tasks).await?;
        self.kept().entry(address.to_string()).or_default().push(conn);
        Ok(objects)
    }

    async fn dial(&self, address: &str) -> Result<Conn> {
        let steps = async {
            let tcp = stream::tcp(address).await?;
            let peer = format!("the data port at {address}");
            let tls = match &self.tls {
                // Holders are checked against the CA, not by name (see
                // crate::tls); the name given is the address's IP.
                Some(t) => Some((t.data(), data_port_name(&tcp)?)),
                None => None,
            };
            let stream = stream::secure(tcp, tls, &peer).await?;
            let (mut reader, mut writer) = stream.framed(peer.clone(), self.idle);
            reader.landing = self.landing.clone();
            auth::connect(&mut reader, &mut writer, self.me, self.secret.as_ref(), CONNECT_TIMEOUT)
                .await
                .map_err(|e| stream::explain_io(&peer, e))?;
            Ok((reader, writer))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, steps).await {
            Ok(conn) => conn,
            Err(_) => Err(NetError::Timeout { what: "connecting to a worker's data port", after: CONNECT_TIMEOUT }),
        }
    }
}

fn data_port_name(tcp: &TcpStream) -> Result<rustls_pki_types::ServerName<'static>> {
    Ok(rustls_pki_types::ServerName::IpAddress(tcp.peer_addr()?.ip().into()))
}

/// One request on a connection (in parts of at most [`MAX_ITEMS`]).
async fn request(mut conn: Conn, tasks: &[TaskId]) -> Result<(Conn, Vec<Option<Obj>>)> {
    let started = std::time::Instant::now();
    let mut got = Vec::with_capacity(tasks.len());
    for part in tasks.chunks(MAX_ITEMS) {
        let (reader, writer) = &mut conn;
        let body = wire::to_bytes(&DataRequest { tasks: part.iter().map(|&t| WireTask::from(t)).collect() })?;
        writer.send(&Outgoing::message(body)).await?;
        writer.flush().await?;
        let reply = reader.message().await?;
        let mut objects = reply.objects;
        let answer = wire::access::<DataReply>(&reply.body)?;
        if answer.items.len() != part.len() {
            return Err(NetError::protocol(format!(
                "asked for {} results, the data port answered {}",
                part.len(),
                answer.items.len()
            )));
        }
        for item in answer.items.iter() {
            got.push(match item.as_ref() {
                Some(obj) => Some(objects.take(obj)?),
                None => None,
            });
        }
        objects.finish()?;
    }
    FETCHED_BYTES.fetch_add(bytes_of(&got), Ordering::Relaxed);
    FETCH_MICROS.fetch_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    Ok((conn, got))
}
