//! `compare`: the same work on shoal and on Dask, side by side.
//!
//! For each case and each round: a few interleaved samples of every shoal
//! mode (for count_letters also Rust sequential and rayon), then one `bench/dask/bench.py`
//! run per Dask mode, each a fresh `LocalCluster` timing one round after a
//! small untimed warm-up round. Then one table (printed, and written to
//! `bench/RESULTS.md` with the machine and versions) and a chart
//! (`bench/results/speedup.svg`). See `bench/dask/README.md` for the Dask side.

mod dask;
mod report;

use std::path::Path;

use serde_json::Value;
use shoal::prelude::*;

use crate::cluster::{Cluster, Site};
use crate::table::{Samples, median, time};
use crate::{Opts, bag_wordcount, count_letters, overhead};

/// Options of `compare`.
pub struct CompareOpts {
    /// Rounds; `None`: 3, or 2 with `--quick`.
    pub rounds: Option<usize>,
    pub quick: bool,
    /// `false` with `--no-dask`: shoal's figures only.
    pub dask: bool,
    /// `--case NAME`s: only these (empty: every case). A run of some cases
    /// prints its table but leaves RESULTS.md and the chart alone.
    pub cases: Vec<Case>,
}

/// The cases, in table order. Each does the same work on every system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    CountLetters,
    Map,
    Tree,
    Chain,
    RoundTrip,
    Transfer,
    BagWordcount,
}

impl Case {
    pub const ALL: [Case; 7] =
        [Case::CountLetters, Case::Map, Case::Tree, Case::Chain, Case::RoundTrip, Case::Transfer, Case::BagWordcount];

    /// Its `--case` name.
    pub fn flag(self) -> &'static str {
        match self {
            Case::CountLetters => "count-letters",
            Case::Map => "map",
            Case::Tree => "tree",
            Case::Chain => "chain",
            Case::RoundTrip => "round-trip",
            Case::Transfer => "transfer",
            Case::BagWordcount => "bag-wordcount",
        }
    }

    /// The case named `name` by `--case`.
    pub fn parse(name: &str) -> Result<Case, String> {
        Case::ALL.into_iter().find(|c| c.flag() == name).ok_or_else(|| {
            let names: Vec<&str> = Case::ALL.iter().map(|c| c.flag()).collect();
            format!("--case {name}: no such case; the cases are {}", names.join(", "))
        })
    }

    /// Whether Rust sequential and rayon run it too (the in-process limit).
    pub fn has_rust(self) -> bool {
        matches!(self, Case::CountLetters | Case::BagWordcount)
    }

    /// The case's name in `bench.py`.
    pub fn dask_name(self) -> &'static str {
        match self {
            Case::CountLetters => "count_letters",
            Case::Map => "map_noop",
            Case::Tree => "tree",
            Case::Chain => "chain",
            Case::RoundTrip => "roundtrip",
            Case::Transfer => "transfer",
            Case::BagWordcount => "bag_wordcount",
        }
    }

    /// Its name in the table and the chart.
    pub fn title(self) -> &'static str {
        match self {
            Case::CountLetters => "count_letters",
            Case::Map => "map + gather",
            Case::Tree => "tree reduction",
            Case::Chain => "chain",
            Case::RoundTrip => "round trip",
            Case::Transfer => "transfer",
            Case::BagWordcount => "bag word count",
        }
    }
}

