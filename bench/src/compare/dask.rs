//! The Dask half: the Python virtual environment, and one `bench.py` run per
//! sample (a fresh `LocalCluster`, one small untimed warm-up round, one timed
//! round), read back from the JSON line it prints.
//!
//! Besides the `LocalCluster`s, a cluster started as a user starts one by
//! hand ([`CliCluster`]): `dask scheduler` and two `dask worker` processes
//! (each with its nanny, Dask's default), once per case, to which each
//! sample's `bench.py --mode cli` connects as a client.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Case, Sizes};
use crate::procfs::group_members;

/// Each `bench.py` run stops itself after this many seconds, reporting an
/// error (the longest full-size sample, count_letters on Dask threads, takes
/// ~100 s here).
const TIMEOUT_S: u32 = 900;

pub struct Dask {
    python: PathBuf,
    script: PathBuf,
    /// How to run Dask's CLI (`dask …`), if this environment has it.
    cli: Option<Vec<PathBuf>>,
}

/// What one `bench.py` run gave.
pub struct DaskRun {
    /// The timed round's seconds (round trip: its median call).
    pub seconds: Option<f64>,
    pub error: Option<String>,
    pub extra: Value,
}

impl Dask {
    /// Make sure `bench/.venv` (or `$SHOAL_BENCH_VENV`) exists and can import
    /// `distributed`, creating it and installing the pinned requirements if
    /// not. `Err` says why Dask cannot be had.
    pub fn ensure(bench_dir: &Path) -> Result<Dask, String> {
        let venv = venv(bench_dir);
        let python = venv.join("bin").join("python");
        let script = bench_dir.join("dask").join("bench.py");
        let requirements = bench_dir.join("dask").join("requirements.txt");
        if !python.exists() {
            eprintln!("compare: creating the Python virtual environment {}", venv.display());
            let mut cmd = Command::new("python3");
            cmd.arg("-m").arg("venv").arg(&venv);
            run_quiet(cmd).map_err(|e| format!("`python3 -m venv {}` failed: {e}", venv.display()))?;
        }
        if let Err(first) = check_import(&python) {
            eprintln!(
                "compare: installing the pinned Dask into {} (pip install -r {}; a minute or so)",
                venv.display(),
                requirements.display()
            );
            let mut cmd = Command::new(&python);
            cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"]).arg(&requirements);
            run_quiet(cmd).map_err(|e| {
                format!(
                    "{first}, and `{} -m pip install -r {}` failed (it needs PyPI once): {e}",
                    python.display(),
                    requirements.display()
                )
            })?;
            check_import(&python).map_err(|e| format!("installed, but still {e}"))?;
        }
        let cli = find_cli(&venv, &python);
        Ok(Dask { python, script, cli })
    }

    /// The venv as it is, without creating or installing anything.
    pub fn existing(bench_dir: &Path) -> Result<Dask, String> {
        let venv = venv(bench_dir);
        let python = venv.join("bin").join("python");
        check_import(&python)?;
        let cli = find_cli(&venv, &python);
        Ok(Dask { python, script: bench_dir.join("dask").join("bench.py"), cli })
    }

    /// Why the Dask CLI cluster cannot run here, if it cannot.
    pub fn cli_missing(&self) -> Option<String> {
        match &self.cli {
            Some(_) => None,
            None => Some(format!(
                "neither {}/dask nor `{} -m dask scheduler --help` works: no Dask CLI in this environment",
                self.python.parent().map(|p| p.display().to_string()).unwrap_or_default(),
                self.python.display()
            )),
        }
    }

