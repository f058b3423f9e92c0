//! The comparison's table, the machine it ran on, `bench/RESULTS.md` and the chart.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{Case, DASK_CLI, DASK_MODES, Kind, Outcome, Row, Sizes};
use crate::chart::{self, Bar, Group};
use crate::table::{Table, secs};

/// Print the table, write `RESULTS.md` and `results/speedup.svg`.
pub fn report(o: &Outcome, bench_dir: &Path) -> std::io::Result<()> {
    let table = table(o);
    let machine = machine(o);
    println!(
        "\ncompare: shoal vs Dask, median of {} rounds{} ({} threads)",
        o.rounds,
        if o.quick { ", quick sizes" } else { "" },
        o.nthreads
    );
    print!("{}", table.render());
    for line in summary(o) {
        println!("{line}");
    }
    if let Some(why) = &o.dask_missing {
        println!("Dask: {why}");
    }
    for (row, e, times) in failures(o) {
        println!("error: {} on {}{times}: {e}", row.system, row.case.title());
    }
    if let Some(cpu) = cpu_table(o) {
        println!(
            "\nCPU time per sample (bag word count; this process, plus the worker processes' in the processes and cluster modes):"
        );
        print!("{}", cpu.render());
    }
    println!("load average before: {}; after: {}", o.load_before, loadavg());
    if !o.every_case {
        println!("(some cases only: RESULTS.md and the chart, which hold every case, are left as they are)");
        return Ok(());
    }

    let chart_path = bench_dir.join("results").join("speedup.svg");
    std::fs::create_dir_all(chart_path.parent().expect("a parent"))?;
    let subtitle = format!(
        "{} rounds{}, {}; {}",
        o.rounds,
        if o.quick { ", --quick sizes" } else { "" },
        date(o.started),
        machine.iter().find(|(k, _)| *k == "CPU").map(|(_, v)| v.as_str()).unwrap_or("")
    );
    chart::speedup(&chart_path, &groups(o), &subtitle)
        .map_err(|e| std::io::Error::other(format!("chart {}: {e}", chart_path.display())))?;

    let mut md = markdown(o, &table, &machine);
    let results = bench_dir.join("RESULTS.md");
    // Keep what other benchmarks wrote: the section `graphs` writes (when
    // it comes before the marker), then everything after the marker (the
    // cluster's sections, by hand). This run measured neither.
    if let Ok(old) = std::fs::read_to_string(&results) {
        let kept_at = old.find(KEPT_MARKER);
        if let (Some(b), Some(e)) = (old.find(crate::graphs::BEGIN), old.find(crate::graphs::END))
            && b < e
            && kept_at.is_none_or(|k| e < k)
        {
            md = format!("{}\n\n{}\n", md.trim_end(), &old[b..e + crate::graphs::END.len()]);
        }
        if let Some(at) = kept_at {
            md.push('\n');
            md.push_str(&old[at..]);
        }
    }
    std::fs::write(&results, md)?;
    println!("wrote {} and {}", results.display(), chart_path.display());
    Ok(())
}

/// In RESULTS.md, what follows this line is not `compare`'s and is kept
/// when `compare` writes the file again.
const KEPT_MARKER: &str = "<!-- kept by compare:";

/// Rows of the same case, by kind.
fn shoal_rows(o: &Outcome, case: Case) -> impl Iterator<Item = &Row> {
    o.rows.iter().filter(move |r| r.case == case && r.kind == Kind::Shoal)
}

