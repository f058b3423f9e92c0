//! A connection's two halves: a reader that yields whole messages (with the
//! objects streamed after them), and a writer task that sends queued
//! messages and heartbeats.
//!
//! # Invariants
//!
//! - **Liveness is bounded.** Every read of the socket is bounded by the
//!   connection's `idle` limit: a peer that sends nothing at all — not even
//!   the heartbeat it owes every `heartbeat` — for that long is lost. A long
//!   streamed object is no silence: each chunk counts.
//! - **Memory follows the bytes that arrive.** A streamed object's length is
//!   checked against [`MAX_ARCHIVE_LEN`] before a byte of it is read, and
//!   its buffer grows as chunks arrive, not to the announced length at once
//!   (a [`Landing::Segment`] maps the announced length, address space only:
//!   a fresh memory file's pages are allocated as bytes are written, a warm
//!   file's were allocated within the warm pool's budget).
//! - **Where large objects land.** On the heap by default; a reader told
//!   [`Landing::Segment`] (a machine's agent fetching inputs) reads every
//!   streamed object of at least [`MIN_SEGMENT`] bytes straight into a
//!   memory file of its own — from the warm pool when one is ready
//!   (`shoal_shm::warm`: pages already present, so the socket's bytes are
//!   copied at memory speed instead of faulting each page in) — and seals
//!   it before anything else sees it. Readers only ever get the sealed
//!   segment: its bytes never change; the file is this process's
//!   descriptor and mapping only, so a killed process leaks nothing.
//! - **The writer never interleaves:** a message and its streamed objects go
//!   out back to back, from one task, so a CHUNK always belongs to the last
//!   MESSAGE.
//! - A CLOSE from the peer ends the connection with the peer's reason.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rkyv::util::AlignedVec;
use shoal_core::object::{ArchiveSink, MAX_ARCHIVE_LEN, Obj};
use shoal_shm::growing::GrowingSegment;
use shoal_shm::warm::WarmPool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

use crate::error::{NetError, Result};
use crate::frame::{self, CHUNK, CHUNK_KIND, CLOSE, Frame, HELLO, MAGIC, MESSAGE, PROTOCOL_VERSION};
use crate::wire::{Blob, ObjectsIn, aligned};

/// The smallest streamed object a [`Landing::Segment`] reader puts in a
/// memory file of its own: the warm pool's smallest file (below it a
/// result faults its few pages in within a millisecond, and a file per
/// object would cost a descriptor for little).
pub const MIN_SEGMENT: usize = shoal_shm::warm::MIN_FILE;

/// Where a reader puts the large objects streamed to it.
#[derive(Clone, Default)]
pub enum Landing {
    /// In aligned heap memory (clients, the scheduler, tests).
    #[default]
    Heap,
    /// Objects of at least [`MIN_SEGMENT`] bytes in sealed memory files of
    /// their own, the first file from `pool` when it has one ready (a
    /// machine's agent: its store keeps them, its worker processes map
    /// them, its data port serves them, and none is copied again). Taking
    /// a file the pool is still making waits for its current chunk, at most
    /// `shoal_shm::warm::CLAIM_WAIT` (100 ms), on the reading task's thread.
    Segment {
        /// The warm pool, if the process has one.
        pool: Option<Arc<WarmPool>>,
    },
}

/// Received objects landed in segments so far (they name their files).
static LANDED: AtomicU64 = AtomicU64::new(0);

/// A message received: its archive (aligned, not validated yet) and the
/// objects streamed after it.
pub struct Incoming {
    /// The archive.
    pub body: AlignedVec,
    /// The streamed objects.
    pub objects: ObjectsIn,
}

/// Something to send.
pub enum Outgoing {
    /// A message, and the objects to stream after it.
    Message {
        /// The message's archive.
        body: AlignedVec,
        /// The objects it names as streamed, in order.
        blobs: Vec<Obj>,
    },
    /// Say why, then close the connection.
    Close(String),
}

impl Outgoing {
    /// A message without streamed objects.
    pub fn message(body: AlignedVec) -> Outgoing {
        Outgoing::Message { body, blobs: Vec::new() }
    }
}

