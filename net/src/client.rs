//! A client's link to a scheduler: the calls a `Client` makes, as messages,
//! and a mirror of the tasks it holds futures on.
//!
//! # Protocol
//!
//! ```text
//! client                                        scheduler
//!   Submit { request, nodes }              ───►  driver.submit; the client's references counted
//!                                          ◄───  Submitted { request, ids } | Rejected { request, message }
//!                                          ◄───  Status [(id, Finished | Failed)]   for its futures, as they end
//!   Retain / Release / Cancel [id, …]      ───►  (only ids it holds references to)
//!   Gather { request, ids }                ───►
//!                                          ◄───  Objects { request, [Object | Failed | Missing | At(address) | Again] }
//!   DataRequest { ids } to the worker at each `At` address (crate::data) ◄──► DataReply (+ streamed chunks)
//!                                          ◄───  Workers { count, nthreads }      when workers come and go
//!   Names [name, …]                        ───►  once, after the handshake: the registry's task names
//!   Monitor { request, since, max }        ───►
//!                                          ◄───  Monitor { request, snapshot }    the scheduler's task events
//!   States { request, ids }                ───►
//!                                          ◄───  States { request, states }       where each of ids stands
//!   Heartbeat                              ◄──►  Heartbeat                        every heartbeat period
//! ```
//!
//! # The mirror
//!
//! The link keeps, per task it holds futures on, the number of references,
//! the key and the status the scheduler last reported; waiting for tasks
//! is waiting on this mirror (a condition variable), so `wait`, `wait_any`
//! and `as_completed` cost no round trip. The connection's reader updates
//! it: it registers a submission's ids when it reads `Submitted` (before
//! any `Status` that follows it on the connection, so no news is lost),
//! then applies the `Status` messages.
//!
//! # Invariants
//!
//! - A lost scheduler (closed connection, silence past `dead_after`, a bad
//!   message) fails every pending and later call with
//!   [`ClientError::Lost`] — never a hang: every wait also watches the
//!   connection's state.
//! - Each future's reference is given back exactly once (`Release`), and
//!   the scheduler releases everything this client held when it goes.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::driver::{DriverError, GraphNode, NodeArg, Status};
use shoal_core::object::{Obj, RawArchive};
use shoal_core::scheduler::{Dep, SeededState, TaskId, TaskState};
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::auth::{self, Secret};
use crate::conn::{Incoming, Outgoing, write_loop};
use crate::data::Fetcher;
use crate::error::NetError;
use crate::monitor::{Monitored, snapshot_in};
use crate::stream::{self, Reader};
use crate::tls::PeerTls;
use crate::wire::{
    self, ArchivedToClientMsg, ArchivedWireGathered, ArchivedWireStatus, FromClientMsg, MAX_ITEMS, ObjectsOut, Role,
    WireArg, WireDep, WireNode, WireTask,
};

/// What a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// As the driver of a local mode would fail (a task failed, the
    /// client was shut down, a malformed graph).
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The connection to the scheduler is gone.
    #[error("{0}")]
    Lost(String),
    /// The scheduler refused a submission, or a value could not be sent.
    #[error("{0}")]
    Refused(String),
}

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `tcp://host:port`, or `tls://host:port` (then `tls` is required).
    pub url: String,
    /// TLS: whom to trust and what to present (see [`crate::tls`]); for a
    /// `tls://` address only.
    pub tls: Option<PeerTls>,
    /// The cluster's shared secret, if it has one.
    pub secret: Option<Secret>,
    /// This binary's registry fingerprint.
    pub fingerprint: u128,
    /// How long connecting and the handshake may take.
    pub connect_timeout: Duration,
    /// How long the scheduler may stay silent before it is taken as gone.
    pub dead_after: Duration,
}

/// A pending request's bookkeeping.
enum Pending {
    Submit { keys: Vec<Key>, wanted: Vec<bool> },
    Gather,
    Monitor,
    States,
}

