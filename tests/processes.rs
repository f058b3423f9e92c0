//! The processes mode: the same programs as the threads mode, on worker
//! processes re-executed from this test binary (the worker hook takes the
//! role before the test harness's `main`), with results in shared memory.

use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::rkyv::{Archive, Deserialize, Serialize};
use shoal::{ClientOptions, Error, FutureStatus, ProcessesOptions, TaskFailure};

#[shoal::task]
fn square(x: u64) -> u64 {
    x * x
}

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

/// Larger than the inline limit: travels as a segment.
#[shoal::task]
fn load(i: u64) -> Vec<u8> {
    vec![i as u8; 100_000]
}

#[shoal::task]
fn process(data: &Archived<Vec<u8>>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[shoal::task]
fn owned_sum(data: Vec<u8>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[shoal::task]
fn describe(name: String, n: u64) -> String {
    format!("{name}:{n}")
}

#[shoal::task]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(25));
    x * x
}

#[shoal::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[shoal::task]
fn fallible(x: u64) -> Result<u64, String> {
    if x == 13 { Err(format!("unlucky number {x}")) } else { Ok(x) }
}

#[shoal::task]
fn explode(x: u64) -> u64 {
    if x > 0 {
        panic!("boom at {x}");
    }
    x
}

/// Kills the process it runs in.
#[shoal::task]
fn abort_worker(x: u64) -> u64 {
    if x > 0 {
        std::process::abort();
    }
    x
}

/// Writes a frame that is not a valid message onto its worker's connection
/// to the client (the only socket a worker has), then returns normally.
#[shoal::task]
fn poison(x: u64) -> u64 {
    let socket = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_string_lossy()
                .starts_with("socket:")
                .then(|| e.file_name().to_string_lossy().parse::<i32>().ok())?
        })
        .next()
        .expect("a worker has its client socket");
    // SAFETY: `socket` is open for as long as this task runs (the worker's
    // connection), and ManuallyDrop keeps this handle from closing it.
    let stream = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(socket) });
    (&*stream).write_all(&[7, 0, 0, 0, b'g', b'a', b'r', b'b', b'a', b'g', b'e']).unwrap();
    x
}