fn table(o: &Outcome) -> Table {
    let mut header: Vec<String> =
        ["case", "size", "system", "median", "min – max", "per task"].iter().map(|s| s.to_string()).collect();
    for label in &o.shoal_labels {
        header.push(format!("Dask ÷ {label}"));
    }
    header.push("÷ rayon".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    for case in Case::ALL {
        let rayon = o.rows.iter().find(|r| r.case == case && r.kind == Kind::Rayon).and_then(Row::median);
        for (i, row) in o.rows.iter().filter(|r| r.case == case).enumerate() {
            let mut cells = vec![
                if i == 0 { case.title().to_string() } else { String::new() },
                if i == 0 { o.sizes.describe(case) } else { String::new() },
                row.system.clone(),
            ];
            match row.median() {
                Some(m) => {
                    let failed = if row.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} of {} failed)", row.errors.len(), row.errors.len() + row.samples.0.len())
                    };
                    cells.push(format!("{}{failed}", secs(m)));
                    cells.push(format!("{} – {}", secs(row.samples.min()), secs(row.samples.max())));
                    cells.push(match row.note {
                        // Nothing moved: a rate would be meaningless.
                        Some(n) => format!("{} wait ({n})", secs(m)),
                        None => match &row.tasks {
                            Some(t) => format!("{}; {t}", figure(case, &o.sizes, m)),
                            None => figure(case, &o.sizes, m),
                        },
                    });
                }
                None => {
                    let e = row.errors.first().map(String::as_str).unwrap_or("no sample");
                    cells.push(format!("error: {}", shorten(e, 70)));
                    cells.push(String::new());
                    cells.push(String::new());
                }
            }
            for shoal in shoal_rows(o, case) {
                cells.push(match (row.kind, row.median(), shoal.median()) {
                    (Kind::Dask, Some(d), Some(s)) => ratio(d / s),
                    _ => String::new(),
                });
            }
            cells.push(match (rayon, row.median()) {
                (Some(r), Some(m)) => ratio(m / r),
                _ => String::new(),
            });
            t.row(cells.into_iter().map(|c| c.replace('|', "/")).collect());
        }
    }
    t
}

/// The CPU time of the rows that measured it (the bag word count): on a
/// loaded machine, wall times say more about the load than about the
/// runners, CPU times far less. `None` when no row has any.
fn cpu_table(o: &Outcome) -> Option<Table> {
    let rows: Vec<&Row> = o.rows.iter().filter(|r| !r.cpu.0.is_empty()).collect();
    if rows.is_empty() {
        return None;
    }
    let mut header: Vec<String> =
        ["case", "system", "CPU (median)", "min – max"].iter().map(|s| s.to_string()).collect();
    for label in &o.shoal_labels {
        header.push(format!("Dask ÷ {label}"));
    }
    header.push("÷ rayon".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    let cpu_of = |case: Case, pred: &dyn Fn(&Row) -> bool| {
        rows.iter().find(|r| r.case == case && pred(r)).map(|r| r.cpu.median())
    };
    for row in &rows {
        let mut cells = vec![
            row.case.title().to_string(),
            row.system.clone(),
            secs(row.cpu.median()),
            format!("{} – {}", secs(row.cpu.min()), secs(row.cpu.max())),
        ];
        for label in &o.shoal_labels {
            cells.push(match (row.kind, cpu_of(row.case, &|r: &Row| r.system == *label)) {
                (Kind::Dask, Some(s)) => ratio(row.cpu.median() / s),
                _ => String::new(),
            });
        }
        cells.push(match cpu_of(row.case, &|r: &Row| r.kind == Kind::Rayon) {
            Some(r) => ratio(row.cpu.median() / r),
            None => String::new(),
        });
        t.row(cells);
    }
    Some(t)
}

/// One line per (Dask mode, shoal mode): the count_letters, overhead and
/// transfer ratios.
fn summary(o: &Outcome) -> Vec<String> {
    let median =
        |case: Case, system: &str| o.rows.iter().find(|r| r.case == case && r.system == system).and_then(Row::median);
    let mut out = Vec::new();
    for shoal in &o.shoal_labels {
        for (_, dask) in DASK_MODES {
            let r = |case| median(case, dask).zip(median(case, shoal)).map(|(d, s)| d / s);
            let overhead: Vec<f64> =
                [Case::Map, Case::Tree, Case::Chain, Case::RoundTrip].into_iter().filter_map(r).collect();
            if overhead.is_empty() && r(Case::CountLetters).is_none() {
                continue;
            }
            let show = |v: Option<f64>| v.map(ratio).unwrap_or_else(|| "—".into());
            let (lo, hi) =
                (overhead.iter().copied().fold(f64::INFINITY, f64::min), overhead.iter().copied().fold(0.0, f64::max));
            out.push(format!(
                "{dask} ÷ {shoal}: count_letters {}, per-task overhead (map, tree, chain, round trip) {}, transfer {}",
                show(r(Case::CountLetters)),
                if overhead.is_empty() { "—".into() } else { format!("{} – {}", ratio(lo), ratio(hi)) },
                show(r(Case::Transfer)),
            ));
        }
    }
    out
}

/// Each distinct error of each row, with " (N rounds)" when it repeated.
fn failures(o: &Outcome) -> Vec<(&Row, &str, String)> {
    let mut out = Vec::new();
    for row in &o.rows {
        let mut seen: Vec<&str> = Vec::new();
        for e in &row.errors {
            if !seen.contains(&e.as_str()) {
                seen.push(e);
                let n = row.errors.iter().filter(|x| *x == e).count();
                out.push((row, e.as_str(), if n > 1 { format!(" ({n} rounds)") } else { String::new() }));
            }
        }
    }
    out
}

/// The chart's groups: per case, Dask's time ÷ shoal's for each Dask mode,
/// like with like: Dask processes against shoal processes when that mode is
/// in the run, otherwise against shoal threads (all pairs are in the table).
fn groups(o: &Outcome) -> Vec<Group> {
    let mut out = Vec::new();
    for case in Case::ALL {
        let mut bars = Vec::new();
        for (mode, label) in DASK_MODES {
            let dask = o.rows.iter().find(|r| r.case == case && r.system == label);
            let mut shoals = shoal_rows(o, case);
            let Some(first) = shoal_rows(o, case).next() else { continue };
            // The CLI cluster against shoal's cluster mode (both a
            // scheduler and 2 workers, each its own process).
            let peer = if mode == DASK_CLI { "cluster" } else { mode };
            let shoal = shoals.find(|r| r.system.ends_with(peer)).unwrap_or(first);
            if let (Some(d), Some(s)) = (dask.and_then(Row::median), shoal.median()) {
                let note = dask.and_then(|r| r.note).map(|_| "nothing moves".to_string());
                bars.push(Bar { series: format!("{label} ÷ {}", shoal.system), value: d / s, note });
            }
        }
        out.push(Group { label: case.title().to_string(), bars });
    }
    out
}

/// The per-task figure of a median.
fn figure(case: Case, sz: &Sizes, m: f64) -> String {
    match case {
        Case::CountLetters => format!("{:.0} MB/s", sz.files as f64 * sz.file_bytes as f64 / 1e6 / m),
        Case::Map => rate(sz.map as f64 / m),
        Case::Tree => rate((2 * sz.tree_leaves - 1) as f64 / m),
        Case::Chain => format!("{} per hop", secs(m / sz.chain as f64)),
        Case::RoundTrip => format!("{} per call", secs(m)),
        Case::Transfer => format!("{} wait, {:.0} MiB/s", secs(m), sz.transfer_mib as f64 / m),
        Case::BagWordcount => format!("{:.0} k lines/s", (sz.words.0 * sz.words.1) as f64 / 1e3 / m),
    }
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M tasks/s", per_s / 1e6)
    } else if per_s >= 1e4 {
        format!("{:.0} k tasks/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} tasks/s")
    }
}

