//! The dashboard in a real browser: headless Chromium loads the page while
//! a job runs, and the rendered DOM must show the task stream's bars,
//! progress counts that move between two loads, and worker rows; a
//! screenshot is saved (the README's picture).
//!
//! The same in the cluster mode: the page is the scheduler's, which names
//! the tasks with the names its client sent.
//!
//! Needs `chromium` (or `SHOAL_CHROMIUM=/path/to/chrome`), so it is ignored
//! by default; `.ci/run` installs Chromium and runs it with `--ignored`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions, ProgressBar};

#[shoal::task]
fn simulate(step: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(15 + step % 10));
    step
}

#[shoal::task]
fn summarize(step: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(8));
    step * 2
}

fn chromium() -> String {
    std::env::var("SHOAL_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Runs headless Chromium on `url` with `args`; its stdout.
fn browse(url: &str, args: &[&str]) -> String {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::SeqCst);
    let profile = std::env::temp_dir().join(format!("shoal-chromium-{}-{call}", std::process::id()));
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        // The page draws its first frame while it loads (a script from the
        // server with the state now), so the DOM is dumped at its load
        // event; the timeout only bounds a page that would not load.
        .arg("--timeout=10000")
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("could not run {} (install chromium or set SHOAL_CHROMIUM): {e}", chromium()));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `attr` in every element whose opening tag holds
/// `marker`.
fn attrs<'a>(dom: &'a str, marker: &str, attr: &str) -> Vec<&'a str> {
    dom.match_indices(marker)
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>')?];
            let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
            Some(&tag[start..start + tag[start..].find('"')?])
        })
        .collect()
}

fn done_of(dom: &str, name: &str) -> u64 {
    let names = attrs(dom, "class=\"progress-row\"", "data-name");
    let done = attrs(dom, "class=\"progress-row\"", "data-done");
    let at = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no progress row for {name}:\n{dom}"));
    done[at].parse().unwrap()
}

fn check_page(client: &Client, screenshot: Option<&Path>) {
    let url = client.dashboard_url().expect("the dashboard is on");
    check_page_at(client, &url, screenshot);
}

/// Loads the dashboard at `url` while `client` runs a job.
fn check_page_at(client: &Client, url: &str, screenshot: Option<&Path>) {
    let url = url.to_string();
    // Work that goes on until the checks are done, two task names.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut batches = 0;
            while !stop.load(Ordering::SeqCst) {
                let a = client.map(simulate, batches * 100..(batches + 1) * 100).unwrap();
                let b = client.map(summarize, batches * 100..(batches + 1) * 100).unwrap();
                assert_eq!(client.gather(&a).unwrap().len() + client.gather(&b).unwrap().len(), 200);
                batches += 1;
            }
            batches
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let first = browse(&url, &["--dump-dom"]);
    let bars = attrs(&first, "id=\"stream\"", "data-bars");
    let bars: u64 = bars.first().unwrap_or_else(|| panic!("no task stream drawn:\n{first}")).parse().unwrap();
    assert!(bars > 0, "the task stream has bars");
    assert!(first.matches("class=\"bar\"").count() as u64 == bars, "as many bars in the DOM as the page counted");
    assert!(first.contains("data-name=\"simulate\""), "bars and rows carry task names");
    assert!(!attrs(&first, "class=\"worker-row\"", "data-worker").is_empty(), "worker rows exist:\n{first}");
    let done_first = done_of(&first, "simulate");
    std::thread::sleep(Duration::from_millis(1000));
    let second = browse(&url, &["--dump-dom"]);
    let done_second = done_of(&second, "simulate");
    assert!(done_second > done_first, "progress moved between two loads: {done_first} then {done_second}");
    if let Some(path) = screenshot {
        let _ = std::fs::remove_file(path);
        browse(&url, &[&format!("--screenshot={}", path.display()), "--window-size=1280,900"]);
        let png = std::fs::read(path).expect("a screenshot was saved");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture");
    }
    stop.store(true, Ordering::SeqCst);
    assert!(worker.join().unwrap() > 0);
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
#[ignore = "needs chromium: .ci/run installs it and runs this with --ignored"]
fn the_dashboard_renders_live_in_chromium_in_the_threads_mode() {
    let options = ClientOptions::default().progress(ProgressBar::Never).dashboard(loopback());
    let client = Client::threads_with(4, options).unwrap();
    // The README's picture.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dash/dashboard.png");
    check_page(&client, Some(&shot));
}

#[test]
#[ignore = "needs chromium: .ci/run installs it and runs this with --ignored"]
fn the_dashboard_renders_live_in_chromium_in_the_processes_mode() {
    let options = ClientOptions::default().progress(ProgressBar::Never).dashboard(loopback());
    let client =
        Client::processes_with(ProcessesOptions { workers: 3, ..ProcessesOptions::default() }, options).unwrap();
    check_page(&client, None);
}

/// A cluster worker: this test binary with the worker role; killed on drop.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs chromium: .ci/run installs it and runs this with --ignored"]
fn the_scheduler_s_dashboard_renders_live_in_chromium_in_the_cluster_mode() {
    use shoal_net::server::{self, ServerConfig};
    let server =
        server::spawn(ServerConfig { port: 0, dashboard: Some(loopback()), ..ServerConfig::default() }).unwrap();
    let workers: Vec<Worker> = (0..2)
        .map(|_| {
            let child = Command::new(std::env::current_exe().unwrap())
                .env("SHOAL_WORKER", server.url())
                .env("SHOAL_WORKER_THREADS", "2")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            Worker(child)
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.workers() < workers.len() {
        assert!(std::time::Instant::now() < deadline, "the workers did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let options = ClientOptions::default().progress(ProgressBar::Never);
    let client = Client::connect_with(&server.url(), shoal::ClusterOptions::default(), options).unwrap();
    let url = server.dashboard_url().expect("the scheduler serves its dashboard");
    // A picture of it, for whoever looks at the test's output.
    let shot = std::env::temp_dir().join("shoal-cluster-dashboard.png");
    check_page_at(&client, &url, Some(&shot));
}
