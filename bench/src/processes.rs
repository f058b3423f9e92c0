//! `processes`: the processes mode against the threads mode and rayon.
//!
//! | table | what is timed |
//! |---|---|
//! | count-letters | the headline job: sequential, rayon, shoal threads, shoal processes |
//! | count-letters-pipeline | one task loads a file and returns its bytes, a second sorts and counts them (load → process): results cross processes |
//! | transfer | a task makes an N MiB `Vec<u8>`; a second reads it in place (`&Archived<Vec<u8>>`): how long the consumer waits for its input, against copying the bytes through a pipe |
//!
//! Rounds alternate the runners (A B C A B C …) so that a noisy neighbour
//! hurts all of them alike.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use shoal::prelude::*;

use crate::Opts;
use crate::count_letters;
use crate::table::{Samples, Table, secs, time, verdict};

/// The processes mode within this factor of rayon meets the target.
const TARGET_VS_RAYON: f64 = 1.10;
/// The pipeline in processes mode within this factor of the threads mode.
const TARGET_PIPELINE_VS_THREADS: f64 = 1.15;

#[shoal::task]
fn load(path: String) -> shoal::Result<Vec<u8>> {
    Ok(std::fs::read(path)?)
}

/// Sorting needs its own copy, so the input is taken by value: a clone in
/// the threads mode, a deserialization from shared memory in the processes
/// mode — one copy either way.
#[shoal::task]
fn sort_and_count(mut data: Vec<u8>) -> u64 {
    data.sort_unstable();
    data.len() as u64
}

#[shoal::task]
fn make_bytes(mib: u64) -> Vec<u8> {
    vec![7u8; (mib << 20) as usize]
}

