//! `transfer`: how fast a large result moves between two worker machines
//! on the cluster's peer-to-peer data path, against raw TCP on the same
//! link, measured in the same run.
//!
//! Each round makes two fresh 1 GiB results, one on each of two worker
//! processes (workers of one thread: the second `make` goes to the idle
//! one), then times a task that needs both: it runs on one holder, which
//! fetches the other's result from its data port — connect and handshake
//! (first round), 1,024 chunks of 1 MiB, landing in the receiver's store,
//! the trivial task, its answer. The scheduler's byte counters check that
//! exactly one result crossed per round. Raw TCP: a plain Rust socket copy
//! of the same number of bytes between two threads, into a fresh buffer
//! (the same landing) and into a reused one (the link's ceiling); and
//! `iperf3` when installed. The table gives GB/s (10^9 bytes/s) and shoal
//! ÷ raw.
//!
//! Links: **loopback**; and, when running as root, **two network
//! namespaces joined by veth links to a bridge** in a third (as
//! `tests/netns.rs` builds them), one worker machine in each, the
//! scheduler and client in the third; the raw copies run between threads
//! moved into the two machines' namespaces.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use shoal::prelude::*;

use crate::Opts;
use crate::cluster::{Children, Cluster, Site, enter, load};
use crate::table::{Samples, Table, median};

/// The result moved: 1 GiB (the size).
const SIZE: usize = 1 << 30;
/// The size with `--quick`.
const QUICK_SIZE: usize = 64 << 20;
/// The raw copies' write and read size (shoal's chunk size).
const IO_CHUNK: usize = 1 << 20;

/// A result of `n` bytes, different for each seed (so each round's results
/// are new tasks, not the last round's pure keys).
#[shoal::task]
fn transfer_blob(n: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n as usize];
    for (i, b) in v.iter_mut().enumerate().step_by(4096) {
        *b = (i as u64 ^ seed) as u8;
    }
    v
}

/// Needs both results; one of them has to cross.
#[shoal::task]
fn transfer_both(a: &Archived<Vec<u8>>, b: &Archived<Vec<u8>>) -> u64 {
    (a.len() + b.len()) as u64
}

struct Figures {
    link: &'static str,
    shoal: Samples,
    raw_fresh: Samples,
    raw_reused: Samples,
    iperf: Option<f64>,
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let size = if opts.quick { QUICK_SIZE } else { SIZE };
    println!(
        "transfer: a {} MiB result between two worker machines, {} rounds (load: {})",
        size >> 20,
        opts.rounds,
        load()
    );
    let mut all = vec![measure(&Site::Loopback, size, opts.rounds)?];
    match Site::namespaces() {
        Ok(site) => {
            // The namespaces' case runs on a thread moved into the
            // scheduler's namespace (threads it starts inherit it).
            let rounds = opts.rounds;
            let figures = std::thread::scope(|s| {
                s.spawn(|| {
                    enter(site.ns("s")).map_err(shoal::Error::Start)?;
                    measure(&site, size, rounds)
                })
                .join()
                .unwrap_or_else(|_| Err(shoal::Error::Start("the namespaces' run panicked".into())))
            })?;
            all.push(figures);
        }
        Err(why) => println!("(two network namespaces: skipped, {why})"),
    }
    let gb = |secs: f64| size as f64 / secs / 1e9;
    let mut t = Table::new(&["link", "path", "median GB/s", "min", "max", "shoal ÷ this"]);
    for f in &all {
        let shoal = gb(f.shoal.median());
        let row = |t: &mut Table, path: &str, s: &Samples| {
            let m = gb(s.median());
            t.row(vec![
                f.link.into(),
                path.into(),
                format!("{m:.2}"),
                format!("{:.2}", gb(s.max())),
                format!("{:.2}", gb(s.min())),
                format!("{:.0}%", 100.0 * shoal / m),
            ]);
        };
        row(&mut t, "shoal peer-to-peer (worker → worker)", &f.shoal);
        row(&mut t, "raw TCP copy, into a fresh buffer", &f.raw_fresh);
        row(&mut t, "raw TCP copy, into a reused buffer", &f.raw_reused);
        match f.iperf {
            Some(bps) => t.row(vec![
                f.link.into(),
                "iperf3 (one stream)".into(),
                format!("{:.2}", bps / 8e9),
                String::new(),
                String::new(),
                format!("{:.0}%", 100.0 * shoal / (bps / 8e9)),
            ]),
            None => t.row(vec![f.link.into(), "iperf3".into(), "not run (not installed or failed)".into()]),
        }
    }
    t.print();
    println!("target: shoal ≥ 80% of raw TCP on the same link; load after: {}", load());
    Ok(())
}

