//! Passing file descriptors over a Unix stream socket (`SCM_RIGHTS`).
//!
//! This is how a segment moves between processes: its descriptor is sent,
//! the receiver maps the same memory, and no byte of the object is copied.
//!
//! # Protocol
//!
//! A message is one frame in the format of [`crate::frame`] (`u32` LE length,
//! then the payload) with `0..=MAX_FDS_PER_MESSAGE` descriptors attached as
//! `SCM_RIGHTS` ancillary data. The sender attaches them to its first
//! `sendmsg` of the frame, so they travel with the frame's first bytes.
//!
//! Why a frame: a stream socket has no message boundaries, but the kernel
//! delivers descriptors together with the bytes they were sent with. The
//! receiver reads exactly one frame — its reads never ask for more bytes
//! than the frame has left — so it never touches the next frame's bytes,
//! and every descriptor that arrives while it reads belongs to this frame.
//!
//! One wire format on a control socket: a frame written by
//! [`crate::frame::write_frame`] is a message without descriptors, and a
//! message without descriptors can be read by [`crate::frame::read_frame`].
//! (A descriptor sent to a reader using plain `read` is closed by the
//! kernel: lost, but not leaked.)
//!
//! How many descriptors a message should carry, and which object each is,
//! is for the payload to say; the caller checks that [`FdMessage::fds`]
//! matches it.
//!
//! # Bounds and failures
//!
//! - At most [`MAX_FDS_PER_MESSAGE`] descriptors per message. [`send`]
//!   refuses more before sending anything. [`recv`]'s control buffer holds
//!   that many (plus room for credentials, should the socket have
//!   `SO_PASSCRED`): more arrive cut off (`MSG_CTRUNC`) or over the count,
//!   and both are errors.
//! - `MSG_CTRUNC` on any read of a message is an error
//!   ([`ShmError::ControlTruncated`]): some descriptors were dropped by the
//!   kernel, and the message cannot be trusted to be whole.
//! - Every received descriptor is an [`OwnedFd`] from the moment `recvmsg`
//!   returns, before any check: a message that fails for any reason
//!   (truncation, a frame over the limit, end of stream, too many
//!   descriptors) closes all the descriptors that came with it. None leak.
//! - Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`): a process
//!   that spawns another does not hand them on.
//! - [`send`] uses `MSG_NOSIGNAL`: a vanished peer is an `EPIPE` error, not a
//!   SIGPIPE. `EINTR` is retried by both sides.
//! - The socket must be blocking: the control channel is served by threads.
//!   A non-blocking socket yields `WouldBlock` errors mid-message.
//! - After any error from [`recv`], the stream is somewhere inside a message:
//!   close the connection.

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

use crate::ShmError;
use crate::frame::{self, FRAME_HEADER_LEN, INITIAL_CAPACITY};

/// The most descriptors one message may carry. It bounds the receive
/// buffer (on the stack) and the descriptors a peer can push at once; a
/// batch of more segments is sent as several messages. (The kernel's own
/// limit, `SCM_MAX_FD`, is 253.)
pub const MAX_FDS_PER_MESSAGE: usize = 32;

/// Control buffer for sending: exactly the descriptors allowed.
const SEND_CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// Control buffer for receiving: the descriptors allowed, and credentials,
/// which the kernel adds to every read once `SO_PASSCRED` is set.
const RECV_CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE), ScmCredentials(1));

/// A received message: a frame's payload and the descriptors that came with it.
#[derive(Debug)]
pub struct FdMessage {
    /// The frame's payload.
    pub payload: Vec<u8>,
    /// The descriptors, in the order they were sent. Close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Sends one message: `payload` as a frame, with `fds` attached.
///
/// The descriptors are duplicated into the receiver by the kernel: the
/// caller keeps its own and may close them as soon as this returns.
pub fn send(socket: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ShmError> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(ShmError::TooManyFds { count: fds.len(), max: MAX_FDS_PER_MESSAGE });
    }
    let header = frame::encode_header(payload.len())?;
    let mut space = [MaybeUninit::<u8>::uninit(); SEND_CMSG_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // Cannot happen: the buffer is sized for MAX_FDS_PER_MESSAGE.
        return Err(ShmError::TooManyFds { count: fds.len(), max: MAX_FDS_PER_MESSAGE });
    }