/// Work sizes: the same for shoal and Dask, so ratios compare like with like.
///
/// Dask runs a no-op task in ~2 ms, ~1000× shoal's cost, so the sizes are
/// what keeps a full run near 15 minutes (count_letters alone is ~8 of them:
/// Python sorts 10 MB in ~1 s, and Dask's threads mode runs it under the
/// GIL) and a `--quick` run under two minutes (~1.5 here).
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub files: usize,
    pub file_bytes: u64,
    pub map: u64,
    pub tree_leaves: u64,
    pub chain: u64,
    pub round_trips: u64,
    pub transfer_mib: u64,
    /// bag word count: files, and lines per file.
    pub words: (usize, usize),
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                files: 20,
                file_bytes: 2_000_000,
                map: 2_000,
                tree_leaves: 1 << 10,
                chain: 300,
                round_trips: 50,
                transfer_mib: 64,
                words: bag_wordcount::sizes(true),
            }
        } else {
            Sizes {
                files: 100,
                file_bytes: 10_000_000,
                map: 10_000,
                tree_leaves: 1 << 12,
                chain: 1_000,
                round_trips: 300,
                transfer_mib: 1_024,
                words: bag_wordcount::sizes(false),
            }
        }
    }

    /// The untimed warm-up round's size, the same on both systems: enough to
    /// ship the functions, open the connections and let Dask learn the task
    /// durations, without paying a whole round of a big case.
    pub fn warmup(case: Case) -> u64 {
        match case {
            Case::CountLetters => 2,
            Case::Map => 200,
            Case::Tree => 128,
            Case::Chain => 50,
            Case::RoundTrip => 20,
            Case::Transfer => 16,
            Case::BagWordcount => 1,
        }
    }

    /// The size as `bench.py` takes it: files, tasks, leaves, hops, calls, MiB.
    pub fn of(&self, case: Case) -> u64 {
        match case {
            Case::CountLetters => self.files as u64,
            Case::Map => self.map,
            Case::Tree => self.tree_leaves,
            Case::Chain => self.chain,
            Case::RoundTrip => self.round_trips,
            Case::Transfer => self.transfer_mib,
            Case::BagWordcount => self.words.0 as u64,
        }
    }

    /// The size for the table.
    pub fn describe(&self, case: Case) -> String {
        match case {
            Case::CountLetters => format!("{} files × {} MB", self.files, self.file_bytes / 1_000_000),
            Case::Map => format!("{} tasks", self.map),
            Case::Tree => format!("{} leaves, {} tasks", self.tree_leaves, 2 * self.tree_leaves - 1),
            Case::Chain => format!("{} hops", self.chain),
            Case::RoundTrip => format!("{} calls per round", self.round_trips),
            Case::Transfer => format!("{} MiB", self.transfer_mib),
            Case::BagWordcount => format!("{} files × {} lines", self.words.0, self.words.1),
        }
    }
}

/// What a row of the table measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sequential,
    Rayon,
    Shoal,
    Dask,
}

/// One system's samples on one case.
pub struct Row {
    pub case: Case,
    pub system: String,
    pub kind: Kind,
    /// Seconds per round (round trip: that round's median call).
    pub samples: Samples,
    pub errors: Vec<String>,
    pub note: Option<&'static str>,
    /// The size of the graph it ran (bag word count).
    pub tasks: Option<String>,
    /// CPU seconds per sample (bag word count): this process's for the
    /// in-process runners, plus the workers' for the processes modes.
    pub cpu: Samples,
}

impl Row {
    fn new(case: Case, system: &str, kind: Kind) -> Row {
        Row {
            case,
            system: system.into(),
            kind,
            samples: Samples::default(),
            errors: Vec::new(),
            note: None,
            tasks: None,
            cpu: Samples::default(),
        }
    }

    /// The median, if any round succeeded.
    pub fn median(&self) -> Option<f64> {
        (!self.samples.0.is_empty()).then(|| self.samples.median())
    }

    fn record(&mut self, outcome: Result<f64, String>) {
        match outcome {
            Ok(s) => self.samples.0.push(s),
            Err(e) => self.errors.push(e),
        }
    }
}

/// A shoal mode in the comparison.
struct ShoalMode {
    label: &'static str,
    client: Client,
    /// The cluster mode's scheduler and workers, kept while it runs.
    cluster: Option<Cluster>,
}

