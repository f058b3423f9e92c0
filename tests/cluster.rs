//! The cluster mode on loopback: a scheduler server, workers started from
//! this test binary with `SHOAL_WORKER` (the hook takes the role before the
//! test harness's `main`), and clients connected with `Client::connect`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ClusterOptions, Error, ProgressBar, ProgressUpdate, TaskFailure};
use shoal_net::server::{self, ServerConfig, ServerHandle};

#[path = "../net/tests/support/certs.rs"]
mod certs;

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

/// Three megabytes: stays on the worker that made it; streamed in chunks
/// to the workers and clients that fetch it.
#[shoal::task]
fn blob(seed: u8) -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

/// A blob that takes a while to make: two submitted at once land on two
/// workers.
#[shoal::task]
fn slow_blob(seed: u8) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(300));
    (0..3_000_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

fn blob_sum(seed: u8) -> u64 {
    (0..3_000_000u32).map(|i| u64::from((i as u8).wrapping_mul(seed))).sum()
}

#[shoal::task]
fn both(a: &Archived<Vec<u8>>, b: &Archived<Vec<u8>>) -> u64 {
    a.iter().chain(b.iter()).map(|&b| u64::from(b)).sum()
}

/// A byte of a blob, plus `k` (a distinct key per `k`).
#[shoal::task]
fn byte_at(data: &Archived<Vec<u8>>, k: u64) -> u64 {
    u64::from(data[k as usize]) + k
}

#[shoal::task]
fn checksum(data: &Archived<Vec<u8>>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

/// Letter counts of a text, as count_letters does per file.
#[shoal::task]
fn letters(text: String) -> Vec<u64> {
    let mut counts = vec![0u64; 26];
    for b in text.bytes().filter(u8::is_ascii_lowercase) {
        counts[usize::from(b - b'a')] += 1;
    }
    counts
}

#[shoal::task]
fn merge(parts: Vec<Vec<u64>>) -> Vec<u64> {
    let mut all = vec![0u64; 26];
    for part in parts {
        for (a, p) in all.iter_mut().zip(part) {
            *a += p;
        }
    }
    all
}

#[shoal::task]
fn nap(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(150));
    x * 2
}

#[shoal::task]
fn slow_leaf(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    i
}

#[shoal::task]
fn slow_plus(a: u64, b: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    a + b
}

#[shoal::task]
fn half_second(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    x
}

#[shoal::task]
fn fails(x: u64) -> Result<u64, String> {
    if x == 3 { Err(format!("three is not allowed (got {x})")) } else { Ok(x) }
}

fn scheduler() -> ServerHandle {
    server::spawn(ServerConfig {
        port: 0,
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_secs(2),
        dashboard: None,
        ..ServerConfig::default()
    })
    .unwrap()
}

/// A worker process (this binary, with the worker role); killed on drop.
struct Worker(Child);

impl Worker {
    fn start(url: &str, threads: usize) -> Worker {
        Worker::start_with(url, threads, &[])
    }

    fn start_with(url: &str, threads: usize, env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env("SHOAL_WORKER", url)
            .env("SHOAL_WORKER_THREADS", threads.to_string())
            .env("SHOAL_WORKER_CONNECT_TIMEOUT", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        Worker(command.spawn().unwrap())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scheduler with `n` workers of two threads, all connected.
fn cluster(n: usize) -> (ServerHandle, Vec<Worker>) {
    let server = scheduler();
    let workers = (0..n).map(|_| Worker::start(&server.url(), 2)).collect();
    wait_for("the workers", || server.workers() == n);
    (server, workers)
}

#[test]
fn futures_map_submit_and_gather_give_the_right_answers() {
    let (server, _workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    assert_eq!(client.nthreads(), 4);
    let xs: Vec<u64> = (0..300).collect();
    let incs = client.map(inc, xs.clone()).unwrap();
    let got: Vec<u64> = client.gather(&incs).unwrap();
    assert_eq!(got, xs.iter().map(|x| x + 1).collect::<Vec<_>>());
    let sum = client.submit(add, (&incs[1], &incs[2])).unwrap();
    assert_eq!(sum.result().unwrap(), 2 + 3);
    let all = client.submit(total, incs.clone()).unwrap();
    assert_eq!(all.result().unwrap(), (1..=300).sum::<u64>());
    // Scattered values mix with results in a list of futures.
    let mixed = vec![client.scatter(1000u64).unwrap(), incs[0].clone(), client.scatter(20u64).unwrap()];
    assert_eq!(client.submit(total, &mixed).unwrap().result().unwrap(), 1000 + 1 + 20);
    // A failure names its task and its error, and reaches its dependents.
    let bad = client.map(fails, vec![1u64, 3, 5]).unwrap();
    let err = client.gather(&bad).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("three is not allowed") && text.contains("fails"), "{text}");
    // The map index travels with the task to the scheduler and back in
    // every report: `gather`, the item's own future, a dependent's failure.
    assert!(matches!(&err, Error::TaskAt { index: 1, failure } if failure.item() == Some(1)), "{err:?}");
    let own = bad[1].result().unwrap_err();
    assert_eq!(own.task_failure().and_then(TaskFailure::item), Some(1), "{own}");
    assert!(own.to_string().contains("(map item 1, cluster::fails at tests/cluster.rs:"), "{own}");
    let after = client.submit(add, (&bad[1], 1u64)).unwrap();
    match after.result() {
        Err(Error::Task(f)) => {
            assert!(matches!(&*f, TaskFailure::DependencyFailed { .. }), "{f}");
            assert_eq!((f.item(), f.root().item()), (None, Some(1)), "{f}");
        }
        other => panic!("expected a dependency failure, got {other:?}"),
    }
    let mapped = client.map(inc, bad.iter()).unwrap();
    let f = mapped[1].result().unwrap_err();
    let f = f.task_failure().expect("a task failure");
    assert_eq!((f.item(), f.root().item()), (Some(1), Some(1)), "{f}");
}

#[test]
fn many_short_tasks_in_many_submissions_all_report_their_end() {
    // Short tasks finish while their submission is still being answered:
    // every one must still be reported to the client (no lost news).
    let (server, _workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        for round in 0..30u64 {
            let futures = client.map(inc, (round * 1000..round * 1000 + 1000).collect::<Vec<_>>()).unwrap();
            shoal::wait(&futures).unwrap();
        }
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(Duration::from_secs(120)).expect("every task reported within the bound");
    waiter.join().unwrap();
}

#[test]
fn large_results_stream_through_and_lazy_graphs_compute() {
    let (server, _workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    let data = client.submit(blob, 7u8).unwrap();
    let sum = client.submit(checksum, &data).unwrap();
    let expected: u64 = (0..3_000_000u32).map(|i| u64::from((i as u8).wrapping_mul(7))).sum();
    assert_eq!(sum.result().unwrap(), expected);
    // A large literal argument streams from the client too.
    let literal: Vec<u8> = (0..2_500_000u32).map(|i| (i % 7) as u8).collect();
    let literal_sum: u64 = literal.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(client.submit(checksum, literal).unwrap().result().unwrap(), literal_sum);
    let back = data.result().unwrap();
    assert_eq!(back.len(), 3_000_000);
    assert_eq!(back[1000], (1000u32 as u8).wrapping_mul(7));

    // delayed-style: a lazy graph submitted whole.
    let leaves: Vec<_> = (0..20u64).map(|i| inc.lazy(i)).collect();
    let pairs: Vec<_> = leaves.chunks(2).map(|p| add.lazy((&p[0], &p[1]))).collect();
    let top = total.lazy(pairs);
    assert_eq!(top.compute(&client).unwrap(), (1..=20).sum::<u64>());
}

#[test]
fn count_letters_style_job_matches_a_local_count() {
    let (server, _workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    let texts: Vec<String> =
        (0..40).map(|i| (0..2000).map(|j| (b'a' + ((i * 7 + j * 13) % 26) as u8) as char).collect()).collect();
    let parts = client.map(letters, texts.clone()).unwrap();
    let all = client.submit(merge, parts).unwrap().result().unwrap();
    let mut expected = vec![0u64; 26];
    for t in &texts {
        for b in t.bytes() {
            expected[usize::from(b - b'a')] += 1;
        }
    }
    assert_eq!(all, expected);
}

#[test]
fn two_clients_share_pure_keys_and_a_departed_clients_tasks_are_released() {
    let (server, _workers) = cluster(1);
    let a = Client::connect(&server.url()).unwrap();
    let b = Client::connect(&server.url()).unwrap();
    let fa = a.map(inc, (0..50u64).collect::<Vec<_>>()).unwrap();
    let fb = b.map(inc, (25..75u64).collect::<Vec<_>>()).unwrap();
    assert_eq!(a.gather(&fa).unwrap(), (1..51).collect::<Vec<u64>>());
    assert_eq!(b.gather(&fb).unwrap(), (26..76).collect::<Vec<u64>>());
    // 75 distinct keys: 25 are shared.
    assert_eq!(server.live_tasks(), 75);
    drop(fa);
    // `a` still connected but holding nothing: its own keys are gone.
    wait_for("a's released keys", || server.live_tasks() == 50);
    let again = a.map(inc, vec![1000u64]).unwrap();
    wait_for("the new task", || server.live_tasks() == 51);
    std::mem::forget(again); // never released by the client itself
    drop(a);
    wait_for("a disconnected client's keys to be released", || server.live_tasks() == 50);
    assert_eq!(b.gather(&fb).unwrap().len(), 50, "b's results are untouched");
}

#[test]
fn a_killed_workers_runs_are_recomputed_elsewhere() {
    let (server, mut workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    let xs: Vec<u64> = (0..24).collect();
    let futures = client.map(nap, xs.clone()).unwrap();
    // Let both workers start on their runs, then kill one of them.
    std::thread::sleep(Duration::from_millis(250));
    let victim = workers.remove(0);
    drop(victim);
    let got = client.gather(&futures).unwrap();
    assert_eq!(got, xs.iter().map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(server.workers(), 1);
}

#[test]
fn a_client_whose_scheduler_goes_away_gets_an_error_not_a_hang() {
    let (server, _workers) = cluster(1);
    let client = Client::connect(&server.url()).unwrap();
    let futures = client.map(nap, (0..40u64).collect::<Vec<_>>()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.stop();
    let err = client.gather(&futures).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // And every later call too.
    assert!(matches!(client.submit(inc, 1u64), Err(Error::Disconnected(_))));
}

#[test]
fn a_cluster_with_a_secret_runs_its_peers_and_refuses_a_wrong_one() {
    let dir = std::env::temp_dir().join(format!("shoal-cluster-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (right, wrong) = (dir.join("right"), dir.join("wrong"));
    std::fs::write(&right, "a long random secret\n").unwrap();
    std::fs::write(&wrong, "another one").unwrap();
    let server = server::spawn(ServerConfig {
        port: 0,
        secret: Some(shoal_net::Secret::from_file(&right).unwrap()),
        dashboard: None,
        ..ServerConfig::default()
    })
    .unwrap();
    let right_str = right.to_str().unwrap();
    let _worker = Worker::start_with(&server.url(), 1, &[("SHOAL_SECRET_FILE", right_str)]);
    wait_for("the worker", || server.workers() == 1);
    let options =
        |file: &std::path::Path| ClusterOptions { secret_file: Some(file.to_path_buf()), ..Default::default() };
    let client = Client::connect_with(&server.url(), options(&right), ClientOptions::default()).unwrap();
    assert_eq!(client.submit(inc, 41u64).unwrap().result().unwrap(), 42);
    let refused = Client::connect_with(&server.url(), options(&wrong), ClientOptions::default()).err().unwrap();
    assert!(refused.to_string().contains("wrong secret"), "{refused}");
    let mut intruder = Worker::start_with(&server.url(), 1, &[("SHOAL_SECRET_FILE", wrong.to_str().unwrap())]);
    assert!(!intruder.0.wait().unwrap().success(), "a worker with the wrong secret exits");
    assert_eq!(server.workers(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_of_another_build_is_refused_naming_both_fingerprints() {
    let server = scheduler();
    let client = Client::connect(&server.url()).unwrap();
    let mut worker = Worker::start_with(&server.url(), 1, &[("SHOAL_TEST_FINGERPRINT_OVERRIDE", "12345")]);
    let status = worker.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("fingerprint mismatch"), "{stderr}");
    assert!(stderr.contains(&format!("{:032x}", 12345u128)), "{stderr}");
    assert!(stderr.contains(&format!("{:032x}", shoal::fingerprint().unwrap())), "{stderr}");
    drop(client);
}

#[test]
fn a_worker_without_a_scheduler_gives_up_with_a_clear_message() {
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worker =
        Worker::start_with(&format!("tcp://127.0.0.1:{port}"), 1, &[("SHOAL_WORKER_CONNECT_TIMEOUT", "1")]);
    let started = Instant::now();
    let status = worker.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("could not reach the scheduler"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_shoal_command_runs_a_scheduler_and_refuses_an_open_one_without_a_secret() {
    let bin = env!("CARGO_BIN_EXE_shoal");
    let refused = Command::new(bin).args(["scheduler", "--host", "0.0.0.0", "--port", "0"]).output().unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("without a shared secret"), "{text}");

    let mut scheduler = Command::new(bin)
        .args(["scheduler", "--port", "0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(scheduler.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("the scheduler said where it listens").unwrap();
        if let Some(at) = line.find("listening on ") {
            let rest = &line[at + "listening on ".len()..];
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let url = format!("tcp://{address}");
    let _worker = Worker::start(&url, 2);
    let client = Client::connect(&url).unwrap();
    let futures = client.map(inc, (0..10u64).collect::<Vec<_>>()).unwrap();
    assert_eq!(client.gather(&futures).unwrap(), (1..11).collect::<Vec<u64>>());
    drop(client);
    let _ = scheduler.kill();
    let _ = scheduler.wait();
}

/// Two large results made on two workers: a task that needs both fetches
/// one from the other worker directly; tasks that need one run where it is;
/// the scheduler never receives a large result, and the client fetches one
/// from its holder.
#[test]
fn large_results_stay_on_their_workers_and_move_peer_to_peer() {
    let (server, _workers) = cluster(2);
    let client = Client::connect(&server.url()).unwrap();
    let a = client.submit(slow_blob, 3u8).unwrap();
    let b = client.submit(slow_blob, 5u8).unwrap();
    shoal::wait(&[a.clone(), b.clone()]).unwrap();
    let before = server.counts();
    // Each checksum runs where its blob is (placement by input bytes).
    let sums = [client.submit(checksum, &a).unwrap(), client.submit(checksum, &b).unwrap()];
    assert_eq!(sums[0].result().unwrap(), blob_sum(3));
    assert_eq!(sums[1].result().unwrap(), blob_sum(5));
    let placed = server.counts();
    assert_eq!(placed.remote_inputs, before.remote_inputs, "a task ran away from its only large input: {placed:?}");
    // A task that needs both: one of them crosses between the workers.
    assert_eq!(client.submit(both, (&a, &b)).unwrap().result().unwrap(), blob_sum(3) + blob_sum(5));
    let after = server.counts();
    assert_eq!(after.remote_inputs, placed.remote_inputs + 1, "{after:?}");
    assert!(after.remote_bytes >= placed.remote_bytes + 3_000_000, "{after:?}");
    // The client gathers a large result from its holder.
    let back = a.result().unwrap();
    assert_eq!(back.len(), 3_000_000);
    assert_eq!(back[1000], (1000u32 as u8).wrapping_mul(3));
    let end = server.counts();
    assert!(end.result_bytes_received < 100_000, "a large result went through the scheduler: {end:?}");
}

/// The same job over mutual TLS, with the secret inside it: runs, a
/// transfer between the workers' data ports and the client's gather all
/// go over TLS, and workers that cannot speak it are turned away with a
/// reason while the cluster works on.
#[test]
fn a_job_over_mutual_tls_gives_the_right_answer_and_plain_or_certificateless_workers_are_refused() {
    let dir = certs::Dir::new("cluster");
    let ca = certs::Ca::new("shoal test CA");
    let ca_file = ca.write(&dir.0, "ca.pem");
    let sched = ca.issue(&dir.0, "scheduler", &["127.0.0.1"]);
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "a secret inside TLS").unwrap();
    let server = server::spawn(ServerConfig {
        port: 0,
        secret: Some(shoal_net::Secret::from_file(&secret).unwrap()),
        tls: Some(shoal_net::tls::ServerTls::new(&sched.cert, &sched.key, Some(&ca_file)).unwrap()),
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_secs(2),
        dashboard: None,
        ..ServerConfig::default()
    })
    .unwrap();
    assert!(server.url().starts_with("tls://"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // Workers' certificates name no address: data ports are reached by IP
    // and checked against the CA only.
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            let pair = ca.issue(&dir.0, &format!("worker{i}"), &[&format!("worker{i}.example")]);
            let env = [
                ("SHOAL_SECRET_FILE", path(&secret)),
                ("SHOAL_TLS_CA", path(&ca_file)),
                ("SHOAL_TLS_CERT", path(&pair.cert)),
                ("SHOAL_TLS_KEY", path(&pair.key)),
            ];
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Worker::start_with(&server.url(), 2, &env)
        })
        .collect();
    wait_for("the TLS workers", || server.workers() == 2);
    let me = ca.issue(&dir.0, "client", &["client.example"]);
    let options = ClusterOptions {
        secret_file: Some(secret.clone()),
        tls: Some(shoal::TlsFiles {
            ca: Some(ca_file.clone()),
            cert: Some(me.cert.clone()),
            key: Some(me.key.clone()),
            server_name: None,
        }),
        ..Default::default()
    };
    let client = Client::connect_with(&server.url(), options, ClientOptions::default()).unwrap();
    let xs: Vec<u64> = (0..200).collect();
    let futures = client.map(inc, xs.clone()).unwrap();
    let got: Vec<u64> = client.gather(&futures).unwrap();
    assert_eq!(got, xs.iter().map(|x| x + 1).collect::<Vec<_>>());
    let a = client.submit(slow_blob, 3u8).unwrap();
    let b = client.submit(slow_blob, 5u8).unwrap();
    shoal::wait(&[a.clone(), b.clone()]).unwrap();
    let before = server.counts();
    assert_eq!(client.submit(both, (&a, &b)).unwrap().result().unwrap(), blob_sum(3) + blob_sum(5));
    let after = server.counts();
    assert!(after.remote_bytes >= before.remote_bytes + 3_000_000, "no transfer between the workers: {after:?}");
    assert_eq!(a.result().unwrap().len(), 3_000_000);
    assert!(server.counts().result_bytes_received < 100_000, "a large result went through the scheduler");

    // A plain worker, and a TLS worker without a certificate: each exits
    // saying why; the cluster is untouched.
    let stderr_of = |mut worker: Worker| {
        assert!(!worker.0.wait().unwrap().success(), "a refused worker exits with failure");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut worker.0.stderr.take().unwrap(), &mut text).unwrap();
        text
    };
    let plain_url = server.url().replace("tls://", "tcp://");
    let plain = Worker::start_with(&plain_url, 1, &[("SHOAL_SECRET_FILE", &path(&secret))]);
    let said = stderr_of(plain);
    assert!(said.contains("speaks TLS only"), "{said}");
    let bare = Worker::start_with(&server.url(), 1, &[("SHOAL_TLS_CA", &path(&ca_file))]);
    let said = stderr_of(bare);
    assert!(said.contains("SHOAL_TLS_CERT"), "{said}");
    assert_eq!(server.workers(), 2);
    assert_eq!(client.submit(add, (20u64, 22u64)).unwrap().result().unwrap(), 42);
    drop(workers);
}

/// A worker that dies takes its results with it: the scheduler sees it and
/// recomputes them from lineage on another worker, for a dependent and for
/// the client's gather.
#[test]
fn a_lost_workers_large_results_are_recomputed_from_lineage() {
    let server = scheduler();
    let first = Worker::start(&server.url(), 1);
    wait_for("the first worker", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let data = client.submit(blob, 7u8).unwrap();
    shoal::wait(std::slice::from_ref(&data)).unwrap();
    let _second = Worker::start(&server.url(), 1);
    wait_for("the second worker", || server.workers() == 2);
    drop(first);
    wait_for("the loss of the first worker", || server.workers() == 1);
    assert_eq!(client.submit(checksum, &data).unwrap().result().unwrap(), blob_sum(7));
    let back = data.result().unwrap();
    assert_eq!(back.len(), 3_000_000);
    assert_eq!(back[999], (999u32 as u8).wrapping_mul(7));
}

/// Placement by input bytes: tasks reading one of two large results, held
/// on two workers, all submitted at once, each run where its input is — a
/// least-loaded placement would spread them over both workers and move
/// blobs. Six per blob, on workers of four threads: a worker takes at least
/// two runs per thread (pacing keeps one queued per thread at least), so
/// the holder has a free slot for each even if none has ended (a task whose
/// holder is full goes to a free worker, and its input moves: right, but
/// not what this test looks at).
#[test]
fn ready_tasks_go_to_the_worker_holding_their_input_bytes() {
    let server = scheduler();
    let _workers = [Worker::start(&server.url(), 4), Worker::start(&server.url(), 4)];
    wait_for("the workers", || server.workers() == 2);
    let client = Client::connect(&server.url()).unwrap();
    let a = client.submit(slow_blob, 3u8).unwrap();
    let b = client.submit(slow_blob, 5u8).unwrap();
    shoal::wait(&[a.clone(), b.clone()]).unwrap();
    let before = server.counts();
    let mut futures = Vec::new();
    for k in 0..6u64 {
        futures.push(client.submit(byte_at, (&a, k)).unwrap());
        futures.push(client.submit(byte_at, (&b, k)).unwrap());
    }
    let got: Vec<u64> = client.gather(&futures).unwrap();
    let expected: Vec<u64> = (0..6u64)
        .flat_map(|k| [u64::from((k as u8).wrapping_mul(3)) + k, u64::from((k as u8).wrapping_mul(5)) + k])
        .collect();
    assert_eq!(got, expected);
    let after = server.counts();
    assert_eq!(after.remote_inputs, before.remote_inputs, "tasks ran away from their input: {after:?}");
}

#[shoal::task]
fn pid_after(data: &Archived<Vec<u8>>, millis: u64) -> (u32, u64) {
    std::thread::sleep(Duration::from_millis(millis));
    (std::process::id(), data.len() as u64)
}

/// A medium input (64 kB: not small enough to ride with the news, so a
/// machine holds it).
#[shoal::task]
fn medium_blob(seed: u8) -> Vec<u8> {
    vec![seed; 64 << 10]
}

/// Short reads of a large input on one machine: its single thread is busy,
/// the other machine idles, and still nothing moves — 3 MB at the assumed
/// 100 MB/s (30 ms) never pays for a read of microseconds. Without
/// weighing transfers (a task whose holder is full goes to a free worker),
/// most of the reads ran on the other machine and fetched the input.
#[test]
fn short_reads_of_a_large_input_wait_for_its_busy_holder_while_another_machine_idles() {
    let server = scheduler();
    let _workers = [Worker::start(&server.url(), 1), Worker::start(&server.url(), 1)];
    wait_for("the workers", || server.workers() == 2);
    let client = Client::connect(&server.url()).unwrap();
    let a = client.submit(slow_blob, 3u8).unwrap();
    shoal::wait(std::slice::from_ref(&a)).unwrap();
    let before = server.counts();
    let futures: Vec<_> = (0..24u64).map(|k| client.submit(byte_at, (&a, k)).unwrap()).collect();
    let got: Vec<u64> = client.gather(&futures).unwrap();
    assert_eq!(got, (0..24u64).map(|k| u64::from((k as u8).wrapping_mul(3)) + k).collect::<Vec<_>>());
    let after = server.counts();
    assert_eq!(after.remote_bytes, before.remote_bytes, "a short read moved a 3 MB input: {after:?}");
}

/// Slow tasks (200 ms) reading a 64 kB input on one machine: moving it
/// costs about a millisecond, so the idle machine steals them and both
/// run some.
#[test]
fn slow_tasks_with_a_small_input_queued_behind_one_machine_are_stolen_by_an_idle_one() {
    let server = scheduler();
    let _workers = [Worker::start(&server.url(), 1), Worker::start(&server.url(), 1)];
    wait_for("the workers", || server.workers() == 2);
    let client = Client::connect(&server.url()).unwrap();
    let a = client.submit(medium_blob, 9u8).unwrap();
    shoal::wait(std::slice::from_ref(&a)).unwrap();
    let futures: Vec<_> = (0..8u64).map(|k| client.submit(pid_after, (&a, 200 + k)).unwrap()).collect();
    let got: Vec<(u32, u64)> = client.gather(&futures).unwrap();
    assert!(got.iter().all(|&(_, n)| n == 64 << 10));
    let pids: std::collections::BTreeSet<u32> = got.iter().map(|&(p, _)| p).collect();
    assert_eq!(pids.len(), 2, "every slow task ran on one machine while the other idled: {got:?}");
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().to_string()
}

/// The value of the sample `series` (name and labels as printed) in a
/// Prometheus text scrape.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series).map(|(_, v)| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[test]
fn the_scheduler_s_dashboard_and_metrics_show_the_job_s_task_names_and_counts() {
    let server = server::spawn(ServerConfig {
        port: 0,
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_secs(2),
        dashboard: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .unwrap();
    let _workers: Vec<Worker> = (0..2).map(|_| Worker::start(&server.url(), 2)).collect();
    wait_for("the workers", || server.workers() == 2);
    let addr = host_of(&server.dashboard_url().expect("the scheduler serves a dashboard"));
    let report = std::env::temp_dir().join(format!("shoal-cluster-report-{}.html", std::process::id()));
    let client = Client::connect_with(
        &server.url(),
        ClusterOptions::default(),
        ClientOptions::default().progress(ProgressBar::Never),
    )
    .unwrap();
    let guard = client.performance_report(&report);
    let incs = client.map(inc, 0..200u64).unwrap();
    let sums = client.map(add, (0..50).map(|i| (&incs[2 * i], &incs[2 * i + 1]))).unwrap();
    assert_eq!(client.gather(&sums).unwrap(), (0..50u64).map(|i| 4 * i + 3).collect::<Vec<_>>());
    drop(guard);

    // The client's status is the scheduler's, with the names of its tasks.
    let status = client.status();
    assert_eq!(status.name("inc").map(|n| (n.done, n.live.memory)), Some((200, 200)), "{status:?}");
    assert_eq!(status.name("add").map(|n| (n.done, n.live.memory)), Some((50, 50)), "{status:?}");
    assert_eq!((status.done, status.failed, status.tasks.memory, status.tasks.total()), (250, 0, 250, 250));

    // /metrics: counters per task name that agree with what ran.
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&metrics, r#"shoal_tasks_finished_total{name="inc"}"#), 200.0);
    assert_eq!(sample(&metrics, r#"shoal_tasks_finished_total{name="add"}"#), 50.0);
    assert_eq!(sample(&metrics, r#"shoal_tasks_failed_total{name="inc"}"#), 0.0);
    assert_eq!(sample(&metrics, "shoal_tasks_submitted_total"), 250.0);
    assert_eq!(sample(&metrics, r#"shoal_tasks{state="memory"}"#), 250.0);
    assert_eq!(sample(&metrics, "shoal_workers"), 2.0);
    assert_eq!(sample(&metrics, "shoal_worker_threads"), 4.0);
    // 250 results of 8 bytes came from the workers; 100 went back as inputs.
    assert!(sample(&metrics, "shoal_transferred_bytes_total") >= 350.0 * 8.0, "{metrics}");
    assert_eq!(
        sample(&metrics, r#"shoal_store_bytes{where="memory"}"#),
        250.0 * 8.0,
        "the results the scheduler holds"
    );

    // The page's first frame: names from the client, progress per name,
    // and the workers with their machine (reported by the workers).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let mut frame = String::new();
    wait_for("the workers' figures", || {
        frame = http_get(&addr, "/first.js").1;
        frame.matches(&format!(",\"{host}\"]")).count() == 2
    });
    assert!(frame.contains(r#"["inc",200,0,0,0,200]"#), "{frame}");
    assert!(frame.contains(r#"["add",50,0,0,0,50]"#), "{frame}");
    assert!(!frame.contains("task#"), "every task is named: {frame}");

    // The client's performance report has every task name of the job.
    let html = std::fs::read_to_string(&report).unwrap();
    let _ = std::fs::remove_file(&report);
    assert!(html.contains(r#""inc"]"#) && html.contains(r#""add"]"#), "the report names the job's tasks");
    assert!(html.contains(r#""done":250"#), "the report's totals are the job's");

    // Released results leave the scheduler's store.
    drop((incs, sums));
    wait_for("the store to empty", || {
        sample(&http_get(&addr, "/metrics").1, r#"shoal_store_bytes{where="memory"}"#) == 0.0
    });
}

#[test]
fn progress_in_the_cluster_counts_every_task_of_a_computed_graph() {
    let (server, _workers) = cluster(2);
    let seen: Arc<Mutex<Vec<ProgressUpdate>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let options =
        ClientOptions::default().progress(ProgressBar::Callback(Arc::new(move |u| sink.lock().unwrap().push(*u))));
    let client = Client::connect_with(&server.url(), ClusterOptions::default(), options).unwrap();
    // A pairwise sum over 32 leaves: 63 tasks, one output.
    let mut level: Vec<Lazy<u64>> = (0..32).map(|i| slow_leaf.lazy(i)).collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| slow_plus.lazy((&p[0], &p[1]))).collect();
    }
    assert_eq!(client.compute_values(&level).unwrap(), vec![(0..32).sum::<u64>()]);
    let seen = seen.lock().unwrap();
    let last = seen.last().expect("progress was shown");
    assert_eq!((last.done, last.total), (63, 63), "the inner tasks count, not only the output");
    assert!(seen.iter().any(|u| u.done > 1 && u.done < 63), "intermediate counts were shown: {seen:?}");
}

#[test]
fn the_shoal_command_serves_its_dashboard_on_another_port_when_its_own_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut scheduler = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["scheduler", "--port", "0", "--dashboard", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(scheduler.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the scheduler said where its dashboard is").unwrap();
        if line.contains("already in use") {
            assert!(line.contains(&format!("port {port}")), "{line}");
            let at = line.find("http://").expect("the new URL is given");
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    let (code, metrics) = http_get(&host_of(&url), "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&metrics, "shoal_workers"), 0.0);
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    drop(taken);
}

#[test]
fn a_cluster_future_reads_queued_then_running_then_finished() {
    let server = scheduler();
    let client = Client::connect(&server.url()).unwrap();
    // No worker yet: the task waits in the scheduler.
    let future = client.submit(half_second, 7u64).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(future.status(), shoal::FutureStatus::Queued);
    let _worker = Worker::start(&server.url(), 1);
    wait_for("the run to start", || future.status() == shoal::FutureStatus::Running);
    assert_eq!(future.result().unwrap(), 7);
    assert_eq!(future.status(), shoal::FutureStatus::Finished);
}

#[test]
fn the_scheduler_s_dashboard_on_an_open_address_needs_its_token() {
    let server = server::spawn(ServerConfig {
        port: 0,
        dashboard: Some("0.0.0.0:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .unwrap();
    let url = server.dashboard_url().unwrap();
    let (_, token) = url.split_once("?token=").expect("the URL carries the token");
    let port = host_of(&url).rsplit_once(':').unwrap().1.to_string();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(http_get(&addr, "/metrics").0, 401, "no token, no page");
    assert_eq!(http_get(&addr, &format!("/metrics?token={token}")).0, 200);
}

// ---- A machine's agent and its worker processes (`SHOAL_WORKER_PROCESSES`) ----

/// The pid of the process that ran it (after a nap, so that runs overlap).
#[shoal::task]
fn pid_after_nap(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(40 + i % 2));
    u64::from(std::process::id())
}

/// A machine's agent with `processes` worker processes of `threads` threads.
fn machine(url: &str, processes: usize, threads: usize, env: &[(&str, &str)]) -> Worker {
    let processes = processes.to_string();
    let mut all = vec![("SHOAL_WORKER_PROCESSES", processes.as_str())];
    all.extend_from_slice(env);
    Worker::start_with(url, threads, &all)
}

#[test]
fn a_machine_of_two_worker_processes_runs_tasks_in_both() {
    let server = scheduler();
    let agent = machine(&server.url(), 2, 1, &[]);
    wait_for("the machine", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    assert_eq!(client.nthreads(), 2, "the machine counts the threads of its processes");
    let futures = client.map(pid_after_nap, (0..16u64).collect::<Vec<_>>()).unwrap();
    let pids: Vec<u64> = client.gather(&futures).unwrap();
    let distinct: std::collections::BTreeSet<u64> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 2, "both worker processes ran tasks: {pids:?}");
    assert!(!distinct.contains(&u64::from(agent.0.id())), "a task ran in the agent itself: {pids:?}");
    // And the answers of a graph are right.
    let xs: Vec<u64> = (0..40).collect();
    let ys = client.map(inc, xs.clone()).unwrap();
    let total_of = client.submit(total, &ys).unwrap();
    assert_eq!(total_of.result().unwrap(), xs.iter().map(|x| x + 1).sum::<u64>());
}

/// A blob whose first four bytes are the pid of the process that made it.
#[shoal::task]
fn pid_blob(seed: u8) -> Vec<u8> {
    let mut data: Vec<u8> = (0..3_000_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
    data[..4].copy_from_slice(&std::process::id().to_le_bytes());
    data
}

/// The pid written into a [`pid_blob`] (`k`: a distinct key per call).
#[shoal::task]
fn maker_pid(data: &Archived<Vec<u8>>, k: u64) -> u64 {
    let _ = k;
    u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
}

/// The files under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

#[test]
fn a_worker_process_killed_under_its_agent_loses_no_result_and_the_job_completes() {
    let server = scheduler();
    let agent = machine(&server.url(), 2, 1, &[]);
    wait_for("the machine", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let data = client.submit(pid_blob, 7u8).unwrap();
    let maker = client.submit(maker_pid, (&data, 0u64)).unwrap().result().unwrap();
    assert_ne!(maker, u64::from(agent.0.id()), "the blob was made in the agent, not in a worker process");
    // Runs in both processes, and the blob's maker killed under them.
    let xs: Vec<u64> = (0..8).collect();
    let naps = client.map(nap, xs.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = rustix::process::Pid::from_raw(i32::try_from(maker).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert_eq!(client.gather(&naps).unwrap(), xs.iter().map(|x| x * 2).collect::<Vec<_>>());
    // The blob outlived its maker in the machine's store: read from there,
    // not made again (a new run would write a live process's pid).
    assert_eq!(client.submit(maker_pid, (&data, 1u64)).unwrap().result().unwrap(), maker);
    assert_eq!(
        client.submit(byte_at, (&data, 1000u64)).unwrap().result().unwrap(),
        u64::from((1000u32 as u8).wrapping_mul(7)) + 1000
    );
    assert_eq!(server.workers(), 1, "the machine stayed");
}

/// A spill directory of its own for one test, removed when dropped (also
/// when the test fails).
struct SpillDir(std::path::PathBuf);

impl SpillDir {
    fn new(tag: &str) -> SpillDir {
        let dir = std::env::temp_dir().join(format!("shoal-cluster-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        SpillDir(dir)
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A machine of two single-threaded worker processes whose store holds
/// `limit` bytes in memory and spills into `spill`, joined to `server`.
fn limited_machine(server: &ServerHandle, limit: &str, spill: &SpillDir) -> Worker {
    let dir = spill.0.to_str().unwrap().to_string();
    let agent =
        machine(&server.url(), 2, 1, &[("SHOAL_WORKER_MEMORY_LIMIT", limit), ("SHOAL_WORKER_SPILL_DIR", dir.as_str())]);
    wait_for("the machine", || server.workers() == 1);
    agent
}

#[test]
fn a_machine_over_its_memory_limit_spills_its_results_and_reads_them_back() {
    let server = scheduler();
    let spill_dir = SpillDir::new("spill");
    let spill = spill_dir.0.clone();
    // Two blobs of 3 MB fit under 7 MB; five do not.
    let _agent = limited_machine(&server, "7000000", &spill_dir);
    // The store's own directory and what it keeps there before any spill.
    let before = files_under(&spill);
    let client = Client::connect(&server.url()).unwrap();
    let seeds = [1u8, 2, 3, 4, 5];
    let blobs: Vec<_> = seeds.iter().map(|&s| client.submit(blob, s).unwrap()).collect();
    shoal::wait(&blobs).unwrap();
    let spilled = files_under(&spill) - before;
    assert!(spilled >= 3, "five blobs of 3 MB under a 7 MB limit: {spilled} spill files, not at least 3");
    // Each read back for its reader, and for the client's gather.
    for (&seed, data) in seeds.iter().zip(&blobs) {
        assert_eq!(client.submit(checksum, data).unwrap().result().unwrap(), blob_sum(seed));
    }
    let back = blobs[0].result().unwrap();
    assert_eq!(back[999], (999u32 as u8).wrapping_mul(1));
    drop(client);
    drop(_agent);
}

/// When it ran, in nanoseconds since the epoch (the machine's processes
/// share its clock), after a nap; `_i` tells the calls apart.
#[shoal::task]
fn span_of_a_nap(_i: u64) -> (u64, u64) {
    let now = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(60));
    (start, now())
}

/// Runs that overlap another in `spans` (sorted by start).
fn overlaps(spans: &mut [(u64, u64)]) -> usize {
    spans.sort();
    spans.windows(2).filter(|pair| pair[1].0 < pair[0].1).count()
}

/// Over its memory limit with nothing left to spill (a result larger than
/// the limit, held), a machine starts its runs one at a time: never two at
/// once, yet all of them run. Under the limit its two processes run side by
/// side (the same runs, before the big result).
#[test]
fn a_machine_over_its_memory_limit_with_nothing_to_spill_starts_runs_one_at_a_time() {
    let server = scheduler();
    let spill = SpillDir::new("pause");
    let _agent = limited_machine(&server, "2000000", &spill);
    let client = Client::connect(&server.url()).unwrap();
    let mut side_by_side: Vec<(u64, u64)> = client.gather(&client.map(span_of_a_nap, 0..8u64).unwrap()).unwrap();
    assert!(overlaps(&mut side_by_side) > 0, "under the limit two processes run at once: {side_by_side:?}");
    // Six megabytes under a two-megabyte limit, kept in memory (the one
    // result there is: nothing else to spill).
    let big = client.submit(big_blob, 3u8).unwrap();
    big.wait().unwrap();
    let mut paused: Vec<(u64, u64)> = client.gather(&client.map(span_of_a_nap, 8..16u64).unwrap()).unwrap();
    assert_eq!(paused.len(), 8, "every run ran");
    assert_eq!(overlaps(&mut paused), 0, "two runs at once over the limit: {paused:?}");
    assert_eq!(
        client.submit(byte_at, (&big, 1000u64)).unwrap().result().unwrap(),
        u64::from((1000u32 as u8).wrapping_mul(3)) + 1000
    );
    drop(client);
    drop(_agent);
}

/// `"<pid> <mapping>"`: the process that ran it, and the name of the
/// mapping its input lies in (`/memfd:<segment>` for a segment; empty or
/// `[heap]` for memory of the process's own).
#[shoal::task]
fn where_read(data: &Archived<Vec<u8>>, k: u64) -> String {
    std::thread::sleep(Duration::from_millis(50 + k % 2));
    format!("{} {}", std::process::id(), mapping_of(data.as_ptr() as usize))
}

/// As [`where_read`], of its first input; the second makes its holder the
/// machine with the most input bytes.
#[shoal::task]
fn where_read_beside(data: &Archived<Vec<u8>>, heavy: &Archived<Vec<u8>>, k: u64) -> String {
    std::thread::sleep(Duration::from_millis(50 + k % 2 + u64::from(heavy[0] % 2)));
    format!("{} {}", std::process::id(), mapping_of(data.as_ptr() as usize))
}

/// Six megabytes.
#[shoal::task]
fn big_blob(seed: u8) -> Vec<u8> {
    (0..6_000_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

/// The path of the mapping of this process that holds address `at`.
fn mapping_of(at: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            let (lo, hi) = parts.next()?.split_once('-')?;
            let (lo, hi) = (usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?);
            // perms, offset, dev, inode, then the path (if any).
            (lo <= at && at < hi).then(|| parts.nth(4).unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

/// `(pid, mapping)` of a [`where_read`] answer.
fn parse_read(read: &str) -> (u64, String) {
    let (pid, mapping) = read.split_once(' ').unwrap();
    (pid.parse().unwrap(), mapping.to_string())
}

/// Each worker's figures are sent every second: wait for a fresh set.
fn fresh_figures(server: &ServerHandle) -> Vec<(u32, u32, shoal_net::wire::WireFigures)> {
    std::thread::sleep(shoal_net::wire::FIGURES_EVERY + Duration::from_millis(300));
    server.figures()
}

#[test]
fn a_result_made_by_one_process_of_a_machine_is_read_by_the_other_in_place() {
    let server = scheduler();
    let _agent = machine(&server.url(), 2, 1, &[]);
    wait_for("the machine", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let data = client.submit(pid_blob, 9u8).unwrap();
    let maker = client.submit(maker_pid, (&data, 0u64)).unwrap().result().unwrap();
    let reads: Vec<_> = (0..8u64).map(|k| client.submit(where_read, (&data, k)).unwrap()).collect();
    let reads: Vec<String> = client.gather(&reads).unwrap();
    let readers: std::collections::BTreeSet<u64> = reads.iter().map(|r| parse_read(r).0).collect();
    assert!(readers.iter().any(|&pid| pid != maker), "no reader ran beside the maker {maker}: {reads:?}");
    // Every reader mapped the maker's own segment: no copy on the machine.
    for read in &reads {
        let (_, mapping) = parse_read(read);
        assert!(mapping.starts_with(&format!("/memfd:shoal-w{maker}-")), "not read in place: {read}");
    }
    // And nothing crossed a data port.
    let figures = fresh_figures(&server);
    assert_eq!(figures.len(), 1);
    assert_eq!(figures[0].2.served_bytes, 0, "{figures:?}");
    assert_eq!(figures[0].2.fetched_bytes, 0, "{figures:?}");
    assert_eq!(server.counts().remote_inputs, 0);
}

#[test]
fn an_input_fetched_from_another_machine_lands_once_and_its_processes_read_it_in_place() {
    let server = scheduler();
    let far = machine(&server.url(), 2, 1, &[]);
    wait_for("the first machine", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let heavy = client.submit(big_blob, 2u8).unwrap();
    shoal::wait(std::slice::from_ref(&heavy)).unwrap();
    let near = Worker::start(&server.url(), 1);
    wait_for("the second machine", || server.workers() == 2);
    // The first machine is busier (least loaded, lowest id wins a tie), so
    // the blob is made on the second.
    let _sleeper = client.submit(half_second, 77u64).unwrap();
    let data = client.submit(pid_blob, 4u8).unwrap();
    assert_eq!(client.submit(maker_pid, (&data, 0u64)).unwrap().result().unwrap(), u64::from(near.0.id()));
    // Readers of both go where the most input bytes are: the first machine,
    // which fetches the blob from the second.
    let reads: Vec<_> = (0..8u64).map(|k| client.submit(where_read_beside, (&data, &heavy, k)).unwrap()).collect();
    let reads: Vec<String> = client.gather(&reads).unwrap();
    let far_reads: Vec<(u64, String)> =
        reads.iter().map(|r| parse_read(r)).filter(|(pid, _)| *pid != u64::from(near.0.id())).collect();
    let readers: std::collections::BTreeSet<u64> = far_reads.iter().map(|(pid, _)| *pid).collect();
    assert_eq!(readers.len(), 2, "both processes of the first machine read the blob: {reads:?}");
    assert!(!readers.contains(&u64::from(far.0.id())), "a task ran in the agent: {reads:?}");
    // In place: the one copy the agent landed in a segment of its own.
    for (pid, mapping) in &far_reads {
        assert!(
            mapping.starts_with(&format!("/memfd:shoal-a{}-fetched-", far.0.id())),
            "process {pid} did not read the landed copy: {mapping:?}"
        );
    }
    // Fetched once, whatever the runs that needed it (some readers may
    // run on the second machine if the first is full: that one fetches
    // the heavy blob, which is not counted here).
    let figures = fresh_figures(&server);
    let (_, _, far_figures) = figures.iter().find(|(_, pid, _)| *pid == far.0.id()).unwrap();
    assert!(
        (3_000_000..6_000_000).contains(&far_figures.fetched_bytes),
        "the first machine fetched {} bytes, not one blob: {figures:?}",
        far_figures.fetched_bytes
    );
}

/// Kills the process that runs it.
#[shoal::task]
fn abort_process(x: u64) -> u64 {
    if x > 0 {
        std::process::abort();
    }
    x
}

#[test]
fn a_task_that_kills_its_worker_process_fails_after_three_deaths_and_the_machine_stays() {
    let server = scheduler();
    let _agent = machine(&server.url(), 2, 1, &[]);
    wait_for("the machine", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let err = client.submit(abort_process, 1u64).unwrap().result().unwrap_err();
    assert!(err.to_string().contains("died 3 times"), "{err}");
    // The machine replaced its processes and goes on.
    assert_eq!(client.submit(abort_process, 0u64).unwrap().result().unwrap(), 0);
    assert_eq!(server.workers(), 1);
}

/// A run of `i` that leaves a mark (a line with its process id in the file
/// `dir/i`), naps `millis`, and answers `3 i` and where it ran.
#[shoal::task]
fn marked_nap(dir: String, i: u64, millis: u64) -> (u32, u64) {
    use std::io::Write;
    let mark = std::path::Path::new(&dir).join(i.to_string());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(mark).expect("the marks' directory");
    writeln!(file, "{}", std::process::id()).expect("a mark");
    std::thread::sleep(Duration::from_millis(millis));
    (std::process::id(), 3 * i)
}

/// Five slow runs, all sent to the one machine there is (one thread, four
/// more slots); a second machine joins with nothing queued for it. Once a
/// run's time is known, the scheduler asks the busy machine's agent for
/// runs it has not started, and the idle one runs them: both machines run
/// some, the answers are right, and no run happens twice. Without taking
/// runs back, the second machine idled while the first ran all five.
#[test]
fn an_idle_machine_takes_back_runs_queued_unstarted_on_a_busy_one_and_none_runs_twice() {
    let server = scheduler();
    let _a = Worker::start(&server.url(), 1);
    wait_for("the first worker", || server.workers() == 1);
    let client = Client::connect(&server.url()).unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-take-back-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.to_string_lossy().to_string();
    let futures: Vec<_> = (0..5u64).map(|i| client.submit(marked_nap, (path.clone(), i, 600)).unwrap()).collect();
    wait_for("the runs to be sent to the first machine", || {
        futures.iter().all(|f| f.status() == shoal::FutureStatus::Running)
    });
    let _b = Worker::start(&server.url(), 1);
    wait_for("the second worker", || server.workers() == 2);
    let got: Vec<(u32, u64)> = client.gather(&futures).unwrap();
    assert_eq!(got.iter().map(|&(_, x)| x).collect::<Vec<_>>(), vec![0, 3, 6, 9, 12]);
    let pids: std::collections::BTreeSet<u32> = got.iter().map(|&(p, _)| p).collect();
    let counts = server.counts();
    assert_eq!(pids.len(), 2, "the second machine ran nothing: {got:?}, {counts:?}");
    assert!(counts.given_back >= 1 && counts.given_back <= counts.asked_back, "{counts:?}");
    for i in 0..5 {
        let marks = std::fs::read_to_string(dir.join(i.to_string())).unwrap();
        assert_eq!(marks.lines().count(), 1, "run {i} ran more than once: {marks:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
