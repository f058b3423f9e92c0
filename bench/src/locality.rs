//! `locality`: what placing tasks where their inputs are saves, on a
//! loopback cluster.
//!
//! The graph: `BLOCKS` large blocks, made by tasks without inputs (so the
//! scheduler spreads them over the machines), and `READERS` tasks per
//! block that each read the whole block and return a small checksum. A
//! reader placed on the machine holding its block reads it in place; one
//! placed elsewhere fetches it from the holder's data port first (a
//! machine keeps a fetched copy while the block lives, so a block crosses
//! at most once per machine).
//!
//! Each round runs the same graph (new seeds, so new tasks) on a fresh
//! cluster of `MACHINES` worker machines (one process of one thread each)
//! for each placement, alternately, so all see the same load:
//! - *locality, transfers weighed* (the scheduler's rule): the holder of
//!   most input bytes, and when it is busy a move only if it pays;
//! - *locality, free slot first* (the rule before weighing,
//!   `ServerConfig::weigh_transfers = false`): the holder if it has a free
//!   slot, else any free worker;
//! - *random* (`Placement::Random`, the benchmark control behind
//!   `SHOAL_PLACEMENT=random`).
//!
//! Measured: the makespan (first submission to the last checksum) and the
//! bytes of inputs named on another machine than the run's (the
//! scheduler's `remote_bytes`, each a fetch unless that machine had a copy
//! already), and the bytes the machines' data ports really fetched (their
//! figures, which they report every second or so: read after the job).

use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal_net::server::Placement;

use crate::Opts;
use crate::cluster::{Cluster, Site, load};
use crate::table::{Samples, Table, median, secs};

/// Worker machines of the loopback cluster.
const MACHINES: [&str; 3] = ["a", "b", "c"];
/// Blocks per round: several per machine, so placement has choices.
const BLOCKS: u64 = 12;
/// Readers per block.
const READERS: u64 = 3;
/// A block's size: large enough that moving it costs more than reading it.
const BLOCK_BYTES: u64 = 16 << 20;
/// With `--quick`.
const QUICK_BLOCK_BYTES: u64 = 4 << 20;
/// The random placement's seed (any fixed one: the draws are reproducible).
const SEED: u64 = 20_261_129;
/// The placements compared, in the table's order.
const NAMES: [&str; 3] = ["locality, transfers weighed", "locality, free slot first", "random (seeded)"];
/// How long to wait for the machines' figures to show their fetches.
const FIGURES_WAIT: Duration = Duration::from_secs(3);

/// A block of `n` bytes, every byte `fill` (written, so its pages exist).
#[shoal::task]
fn locality_block(n: u64, fill: u8, _round: u64) -> Vec<u8> {
    vec![fill; n as usize]
}

/// Reads the whole block: the sum of its bytes, plus `salt` (so the readers
/// of one block are different tasks).
#[shoal::task]
fn locality_read(block: &Archived<Vec<u8>>, salt: u64) -> u64 {
    block.iter().map(|&b| u64::from(b)).sum::<u64>() + salt
}

