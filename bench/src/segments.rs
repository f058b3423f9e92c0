//! `segments`: what a large result costs in shared memory — the producer
//! writing it into its segment, and a consumer's first read of it (page
//! faults) — for a 1 GiB `Vec<u8>` (issue 12: "warm memory for results",
//! "page faults on large reads").
//!
//! | table | what is timed |
//! |---|---|
//! | producer | `shoal_shm::uds::publish` of a made `Vec<u8>` (the value's memory already written, as a task's result is): serialize into a new segment, cut and seal it — the code a worker process runs on a result — in this process; then the same in the processes mode, from the end of the producing task to the client seeing the result |
//! | consumer | mapping a sealed segment and touching one byte per page (the page faults), by the segment's own mapping (`Segment::from_fd`) and by variants of the map (`MAP_POPULATE`, `MADV_POPULATE_READ`, a shared read-only map); and a full read |
//!
//! Each row is the median of the rounds; rounds of the variants alternate.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};
use shoal_shm::uds::publish;
use shoal_shm::{Segment, SegmentObject};

use crate::Opts;
use crate::cluster::load;
use crate::table::{Samples, Table, secs};

/// The result's size: 1 GiB (the issue's).
const SIZE: usize = 1 << 30;
/// The size with `--quick`.
const QUICK_SIZE: usize = 128 << 20;
/// The producer's target in GB/s (10^9 bytes/s).
const TARGET_GBPS: f64 = 4.0;
const PAGE: usize = 4096;

/// A task's result of `n` bytes and when the task ended (monotonic ns), so
/// that the client can time what follows the task: sealing and sending.
#[shoal::task]
fn seg_make(n: u64, seed: u64) -> (Vec<u8>, u64) {
    let v = vec![seed as u8; n as usize];
    (v, monotonic_ns())
}

/// Touches one byte per page of its input: (ns the touching took, sum).
#[shoal::task]
fn seg_touch(data: &Archived<(Vec<u8>, u64)>) -> (u64, u64) {
    let start = monotonic_ns();
    let sum = data.0.iter().step_by(PAGE).map(|&b| u64::from(b)).sum();
    (monotonic_ns() - start, sum)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn gbps(bytes: usize, secs: f64) -> String {
    format!("{:.2} GB/s", bytes as f64 / secs / 1e9)
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let size = if opts.quick { QUICK_SIZE } else { SIZE };
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap_or_default();
    println!(
        "segments: a {} MiB Vec<u8> result, {} rounds, medians (load: {}; shmem THP: {})",
        size >> 20,
        opts.rounds,
        load(),
        thp.trim()
    );
    let segment = producer(size, opts.rounds)?;
    consumer(&segment, opts.rounds)?;
    drop(segment);
    processes(size, opts.rounds)
}

fn shm(e: shoal_shm::ShmError) -> shoal::Error {
    shoal::Error::msg(e.to_string())
}

/// One `publish` of a fresh copy of the value (made outside the timing, its
/// pages written, as a task's result is): the time, and the segment.
fn publish_once(size: usize, byte: u8) -> shoal::Result<(Duration, Segment)> {
    let obj: shoal_core::object::Obj = shoal_core::object::Value::shared(vec![byte; size]);
    let start = Instant::now();
    let published = publish(&obj, || "shoal-bench-segments-t0".into()).map_err(shoal::Error::msg)?;
    let took = start.elapsed();
    drop(obj);
    let Some(seg) = published.as_any().downcast_ref::<SegmentObject>() else {
        return Err(shoal::Error::msg("a large value was not published as a segment"));
    };
    Ok((took, Segment::from_fd(seg.segment().try_clone_fd().map_err(shm)?).map_err(shm)?))
}

/// `publish` in this process: into fresh memory (warm memory off), and
/// into the process's warm file, made ahead by its thread (timed apart:
/// the work moved off the producer's path).
fn producer(size: usize, rounds: usize) -> shoal::Result<Segment> {
    let budget = shoal_shm::warm::default_budget().max(size + (4 << 20));
    let mut t = Table::new(&["producer: publish", "time", "rate", "target ≥ 4 GB/s"]);
    let (mut fresh, mut warm, mut fill) = (Samples::default(), Samples::default(), Samples::default());
    let mut last = None;
    shoal_shm::warm::set_global(budget);
    // The first result sizes the pool's file.
    drop(publish_once(size, 1)?);
    for round in 0..rounds {
        let byte = round as u8 + 2;
        shoal_shm::warm::set_global(0);
        fresh.push(publish_once(size, byte)?.0);
        shoal_shm::warm::set_global(budget);
        // A new pool: its first take starts the filler, the file is timed
        // being made, then taken by the next result.
        let pool = shoal_shm::warm::global().ok_or_else(|| shoal::Error::msg("no warm pool"))?;
        let start = Instant::now();
        drop(pool.take(size, "shoal-bench-segments-t0"));
        pool.sealed(size + 64);
        if !pool.wait_ready(Duration::from_secs(120)) {
            return Err(shoal::Error::msg("the warm pool made no file in 2 minutes"));
        }
        fill.push(start.elapsed());
        let (took, segment) = publish_once(size, byte)?;
        if pool.stats().taken != 1 {
            return Err(shoal::Error::msg(format!("the warm file was not taken: {:?}", pool.stats())));
        }
        warm.push(took);
        last = Some(segment);
    }
    shoal_shm::warm::set_global(0);
    let met = |m: f64| if size as f64 / m / 1e9 >= TARGET_GBPS { "met" } else { "not met" };
    for (name, s) in [("fresh memory (warm memory off: before)", &fresh), ("warm file ready (after)", &warm)] {
        let m = s.median();
        t.row(vec![format!("{} MiB, {name}", size >> 20), secs(m), gbps(size, m), met(m).into()]);
    }
    let m = fill.median();
    t.row(vec!["the pool's thread making that file (off the path)".into(), secs(m), gbps(size, m), String::new()]);
    t.print();
    last.ok_or_else(|| shoal::Error::msg("no round"))
}

/// How a consumer maps the segment in the variants.
#[derive(Clone, Copy)]
enum Map {
    /// `Segment::from_fd`: what shoal does.
    Shoal,
    PrivatePopulate,
    PrivatePopulateRead,
    Shared,
}

impl Map {
    const ALL: [Map; 4] = [Map::Shoal, Map::PrivatePopulate, Map::PrivatePopulateRead, Map::Shared];

    fn name(self) -> &'static str {
        match self {
            Map::Shoal => "Segment::from_fd (MAP_PRIVATE, read-only)",
            Map::PrivatePopulate => "MAP_PRIVATE | MAP_POPULATE",
            Map::PrivatePopulateRead => "MAP_PRIVATE + MADV_POPULATE_READ",
            Map::Shared => "MAP_SHARED, read-only",
        }
    }
}

