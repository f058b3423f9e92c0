//! The headline job: many files of random letters, each read, sorted and
//! counted, one task per file — the original Dask demonstration.
//!
//! ```text
//! cargo run --release --example count_letters -- [--files N] [--size BYTES] [--dir PATH] [--threads N | --processes P | --scheduler tcp://HOST:PORT]
//! ```
//!
//! It makes the files if they are not there yet (default 100 files of
//! 10 MB under the system temp dir), runs the plain sequential loop and the
//! shoal version, checks that they agree, and prints both times and the
//! speedup.

#[path = "common/letters.rs"]
mod letters;

use std::time::Instant;

use shoal::prelude::*;

#[shoal::task]
fn count_letters(path: String) -> shoal::Result<u64> {
    Ok(letters::count_file(&path)?)
}

struct Options {
    files: usize,
    size: u64,
    dir: Option<String>,
    threads: Option<usize>,
    processes: Option<usize>,
    scheduler: Option<String>,
}

const USAGE: &str = "usage: count_letters [--files N] [--size BYTES] [--dir PATH] [--threads N | --processes P | --scheduler tcp://HOST:PORT]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options { files: 100, size: 10_000_000, dir: None, threads: None, processes: None, scheduler: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}\n{USAGE}"));
        match flag.as_str() {
            "--files" => o.files = number(value()?)? as usize,
            "--size" => o.size = number(value()?)?,
            "--dir" => o.dir = Some(value()?),
            "--threads" => o.threads = Some(number(value()?)? as usize),
            "--processes" => o.processes = Some(number(value()?)? as usize),
            "--scheduler" => o.scheduler = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() -> shoal::Result<()> {
    shoal::init();
    let o = match parse_args() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let dir = o.dir.map(Into::into).unwrap_or_else(|| letters::default_dir(o.files, o.size));
    println!("data: {} files of {} bytes in {}", o.files, o.size, dir.display());
    let started = Instant::now();
    let files = letters::ensure_files(&dir, o.files, o.size)?;
    println!("data ready in {:.2} s", started.elapsed().as_secs_f64());

    let (client, mode) = match (o.processes, o.threads) {
        _ if o.scheduler.is_some() => (Client::connect(o.scheduler.as_deref().unwrap_or_default())?, "cluster"),
        (Some(p), _) => (Client::processes(p)?, "processes"),
        (None, Some(n)) => (Client::threads(n)?, "threads"),
        (None, None) => (Client::local()?, "threads"),
    };

    let started = Instant::now();
    let mut sequential = 0u64;
    for path in &files {
        sequential += count_letters::call(path.clone())?;
    }
    let sequential_time = started.elapsed().as_secs_f64();
    println!("sequential: {sequential} letters in {sequential_time:.3} s");

    let started = Instant::now();
    let counts = client.map(count_letters, files.iter().cloned())?;
    let total: u64 = client.gather(&counts)?.into_iter().sum();
    let shoal_time = started.elapsed().as_secs_f64();
    println!("shoal ({mode}, {} threads): {total} letters in {shoal_time:.3} s", client.nthreads());

    if total != sequential {
        eprintln!("MISMATCH: sequential counted {sequential}, shoal {total}");
        std::process::exit(1);
    }
    println!(
        "speedup: {:.2}x (sequential {sequential_time:.3} s / shoal {shoal_time:.3} s)",
        sequential_time / shoal_time
    );
    Ok(())
}
