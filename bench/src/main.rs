//! shoal's benchmarks: `cargo run --release -p shoal-bench -- <name>`.
//!
//! Each prints a table of medians over several rounds and the ratios that
//! the targets are stated in, all measured in the same run.

mod bag_wordcount;
mod chaos;
mod chart;
mod cluster;
mod compare;
mod count_letters;
mod graphs;
mod graphs_trace;
mod locality;
mod memwatch;
mod overhead;
mod processes;
mod procfs;
mod segments;
mod table;
mod transfer;

const USAGE: &str = "\
usage: shoal-bench <benchmark> [--rounds N] [--quick] [--no-dask] [--processes P] [--scheduler URL] [--trials N] [--seed S]

benchmarks:
  count-letters   sequential vs rayon vs shoal threads on the count_letters job
  count-letters-cluster
                  the same job on a loopback cluster (scheduler + 2 worker machines of 1 process,
                  1 thread) vs rayon
  overhead        per-task cost: map, tree reduction, chain, round trip, million tasks, memory
                  (--processes P: in the processes mode, on P worker processes;
                   --scheduler tcp://HOST:PORT: on a cluster started by hand;
                   --only CASE, repeatable: map, tree, chain, round-trip, million, memory)
  processes       the processes mode: count-letters and count-letters-pipeline vs threads and
                  rayon, and transfer (the consumer's wait for a large input vs a pipe copy)
  transfer        GB/s of a 1 GiB result moved between two worker machines (processes) on the
                  cluster's peer-to-peer path vs raw TCP (a socket copy, iperf3) on the same link:
                  loopback, and two network namespaces joined by veth when root (--quick: 64 MiB)
  segments        a 1 GiB Vec<u8> result in shared memory: the producer's publish (GB/s; target 4) in
                  this process and in the processes mode, and a consumer's first read of the segment
                  (page faults) by shoal's mapping and by MAP_POPULATE / MADV_POPULATE_READ / shared
                  variants (--quick: 128 MiB)
  locality        tasks reading large blocks held on 3 loopback worker machines: makespan and bytes
                  moved with locality-aware placement (transfers weighed, or free slot first) vs
                  random (the benchmark control SHOAL_PLACEMENT=random, seeded); fresh clusters,
                  rounds alternated (default 3; --quick: 4 MiB blocks instead of 16)
  bag-wordcount   word frequencies, top 10, of text files: sequential vs rayon vs a shoal bag
                  (threads and 2 processes), with the bag graph's task count
  graphs          data-heavy Dask graphs (bench/dask/graphs/*.json: rechunk, matmul, tree, shuffle,
                  add-transpose-mean, delayed pipeline) replayed on shoal threads and processes
                  and on Dask threads and processes: makespan, efficiency against the lower bound,
                  peak memory of the whole process tree; updates its section of bench/RESULTS.md.
                  Default 3 rounds; --only NAME (repeatable); --no-dask: shoal only;
                  --memory-limit MIB: also the processes mode under that memory limit.
                  Not part of `all`.
  all             every benchmark above
  chaos           soak test of the processes mode: SIGKILL workers at random moments during a job
                  with dependencies; reports correct answers, hangs and leaks (processes,
                  descriptors, memfd segments, /dev/shm, spill files). --trials N (default 50),
                  --seed S (default: from the clock). Not part of `all`.
  compare         shoal vs Dask side by side (same work, alternated rounds); writes
                  bench/RESULTS.md and bench/results/speedup.svg. Default 3 rounds
                  (--quick: 2, small sizes, under two minutes); --no-dask: shoal only;
                  --case NAME (repeatable: count-letters, map, tree, chain, round-trip, transfer,
                  bag-wordcount; --only is the same): only these cases, with the table printed but
                  RESULTS.md and the chart left as they are (they hold every case).
                  Creates the Python venv bench/.venv with the pinned Dask if missing
                  (SHOAL_BENCH_VENV=DIR puts it elsewhere). Besides Dask's LocalClusters, a
                  Dask cluster started by its CLI (`dask scheduler`, 2 × `dask worker`) when
                  the venv has the CLI (skipped with a message if not).
  dask-cli-drill  (a test aid, run by bench/tests/dask_cli.rs) start the Dask CLI cluster, print
                  its process groups, panic: the cluster must be gone after the panic.";

/// Options shared by every benchmark.
pub struct Opts {
    pub rounds: usize,
    pub quick: bool,
}

fn main() {
    shoal::init();
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let (mut rounds, mut quick, mut dask, mut processes) = (None, false, true, None);
    let (mut trials, mut seed) = (50, None);
    let mut scheduler: Option<String> = None;
    let mut only: Vec<String> = Vec::new();
    let mut cases: Vec<compare::Case> = Vec::new();
    let mut memory_limit: Option<u64> = None;
    if name == "graphs-replay" {
        // The child of one `graphs` sample (not for direct use).
        let (Some(file), Some(mode)) = (args.next(), args.next()) else { fail("graphs-replay FILE MODE [LIMIT]") };
        let limit = args.next().map(|l| l.parse().unwrap_or_else(|_| fail("graphs-replay: LIMIT is bytes")));
        if let Err(e) = graphs::replay(&file, &mode, limit) {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            std::process::exit(1);
        }
        return;
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-dask" if name == "compare" || name == "graphs" => dask = false,
            "--memory-limit" if name == "graphs" => match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(mib) if mib > 0 => memory_limit = Some(mib << 20),
                _ => fail("--memory-limit needs a positive number of MiB"),
            },
            "--case" | "--only" if name == "compare" => match args.next().as_deref().map(compare::Case::parse) {
                Some(Ok(c)) => cases.push(c),
                Some(Err(e)) => fail(&e),
                None => fail("--case needs a case's name"),
            },
            "--only" if name == "graphs" || name == "overhead" => match args.next() {
                Some(g) if name == "graphs" || overhead::CASES.contains(&g.as_str()) => only.push(g),
                Some(g) => fail(&format!("--only {g}: overhead's cases are {}", overhead::CASES.join(", "))),
                None => fail("--only needs a name"),
            },
            "--processes" if name == "overhead" => match args.next().and_then(|v| v.parse().ok()) {
                Some(p) if p > 0 => processes = Some(p),
                _ => fail("--processes needs a positive number"),
            },
            "--trials" if name == "chaos" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => trials = n,
                _ => fail("--trials needs a positive number"),
            },
            "--seed" if name == "chaos" => match args.next().and_then(|v| v.parse().ok()) {
                Some(s) => seed = Some(s),
                _ => fail("--seed needs a number"),
            },
            "--scheduler" if name == "overhead" => match args.next() {
                Some(url) => scheduler = Some(url),
                None => fail("--scheduler needs a URL such as tcp://127.0.0.1:8786"),
            },
            "--rounds" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => rounds = Some(n),
                _ => fail("--rounds needs a positive number"),
            },
            other => fail(&format!("unknown option {other}")),
        }
    }
    let opts = Opts { rounds: rounds.unwrap_or(5), quick };
    let result = match name.as_str() {
        "compare" => compare::run(&compare::CompareOpts { rounds, quick, dask, cases }),
        "count-letters" => count_letters::run(&opts),
        "graphs" => graphs::run(&graphs::GraphsOpts { rounds: rounds.unwrap_or(3), dask, only, memory_limit })
            .map_err(shoal::Error::msg),
        "count-letters-cluster" => count_letters::run_cluster(&opts),
        "bag-wordcount" => bag_wordcount::run(&opts),
        "overhead" => overhead::run(&opts, processes, scheduler.as_deref(), &only),
        "processes" => processes::run(&opts),
        "locality" => locality::run(&Opts { rounds: rounds.unwrap_or(3), quick }),
        "transfer" => transfer::run(&Opts { rounds: rounds.unwrap_or(3), quick }),
        "segments" => segments::run(&opts),
        "chaos" => chaos::run(
            trials,
            seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            }),
        ),
        "all" => count_letters::run(&opts)
            .and_then(|_| overhead::run(&opts, None, None, &[]))
            .and_then(|_| overhead::run(&opts, Some(2), None, &[]))
            .and_then(|_| processes::run(&opts)),
        "dask-cli-drill" => compare::dask_cli_drill(),
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => fail(&format!("unknown benchmark {other}")),
    };
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}\n\n{USAGE}");
    std::process::exit(2);
}