struct Round {
    makespan: Duration,
    named_remote: u64,
    fetched: u64,
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let block = if opts.quick { QUICK_BLOCK_BYTES } else { BLOCK_BYTES };
    let load_before = load();
    println!(
        "locality: {BLOCKS} blocks of {} MiB, {READERS} readers each, on a loopback cluster of {} machines × 1 \
         process × 1 thread; three placements, {} rounds alternated (load before: {load_before})",
        block >> 20,
        MACHINES.len(),
        opts.rounds
    );
    let mut rounds: [Vec<Round>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..opts.rounds as u64 {
        let placements = [
            (Placement::Locality, true),
            (Placement::Locality, false),
            (Placement::Random { seed: SEED + round }, false),
        ];
        for (i, (placement, weigh)) in placements.into_iter().enumerate() {
            let r = one_round(placement, weigh, block, round)?;
            eprintln!(
                "  round {}/{} {}: {}, {} MiB named remote, {} MiB fetched",
                round + 1,
                opts.rounds,
                NAMES[i],
                secs(r.makespan.as_secs_f64()),
                r.named_remote >> 20,
                r.fetched >> 20
            );
            rounds[i].push(r);
        }
    }
    let summary = |rs: &[Round]| {
        let mut s = Samples::default();
        for r in rs {
            s.push(r.makespan);
        }
        let named = median(&rs.iter().map(|r| r.named_remote as f64).collect::<Vec<_>>());
        let fetched = median(&rs.iter().map(|r| r.fetched as f64).collect::<Vec<_>>());
        (s, named, fetched)
    };
    let (loc, old, rnd) = (summary(&rounds[0]), summary(&rounds[1]), summary(&rounds[2]));
    let total = (BLOCKS * READERS * block) as f64;
    let mib = |b: f64| format!("{:.0}", b / f64::from(1 << 20));
    let mut t = Table::new(&[
        "placement",
        "median makespan",
        "min",
        "max",
        "MiB named remote",
        "MiB fetched",
        "% of input bytes remote",
    ]);
    for (name, (s, named, fetched)) in [(NAMES[0], &loc), (NAMES[1], &old), (NAMES[2], &rnd)] {
        t.row(vec![
            name.into(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            mib(*named),
            mib(*fetched),
            format!("{:.0}%", 100.0 * named / total),
        ]);
    }
    t.print();
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "∞ (locality moved none)".into() };
    let mut r = Table::new(&["ratio (medians)", "random ÷ weighed", "free slot first ÷ weighed"]);
    r.row(vec!["makespan".into(), ratio(rnd.0.median(), loc.0.median()), ratio(old.0.median(), loc.0.median())]);
    r.row(vec!["bytes named remote".into(), ratio(rnd.1, loc.1), ratio(old.1, loc.1)]);
    r.row(vec!["bytes fetched".into(), ratio(rnd.2, loc.2), ratio(old.2, loc.2)]);
    r.print();
    println!("load before: {load_before}; after: {}", load());
    Ok(())
}

/// One job on a fresh cluster placing tasks by `placement`.
fn one_round(placement: Placement, weigh: bool, block: u64, round: u64) -> shoal::Result<Round> {
    let cluster = Cluster::start_placing(&Site::Loopback, &MACHINES, 1, placement, weigh)?;
    let (server, client) = (&cluster.server, &cluster.client);
    let before = server.counts();
    let fetched_before = fetched(server);
    let started = Instant::now();
    let blocks = (0..BLOCKS)
        .map(|b| client.submit(locality_block, (block, (b % 251 + 1) as u8, round)))
        .collect::<shoal::Result<Vec<_>>>()?;
    let mut readers = Vec::new();
    for (b, f) in blocks.iter().enumerate() {
        for salt in 0..READERS {
            readers.push((b as u64, salt, client.submit(locality_read, (f, salt))?));
        }
    }
    drop(blocks);
    for (b, salt, f) in &readers {
        let got = f.result()?;
        let want = block * (b % 251 + 1) + salt;
        if got != want {
            return Err(shoal::Error::Start(format!("block {b} reader {salt}: checksum {got}, expected {want}")));
        }
    }
    let makespan = started.elapsed();
    let named_remote = server.counts().remote_bytes - before.remote_bytes;
    // The machines report what their data ports fetched with their figures,
    // every second or so: wait for them to show the fetches the scheduler
    // named (a machine with a copy fetches nothing, so fewer may come).
    let deadline = Instant::now() + FIGURES_WAIT;
    let mut got = fetched(server) - fetched_before;
    while got < named_remote && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        got = fetched(server) - fetched_before;
    }
    Ok(Round { makespan, named_remote, fetched: got })
}

/// Bytes every machine's data port fetched so far, by its last figures.
fn fetched(server: &shoal_net::server::ServerHandle) -> u64 {
    server.figures().iter().map(|(_, _, f)| f.fetched_bytes).sum()
}