/// Map `segment` as `how`, touch one byte per page, unmap: the time, and the sum.
fn touch(segment: &Segment, how: Map) -> shoal::Result<(Duration, u64)> {
    let len = segment.len();
    let start = Instant::now();
    let sum = match how {
        Map::Shoal => {
            let mine = Segment::from_fd(segment.try_clone_fd().map_err(shm)?).map_err(shm)?;
            mine.bytes().iter().step_by(PAGE).map(|&b| u64::from(b)).sum()
        }
        other => {
            let (flags, advice) = match other {
                Map::PrivatePopulate => (libc::MAP_PRIVATE | libc::MAP_POPULATE, None),
                Map::PrivatePopulateRead => (libc::MAP_PRIVATE, Some(libc::MADV_POPULATE_READ)),
                _ => (libc::MAP_SHARED, None),
            };
            // SAFETY: a read-only map of a sealed segment (its size and
            // content cannot change: `Segment`'s invariant) of its length;
            // it is only read below and unmapped before returning.
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, flags, segment.as_fd().as_raw_fd(), 0)
            };
            if ptr == libc::MAP_FAILED {
                return Err(shoal::Error::msg(format!("mmap: {}", std::io::Error::last_os_error())));
            }
            if let Some(advice) = advice {
                // SAFETY: advice on the mapping made just above.
                if unsafe { libc::madvise(ptr, len, advice) } != 0 {
                    let e = std::io::Error::last_os_error();
                    // SAFETY: the mapping made above, not used afterwards.
                    unsafe { libc::munmap(ptr, len) };
                    return Err(shoal::Error::msg(format!("madvise: {e}")));
                }
            }
            // SAFETY: `len` readable bytes mapped above, constant (sealed).
            let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            let sum = bytes.iter().step_by(PAGE).map(|&b| u64::from(b)).sum();
            // SAFETY: the mapping made above; `bytes` is not used after this.
            unsafe { libc::munmap(ptr, len) };
            sum
        }
    };
    Ok((start.elapsed(), sum))
}