/// The shoal modes compared, in column order.
///
/// The processes mode is in, as `Client::processes(2)`: 2 worker processes
/// of one thread, like Dask's processes mode. So is the cluster mode: a
/// scheduler server (in this process) and 2 worker machines of 1 process × 1
/// thread on loopback, over TCP with a secret — what Dask's processes mode
/// is too (a `LocalCluster` of 2 single-threaded worker processes, its
/// scheduler and workers speaking TCP on loopback). This is the one place
/// the modes plug in: the table's ratio columns, the chart's series and
/// RESULTS.md all follow from this list.
fn shoal_modes() -> shoal::Result<Vec<ShoalMode>> {
    let cluster = Cluster::start(&Site::Loopback, &["a", "b"], 1)?;
    Ok(vec![
        ShoalMode { label: "shoal threads", client: Client::local()?, cluster: None },
        ShoalMode { label: "shoal processes", client: Client::processes(2)?, cluster: None },
        ShoalMode { label: "shoal cluster", client: cluster.client.clone(), cluster: Some(cluster) },
    ])
}

/// The Dask modes: `bench.py --mode` and the label. `cli` is a cluster
/// started by Dask's CLI (`dask scheduler`, `dask worker`), in the run when
/// the environment has the CLI.
pub const DASK_MODES: [(&str, &str); 3] =
    [("processes", "Dask processes"), ("threads", "Dask threads"), (DASK_CLI, "Dask CLI cluster")];

/// The Dask mode whose cluster is started by Dask's CLI, once per case.
pub const DASK_CLI: &str = "cli";

/// How many `dask worker`s the CLI cluster has: 2 of 1 thread, as Dask
/// processes' `LocalCluster` and shoal's cluster.
const DASK_CLI_WORKERS: usize = 2;

