//! The Unix-socket codec: the protocol's messages
//! ([`shoal_core::protocol`]) as frames with file descriptors beside them,
//! and how they are checked on receipt.
//!
//! # Wire format
//!
//! One message = one frame of [`crate::frame`] (`u32` LE length, then the
//! payload) with up to [`crate::MAX_FDS_PER_MESSAGE`] descriptors attached
//! ([`crate::fdpass`]). The payload is the rkyv archive of a `WireToWorker`
//! or a `WireToDriver`. An object travels as a `WireObject`: its archive
//! inline (under [`INLINE_MAX`](crate::uds::INLINE_MAX) bytes) or the index
//! of one of the frame's descriptors, a sealed memfd segment holding the
//! archive.
//!
//! # Batches
//!
//! Runs and results travel in batches ([`RunBatch`], [`ResultBatch`]): one
//! frame, one `sendmsg` and at most one wake-up of the reader for everything
//! a pass produced. A batch is cut into frames so that none carries more
//! than `MAX_FDS_PER_MESSAGE` descriptors nor much more than
//! `FRAME_BUDGET` (1 MiB) of inline objects; descriptor indices are per
//! frame. A run with more descriptors than one frame carries is preceded by
//! `Stash` frames that carry its first descriptors (the worker keeps them
//! for the next `Runs` frame, whose indices count them first).
//!
//! # Checks on receipt
//!
//! Every payload is validated with `rkyv::access` (never
//! `access_unchecked`, with `rancor::BoxedError` so the reason survives
//! release builds), then turned into the protocol's values: every
//! descriptor index must name one descriptor of the frame (or of the stash),
//! each descriptor is used exactly once, and each must be a sealed memfd
//! ([`Segment::from_fd`]). Anything else is a [`ProtocolError`]: the
//! receiver closes that connection, with the reason in its log. Decoding
//! never panics, whatever the bytes (tested below).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::objects::{Outgoing, wire};
use crate::{FdMessage, MAX_FDS_PER_MESSAGE, Segment, SegmentObject};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use shoal_core::object::{Input, Obj, RawArchive};
use shoal_core::protocol::{FailKind, FromWorker, Run, RunResult, ToWorker};
use shoal_core::scheduler::{TaskId, WorkerId};

/// The most descriptors a worker stashes for one run (`WireToWorker::Stash`):
/// a bound on what a malformed stream can make it hold, far above any real
/// run's inputs (each is a segment the worker maps).
pub(crate) const MAX_STASHED_FDS: usize = 4096;

/// About how many payload bytes a frame of a batch carries at most (a
/// single item may exceed it): a larger batch goes as several frames, far
/// below the frame limit, and a reader starts on the first while the rest
/// is written.
pub(crate) const FRAME_BUDGET: usize = 1 << 20;

/// A task run, named as the client's scheduler names it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireTask {
    pub index: u32,
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

/// An object on the wire: its archive inline, or in the frame's `n`-th
/// descriptor (a sealed segment).
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub(crate) enum WireObject {
    Inline(Vec<u8>),
    Fd(u32),
}

/// One input of a run: an object, or the items of a list argument (the
/// task's glue assembles them in the worker).
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub(crate) enum WireInput {
    One(WireObject),
    List(Vec<WireObject>),
}

/// One run: registered task number `func` (index in the sorted registry)
/// on these inputs, one per parameter.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) struct WireRun {
    pub task: WireTask,
    pub func: u32,
    pub inputs: Vec<WireInput>,
    /// Say `Running` naming it before starting it.
    pub report_start: bool,
}

/// From the client to a worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum WireToWorker {
    /// Queue these runs, in this order (the scheduler's).
    Runs { runs: Vec<WireRun> },
    /// Give back up to `count` runs not started yet, newest first, and
    /// never start them: answered by one [`WireToDriver::Stolen`].
    Steal { count: u32 },
    /// Exit now, whatever is running.
    Shutdown,
    /// Give back these runs if not started: answered by one
    /// [`WireToDriver::Recalled`] if any is.
    Recall { tasks: Vec<WireTask> },
    /// Keep this frame's descriptors for the next `Runs` frame, whose
    /// descriptor indices count the stashed ones first: how a run with more
    /// inputs in shared memory than one frame can carry travels.
    Stash,
    /// Give up to `count` runs not started to peer `to`: answered by one
    /// [`WireToDriver::Gave`], then the runs go to the peer.
    Give { count: u32, to: u32 },
    /// With one descriptor, a socket: this worker's end of a channel to
    /// peer `worker` (see [`Inbound::Peer`]).
    Peer { worker: u32 },
}

/// How a run failed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireFailKind {
    /// The task returned `Err`.
    Error,
    /// The task panicked.
    Panic,
    /// Its inputs could not be read, or its result could not be stored.
    Input,
}

/// How one run ended; `micros` is how long it took in the worker (inputs
/// read, task called, result stored), rounded up.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum WireResult {
    /// The run succeeded; `nbytes` is the archive's length.
    Done { task: WireTask, result: WireObject, nbytes: u64, micros: u32 },
    /// `type_name` and `chain` describe an error the task returned
    /// (`FailKind::Error`); empty otherwise.
    Failed { task: WireTask, kind: WireFailKind, message: String, type_name: String, chain: Vec<String>, micros: u32 },
}