/// A request's answer.
enum Answer {
    Submitted(Vec<TaskId>),
    Rejected(String),
    Objects(Vec<Gathered>),
    Monitor(Box<Monitored>),
    States(Vec<u8>),
}

/// One answer of a gather.
enum Gathered {
    /// The result (small ones come from the scheduler), or why there is none.
    Here(Result<Obj, ClientError>),
    /// Held by the worker at this data address: fetched from there.
    At(String),
    /// Not available now (being computed again): asked again shortly.
    Again,
}

/// The first pause before a gather asks again for results being computed
/// again (after their holder was lost); it doubles up to [`MAX_REGATHER_PAUSE`].
const FIRST_REGATHER_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between two gathers of results being computed again.
const MAX_REGATHER_PAUSE: Duration = Duration::from_millis(500);

struct Entry {
    refs: u32,
    key: Key,
    status: Status,
    /// The result, when it came with the news (small results).
    result: Option<Obj>,
}

#[derive(Default)]
struct Mirror {
    /// Looked up once per task's news and per wait: a fast seeded hasher
    /// (SipHash was a third of the reader's time on a map of no-ops).
    tasks: HashMap<TaskId, Entry, SeededState>,
    pending: HashMap<u64, Pending>,
    answers: HashMap<u64, Answer>,
    next_request: u64,
    /// Why the connection is gone.
    lost: Option<String>,
    closed: bool,
    /// The scheduler's first `Workers` message arrived.
    workers_known: bool,
    workers: u32,
    nthreads: u32,
    /// Threads blocked on `changed` now: the reader wakes them only if
    /// there are any (a notify is a system call, once per message).
    waiters: usize,
}

impl Mirror {
    fn stopped(&self) -> Option<ClientError> {
        if self.closed {
            return Some(ClientError::Driver(DriverError::Closed));
        }
        self.lost.clone().map(ClientError::Lost)
    }
}

struct Inner {
    mirror: Mutex<Mirror>,
    changed: Condvar,
    tx: UnboundedSender<Outgoing>,
    /// Released tasks, sent in batches by the connection's thread: dropping
    /// a list of futures costs a message or a few, not one per future.
    /// (Only releases wait: a delayed release never frees a result early.)
    releases: UnboundedSender<TaskId>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Mirror> {
        shoal_core::driver::wait::lock(&self.mirror)
    }

    /// Blocks on `changed` (at most `timeout`), counted in
    /// [`Mirror::waiters`] meanwhile.
    fn wait<'a>(&self, mut mirror: MutexGuard<'a, Mirror>, timeout: Option<Duration>) -> MutexGuard<'a, Mirror> {
        mirror.waiters += 1;
        let mut mirror = match timeout {
            None => self.changed.wait(mirror).unwrap_or_else(|p| p.into_inner()),
            Some(t) => self.changed.wait_timeout(mirror, t).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
        };
        mirror.waiters -= 1;
        mirror
    }
}

