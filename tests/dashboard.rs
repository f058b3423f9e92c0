//! The dashboard's server, `/metrics` and performance reports, in the
//! threads and processes modes (the page in a real browser is
//! `dashboard_browser.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions, ProgressBar};

#[shoal::task]
fn square(x: u64) -> u64 {
    x * x
}

#[shoal::task]
fn checked(x: u64) -> Result<u64, String> {
    if x.is_multiple_of(5) { Err(format!("{x} is a multiple of 5")) } else { Ok(x) }
}

#[shoal::task]
fn sum_all(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

fn options() -> ClientOptions {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ClientOptions::default().progress(ProgressBar::Never).dashboard(loopback)
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().to_string()
}

/// One sample of the text format: `name{label="v",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the Prometheus / OpenMetrics text format strictly: every line a
/// `# HELP`, `# TYPE` (of a known type), `# EOF` (last), or a sample whose
/// family was typed before it.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "info", "unknown"].contains(&kind), "{line}");
            typed.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = body
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted label value");
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name {name:?}");
        let family = typed
            .iter()
            .find(|(f, kind)| name == *f || (kind == "counter" && name.strip_suffix("_total") == Some(f.as_str())));
        assert!(family.is_some(), "{name} has no # TYPE before it");
        samples.push(Sample { name, labels, value });
    }
    samples
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v)))
        .unwrap_or_else(|| panic!("no {name} {label:?} in {samples:?}"))
        .value
}

fn check_metrics(client: &Client) {
    let url = client.dashboard_url().expect("the dashboard is on");
    let addr = host_of(&url);
    let futures = client.map(checked, 0..50u64).unwrap();
    shoal::wait(&futures).unwrap();
    let squares = client.map(square, 0..20u64).unwrap();
    let total = client.submit(sum_all, squares.clone()).unwrap();
    assert_eq!(total.result().unwrap(), (0..20u64).map(|x| x * x).sum::<u64>());
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    assert_eq!(value(&samples, "shoal_tasks_finished_total", Some(("name", "checked"))), 40.0);
    assert_eq!(value(&samples, "shoal_tasks_failed_total", Some(("name", "checked"))), 10.0);
    assert_eq!(value(&samples, "shoal_tasks_finished_total", Some(("name", "square"))), 20.0);
    assert_eq!(value(&samples, "shoal_tasks_finished_total", Some(("name", "sum_all"))), 1.0);
    assert_eq!(value(&samples, "shoal_tasks_submitted_total", None), 71.0);
    // Held futures: 40 + 20 + 1 results in memory, 10 failures.
    assert_eq!(value(&samples, "shoal_tasks", Some(("state", "memory"))), 61.0);
    assert_eq!(value(&samples, "shoal_tasks", Some(("state", "erred"))), 10.0);
    assert_eq!(value(&samples, "shoal_workers", None) as usize, client.worker_pids().len().max(1));
    assert!(value(&samples, "shoal_scheduler_events_total", None) >= 71.0);
    drop((futures, squares, total));
}

#[test]
fn metrics_parse_and_agree_with_the_job_in_the_threads_mode() {
    let client = Client::threads_with(2, options()).unwrap();
    check_metrics(&client);
    let (_, text) = get(&host_of(&client.dashboard_url().unwrap()), "/metrics");
    assert!(!text.contains("shoal_store_bytes"), "no store in the threads mode");
}

#[test]
fn metrics_parse_and_agree_with_the_job_in_the_processes_mode() {
    let client =
        Client::processes_with(ProcessesOptions { workers: 2, ..ProcessesOptions::default() }, options()).unwrap();
    check_metrics(&client);
    let (_, text) = get(&host_of(&client.dashboard_url().unwrap()), "/metrics");
    let samples = parse_metrics(&text);
    assert!(value(&samples, "shoal_transferred_bytes_total", None) > 0.0, "results came from worker processes");
    value(&samples, "shoal_store_bytes", Some(("where", "memory")));
}

