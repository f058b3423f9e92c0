//! Segments across real processes, and the claim that none ever leaks.
//!
//! The child processes are this test binary re-executed (`current_exe`) with
//! a role in its environment and a filter that runs only [`child_process`]:
//! the same trick the processes mode uses to start its workers. The child
//! gets its end of a socket pair as an inherited descriptor, whose number
//! is in its environment.
//!
//! Every test here takes [`SERIAL`]: one spawns a child after making a
//! descriptor inheritable, which another test's child must not inherit, and
//! one counts all of this process's descriptors, which no other test may
//! open meanwhile.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::io::FdFlags;
use shoal_shm::{Segment, SegmentWriter, fdpass};

/// The child's role; unset in a normal test run.
const CHILD_ROLE: &str = "SHOAL_SHM_TEST_CHILD_ROLE";
/// The number of the child's inherited socket descriptor.
const CHILD_SOCKET: &str = "SHOAL_SHM_TEST_CHILD_SOCKET";
/// The name the child gives the segment it creates.
const CHILD_SEGMENT_NAME: &str = "SHOAL_SHM_TEST_CHILD_SEGMENT_NAME";

const ROLE_READ: &str = "read";
const ROLE_CREATE_AND_HOLD: &str = "create-and-hold";

/// Size of the segments sent across: several pages and a ragged end.
const SEGMENT_LEN: usize = (1 << 20) + 123;

/// The signal `Child::kill` sends.
const SIGKILL: i32 = 9;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i % 251) as u8) ^ seed).collect()
}

fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("shoal-test-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Entries of `/proc/<pid>/fd` and lines of `/proc/<pid>/maps` that are the
/// memfd called `name`, for one process (`"self"`) or all (`"*"`, skipping
/// what vanishes or is not ours to read).
fn memfd_uses(pid: &str, name: &str) -> (usize, usize) {
    let needle = format!("/memfd:{name} (deleted)");
    let pids: Vec<String> = if pid == "*" {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
            .collect()
    } else {
        vec![pid.to_owned()]
    };
    let (mut fds, mut maps) = (0, 0);
    for pid in pids {
        if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            fds += entries
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy() == needle)
                .count();
        }
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            maps += text.lines().filter(|line| line.ends_with(&needle)).count();
        }
    }
    (fds, maps)
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn sealed(data: &[u8], name: &str) -> Segment {
    let mut writer = SegmentWriter::create(data.len(), name).unwrap();
    writer.bytes_mut().copy_from_slice(data);
    writer.seal().unwrap()
}

fn inode(fd: impl AsFd) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).unwrap();
    (stat.st_dev, stat.st_ino)
}

/// Starts this binary as a child in `role`, with a connected socket.
/// Stderr is piped so that a failing child's panic can be shown.
fn spawn_child(role: &str, envs: &[(&str, &str)]) -> (Child, UnixStream) {
    let (parent_end, child_end) = UnixStream::pair().unwrap();
    // Inheritable by the child: clear close-on-exec on its end only.
    rustix::io::fcntl_setfd(&child_end, FdFlags::empty()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_SOCKET, child_end.as_raw_fd().to_string())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Our copy must go, or the child's end would never see end of stream.
    drop(child_end);
    (child, parent_end)
}

fn child_stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