/// When the consumer started (monotonic clock, shared by all processes of
/// the machine), the length, and a checksum of one byte per page.
#[shoal::task]
fn read_in_place(data: &Archived<Vec<u8>>) -> (u64, u64, u64) {
    let started = monotonic_ns();
    let checksum = data.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    (started, data.len() as u64, checksum)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn pipeline(client: &Client, files: &[String]) -> shoal::Result<u64> {
    let loaded = client.map(load, files.iter().cloned())?;
    let counts = client.map(sort_and_count, loaded.iter())?;
    drop(loaded);
    Ok(client.gather(&counts)?.into_iter().sum())
}

fn rayon_pipeline(files: &[String]) -> shoal::Result<u64> {
    let counts: std::io::Result<Vec<u64>> = files
        .par_iter()
        .map(|f| {
            let mut data = std::fs::read(f)?;
            data.sort_unstable();
            Ok(data.len() as u64)
        })
        .collect();
    Ok(counts?.into_iter().sum())
}

fn check(got: u64, expected: u64, who: &str) -> shoal::Result<()> {
    if got == expected { Ok(()) } else { Err(shoal::Error::msg(format!("{who}: {got} letters, expected {expected}"))) }
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let files = count_letters::files(opts)?;
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let threads = Client::local()?;
    let processes = Client::processes(workers)?;
    let expected = count_letters::sequential(&files)?;

    let mut rows: Vec<(&str, Samples)> = ["sequential", "rayon par_iter", "shoal threads", "shoal processes"]
        .iter()
        .map(|n| (*n, Samples::default()))
        .collect();
    let mut pipe: Vec<(&str, Samples)> = ["rayon (read+sort per file)", "shoal threads", "shoal processes"]
        .iter()
        .map(|n| (*n, Samples::default()))
        .collect();
    for round in 0..opts.rounds {
        eprintln!("  round {}/{}", round + 1, opts.rounds);
        let runs: [&dyn Fn() -> shoal::Result<u64>; 4] = [
            &|| count_letters::sequential(&files),
            &|| count_letters::rayon(&files),
            &|| count_letters::shoal(&threads, &files),
            &|| count_letters::shoal(&processes, &files),
        ];
        for (run, (name, samples)) in runs.iter().zip(rows.iter_mut()) {
            let (d, n) = time(run);
            check(n?, expected, name)?;
            samples.push(d);
        }
        let runs: [&dyn Fn() -> shoal::Result<u64>; 3] =
            [&|| rayon_pipeline(&files), &|| pipeline(&threads, &files), &|| pipeline(&processes, &files)];
        for (run, (name, samples)) in runs.iter().zip(pipe.iter_mut()) {
            let (d, n) = time(run);
            check(n?, expected, name)?;
            samples.push(d);
        }
    }
    println!(
        "\ncount-letters, processes mode: {} files, {workers} worker processes × 1 thread vs {} threads, median of {} rounds",
        files.len(),
        threads.nthreads(),
        opts.rounds
    );
    let rayon = rows[1].1.median();
    let mut t = Table::new(&["runner", "median", "min", "max", "÷ rayon"]);
    for (name, s) in &rows {
        t.row(vec![
            name.to_string(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            format!("{:.3}", s.median() / rayon),
        ]);
    }
    t.print();
    let ratio = rows[3].1.median() / rayon;
    let mut r = Table::new(&["ratio", "value", "target", ""]);
    r.row(vec![
        "shoal processes ÷ rayon".into(),
        format!("{ratio:.3}"),
        format!("≤ {TARGET_VS_RAYON}"),
        verdict(ratio <= TARGET_VS_RAYON),
    ]);
    r.print();

    println!(
        "\ncount-letters-pipeline: load (returns the file's bytes) → sort and count, median of {} rounds",
        opts.rounds
    );
    let threads_time = pipe[1].1.median();
    let mut t = Table::new(&["runner", "median", "min", "max", "÷ shoal threads"]);
    for (name, s) in &pipe {
        t.row(vec![
            name.to_string(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            format!("{:.3}", s.median() / threads_time),
        ]);
    }
    t.print();
    let ratio = pipe[2].1.median() / threads_time;
    let mut r = Table::new(&["ratio", "value", "target", ""]);
    r.row(vec![
        "processes ÷ threads".into(),
        format!("{ratio:.3}"),
        format!("≤ {TARGET_PIPELINE_VS_THREADS}"),
        verdict(ratio <= TARGET_PIPELINE_VS_THREADS),
    ]);
    r.print();

    transfer(opts, &processes)
}

/// The consumer's wait for an N MiB input, in processes mode, against a
/// copy of the same bytes through a pipe; and the producer's write rate.
fn transfer(opts: &Opts, client: &Client) -> shoal::Result<()> {
    let sizes: &[u64] = if opts.quick { &[16, 64, 256] } else { &[64, 256, 1024] };
    println!("\ntransfer: a task makes N MiB, another reads it in place; median of {} rounds", opts.rounds);
    let mut t = Table::new(&[
        "size",
        "consumer's wait for its input",
        "consumer's whole run (incl. one read per page)",
        "producer (make + archive + publish)",
        "pipe copy baseline",
        "wait ÷ pipe",
    ]);
    for &mib in sizes {
        let (mut wait, mut whole, mut produce, mut piped) =
            (Samples::default(), Samples::default(), Samples::default(), Samples::default());
        for _ in 0..opts.rounds {
            let opts = SubmitOptions::default().pure(false);
            let start = Instant::now();
            let data = client.submit_with(make_bytes, mib, &opts)?;
            data.wait()?;
            produce.push(start.elapsed());
            let submitted = monotonic_ns();
            let start = Instant::now();
            let (started, len, sum) = client.submit_with(read_in_place, &data, &opts)?.result()?;
            whole.push(start.elapsed());
            if len != mib << 20 || sum != 7 * (len / 4096) {
                return Err(shoal::Error::msg(format!(
                    "transfer of {mib} MiB read back wrong: {len} bytes, sum {sum}"
                )));
            }
            wait.push(Duration::from_nanos(started.saturating_sub(submitted)));
            drop(data);
            piped.push(pipe_copy((mib << 20) as usize)?);
        }
        t.row(vec![
            format!("{mib} MiB"),
            secs(wait.median()),
            secs(whole.median()),
            format!("{} ({:.1} GiB/s)", secs(produce.median()), mib as f64 / 1024.0 / produce.median()),
            format!("{} ({:.1} GiB/s)", secs(piped.median()), mib as f64 / 1024.0 / piped.median()),
            format!("{:.4}", wait.median() / piped.median()),
        ]);
    }
    t.print();
    println!("target: the wait does not grow with the size (zero-copy); the producer writes near memory bandwidth");
    Ok(())
}

/// Copy `len` bytes from one thread to another through a pipe (the copy a
/// runtime without shared memory makes), into a fresh buffer.
fn pipe_copy(len: usize) -> shoal::Result<Duration> {
    let (mut reader, mut writer) = std::io::pipe()?;
    let data = vec![7u8; len];
    let start = Instant::now();
    let sender = std::thread::spawn(move || writer.write_all(&data));
    let mut received = Vec::with_capacity(len);
    reader.read_to_end(&mut received)?;
    let sent = sender.join().map_err(|_| shoal::Error::msg("pipe writer panicked"))?;
    sent?;
    let elapsed = start.elapsed();
    if received.len() != len {
        return Err(shoal::Error::msg("pipe copy lost bytes"));
    }
    Ok(elapsed)
}