/// From a worker to the client.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum WireToDriver {
    /// The first message of a worker: its registry fingerprint (as two
    /// words, high first) and its process id.
    Hello { fingerprint: [u64; 2], pid: u32 },
    /// Runs that ended, in the order they ended.
    Results { results: Vec<WireResult> },
    /// The answer to one [`WireToWorker::Steal`]: the runs given back (maybe
    /// none), which this worker never started and never will.
    Stolen { tasks: Vec<WireTask> },
    /// The runs a [`WireToWorker::Recall`] got back (never started, never
    /// will be).
    Recalled { tasks: Vec<WireTask> },
    /// The runs started and not ended: the heartbeat, and the notice before
    /// a `report_start` run.
    Running { tasks: Vec<WireTask> },
    /// The answer to a [`WireToWorker::Give`]: these runs go to peer `to`.
    Gave { tasks: Vec<WireTask>, to: u32 },
    /// These runs came from peer `from`.
    Adopted { tasks: Vec<WireTask>, from: u32 },
    /// The channel to peer `worker` ended.
    PeerGone { worker: u32 },
}

/// An element of a batch: it names its descriptors by index.
pub(crate) trait BatchItem {
    /// Adds `by` to every descriptor index it holds.
    fn shift_fds(&mut self, by: u32);
    /// About how many payload bytes it takes.
    fn wire_len(&self) -> usize;
}

fn shift(object: &mut WireObject, by: u32) {
    if let WireObject::Fd(n) = object {
        *n += by;
    }
}

fn wire_len(object: &WireObject) -> usize {
    match object {
        WireObject::Inline(bytes) => bytes.len() + 16,
        WireObject::Fd(_) => 16,
    }
}

impl WireInput {
    fn objects_mut(&mut self) -> &mut [WireObject] {
        match self {
            WireInput::One(object) => std::slice::from_mut(object),
            WireInput::List(items) => items,
        }
    }

    fn objects(&self) -> &[WireObject] {
        match self {
            WireInput::One(object) => std::slice::from_ref(object),
            WireInput::List(items) => items,
        }
    }
}

impl BatchItem for WireRun {
    fn shift_fds(&mut self, by: u32) {
        self.inputs.iter_mut().flat_map(WireInput::objects_mut).for_each(|o| shift(o, by));
    }

    fn wire_len(&self) -> usize {
        32 + self.inputs.iter().flat_map(WireInput::objects).map(wire_len).sum::<usize>()
    }
}

impl BatchItem for WireResult {
    fn shift_fds(&mut self, by: u32) {
        if let WireResult::Done { result, .. } = self {
            shift(result, by);
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            WireResult::Done { result, .. } => 32 + wire_len(result),
            WireResult::Failed { message, type_name, chain, .. } => {
                32 + message.len() + type_name.len() + chain.iter().map(|c| 8 + c.len()).sum::<usize>()
            }
        }
    }
}

/// Cuts a batch into frames: each item comes with its own segments
/// (numbered from 0 in the item); a frame gets at most
/// `MAX_FDS_PER_MESSAGE` descriptors and, unless one item alone is larger,
/// at most [`FRAME_BUDGET`] bytes. Items keep their order. An item with
/// more segments than one frame carries goes alone in its frame, preceded
/// by frames without items that carry its first descriptors (sent as
/// `WireToWorker::Stash`; only runs can need it).
pub(crate) struct Batcher<T> {
    frames: Vec<(Vec<T>, Vec<Obj>)>,
    items: Vec<T>,
    segments: Vec<Obj>,
    bytes: usize,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher { frames: Vec::new(), items: Vec::new(), segments: Vec::new(), bytes: 0 }
    }
}

impl<T: BatchItem> Batcher<T> {
    pub(crate) fn new() -> Batcher<T> {
        Batcher { frames: Vec::new(), items: Vec::new(), segments: Vec::new(), bytes: 0 }
    }

    /// Adds an item and its segments; `Err` (and nothing added) if it has
    /// more segments than a worker takes for one run.
    pub(crate) fn push(&mut self, mut item: T, mut segments: Vec<Obj>) -> Result<(), String> {
        if segments.len() > MAX_STASHED_FDS {
            return Err(format!(
                "it has {} inputs in shared memory, more than the {MAX_STASHED_FDS} a run can take",
                segments.len()
            ));
        }
        if segments.len() > MAX_FDS_PER_MESSAGE {
            if !self.items.is_empty() {
                self.cut();
            }
            // The item's indices count the stashed descriptors first, in
            // order, then its own frame's: no shift.
            let last = match segments.len() % MAX_FDS_PER_MESSAGE {
                0 => MAX_FDS_PER_MESSAGE,
                r => r,
            };
            let own = segments.split_off(segments.len() - last);
            for chunk in segments.chunks(MAX_FDS_PER_MESSAGE) {
                self.frames.push((Vec::new(), chunk.to_vec()));
            }
            self.frames.push((vec![item], own));
            return Ok(());
        }
        let len = item.wire_len();
        if !self.items.is_empty()
            && (self.segments.len() + segments.len() > MAX_FDS_PER_MESSAGE || self.bytes + len > FRAME_BUDGET)
        {
            self.cut();
        }
        // At most MAX_FDS_PER_MESSAGE: fits.
        item.shift_fds(self.segments.len() as u32);
        self.segments.extend(segments);
        self.items.push(item);
        self.bytes += len;
        Ok(())
    }

