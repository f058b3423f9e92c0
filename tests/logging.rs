//! Logs go through `tracing`, and `RUST_LOG` is honoured: with
//! `RUST_LOG=shoal=debug` a program's stderr shows each task's run, result,
//! failure and retry. Checked on a child process (this test binary run
//! again), since a process has one global subscriber.

use std::process::Command;

use shoal::prelude::*;

#[shoal::task]
fn double(x: u64) -> u64 {
    x * 2
}

#[shoal::task]
fn refuse(x: u64) -> shoal::Result<u64> {
    Err(shoal::Error::msg(format!("no {x}")))
}

const CHILD: &str = "SHOAL_TEST_LOGGING_CHILD";

/// The job the child runs (does nothing unless it is the child).
#[test]
fn child_job() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    for client in [Client::threads(2).unwrap(), Client::processes(1).unwrap()] {
        assert_eq!(client.submit(double, 21u64).unwrap().result().unwrap(), 42);
        let failing = client.submit_with(refuse, 7u64, &SubmitOptions::default().retries(1)).unwrap();
        assert!(failing.result().is_err());
    }
}

fn run_child(rust_log: Option<&str>) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["child_job", "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the child job failed:\n{stderr}");
    stderr
}

#[test]
fn rust_log_shoal_debug_shows_the_task_events() {
    let logs = run_child(Some("shoal=debug"));
    for needle in ["run", "finished", "failed", "retried after a failure", "double-", "refuse-", "no 7"] {
        assert!(logs.contains(needle), "{needle:?} missing from the logs:\n{logs}");
    }
    // Both modes log: the processes mode's driver runs in the client too.
    assert!(logs.matches("retried after a failure").count() >= 2, "{logs}");
}

#[test]
fn without_rust_log_task_events_are_not_shown() {
    let logs = run_child(None);
    assert!(!logs.contains("finished") && !logs.contains("retried"), "{logs}");
}