    let total = FRAME_HEADER_LEN + payload.len();
    let mut sent = 0;
    while sent < total {
        let (head, body) = match sent.checked_sub(FRAME_HEADER_LEN) {
            None => (&header[sent..], payload),
            Some(in_payload) => (&[][..], &payload[in_payload..]),
        };
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        match rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(ShmError::io("sendmsg", ErrorKind::WriteZero.into())),
            Ok(n) => {
                sent += n;
                // The descriptors went with the bytes just sent; the rest of
                // a frame cut short (by a signal) goes without them.
                control.clear();
            }
            // Nothing was sent, descriptors included: send them again.
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ShmError::io("sendmsg", errno.into())),
        }
    }
    Ok(())
}

/// Receives one message; `Ok(None)` if the peer closed the connection
/// cleanly between messages.
pub fn recv(socket: &UnixStream) -> Result<Option<FdMessage>, ShmError> {
    // Owned from the first read on: any early return below closes them.
    let mut fds = Vec::new();

    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        let n = recv_some(socket, &mut header[got..], &mut fds)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ShmError::TruncatedFrame { part: "header", got, expected: FRAME_HEADER_LEN });
        }
        got += n;
    }
    let len = frame::decode_header(header)?;

    // Grow with the bytes that arrive, not with the length claimed: fill the
    // capacity there is, and double it only once it is full.
    let mut payload = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    while payload.len() < len {
        let filled = payload.len();
        let room = payload.capacity() - filled;
        let step = if room > 0 { room } else { filled.max(INITIAL_CAPACITY) }.min(len - filled);
        payload.resize(filled + step, 0);
        let n = recv_some(socket, &mut payload[filled..], &mut fds)?;
        payload.truncate(filled + n);
        if n == 0 {
            return Err(ShmError::TruncatedFrame { part: "payload", got: filled, expected: len });
        }
    }
    Ok(Some(FdMessage { payload, fds }))
}

