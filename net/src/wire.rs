//! The messages as they travel: rkyv types, validated on receipt with
//! `rkyv::access::<_, BoxedError>` (never unchecked), then turned into the
//! protocol's values ([`shoal_core::protocol`]) or the client's requests.
//!
//! An object travels as a [`WireObject`]: its archive inline when tiny
//! ([`ALWAYS_INLINE`]) or short ([`INLINE_MAX`], while the message's inline
//! bytes stay under [`INLINE_BUDGET`]), else as the index of an object
//! streamed after the message (see [`crate::frame`]). On receipt every streamed object must be
//! named exactly once, and every archive is copied into 16-byte aligned
//! memory before anything reads it.

use std::sync::Arc;

use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::failure::TaskError;
use shoal_core::object::{Obj, RawArchive};
use shoal_core::scheduler::{TaskId, TaskState};
use shoal_shm::{Segment, SegmentObject};

use crate::error::{NetError, Result};

/// Objects up to this many bytes travel inside their message.
pub const INLINE_MAX: usize = 64 << 10;
/// Inline object bytes per message; past it, objects over
/// [`ALWAYS_INLINE`] are streamed, so a message stays far under the frame
/// limit.
pub const INLINE_BUDGET: usize = 1 << 20;
/// Objects up to this many bytes always travel inline, whatever the budget:
/// streaming one would cost more than its bytes (a length and a frame), and
/// a large graph has one literal per leaf.
pub const ALWAYS_INLINE: usize = 1024;
/// The most characters of one failure text (a message, a cause) that
/// travel; a longer one is cut, so a failure always fits its frame.
pub const MAX_TEXT: usize = 16 << 10;
/// The most items (runs, results, tasks) in one message.
pub const MAX_ITEMS: usize = 4096;

/// Which side a connecting peer is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A program with a `Client`.
    Client,
    /// A machine's worker.
    Worker,
}

/// A connecting peer's first message (inside the HELLO frame).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Hello {
    /// Client or worker.
    pub role: Role,
    /// Its registry fingerprint (high word first).
    pub fingerprint: [u64; 2],
    /// A fresh random nonce: the scheduler proves it knows the secret over it.
    pub nonce: [u8; 32],
    /// Its process id (for logs).
    pub pid: u32,
    /// Worker threads (0 for a client).
    pub nthreads: u32,
    /// A worker's data port: peers fetch the results it holds there, at
    /// the address the scheduler sees it connect from (0: none).
    pub data_port: u16,
}

/// The scheduler's answer to a hello.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Challenge {
    /// The nonce the peer proves it knows the secret over.
    pub nonce: [u8; 32],
    /// Whether the scheduler has a secret (and checks the proof).
    pub secret: bool,
}

/// The peer's proof: HMAC-SHA256 of the secret over both nonces (zeros
/// when it has no secret).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Proof {
    /// The MAC.
    pub mac: [u8; 32],
}

/// The scheduler accepts the peer.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Welcome {
    /// The scheduler's own proof over both nonces (zeros without a secret).
    pub mac: [u8; 32],
    /// The peer's id at the scheduler.
    pub id: u32,
    /// How often each side sends a heartbeat, in milliseconds.
    pub heartbeat_ms: u32,
}

/// A task as the scheduler names it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireTask {
    /// `TaskId::index`.
    pub index: u32,
    /// `TaskId::generation`.
    pub generation: u32,
}

impl From<TaskId> for WireTask {
    fn from(id: TaskId) -> Self {
        WireTask { index: id.index, generation: id.generation }
    }
}

impl From<&ArchivedWireTask> for TaskId {
    fn from(t: &ArchivedWireTask) -> Self {
        TaskId { index: t.index.to_native(), generation: t.generation.to_native() }
    }
}

/// A task key.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireKey {
    /// `Key::func`.
    pub func: u32,
    /// `Key::token`.
    pub token: [u64; 2],
}

impl From<Key> for WireKey {
    fn from(k: Key) -> Self {
        WireKey { func: k.func, token: k.token }
    }
}