/// `shoal-bench dask-cli-drill`: see [`dask::drill`].
pub fn dask_cli_drill() -> ! {
    dask::drill(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// The Dask modes this run has: all but the CLI cluster when the
/// environment has no Dask CLI.
fn dask_modes(dask: Option<&dask::Dask>) -> Vec<(&'static str, &'static str)> {
    let cli = dask.is_some_and(|d| d.cli_missing().is_none());
    DASK_MODES.into_iter().filter(|(mode, _)| *mode != DASK_CLI || cli).collect()
}

/// Everything a run produced, for the report.
pub struct Outcome {
    pub sizes: Sizes,
    pub rounds: usize,
    pub quick: bool,
    pub rows: Vec<Row>,
    pub shoal_labels: Vec<&'static str>,
    /// Why Dask is not in the table, if it is not.
    pub dask_missing: Option<String>,
    /// `extra` of one successful Dask run: versions.
    pub dask_extra: Option<serde_json::Value>,
    pub nthreads: usize,
    pub command: String,
    pub started: std::time::SystemTime,
    pub load_before: String,
    /// Whether every case ran (not only some `--case`s): only then are
    /// RESULTS.md and the chart rewritten.
    pub every_case: bool,
}

pub fn run(opts: &CompareOpts) -> shoal::Result<()> {
    let started = std::time::SystemTime::now();
    let load_before = report::loadavg();
    let rounds = opts.rounds.unwrap_or(if opts.quick { 2 } else { 3 });
    let sizes = Sizes::new(opts.quick);
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Dask first: if it cannot be had, say why at once, then go on without it.
    let (dask, mut dask_missing) = if opts.dask {
        match dask::Dask::ensure(bench_dir) {
            Ok(d) => {
                if let Some(why) = d.cli_missing() {
                    eprintln!("compare: skipping the Dask CLI cluster: {why}");
                }
                (Some(d), None)
            }
            Err(why) => {
                eprintln!("compare: Dask is unavailable: {why}");
                eprintln!("compare: going on with shoal's figures only");
                (None, Some(why))
            }
        }
    } else {
        (None, Some("not run (--no-dask)".to_string()))
    };

    let cases: Vec<Case> = Case::ALL.into_iter().filter(|c| opts.cases.is_empty() || opts.cases.contains(c)).collect();
    let (words_dir, words_files, words_pattern) = bag_wordcount::data(opts.quick)?;
    // count_letters' files (1 GB at full size) only when it runs.
    let (files, dir) = if cases.contains(&Case::CountLetters) {
        let files = count_letters::files(&Opts { rounds, quick: opts.quick })?;
        let dir = Path::new(&files[0]).parent().expect("a file has a folder").to_path_buf();
        (files, dir)
    } else {
        (Vec::new(), words_dir.clone())
    };
    let expected = sizes.files as u64 * sizes.file_bytes;
    let words_top = bag_wordcount::counts_of(&bag_wordcount::sequential(&words_files)?);
    let words = Words { pattern: words_pattern, expected: words_top };
    let shoal_tasks = bag_wordcount::tasks(&words.pattern)?;
    eprintln!("compare: the shoal bag word count graph has {shoal_tasks} tasks");
    let modes = shoal_modes()?;
    let nthreads = modes[0].client.nthreads();
    let mut rows = Vec::new();
    let mut dask_extra = None;

    for &case in &cases {
        let mut case_rows: Vec<Row> = Vec::new();
        if case.has_rust() {
            case_rows.push(Row::new(case, "Rust sequential", Kind::Sequential));
            case_rows.push(Row::new(case, "Rust rayon", Kind::Rayon));
        }
        for m in &modes {
            let mut row = Row::new(case, m.label, Kind::Shoal);
            if case == Case::BagWordcount {
                row.tasks = Some(format!("{shoal_tasks} tasks"));
            }
            if case == Case::Transfer && m.cluster.is_some() {
                // Placement puts the consumer on the producer's machine
                // (moving the input would not pay): `shoal-bench transfer`
                // measures the cluster's worker-to-worker path.
                row.note = Some("runs on the holder: no data moves");
            }
            case_rows.push(row);
        }
        let dask_modes = dask_modes(dask.as_ref());
        if dask.is_some() {
            for &(mode, label) in &dask_modes {
                let mut row = Row::new(case, label, Kind::Dask);
                if case == Case::Transfer && mode == "threads" {
                    row.note = Some("one worker: no data moves");
                }
                case_rows.push(row);
            }
        }
        // shoal's warm-up round, the same size as Dask's.
        for m in &modes {
            let warm = Sizes::warmup(case);
            run_shoal(case, &m.client, &sizes, warm, &files[..files.len().min(warm as usize)], &words)
                .map_err(|e| shoal::Error::msg(format!("{}: {} warm-up: {e}", case.title(), m.label)))?;
        }
        // The Dask CLI cluster of this case (dropped, its processes ended,
        // at the end of the case, or on a panic).
        let mut cli: Option<Result<dask::CliCluster, String>> = None;
        for round in 0..rounds {
            let mut line = format!("compare: {} round {}/{rounds}:", case.title(), round + 1);
            // The in-process systems (Rust sequential and rayon, then each
            // shoal mode), interleaved, several samples each.
            let in_process = if case.has_rust() { 2 } else { 0 } + modes.len();
            let mut these: Vec<Vec<f64>> = vec![Vec::new(); in_process];
            for _ in 0..in_process_reps(case) {
                let mut outcomes = Vec::with_capacity(in_process);
                if case == Case::CountLetters {
                    for f in [count_letters::sequential, count_letters::rayon] {
                        let (d, n) = time(|| f(&files));
                        outcomes.push(match n {
                            Ok(n) if n == expected => Ok(d.as_secs_f64()),
                            Ok(n) => Err(format!("counted {n}, expected {expected}")),
                            Err(e) => Err(e.to_string()),
                        });
                    }
                }
                // CPU seconds of each in-process system's sample (bag word count).
                let mut cpus: Vec<f64> = Vec::new();
                if case == Case::BagWordcount {
                    for f in [bag_wordcount::sequential, bag_wordcount::rayon] {
                        let c = bag_wordcount::cpu_now();
                        let (d, top) = time(|| f(&words_files));
                        cpus.push(bag_wordcount::cpu_now() - c);
                        outcomes.push(words.check(top).map(|()| d.as_secs_f64()));
                    }
                }
                for m in &modes {
                    // The workers' too: the processes mode's, and the
                    // cluster's worker processes (started by this bench).
                    let pids = || {
                        let mut pids = m.client.worker_pids();
                        pids.extend(m.cluster.as_ref().map(Cluster::worker_pids).unwrap_or_default());
                        pids
                    };
                    let cpu = || bag_wordcount::cpu_now() + bag_wordcount::cpu_of(&pids());
                    let c = cpu();
                    outcomes.push(
                        run_shoal(case, &m.client, &sizes, sizes.of(case), &files, &words).map_err(|e| e.to_string()),
                    );
                    cpus.push(cpu() - c);
                }
                if case == Case::BagWordcount {
                    for (i, c) in cpus.into_iter().enumerate() {
                        case_rows[i].cpu.0.push(c);
                    }
                }
                for (i, outcome) in outcomes.into_iter().enumerate() {
                    match &outcome {
                        Ok(s) => these[i].push(*s),
                        Err(_) => note(&mut line, &case_rows[i].system, &outcome),
                    }
                    case_rows[i].record(outcome);
                }
            }
            for (i, t) in these.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
                note(&mut line, &format!("{} (median of {})", case_rows[i].system, t.len()), &Ok(median(t)));
            }
            let mut r = in_process;
            if let Some(d) = &dask {
                for &(mode, label) in &dask_modes {
                    let case_dir = if case == Case::BagWordcount { &words_dir } else { &dir };
                    let res = if mode == DASK_CLI {
                        // Started once per case (the first round), as a
                        // user keeps one running; gone after the case.
                        match cli.get_or_insert_with(|| d.start_cli(DASK_CLI_WORKERS)) {
                            Ok(cluster) => d.run_cli(cluster, case, &sizes, case_dir, expected, &words.expected),
                            Err(e) => dask::DaskRun { seconds: None, error: Some(e.clone()), extra: Value::Null },
                        }
                    } else {
                        d.run(case, mode, &sizes, case_dir, expected, &words.expected)
                    };
                    if case == Case::BagWordcount
                        && let (Some(t), Some(o)) = (res.extra.get("tasks"), res.extra.get("tasks_optimized"))
                    {
                        eprintln!("compare: Dask's bag word count graph: {t} tasks, {o} after its optimization");
                        case_rows[r].tasks = Some(format!("{o} tasks after optimization, {t} before"));
                    }
                    if let Some(c) = res.extra.get("cpu_s").and_then(|v| v.get(0)).and_then(|v| v.as_f64()) {
                        case_rows[r].cpu.0.push(c);
                    }
                    if res.error.is_none() && dask_extra.is_none() {
                        dask_extra = Some(res.extra.clone());
                    }
                    let outcome = match res.error {
                        None => res.seconds.ok_or_else(|| "no sample in bench.py's output".to_string()),
                        Some(e) => Err(e),
                    };
                    note(&mut line, label, &outcome);
                    case_rows[r].record(outcome);
                    r += 1;
                }
            }
            eprintln!("{line}");
        }
        drop(cli);
        rows.extend(case_rows);
    }
    if dask.is_some() && dask_extra.is_none() {
        dask_missing = Some("every Dask run failed (see the errors in the table)".into());
    }

    let mut command = String::from("cargo run --release -p shoal-bench -- compare");
    if opts.quick {
        command.push_str(" --quick");
    }
    if let Some(r) = opts.rounds {
        command.push_str(&format!(" --rounds {r}"));
    }
    if !opts.dask {
        command.push_str(" --no-dask");
    }
    for c in &opts.cases {
        command.push_str(&format!(" --case {}", c.flag()));
    }
    let outcome = Outcome {
        sizes,
        rounds,
        quick: opts.quick,
        rows,
        shoal_labels: modes.iter().map(|m| m.label).collect(),
        dask_missing,
        dask_extra,
        nthreads,
        command,
        started,
        load_before,
        every_case: cases.len() == Case::ALL.len(),
    };
    report::report(&outcome, bench_dir).map_err(|e| shoal::Error::msg(format!("writing the results: {e}")))
}

/// The bag word count's input and its answer (the counts of the top 10:
/// words with equal counts may come in another order).
struct Words {
    pattern: String,
    expected: Vec<u64>,
}

impl Words {
    fn check(&self, top: shoal::Result<bag_wordcount::Top>) -> Result<(), String> {
        let got = bag_wordcount::counts_of(&top.map_err(|e| e.to_string())?);
        if got == self.expected { Ok(()) } else { Err(format!("top counts {got:?}, expected {:?}", self.expected)) }
    }
}

/// Timed samples per round of each in-process system (Rust sequential,
/// rayon, shoal), interleaved: they take milliseconds (count_letters: a few
/// seconds), where one sample is at the mercy of whatever else the machine
/// runs, so each gets several (each one a sample). Dask: one per round.
pub fn in_process_reps(case: Case) -> usize {
    if case == Case::CountLetters { 3 } else { 5 }
}

/// Append one sample to the progress line.
fn note(line: &mut String, who: &str, outcome: &Result<f64, String>) {
    match outcome {
        Ok(s) => line.push_str(&format!(" {who} {};", crate::table::secs(*s))),
        Err(e) => line.push_str(&format!(" {who} FAILED ({e});")),
    }
}

#[shoal::task]
fn produce(mib: u64) -> Vec<u8> {
    vec![b'x'; (mib << 20) as usize]
}

/// Length and the sum of every 4096th byte, read in place.
#[shoal::task]
fn consume(data: &Archived<Vec<u8>>) -> (u64, u64) {
    (data.len() as u64, data.iter().step_by(4096).map(|&b| u64::from(b)).sum())
}

/// One timed round of `case` at size `n` on `client`: seconds (round trip:
/// the median single call of the round).
fn run_shoal(
    case: Case,
    client: &Client,
    sizes: &Sizes,
    n: u64,
    files: &[String],
    words: &Words,
) -> shoal::Result<f64> {
    Ok(match case {
        Case::BagWordcount => {
            let (d, top) = time(|| bag_wordcount::graph(&words.pattern)?.compute(client));
            words.check(top).map_err(shoal::Error::msg)?;
            d.as_secs_f64()
        }
        Case::CountLetters => {
            let (d, total) = time(|| count_letters::shoal(client, files));
            let expected = files.len() as u64 * sizes.file_bytes;
            if total? != expected {
                return Err(shoal::Error::msg("wrong letter count"));
            }
            d.as_secs_f64()
        }
        Case::Map => {
            let (d, r) = time(|| overhead::map_gather(client, n));
            r?;
            d.as_secs_f64()
        }
        Case::Tree => {
            // Built outside the clock, as bench.py does (its build time is in `extra.build_s`).
            let root = overhead::build_tree(n)?;
            let (d, sum) = time(|| root.compute(client));
            if sum? != n * (n - 1) / 2 {
                return Err(shoal::Error::msg("wrong tree sum"));
            }
            d.as_secs_f64()
        }
        Case::Chain => {
            let (d, r) = time(|| overhead::chain(client, n));
            r?;
            d.as_secs_f64()
        }
        Case::RoundTrip => median(&overhead::round_trips(client, n)?),
        Case::Transfer => {
            let producer = client.submit_with(produce, n, &SubmitOptions::default().pure(false))?;
            producer.wait()?; // the producer's result is in memory before the clock starts
            let (d, r) = time(|| client.submit(consume, &producer).and_then(|f| f.result()));
            let bytes = n << 20;
            if r? != (bytes, u64::from(b'x') * bytes.div_ceil(4096)) {
                return Err(shoal::Error::msg("wrong transfer checksum"));
            }
            d.as_secs_f64()
        }
    })
}