/// One `recvmsg` into `buf`: returns the bytes read (0 at end of stream) and
/// appends the descriptors that came with them to `fds`.
fn recv_some(socket: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, ShmError> {
    let mut space = [MaybeUninit::<u8>::uninit(); RECV_CMSG_SPACE];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let result =
            rustix::net::recvmsg(socket, &mut [IoSliceMut::new(&mut *buf)], &mut control, RecvFlags::CMSG_CLOEXEC);
        // Take ownership of every descriptor before judging the message, so
        // that every error below closes them. (Anything left in `control`,
        // such as credentials, is dropped with it; rustix closes any
        // descriptor left undrained too.)
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let received = match result {
            Ok(received) => received,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ShmError::io("recvmsg", errno.into())),
        };
        if received.flags.contains(ReturnFlags::CTRUNC) {
            return Err(ShmError::ControlTruncated { max: MAX_FDS_PER_MESSAGE });
        }
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(ShmError::TooManyFds { count: fds.len(), max: MAX_FDS_PER_MESSAGE });
        }
        // A stream socket never reports more than fits; clamp all the same,
        // so that no kernel answer can make a caller index out of bounds.
        return Ok(received.bytes.min(buf.len()));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;
    use crate::segment::{Segment, SegmentWriter};
    use crate::test_util::{fds_named, unique_name};

    fn sealed(data: &[u8], name: &str) -> Segment {
        let mut writer = SegmentWriter::create(data.len(), name).unwrap();
        writer.bytes_mut().copy_from_slice(data);
        writer.seal().unwrap()
    }

    fn inode(fd: impl AsFd) -> (u64, u64) {
        let stat = rustix::fs::fstat(fd).unwrap();
        (stat.st_dev, stat.st_ino)
    }

    /// Sends `fds` on a frame header claiming `claimed_len` payload bytes, of
    /// which `payload` is sent — a peer that does not follow the protocol.
    fn send_raw(socket: &UnixStream, claimed_len: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(128))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        let header = claimed_len.to_le_bytes();
        let iov = [IoSlice::new(&header), IoSlice::new(payload)];
        let n = rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::empty()).unwrap();
        assert_eq!(n, header.len() + payload.len());
    }

    #[test]
    fn round_trip_maps_the_same_memory() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let name = unique_name("fdpass-roundtrip");
        let segments: Vec<Segment> = (0..3u8).map(|i| sealed(&[i; 10_000], &name)).collect();
        let fds: Vec<BorrowedFd<'_>> = segments.iter().map(Segment::as_fd).collect();
        send(&tx, b"three objects", &fds).unwrap();

        let message = recv(&rx).unwrap().unwrap();
        assert_eq!(message.payload, b"three objects");
        assert_eq!(message.fds.len(), 3);
        for (sent, received) in segments.iter().zip(message.fds) {
            // A new descriptor for the same memory object: same inode, no copy.
            assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&sent.as_fd()), std::os::fd::AsRawFd::as_raw_fd(&received));
            assert_eq!(inode(sent.as_fd()), inode(&received));
            let mapped = Segment::from_fd(received).unwrap();
            assert_eq!(mapped.bytes(), sent.bytes());
        }
    }

    #[test]
    fn received_descriptors_are_close_on_exec() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let segment = sealed(b"x", &unique_name("fdpass-cloexec"));
        send(&tx, b"", &[segment.as_fd()]).unwrap();
        let message = recv(&rx).unwrap().unwrap();
        let flags = rustix::io::fcntl_getfd(&message.fds[0]).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn messages_without_descriptors() {
        let (tx, rx) = UnixStream::pair().unwrap();
        send(&tx, b"no fds", &[]).unwrap();
        send(&tx, b"", &[]).unwrap();
        let message = recv(&rx).unwrap().unwrap();
        assert_eq!((message.payload.as_slice(), message.fds.len()), (&b"no fds"[..], 0));
        let message = recv(&rx).unwrap().unwrap();
        assert_eq!((message.payload.as_slice(), message.fds.len()), (&b""[..], 0));
    }

    #[test]
    fn back_to_back_messages_keep_their_own_descriptors() {
        // All four are queued before the first is read: a greedy reader
        // would take the next message's bytes and descriptors with one. The
        // third is larger than the reader's first buffer, so its growth is
        // covered too.
        let (tx, rx) = UnixStream::pair().unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&tx, 1 << 20).unwrap();
        let name = unique_name("fdpass-order");
        let (a, b, c, d) = (sealed(b"a", &name), sealed(b"b", &name), sealed(b"c", &name), sealed(b"d", &name));
        let large = vec![3u8; 2 * INITIAL_CAPACITY + 1000];
        send(&tx, b"first", &[a.as_fd()]).unwrap();
        send(&tx, b"second", &[b.as_fd(), c.as_fd()]).unwrap();
        send(&tx, &large, &[]).unwrap();
        send(&tx, b"fourth", &[d.as_fd()]).unwrap();

        let first = recv(&rx).unwrap().unwrap();
        assert_eq!(first.payload, b"first");
        assert_eq!(first.fds.iter().map(inode).collect::<Vec<_>>(), [inode(a.as_fd())]);
        let second = recv(&rx).unwrap().unwrap();
        assert_eq!(second.payload, b"second");
        assert_eq!(second.fds.iter().map(inode).collect::<Vec<_>>(), [inode(b.as_fd()), inode(c.as_fd())]);
        let third = recv(&rx).unwrap().unwrap();
        assert!(third.payload == large && third.fds.is_empty());
        let fourth = recv(&rx).unwrap().unwrap();
        assert_eq!(fourth.payload, b"fourth");
        assert_eq!(fourth.fds.iter().map(inode).collect::<Vec<_>>(), [inode(d.as_fd())]);
    }

    #[test]
    fn large_payload_round_trips() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let segment = sealed(b"with a big frame", &unique_name("fdpass-large"));
        let sender = {
            let payload = payload.clone();
            let fd = segment.try_clone_fd().unwrap();
            std::thread::spawn(move || send(&tx, &payload, &[fd.as_fd()]).unwrap())
        };
        let message = recv(&rx).unwrap().unwrap();
        sender.join().unwrap();
        assert_eq!(message.payload, payload);
        assert_eq!(message.fds.len(), 1);
    }

    #[test]
    fn one_wire_format_with_plain_frames() {
        let (mut tx, mut rx) = UnixStream::pair().unwrap();
        frame::write_frame(&mut tx, b"plain frame").unwrap();
        tx.flush().unwrap();
        let message = recv(&rx).unwrap().unwrap();
        assert_eq!((message.payload.as_slice(), message.fds.len()), (&b"plain frame"[..], 0));

        send(&tx, b"fd message", &[]).unwrap();
        assert_eq!(frame::read_frame(&mut rx).unwrap().unwrap(), b"fd message");
    }

    #[test]
    fn too_many_descriptors_refused_before_sending() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let segment = sealed(b"x", &unique_name("fdpass-toomany-send"));
        let fds = vec![segment.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        let err = send(&tx, b"too many", &fds).unwrap_err();
        assert!(matches!(err, ShmError::TooManyFds { count, .. } if count == MAX_FDS_PER_MESSAGE + 1), "{err}");
        // Nothing went out: the next message is the first one received.
        send(&tx, b"next", &fds[..MAX_FDS_PER_MESSAGE]).unwrap();
        let message = recv(&rx).unwrap().unwrap();
        assert_eq!(message.payload, b"next");
        assert_eq!(message.fds.len(), MAX_FDS_PER_MESSAGE);
    }

    #[test]
    fn excess_descriptors_from_a_peer_are_refused_and_closed() {
        // Just over the limit (may still fit the buffer's slack: caught by
        // the count) and well over it (cut off by the kernel: MSG_CTRUNC).
        for (extra, expect_ctrunc) in [(1, false), (20, true)] {
            let (tx, rx) = UnixStream::pair().unwrap();
            let name = unique_name("fdpass-excess");
            let segment = sealed(b"x", &name);
            let fds = vec![segment.as_fd(); MAX_FDS_PER_MESSAGE + extra];
            send_raw(&tx, 2, b"hi", &fds);
            drop(segment);
            assert_eq!(fds_named(&name), 0, "only the in-flight copies remain");

            let err = recv(&rx).unwrap_err();
            match err {
                ShmError::ControlTruncated { .. } => {}
                ShmError::TooManyFds { .. } if !expect_ctrunc => {}
                other => panic!("{extra} extra descriptors: unexpected {other}"),
            }
            assert_eq!(fds_named(&name), 0, "descriptors of a refused message are closed");
        }
    }

    #[test]
    fn descriptors_of_a_truncated_message_are_closed() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let name = unique_name("fdpass-truncated");
        let segment = sealed(b"x", &name);
        send_raw(&tx, 100, b"only ten b", &[segment.as_fd()]);
        drop(segment);
        drop(tx);
        let err = recv(&rx).unwrap_err();
        assert!(matches!(err, ShmError::TruncatedFrame { part: "payload", got: 10, expected: 100 }), "{err}");
        assert_eq!(fds_named(&name), 0);
    }

    #[test]
    fn descriptors_with_an_oversized_frame_are_closed() {
        let (tx, rx) = UnixStream::pair().unwrap();
        let name = unique_name("fdpass-oversized");
        let segment = sealed(b"x", &name);
        send_raw(&tx, u32::MAX, b"", &[segment.as_fd()]);
        drop(segment);
        let err = recv(&rx).unwrap_err();
        assert!(matches!(err, ShmError::FrameTooLarge { .. }), "{err}");
        assert_eq!(fds_named(&name), 0);
    }

    #[test]
    fn end_of_stream() {
        // Between messages: a clean end.
        let (tx, rx) = UnixStream::pair().unwrap();
        send(&tx, b"last", &[]).unwrap();
        drop(tx);
        assert_eq!(recv(&rx).unwrap().unwrap().payload, b"last");
        assert!(recv(&rx).unwrap().is_none());

        // Inside a header: an error.
        let (mut tx, rx) = UnixStream::pair().unwrap();
        tx.write_all(&[1, 0]).unwrap();
        drop(tx);
        let err = recv(&rx).unwrap_err();
        assert!(matches!(err, ShmError::TruncatedFrame { part: "header", got: 2, .. }), "{err}");
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (tx, rx) = UnixStream::pair().unwrap();
        drop(rx);
        let err = send(&tx, b"anyone?", &[]).unwrap_err();
        assert!(matches!(&err, ShmError::Io { source, .. } if source.kind() == ErrorKind::BrokenPipe), "{err}");
    }
}