    /// Starts `dask scheduler` on loopback and `workers` × `dask worker`
    /// of one thread each (what `LocalCluster` makes on 2 cores), and waits
    /// until the scheduler file names the scheduler. The workers connect
    /// by themselves; `bench.py --mode cli` waits for them.
    pub fn start_cli(&self, workers: usize) -> Result<CliCluster, String> {
        let cli = self.cli.as_ref().ok_or_else(|| self.cli_missing().unwrap_or_default())?;
        let dir = std::env::temp_dir().join(format!("shoal-bench-dask-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let file = dir.join("scheduler.json");
        let _ = std::fs::remove_file(&file);
        let mut cluster = CliCluster { children: Vec::new(), dir, scheduler_file: file.clone(), workers };
        let command = |args: &[&str]| {
            let mut cmd = Command::new(&cli[0]);
            cmd.args(&cli[1..]).args(args).arg("--scheduler-file").arg(&file);
            // Quiet, as bench.py's LocalCluster is; errors still reach stderr.
            cmd.env("DASK_LOGGING__DISTRIBUTED", "error").stdin(Stdio::null()).stdout(Stdio::null());
            // A group of its own: the nanny's worker process goes with it.
            cmd.process_group(0);
            cmd
        };
        let scheduler = command(&["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"])
            .spawn()
            .map_err(|e| format!("cannot start `dask scheduler`: {e}"))?;
        cluster.children.push(scheduler);
        let deadline = Instant::now() + CLI_START;
        while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\"address\"")) {
            if let Some(status) = cluster.children[0].try_wait().ok().flatten() {
                return Err(format!("`dask scheduler` exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("`dask scheduler` wrote no {} within {CLI_START:?}", file.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..workers {
            let worker = command(&["worker", "--nthreads", "1", "--nworkers", "1", "--memory-limit", "auto"])
                .spawn()
                .map_err(|e| format!("cannot start `dask worker`: {e}"))?;
            cluster.children.push(worker);
        }
        Ok(cluster)
    }

    /// One sample of `case` on a running Dask CLI cluster.
    pub fn run_cli(
        &self,
        cluster: &mut CliCluster,
        case: Case,
        sizes: &Sizes,
        dir: &Path,
        expected_letters: u64,
        expected_top: &[u64],
    ) -> DaskRun {
        if let Some(e) = cluster.exited() {
            return DaskRun { seconds: None, error: Some(e), extra: Value::Null };
        }
        let target = Target::Cli { file: &cluster.scheduler_file, workers: cluster.workers };
        self.run_on(target, case, sizes, dir, expected_letters, expected_top)
    }

    /// One sample of `case` in Dask's `mode` ("processes" or "threads").
    pub fn run(
        &self,
        case: Case,
        mode: &str,
        sizes: &Sizes,
        dir: &Path,
        expected_letters: u64,
        expected_top: &[u64],
    ) -> DaskRun {
        self.run_on(Target::Local(mode), case, sizes, dir, expected_letters, expected_top)
    }

    fn run_on(
        &self,
        target: Target<'_>,
        case: Case,
        sizes: &Sizes,
        dir: &Path,
        expected_letters: u64,
        expected_top: &[u64],
    ) -> DaskRun {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).arg(case.dask_name());
        match target {
            Target::Local(mode) => cmd.args(["--mode", mode]),
            Target::Cli { file, workers } => {
                cmd.args(["--mode", "cli", "--scheduler-file"]).arg(file).arg("--workers").arg(workers.to_string())
            }
        };
        cmd.args(["--rounds", "1", "--warmup", "1"]);
        cmd.arg("--warmup-size").arg(Sizes::warmup(case).to_string());
        cmd.arg("--timeout").arg(TIMEOUT_S.to_string());
        let n = sizes.of(case).to_string();
        match case {
            Case::CountLetters | Case::BagWordcount => cmd.arg("--dir").arg(dir).arg("--files").arg(&n),
            Case::Map | Case::Chain | Case::RoundTrip => cmd.arg("--n").arg(&n),
            Case::Tree => cmd.arg("--leaves").arg(&n),
            Case::Transfer => cmd.arg("--mb").arg(&n),
        };
        let failed = |error: String| DaskRun { seconds: None, error: Some(error), extra: Value::Null };
        let out = match cmd.stdin(Stdio::null()).output() {
            Ok(out) => out,
            Err(e) => return failed(format!("cannot start {}: {e}", self.python.display())),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')) else {
            return failed(format!("{}, no result line; stderr: {}", out.status, tail(&out.stderr)));
        };
        let json: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return failed(format!("unreadable result line ({e}): {line}")),
        };
        let extra = json.get("extra").cloned().unwrap_or(Value::Null);
        if let Some(e) = json.get("error").and_then(Value::as_str) {
            return DaskRun { seconds: None, error: Some(e.to_string()), extra };
        }
        let first = |v: Option<&Value>| v.and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_f64);
        let seconds = if case == Case::RoundTrip {
            first(extra.get("round_median_call_s"))
        } else {
            first(json.get("samples_s"))
        };
        if case == Case::CountLetters {
            let got = extra.get("total_count").and_then(Value::as_u64);
            if got != Some(expected_letters) {
                return DaskRun {
                    seconds: None,
                    error: Some(format!("counted {got:?}, expected {expected_letters}")),
                    extra,
                };
            }
        }
        if case == Case::BagWordcount {
            let got: Option<Vec<u64>> =
                extra.get("top_counts").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect());
            if got.as_deref() != Some(expected_top) {
                return DaskRun {
                    seconds: None,
                    error: Some(format!("top counts {got:?}, expected {expected_top:?}")),
                    extra,
                };
            }
        }
        DaskRun { seconds, error: None, extra }
    }
}

/// The Python virtual environment: `$SHOAL_BENCH_VENV`, or `bench/.venv`.
fn venv(bench_dir: &Path) -> PathBuf {
    std::env::var_os("SHOAL_BENCH_VENV").map(PathBuf::from).unwrap_or_else(|| bench_dir.join(".venv"))
}