    fn cut(&mut self) {
        self.frames.push((std::mem::take(&mut self.items), std::mem::take(&mut self.segments)));
        self.bytes = 0;
    }

    /// The frames, in order: each one's items and the segments they name.
    pub(crate) fn finish(mut self) -> Vec<(Vec<T>, Vec<Obj>)> {
        if !self.items.is_empty() {
            self.cut();
        }
        self.frames
    }
}

impl From<FailKind> for WireFailKind {
    fn from(kind: FailKind) -> Self {
        match kind {
            FailKind::Error => WireFailKind::Error,
            FailKind::Panic => WireFailKind::Panic,
            FailKind::Input => WireFailKind::Input,
        }
    }
}

/// The runs for one worker, as frames: each run's inputs inline or as
/// descriptors (a large object that is not a segment yet is published into
/// one named by `name`).
#[derive(Default)]
pub struct RunBatch {
    batcher: Batcher<WireRun>,
}

impl RunBatch {
    /// An empty batch.
    pub fn new() -> RunBatch {
        RunBatch { batcher: Batcher::new() }
    }

    /// Adds a run; `Err` (and nothing added) if its inputs cannot travel.
    pub fn push(&mut self, run: Run, mut name: impl FnMut() -> String) -> Result<(), String> {
        let mut segments = Vec::new();
        let mut inputs = Vec::with_capacity(run.inputs.len());
        for input in &run.inputs {
            // A list's items travel one by one; the task's glue assembles
            // them in the worker.
            inputs.push(match input {
                Input::One(obj) => WireInput::One(wire(obj, &mut name, &mut segments)?),
                Input::List(items) => WireInput::List(
                    items.iter().map(|obj| wire(obj, &mut name, &mut segments)).collect::<Result<_, _>>()?,
                ),
            });
        }
        self.batcher
            .push(WireRun { task: run.task.into(), func: run.func, inputs, report_start: run.report_start }, segments)
    }

    /// The frames, in order: `Runs`, or `Stash` frames ahead of a run with
    /// more descriptors than one frame carries.
    pub fn finish(self) -> Result<Vec<Outgoing>, ProtocolError> {
        self.batcher
            .finish()
            .into_iter()
            .map(|(runs, segments)| {
                let message = if runs.is_empty() { WireToWorker::Stash } else { WireToWorker::Runs { runs } };
                Ok(Outgoing { payload: encode(&message)?, segments })
            })
            .collect()
    }
}

/// Results to send together, as frames (results over the inline limit that
/// are not segments yet are published into one named by `name`).
#[derive(Default)]
pub struct ResultBatch {
    batcher: Batcher<WireResult>,
}

impl ResultBatch {
    /// An empty batch.
    pub fn new() -> ResultBatch {
        ResultBatch { batcher: Batcher::new() }
    }

    /// Adds a result; `Err` (and nothing added) if it cannot travel.
    pub fn push(&mut self, result: RunResult, mut name: impl FnMut() -> String) -> Result<(), String> {
        let mut segments = Vec::new();
        let wire_result = match result {
            RunResult::Done { task, result, nbytes, micros } => {
                WireResult::Done { task: task.into(), result: wire(&result, &mut name, &mut segments)?, nbytes, micros }
            }
            RunResult::Failed { task, kind, message, type_name, chain, micros } => {
                WireResult::Failed { task: task.into(), kind: kind.into(), message, type_name, chain, micros }
            }
        };
        self.batcher.push(wire_result, segments)
    }

    /// The frames, in order.
    pub fn finish(self) -> Result<Vec<Outgoing>, ProtocolError> {
        self.batcher
            .finish()
            .into_iter()
            .map(|(results, segments)| Ok(Outgoing { payload: encode(&WireToDriver::Results { results })?, segments }))
            .collect()
    }
}

/// A message without objects, as one frame.
pub fn control_to_worker(message: &ToWorker) -> Result<Outgoing, ProtocolError> {
    let wire = match message {
        ToWorker::Steal { count } => WireToWorker::Steal { count: *count },
        ToWorker::Recall(tasks) => WireToWorker::Recall { tasks: tasks.iter().map(|&t| t.into()).collect() },
        ToWorker::Shutdown => WireToWorker::Shutdown,
        ToWorker::Give { count, to } => WireToWorker::Give { count: *count, to: to.0 },
        ToWorker::Runs(_) => return Err(ProtocolError("internal error: runs go in a RunBatch".into())),
    };
    Ok(Outgoing { payload: encode(&wire)?, segments: Vec::new() })
}

/// A message without objects, as one frame.
pub fn control_to_driver(message: &FromWorker) -> Result<Outgoing, ProtocolError> {
    let wire = match message {
        FromWorker::Hello { fingerprint, pid } => {
            WireToDriver::Hello { fingerprint: split_fingerprint(*fingerprint), pid: *pid }
        }
        FromWorker::Stolen(tasks) => WireToDriver::Stolen { tasks: tasks.iter().map(|&t| t.into()).collect() },
        FromWorker::Recalled(tasks) => WireToDriver::Recalled { tasks: tasks.iter().map(|&t| t.into()).collect() },
        FromWorker::Running(tasks) => WireToDriver::Running { tasks: tasks.iter().map(|&t| t.into()).collect() },
        FromWorker::Gave { tasks, to } => {
            WireToDriver::Gave { tasks: tasks.iter().map(|&t| t.into()).collect(), to: to.0 }
        }
        FromWorker::Adopted { tasks, from } => {
            WireToDriver::Adopted { tasks: tasks.iter().map(|&t| t.into()).collect(), from: from.0 }
        }
        FromWorker::PeerGone(peer) => WireToDriver::PeerGone { worker: peer.0 },
        FromWorker::Results(_) => return Err(ProtocolError("internal error: results go in a ResultBatch".into())),
    };
    Ok(Outgoing { payload: encode(&wire)?, segments: Vec::new() })
}

