//! The messages between the client and its worker processes, and how they
//! are checked on receipt.
//!
//! # Wire format
//!
//! One message = one frame of [`shoal_shm::frame`] (`u32` LE length, then
//! the payload) with up to [`shoal_shm::MAX_FDS_PER_MESSAGE`] descriptors
//! attached ([`shoal_shm::fdpass`]). The payload is the rkyv archive of a
//! [`ToWorker`] or a [`ToClient`]. An object travels as a [`WireObject`]:
//! its archive inline (under [`INLINE_MAX`](super::objects::INLINE_MAX)
//! bytes) or the index of one of the frame's descriptors, a sealed memfd
//! segment holding the archive.
//!
//! # Checks on receipt
//!
//! Every payload is validated with `rkyv::access` (never
//! `access_unchecked`), then turned into an owned, checked form
//! ([`ClientMsg`], [`WorkerMsg`]): every descriptor index must name one
//! descriptor of the frame, each descriptor is used exactly once, and each
//! must be a sealed memfd ([`Segment::from_fd`]). Anything else is a
//! [`ProtocolError`]: the receiver closes that connection, with the reason in
//! its log. Decoding never panics, whatever the bytes (tested below).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use shoal_core::object::{Obj, RawArchive};
use shoal_core::scheduler::TaskId;
use shoal_shm::{FdMessage, Segment, SegmentObject};

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

/// From the client to a worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum ToWorker {
    /// Run registered task number `func` (index in the sorted registry) on
    /// these inputs, one per parameter.
    Run { task: WireTask, func: u32, inputs: Vec<WireObject> },
    /// Exit now, whatever is running.
    Shutdown,
}

/// How a run failed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// The task returned `Err`.
    Error,
    /// The task panicked.
    Panic,
    /// Its inputs could not be read, or its result could not be stored.
    Input,
}

/// From a worker to the client.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum ToClient {
    /// The first message of a worker: its registry fingerprint (as two
    /// words, high first) and its process id.
    Hello {
        fingerprint: [u64; 2],
        pid: u32,
    },
    /// A run succeeded; `nbytes` is the archive's length.
    Done {
        task: WireTask,
        result: WireObject,
        nbytes: u64,
    },
    Failed {
        task: WireTask,
        kind: FailKind,
        message: String,
    },
}

/// A message that breaks the protocol; the connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A [`ToWorker`], checked, with its objects in hand.
pub(crate) enum WorkerMsg {
    Run { task: TaskId, func: u32, inputs: Vec<Obj> },
    Shutdown,
}

/// A [`ToClient`], checked, with its objects in hand.
pub(crate) enum ClientMsg {
    Hello { fingerprint: u128, pid: u32 },
    Done { task: TaskId, result: Obj, nbytes: u64 },
    Failed { task: TaskId, kind: FailKind, message: String },
}

pub(crate) fn split_fingerprint(f: u128) -> [u64; 2] {
    [(f >> 64) as u64, f as u64]
}

/// The payload of a message.
pub(crate) fn encode<M>(message: &M) -> Result<AlignedVec, ProtocolError>
where
    M: for<'a> Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
    >,
{
    rkyv::to_bytes::<rancor::Error>(message).map_err(|e| ProtocolError(format!("could not encode a message: {e}")))
}

/// Checks and unpacks a message for a worker.
pub(crate) fn decode_to_worker(message: FdMessage) -> Result<WorkerMsg, ProtocolError> {
    let (payload, mut fds) = unpack(message);
    let archived = rkyv::access::<ArchivedToWorker, rancor::Error>(&payload)
        .map_err(|e| ProtocolError(format!("invalid message: {e}")))?;
    let msg = match archived {
        ArchivedToWorker::Run { task, func, inputs } => {
            let inputs = inputs.iter().map(|o| object(o, &mut fds)).collect::<Result<Vec<Obj>, ProtocolError>>()?;
            WorkerMsg::Run { task: task.into(), func: func.to_native(), inputs }
        }
        ArchivedToWorker::Shutdown => WorkerMsg::Shutdown,
    };
    all_used(&fds)?;
    Ok(msg)
}