#[test]
fn events_stream_frames_with_runs_progress_and_workers() {
    let client = Client::threads_with(2, options()).unwrap();
    let futures = client.map(square, 0..100u64).unwrap();
    client.gather(&futures).unwrap();
    let addr = host_of(&client.dashboard_url().unwrap());
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let frame = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before a frame");
        if let Some(data) = line.strip_prefix("data: ") {
            break data.trim().to_string();
        }
    };
    // The first frame carries the recent runs, the progress of `square`,
    // and the one worker of the threads mode.
    assert!(frame.contains(r#""progress":[["square",100,0,0,0,100]]"#), "{frame}");
    assert!(frame.matches("],[").count() >= 99, "a hundred runs listed: {frame}");
    assert!(frame.contains(&format!(r#""workers":[[0,{},2,"#, std::process::id())), "{frame}");
}

#[test]
fn a_non_loopback_dashboard_requires_its_token_and_is_read_only() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let client = Client::threads_with(1, ClientOptions::default().progress(ProgressBar::Never).dashboard(any)).unwrap();
    let url = client.dashboard_url().unwrap();
    let token = url.split("token=").nth(1).expect("a token in the URL").to_string();
    assert_eq!(token.len(), 32);
    let port = host_of(&url).rsplit(':').next().unwrap().to_string();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(get(&addr, "/").0, 401);
    assert_eq!(get(&addr, "/metrics").0, 401);
    assert_eq!(get(&addr, "/events").0, 401);
    assert_eq!(get(&addr, &format!("/metrics?token={}x", &token[..31])).0, 401);
    assert_eq!(get(&addr, &format!("/?token={token}")).0, 200);
    assert_eq!(get(&addr, &format!("/metrics?token={token}")).0, 200);
    // Read-only: nothing but GET is routed.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "POST /?token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
}

#[test]
fn the_performance_report_is_one_offline_file_with_every_task_name() {
    let dir = std::env::temp_dir().join(format!("shoal-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.html");
    let client = Client::threads_with(2, ClientOptions::default().progress(ProgressBar::Never)).unwrap();
    // Before the report: not in it.
    client.gather(&client.map(checked, 1..5u64).unwrap()).unwrap();
    {
        let _report = client.performance_report(&path);
        let squares = client.map(square, 0..300u64).unwrap();
        let total = client.submit(sum_all, squares).unwrap();
        total.result().unwrap();
    }
    let html = std::fs::read_to_string(&path).expect("written when the guard dropped");
    for name in ["square", "sum_all"] {
        assert!(html.contains(&format!("[\"{name}\",")), "{name} has a row in the report");
    }
    assert!(!html.contains("\"checked\""), "what ran before the report is not in it");
    assert!(html.contains(r#""total_runs":301"#));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("static/"));
    assert!(html.contains("uPlot"), "the charting library is inlined");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_dashboard_address_is_refused_with_what_to_do() {
    let client = Client::threads_with(1, options()).unwrap();
    let taken: SocketAddr = host_of(&client.dashboard_url().unwrap()).parse().unwrap();
    let err = Client::threads_with(1, ClientOptions::default().dashboard(taken)).err().expect("the port is taken");
    assert!(err.to_string().contains("could not listen on"), "{err}");
}

#[test]
fn dropping_the_client_with_a_page_open_does_not_wait_for_the_page() {
    let client = Client::threads_with(1, options()).unwrap();
    let addr = host_of(&client.dashboard_url().unwrap());
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before a frame");
    }
    let start = std::time::Instant::now();
    drop(client);
    assert!(start.elapsed() < Duration::from_secs(5), "the client's drop waited for an open page");
    let mut rest = Vec::new();
    // The server closed the stream (a read error is a reset: closed too).
    let _ = reader.read_to_end(&mut rest);
    assert!(start.elapsed() < Duration::from_secs(5), "the stream was closed");
}

/// Run by `the_environment_turns_the_dashboard_on` in a process of its own
/// (the environment is process-wide): what `SHOAL_DASHBOARD` does.
#[test]
#[ignore = "run by the_environment_turns_the_dashboard_on, with SHOAL_DASHBOARD set"]
fn environment_child() {
    let expect = std::env::var("SHOAL_TEST_EXPECT").expect("run by the_environment_turns_the_dashboard_on");
    match (expect.as_str(), Client::threads(1)) {
        ("on", Ok(client)) => {
            let url = client.dashboard_url().expect("SHOAL_DASHBOARD turns the dashboard on");
            assert_eq!(get(&host_of(&url), "/metrics").0, 200);
        }
        ("refused", Err(e)) => assert!(e.to_string().contains("SHOAL_DASHBOARD=\"nonsense\""), "{e}"),
        (expect, got) => panic!("expected {expect}, got {:?}", got.map(|c| c.dashboard_url())),
    }
}

#[test]
fn the_environment_turns_the_dashboard_on() {
    for (value, expect) in [("127.0.0.1:0", "on"), ("nonsense", "refused")] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "environment_child", "--ignored", "--test-threads=1"])
            .env("SHOAL_DASHBOARD", value)
            .env("SHOAL_TEST_EXPECT", expect)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{value}: {text}");
    }
}