impl From<&ArchivedWireKey> for Key {
    fn from(k: &ArchivedWireKey) -> Self {
        Key { func: k.func.to_native(), token: [k.token[0].to_native(), k.token[1].to_native()] }
    }
}

/// An object: inline, or the `n`-th object streamed after the message.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub enum WireObject {
    /// The archive itself.
    Inline(Vec<u8>),
    /// Streamed after the message, at this index.
    Streamed(u32),
}

/// Where a run finds one input object.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireSource {
    /// With the run (a literal, or a small result the scheduler holds).
    Object(WireObject),
    /// In the store of the worker that runs it (it made the result).
    Local(WireTask),
    /// On another worker: fetched from its data address (`host:port`)
    /// unless a copy is in the local store already.
    Remote {
        /// The task whose result it is.
        task: WireTask,
        /// The holder's data address.
        address: String,
    },
}

/// One input of a run.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireInput {
    /// One object.
    One(WireSource),
    /// The items of a `Vec` parameter.
    List(Vec<WireSource>),
}

/// One run.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct WireRun {
    /// The task.
    pub task: WireTask,
    /// Its index in the sorted registry.
    pub func: u32,
    /// One per parameter.
    pub inputs: Vec<WireInput>,
    /// Report the start (`Running`) before the task runs: it is a suspect
    /// of a worker's death (see `shoal_core::protocol::Run`).
    pub report_start: bool,
}

/// How a run failed ([`shoal_core::protocol::FailKind`]).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFailKind {
    /// Returned `Err`.
    Error,
    /// Panicked.
    Panic,
    /// Bad inputs, or the result could not be stored.
    Input,
}

/// How one run ended.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireResult {
    /// It succeeded.
    Done {
        /// The task.
        task: WireTask,
        /// Its result if it is small ([`ALWAYS_INLINE`]): the scheduler
        /// keeps those; a larger one stays in the worker's store.
        result: Option<WireObject>,
        /// The result's archive length.
        nbytes: u64,
        /// How long it ran (µs).
        micros: u32,
    },
    /// It failed.
    Failed {
        /// The task.
        task: WireTask,
        /// How.
        kind: WireFailKind,
        /// Why.
        message: String,
        /// The error's type name (errors only).
        type_name: String,
        /// The error's causes.
        chain: Vec<String>,
        /// How long it ran (µs).
        micros: u32,
    },
}

/// Scheduler → worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum ToWorkerMsg {
    /// Queue these runs.
    Runs(Vec<WireRun>),
    /// Give back up to `count` unstarted runs.
    Steal(u32),
    /// Exit.
    Shutdown,
    /// Still here.
    Heartbeat,
    /// Take back these runs if they have not started.
    Recall(Vec<WireTask>),
    /// Drop these results (and copies fetched from peers) from the store.
    Release(Vec<WireTask>),
}

/// Worker → scheduler.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum FromWorkerMsg {
    /// Runs that ended.
    Results(Vec<WireResult>),
    /// Runs given back.
    Stolen(Vec<WireTask>),
    /// Still here.
    Heartbeat,
    /// Runs started here and not ended: a loss of this worker counts
    /// against them.
    Running(Vec<WireTask>),
    /// Recalled runs taken back (never started).
    Recalled(Vec<WireTask>),
    /// Runs given back, never started: an input could not be fetched from
    /// its holder (gone, or without it). The scheduler queues them again.
    Unfetched(Vec<WireTask>),
    /// The worker's process as it stands, for the dashboard (sent every
    /// [`FIGURES_EVERY`]).
    Figures(WireFigures),
}

