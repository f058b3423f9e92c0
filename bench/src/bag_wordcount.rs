//! `bag-wordcount`: word frequencies of a directory of text files, top 10 —
//! sequential, rayon (the in-process limit) and a shoal bag in the threads
//! and processes modes, alternated round by round; with each bag graph's
//! task count. Besides wall time, the CPU time this process spent on each
//! in-process runner (sequential, rayon, shoal threads): on a machine that
//! other work loads, wall times say more about that work than about the
//! runners, while CPU time still measures what each runner costs.

#[path = "../../examples/common/words.rs"]
mod words_data;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use shoal::bag;
use shoal::{Client, ClientOptions, ProcessesOptions};

use crate::Opts;
use crate::table::{Samples, Table, secs, time};

/// `/proc/loadavg`'s first three figures.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The CPU time of this process (all its threads), in seconds.
pub fn cpu_now() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The CPU time (user + system) the processes `pids` have spent, in
/// seconds, from `/proc/PID/stat` (a process that is gone counts 0).
pub fn cpu_of(pids: &[u32]) -> f64 {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // After the command's closing parenthesis: state, then fields
            // 4.. of proc(5); utime and stime are fields 14 and 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let (u, s) = (fields.get(11)?.parse::<f64>().ok()?, fields.get(12)?.parse::<f64>().ok()?);
            Some((u + s) / ticks)
        })
        .sum()
}

/// `f` timed: wall time, and the CPU time this process spent meanwhile.
fn timed<T>(f: impl FnOnce() -> T) -> (std::time::Duration, f64, T) {
    let cpu = cpu_now();
    let (d, out) = time(f);
    (d, cpu_now() - cpu, out)
}

#[shoal::func]
fn by_count(pair: (String, u64)) -> u64 {
    pair.1
}

pub type Top = Vec<(String, u64)>;

/// The counts of the top 10 (words with equal counts may come in another
/// order, so runners are compared on counts, and on the words' true counts).
pub fn counts_of(top: &Top) -> Vec<u64> {
    top.iter().map(|(_, n)| *n).collect()
}

fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("text-")))
        .collect();
    files.sort();
    Ok(files)
}

/// Word counts of the Rust runners: `shoal::bag::WordCounts`, the counter
/// the bag uses for `split_whitespace().frequencies()` (a word looked up by
/// `&str`, one `String` per distinct word, foldhash and an inline compare),
/// so the in-process limit gets every advantage shoal has.
type Counts = bag::WordCounts;

/// The words of a file counted into `counts`: the file is read whole and
/// its words looked up by `&str`, so a word costs no allocation unless it
/// is new to `counts` (as the bag counts `split_whitespace`'s words).
fn count_file(path: &Path, counts: &mut Counts) -> std::io::Result<()> {
    counts.add_words(std::fs::read_to_string(path)?.split_whitespace());
    Ok(())
}

fn top10(counts: Counts) -> Top {
    let mut all: Top = counts.into_iter().collect();
    all.sort_by_key(|pair| std::cmp::Reverse(pair.1));
    all.truncate(10);
    all
}

pub fn sequential(files: &[PathBuf]) -> shoal::Result<Top> {
    let mut counts = Counts::default();
    for f in files {
        count_file(f, &mut counts)?;
    }
    Ok(top10(counts))
}

/// A map per file, in parallel, merged pairwise (rayon's reduce tree).
pub fn rayon(files: &[PathBuf]) -> shoal::Result<Top> {
    let counts = files
        .par_iter()
        .map(|f| {
            let mut counts = Counts::default();
            count_file(f, &mut counts).map(|_| counts)
        })
        .try_reduce(Counts::default, |mut a, b| {
            a.merge(b);
            Ok(a)
        })?;
    Ok(top10(counts))
}

pub fn graph(pattern: &str) -> shoal::Result<bag::Bag<(String, u64)>> {
    Ok(bag::read_text(pattern)?.split_whitespace().frequencies().topk(10, by_count))
}