/// Checks and unpacks a message for the client.
pub(crate) fn decode_to_client(message: FdMessage) -> Result<ClientMsg, ProtocolError> {
    let (payload, mut fds) = unpack(message);
    let archived = rkyv::access::<ArchivedToClient, rancor::Error>(&payload)
        .map_err(|e| ProtocolError(format!("invalid message: {e}")))?;
    let msg = match archived {
        ArchivedToClient::Hello { fingerprint, pid } => ClientMsg::Hello {
            fingerprint: (u128::from(fingerprint[0].to_native()) << 64) | u128::from(fingerprint[1].to_native()),
            pid: pid.to_native(),
        },
        ArchivedToClient::Done { task, result, nbytes } => {
            ClientMsg::Done { task: task.into(), result: object(result, &mut fds)?, nbytes: nbytes.to_native() }
        }
        ArchivedToClient::Failed { task, kind, message } => {
            let kind = match kind {
                ArchivedFailKind::Error => FailKind::Error,
                ArchivedFailKind::Panic => FailKind::Panic,
                ArchivedFailKind::Input => FailKind::Input,
            };
            ClientMsg::Failed { task: task.into(), kind, message: message.as_str().to_owned() }
        }
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

    #[test]
    fn messages_round_trip() {
        let archive = rkyv::to_bytes::<rancor::Error>(&41u64).unwrap();
        let run = ToWorker::Run {
            task: WireTask { index: 3, generation: 9 },
            func: 2,
            inputs: vec![WireObject::Inline(archive.to_vec()), WireObject::Fd(0)],
        };
        let payload = encode(&run).unwrap();
        let fd = segment_fd(&rkyv::to_bytes::<rancor::Error>(&String::from("in a segment")).unwrap());
        match decode_to_worker(message(&payload, vec![fd])).unwrap() {
            WorkerMsg::Run { task, func, inputs } => {
                assert_eq!(task, TaskId { index: 3, generation: 9 });
                assert_eq!(func, 2);
                assert_eq!(read_owned::<u64>(&*inputs[0]).unwrap(), 41);
                assert_eq!(read_owned::<String>(&*inputs[1]).unwrap(), "in a segment");
            }
            WorkerMsg::Shutdown => panic!("decoded the wrong message"),
        }
        let hello = encode(&ToClient::Hello { fingerprint: split_fingerprint(u128::MAX - 5), pid: 77 }).unwrap();
        assert!(matches!(
            decode_to_client(message(&hello, vec![])).unwrap(),
            ClientMsg::Hello { fingerprint, pid: 77 } if fingerprint == u128::MAX - 5
        ));
        let failed = encode(&ToClient::Failed {
            task: WireTask { index: 1, generation: 1 },
            kind: FailKind::Panic,
            message: "boom".into(),
        })
        .unwrap();
        assert!(matches!(
            decode_to_client(message(&failed, vec![])).unwrap(),
            ClientMsg::Failed { kind: FailKind::Panic, message, .. } if message == "boom"
        ));
    }

    #[test]
    fn descriptor_indices_are_checked() {
        let done = |n| {
            encode(&ToClient::Done { task: WireTask { index: 0, generation: 0 }, result: WireObject::Fd(n), nbytes: 1 })
                .unwrap()
        };
        let archive = rkyv::to_bytes::<rancor::Error>(&1u8).unwrap();
        // Missing descriptor.
        assert!(decode_to_client(message(&done(0), vec![])).is_err());
        // Index out of range.
        assert!(decode_to_client(message(&done(1), vec![segment_fd(&archive)])).is_err());
        // A descriptor nobody names.
        let extra = vec![segment_fd(&archive), segment_fd(&archive)];
        assert!(decode_to_client(message(&done(0), extra)).is_err());
        // A descriptor that is not a sealed memfd.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = decode_to_client(message(&done(0), vec![a.as_fd().try_clone_to_owned().unwrap()])).err();
        assert!(err.is_some_and(|e| e.0.contains("descriptor 0")));
        // The same index twice.
        let run = ToWorker::Run {
            task: WireTask { index: 0, generation: 0 },
            func: 0,
            inputs: vec![WireObject::Fd(0), WireObject::Fd(0)],
        };
        assert!(decode_to_worker(message(&encode(&run).unwrap(), vec![segment_fd(&archive)])).is_err());
    }

    #[test]
    fn truncated_and_empty_payloads_are_errors() {
        let done = encode(&ToClient::Done {
            task: WireTask { index: 5, generation: 1 },
            result: WireObject::Inline(vec![1, 2, 3]),
            nbytes: 3,
        })
        .unwrap();
        for len in 0..done.len() {
            let _ = decode_to_client(message(&done[..len], vec![]));
        }
        assert!(decode_to_client(message(&[], vec![])).is_err());
        assert!(decode_to_worker(message(&[], vec![])).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes decode to a message or an error: never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_to_client(message(&bytes, vec![]));
            let _ = decode_to_worker(message(&bytes, vec![]));
        }

        /// A valid message with bytes flipped decodes or fails cleanly.
        #[test]
        fn corrupted_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = encode(&ToClient::Failed {
                task: WireTask { index: 7, generation: 2 },
                kind: FailKind::Error,
                message: String::from_utf8_lossy(&payload).into_owned(),
            })
            .unwrap()
            .to_vec();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let _ = decode_to_client(message(&bytes, vec![]));
            let run = encode(&ToWorker::Run {
                task: WireTask { index: 1, generation: 1 },
                func: 0,
                inputs: vec![WireObject::Inline(payload)],
            })
            .unwrap();
            let _ = decode_to_worker(message(&run, vec![]));
        }
    }
}