/// How often a worker sends its [`WireFigures`].
pub const FIGURES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A worker's process, as the dashboard shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct WireFigures {
    /// Its machine's host name.
    pub host: String,
    /// Resident memory, in bytes.
    pub rss: u64,
    /// CPU time used so far (user + system), in seconds.
    pub cpu_seconds: f64,
    /// CPU use since its previous figures, in percent of one core.
    pub cpu_percent: f64,
    /// Bytes of results its data port served to peers and clients so far.
    pub served_bytes: u64,
    /// Bytes of results it fetched from peers' data ports so far.
    pub fetched_bytes: u64,
    /// Microseconds spent in those fetches so far (request to last byte):
    /// the scheduler measures the bandwidth between machines from it.
    pub fetch_micros: u64,
}

/// A dependency of a submitted node.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireDep {
    /// An earlier node of the same submission.
    Node(u32),
    /// A task the scheduler knows.
    Task(WireTask),
}

/// An argument of a submitted node.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireArg {
    /// A literal value.
    Value(WireObject),
    /// Another task's result.
    Dep(WireDep),
    /// Several results, as one `Vec` parameter.
    List(Vec<WireDep>),
}

/// A submitted node ([`shoal_core::driver::GraphNode`]).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct WireNode {
    /// Its key.
    pub key: WireKey,
    /// Its arguments.
    pub args: Vec<WireArg>,
    /// The client holds a future on it.
    pub wanted: bool,
    /// User priority.
    pub priority: i32,
    /// Retries.
    pub retries: u32,
    /// Its index in the `map` that submitted it, if one did.
    pub item: Option<u32>,
}

/// The root of a failure (never a dependency failure).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum WireRoot {
    /// Returned `Err` (or shoal could not read inputs or store the result).
    Error {
        /// The task.
        key: WireKey,
        /// Its `map` index.
        item: Option<u32>,
        /// The error's type name.
        type_name: String,
        /// Its message.
        message: String,
        /// Its causes.
        chain: Vec<String>,
        /// The task's arguments, shortened.
        arguments: Option<String>,
    },
    /// Panicked.
    Panic {
        /// The task.
        key: WireKey,
        /// Its `map` index.
        item: Option<u32>,
        /// The panic's message.
        message: String,
        /// The task's arguments, shortened.
        arguments: Option<String>,
    },
    /// Killed the workers it ran on.
    KilledWorker {
        /// The task.
        key: WireKey,
        /// Its `map` index.
        item: Option<u32>,
        /// How many.
        attempts: u32,
    },
    /// Cancelled.
    Cancelled {
        /// The task.
        key: WireKey,
    },
}

/// A task's failure: its root, and the dependent it is reported for (if
/// it is a dependency failure).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct WireFailure {
    /// The task the failure is reported for, when it is not the root.
    pub dependent: Option<WireKey>,
    /// The dependent's `map` index.
    pub dependent_item: Option<u32>,
    /// What went wrong, where.
    pub root: WireRoot,
}

/// Client → scheduler.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum FromClientMsg {
    /// Submit a graph; answered by `Submitted` or `Rejected` with the same
    /// `request`.
    Submit {
        /// The client's number for the request.
        request: u64,
        /// The graph, topologically ordered.
        nodes: Vec<WireNode>,
    },
    /// One client reference less, per task listed.
    Release(Vec<WireTask>),
    /// One client reference more, per task listed.
    Retain(Vec<WireTask>),
    /// Cancel these tasks.
    Cancel(Vec<WireTask>),
    /// Send these tasks' results; answered by `Objects`.
    Gather {
        /// The client's number for the request.
        request: u64,
        /// The tasks.
        tasks: Vec<WireTask>,
    },
    /// Still here.
    Heartbeat,
    /// The short names of the task functions of the client's registry, by
    /// index (`Key::func`): sent once after the handshake, so that the
    /// scheduler, which has no user code, can name tasks on its dashboard
    /// (every peer has the same registry: the fingerprint says so).
    Names(Vec<String>),
    /// The scheduler's task events and workers; answered by `Monitor`.
    Monitor {
        /// The client's number for the request.
        request: u64,
        /// Run records from this sequence number on.
        since: u64,
        /// At most this many run records (the newest).
        max: u32,
    },
    /// Where these tasks stand in the scheduler; answered by `States`.
    States {
        /// The client's number for the request.
        request: u64,
        /// The tasks.
        tasks: Vec<WireTask>,
    },
}