/// Where a sample runs: a fresh `LocalCluster` of that mode, or the CLI
/// cluster of that scheduler file.
enum Target<'a> {
    Local(&'a str),
    Cli { file: &'a Path, workers: usize },
}

/// How long the Dask CLI scheduler may take to write its file (Python
/// imports distributed in ~2 s here, more on a loaded machine).
const CLI_START: Duration = Duration::from_secs(60);

/// How long a CLI process may take to exit after SIGTERM before SIGKILL.
const CLI_STOP: Duration = Duration::from_secs(5);

/// `dask` next to the environment's python, or `python -m dask` (the same
/// command group: the `dask` script is its entry point), if it answers.
fn find_cli(venv: &Path, python: &Path) -> Option<Vec<PathBuf>> {
    let script = venv.join("bin").join("dask");
    let candidates = [vec![script.clone()], vec![python.to_path_buf(), "-m".into(), "dask".into()]];
    candidates.into_iter().filter(|c| c[0].exists()).find(|c| {
        let mut cmd = Command::new(&c[0]);
        cmd.args(&c[1..]).args(["scheduler", "--help"]);
        run_quiet(cmd).is_ok()
    })
}

/// A Dask cluster started by its CLI: `dask scheduler` and its `dask
/// worker`s, each in a process group of its own. Dropping it (also while
/// unwinding from a panic) ends every group: SIGTERM (a nanny then stops
/// its worker), SIGKILL to whatever is left after [`CLI_STOP`]; then the
/// scheduler file goes.
pub struct CliCluster {
    children: Vec<Child>,
    dir: PathBuf,
    scheduler_file: PathBuf,
    workers: usize,
}

impl CliCluster {
    /// Why the cluster cannot serve, if one of its processes exited.
    fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().enumerate().find_map(|(i, c)| {
            let status = c.try_wait().ok().flatten()?;
            let who = if i == 0 { "dask scheduler" } else { "a dask worker" };
            Some(format!("{who} of the CLI cluster exited: {status}"))
        })
    }
}

/// The check behind `shoal-bench dask-cli-drill` (run by
/// `bench/tests/dask_cli.rs`): starts the CLI cluster, waits until each
/// worker's nanny has started its worker process, prints the process
/// groups on stdout, then panics. The cluster's drop, while unwinding,
/// must leave none of those groups alive. Exit 3 when this environment has
/// no Dask CLI.
pub fn drill(bench_dir: &Path) -> ! {
    let dask = match Dask::existing(bench_dir) {
        Ok(d) => d,
        Err(why) => {
            println!("unavailable: {why}");
            std::process::exit(3);
        }
    };
    if let Some(why) = dask.cli_missing() {
        println!("unavailable: {why}");
        std::process::exit(3);
    }
    let cluster = match dask.start_cli(2) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the Dask CLI cluster did not start: {e}");
            std::process::exit(1);
        }
    };
    let groups: Vec<u32> = cluster.children.iter().map(Child::id).collect();
    let deadline = Instant::now() + CLI_START;
    // A nanny and the worker it started share the worker's group.
    while groups[1..].iter().any(|&g| group_members(g) < 2) {
        if Instant::now() > deadline {
            eprintln!("the nannies did not start their workers within {CLI_START:?}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line: Vec<String> = groups.iter().map(u32::to_string).collect();
    println!("groups {}", line.join(" "));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    panic!("dask-cli-drill: a panic while the Dask CLI cluster runs (its drop must end every process)");
}

/// Sends `signal` to the process group `pid` leads.
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // a negative pid names the process group the child leads (it was
    // started with `process_group(0)`, so its group is its own pid, never
    // ours), and a group that is gone gives ESRCH, which is ignored.
    unsafe { libc::kill(-pid, signal) };
}

impl Drop for CliCluster {
    fn drop(&mut self) {
        // Workers first, so that they do not spend their stop looking for
        // the scheduler.
        for child in self.children.iter().rev() {
            signal_group(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + CLI_STOP;
        for child in self.children.iter_mut().rev() {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The leader may be gone while its group (a nanny's worker) is
            // not: the whole group, whatever the leader did.
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `python -c "import dask, distributed"`.
fn check_import(python: &Path) -> Result<(), String> {
    if !python.exists() {
        return Err(format!("{} does not exist", python.display()));
    }
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import dask, distributed"]);
    run_quiet(cmd).map_err(|_| format!("{} cannot import dask.distributed", python.display()))
}

/// Run to completion with output captured; `Err` with the end of its output.
fn run_quiet(mut cmd: Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        let mut text = out.stderr;
        text.extend_from_slice(&out.stdout);
        Err(format!("{}: {}", out.status, tail(&text)))
    }
}

/// The last few non-empty lines of some output, on one line.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" / ");
    if joined.is_empty() { "(no output)".into() } else { joined }
}