fn measure(site: &Site, size: usize, rounds: usize) -> shoal::Result<Figures> {
    let (_, _, b_host) = site.hosts();
    let cluster = Cluster::start(site, &["a", "b"], 1)?;
    let (server, client) = (&cluster.server, &cluster.client);
    let mut shoal = Samples::default();
    for round in 0..rounds as u64 {
        let a = client.submit(transfer_blob, (size as u64, 2 * round))?;
        let b = client.submit(transfer_blob, (size as u64, 2 * round + 1))?;
        shoal::wait(&[a.clone(), b.clone()])?;
        let before = server.counts();
        let started = Instant::now();
        let both = client.submit(transfer_both, (&a, &b))?.result()?;
        shoal.push(started.elapsed());
        let crossed = server.counts().remote_bytes - before.remote_bytes;
        if both != 2 * size as u64 || crossed < size as u64 || crossed > size as u64 + (1 << 20) {
            return Err(shoal::Error::Start(format!(
                "round {round}: expected one {size}-byte result to cross between the workers, {crossed} bytes did \
                 (both results on one worker?)"
            )));
        }
    }
    drop(cluster);
    // Raw TCP on the same link: machine a sends, machine b receives.
    let mut raw_fresh = Samples::default();
    let mut raw_reused = Samples::default();
    for _ in 0..rounds {
        raw_fresh.push(raw_copy(site, size, true)?);
        raw_reused.push(raw_copy(site, size, false)?);
    }
    let iperf = iperf3(site, &b_host, size);
    Ok(Figures { link: site.name(), shoal, raw_fresh, raw_reused, iperf })
}

/// One raw copy of `size` bytes from machine a to machine b (threads moved
/// into their namespaces), timed from connect to the last byte read.
fn raw_copy(site: &Site, size: usize, fresh: bool) -> shoal::Result<Duration> {
    let (_, _, b_host) = site.hosts();
    let err = |e: std::io::Error| shoal::Error::Start(format!("raw copy: {e}"));
    let (a_ns, b_ns) = (site.ns("a").to_string(), site.ns("b").to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || -> std::io::Result<(Duration, usize)> {
        if !b_ns.is_empty() {
            enter(&b_ns).map_err(std::io::Error::other)?;
        }
        let listener = TcpListener::bind((b_host.as_str(), 0))?;
        let _ = tx.send(listener.local_addr()?);
        let (mut stream, _) = listener.accept()?;
        let started = Instant::now();
        let mut got = 0;
        if fresh {
            let mut buf: Vec<u8> = Vec::with_capacity(size);
            while got < size {
                let n = (&mut stream).take((size - got) as u64).read_to_end(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            std::hint::black_box(&buf);
        } else {
            let mut buf = vec![0u8; IO_CHUNK];
            while got < size {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        Ok((started.elapsed(), got))
    });
    let address = rx.recv().map_err(|_| shoal::Error::Start("raw copy: the receiver did not start".into()))?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        if !a_ns.is_empty() {
            enter(&a_ns).map_err(std::io::Error::other)?;
        }
        let data = vec![7u8; size];
        let mut stream = TcpStream::connect(address)?;
        for chunk in data.chunks(IO_CHUNK) {
            stream.write_all(chunk)?;
        }
        Ok(())
    });
    sender.join().map_err(|_| shoal::Error::Start("raw copy: the sender panicked".into()))?.map_err(err)?;
    let (took, got) =
        receiver.join().map_err(|_| shoal::Error::Start("raw copy: the receiver panicked".into()))?.map_err(err)?;
    if got != size {
        return Err(shoal::Error::Start(format!("raw copy: {got} of {size} bytes arrived")));
    }
    Ok(took)
}

/// iperf3 from machine a to machine b, one stream, `size` bytes: bits/s
/// received (median of three), if iperf3 runs.
fn iperf3(site: &Site, b_host: &str, size: usize) -> Option<f64> {
    let mut got = Vec::new();
    for i in 0..3 {
        let port = (5201 + (std::process::id() % 1000) + i).to_string();
        let mut server = Children(vec![
            site.command("b", "iperf3")
                .args(["-s", "-1", "-B", b_host, "-p", &port])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?,
        ]);
        std::thread::sleep(Duration::from_millis(300));
        let out = site
            .command("a", "iperf3")
            .args(["-c", b_host, "-p", &port, "-n", &size.to_string(), "-J"])
            .output()
            .ok()?;
        let _ = server.0[0].wait();
        server.0.clear();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        got.push(json["end"]["sum_received"]["bits_per_second"].as_f64()?);
    }
    Some(median(&got))
}
