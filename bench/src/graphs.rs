//! `graphs`: real Dask task graphs that move a lot of data, replayed on
//! shoal's modes and on Dask side by side (issue 12).
//!
//! The graphs are exports of real Dask computations (`bench/dask/graphs.py
//! export`; the files are in `bench/dask/graphs/`): each task's
//! dependencies, how long it ran and how many bytes it returned. Every system
//! replays a file with the same synthetic task: read one byte per 4 KiB page
//! of each input, sleep for the recorded duration, return the recorded number
//! of bytes (written). So what differs is only how each runtime moves,
//! keeps and releases those bytes, and in which order it runs the tasks.
//!
//! Each sample is a fresh child process (`shoal-bench graphs-replay FILE
//! MODE`, or `graphs.py replay` for Dask): a client, an untimed warm-up graph
//! of 4 tiny tasks, a line `{"ready": true}`, the timed graph, and a line
//! `{"seconds": …}`. The parent samples the memory of the child's whole
//! process tree meanwhile ([`crate::memwatch`]): the peak, and the
//! tree's size at "ready" (the runtime's own memory, before any data).
//! Systems alternate within each round, so a load change on this shared
//! machine hits them all alike; the table gives medians.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal::prelude::*;

use crate::graphs_trace;
use crate::memwatch::{self, Watch};
use crate::table::{Samples, Table, median, secs};

/// Page size of the synthetic task's input reads: one byte per page makes
/// every page of every input really present, as a consumer that looks at
/// its data must, for next to no work.
const PAGE: usize = 4096;

/// A sample that takes longer is killed and reported as an error (the
/// slowest graph here takes ~10 s).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Worker threads (threads mode) or worker processes of one thread
/// (processes mode) on each side: Dask's `LocalCluster` defaults on a
/// 2-core machine, as in `compare`.
const WORKERS: usize = 2;

/// One task of an exported graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub deps: Vec<usize>,
    pub seconds: f64,
    pub bytes: u64,
}

/// An exported graph (`bench/dask/graphs/NAME.json`).
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub description: String,
    /// In topological order: every dependency comes before its dependents.
    pub tasks: Vec<Node>,
    pub sinks: Vec<usize>,
}

impl Graph {
    /// Read and check a file: every dependency an earlier task, every sink a task.
    pub fn load(path: &Path) -> Result<Graph, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let bad = |what: &str| format!("{}: {what} (export it again with bench/dask/graphs.py export)", path.display());
        let str_of = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| bad(k));
        let (name, description) = (str_of("name")?, str_of("description")?);
        let mut tasks = Vec::new();
        for (i, t) in doc.get("tasks").and_then(Value::as_array).ok_or_else(|| bad("no tasks"))?.iter().enumerate() {
            let deps: Option<Vec<usize>> = t
                .get("deps")
                .and_then(Value::as_array)
                .map(|d| d.iter().map(|x| x.as_u64().map(|x| x as usize).filter(|&x| x < i)).collect())
                .and_then(|d: Option<Vec<usize>>| d);
            let seconds = t.get("seconds").and_then(Value::as_f64).filter(|s| *s >= 0.0);
            let bytes = t.get("bytes").and_then(Value::as_u64);
            match (deps, seconds, bytes) {
                (Some(deps), Some(seconds), Some(bytes)) => tasks.push(Node { deps, seconds, bytes }),
                _ => return Err(bad(&format!("task {i} is malformed or names a later task"))),
            }
        }
        let sinks: Option<Vec<usize>> = doc
            .get("sinks")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(|x| x.as_u64().map(|x| x as usize).filter(|&x| x < tasks.len())).collect());
        let sinks = sinks.filter(|s| !s.is_empty()).ok_or_else(|| bad("no sinks, or a sink that is no task"))?;
        Ok(Graph { name, description, tasks, sinks })
    }

    /// The longest chain of durations.
    pub fn critical_path(&self) -> f64 {
        let mut finish = vec![0.0f64; self.tasks.len()];
        for (i, t) in self.tasks.iter().enumerate() {
            finish[i] = t.deps.iter().map(|&d| finish[d]).fold(0.0, f64::max) + t.seconds;
        }
        finish.iter().copied().fold(0.0, f64::max)
    }

    /// The sum of the durations.
    pub fn work(&self) -> f64 {
        self.tasks.iter().map(|t| t.seconds).sum()
    }

    /// No schedule on `cores` can be faster: max(critical path, work ÷ cores).
    pub fn lower_bound(&self, cores: usize) -> f64 {
        self.critical_path().max(self.work() / cores as f64)
    }

    /// Bytes produced by all tasks.
    pub fn bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.bytes).sum()
    }
}