/// The reading half.
pub struct FrameReader<R> {
    io: R,
    codec: LengthDelimitedCodec,
    buf: BytesMut,
    /// Who is at the other end (for errors).
    pub peer: String,
    /// The longest the peer may stay silent.
    pub idle: Duration,
    /// Where large streamed objects land.
    pub landing: Landing,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of `io`, talking to `peer`.
    /// Until [`FrameReader::established`], frames are limited to
    /// [`frame::HANDSHAKE_MAX_FRAME`].
    pub fn new(io: R, peer: String, idle: Duration) -> FrameReader<R> {
        let mut codec = frame::codec();
        codec.set_max_frame_length(frame::HANDSHAKE_MAX_FRAME);
        FrameReader { io, codec, buf: BytesMut::with_capacity(64 << 10), peer, idle, landing: Landing::Heap }
    }

    /// The handshake is done: frames up to [`frame::MAX_FRAME`] are accepted.
    pub fn established(&mut self) {
        self.codec.set_max_frame_length(frame::MAX_FRAME);
    }

    /// The next frame; `None` when the peer closed the stream between frames.
    pub async fn frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = frame::decode(&mut self.codec, &mut self.buf)? {
                return Ok(Some(frame));
            }
            let read = tokio::time::timeout(self.idle, self.io.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => {
                    return Err(NetError::Lost {
                        peer: self.peer.clone(),
                        reason: format!("it sent nothing for {:?}", self.idle),
                    });
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err(NetError::protocol("the stream ended inside a frame")),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame, where the end of the stream or a CLOSE is an error.
    pub async fn expect_frame(&mut self) -> Result<Frame> {
        match self.frame().await? {
            Some(Frame::Close(reason)) => Err(NetError::Refused { peer: self.peer.clone(), reason }),
            Some(frame) => Ok(frame),
            None => Err(NetError::Lost { peer: self.peer.clone(), reason: "it closed the connection".into() }),
        }
    }

    /// The next message with its streamed objects.
    pub async fn message(&mut self) -> Result<Incoming> {
        match self.message_or_end().await? {
            Some(message) => Ok(message),
            None => Err(NetError::Lost { peer: self.peer.clone(), reason: "it closed the connection".into() }),
        }
    }

    /// The next message with its streamed objects; `None` when the peer
    /// closed the stream between messages.
    pub async fn message_or_end(&mut self) -> Result<Option<Incoming>> {
        let (blobs, body) = match self.frame().await? {
            None => return Ok(None),
            Some(Frame::Message { blobs, body }) => (blobs, body),
            Some(Frame::Close(reason)) => return Err(NetError::Refused { peer: self.peer.clone(), reason }),
            Some(other) => {
                return Err(NetError::protocol(format!("expected a message, got {}", kind_name(&other))));
            }
        };
        let mut objects = Vec::with_capacity(blobs.len());
        for len in blobs {
            objects.push(self.blob(len).await?);
        }
        Ok(Some(Incoming { body: aligned(&body), objects: ObjectsIn::from_blobs(objects) }))
    }

    /// One streamed object of `len` bytes, from its chunks, where the
    /// reader's [`Landing`] puts it.
    ///
    /// A CHUNK's payload goes from the socket straight into the object's
    /// memory (what is already buffered is copied from the buffer): one
    /// copy, not two (socket → frame buffer → object). The header is
    /// checked as the codec would (kind, length within the frame limit and
    /// the object) before a byte of the payload is read; any other frame
    /// takes the general path and is refused there.
    async fn blob(&mut self, len: u64) -> Result<Blob> {
        let len = usize::try_from(len).ok().filter(|&l| l <= MAX_ARCHIVE_LEN).ok_or_else(|| {
            NetError::protocol(format!("a streamed object of {len} bytes, over the limit of {MAX_ARCHIVE_LEN}"))
        })?;
        if let Landing::Segment { pool } = &self.landing
            && len >= MIN_SEGMENT
        {
            let name = format!("shoal-a{}-fetched-{}", std::process::id(), LANDED.fetch_add(1, Ordering::Relaxed));
            let mut segment = GrowingSegment::with_pool(name, pool.clone());
            match segment.reserve(len) {
                Ok(memory) => {
                    let memory = &mut memory[..len];
                    let mut at = 0;
                    while at < len {
                        let payload = self.next_chunk(len - at).await?;
                        let buffered = payload.min(self.buf.len());
                        memory[at..at + buffered].copy_from_slice(&self.buf[..buffered]);
                        self.buf.advance(buffered);
                        self.read_exact(&mut memory[at + buffered..at + payload]).await?;
                        at += payload;
                    }
                    let sealed = segment.seal(len).map_err(|e| NetError::Memory(e.to_string()))?;
                    return Ok(Blob::Segment(sealed));
                }
                // The heap still serves (the store then keeps it there, or
                // copies it into a segment when processes need one).
                Err(e) => tracing::warn!("a received object lands on the heap: no memory file for it ({e})"),
            }
        }
        let mut bytes = AlignedVec::with_capacity(len.min(4 * CHUNK));
        while bytes.len() < len {
            let payload = self.next_chunk(len - bytes.len()).await?;
            let buffered = payload.min(self.buf.len());
            bytes.extend_from_slice(&self.buf[..buffered]);
            self.buf.advance(buffered);
            self.read_into(&mut bytes, payload - buffered).await?;
        }
        Ok(Blob::Heap(bytes))
    }

    /// The next chunk of a streamed object with `left` bytes still to come:
    /// its header consumed, its payload's length (within `left`).
    async fn next_chunk(&mut self, left: usize) -> Result<usize> {
        let Some(payload) = self.chunk_header().await? else {
            return match self.expect_frame().await? {
                Frame::Chunk(_) => Err(NetError::protocol("a chunk runs past the end of its object")),
                other => {
                    Err(NetError::protocol(format!("expected a chunk of a streamed object, got {}", kind_name(&other))))
                }
            };
        };
        if payload > left {
            return Err(NetError::protocol("a chunk runs past the end of its object"));
        }
        Ok(payload)
    }

    /// Fills `out` from the socket (each read within the idle limit).
    async fn read_exact(&mut self, mut out: &mut [u8]) -> Result<()> {
        while !out.is_empty() {
            let got = match tokio::time::timeout(self.idle, self.io.read(out)).await {
                Err(_) => return Err(self.silent()),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(got)) => got,
            };
            if got == 0 {
                return Err(NetError::protocol("the stream ended inside a frame"));
            }
            out = &mut out[got..];
        }
        Ok(())
    }

    /// If the next frame is a CHUNK, consumes its header and gives its
    /// payload's length; `None` (nothing consumed) for any other frame, or
    /// a length the codec would refuse.
    async fn chunk_header(&mut self) -> Result<Option<usize>> {
        while self.buf.len() < CHUNK_HEADER {
            self.fill().await?;
        }
        let frame_len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if self.buf[4] != CHUNK_KIND || frame_len == 0 || frame_len > self.codec.max_frame_length() {
            return Ok(None);
        }
        self.buf.advance(CHUNK_HEADER);
        Ok(Some(frame_len - 1))
    }

    /// Reads more into the frame buffer (within the idle limit); the end of
    /// the stream here is inside a frame.
    async fn fill(&mut self) -> Result<()> {
        match tokio::time::timeout(self.idle, self.io.read_buf(&mut self.buf)).await {
            Err(_) => Err(self.silent()),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(0)) if self.buf.is_empty() => {
                Err(NetError::Lost { peer: self.peer.clone(), reason: "it closed the connection".into() })
            }
            Ok(Ok(0)) => Err(NetError::protocol("the stream ended inside a frame")),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads exactly `n` bytes from the socket onto the end of `bytes`
    /// (each read within the idle limit).
    async fn read_into(&mut self, bytes: &mut AlignedVec, mut n: usize) -> Result<()> {
        bytes.reserve(n);
        while n > 0 {
            let start = bytes.len();
            // SAFETY: `reserve` made room for at least `n` more bytes past
            // `len`, so `start..start + n` lies inside the allocation; the
            // slice is of `MaybeUninit` (no claim that it is initialized),
            // and it is dropped before `bytes` is touched again.
            let spare =
                unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().add(start).cast::<MaybeUninit<u8>>(), n) };
            let mut out = ReadBuf::uninit(spare);
            let read = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_read(cx, &mut out));
            match tokio::time::timeout(self.idle, read).await {
                Err(_) => return Err(self.silent()),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(())) => {}
            }
            let got = out.filled().len();
            if got == 0 {
                return Err(NetError::protocol("the stream ended inside a frame"));
            }
            // SAFETY: the reader initialized the first `got` bytes of the
            // spare room (`ReadBuf::filled`), and `start + got <= start + n`
            // is within the capacity reserved above.
            unsafe { bytes.set_len(start + got) };
            n -= got;
        }
        Ok(())
    }

    fn silent(&self) -> NetError {
        NetError::Lost { peer: self.peer.clone(), reason: format!("it sent nothing for {:?}", self.idle) }
    }
}