/// A task's state as it travels: 0 unknown (forgotten, or a stale id),
/// then `Released`, `Waiting`, `Ready`, `Processing`, `Memory`, `Erred`.
pub fn state_code(state: Option<TaskState>) -> u8 {
    match state {
        None => 0,
        Some(TaskState::Released) => 1,
        Some(TaskState::Waiting) => 2,
        Some(TaskState::Ready) => 3,
        Some(TaskState::Processing) => 4,
        Some(TaskState::Memory) => 5,
        Some(TaskState::Erred) => 6,
    }
}

/// The state a [`state_code`] stands for (`None` for 0 or an unknown code).
pub fn state_of(code: u8) -> Option<TaskState> {
    Some(match code {
        1 => TaskState::Released,
        2 => TaskState::Waiting,
        3 => TaskState::Ready,
        4 => TaskState::Processing,
        5 => TaskState::Memory,
        6 => TaskState::Erred,
        _ => return None,
    })
}

/// The most task names a client sends (a registry larger than this is
/// named only up to it).
pub const MAX_NAMES: usize = 1 << 16;
/// The most characters of one task name that travel.
pub const MAX_NAME: usize = 256;

/// One run record of the scheduler's task events
/// ([`shoal_core::driver::events::RunRecord`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
pub struct WireRecord {
    /// The task's key.
    pub key: WireKey,
    /// The worker that ran it.
    pub worker: u32,
    /// Its thread there, or `UNKNOWN_THREAD`.
    pub thread: u32,
    /// Start, ns since the scheduler's driver started.
    pub start_ns: u64,
    /// Stop, ns since the scheduler's driver started.
    pub stop_ns: u64,
    /// Result bytes.
    pub nbytes: u64,
    /// 0 done, 1 failed, 2 late.
    pub outcome: u8,
}

/// A worker as the scheduler knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct WireWorker {
    /// Its id at the scheduler.
    pub id: u32,
    /// Its process id.
    pub pid: u32,
    /// Its threads.
    pub nthreads: u32,
    /// Its last figures.
    pub figures: WireFigures,
}

/// The scheduler's [`shoal_core::driver::events::Snapshot`], its workers
/// and the bytes of results it holds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct WireSnapshot {
    /// Run records asked for.
    pub runs: Vec<WireRecord>,
    /// The sequence number to ask from next time.
    pub next: u64,
    /// ns since the scheduler's driver started.
    pub now_ns: u64,
    /// `Totals`: submitted, started, done, failed, late, events, nbytes, transferred.
    pub totals: [u64; 8],
    /// `FuncTotals` by func: done, failed, late, busy_ns, nbytes.
    pub per_func: Vec<[u64; 5]>,
    /// `StateCounts` of all live tasks: released, waiting, queued, processing, memory, erred.
    pub counts: [u64; 6],
    /// `StateCounts` by func.
    pub counts_per_func: Vec<[u64; 6]>,
    /// Runs processing per worker.
    pub loads: Vec<(u32, u64)>,
    /// The workers.
    pub workers: Vec<WireWorker>,
    /// Bytes of results the scheduler holds.
    pub held_bytes: u64,
}

/// One answer of a gather.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum WireGathered {
    /// The result.
    Object(WireObject),
    /// The task failed.
    Failed(WireFailure),
    /// There is no result to send (not finished, or forgotten); why.
    Missing(String),
    /// The result lives on a worker: fetch it from this data address.
    At(String),
    /// The result is not available now (its holder was lost and it is
    /// being recomputed): ask again shortly.
    Again(String),
}

/// A task's news for a client that holds a future on it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum WireStatus {
    /// In memory; with the result's archive when it is at most
    /// [`NEWS_RESULT_MAX`] bytes (the client then needs no gather for it).
    Finished(Option<Vec<u8>>),
    /// Failed (or cancelled).
    Failed(WireFailure),
}