/// The text files (written once, kept in the temp dir): their folder, the
/// files, and the `read_text` pattern.
pub fn data(quick: bool) -> shoal::Result<(PathBuf, Vec<PathBuf>, String)> {
    let (n, lines) = sizes(quick);
    let dir = std::env::temp_dir().join(format!("shoal-bag-words-{n}x{lines}"));
    eprintln!("bag-wordcount: {n} files of {lines} lines in {}", dir.display());
    words_data::write_files(&dir, n, lines)?;
    let files = files_in(&dir)?;
    let pattern = format!("{}/text-*.txt", dir.display());
    Ok((dir, files, pattern))
}

/// Files and lines per file.
pub fn sizes(quick: bool) -> (usize, usize) {
    if quick { (8, 20_000) } else { (32, 100_000) }
}

/// The bag graph's task count.
pub fn tasks(pattern: &str) -> shoal::Result<usize> {
    Ok(graph(pattern)?.to_lazy().iter().map(|l| l.graph_len()).sum())
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let (n, lines) = sizes(opts.quick);
    let load_before = loadavg();
    let (_, files, pattern) = data(opts.quick)?;
    let quiet = || ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() };
    let threads = Client::local_with(quiet())?;
    let processes = Client::processes_with(ProcessesOptions { workers: 2, ..ProcessesOptions::default() }, quiet())?;
    let expected = sequential(&files)?;
    let tasks = tasks(&pattern)?;
    let check = |got: shoal::Result<Top>, who: &str| -> shoal::Result<()> {
        let got = got?;
        if counts_of(&got) != counts_of(&expected) {
            return Err(shoal::Error::msg(format!("{who}: top 10 {got:?}, expected {expected:?}")));
        }
        Ok(())
    };
    // CPU seconds of the in-process runners (the processes mode's work is
    // in its workers, not counted here).
    let mut cpu: Vec<Samples> = vec![Samples::default(), Samples::default(), Samples::default()];
    let mut samples: Vec<(&str, Samples)> = ["sequential", "rayon", "shoal bag threads", "shoal bag processes (2)"]
        .into_iter()
        .map(|name| (name, Samples::default()))
        .collect();
    for round in 0..opts.rounds {
        eprintln!("  round {}/{}", round + 1, opts.rounds);
        let (d, c, r) = timed(|| sequential(&files));
        check(r, "sequential")?;
        samples[0].1.push(d);
        cpu[0].0.push(c);
        let (d, c, r) = timed(|| rayon(&files));
        check(r, "rayon")?;
        samples[1].1.push(d);
        cpu[1].0.push(c);
        let (d, c, r) = timed(|| graph(&pattern)?.compute(&threads));
        check(r, "shoal threads")?;
        samples[2].1.push(d);
        cpu[2].0.push(c);
        let (d, r) = time(|| graph(&pattern)?.compute(&processes));
        check(r, "shoal processes")?;
        samples[3].1.push(d);
    }
    println!(
        "\nbag-wordcount: {n} files of {lines} lines, {} threads, the bag graph has {tasks} tasks, median of {} rounds",
        threads.nthreads(),
        opts.rounds
    );
    let seq = samples[0].1.median();
    let ray = samples[1].1.median();
    let mut t = Table::new(&[
        "runner",
        "median",
        "min",
        "max",
        "speedup vs sequential",
        "time ÷ rayon",
        "CPU (median)",
        "CPU ÷ rayon's",
    ]);
    let ray_cpu = cpu[1].median();
    for (i, (name, s)) in samples.iter().enumerate() {
        let (c, c_ratio) = match cpu.get(i) {
            Some(c) => (secs(c.median()), format!("{:.2}", c.median() / ray_cpu)),
            None => ("(in its workers)".into(), String::new()),
        };
        t.row(vec![
            (*name).into(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            format!("{:.2}x", seq / s.median()),
            format!("{:.2}", s.median() / ray),
            c,
            c_ratio,
        ]);
    }
    t.print();
    println!("load average before: {load_before}; after: {}", loadavg());
    Ok(())
}
