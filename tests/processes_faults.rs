//! Faults around a worker's life: killed while starting, sent a frame over
//! the limit, and the terminal's Ctrl-C.

use shoal::prelude::*;
use std::os::unix::process::CommandExt as _;

use shoal::{ClientOptions, ProcessesOptions};

#[shoal::task]
fn square(x: u64) -> u64 {
    x * x
}

/// The test hook that makes starting workers die before their hello.
const DIE_BEFORE_HELLO: &str = "SHOAL_TEST_DIE_BEFORE_HELLO";

fn start(workers: usize, die: &str) -> shoal::Result<Client> {
    Client::processes_with(
        ProcessesOptions { workers, env: vec![(DIE_BEFORE_HELLO.into(), die.into())], ..ProcessesOptions::default() },
        ClientOptions::default(),
    )
}

#[test]
fn a_worker_killed_during_start_up_is_started_again() {
    // The first worker to start aborts before its hello; the client starts
    // another in its place and comes up whole.
    let marker = std::env::temp_dir().join(format!("shoal-test-die-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let client = start(2, &format!("abort-once:{}", marker.display())).expect("start-up retries the dead worker");
    assert!(marker.exists(), "a worker did die before its hello");
    assert_eq!(client.worker_pids().len(), 2);
    let squares = client.map(square, 0..100u64).unwrap();
    assert_eq!(client.gather(&squares).unwrap(), (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn workers_that_always_die_fail_start_up_without_blaming_init() {
    let err = start(1, "abort").err().expect("no worker can start");
    let msg = err.to_string();
    assert!(msg.contains("died before its handshake") && msg.contains("SIGABRT"), "{msg}");
    assert!(msg.contains("last of 3 attempts"), "{msg}");
    assert!(!msg.contains("shoal::init"), "a crash is not a missing init: {msg}");
}

#[test]
fn a_worker_that_exits_0_without_hello_points_at_init() {
    let err = start(1, "exit0").err().expect("no worker takes the role");
    let msg = err.to_string();
    assert!(msg.contains("exited with status 0") && msg.contains("must call shoal::init() first"), "{msg}");
}

// ---- a frame over the limit ----

#[test]
fn a_frame_over_the_limit_is_a_protocol_error_in_the_worker() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::os::unix::process::CommandExt;

    // A worker of this binary, started by hand on one end of a socket pair.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = theirs.as_raw_fd();
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .arg("--shoal-worker")
        .env("SHOAL_WORKER_FD", raw.to_string())
        .env("SHOAL_WORKER_PARENT", std::process::id().to_string())
        .env("SHOAL_WORKER_THREADS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: runs in the forked child before exec: one fcntl syscall
    // through rustix (no allocation, no lock), async-signal-safe. `raw` is
    // open in the child: `theirs` owns it here and lives until after spawn.
    unsafe {
        command.pre_exec(move || {
            rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(raw), rustix::io::FdFlags::empty())
                .map_err(std::io::Error::from)
        });
    }
    let child = command.spawn().unwrap();
    drop(theirs);
    // Its hello, then a frame header announcing 64 MiB + 1 bytes.
    let hello = shoal_shm::fdpass::recv(&ours).unwrap().expect("a hello");
    assert!(!hello.payload.is_empty());
    let len = u32::try_from(shoal_shm::MAX_FRAME_LEN + 1).unwrap();
    ours.write_all(&len.to_le_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(71), "a protocol error, not a lost connection: {log}");
    assert!(log.contains("protocol error") && log.contains("frame"), "{log}");
}

// ---- Ctrl-C ----

/// Set by the child's SIGINT handler.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Which role this process plays in the Ctrl-C test.
const ENV_SIGINT_CHILD: &str = "SHOAL_TEST_SIGINT_CHILD";

#[test]
fn ctrl_c_reaches_a_client_that_handles_it_and_not_its_workers() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    if std::env::var_os(ENV_SIGINT_CHILD).is_some() {
        // The client: handles SIGINT itself, and keeps working after one.
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // installing it races with nothing (no other thread sets SIGINT's
        // disposition in this process).
        unsafe { libc::signal(libc::SIGINT, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t) };
        let client = Client::processes(2).unwrap();
        let pids = client.worker_pids();
        println!("ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "no SIGINT came");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Give a killed worker time to be noticed and replaced.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(client.worker_pids(), pids, "the workers survived the Ctrl-C");
        assert_eq!(client.submit(square, 7).unwrap().result().unwrap(), 49);
        println!("survived");
        return;
    }
    // As a terminal does: the client in a process group of its own (the
    // foreground group), and SIGINT to the whole group.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["ctrl_c_reaches_a_client_that_handles_it_and_not_its_workers", "--exact", "--nocapture"])
        .env(ENV_SIGINT_CHILD, "1")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("ready")), "the child client started");
    rustix::process::kill_process_group(pgid, rustix::process::Signal::INT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success() && rest.iter().any(|l| l.contains("survived")), "{status}: {rest:?}");
}

/// Fields 5 and 6 of `/proc/PID/stat`: the process group and the session.
fn group_and_session(pid: u32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn workers_have_a_process_group_of_their_own_in_their_client_s_session() {
    // A session of their own would put them in another autogroup, a
    // scheduling group of its own, which made a chain of tasks 2x slower
    // per hop (see ARCHITECTURE.md); a group of their own keeps Ctrl-C away.
    let client = Client::processes(2).unwrap();
    let (our_group, our_session) = group_and_session(std::process::id());
    let our_autogroup = std::fs::read_to_string("/proc/self/autogroup").ok();
    for pid in client.worker_pids() {
        let (group, session) = group_and_session(pid);
        assert_eq!(session, our_session, "worker {pid} is in the client's session");
        assert_ne!(group, our_group, "worker {pid} is not in the client's process group");
        assert_eq!(group, i32::try_from(pid).unwrap(), "worker {pid} leads its own process group");
        if let Some(ours) = &our_autogroup {
            let theirs = std::fs::read_to_string(format!("/proc/{pid}/autogroup")).unwrap();
            // "/autogroup-N nice K": the group, not the nice value.
            assert_eq!(theirs.split(' ').next(), ours.split(' ').next(), "worker {pid} shares the client's autogroup");
        }
    }
}