/// Not a test of its own: the body of the child processes. In a normal run
/// (no role in the environment) it returns at once.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ROLE) else { return };
    let fd: RawFd = std::env::var(CHILD_SOCKET).unwrap().parse().unwrap();
    // SAFETY: the parent made this descriptor inheritable and put its number
    // in our environment: it is open in this process, it is the child's end
    // of a socket pair, and nothing else here knows it, so we are its only
    // owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC).unwrap();
    let socket = UnixStream::from(fd);
    match role.as_str() {
        ROLE_READ => child_read(&socket),
        ROLE_CREATE_AND_HOLD => child_create_and_hold(&socket),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Receives a segment, checks its bytes, and answers with the inode it
/// mapped and how much of its mapping is shared with another process.
fn child_read(socket: &UnixStream) {
    let mut message = fdpass::recv(socket).unwrap().expect("the parent sends a segment");
    let seed: u8 = String::from_utf8(message.payload).unwrap().parse().unwrap();
    assert_eq!(message.fds.len(), 1);
    let segment = Segment::from_fd(message.fds.remove(0)).unwrap();
    assert_eq!(segment.len(), SEGMENT_LEN);
    assert!(segment.bytes() == pattern(SEGMENT_LEN, seed), "the child sees other bytes than the parent wrote");
    let (dev, ino) = inode(&segment);
    let reply = format!("{dev} {ino} {}", shared_kib(segment.bytes()));
    fdpass::send(socket, reply.as_bytes(), &[]).unwrap();
    // Stay mapped until the parent has looked.
    assert!(fdpass::recv(socket).unwrap().is_none());
}

/// `Shared_Clean + Shared_Dirty` of the mapping that holds `bytes`, from
/// `/proc/self/smaps`: its pages that are mapped by more than one process —
/// here, the very pages the parent has mapped, not copies. (Pages written by
/// the segment's writer count as dirty.)
fn shared_kib(bytes: &[u8]) -> u64 {
    let start = format!("{:x}-", bytes.as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
    assert!(lines.next().is_some(), "the mapping is in smaps");
    let entry: Vec<&str> = lines.take_while(|line| !line.starts_with("VmFlags:")).collect();
    let field = |name: &str| -> u64 {
        let line = entry.iter().find_map(|line| line.strip_prefix(name)).unwrap();
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    };
    field("Shared_Clean:") + field("Shared_Dirty:")
}

/// Creates a segment, sends its descriptor, and holds it (descriptor and
/// mapping) until killed — or until the parent closes the socket.
fn child_create_and_hold(socket: &UnixStream) {
    let name = std::env::var(CHILD_SEGMENT_NAME).unwrap();
    let segment = sealed(&pattern(SEGMENT_LEN, 42), &name);
    fdpass::send(socket, b"42", &[segment.as_fd()]).unwrap();
    let _ = fdpass::recv(socket);
    drop(segment);
}

#[test]
fn another_process_reads_the_same_pages() {
    let _serial = serial();
    let seed = 7;
    let expected = pattern(SEGMENT_LEN, seed);
    let segment = sealed(&expected, &unique_name("cross-process"));
    // Fault every page into our mapping, so the child's pages are shared.
    assert!(segment.bytes() == expected);

    let (mut child, socket) = spawn_child(ROLE_READ, &[]);
    fdpass::send(&socket, seed.to_string().as_bytes(), &[segment.as_fd()]).unwrap();
    let Some(reply) = fdpass::recv(&socket).unwrap() else {
        panic!("the child answered nothing:\n{}", child_stderr(&mut child));
    };
    drop(socket);
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed ({status}):\n{}", child_stderr(&mut child));

    let reply = String::from_utf8(reply.payload).unwrap();
    let fields: Vec<u64> = reply.split(' ').map(|field| field.parse().unwrap()).collect();
    let (dev, ino) = inode(&segment);
    assert_eq!((fields[0], fields[1]), (dev, ino), "the child mapped the same memory object");
    let len_kib = (SEGMENT_LEN / 1024) as u64;
    assert!(fields[2] >= len_kib, "only {} of {len_kib} KiB shared: the child's pages are copies", fields[2]);
}

#[test]
fn killed_holder_leaks_nothing() {
    let _serial = serial();
    let name = unique_name("killed-holder");
    let (mut child, socket) = spawn_child(ROLE_CREATE_AND_HOLD, &[(CHILD_SEGMENT_NAME, &name)]);
    let Some(mut message) = fdpass::recv(&socket).unwrap() else {
        panic!("the child sent nothing:\n{}", child_stderr(&mut child));
    };
    assert_eq!(message.payload, b"42");
    let segment = Segment::from_fd(message.fds.remove(0)).unwrap();
    let child_pid = child.id().to_string();
    assert_eq!(memfd_uses(&child_pid, &name), (1, 1), "the child holds the segment, mapped");

    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(SIGKILL), "{status}");

    // Our mapping outlives its creator, unchanged.
    assert_eq!(segment.len(), SEGMENT_LEN);
    assert!(segment.bytes() == pattern(SEGMENT_LEN, 42));
    assert_eq!(memfd_uses("self", &name), (1, 1), "we hold it, mapped");
    assert_eq!(memfd_uses("*", &name), (1, 1), "and nobody else does");

    drop(segment);
    assert_eq!(memfd_uses("self", &name), (0, 0));
    assert_eq!(memfd_uses("*", &name), (0, 0), "no process on the machine holds it: it is freed");
    drop(socket);
}

#[test]
fn create_send_receive_drop_leaks_no_descriptor() {
    let _serial = serial();
    let name = unique_name("leak-loop");
    // Warm up whatever the loop allocates once (std's lazies, the harness).
    let _ = UnixStream::pair().unwrap();
    let before = open_fd_count();
    for round in 0..100u8 {
        let (tx, rx) = UnixStream::pair().unwrap();
        let data = pattern(4096 * 3 + usize::from(round), round);
        let segment = sealed(&data, &name);
        let copy = segment.try_clone_fd().unwrap();
        fdpass::send(&tx, &[round], &[segment.as_fd(), copy.as_fd()]).unwrap();
        let message = fdpass::recv(&rx).unwrap().unwrap();
        assert_eq!(message.payload, [round]);
        let received: Vec<Segment> = message.fds.into_iter().map(|fd| Segment::from_fd(fd).unwrap()).collect();
        assert!(received.iter().all(|r| r.bytes() == data));
        if round == 0 {
            // Positive control: while alive, all four are visible.
            assert_eq!(memfd_uses("self", &name), (4, 3));
        }
    }
    assert_eq!(open_fd_count(), before, "descriptors leaked");
    assert_eq!(memfd_uses("self", &name), (0, 0), "segments leaked");
}