/// Results up to this many bytes travel with the news that their task
/// finished: a `result()` or `gather` of small results costs no round trip
/// more, and the client holds at most this much per future it keeps.
pub const NEWS_RESULT_MAX: usize = 1024;

/// Scheduler → client.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum ToClientMsg {
    /// The ids of a submitted graph's nodes.
    Submitted {
        /// The request answered.
        request: u64,
        /// One per node.
        ids: Vec<WireTask>,
    },
    /// A submission was refused; why.
    Rejected {
        /// The request answered.
        request: u64,
        /// Why.
        message: String,
    },
    /// News of tasks the client holds futures on.
    Status(Vec<(WireTask, WireStatus)>),
    /// The answer to a gather, one per task asked for.
    Objects {
        /// The request answered.
        request: u64,
        /// One per task.
        items: Vec<WireGathered>,
    },
    /// The cluster's workers now: how many, and their threads.
    Workers {
        /// Workers connected.
        count: u32,
        /// Their threads in all.
        nthreads: u32,
    },
    /// Still here.
    Heartbeat,
    /// The answer to a `Monitor` request.
    Monitor {
        /// The request answered.
        request: u64,
        /// The scheduler's events and workers.
        snapshot: Box<WireSnapshot>,
    },
    /// The answer to a `States` request: one [`state_code`] per task
    /// asked for, in order.
    States {
        /// The request answered.
        request: u64,
        /// The tasks' states.
        states: Vec<u8>,
    },
}

/// A peer asks a worker's data port for results it holds.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct DataRequest {
    /// The tasks whose results to send.
    pub tasks: Vec<WireTask>,
}

/// A worker's answer on its data port: one item per task asked for, the
/// objects over [`INLINE_MAX`] streamed in chunks after it.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct DataReply {
    /// The result, or `None` when this worker does not hold it.
    pub items: Vec<Option<WireObject>>,
}

/// Serializes a message.
pub fn to_bytes<T>(value: &T) -> Result<AlignedVec>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, BoxedError>,
    >,
{
    rkyv::to_bytes::<BoxedError>(value).map_err(|e| NetError::protocol(format!("could not encode a message: {e}")))
}

/// Validates a received archive as `T` (never unchecked).
pub fn access<T>(bytes: &[u8]) -> Result<&T::Archived>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, BoxedError>>,
{
    rkyv::access::<T::Archived, BoxedError>(bytes)
        .map_err(|e| NetError::protocol(format!("an invalid {} message: {e}", short_name::<T>())))
}

fn short_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Bytes copied into 16-byte aligned memory, as rkyv needs to read them.
pub fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Text cut to [`MAX_TEXT`] characters.
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Objects going out with a message: inline ones are copied into it, the
/// others are streamed after it.
#[derive(Default)]
pub struct ObjectsOut {
    /// The objects to stream, in index order.
    pub blobs: Vec<Obj>,
    inline_bytes: usize,
}

impl ObjectsOut {
    /// The wire form of an object (its archive is made here if it was not).
    pub fn object(&mut self, obj: &Obj) -> std::result::Result<WireObject, String> {
        let bytes = obj.archived_bytes().map_err(|e| e.to_string())?;
        if bytes.len() <= ALWAYS_INLINE
            || (bytes.len() <= INLINE_MAX && self.inline_bytes + bytes.len() <= INLINE_BUDGET)
        {
            self.inline_bytes += bytes.len();
            return Ok(WireObject::Inline(bytes.to_vec()));
        }
        if self.blobs.len() >= crate::frame::MAX_BLOBS {
            return Err("too many large objects in one message".into());
        }
        let index = self.blobs.len() as u32;
        self.blobs.push(Arc::clone(obj));
        Ok(WireObject::Streamed(index))
    }

    /// Inline bytes so far (to cut batches).
    pub fn inline_bytes(&self) -> usize {
        self.inline_bytes
    }
}

