//! Length-prefixed frames over a byte stream.
//!
//! These frames carry the control messages between a client and its worker
//! processes; segment descriptors ride on them ([`crate::fdpass`]), and
//! object bytes stay in the segments.
//!
//! # Wire format
//!
//! ```text
//! frame = len: u32, little-endian | payload: len bytes      (0 <= len <= MAX_FRAME_LEN)
//! ```
//!
//! # Rules
//!
//! - **Bounded.** A length over [`MAX_FRAME_LEN`] is refused as soon as the
//!   header is read, before anything is allocated for it; the sender refuses
//!   to write such a frame in the first place.
//! - **Memory follows the bytes that arrive**, not the length claimed: the
//!   payload buffer starts at no more than [`INITIAL_CAPACITY`] and grows as
//!   data comes in, so a peer that announces 64 MiB and sends ten bytes costs
//!   64 KiB, not 64 MiB.
//! - **End of stream between frames is not an error**: [`read_frame`]
//!   returns `Ok(None)`, the peer closed the connection. End of stream inside
//!   a frame, header or payload, is [`ShmError::TruncatedFrame`].
//! - **Zero-length frames are valid** and carry an empty message (an rkyv
//!   archive of a unit-like type is empty). They are unambiguous — four
//!   zero bytes — and cost nothing to accept, while refusing them would make
//!   the frame layer judge payloads it knows nothing about.
//! - **Errors are final.** After any error the stream is somewhere inside a
//!   frame: close the connection (a bad frame closes that connection and
//!   harms nothing else). Interrupted reads and writes are retried, never
//!   reported.
//! - **No panics, whatever the input**: every length is checked before use.

use std::io::{ErrorKind, Read, Write};

use crate::ShmError;

/// Size of a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest payload a frame may carry: 64 MiB. Control messages are small;
/// object bytes travel in shared-memory segments, so anything near this is a
/// bug or a hostile peer.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// The most a reader allocates for a payload before its bytes arrive.
pub const INITIAL_CAPACITY: usize = 64 << 10;

// The limit must fit the u32 prefix.
const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);

/// The length prefix of a frame carrying `len` bytes, if `len` is allowed.
pub fn encode_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], ShmError> {
    let too_large = || ShmError::FrameTooLarge { len: len as u64, max: MAX_FRAME_LEN };
    if len > MAX_FRAME_LEN {
        return Err(too_large());
    }
    let len = u32::try_from(len).map_err(|_| too_large())?;
    Ok(len.to_le_bytes())
}

/// The payload length announced by a length prefix, if it is allowed.
pub fn decode_header(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, ShmError> {
    let len = u32::from_le_bytes(header);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME_LEN => Ok(len),
        _ => Err(ShmError::FrameTooLarge { len: len.into(), max: MAX_FRAME_LEN }),
    }
}

/// Writes one frame. Does not flush: wrap a socket in a `BufWriter` to
/// batch small frames, and flush when a batch is done.
pub fn write_frame<W: Write + ?Sized>(writer: &mut W, payload: &[u8]) -> Result<(), ShmError> {
    let header = encode_header(payload.len())?;
    writer.write_all(&header).map_err(|source| ShmError::io("writing a frame header", source))?;
    writer.write_all(payload).map_err(|source| ShmError::io("writing a frame payload", source))
}