fn processes(n: usize) -> Client {
    Client::processes_with(
        ProcessesOptions { workers: n, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

/// One program exercising the client API; its answers.
fn program(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    // submit / map / gather, and a Vec<Future<T>> argument.
    let squares = client.map(square, 1..=30u64).unwrap();
    let sum = client.submit(total, &squares).unwrap();
    out.push(format!("squares {:?}", client.gather(&squares).unwrap()));
    out.push(format!("sum {}", sum.result().unwrap()));
    // A lazy graph whose intermediate results are segments, read in place.
    let parts: Vec<Lazy<u64>> = (0..6u64).map(|i| process.lazy(load.lazy(i))).collect();
    out.push(format!("lazy {}", total.lazy(&parts).compute(client).unwrap()));
    // Large results and a large literal, read as owned values.
    let loaded = client.submit(load, 9).unwrap();
    out.push(format!("owned {}", client.submit(owned_sum, &loaded).unwrap().result().unwrap()));
    out.push(format!("literal {}", client.submit(owned_sum, vec![3u8; 150_000]).unwrap().result().unwrap()));
    out.push(format!("two args {}", client.submit(describe, ("n".to_string(), &sum)).unwrap().result().unwrap()));
    // as_completed sees every future once.
    let incs = client.map(inc, 0..10u64).unwrap();
    let mut seen: Vec<u64> = as_completed(incs).map(|f| f.result().unwrap()).collect();
    seen.sort_unstable();
    out.push(format!("as_completed {seen:?}"));
    // Cancelling a task that cannot have finished yet.
    let slow = client.submit_with(sleep_ms, 800, &SubmitOptions::default().pure(false)).unwrap();
    let after = client.submit(inc, &slow).unwrap();
    slow.cancel();
    out.push(format!("cancelled {:?} {}", slow.status(), after.result().is_err()));
    out
}

#[test]
fn the_same_program_gives_the_same_answers_as_the_threads_mode() {
    let threads = Client::threads(2).unwrap();
    let expected = program(&threads);
    let client = processes(2);
    assert_eq!(client.nthreads(), 2);
    assert_eq!(client.worker_pids().len(), 2);
    assert!(!client.worker_pids().contains(&std::process::id()), "tasks run in other processes");
    assert_eq!(program(&client), expected);
    assert!(expected.iter().any(|line| line == "cancelled Cancelled true"), "{expected:?}");
}

#[test]
fn errors_carry_key_and_message_and_dependents_name_the_root() {
    let client = processes(2);
    let bad = client.submit(fallible, 13).unwrap();
    let dependent = client.submit(inc, &bad).unwrap();
    let fine = client.submit(fallible, 12).unwrap();
    let err = bad.result().expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains(&bad.key().to_string()) && msg.contains("unlucky number 13"), "{msg}");
    assert!(matches!(err.task_failure(), Some(TaskFailure::Error { key, .. }) if *key == bad.key()));
    match dependent.result().expect_err("must fail").task_failure() {
        Some(TaskFailure::DependencyFailed { key, cause, .. }) => {
            assert_eq!(*key, dependent.key());
            assert_eq!(cause.key(), bad.key(), "names the root");
        }
        other => panic!("expected a dependency failure, got {other:?}"),
    }
    assert_eq!(fine.result().unwrap(), 12);
}

#[test]
fn a_panic_fails_only_its_own_future() {
    let client = processes(2);
    let futures = client.map(explode, [0u64, 1, 0]).unwrap();
    let sibling = client.submit(square, 7).unwrap();
    let err = futures[1].result().expect_err("must fail");
    assert!(matches!(err.task_failure(), Some(TaskFailure::Panic { message, .. }) if message.contains("boom at 1")));
    assert!(matches!(futures[1].status(), FutureStatus::Error(_)));
    assert_eq!(futures[0].result().unwrap(), 0);
    assert_eq!(futures[2].result().unwrap(), 0);
    assert_eq!(sibling.result().unwrap(), 49);
    assert_eq!(client.worker_pids().len(), 2, "a panic kills no worker");
}

/// Where an input slice lives in the consumer process.
#[derive(Archive, Serialize, Deserialize, Clone, Debug)]
#[rkyv(crate = shoal::rkyv)]
struct Location {
    pid: u32,
    slice_start: u64,
    slice_end: u64,
    map_start: u64,
    map_end: u64,
    inode: u64,
    path: String,
    /// Anonymous (private, copied) memory in that mapping, in kB.
    anonymous_kb: u64,
    checksum: u64,
}

const BIG: usize = 8 << 20;

#[shoal::task]
fn big(seed: u8) -> Vec<u8> {
    vec![seed; BIG]
}

#[shoal::task]
fn locate(a: &Archived<Vec<u8>>, b: &Archived<Vec<u8>>) -> Vec<Location> {
    vec![locate_slice(a.as_slice()), locate_slice(b.as_slice())]
}

/// The mapping of this process that holds `bytes`, from `/proc/self/smaps`.
fn locate_slice(bytes: &[u8]) -> Location {
    // Touch every page first: a private copy would show as anonymous memory.
    let checksum = bytes.iter().map(|&b| u64::from(b)).sum();
    let (start, end) = (bytes.as_ptr() as u64, bytes.as_ptr() as u64 + bytes.len() as u64);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let lines: Vec<&str> = smaps.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((lo, hi)) = range_of(line) else { continue };
        if !(lo <= start && end <= hi) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let anonymous_kb = lines[i + 1..]
            .iter()
            .take_while(|l| range_of(l).is_none())
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(u64::MAX);
        return Location {
            pid: std::process::id(),
            slice_start: start,
            slice_end: end,
            map_start: lo,
            map_end: hi,
            inode: fields.get(4).and_then(|f| f.parse().ok()).unwrap_or(0),
            path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
            anonymous_kb,
            checksum,
        };
    }
    panic!("no mapping holds {start:#x}..{end:#x}");
}

/// The address range of a mapping's header line in `maps` or `smaps`.
fn range_of(line: &str) -> Option<(u64, u64)> {
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    Some((u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?))
}

/// The inodes of this process's mappings named `path`.
fn own_inodes(path: &str) -> Vec<u64> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 5 && fields[5..].join(" ") == path).then(|| fields[4].parse().ok())?
        })
        .collect()
}

#[test]
fn a_consumer_reads_the_producers_pages_in_place() {
    let client = processes(2);
    // Two producers at once land on the two idle workers; the consumer runs
    // on one of them, so at least one of its inputs comes from the other.
    let a = client.submit(big, 1).unwrap();
    let b = client.submit(big, 2).unwrap();
    let locations = client.submit(locate, (&a, &b)).unwrap().result().unwrap();
    let workers = client.worker_pids();
    let mut crossed = false;
    for (loc, seed) in locations.iter().zip([1u64, 2]) {
        assert_eq!(loc.checksum, seed * BIG as u64, "read the right bytes");
        assert!(workers.contains(&loc.pid), "ran in a worker: {loc:?}");
        assert!(loc.map_start <= loc.slice_start && loc.slice_end <= loc.map_end);
        assert!(loc.path.starts_with("/memfd:shoal-w") && loc.path.ends_with("(deleted)"), "{loc:?}");
        assert_eq!(loc.anonymous_kb, 0, "no private copy of any page: {loc:?}");
        // The segment's name says which process wrote it.
        let producer: u32 = loc.path["/memfd:shoal-w".len()..].split('-').next().unwrap().parse().unwrap();
        assert!(workers.contains(&producer), "{loc:?}");
        crossed |= producer != loc.pid;
        // The client holds the same memory file (same inode) for the result.
        let inodes = own_inodes(&loc.path);
        assert!(inodes.contains(&loc.inode), "client maps {inodes:?}, consumer read inode {}", loc.inode);
    }
    assert!(crossed, "one input was produced by the other worker process: {locations:?}");
}

