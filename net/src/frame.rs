//! Frames: the unit of the wire.
//!
//! # Format
//!
//! ```text
//! frame   = len: u32 big-endian | payload (len bytes, 1 <= len <= MAX_FRAME)
//! payload = kind: u8 | body
//!   HELLO   "SHOALNET" | version: u32 LE | rkyv archive   the first frame of a connecting peer
//!   MESSAGE blobs: u32 LE | blobs × len: u64 LE | rkyv archive
//!   CHUNK   raw bytes of a streamed object (at most CHUNK bytes)
//!   CLOSE   UTF-8 reason; the sender closes the connection after it
//! ```
//!
//! The length prefix is tokio-util's `LengthDelimitedCodec` (its default
//! layout) with a limit: [`HANDSHAKE_MAX_FRAME`] until the handshake is
//! done, [`MAX_FRAME`] after; a length over it is refused when the header is
//! read, before anything is allocated.
//!
//! A MESSAGE names the objects too large to travel inline (`blobs`, each
//! with its length); their bytes follow it at once, in order, as CHUNK
//! frames, so no object ever sits whole in one frame, and the receiver
//! knows every length before it reads a byte. A HELLO starts with a magic
//! string and the protocol version in a layout that never changes, so a
//! peer of another version is told so instead of failing on an archive it
//! cannot read. A CLOSE carries a reason the peer can read whatever its
//! version.
//!
//! [`parse`] turns a payload into a [`Frame`] and never panics, whatever
//! the bytes (a proptest below feeds it random ones, through the codec).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::error::{NetError, Result};

/// The protocol version a HELLO announces; peers of different versions
/// refuse each other.
pub const PROTOCOL_VERSION: u32 = 4;
/// The first bytes of a HELLO.
pub const MAGIC: &[u8; 8] = b"SHOALNET";
/// The largest frame payload accepted (after the handshake) or sent: one
/// message — a graph of about a million tasks fits; large objects are
/// streamed in chunks, never framed whole.
pub const MAX_FRAME: usize = 256 << 20;
/// The largest frame accepted before the handshake is done: a peer that
/// has not proved anything cannot make the receiver buffer more.
pub const HANDSHAKE_MAX_FRAME: usize = 64 << 10;
/// The most bytes of a streamed object in one CHUNK frame.
pub const CHUNK: usize = 1 << 20;
/// The most objects streamed after one message.
pub const MAX_BLOBS: usize = 1 << 16;

/// Frame kinds (the payload's first byte).
pub(crate) const HELLO: u8 = 1;
pub(crate) const MESSAGE: u8 = 2;
pub(crate) const CHUNK_KIND: u8 = 3;
pub(crate) const CLOSE: u8 = 4;

/// A frame, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A connecting peer's first frame: its protocol version, and its hello
    /// (an archive, to be read only if the version is ours).
    Hello {
        /// The version it speaks.
        version: u32,
        /// The archive of its hello.
        body: Bytes,
    },
    /// A message: the lengths of the objects streamed after it, and its
    /// archive.
    Message {
        /// One length per streamed object, in order.
        blobs: Vec<u64>,
        /// The message's archive (not validated yet).
        body: Bytes,
    },
    /// Bytes of a streamed object.
    Chunk(Bytes),
    /// The peer closes the connection, for this reason.
    Close(String),
}

/// The codec of frame lengths, with the limit of an established connection.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

/// Parses one frame's payload. Never panics.
pub fn parse(mut payload: Bytes) -> Result<Frame> {
    if payload.is_empty() {
        return Err(NetError::protocol("an empty frame"));
    }
    let kind = payload.get_u8();
    match kind {
        HELLO => {
            if payload.len() < MAGIC.len() + 4 || &payload[..MAGIC.len()] != MAGIC {
                return Err(NetError::protocol("not a shoal connection (the first frame has no SHOALNET hello)"));
            }
            payload.advance(MAGIC.len());
            let version = payload.get_u32_le();
            Ok(Frame::Hello { version, body: payload })
        }
        MESSAGE => {
            if payload.len() < 4 {
                return Err(NetError::protocol("a message frame too short for its header"));
            }
            let n = payload.get_u32_le() as usize;
            if n > MAX_BLOBS {
                return Err(NetError::protocol(format!(
                    "a message streams {n} objects, over the limit of {MAX_BLOBS}"
                )));
            }
            if payload.len() < n * 8 {
                return Err(NetError::protocol("a message frame too short for its object lengths"));
            }
            let blobs = (0..n).map(|_| payload.get_u64_le()).collect();
            Ok(Frame::Message { blobs, body: payload })
        }
        CHUNK_KIND => Ok(Frame::Chunk(payload)),
        CLOSE => Ok(Frame::Close(String::from_utf8_lossy(&payload).into_owned())),
        other => Err(NetError::protocol(format!("unknown frame kind {other}"))),
    }
}