/// The synthetic task: read one byte per page of each input in place, sleep
/// `micros`, return `nbytes` bytes (all written). `i` keeps equal-looking
/// tasks apart (calls are pure: equal arguments would be one task).
#[shoal::task]
fn synth(i: u64, micros: u64, nbytes: u64, inputs: Inputs<Vec<u8>>) -> Vec<u8> {
    let start = graphs_trace::now();
    let touched: u64 = inputs.iter().map(|part| part.iter().step_by(PAGE).map(|&b| u64::from(b)).sum::<u64>()).sum();
    let read = graphs_trace::now();
    std::thread::sleep(Duration::from_micros(micros));
    let slept = graphs_trace::now();
    let out = vec![((i + touched) % 251 + 1) as u8; nbytes as usize];
    graphs_trace::note(i, start, read, slept, graphs_trace::now());
    out
}

/// Build the graph's lazy nodes; its sinks.
fn lazy_graph(graph: &Graph) -> Vec<Lazy<Vec<u8>>> {
    let mut nodes: Vec<Lazy<Vec<u8>>> = Vec::with_capacity(graph.tasks.len());
    for (i, t) in graph.tasks.iter().enumerate() {
        let deps: Vec<Lazy<Vec<u8>>> = t.deps.iter().map(|&d| nodes[d].clone()).collect();
        nodes.push(synth.lazy((i as u64, (t.seconds * 1e6).round() as u64, t.bytes, deps)));
    }
    graph.sinks.iter().map(|&s| nodes[s].clone()).collect()
}

/// The child process of one shoal sample: `shoal-bench graphs-replay FILE
/// MODE [MEMORY_LIMIT]` (the limit in bytes, processes mode only).
pub fn replay(path: &str, mode: &str, memory_limit: Option<u64>) -> shoal::Result<()> {
    let graph = Graph::load(Path::new(path)).map_err(shoal::Error::msg)?;
    let client = match (mode, memory_limit) {
        ("threads", None) => Client::threads(WORKERS)?,
        ("processes", None) => Client::processes(WORKERS)?,
        ("processes", Some(limit)) => Client::processes_with(
            shoal::ProcessesOptions { workers: WORKERS, memory_limit: Some(limit), ..Default::default() },
            shoal::ClientOptions::default(),
        )?,
        (other, _) => return Err(shoal::Error::msg(format!("unknown mode {other}: threads or processes"))),
    };
    let warm = Graph {
        name: "warm-up".into(),
        description: String::new(),
        tasks: vec![
            Node { deps: vec![], seconds: 0.0, bytes: 10 },
            Node { deps: vec![], seconds: 0.0, bytes: 10 },
            Node { deps: vec![], seconds: 0.0, bytes: 10 },
            Node { deps: vec![0, 1, 2], seconds: 0.0, bytes: 10 },
        ],
        sinks: vec![3],
    };
    shoal::wait(&client.compute_all(&lazy_graph(&warm))?)?;
    let sinks = lazy_graph(&graph);
    graphs_trace::reset().map_err(shoal::Error::msg)?;
    println!("{{\"ready\": true}}");
    let start = Instant::now();
    let futures = client.compute_all(&sinks)?;
    shoal::wait(&futures)?;
    let seconds = start.elapsed().as_secs_f64();
    for f in &futures {
        if let shoal::FutureStatus::Error(e) = f.status() {
            return Err(shoal::Error::msg(format!("a sink failed: {e}")));
        }
    }
    if let Some(line) = graphs_trace::summary().map_err(shoal::Error::msg)? {
        println!("{line}");
    }
    println!("{{\"seconds\": {seconds}, \"tasks\": {}}}", graph.tasks.len());
    Ok(())
}