#[test]
fn a_worker_killed_mid_job_does_not_change_the_answer() {
    let client = processes(2);
    let victim = client.worker_pids()[0];
    let squares = client.map(slow_square, 0..40u64).unwrap();
    let sum = client.submit(total, &squares).unwrap();
    // Wait until some results exist (and some are still to come).
    let started = Instant::now();
    while squares.iter().filter(|f| f.done()).count() < 6 {
        assert!(started.elapsed() < Duration::from_secs(10), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!sum.done());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let expected: u64 = (0..40u64).map(|x| x * x).sum();
    assert_eq!(within(&sum).unwrap(), expected);
    assert_eq!(client.gather(&squares).unwrap(), (0..40u64).map(|x| x * x).collect::<Vec<_>>());
    let pids = client.worker_pids();
    assert!(!pids.contains(&victim), "the dead worker is gone: {pids:?}");
    eventually(|| client.worker_pids().len() == 2, "a replacement joins");
}

#[test]
fn a_task_that_kills_its_workers_fails_with_killed_worker() {
    let client = processes(2);
    // Item 1 of a map kills its workers; a task that needs it fails too.
    let items = client.map(abort_worker, [0u64, 1]).unwrap();
    let doomed = &items[1];
    let after = client.submit(inc, doomed).unwrap();
    let err = within(doomed).expect_err("must fail");
    match err.task_failure() {
        Some(TaskFailure::KilledWorker { key, item, attempts }) => {
            assert_eq!(*key, doomed.key());
            assert_eq!(*item, Some(1), "the map index travels with the task");
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected KilledWorker, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&doomed.key().to_string()) && msg.contains("workers that died"), "{msg}");
    assert!(msg.contains("(map item 1, processes::abort_worker at tests/processes.rs:"), "{msg}");
    // The scheduler makes this failure, not a run: its root is labelled too.
    let err = within(&after).expect_err("its input failed");
    let failure = err.task_failure().expect("a task failure");
    assert_eq!((failure.item(), failure.root().item()), (None, Some(1)), "{err}");
    assert!(err.to_string().contains("map item 1"), "{err}");
    // The client still works, on replacement workers.
    assert_eq!(client.submit(inc, 41).unwrap().result().unwrap(), 42);
    eventually(|| client.worker_pids().len() == 2, "replacements join");
}

#[test]
fn a_worker_with_another_registry_is_refused() {
    let options = ProcessesOptions {
        workers: 1,
        env: vec![("SHOAL_TEST_FINGERPRINT_OVERRIDE".into(), "12345".into())],
        ..ProcessesOptions::default()
    };
    let err = Client::processes_with(options, ClientOptions::default()).err().expect("must be refused");
    let ours = shoal::fingerprint().unwrap();
    assert!(matches!(err, Error::FingerprintMismatch { worker: 12345, client } if client == ours), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("worker runs a different binary") && msg.contains("run the same build everywhere"), "{msg}");
    assert!(msg.contains(&format!("{ours:032x}")), "{msg}");
}

#[test]
fn a_malformed_frame_closes_only_that_workers_connection() {
    let client = processes(2);
    let bystander = client.submit(sleep_ms, 300).unwrap();
    let poisoned = client.submit(poison, 1).unwrap();
    // Each worker that runs it is dropped (its frame is refused) and killed,
    // so the task counts as one that kills its workers.
    let err = within(&poisoned).expect_err("must fail");
    assert!(matches!(err.task_failure(), Some(TaskFailure::KilledWorker { .. })), "{err:?}");
    assert_eq!(within(&bystander).unwrap(), 300, "nothing else is harmed");
    assert_eq!(client.submit(inc, 1).unwrap().result().unwrap(), 2);
}

/// The future's result, failing the test (rather than hanging it) if it
/// takes more than 30 s.
fn within<T: shoal::Data>(future: &shoal::Future<T>) -> shoal::Result<T> {
    assert!(future.wait_timeout(Duration::from_secs(30)).unwrap(), "{:?} did not finish in 30 s", future.key());
    future.result()
}

fn eventually(condition: impl Fn() -> bool, what: &str) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