/// Takes the next complete frame from `buf`, if there is one.
pub fn decode(codec: &mut LengthDelimitedCodec, buf: &mut BytesMut) -> Result<Option<Frame>> {
    match codec.decode(buf) {
        Ok(Some(payload)) => parse(payload.freeze()).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(NetError::protocol(format!("bad frame: {e} (the limit is {} bytes)", codec.max_frame_length()))),
    }
}

/// The 4-byte length prefix of a frame with a `len`-byte payload.
pub(crate) fn header(len: usize) -> Result<[u8; 4]> {
    if len > MAX_FRAME {
        return Err(NetError::protocol(format!(
            "refusing to send a frame of {len} bytes, over the limit of {MAX_FRAME} (a shoal bug: please report it)"
        )));
    }
    // In range after the check: MAX_FRAME < u32::MAX.
    Ok((len as u32).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(payload.len()).unwrap());
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn each_kind_parses_and_a_bad_one_is_an_error() {
        let mut codec = codec();
        let mut hello = vec![HELLO];
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&7u32.to_le_bytes());
        hello.extend_from_slice(b"body");
        let frame = decode(&mut codec, &mut framed(&hello)).unwrap().unwrap();
        assert_eq!(frame, Frame::Hello { version: 7, body: Bytes::from_static(b"body") });

        let mut message = vec![MESSAGE];
        message.extend_from_slice(&2u32.to_le_bytes());
        message.extend_from_slice(&5u64.to_le_bytes());
        message.extend_from_slice(&9u64.to_le_bytes());
        message.extend_from_slice(b"archive");
        let frame = decode(&mut codec, &mut framed(&message)).unwrap().unwrap();
        assert_eq!(frame, Frame::Message { blobs: vec![5, 9], body: Bytes::from_static(b"archive") });

        let frame = decode(&mut codec, &mut framed(b"\x04wrong secret")).unwrap().unwrap();
        assert_eq!(frame, Frame::Close("wrong secret".into()));
        for bad in [&b"\x09x"[..], b"", b"\x01SHOALNEX\x01\0\0\0", b"\x02\x05\0\0\0"] {
            let err = decode(&mut codec, &mut framed(bad)).unwrap_err();
            assert!(matches!(err, NetError::Protocol(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_from_the_header() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        buf.extend_from_slice(b"\x03 a few bytes only");
        let err = decode(&mut codec(), &mut buf).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(header(MAX_FRAME + 1).is_err(), "and never sent");
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let mut whole = framed(b"\x03chunk bytes");
        let mut buf = whole.split_to(7);
        let mut codec = codec();
        assert_eq!(decode(&mut codec, &mut buf).unwrap(), None);
        buf.extend_from_slice(&whole);
        assert_eq!(decode(&mut codec, &mut buf).unwrap(), Some(Frame::Chunk(Bytes::from_static(b"chunk bytes"))));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Random bytes into the decoder: frames or errors, never a panic,
        /// and never a frame over the limit.
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = codec();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut codec, &mut buf) {
                if let Frame::Message { blobs, .. } = frame {
                    prop_assert!(blobs.len() <= MAX_BLOBS);
                }
            }
        }

        /// Random payloads behind a valid length: parsed or refused, never a panic.
        #[test]
        fn random_payloads_never_panic_the_parser(kind in 0u8..6, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut payload = vec![kind];
            payload.extend_from_slice(&body);
            let _ = decode(&mut codec(), &mut framed(&payload));
        }
    }
}