/// A system of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    ShoalThreads,
    ShoalProcesses,
    /// The processes mode under a memory limit (bytes).
    ShoalLimited(u64),
    DaskThreads,
    DaskProcesses,
}

impl System {
    fn label(self) -> String {
        match self {
            System::ShoalThreads => "shoal threads".into(),
            System::ShoalProcesses => "shoal processes".into(),
            System::ShoalLimited(limit) => format!("shoal processes, limit {}", mb(limit as f64)),
            System::DaskThreads => "Dask threads".into(),
            System::DaskProcesses => "Dask processes (2 × 1)".into(),
        }
    }

    fn is_dask(self) -> bool {
        matches!(self, System::DaskThreads | System::DaskProcesses)
    }

    fn command(self, python: &Path, script: &Path, file: &Path) -> Result<Command, String> {
        let mut cmd = match self {
            System::ShoalThreads | System::ShoalProcesses | System::ShoalLimited(_) => {
                let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
                let mut c = Command::new(exe);
                c.arg("graphs-replay").arg(file);
                c
            }
            System::DaskThreads | System::DaskProcesses => {
                let mut c = Command::new(python);
                c.arg(script).arg("replay").arg(file).arg("--timeout").arg(SAMPLE_TIMEOUT.as_secs().to_string());
                c.arg("--mode");
                c
            }
        };
        cmd.arg(if matches!(self, System::ShoalThreads | System::DaskThreads) { "threads" } else { "processes" });
        if let System::ShoalLimited(limit) = self {
            cmd.arg(limit.to_string());
        }
        Ok(cmd)
    }
}

/// One sample: makespan, peak memory of the tree, its memory at "ready".
struct Sample {
    seconds: f64,
    peak: u64,
    idle: u64,
}

/// Run one child to its end, watching its memory.
fn sample(mut cmd: Command) -> Result<Sample, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    let watch = Watch::start(pid);
    let stdout = child.stdout.take().ok_or("the child has no stdout")?;
    let idle = Arc::new(Mutex::new(None));
    let lines = {
        let idle = Arc::clone(&idle);
        std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"ready\"") {
                    *idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(memwatch::tree_bytes(pid));
                } else if line.trim_start().starts_with('{') {
                    last = Some(line);
                }
            }
            last
        })
    };
    let deadline = Instant::now() + SAMPLE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no result within {SAMPLE_TIMEOUT:?}: killed"));
            }
            Err(e) => return Err(format!("cannot wait for the child: {e}")),
        }
    };
    let peak = watch.stop();
    let last = lines.join().map_err(|_| "the output reader panicked")?;
    let line = last.ok_or_else(|| format!("{status}, no result line"))?;
    let doc: Value = serde_json::from_str(&line).map_err(|e| format!("unreadable result line ({e}): {line}"))?;
    if let Some(e) = doc.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let seconds = doc.get("seconds").and_then(Value::as_f64).ok_or_else(|| format!("no seconds in {line}"))?;
    let idle = idle.lock().unwrap_or_else(|e| e.into_inner()).ok_or("the child never said it was ready")?;
    Ok(Sample { seconds, peak, idle })
}

/// Options of `graphs`.
pub struct GraphsOpts {
    pub rounds: usize,
    pub dask: bool,
    /// Only the graphs whose name is in here (all if empty).
    pub only: Vec<String>,
    /// Also run the processes mode under this memory limit (bytes).
    pub memory_limit: Option<u64>,
}

/// The Python that runs Dask: `$SHOAL_BENCH_PYTHON`, `bench/.venv`'s, or `python3`.
fn python(bench_dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = bench_dir.join(".venv").join("bin").join("python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// MB with one decimal.
fn mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / 1e6)
}