fn consumer(segment: &Segment, rounds: usize) -> shoal::Result<()> {
    let len = segment.len();
    let pages = len.div_ceil(PAGE);
    let mut samples = vec![Samples::default(); Map::ALL.len()];
    let mut sums = Vec::new();
    let mut full = Samples::default();
    let mut words = 0u64;
    for _ in 0..rounds {
        for (i, how) in Map::ALL.into_iter().enumerate() {
            let (d, sum) = touch(segment, how)?;
            samples[i].push(d);
            sums.push(sum);
        }
        let fd = segment.try_clone_fd().map_err(shm)?;
        let start = Instant::now();
        let mine = Segment::from_fd(fd).map_err(shm)?;
        words = words.wrapping_add(mine.bytes().chunks_exact(8).map(|w| u64::from(w[0] ^ w[7])).sum::<u64>());
        full.push(start.elapsed());
    }
    std::hint::black_box(words);
    if sums.windows(2).any(|w| w[0] != w[1]) {
        return Err(shoal::Error::msg("the variants read different bytes"));
    }
    let mut t = Table::new(&["consumer: map + one byte per page", "time", "per page", "÷ shoal's"]);
    let base = samples[0].median();
    for (how, s) in Map::ALL.into_iter().zip(&samples) {
        let m = s.median();
        t.row(vec![
            how.name().into(),
            secs(m),
            format!("{:.0} ns", m * 1e9 / pages as f64),
            format!("{:.2}", m / base),
        ]);
    }
    t.row(vec![
        "Segment::from_fd + a full read (8 bytes at a time)".into(),
        secs(full.median()),
        format!("{:.0} ns", full.median() * 1e9 / pages as f64),
        format!("{:.2}", full.median() / base),
    ]);
    println!();
    t.print();
    Ok(())
}

/// The processes mode, one worker process: from the end of the producing
/// task to the client holding its result (seal + send + receive), and the
/// consumer's page faults, inside a task in the worker; with warm memory off
/// (`SHOAL_WARM_MEMORY=0` for the worker) and on (its default), rounds
/// alternated between the two clients.
fn processes(size: usize, rounds: usize) -> shoal::Result<()> {
    let client = |warm: Option<&str>| {
        let env = warm.map(|v| vec![(shoal_shm::warm::ENV_WARM_MEMORY.to_string(), v.to_string())]);
        let processes = ProcessesOptions { workers: 1, env: env.unwrap_or_default(), ..ProcessesOptions::default() };
        let options = ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() };
        Client::processes_with(processes, options)
    };
    let clients = [("warm memory off (before)", client(Some("0"))?), ("warm memory on (after)", client(None)?)];
    let mut produce = vec![Samples::default(); 2];
    let mut faults = vec![Samples::default(); 2];
    for round in 0..rounds {
        for (i, (_, client)) in clients.iter().enumerate() {
            let opts = SubmitOptions::default().pure(false);
            let seed = round as u64 + 1;
            let data = client.submit_with(seg_make, (size as u64, seed), &opts)?;
            data.wait()?;
            let seen = monotonic_ns();
            let (_, ended) = client.submit_with(seg_end, &data, &opts)?.result()?;
            produce[i].push(Duration::from_nanos(seen.saturating_sub(ended)));
            let (ns, sum) = client.submit_with(seg_touch, &data, &opts)?.result()?;
            if sum != seed * size.div_ceil(PAGE) as u64 {
                return Err(shoal::Error::msg(format!("read back wrong: sum {sum}")));
            }
            faults[i].push(Duration::from_nanos(ns));
        }
    }
    let mut t = Table::new(&[
        "processes mode (1 worker process)",
        "producer: task's end → client has it",
        "consumer: one byte per page, in a task",
    ]);
    for (i, (name, _)) in clients.iter().enumerate() {
        let (p, f) = (produce[i].median(), faults[i].median());
        t.row(vec![(*name).into(), format!("{} ({})", secs(p), gbps(size, p)), secs(f)]);
    }
    println!();
    t.print();
    println!("(the producer's column also counts the wait between the task's end and the client's wake-up)");
    Ok(())
}

/// The producing task's end, read from its result (a few bytes of it).
#[shoal::task]
fn seg_end(data: &Archived<(Vec<u8>, u64)>) -> (u64, u64) {
    (data.0.len() as u64, data.1.to_native())
}
