//! Word frequencies of a directory of text files, top 10, with a bag: the
//! Dask Bag word count, `read_text(…).str.split().flatten().frequencies()
//! .topk(10)`, in shoal.
//!
//! ```text
//! cargo run --release --example bag_wordcount -- [--files N] [--lines L] [--dir PATH] [--threads N | --processes P | --scheduler tcp://HOST:PORT]
//! ```
//!
//! It writes the files if they are not there yet (default 16 files of
//! 20 000 lines of generated words under the system temp dir), counts the
//! words with the bag and with a plain sequential loop, checks that they
//! agree, and prints the top 10, both times and the bag's number of tasks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use shoal::Client;
use shoal::bag;

#[path = "common/words.rs"]
mod words_data;

/// The count of a (word, count) pair: the key of the top 10.
#[shoal::func]
fn by_count(pair: (String, u64)) -> u64 {
    pair.1
}

struct Options {
    files: usize,
    lines: usize,
    dir: Option<PathBuf>,
    mode: Vec<String>,
}

const USAGE: &str = "usage: bag_wordcount [--files N] [--lines L] [--dir PATH] [--threads N | --processes P | --scheduler tcp://HOST:PORT]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options { files: 16, lines: 20_000, dir: None, mode: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}\n{USAGE}"));
        match flag.as_str() {
            "--files" => o.files = number(value()?)?,
            "--lines" => o.lines = number(value()?)?,
            "--dir" => o.dir = Some(value()?.into()),
            "--threads" | "--processes" | "--scheduler" => o.mode = vec![flag.clone(), value()?],
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
    let dir = o.dir.unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-bag-words-{}x{}", o.files, o.lines)));
    words_data::write_files(&dir, o.files, o.lines)?;
    let pattern = format!("{}/text-*.txt", dir.display());
    println!("data: {} files of {} lines in {}", o.files, o.lines, dir.display());

    let (client, mode) = match o.mode.first().map(String::as_str) {
        Some("--processes") => (Client::processes(o.mode[1].parse().map_err(shoal::Error::msg)?)?, "processes"),
        Some("--threads") => (Client::threads(o.mode[1].parse().map_err(shoal::Error::msg)?)?, "threads"),
        Some(_) => (Client::connect(&o.mode[1])?, "cluster"),
        None => (Client::local()?, "threads"),
    };

    // The sequential loop, for the answer and the time to beat.
    let started = Instant::now();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("text-")))
        .collect();
    files.sort();
    for path in &files {
        for line in std::fs::read_to_string(path)?.lines() {
            for word in line.split_whitespace() {
                *counts.entry(word.to_string()).or_insert(0) += 1;
            }
        }
    }
    let mut expected: Vec<(String, u64)> = counts.into_iter().collect();
    expected.sort_by_key(|pair| std::cmp::Reverse(pair.1));
    let sequential_time = started.elapsed().as_secs_f64();

    let started = Instant::now();
    // `split_whitespace()` is Dask's `.str.split().flatten()`: it splits each
    // block in place, and `frequencies` then counts the words by `&str`
    // (one `String` per distinct word). A `#[shoal::func] fn words(line:
    // String) -> Vec<String>` with `flat_map(words)` gives the same answer
    // with a `String` per line and per word.
    let top = bag::read_text(&pattern)?.split_whitespace().frequencies().topk(10, by_count);
    let tasks: usize = top.to_lazy().iter().map(|l| l.graph_len()).sum();
    let got = top.compute(&client)?;
    let bag_time = started.elapsed().as_secs_f64();

    for (word, n) in &got {
        println!("{word:>12} {n}");
    }
    // Words with equal counts may be ordered differently: compare counts,
    // and that each word's count is its true count.
    let truth: HashMap<&str, u64> = expected.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    let agree = got.len() == expected.len().min(10)
        && got.iter().zip(&expected).all(|((w, n), (_, m))| n == m && truth.get(w.as_str()) == Some(n));
    if !agree {
        eprintln!(
            "MISMATCH: the bag's top 10 {got:?} is not the sequential one {:?}",
            &expected[..10.min(expected.len())]
        );
        std::process::exit(1);
    }
    println!("sequential: {sequential_time:.3} s");
    println!("bag ({mode}, {} threads, {tasks} tasks): {bag_time:.3} s", client.nthreads());
    Ok(())
}