pub fn run(opts: &GraphsOpts) -> Result<(), String> {
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = bench_dir.join("dask").join("graphs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let graphs: Vec<(PathBuf, Graph)> = files
        .into_iter()
        .map(|f| Graph::load(&f).map(|g| (f, g)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|(_, g)| opts.only.is_empty() || opts.only.contains(&g.name))
        .collect();
    if graphs.is_empty() {
        return Err(format!("no graph to run in {} (names: --only NAME)", dir.display()));
    }
    let python = python(bench_dir);
    let script = bench_dir.join("dask").join("graphs.py");
    let mut systems = vec![System::ShoalThreads, System::ShoalProcesses];
    systems.extend(opts.memory_limit.map(System::ShoalLimited));
    if opts.dask {
        let ok = Command::new(&python)
            .args(["-c", "import dask, distributed"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "{} cannot import dask.distributed: install it (pip install -r bench/dask/requirements.txt), \
                 set SHOAL_BENCH_PYTHON, or pass --no-dask",
                python.display()
            ));
        }
        systems.extend([System::DaskThreads, System::DaskProcesses]);
    }
    let load_before = loadavg();
    let started = std::time::SystemTime::now();
    let mut table = Table::new(&[
        "graph",
        "tasks",
        "produced",
        "bound",
        "system",
        "makespan",
        "min – max",
        "efficiency",
        "peak memory",
        "idle",
        "time ÷ Dask best",
        "peak ÷ Dask lowest",
    ]);
    for (file, graph) in &graphs {
        eprintln!("graphs: {} ({} tasks) — {}", graph.name, graph.tasks.len(), graph.description);
        let mut times: Vec<Samples> = vec![Samples::default(); systems.len()];
        let mut peaks: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        let mut idles: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        let mut errors: Vec<Vec<String>> = vec![Vec::new(); systems.len()];
        for round in 0..opts.rounds {
            for (k, system) in systems.iter().enumerate() {
                match system.command(&python, &script, file).and_then(sample) {
                    Ok(s) => {
                        eprintln!(
                            "  round {} {:<24} {:>9}  peak {:>8}  idle {:>7}",
                            round + 1,
                            system.label(),
                            secs(s.seconds),
                            mb(s.peak as f64),
                            mb(s.idle as f64)
                        );
                        times[k].0.push(s.seconds);
                        peaks[k].push(s.peak as f64);
                        idles[k].push(s.idle as f64);
                    }
                    Err(e) => {
                        eprintln!("  round {} {}: {e}", round + 1, system.label());
                        errors[k].push(e);
                    }
                }
            }
        }
        let bound = graph.lower_bound(WORKERS);
        let best_dask = (0..systems.len())
            .filter(|&k| systems[k].is_dask() && !times[k].0.is_empty())
            .map(|k| times[k].median())
            .fold(f64::INFINITY, f64::min);
        let lowest_dask = (0..systems.len())
            .filter(|&k| systems[k].is_dask() && !peaks[k].is_empty())
            .map(|k| median(&peaks[k]))
            .fold(f64::INFINITY, f64::min);
        for (k, system) in systems.iter().enumerate() {
            let first = k == 0;
            let mut cells = vec![
                if first { graph.name.clone() } else { String::new() },
                if first { graph.tasks.len().to_string() } else { String::new() },
                if first { mb(graph.bytes() as f64) } else { String::new() },
                if first { secs(bound) } else { String::new() },
                system.label(),
            ];
            if times[k].0.is_empty() {
                cells.push(format!("failed: {}", errors[k].first().map_or("no sample", String::as_str)));
            } else {
                let (t, p) = (times[k].median(), median(&peaks[k]));
                cells.extend([
                    secs(t),
                    format!("{} – {}", secs(times[k].min()), secs(times[k].max())),
                    format!("{:.0}%", 100.0 * bound / t),
                    mb(p),
                    mb(median(&idles[k])),
                    if system.is_dask() || !best_dask.is_finite() {
                        String::new()
                    } else {
                        format!("{:.2}×", t / best_dask)
                    },
                    if system.is_dask() || !lowest_dask.is_finite() {
                        String::new()
                    } else {
                        format!("{:.2}×", p / lowest_dask)
                    },
                ]);
                if !errors[k].is_empty() {
                    cells[5].push_str(&format!(" ({} failed)", errors[k].len()));
                }
            }
            table.row(cells);
        }
    }
    table.print();
    let load_after = loadavg();
    println!("load average (1, 5, 15 min) before / after: {load_before} / {load_after}");
    write_results(bench_dir, opts, &graphs, &table, started, &load_before, &load_after)
        .map_err(|e| format!("cannot write the results: {e}"))
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The section's markers in `RESULTS.md`: `compare` rewrites the rest of the
/// file and keeps what is between them.
pub const BEGIN: &str = "<!-- graphs: begin (written by `shoal-bench graphs`) -->";
pub const END: &str = "<!-- graphs: end -->";

/// Put the table into `bench/RESULTS.md` between [`BEGIN`] and [`END`] (at
/// the end the first time).
fn write_results(
    bench_dir: &Path,
    opts: &GraphsOpts,
    graphs: &[(PathBuf, Graph)],
    table: &Table,
    started: std::time::SystemTime,
    load_before: &str,
    load_after: &str,
) -> std::io::Result<()> {
    let when = started.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut s = format!("{BEGIN}\n## Data-heavy graphs (issue 12)\n\n");
    s.push_str(&format!(
        "Generated by `cargo run --release -p shoal-bench -- graphs --rounds {}` at Unix time {when}; \
         load average (1, 5, 15 min) {load_before} before and {load_after} after, on a machine shared with \
         other work: the figures are medians of noisy samples, and the ratios are what to read. \
         Real Dask graphs exported by `bench/dask/graphs.py export` (dask {}), replayed with one synthetic task \
         (read one byte per page of each input, sleep the recorded duration, return the recorded bytes). \
         *bound* is max(critical path, work ÷ {WORKERS}); *efficiency* is bound ÷ makespan; *peak memory* is the \
         largest proportional set size of the whole process tree (plus memfds held and not mapped), sampled \
         every {} ms; *idle* is the tree's size before the graph, after a warm-up. *÷ Dask best* divides by the \
         faster Dask mode's median; *÷ Dask lowest* by the smaller Dask peak.\n\n",
        opts.rounds,
        dask_version(&graphs[0].0),
        memwatch::INTERVAL.as_millis()
    ));
    for (_, g) in graphs {
        s.push_str(&format!("- **{}**: {}\n", g.name, g.description));
    }
    s.push('\n');
    s.push_str(&table.render());
    s.push_str(END);
    s.push('\n');
    let path = bench_dir.join("RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{s}{}", &old[..b], old[e + END.len()..].trim_start_matches('\n')),
        _ => format!("{}\n{s}", old.trim_end()),
    };
    std::fs::write(&path, new)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The dask version a file was exported with.
fn dask_version(file: &Path) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|d| d.get("dask_version").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(deps: &[usize], seconds: f64, bytes: u64) -> Node {
        Node { deps: deps.to_vec(), seconds, bytes }
    }

    #[test]
    fn the_bound_is_the_longer_of_the_critical_path_and_the_work_per_core() {
        // 0 → 2, 1 → 2: path 3 + 1 = 4 s; work 6 s, 3 s on 2 cores.
        let g = Graph {
            name: "t".into(),
            description: String::new(),
            tasks: vec![node(&[], 3.0, 1), node(&[], 2.0, 2), node(&[0, 1], 1.0, 3)],
            sinks: vec![2],
        };
        assert_eq!(g.critical_path(), 4.0);
        assert_eq!(g.work(), 6.0);
        assert_eq!(g.lower_bound(2), 4.0);
        assert_eq!(g.lower_bound(1), 6.0);
        assert_eq!(g.bytes(), 6);
    }

    #[test]
    fn every_committed_export_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dask").join("graphs");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| Graph::load(&e.path()).unwrap().name).collect();
        for want in ["rechunk", "matmul", "shuffle", "tree", "pipeline", "add_transpose"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn a_file_naming_a_later_task_is_refused() {
        let path = std::env::temp_dir().join(format!("shoal-graphs-test-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"name":"x","description":"","tasks":[{"deps":[1],"seconds":0,"bytes":1},{"deps":[],"seconds":0,"bytes":1}],"sinks":[0]}"#,
        )
        .unwrap();
        let err = Graph::load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("task 0"), "{err}");
    }
}
