//! Large objects are streamed in chunks, never whole in one frame, and
//! arrive intact.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rkyv::util::AlignedVec;
use shoal_core::object::{Obj, RawArchive};
use shoal_net::conn::{FrameReader, FrameWriter, Landing, MIN_SEGMENT, Outgoing};
use shoal_net::frame::{self, CHUNK, Frame};
use shoal_net::wire::{self, ObjectsOut, WireObject};
use shoal_shm::SegmentObject;
use shoal_shm::warm::WarmPool;

fn object(len: usize) -> Obj {
    let mut bytes = AlignedVec::with_capacity(len);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bytes.extend_from_slice(&data);
    Arc::new(RawArchive::new(bytes))
}

#[tokio::test]
async fn a_large_object_travels_in_chunks_and_arrives_whole() {
    let big = object(3 * CHUNK + 12_345);
    let small = object(100);
    let mut out = ObjectsOut::default();
    let message = vec![out.object(&small).unwrap(), out.object(&big).unwrap()];
    assert!(matches!(message[0], WireObject::Inline(_)));
    assert_eq!(message[1], WireObject::Streamed(0));
    let body = wire::to_bytes(&message).unwrap();

    let (a, b) = tokio::io::duplex(64 << 10);
    let writing = tokio::spawn(async move {
        let mut writer = FrameWriter::new(a);
        writer.send(&Outgoing::Message { body, blobs: out.blobs }).await.unwrap();
        writer.flush().await.unwrap();
    });
    // Read the raw frames first, to see the chunks.
    let mut raw = Vec::new();
    let mut b = b;
    tokio::io::AsyncReadExt::read_to_end(&mut b, &mut raw).await.unwrap();
    writing.await.unwrap();
    let mut codec = frame::codec();
    let mut buf = BytesMut::from(&raw[..]);
    let mut chunks = Vec::new();
    while let Some(frame) = frame::decode(&mut codec, &mut buf).unwrap() {
        if let Frame::Chunk(c) = frame {
            chunks.push(c.len());
        }
    }
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    assert!(chunks.iter().all(|&c| c <= CHUNK));

    // And through the reader: the message with its object, intact.
    let mut reader = FrameReader::new(&raw[..], "test".into(), Duration::from_secs(5));
    reader.established();
    let incoming = reader.message().await.unwrap();
    let archived = wire::access::<Vec<WireObject>>(&incoming.body).unwrap();
    let mut objects = incoming.objects;
    let first = objects.take(&archived[0]).unwrap();
    let second = objects.take(&archived[1]).unwrap();
    objects.finish().unwrap();
    assert_eq!(first.archived_bytes().unwrap(), small.archived_bytes().unwrap());
    assert_eq!(second.archived_bytes().unwrap(), big.archived_bytes().unwrap());
}

#[tokio::test]
async fn a_chunk_past_its_object_or_a_missing_one_is_a_protocol_error() {
    // A message announcing one 10-byte object, followed by a 20-byte chunk.
    let mut bytes = Vec::new();
    let body = wire::to_bytes(&WireObject::Streamed(0)).unwrap();
    let mut payload = vec![2u8];
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&10u64.to_le_bytes());
    payload.extend_from_slice(&body);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&payload);
    let mut chunk = vec![3u8];
    chunk.extend_from_slice(&[7; 20]);
    bytes.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&chunk);
    let mut reader = FrameReader::new(&bytes[..], "test".into(), Duration::from_secs(5));
    let err = reader.message().await.err().unwrap();
    assert!(err.to_string().contains("runs past the end"), "{err}");

    // The stream ends before the object's bytes.
    let cut = &bytes[..4 + payload.len()];
    let mut reader = FrameReader::new(cut, "test".into(), Duration::from_secs(5));
    assert!(reader.message().await.is_err());
}

/// Hands out the bytes a few at a time (1 to 13, then a large read now
/// and then), so frame headers and chunk payloads are split across reads
/// anywhere.
struct Dribble<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Dribble<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.step += 1;
        let size = if self.step.is_multiple_of(17) { 300_000 } else { 1 + self.step % 13 };
        let n = size.min(buf.remaining()).min(self.bytes.len());
        buf.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn streamed_objects_arrive_whole_whatever_the_sizes_of_the_reads() {
    read_dribbled(Landing::Heap, 0).await;
}

#[tokio::test]
async fn streamed_objects_land_whole_in_sealed_segments_whatever_the_sizes_of_the_reads() {
    // Fresh memory files, then warm ones (the pool's file may be handed
    // over part-made, or missed: either way the bytes must be right).
    read_dribbled(Landing::Segment { pool: None }, 4).await;
    let pool = Arc::new(WarmPool::with_idle(16 << 20, Duration::from_secs(3600)));
    read_dribbled(Landing::Segment { pool: Some(Arc::clone(&pool)) }, 4).await;
    let stats = pool.stats();
    assert!(stats.taken + stats.handed + stats.missed >= 4, "every large object asked the pool: {stats:?}");
}

/// Two messages of three objects (two over `MIN_SEGMENT`) read a few bytes
/// at a time, landing as `landing` says; `segments` of them must land in
/// sealed segments.
async fn read_dribbled(landing: Landing, segments: usize) {
    let objects = [object(2 * CHUNK + 7), object(CHUNK), object(70_000)];
    let mut out = ObjectsOut::default();
    let message: Vec<WireObject> = objects.iter().map(|o| out.object(o).unwrap()).collect();
    let body = wire::to_bytes(&message).unwrap();
    let mut raw = Vec::new();
    let mut writer = FrameWriter::new(&mut raw);
    writer.send(&Outgoing::Message { body: body.clone(), blobs: out.blobs.clone() }).await.unwrap();
    writer.send(&Outgoing::Message { body, blobs: out.blobs }).await.unwrap();
    writer.flush().await.unwrap();
    drop(writer);
    let mut reader = FrameReader::new(Dribble { bytes: &raw, step: 0 }, "test".into(), Duration::from_secs(5));
    reader.established();
    reader.landing = landing;
    let mut in_segments = 0;
    for _ in 0..2 {
        let incoming = reader.message().await.unwrap();
        let archived = wire::access::<Vec<WireObject>>(&incoming.body).unwrap();
        let mut got = incoming.objects;
        for (wire, sent) in archived.iter().zip(&objects) {
            let obj = got.take(wire).unwrap();
            assert_eq!(obj.archived_bytes().unwrap(), sent.archived_bytes().unwrap());
            if let Some(segment) = obj.as_any().downcast_ref::<SegmentObject>() {
                assert!(sent.archived_bytes().unwrap().len() >= MIN_SEGMENT);
                assert_eq!(segment.segment().len(), sent.archived_bytes().unwrap().len());
                in_segments += 1;
            }
        }
        got.finish().unwrap();
    }
    assert_eq!(in_segments, segments);
    assert!(reader.message_or_end().await.unwrap().is_none());
}