/// A connected client link. Dropping it closes the connection.
pub struct Remote {
    inner: Arc<Inner>,
    /// The connection's runtime: fetches from workers' data ports run there.
    handle: tokio::runtime::Handle,
    fetcher: Arc<Fetcher>,
    /// The connection's runtime thread; it ends with the connection.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Remote {
    /// Connects to a scheduler and shakes hands (within the config's
    /// timeout).
    pub fn connect(config: ClientConfig) -> Result<Remote, NetError> {
        let endpoint = crate::parse_url(&config.url)?;
        let address = endpoint.address.clone();
        let tls = match (endpoint.tls, &config.tls) {
            (true, Some(tls)) => Some((tls.scheduler()?.connector, tls.scheduler_name(&endpoint.host)?)),
            (false, None) => None,
            (true, None) => {
                return Err(NetError::Config(format!(
                    "{:?} is a tls:// address: give the CA to trust ({} or the TLS options)",
                    config.url,
                    crate::tls::ENV_TLS_CA
                )));
            }
            (false, Some(_)) => {
                return Err(NetError::Config(format!(
                    "TLS settings are given but {:?} is not a tls:// address: write tls://host:port",
                    config.url
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let connect = async {
            let tcp = tokio::time::timeout(config.connect_timeout, stream::tcp(&address))
                .await
                .map_err(|_| NetError::Timeout { what: "connecting to the scheduler", after: config.connect_timeout })?
                .map_err(|e| NetError::Config(format!("cannot connect to the scheduler at {address}: {e}")))?;
            let stream = tokio::time::timeout(config.connect_timeout, stream::secure(tcp, tls, &address))
                .await
                .map_err(|_| NetError::Timeout { what: "for the TLS handshake", after: config.connect_timeout })??;
            let (mut reader, mut writer) = stream.framed(address.clone(), config.dead_after);
            let me = auth::Introduce { role: Role::Client, fingerprint: config.fingerprint, nthreads: 0, data_port: 0 };
            let welcome = auth::connect(&mut reader, &mut writer, me, config.secret.as_ref(), config.connect_timeout)
                .await
                .map_err(|e| stream::explain_io(&address, e))?;
            Ok::<_, NetError>((reader, writer, welcome))
        };
        let (reader, writer, welcome) = runtime.block_on(connect)?;
        let handle = runtime.handle().clone();
        let me = auth::Introduce { role: Role::Client, fingerprint: config.fingerprint, nthreads: 0, data_port: 0 };
        let fetcher = Arc::new(Fetcher::new(me, config.secret.clone(), config.tls.clone(), config.dead_after));
        let (tx, rx) = mpsc::unbounded_channel();
        let (releases, released) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner { mirror: Mutex::new(Mirror::default()), changed: Condvar::new(), tx, releases });
        let beat = wire::to_bytes(&FromClientMsg::Heartbeat)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let for_thread = Arc::clone(&inner);
        let thread = std::thread::Builder::new().name("shoal-client-net".into()).spawn(move || {
            runtime.block_on(async move {
                let writer = tokio::spawn(write_loop(writer, rx, beat, welcome.heartbeat));
                let batcher = tokio::spawn(batch_releases(released, for_thread.tx.clone()));
                let read = read_loop(&for_thread, reader);
                let reason = tokio::select! {
                    reason = read => reason,
                    _ = stopped => "the client was shut down".to_string(),
                };
                {
                    let mut mirror = for_thread.lock();
                    mirror.lost.get_or_insert(reason);
                }
                for_thread.changed.notify_all();
                batcher.abort();
                writer.abort();
            });
        })?;
        let remote = Remote { inner, handle, fetcher, stop: Mutex::new(Some(stop)), thread: Mutex::new(Some(thread)) };
        // The scheduler has no user code: it names tasks (on its dashboard)
        // with the names of the clients' registry.
        let names: Vec<String> = shoal_core::registry::entries()
            .iter()
            .take(wire::MAX_NAMES)
            .map(|e| {
                let full = e.name();
                full.rsplit("::").next().unwrap_or(full).chars().take(wire::MAX_NAME).collect()
            })
            .collect();
        remote.send(&FromClientMsg::Names(names), Vec::new()).map_err(|e| NetError::Config(e.to_string()))?;
        // The scheduler tells a new client its workers at once: wait for
        // that, so `nthreads` is right from the start.
        let deadline = Instant::now() + config.connect_timeout;
        match remote.wait_until(Some(deadline), |m| m.workers_known.then_some(())) {
            Ok(Some(())) => Ok(remote),
            Ok(None) => {
                Err(NetError::Timeout { what: "for the scheduler's list of workers", after: config.connect_timeout })
            }
            Err(e) => Err(NetError::Lost { peer: address, reason: e.to_string() }),
        }
    }

    fn send(&self, message: &FromClientMsg, blobs: Vec<Obj>) -> Result<(), ClientError> {
        let body = wire::to_bytes(message).map_err(|e| ClientError::Refused(e.to_string()))?;
        // Refused here rather than by the writer, which would have to drop
        // the connection: the frame limit bounds one message (a graph).
        let frame = body.len() + 5 + 8 * blobs.len();
        if frame > crate::frame::MAX_FRAME {
            return Err(ClientError::Refused(format!(
                "this submission takes {frame} bytes, over the {} MiB a message may take; submit the graph in \
                 smaller parts (a lazy graph of about a million tasks fits)",
                crate::frame::MAX_FRAME >> 20
            )));
        }
        self.inner.tx.send(Outgoing::Message { body, blobs }).map_err(|_| self.lost())
    }

    fn lost(&self) -> ClientError {
        self.inner.lock().stopped().unwrap_or_else(|| ClientError::Lost("the connection is closed".into()))
    }

    /// Waits for the answer to `request`.
    fn answer(&self, request: u64) -> Result<Answer, ClientError> {
        let mut mirror = self.inner.lock();
        loop {
            if let Some(answer) = mirror.answers.remove(&request) {
                return Ok(answer);
            }
            if let Some(e) = mirror.stopped() {
                mirror.pending.remove(&request);
                return Err(e);
            }
            mirror = self.inner.wait(mirror, None);
        }
    }

    /// Submits a graph (topologically ordered): one id per node; each
    /// wanted one carries one reference of this client.
    pub fn submit(&self, nodes: Vec<GraphNode>) -> Result<Vec<TaskId>, ClientError> {
        let mut out = ObjectsOut::default();
        let keys: Vec<Key> = nodes.iter().map(|n| n.key).collect();
        let wanted: Vec<bool> = nodes.iter().map(|n| n.wanted).collect();
        let dep = |d: &Dep| match *d {
            Dep::Node(i) => WireDep::Node(i as u32),
            Dep::Task(id) => WireDep::Task(id.into()),
        };
        let mut wire_nodes = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let args = node
                .args
                .iter()
                .map(|arg| {
                    Ok(match arg {
                        NodeArg::Value(obj) => WireArg::Value(out.object(obj).map_err(ClientError::Refused)?),
                        NodeArg::Dep(d) => WireArg::Dep(dep(d)),
                        NodeArg::List(ds) => WireArg::List(ds.iter().map(dep).collect()),
                    })
                })
                .collect::<Result<Vec<_>, ClientError>>()?;
            wire_nodes.push(WireNode {
                key: node.key.into(),
                args,
                wanted: node.wanted,
                priority: node.priority,
                retries: node.retries,
                item: node.item,
            });
        }
        let pending = Pending::Submit { keys, wanted };
        match self.request(pending, out.blobs, |request| FromClientMsg::Submit { request, nodes: wire_nodes })? {
            Answer::Submitted(ids) => Ok(ids),
            Answer::Rejected(message) => Err(ClientError::Refused(message)),
            _ => Err(ClientError::Lost("the scheduler answered a submission wrongly".into())),
        }
    }

    /// Sends a request made with its number (and the objects it carries),
    /// and waits for its answer.
    fn request(
        &self,
        pending: Pending,
        blobs: Vec<Obj>,
        message: impl FnOnce(u64) -> FromClientMsg,
    ) -> Result<Answer, ClientError> {
        let request = {
            let mut mirror = self.inner.lock();
            if let Some(e) = mirror.stopped() {
                return Err(e);
            }
            mirror.next_request += 1;
            let request = mirror.next_request;
            mirror.pending.insert(request, pending);
            request
        };
        self.send(&message(request), blobs)?;
        self.answer(request)
    }

    /// The scheduler's task events (run records from sequence number
    /// `since`, at most `max`, the newest), its workers and the results it
    /// holds: one round trip.
    pub fn monitor(&self, since: u64, max: usize) -> Result<Monitored, ClientError> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        match self.request(Pending::Monitor, Vec::new(), |request| FromClientMsg::Monitor { request, since, max })? {
            Answer::Monitor(m) => Ok(*m),
            _ => Err(ClientError::Lost("the scheduler answered a monitor request wrongly".into())),
        }
    }

    /// Where the tasks stand in the scheduler (`None`: forgotten), in
    /// messages of up to [`MAX_ITEMS`] tasks.
    pub fn states(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskState>>, ClientError> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(MAX_ITEMS) {
            let tasks: Vec<WireTask> = part.iter().map(|&id| id.into()).collect();
            match self.request(Pending::States, Vec::new(), |request| FromClientMsg::States { request, tasks })? {
                Answer::States(states) if states.len() == part.len() => {
                    out.extend(states.into_iter().map(wire::state_of))
                }
                _ => return Err(ClientError::Lost("the scheduler answered a question of states wrongly".into())),
            }
        }
        Ok(out)
    }

    /// How many of `ids` are finished (in memory, failed, or released or
    /// forgotten after they ran), as the scheduler knows them: those this
    /// client's mirror knows finished are not asked for.
    pub fn count_finished(&self, ids: &[TaskId]) -> Result<usize, ClientError> {
        let unknown: Vec<TaskId> = {
            let mirror = self.inner.lock();
            ids.iter().filter(|id| !mirror.tasks.get(id).is_some_and(|e| e.status.is_finished())).copied().collect()
        };
        let pending = self
            .states(&unknown)?
            .into_iter()
            .filter(|s| matches!(s, Some(TaskState::Waiting | TaskState::Ready | TaskState::Processing)))
            .count();
        Ok(ids.len() - pending)
    }

    /// One reference less to the task (a future dropped).
    pub fn release(&self, id: TaskId) {
        {
            let mut mirror = self.inner.lock();
            let Some(entry) = mirror.tasks.get_mut(&id) else { return };
            entry.refs -= 1;
            if entry.refs == 0 {
                mirror.tasks.remove(&id);
            }
        }
        // A lost connection released everything already.
        let _ = self.inner.releases.send(id);
    }

    /// One reference more (a future cloned).
    pub fn retain(&self, id: TaskId) {
        if let Some(entry) = self.inner.lock().tasks.get_mut(&id) {
            entry.refs += 1;
        }
        let _ = self.send(&FromClientMsg::Retain(vec![id.into()]), Vec::new());
    }

    /// Cancels the task.
    pub fn cancel(&self, id: TaskId) {
        let _ = self.send(&FromClientMsg::Cancel(vec![id.into()]), Vec::new());
    }

    /// The task's status as last reported.
    pub fn status(&self, id: TaskId) -> Status {
        self.inner.lock().tasks.get(&id).map(|e| e.status.clone()).unwrap_or(Status::Pending)
    }

    /// The task's key, while this client holds a future on it.
    pub fn key(&self, id: TaskId) -> Option<Key> {
        self.inner.lock().tasks.get(&id).map(|e| e.key)
    }

    /// Workers connected, and their threads in all.
    pub fn workers(&self) -> (u32, u32) {
        let mirror = self.inner.lock();
        (mirror.workers, mirror.nthreads)
    }

    /// Waits until `check` answers or the deadline passes (`Ok(None)`).
    fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&Mirror) -> Option<T>,
    ) -> Result<Option<T>, ClientError> {
        let mut mirror = self.inner.lock();
        loop {
            if let Some(answer) = check(&mirror) {
                return Ok(Some(answer));
            }
            if let Some(e) = mirror.stopped() {
                return Err(e);
            }
            mirror = match deadline {
                None => self.inner.wait(mirror, None),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => self.inner.wait(mirror, Some(t)),
                    _ => return Ok(None),
                },
            };
        }
    }

    /// Blocks until the task finished or the deadline passed.
    pub fn wait(&self, id: TaskId, deadline: Option<Instant>) -> Result<Status, ClientError> {
        let status =
            self.wait_until(deadline, |m| m.tasks.get(&id).map(|e| e.status.clone()).filter(Status::is_finished))?;
        Ok(status.unwrap_or(Status::Pending))
    }

    /// Blocks until one of the tasks finished or the deadline passed; the
    /// indices of the finished ones.
    pub fn wait_any(&self, ids: &[TaskId], deadline: Option<Instant>) -> Result<Vec<usize>, ClientError> {
        let found = self.wait_until(deadline, |m| {
            let done: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| m.tasks.get(id).is_some_and(|e| e.status.is_finished()))
                .map(|(i, _)| i)
                .collect();
            (!done.is_empty() || ids.is_empty()).then_some(done)
        })?;
        Ok(found.unwrap_or_default())
    }

    /// Blocks until `ids[from..]` finished in order, one failed, or the
    /// deadline passed (as the driver's `wait_prefix`).
    pub fn wait_prefix(
        &self,
        ids: &[TaskId],
        from: usize,
        deadline: Option<Instant>,
    ) -> Result<(usize, Option<Arc<TaskFailure>>), ClientError> {
        let mut cursor = from;
        let answer = self.wait_until(deadline, |m| {
            while let Some(id) = ids.get(cursor) {
                match m.tasks.get(id).map(|e| &e.status) {
                    Some(Status::Finished) => cursor += 1,
                    Some(Status::Failed(f)) => return Some((cursor, Some(Arc::clone(f)))),
                    _ => return None,
                }
            }
            Some((cursor, None))
        })?;
        Ok(answer.unwrap_or((cursor, None)))
    }

    /// The results of finished tasks, in order: small ones came with their
    /// news; the others are gathered: the scheduler sends small ones and
    /// names the worker holding each larger one, which this client fetches
    /// from that worker's data port directly. A result whose holder was
    /// lost (the fetch fails, or the scheduler says it is being computed
    /// again) is asked for again after a pause, until it is there or the
    /// scheduler is lost.
    pub fn results(&self, ids: &[TaskId]) -> Result<Vec<Obj>, ClientError> {
        let mut objects: Vec<Option<Obj>> = {
            let mirror = self.inner.lock();
            ids.iter().map(|id| mirror.tasks.get(id).and_then(|e| e.result.clone())).collect()
        };
        let mut todo: Vec<usize> = (0..ids.len()).filter(|&i| objects[i].is_none()).collect();
        let mut pause = FIRST_REGATHER_PAUSE;
        while !todo.is_empty() {
            let mut again = Vec::new();
            for part in todo.chunks(MAX_ITEMS) {
                let items = self.gather(part.iter().map(|&i| ids[i]).collect())?;
                let mut at: HashMap<String, Vec<usize>> = HashMap::new();
                for (&i, item) in part.iter().zip(items) {
                    match item {
                        Gathered::Here(result) => objects[i] = Some(result?),
                        Gathered::At(address) => at.entry(address).or_default().push(i),
                        Gathered::Again => again.push(i),
                    }
                }
                for (address, held) in at {
                    match self.fetch(&address, held.iter().map(|&i| ids[i]).collect()) {
                        Ok(fetched) => {
                            for (i, obj) in held.into_iter().zip(fetched) {
                                match obj {
                                    Some(obj) => objects[i] = Some(obj),
                                    None => again.push(i),
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!("could not fetch results from the worker at {address}: {e}; asking again");
                            again.extend(held);
                        }
                    }
                }
            }
            if !again.is_empty() {
                if let Some(e) = self.inner.lock().stopped() {
                    return Err(e);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_REGATHER_PAUSE);
            }
            todo = again;
        }
        Ok(objects.into_iter().flatten().collect())
    }

    /// One gather request (at most [`MAX_ITEMS`] tasks).
    fn gather(&self, tasks: Vec<TaskId>) -> Result<Vec<Gathered>, ClientError> {
        let n = tasks.len();
        let tasks: Vec<WireTask> = tasks.into_iter().map(WireTask::from).collect();
        match self.request(Pending::Gather, Vec::new(), |request| FromClientMsg::Gather { request, tasks })? {
            Answer::Objects(items) if items.len() == n => Ok(items),
            _ => Err(ClientError::Lost("the scheduler answered a gather wrongly".into())),
        }
    }

    /// Fetches results from a worker's data port, on the connection's
    /// runtime (this thread may be any, even inside another runtime).
    fn fetch(&self, address: &str, tasks: Vec<TaskId>) -> Result<Vec<Option<Obj>>, NetError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let fetcher = Arc::clone(&self.fetcher);
        let address = address.to_string();
        self.handle.spawn(async move {
            let _ = tx.send(fetcher.fetch(&address, &tasks).await);
        });
        // The task is dropped unrun when the connection's runtime is gone.
        rx.recv().unwrap_or_else(|_| {
            Err(NetError::Lost { peer: "the scheduler".into(), reason: "the client's connection is closed".into() })
        })
    }

    /// Closes the connection: every later call fails with `Closed`.
    pub fn shutdown(&self) {
        self.inner.lock().closed = true;
        self.inner.changed.notify_all();
        if let Some(stop) = shoal_core::driver::wait::lock(&self.stop).take() {
            let _ = stop.send(());
        }
        let thread = shoal_core::driver::wait::lock(&self.thread).take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sends the released tasks in batches: everything released by the time
/// this task runs goes in one message (up to [`MAX_ITEMS`]).
async fn batch_releases(mut released: mpsc::UnboundedReceiver<TaskId>, tx: UnboundedSender<Outgoing>) {
    while let Some(first) = released.recv().await {
        let mut ids = vec![WireTask::from(first)];
        while ids.len() < MAX_ITEMS
            && let Ok(id) = released.try_recv()
        {
            ids.push(id.into());
        }
        match wire::to_bytes(&FromClientMsg::Release(ids)) {
            Ok(body) => {
                if tx.send(Outgoing::message(body)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("could not encode releases: {e}"),
        }
    }
}

/// Reads the scheduler's messages into the mirror until the connection
/// ends; why it ended.
async fn read_loop(inner: &Inner, mut reader: Reader) -> String {
    let peer = reader.peer.clone();
    loop {
        let message = match reader.message_or_end().await {
            Ok(Some(m)) => m,
            Ok(None) => return format!("the scheduler at {peer} closed the connection"),
            Err(e) => return format!("lost the connection to the scheduler at {peer}: {e}"),
        };
        if let Err(e) = apply(inner, message) {
            let reason = format!("the scheduler at {peer} broke the protocol: {e}");
            tracing::warn!("{reason}");
            let _ = inner.tx.send(Outgoing::Close(e.to_string()));
            return reason;
        }
    }
}

/// Applies one message from the scheduler to the mirror.
fn apply(inner: &Inner, message: Incoming) -> Result<(), NetError> {
    let Incoming { body, mut objects } = message;
    let msg = wire::access::<wire::ToClientMsg>(&body)?;
    // Objects are taken (validated for their index) before the lock.
    let monitored = match msg {
        ArchivedToClientMsg::Monitor { request, snapshot } => Some((request.to_native(), snapshot_in(snapshot))),
        _ => None,
    };
    let gathered: Option<(u64, Vec<Gathered>)> = match msg {
        ArchivedToClientMsg::Objects { request, items } => {
            let items = items
                .iter()
                .map(|item| {
                    Ok(match item {
                        ArchivedWireGathered::Object(obj) => Gathered::Here(Ok(objects.take(obj)?)),
                        ArchivedWireGathered::Failed(f) => {
                            Gathered::Here(Err(ClientError::Driver(DriverError::Task(Arc::new(wire::failure_in(f))))))
                        }
                        ArchivedWireGathered::Missing(message) => Gathered::Here(Err(ClientError::Refused(format!(
                            "the scheduler has no result: {}",
                            message.as_str()
                        )))),
                        ArchivedWireGathered::At(address) => Gathered::At(address.as_str().to_string()),
                        ArchivedWireGathered::Again(_) => Gathered::Again,
                    })
                })
                .collect::<Result<Vec<_>, NetError>>()?;
            Some((request.to_native(), items))
        }
        _ => None,
    };
    objects.finish()?;
    let mut mirror = inner.lock();
    match msg {
        ArchivedToClientMsg::Heartbeat => return Ok(()),
        ArchivedToClientMsg::Submitted { request, ids } => {
            let request = request.to_native();
            let ids: Vec<TaskId> = ids.iter().map(TaskId::from).collect();
            match mirror.pending.remove(&request) {
                Some(Pending::Submit { keys, wanted }) if keys.len() == ids.len() => {
                    for ((id, key), wanted) in ids.iter().zip(keys).zip(wanted) {
                        if wanted {
                            let entry = mirror.tasks.entry(*id).or_insert(Entry {
                                refs: 0,
                                key,
                                status: Status::Pending,
                                result: None,
                            });
                            entry.refs += 1;
                        }
                    }
                    mirror.answers.insert(request, Answer::Submitted(ids));
                }
                _ => return Err(NetError::protocol("an answer to a submission never made")),
            }
        }
        ArchivedToClientMsg::Rejected { request, message } => {
            let request = request.to_native();
            mirror.pending.remove(&request);
            mirror.answers.insert(request, Answer::Rejected(message.as_str().to_string()));
        }
        ArchivedToClientMsg::Status(news) => {
            for entry in news.iter() {
                let (task, status) = (&entry.0, &entry.1);
                if let Some(e) = mirror.tasks.get_mut(&TaskId::from(task)) {
                    match status {
                        ArchivedWireStatus::Finished(small) => {
                            e.status = Status::Finished;
                            e.result = small
                                .as_ref()
                                .map(|bytes| Arc::new(RawArchive::new(wire::aligned(bytes.as_slice()))) as Obj);
                        }
                        ArchivedWireStatus::Failed(f) => e.status = Status::Failed(Arc::new(wire::failure_in(f))),
                    }
                }
            }
        }
        ArchivedToClientMsg::Objects { .. } => {
            if let Some((request, items)) = gathered {
                if !matches!(mirror.pending.remove(&request), Some(Pending::Gather)) {
                    return Err(NetError::protocol("objects for a gather never asked for"));
                }
                mirror.answers.insert(request, Answer::Objects(items));
            }
        }
        ArchivedToClientMsg::Monitor { .. } => {
            if let Some((request, m)) = monitored {
                if !matches!(mirror.pending.remove(&request), Some(Pending::Monitor)) {
                    return Err(NetError::protocol("a monitor answer never asked for"));
                }
                mirror.answers.insert(request, Answer::Monitor(Box::new(m)));
            }
        }
        ArchivedToClientMsg::States { request, states } => {
            let request = request.to_native();
            if !matches!(mirror.pending.remove(&request), Some(Pending::States)) {
                return Err(NetError::protocol("states never asked for"));
            }
            mirror.answers.insert(request, Answer::States(states.to_vec()));
        }
        ArchivedToClientMsg::Workers { count, nthreads } => {
            mirror.workers_known = true;
            mirror.workers = count.to_native();
            mirror.nthreads = nthreads.to_native();
        }
    }
    // Whoever waits does so under the lock, counted: none now means none
    // can miss this change (a later waiter checks the mirror first).
    let waiting = mirror.waiters > 0;
    drop(mirror);
    if waiting {
        inner.changed.notify_all();
    }
    Ok(())
}