/// Reads one frame's payload; `Ok(None)` if the stream ended cleanly before
/// the frame began.
pub fn read_frame<R: Read + ?Sized>(reader: &mut R) -> Result<Option<Vec<u8>>, ShmError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_up_to(reader, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < FRAME_HEADER_LEN {
        return Err(ShmError::TruncatedFrame { part: "header", got, expected: FRAME_HEADER_LEN });
    }
    let len = decode_header(header)?;
    let mut payload = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    // `take` stops at the frame's end; `read_to_end` grows the buffer only as
    // bytes arrive and retries interrupted reads.
    reader
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(|source| ShmError::io("reading a frame payload", source))?;
    if payload.len() < len {
        return Err(ShmError::TruncatedFrame { part: "payload", got: payload.len(), expected: len });
    }
    Ok(Some(payload))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<usize, ShmError> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => return Err(ShmError::io("reading a frame header", source)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor};

    use proptest::prelude::*;

    use super::*;

    fn encode(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            write_frame(&mut out, payload).unwrap();
        }
        out
    }

    /// A reader that hands out at most `chunk` bytes per call and fails
    /// every other call with `Interrupted`, like a busy socket.
    struct Trickle {
        inner: Cursor<Vec<u8>>,
        chunk: usize,
        interrupt: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.chunk);
            self.inner.read(&mut buf[..n])
        }
    }

    #[test]
    fn round_trip() {
        let frames: [&[u8]; 4] = [b"hello", b"", &[0xFF; 100_000], b"x"];
        let mut cursor = Cursor::new(encode(&frames));
        for expected in frames {
            assert_eq!(read_frame(&mut cursor).unwrap().as_deref(), Some(expected));
        }
        assert_eq!(read_frame(&mut cursor).unwrap(), None, "clean end between frames");
        assert_eq!(read_frame(&mut cursor).unwrap(), None, "and it stays ended");
    }

    #[test]
    fn wire_format_is_u32_le_length_then_payload() {
        assert_eq!(encode(&[b"abc"]), [3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(encode(&[b""]), [0, 0, 0, 0]);
        let long = vec![7u8; 0x01_02_03];
        assert_eq!(&encode(&[&long])[..4], &[0x03, 0x02, 0x01, 0x00]);
    }

    #[test]
    fn short_and_interrupted_reads() {
        let frames: [&[u8]; 3] = [b"split across many reads", b"", &[1, 2, 3, 4, 5, 6, 7, 8, 9]];
        for chunk in [1, 2, 3, 5, 64] {
            let mut reader = Trickle { inner: Cursor::new(encode(&frames)), chunk, interrupt: false };
            for expected in frames {
                assert_eq!(read_frame(&mut reader).unwrap().as_deref(), Some(expected), "chunk {chunk}");
            }
            assert_eq!(read_frame(&mut reader).unwrap(), None);
        }
    }

    #[test]
    fn limit_is_inclusive() {
        // A header of exactly the limit is accepted (then truncated: no
        // payload follows); one byte more is refused at the header.
        let at_limit = (MAX_FRAME_LEN as u32).to_le_bytes();
        let err = read_frame(&mut Cursor::new(at_limit)).unwrap_err();
        assert!(matches!(err, ShmError::TruncatedFrame { part: "payload", got: 0, .. }), "{err}");
        let over = (MAX_FRAME_LEN as u32 + 1).to_le_bytes();
        let err = read_frame(&mut Cursor::new(over)).unwrap_err();
        assert!(matches!(err, ShmError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn over_limit_length_refused_before_payload() {
        // Payload bytes follow, but the reader must stop at the header.
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        let mut cursor = Cursor::new(bytes);
        let err = read_frame(&mut cursor).unwrap_err();
        assert!(matches!(err, ShmError::FrameTooLarge { len, .. } if len == u64::from(u32::MAX)), "{err}");
        assert_eq!(cursor.position(), FRAME_HEADER_LEN as u64, "nothing read past the header");
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn writer_refuses_over_limit_payload() {
        let payload = vec![0u8; MAX_FRAME_LEN + 1];
        let mut out = Vec::new();
        assert!(matches!(write_frame(&mut out, &payload), Err(ShmError::FrameTooLarge { .. })));
        assert!(out.is_empty(), "nothing written");
    }

    #[test]
    fn truncated_header_is_an_error() {
        for len in 1..FRAME_HEADER_LEN {
            let err = read_frame(&mut Cursor::new(vec![5u8; len])).unwrap_err();
            assert!(matches!(err, ShmError::TruncatedFrame { part: "header", got, .. } if got == len), "{err}");
        }
    }

    #[test]
    fn truncated_payload_is_an_error() {
        let mut bytes = encode(&[b"0123456789"]);
        bytes.truncate(FRAME_HEADER_LEN + 4);
        let err = read_frame(&mut Cursor::new(bytes)).unwrap_err();
        assert!(matches!(err, ShmError::TruncatedFrame { part: "payload", got: 4, expected: 10 }), "{err}");
    }

    #[test]
    fn io_errors_are_reported() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        assert!(matches!(read_frame(&mut Broken), Err(ShmError::Io { .. })));
    }

    fn check_garbage(bytes: Vec<u8>, chunk: usize) -> Result<(), TestCaseError> {
        let total = bytes.len();
        let mut reader = Trickle { inner: Cursor::new(bytes), chunk, interrupt: false };
        let mut consumed = 0;
        loop {
            match read_frame(&mut reader) {
                Ok(Some(payload)) => {
                    consumed += FRAME_HEADER_LEN + payload.len();
                    prop_assert!(payload.len() <= MAX_FRAME_LEN);
                    prop_assert!(consumed <= total);
                }
                Ok(None) => {
                    prop_assert_eq!(consumed, total);
                    return Ok(());
                }
                Err(_) => return Ok(()),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any byte string is read as frames then a clean end or one error:
        /// never a panic, never a frame over the limit, never a frame that
        /// was not in the input.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..16) {
            check_garbage(bytes, chunk)?;
        }

        /// The same, with a plausible first length so that payload and
        /// second-header paths are reached, not just the limit check.
        #[test]
        fn garbage_behind_a_small_length_never_panics(
            first_len in 0u32..600,
            rest in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..16,
        ) {
            let mut bytes = first_len.to_le_bytes().to_vec();
            bytes.extend_from_slice(&rest);
            check_garbage(bytes, chunk)?;
        }

        #[test]
        fn any_frames_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let mut cursor = Cursor::new(encode(&refs));
            for payload in &payloads {
                prop_assert_eq!(read_frame(&mut cursor).unwrap(), Some(payload.clone()));
            }
            prop_assert_eq!(read_frame(&mut cursor).unwrap(), None);
        }
    }
}