/// Waits until reading `socket` would not block (data, end of stream or an
/// error), or only looks if `block` is false; whether it is readable.
///
/// Readers wait here, not inside `recvmsg`: a thread blocked in `recvmsg` on
/// a Unix stream socket sleeps on the socket's one wait queue, which the
/// kernel also wakes each time the *peer* consumes bytes this end sent
/// ("write space"), so every frame read by one side would wake the other
/// side's reader for nothing. `poll` for `POLLIN` sleeps on the same queue
/// but ignores wake-ups for other events.
pub fn wait_readable(socket: &std::os::unix::net::UnixStream, block: bool) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    loop {
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        match rustix::event::poll(&mut fds, if block { None } else { Some(&zero) }) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            // Let the read that follows report it.
            Err(_) => return true,
        }
    }
}

/// A message that breaks the protocol; the connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn split_fingerprint(f: u128) -> [u64; 2] {
    [(f >> 64) as u64, f as u64]
}

/// The payload of a message.
pub(crate) fn encode<M>(message: &M) -> Result<AlignedVec, ProtocolError>
where
    M: for<'a> Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::BoxedError>,
    >,
{
    rkyv::to_bytes::<rancor::BoxedError>(message).map_err(|e| ProtocolError(format!("could not encode a message: {e}")))
}

/// Checks and unpacks a message for a worker. `stash` holds the descriptors
/// of the `WireToWorker::Stash` frames since the last runs: a `Stash` adds to
/// it, `Runs` takes them all (numbered before its own), anything else with
/// descriptors stashed is an error.
pub fn decode_to_worker(message: FdMessage, stash: &mut Vec<OwnedFd>) -> Result<Option<ToWorker>, ProtocolError> {
    match decode_inbound(message, stash)? {
        None => Ok(None),
        Some(Inbound::Message(message)) => Ok(Some(message)),
        Some(Inbound::Peer { .. }) => Err(ProtocolError("a peer introduction where none may come".into())),
    }
}

/// What a worker reads from its driver: a message of the protocol, or a
/// transport matter — a channel to a peer worker of this machine.
pub enum Inbound {
    /// A message of the protocol.
    Message(ToWorker),
    /// This worker's end of a socket pair whose other end peer `worker`
    /// got: runs given by the peer come over it (as `Runs` and `Stash`
    /// frames of this codec), and runs given to the peer go.
    Peer {
        /// The peer's id.
        worker: WorkerId,
        /// This worker's end.
        socket: UnixStream,
    },
}

/// [`decode_to_worker`] for a worker's connection to its driver, which may
/// also introduce peers ([`Inbound::Peer`]: one descriptor, a socket).
pub fn decode_inbound(message: FdMessage, stash: &mut Vec<OwnedFd>) -> Result<Option<Inbound>, ProtocolError> {
    let (payload, own) = unpack(message);
    let archived = rkyv::access::<ArchivedWireToWorker, rancor::BoxedError>(&payload)
        .map_err(|e| ProtocolError(format!("invalid message: {e}")))?;
    if let ArchivedWireToWorker::Stash = archived {
        if stash.len() + own.len() > MAX_STASHED_FDS {
            return Err(ProtocolError(format!("more than {MAX_STASHED_FDS} descriptors stashed for one run")));
        }
        stash.extend(own.into_iter().flatten());
        return Ok(None);
    }
    let mut fds: Vec<Option<OwnedFd>> = stash.drain(..).map(Some).chain(own).collect();
    let msg = match archived {
        ArchivedWireToWorker::Runs { runs } => ToWorker::Runs(
            runs.iter()
                .map(|run| {
                    let inputs = run.inputs.iter().map(|i| input(i, &mut fds)).collect::<Result<Vec<Input>, _>>()?;
                    Ok(Run {
                        task: (&run.task).into(),
                        func: run.func.to_native(),
                        inputs,
                        report_start: run.report_start,
                    })
                })
                .collect::<Result<Vec<Run>, ProtocolError>>()?,
        ),
        ArchivedWireToWorker::Steal { count } => ToWorker::Steal { count: count.to_native() },
        ArchivedWireToWorker::Recall { tasks } => ToWorker::Recall(tasks.iter().map(TaskId::from).collect()),
        ArchivedWireToWorker::Shutdown => ToWorker::Shutdown,
        ArchivedWireToWorker::Give { count, to } => {
            ToWorker::Give { count: count.to_native(), to: WorkerId(to.to_native()) }
        }
        ArchivedWireToWorker::Peer { worker } => {
            let [Some(fd)] = <[Option<OwnedFd>; 1]>::try_from(fds).unwrap_or([None]) else {
                return Err(ProtocolError("a peer introduction needs exactly one descriptor, and no stash".into()));
            };
            let stat = rustix::fs::fstat(&fd).map_err(|e| ProtocolError(format!("peer descriptor: {e}")))?;
            if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
                return Err(ProtocolError("a peer introduction whose descriptor is not a socket".into()));
            }
            return Ok(Some(Inbound::Peer { worker: WorkerId(worker.to_native()), socket: UnixStream::from(fd) }));
        }
        // Handled above.
        ArchivedWireToWorker::Stash => return Ok(None),
    };
    all_used(&fds)?;
    Ok(Some(Inbound::Message(msg)))
}