/// A streamed object as received: where the reader's
/// [`Landing`](crate::conn::Landing) put it.
pub enum Blob {
    /// Aligned heap memory.
    Heap(AlignedVec),
    /// A sealed memory file of its own.
    Segment(Segment),
}

/// The objects streamed after a received message; each must be taken
/// exactly once.
pub struct ObjectsIn {
    blobs: Vec<Option<Blob>>,
}

impl ObjectsIn {
    /// The streamed objects of one message.
    pub fn new(blobs: Vec<AlignedVec>) -> ObjectsIn {
        ObjectsIn::from_blobs(blobs.into_iter().map(Blob::Heap).collect())
    }

    /// The streamed objects of one message, wherever they landed.
    pub fn from_blobs(blobs: Vec<Blob>) -> ObjectsIn {
        ObjectsIn { blobs: blobs.into_iter().map(Some).collect() }
    }

    /// The object a received [`WireObject`] names.
    pub fn take(&mut self, object: &ArchivedWireObject) -> Result<Obj> {
        let blob = match object {
            ArchivedWireObject::Inline(bytes) => Blob::Heap(aligned(bytes.as_slice())),
            ArchivedWireObject::Streamed(i) => {
                let i = i.to_native() as usize;
                self.blobs
                    .get_mut(i)
                    .and_then(Option::take)
                    .ok_or_else(|| NetError::protocol(format!("streamed object {i} named twice or never sent")))?
            }
        };
        Ok(match blob {
            Blob::Heap(bytes) => Arc::new(RawArchive::new(bytes)),
            // Typed reads of it validate its bytes (`SegmentObject`'s type
            // name is the archive's), as for the heap's `RawArchive`.
            Blob::Segment(segment) => Arc::new(SegmentObject::new(segment)),
        })
    }

    /// Every streamed object was taken.
    pub fn finish(self) -> Result<()> {
        match self.blobs.iter().position(Option::is_some) {
            Some(i) => Err(NetError::protocol(format!("streamed object {i} is named by no part of its message"))),
            None => Ok(()),
        }
    }
}

/// A failure's wire form.
pub fn failure_out(failure: &TaskFailure) -> WireFailure {
    let (dependent, dependent_item, root) = match failure {
        TaskFailure::DependencyFailed { key, item, cause } => (Some(WireKey::from(*key)), *item, cause.root()),
        other => (None, None, other),
    };
    let root = match root {
        TaskFailure::Error { key, item, error } => WireRoot::Error {
            key: (*key).into(),
            item: *item,
            type_name: bounded(error.type_name()),
            message: bounded(error.message()),
            chain: error.chain().iter().map(|c| bounded(c)).collect(),
            arguments: error.arguments().map(bounded),
        },
        TaskFailure::Panic { key, item, message, arguments } => WireRoot::Panic {
            key: (*key).into(),
            item: *item,
            message: bounded(message),
            arguments: arguments.as_deref().map(bounded),
        },
        TaskFailure::KilledWorker { key, item, attempts } => {
            WireRoot::KilledWorker { key: (*key).into(), item: *item, attempts: *attempts }
        }
        TaskFailure::Cancelled { key } => WireRoot::Cancelled { key: (*key).into() },
        // `root()` never returns a dependency failure.
        TaskFailure::DependencyFailed { key, .. } => WireRoot::Cancelled { key: (*key).into() },
    };
    WireFailure { dependent, dependent_item, root }
}