pub fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

/// What the run ran on, as (what, value).
fn machine(o: &Outcome) -> Vec<(&'static str, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown".into());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut shoal = env!("CARGO_PKG_VERSION").to_string();
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        shoal.push_str(&format!(", commit {commit}{}", if dirty { " with uncommitted changes" } else { "" }));
    }
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let extra = |k: &str| o.dask_extra.as_ref().and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
    let dask = match (extra("dask_version"), extra("distributed_version")) {
        (Some(d), Some(dd)) => format!("dask {d}, distributed {dd}"),
        _ => format!("none ({})", o.dask_missing.as_deref().unwrap_or("no version reported")),
    };
    vec![
        ("CPU", format!("{cpu}, {cores} cores")),
        ("memory", mem),
        ("kernel", format!("Linux {kernel}{}", if os.is_empty() { String::new() } else { format!(" ({os})") })),
        ("load average (1, 5, 15 min) before / after the run", format!("{} / {}", o.load_before, loadavg())),
        ("shoal", shoal),
        ("rustc", rustc),
        ("Dask", dask),
        ("Python", extra("python").unwrap_or_else(|| "—".into())),
        (
            "Dask settings",
            extra("worker_saturation")
                .map(|s| format!("worker-saturation {s} (Dask's default), memory limit auto"))
                .unwrap_or_else(|| "—".into()),
        ),
    ]
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `YYYY-MM-DD HH:MM UTC` of a time.
fn date(t: std::time::SystemTime) -> String {
    let s = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((s / 86_400) as i64, s % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

fn markdown(o: &Outcome, table: &Table, machine: &[(&str, String)]) -> String {
    let sz = &o.sizes;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# shoal vs Dask, side by side\n");
    let _ = writeln!(
        w,
        "Generated by `{}` on {}: the same work on shoal and on Dask.distributed, on the same data and \
         machine, alternated round by round ({} rounds{}). Regenerate it when performance changes.\n",
        o.command,
        date(o.started),
        o.rounds,
        if o.quick { ", `--quick` sizes" } else { "" }
    );
    if let Some(why) = &o.dask_missing {
        let _ = writeln!(w, "**Dask is not in this run:** {why}. Only shoal's figures are shown.\n");
    }
    let _ =
        writeln!(w, "![Speedup of shoal over Dask per case: Dask's time ÷ shoal's, log scale](results/speedup.svg)\n");
    let lines = summary(o);
    if !lines.is_empty() {
        let _ = writeln!(w, "How many times faster shoal is (Dask's median time ÷ shoal's):\n");
        for line in lines {
            let _ = writeln!(w, "- {line}");
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(
        w,
        "Median and min – max over the rounds (round trip: each round's median single call). \
         *Dask ÷ shoal* is Dask's median time over shoal's: how many times faster shoal is. \
         *÷ rayon* compares with the in-process limit (rayon `par_iter` over the same files).\n"
    );
    md.push_str(&table.render());
    if let Some(cpu) = cpu_table(o) {
        md.push_str("\nCPU time per sample (bag word count; this process, plus the worker processes' in the processes and cluster modes): on a loaded machine it says more about the runners than wall time does.\n\n");
        md.push_str(&cpu.render());
    }
    let w = &mut md;
    let failed = failures(o);
    if !failed.is_empty() {
        let _ = writeln!(w, "\nFailures:\n");
        for (row, e, times) in failed {
            let _ = writeln!(w, "- {} on {}{times}: {}", row.system, row.case.title(), e.replace('\n', " "));
        }
    }
    let _ = writeln!(w, "\n## Machine\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    for (k, v) in machine {
        let _ = writeln!(w, "| {k} | {} |", v.replace('|', "/"));
    }
    let _ = writeln!(w, "\n## Reproduce\n");
    let _ = writeln!(
        w,
        "```sh\ncargo run --release -p shoal-bench -- compare           # full sizes, 3 rounds: ~15 minutes\n\
         cargo run --release -p shoal-bench -- compare --quick   # small sizes, 2 rounds: under 2 minutes\n\
         cargo run --release -p shoal-bench -- compare --no-dask # shoal only\n```\n"
    );
    let _ = writeln!(
        w,
        "The first run creates `bench/.venv` and installs the pinned Dask \
         (`bench/dask/requirements.txt`); it needs network access for that once. \
         If Dask cannot be installed or a Dask case fails, the table says so and shoal's \
         figures are still printed."
    );
    let _ = writeln!(w, "\n## What is measured\n");
    let _ = writeln!(
        w,
        "| case | size | the work (the same on every system) | timed |\n|---|---|---|---|\n\
         | count_letters | {} | the original Dask demo: one task per file reads it, sorts its bytes, returns the \
         length; map + gather | map to gathered results |\n\
         | map + gather | {} | map no-op tasks, gather | map to gathered results |\n\
         | tree reduction | {} | binary tree of additions over no-op leaves, built lazily (`Lazy` / \
         `dask.delayed`), computed | compute only; building is outside the clock |\n\
         | chain | {} | each task takes the previous one's result | first submit to last result |\n\
         | round trip | {} | one submit + result of a no-op, one after the other | each call |\n\
         | transfer | {} | a task makes a `Vec<u8>` / `bytes` of that size; once it is in memory, a second \
         task reads its length and the sum of every 4096th byte (shoal: through `&Archived<Vec<u8>>`; Dask \
         processes: the consumer pinned to the other worker) | submitting the consumer to its result |\n\
         | bag word count | {} | word frequencies of text files, top 10: shoal \
         `bag::read_text(..).split_whitespace().frequencies().topk(10, by_count)`, Dask Bag \
         `read_text(..).str.split().flatten().frequencies().topk(10, key=1)`, Rust sequential and rayon a \
         `HashMap` per file merged; the per-task column gives each graph's task count | building and \
         computing the graph |\n",
        sz.describe(Case::CountLetters),
        sz.describe(Case::Map),
        sz.describe(Case::Tree),
        sz.describe(Case::Chain),
        sz.describe(Case::RoundTrip),
        sz.describe(Case::Transfer),
        sz.describe(Case::BagWordcount),
    );
    let _ = writeln!(w, "Systems:\n");
    let _ = writeln!(
        w,
        "- **Rust sequential / rayon** (count_letters and bag word count): the same per-file work in a plain loop and with \
         rayon's `par_iter`, the in-process limit.\n\
         - **shoal threads**: `Client::local()`, {} threads in this process; one client for the whole run. \
         Like Rust sequential and rayon, it runs each case several times per round, interleaved with \
         them (count_letters {} times, the per-task cases {}; each run is a sample): they take \
         milliseconds to seconds, where a single sample is at the mercy of whatever else the machine \
         runs. Dask: one sample per round.{}\n\
         - **Dask processes**: `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`, what \
         Dask picks by itself on 2 cores; TCP on 127.0.0.1.\n\
         - **Dask threads**: `LocalCluster(n_workers=1, threads_per_worker=2, processes=False)`; in \
         transfer its producer and consumer share one worker, so no data moves.\n\
         - **Dask CLI cluster** (when the environment has Dask's CLI): `dask scheduler --host 127.0.0.1 \
         --scheduler-file F` and two `dask worker --scheduler-file F --nthreads 1` (each with its nanny, \
         Dask's default), started as a user starts them, once per case; each sample is a new client of it \
         (`bench.py --mode cli`). It is compared with shoal cluster.\n",
        o.nthreads,
        super::in_process_reps(Case::CountLetters),
        super::in_process_reps(Case::Map),
        if o.shoal_labels.iter().any(|l| l.ends_with("processes")) {
            "\n- **shoal processes**: `Client::processes(2)`, 2 worker processes × 1 thread (like Dask \
             processes), started once for the whole run; results live in sealed shared-memory segments \
             that the consumer maps and reads in place (in transfer, whichever worker runs it: shoal \
             has no pinning)."
        } else {
            " The processes mode is not in this run (it plugs in at `shoal_modes` in \
             `bench/src/compare/mod.rs`)."
        }
    );
    let _ = writeln!(w, "Fairness notes:\n");
    let _ = writeln!(
        w,
        "- Alternation: for each case and round, the in-process samples (Rust, shoal), then Dask processes, \
         then Dask threads, then the Dask CLI cluster, \
         so a slow phase of the machine hits every system alike.\n\
         - Each Dask sample is one `bench/dask/bench.py` run: a fresh cluster (start-up and shutdown are \
         never timed), one untimed warm-up round of the same case at a small size ({} files, {} tasks, \
         {} leaves, {} hops, {} calls, {} MiB), then the timed round. The warm-up ships the functions, opens \
         the connections (worker to worker too) and lets the scheduler learn the task durations, i.e. what \
         a long-lived cluster has already done; a full-size warm-up would only double the run (count_letters \
         full size: a minute per sample). shoal gets the same warm-up round once per case.\n\
         - Dask's settings are its defaults (worker saturation 1.1: the scheduler queues tasks and hands a \
         worker about one at a time per thread, which bounds no-op throughput by its message latencies; see \
         `bench/dask/README.md`). Calls are `pure=False` on Dask (fresh keys every round); shoal's are pure \
         (its default), with distinct arguments, so nothing is reused between rounds.\n\
         - Task bodies are trivial except in count_letters, so those cases measure the runtimes' cost per \
         task; count_letters measures real work (in Python, `sorted()` of a 10 MB `bytes` takes ~1 s and \
         holds the GIL, so Dask threads runs the sorts one at a time).\n\
         - transfer: shoal's consumer takes `&Archived<Vec<u8>>`; in the threads mode the producer's `Vec` \
         is its own archive (rkyv's 8-byte root is written after its bytes when the task returns it), so \
         the consumer reads the producer's bytes and nothing is copied. Dask processes pickles the bytes \
         and sends them over TCP to the other worker; Dask threads hands the same object over, so nothing \
         is copied either.\n\
         - Load average before the run: {} (after: in the machine table). Other work on the machine, if \
         any, hits every system alike thanks to the alternation, but widens the min – max ranges.",
        Sizes::warmup(Case::CountLetters),
        Sizes::warmup(Case::Map),
        Sizes::warmup(Case::Tree),
        Sizes::warmup(Case::Chain),
        Sizes::warmup(Case::RoundTrip),
        Sizes::warmup(Case::Transfer),
        o.load_before
    );
    md
}