/// Sends `socket` (one end of a socket pair) on a worker's connection
/// `conn`, introducing peer `peer`: the worker reads it as
/// [`Inbound::Peer`]. The caller holds `conn`'s send lock.
pub fn introduce(conn: &UnixStream, peer: WorkerId, socket: &UnixStream) -> Result<(), ProtocolError> {
    let payload = encode(&WireToWorker::Peer { worker: peer.0 })?;
    crate::fdpass::send(conn, &payload, &[socket.as_fd()])
        .map_err(|e| ProtocolError(format!("could not introduce peer {}: {e}", peer.0)))
}

/// The input a [`WireInput`] stands for.
fn input(wire: &ArchivedWireInput, fds: &mut [Option<OwnedFd>]) -> Result<Input, ProtocolError> {
    match wire {
        ArchivedWireInput::One(o) => object(o, fds).map(Input::One),
        ArchivedWireInput::List(items) => {
            items.iter().map(|o| object(o, fds)).collect::<Result<Vec<Obj>, _>>().map(Input::List)
        }
    }
}

/// Checks and unpacks a message for the client.
pub fn decode_to_driver(message: FdMessage) -> Result<FromWorker, ProtocolError> {
    let (payload, mut fds) = unpack(message);
    let archived = rkyv::access::<ArchivedWireToDriver, rancor::BoxedError>(&payload)
        .map_err(|e| ProtocolError(format!("invalid message: {e}")))?;
    let msg = match archived {
        ArchivedWireToDriver::Hello { fingerprint, pid } => FromWorker::Hello {
            fingerprint: (u128::from(fingerprint[0].to_native()) << 64) | u128::from(fingerprint[1].to_native()),
            pid: pid.to_native(),
        },
        ArchivedWireToDriver::Results { results } => FromWorker::Results(
            results
                .iter()
                .map(|r| match r {
                    ArchivedWireResult::Done { task, result, nbytes, micros } => Ok(RunResult::Done {
                        task: task.into(),
                        result: object(result, &mut fds)?,
                        nbytes: nbytes.to_native(),
                        micros: micros.to_native(),
                    }),
                    ArchivedWireResult::Failed { task, kind, message, type_name, chain, micros } => {
                        let kind = match kind {
                            ArchivedWireFailKind::Error => FailKind::Error,
                            ArchivedWireFailKind::Panic => FailKind::Panic,
                            ArchivedWireFailKind::Input => FailKind::Input,
                        };
                        Ok(RunResult::Failed {
                            task: task.into(),
                            kind,
                            message: message.as_str().to_owned(),
                            type_name: type_name.as_str().to_owned(),
                            chain: chain.iter().map(|c| c.as_str().to_owned()).collect(),
                            micros: micros.to_native(),
                        })
                    }
                })
                .collect::<Result<Vec<RunResult>, ProtocolError>>()?,
        ),
        ArchivedWireToDriver::Stolen { tasks } => FromWorker::Stolen(tasks.iter().map(TaskId::from).collect()),
        ArchivedWireToDriver::Recalled { tasks } => FromWorker::Recalled(tasks.iter().map(TaskId::from).collect()),
        ArchivedWireToDriver::Running { tasks } => FromWorker::Running(tasks.iter().map(TaskId::from).collect()),
        ArchivedWireToDriver::Gave { tasks, to } => {
            FromWorker::Gave { tasks: tasks.iter().map(TaskId::from).collect(), to: WorkerId(to.to_native()) }
        }
        ArchivedWireToDriver::Adopted { tasks, from } => {
            FromWorker::Adopted { tasks: tasks.iter().map(TaskId::from).collect(), from: WorkerId(from.to_native()) }
        }
        ArchivedWireToDriver::PeerGone { worker } => FromWorker::PeerGone(WorkerId(worker.to_native())),
    };
    all_used(&fds)?;
    Ok(msg)
}

/// The payload, copied to a 16-byte aligned buffer (rkyv's alignment), and
/// the descriptors, each to be taken once.
fn unpack(message: FdMessage) -> (AlignedVec, Vec<Option<OwnedFd>>) {
    let mut payload = AlignedVec::with_capacity(message.payload.len());
    payload.extend_from_slice(&message.payload);
    (payload, message.fds.into_iter().map(Some).collect())
}

/// The object a [`WireObject`] stands for. An inline archive is copied to
/// an aligned buffer of its own (small by construction); a descriptor is
/// mapped in place.
fn object(wire: &ArchivedWireObject, fds: &mut [Option<OwnedFd>]) -> Result<Obj, ProtocolError> {
    match wire {
        ArchivedWireObject::Inline(bytes) => {
            let mut copy = AlignedVec::with_capacity(bytes.len());
            copy.extend_from_slice(bytes.as_slice());
            Ok(Arc::new(RawArchive::new(copy)))
        }
        ArchivedWireObject::Fd(n) => {
            let n = n.to_native();
            let fd = usize::try_from(n)
                .ok()
                .and_then(|i| fds.get_mut(i))
                .and_then(Option::take)
                .ok_or_else(|| ProtocolError(format!("descriptor {n} is not in the frame, or is used twice")))?;
            let segment = Segment::from_fd(fd).map_err(|e| ProtocolError(format!("descriptor {n}: {e}")))?;
            Ok(Arc::new(SegmentObject::new(segment)))
        }
    }
}