/// A received failure.
pub fn failure_in(failure: &ArchivedWireFailure) -> TaskFailure {
    let text = |s: &rkyv::string::ArchivedString| s.as_str().to_string();
    let native = |i: &rkyv::option::ArchivedOption<rkyv::rend::u32_le>| i.as_ref().map(|i| i.to_native());
    let root = match &failure.root {
        ArchivedWireRoot::Error { key, item, type_name, message, chain, arguments } => TaskFailure::Error {
            key: key.into(),
            item: native(item),
            error: Box::new(
                TaskError::from_parts(text(type_name), text(message), chain.iter().map(text).collect())
                    .with_arguments(arguments.as_ref().map(text)),
            ),
        },
        ArchivedWireRoot::Panic { key, item, message, arguments } => TaskFailure::Panic {
            key: key.into(),
            item: native(item),
            message: text(message),
            arguments: arguments.as_ref().map(text),
        },
        ArchivedWireRoot::KilledWorker { key, item, attempts } => {
            TaskFailure::KilledWorker { key: key.into(), item: native(item), attempts: attempts.to_native() }
        }
        ArchivedWireRoot::Cancelled { key } => TaskFailure::Cancelled { key: key.into() },
    };
    match failure.dependent.as_ref() {
        Some(key) => TaskFailure::DependencyFailed {
            key: key.into(),
            item: native(&failure.dependent_item),
            cause: Arc::new(root),
        },
        None => root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn failures_round_trip_with_their_root() {
        let key = Key { func: 3, token: [1, 2] };
        let root = TaskFailure::Panic { key, item: Some(17), message: "boom".into(), arguments: Some("(1, 2)".into()) };
        let dep = TaskFailure::DependencyFailed {
            key: Key { func: 4, token: [5, 6] },
            item: Some(3),
            cause: Arc::new(root.clone()),
        };
        let killed = TaskFailure::KilledWorker { key, item: Some(0), attempts: 3 };
        let plain = TaskFailure::KilledWorker { key, item: None, attempts: 3 };
        for failure in [root, dep, TaskFailure::error(key, "bad input").with_item(Some(9)), killed, plain] {
            let bytes = to_bytes(&failure_out(&failure)).unwrap();
            let back = failure_in(access::<WireFailure>(&bytes).unwrap());
            assert_eq!(back, failure);
        }
    }

    #[test]
    fn tiny_objects_stay_inline_past_the_budget_and_large_ones_stream() {
        let mut out = ObjectsOut::default();
        let tiny: Obj = Arc::new(RawArchive::new(aligned(&[1u8; 16])));
        let mid: Obj = Arc::new(RawArchive::new(aligned(&vec![2u8; 60 << 10])));
        let big: Obj = Arc::new(RawArchive::new(aligned(&vec![3u8; INLINE_MAX + 16])));
        assert!(matches!(out.object(&big).unwrap(), WireObject::Streamed(0)));
        while out.inline_bytes() + (60 << 10) <= INLINE_BUDGET {
            assert!(matches!(out.object(&mid).unwrap(), WireObject::Inline(_)));
        }
        assert!(matches!(out.object(&mid).unwrap(), WireObject::Streamed(1)), "over the budget");
        for _ in 0..100_000 {
            assert!(matches!(out.object(&tiny).unwrap(), WireObject::Inline(_)), "tiny ones never stream");
        }
        assert_eq!(out.blobs.len(), 2);
    }

    #[test]
    fn long_texts_are_cut() {
        let long = "é".repeat(MAX_TEXT + 10);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_streamed_object_must_be_named_exactly_once() {
        let mut objects = ObjectsIn::new(vec![aligned(b"0123456789abcdef")]);
        let bytes = to_bytes(&WireObject::Streamed(0)).unwrap();
        let named = access::<WireObject>(&bytes).unwrap();
        assert_eq!(objects.take(named).unwrap().nbytes(), 16);
        assert!(objects.take(named).is_err(), "named twice");
        objects.finish().unwrap();
        let unnamed = ObjectsIn::new(vec![aligned(b"x")]);
        assert!(unnamed.finish().is_err());
    }

    proptest! {
        /// Random bytes as any message: validated and refused, never a panic.
        #[test]
        fn random_archives_are_refused_or_read(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = aligned(&bytes);
            let _ = access::<ToWorkerMsg>(&bytes);
            let _ = access::<FromWorkerMsg>(&bytes);
            let _ = access::<FromClientMsg>(&bytes);
            let _ = access::<ToClientMsg>(&bytes);
            let _ = access::<Hello>(&bytes);
            let _ = access::<DataRequest>(&bytes);
            let _ = access::<DataReply>(&bytes);
        }
    }
}
