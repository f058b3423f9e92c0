//! The Dask half: the Python virtual environment, and one `bench.py` run per
//! sample (a fresh `LocalCluster`, one small untimed warm-up round, one timed
//! round), read back from the JSON line it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{Case, Sizes};

/// Each `bench.py` run stops itself after this many seconds, reporting an
/// error (the longest full-size sample, count_letters on Dask threads, takes
/// ~100 s here).
const TIMEOUT_S: u32 = 900;

pub struct Dask {
    python: PathBuf,
    script: PathBuf,
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
        let venv = std::env::var_os("SHOAL_BENCH_VENV").map(PathBuf::from).unwrap_or_else(|| bench_dir.join(".venv"));
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
        Ok(Dask { python, script })
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
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).arg(case.dask_name()).args(["--mode", mode, "--rounds", "1", "--warmup", "1"]);
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