fn all_used(fds: &[Option<OwnedFd>]) -> Result<(), ProtocolError> {
    match fds.iter().filter(|fd| fd.is_some()).count() {
        0 => Ok(()),
        n => Err(ProtocolError(format!("{n} descriptor(s) came with the frame but no object names them"))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use proptest::prelude::*;
    use shoal_core::object::read_owned;

    use super::*;

    fn message(payload: &[u8], fds: Vec<OwnedFd>) -> FdMessage {
        FdMessage { payload: payload.to_vec(), fds }
    }

    fn segment_fd(bytes: &[u8]) -> OwnedFd {
        SegmentObject::copy_of(bytes, "shoal-test-protocol").unwrap().segment().try_clone_fd().unwrap()
    }

    fn done(index: u32, result: WireObject) -> WireResult {
        WireResult::Done { task: WireTask { index, generation: 0 }, result, nbytes: 1, micros: 3 }
    }

    fn results(results: Vec<WireResult>) -> AlignedVec {
        encode(&WireToDriver::Results { results }).unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let archive = rkyv::to_bytes::<rancor::Error>(&41u64).unwrap();
        let runs = WireToWorker::Runs {
            runs: vec![
                WireRun {
                    task: WireTask { index: 3, generation: 9 },
                    func: 2,
                    report_start: true,
                    inputs: vec![
                        WireInput::One(WireObject::Inline(archive.to_vec())),
                        WireInput::One(WireObject::Fd(1)),
                    ],
                },
                WireRun {
                    task: WireTask { index: 4, generation: 1 },
                    func: 0,
                    report_start: false,
                    inputs: vec![WireInput::One(WireObject::Fd(0))],
                },
            ],
        };
        let payload = encode(&runs).unwrap();
        let fds = vec![
            segment_fd(&rkyv::to_bytes::<rancor::Error>(&String::from("second")).unwrap()),
            segment_fd(&rkyv::to_bytes::<rancor::Error>(&String::from("first")).unwrap()),
        ];
        let Ok(Some(ToWorker::Runs(runs))) = decode_to_worker(message(&payload, fds), &mut Vec::new()) else {
            panic!("not runs")
        };
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].task, runs[0].func), (TaskId { index: 3, generation: 9 }, 2));
        assert!(runs[0].report_start && !runs[1].report_start);
        assert_eq!(read_owned::<u64>(&*runs[0].inputs[0].objects()[0]).unwrap(), 41);
        assert_eq!(read_owned::<String>(&*runs[0].inputs[1].objects()[0]).unwrap(), "first");
        assert_eq!(read_owned::<String>(&*runs[1].inputs[0].objects()[0]).unwrap(), "second");
        let steal = encode(&WireToWorker::Steal { count: 7 }).unwrap();
        assert!(matches!(
            decode_to_worker(message(&steal, vec![]), &mut Vec::new()),
            Ok(Some(ToWorker::Steal { count: 7 }))
        ));

        let hello = encode(&WireToDriver::Hello { fingerprint: split_fingerprint(u128::MAX - 5), pid: 77 }).unwrap();
        assert!(matches!(
            decode_to_driver(message(&hello, vec![])).unwrap(),
            FromWorker::Hello { fingerprint, pid: 77 } if fingerprint == u128::MAX - 5
        ));
        let batch = results(vec![
            WireResult::Failed {
                task: WireTask { index: 1, generation: 1 },
                kind: WireFailKind::Panic,
                message: "boom".into(),
                type_name: String::new(),
                chain: Vec::new(),
                micros: 7,
            },
            done(2, WireObject::Inline(archive.to_vec())),
        ]);
        let Ok(FromWorker::Results(got)) = decode_to_driver(message(&batch, vec![])) else { panic!("not results") };
        assert!(
            matches!(&got[0], RunResult::Failed { kind: FailKind::Panic, message, micros: 7, .. } if message == "boom")
        );
        assert!(matches!(&got[1], RunResult::Done { task, result, nbytes: 1, micros: 3 }
            if task.index == 2 && read_owned::<u64>(&**result).unwrap() == 41));
        let stolen = encode(&WireToDriver::Stolen { tasks: vec![WireTask { index: 5, generation: 2 }] }).unwrap();
        assert!(matches!(
            decode_to_driver(message(&stolen, vec![])),
            Ok(FromWorker::Stolen(tasks)) if tasks == [TaskId { index: 5, generation: 2 }]
        ));
        let t = |index| WireTask { index, generation: 3 };
        let recall = encode(&WireToWorker::Recall { tasks: vec![t(1), t(2)] }).unwrap();
        assert!(matches!(
            decode_to_worker(message(&recall, vec![]), &mut Vec::new()),
            Ok(Some(ToWorker::Recall(tasks))) if tasks == [TaskId { index: 1, generation: 3 }, TaskId { index: 2, generation: 3 }]
        ));
        let recalled = encode(&WireToDriver::Recalled { tasks: vec![t(2)] }).unwrap();
        assert!(matches!(
            decode_to_driver(message(&recalled, vec![])),
            Ok(FromWorker::Recalled(tasks)) if tasks == [TaskId { index: 2, generation: 3 }]
        ));
        let running = encode(&WireToDriver::Running { tasks: vec![] }).unwrap();
        assert!(
            matches!(decode_to_driver(message(&running, vec![])), Ok(FromWorker::Running(tasks)) if tasks.is_empty())
        );
    }

    #[test]
    fn descriptor_indices_are_checked() {
        let archive = rkyv::to_bytes::<rancor::Error>(&1u8).unwrap();
        let one = |n| results(vec![done(0, WireObject::Fd(n))]);
        // Missing descriptor.
        assert!(decode_to_driver(message(&one(0), vec![])).is_err());
        // Index out of range.
        assert!(decode_to_driver(message(&one(1), vec![segment_fd(&archive)])).is_err());
        // A descriptor nobody names.
        let extra = vec![segment_fd(&archive), segment_fd(&archive)];
        assert!(decode_to_driver(message(&one(0), extra)).is_err());
        // A descriptor that is not a sealed memfd.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = decode_to_driver(message(&one(0), vec![a.as_fd().try_clone_to_owned().unwrap()])).err();
        assert!(err.is_some_and(|e| e.0.contains("descriptor 0")));
        // The same index twice, in one run or in two results of a batch.
        let run = WireToWorker::Runs {
            runs: vec![WireRun {
                task: WireTask { index: 0, generation: 0 },
                func: 0,
                inputs: vec![WireInput::One(WireObject::Fd(0)), WireInput::One(WireObject::Fd(0))],
                report_start: false,
            }],
        };
        assert!(
            decode_to_worker(message(&encode(&run).unwrap(), vec![segment_fd(&archive)]), &mut Vec::new()).is_err()
        );
        let twice = results(vec![done(0, WireObject::Fd(0)), done(1, WireObject::Fd(0))]);
        assert!(decode_to_driver(message(&twice, vec![segment_fd(&archive)])).is_err());
    }

    #[test]
    fn a_batch_is_cut_at_the_descriptor_limit_and_the_byte_budget() {
        let archive = rkyv::to_bytes::<rancor::Error>(&7u32).unwrap();
        let seg = || -> Obj { Arc::new(SegmentObject::copy_of(&archive, "shoal-test-batch").unwrap()) };
        // Runs of 3 segments each: 10 of them fit a frame of 32, the 11th
        // starts the next one, with its descriptors numbered from 0 again.
        let mut batcher = Batcher::new();
        for i in 0..12 {
            let inputs = vec![
                WireInput::One(WireObject::Fd(0)),
                WireInput::One(WireObject::Inline(vec![1])),
                WireInput::List(vec![WireObject::Fd(1), WireObject::Fd(2)]),
            ];
            batcher
                .push(
                    WireRun { task: WireTask { index: i, generation: 0 }, func: 0, inputs, report_start: false },
                    vec![seg(), seg(), seg()],
                )
                .unwrap();
        }
        // A run with more segments than a frame carries (a list of 70):
        // alone, after two frames that stash its first 64 descriptors.
        let n = 2 * MAX_FDS_PER_MESSAGE + 6;
        let list = WireInput::List((0..n as u32).map(WireObject::Fd).collect());
        let task = WireTask { index: 99, generation: 0 };
        batcher.push(WireRun { task, func: 0, inputs: vec![list], report_start: false }, vec![seg(); n]).unwrap();
        let too_many = vec![seg(); MAX_STASHED_FDS + 1];
        assert!(
            batcher.push(WireRun { task, func: 0, inputs: vec![], report_start: false }, too_many).is_err(),
            "refused"
        );
        let frames = batcher.finish();
        assert_eq!(
            frames.iter().map(|(runs, segs)| (runs.len(), segs.len())).collect::<Vec<_>>(),
            [(10, 30), (2, 6), (0, 32), (0, 32), (1, 6)]
        );
        let mut stash = Vec::new();
        let mut decoded = Vec::new();
        for (runs, segments) in frames {
            let fds: Vec<OwnedFd> = segments
                .iter()
                .map(|o| o.as_any().downcast_ref::<SegmentObject>().unwrap().segment().try_clone_fd().unwrap())
                .collect();
            let msg = if runs.is_empty() { WireToWorker::Stash } else { WireToWorker::Runs { runs } };
            match decode_to_worker(message(&encode(&msg).unwrap(), fds), &mut stash) {
                Ok(Some(ToWorker::Runs(runs))) => decoded.extend(runs),
                Ok(None) => {}
                _ => panic!("not runs"),
            }
        }
        assert!(stash.is_empty(), "every stashed descriptor taken");
        let inputs: Vec<usize> = decoded.iter().map(|r| r.inputs.iter().map(|i| i.objects().len()).sum()).collect();
        assert_eq!(inputs, [vec![4; 12], vec![n]].concat(), "every descriptor found, each used once");
        assert_eq!(read_owned::<u32>(&*decoded[12].inputs[0].objects()[n - 1]).unwrap(), 7);
        // Descriptors stashed for a message that is not a run are an error.
        let steal = encode(&WireToWorker::Steal { count: 1 }).unwrap();
        let mut stash = vec![segment_fd(&archive)];
        assert!(decode_to_worker(message(&steal, vec![]), &mut stash).is_err());
        // Inline bytes: a frame stops near the budget; one big item still goes.
        let mut batcher = Batcher::new();
        for i in 0..5 {
            batcher.push(done(i, WireObject::Inline(vec![0; FRAME_BUDGET / 2 - 100])), vec![]).unwrap();
        }
        batcher.push(done(5, WireObject::Inline(vec![0; FRAME_BUDGET * 2])), vec![]).unwrap();
        let sizes: Vec<usize> = batcher.finish().iter().map(|(items, _)| items.len()).collect();
        assert_eq!(sizes, [2, 2, 1, 1]);
    }

    /// Every validation error names what was wrong, in release builds too
    /// (rkyv's default error type says "failed without error information"
    /// there).
    #[test]
    fn a_garbage_frame_gets_a_reason() {
        for bytes in [&[0xffu8; 32][..], &[7u8; 9][..], &[0u8; 3][..]] {
            let e = decode_to_driver(message(bytes, vec![])).err().expect("garbage is refused");
            assert!(e.0.starts_with("invalid message: ") && e.0.len() > "invalid message: ".len() + 10, "{e}");
            assert!(!e.0.contains("without error information"), "{e}");
            let mut stash = Vec::new();
            let e = decode_to_worker(message(bytes, vec![]), &mut stash).err().expect("garbage is refused");
            assert!(!e.0.contains("without error information"), "{e}");
        }
    }

    #[test]
    fn truncated_and_empty_payloads_are_errors() {
        let done = results(vec![done(5, WireObject::Inline(vec![1, 2, 3]))]);
        for len in 0..done.len() {
            let _ = decode_to_driver(message(&done[..len], vec![]));
        }
        assert!(decode_to_driver(message(&[], vec![])).is_err());
        assert!(decode_to_worker(message(&[], vec![]), &mut Vec::new()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes decode to a message or an error: never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_to_driver(message(&bytes, vec![]));
            let _ = decode_to_worker(message(&bytes, vec![]), &mut Vec::new());
        }

        /// A valid message with bytes flipped decodes or fails cleanly.
        #[test]
        fn corrupted_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = results(vec![WireResult::Failed {
                task: WireTask { index: 7, generation: 2 },
                kind: WireFailKind::Error,
                message: String::from_utf8_lossy(&payload).into_owned(),
                type_name: "E".into(),
                chain: vec![String::from_utf8_lossy(&payload).into_owned()],
                micros: 1,
            }])
            .to_vec();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let _ = decode_to_driver(message(&bytes, vec![]));
            let run = encode(&WireToWorker::Runs {
                runs: vec![WireRun {
                    task: WireTask { index: 1, generation: 1 },
                    func: 0,
                    inputs: vec![WireInput::One(WireObject::Inline(payload))],
                    report_start: false,
                }],
            })
            .unwrap();
            let _ = decode_to_worker(message(&run, vec![]), &mut Vec::new());
        }
    }

    #[test]
    fn a_peer_is_introduced_with_a_socket_and_nothing_else() {
        let (conn, worker_end) = UnixStream::pair().unwrap();
        let (channel, _other) = UnixStream::pair().unwrap();
        introduce(&conn, WorkerId(7), &channel).unwrap();
        let received = crate::fdpass::recv(&worker_end).unwrap().unwrap();
        let Ok(Some(Inbound::Peer { worker, socket })) = decode_inbound(received, &mut Vec::new()) else {
            panic!("not an introduction")
        };
        assert_eq!(worker, WorkerId(7));
        socket.set_nonblocking(true).unwrap();
        // The same frame where no introduction may come (from a peer).
        introduce(&conn, WorkerId(7), &channel).unwrap();
        let received = crate::fdpass::recv(&worker_end).unwrap().unwrap();
        assert!(decode_to_worker(received, &mut Vec::new()).is_err());
        // A descriptor that is not a socket, or none, is refused.
        let peer = encode(&WireToWorker::Peer { worker: 1 }).unwrap();
        assert!(decode_inbound(message(&peer, vec![segment_fd(b"x")]), &mut Vec::new()).is_err());
        assert!(decode_inbound(message(&peer, vec![]), &mut Vec::new()).is_err());
    }

    #[test]
    fn give_and_its_notices_round_trip() {
        let give = control_to_worker(&ToWorker::Give { count: 3, to: WorkerId(2) }).unwrap();
        assert!(matches!(
            decode_to_worker(message(&give.payload, vec![]), &mut Vec::new()),
            Ok(Some(ToWorker::Give { count: 3, to: WorkerId(2) }))
        ));
        let t = TaskId { index: 4, generation: 1 };
        for notice in [
            FromWorker::Gave { tasks: vec![t], to: WorkerId(2) },
            FromWorker::Adopted { tasks: vec![t], from: WorkerId(0) },
            FromWorker::PeerGone(WorkerId(5)),
        ] {
            let frame = control_to_driver(&notice).unwrap();
            let back = decode_to_driver(message(&frame.payload, vec![])).unwrap();
            let same = match (&notice, &back) {
                (FromWorker::Gave { tasks: a, to: x }, FromWorker::Gave { tasks: b, to: y }) => a == b && x == y,
                (FromWorker::Adopted { tasks: a, from: x }, FromWorker::Adopted { tasks: b, from: y }) => {
                    a == b && x == y
                }
                (FromWorker::PeerGone(x), FromWorker::PeerGone(y)) => x == y,
                _ => false,
            };
            assert!(same);
        }
    }
}