/// A frame's length prefix and its kind byte.
const CHUNK_HEADER: usize = 5;

fn kind_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "a hello",
        Frame::Message { .. } => "a message",
        Frame::Chunk(_) => "a chunk",
        Frame::Close(_) => "a close",
    }
}

/// The writing half (buffered: [`FrameWriter::flush`] sends).
pub struct FrameWriter<W: AsyncWrite> {
    io: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer to `io`.
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter { io: BufWriter::with_capacity(256 << 10, io) }
    }

    async fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<()> {
        let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        self.io.write_all(&frame::header(len)?).await?;
        self.io.write_all(&[kind]).await?;
        for part in parts {
            self.io.write_all(part).await?;
        }
        Ok(())
    }

    /// Writes a HELLO frame.
    pub async fn hello(&mut self, body: &[u8]) -> Result<()> {
        self.frame(HELLO, &[MAGIC, &PROTOCOL_VERSION.to_le_bytes(), body]).await?;
        self.flush().await
    }

    /// Writes one outgoing item (not flushed). `Ok(false)` after a close.
    pub async fn send(&mut self, out: &Outgoing) -> Result<bool> {
        match out {
            Outgoing::Message { body, blobs } => {
                let mut header = Vec::with_capacity(4 + 8 * blobs.len());
                header.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
                let mut archives = Vec::with_capacity(blobs.len());
                for obj in blobs {
                    let bytes = obj.archived_bytes().map_err(|e| NetError::protocol(e.to_string()))?;
                    header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    archives.push(bytes);
                }
                self.frame(MESSAGE, &[&header, body]).await?;
                for bytes in archives {
                    for chunk in bytes.chunks(CHUNK) {
                        self.frame(CHUNK_KIND, &[chunk]).await?;
                    }
                }
                Ok(true)
            }
            Outgoing::Close(reason) => {
                self.frame(CLOSE, &[reason.as_bytes()]).await?;
                self.flush().await?;
                Ok(false)
            }
        }
    }

    /// Sends everything written.
    pub async fn flush(&mut self) -> Result<()> {
        self.io.flush().await?;
        Ok(())
    }

    /// Says why and closes (errors ignored: the connection is going anyway).
    pub async fn close(mut self, reason: String) {
        let _ = self.send(&Outgoing::Close(reason)).await;
        let _ = self.io.shutdown().await;
    }
}

/// The writer task of a connection: sends what is queued (everything queued
/// at the moment in one flush) and a heartbeat every `heartbeat`, until the
/// queue's senders are all gone, a `Close` is sent, or the socket fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    heartbeat: AlignedVec,
    every: Duration,
) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(out) = next else { break };
                if !writer.send(&out).await? {
                    return Ok(());
                }
                while let Ok(out) = rx.try_recv() {
                    if !writer.send(&out).await? {
                        return Ok(());
                    }
                }
                writer.flush().await?;
            }
            _ = tick.tick() => {
                writer.send(&Outgoing::message(heartbeat.clone())).await?;
                writer.flush().await?;
            }
        }
    }
    let _ = writer.io.shutdown().await;
    Ok(())
}
