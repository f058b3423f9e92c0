//! A cluster for the benchmarks, in this process: a scheduler server (on a
//! thread; its byte counters readable), worker processes (this binary,
//! started with `SHOAL_WORKER`), and a client — on loopback, or across
//! network namespaces joined by veth links when running as root.

use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal::prelude::*;
use shoal::{ClientOptions, ClusterOptions};
use shoal_net::server::Placement;
use shoal_net::server::{self, ServerConfig, ServerHandle};

/// The namespaces' subnet (private, inside them only; not the tests').
pub const SUBNET: &str = "10.231.9";

/// Where the two worker machines are.
pub enum Site {
    Loopback,
    Namespaces(Namespaces),
}

impl Site {
    pub fn namespaces() -> Result<Site, String> {
        make_namespaces().map(Site::Namespaces)
    }

    pub fn ns(&self, role: &str) -> &str {
        match self {
            Site::Loopback => "",
            Site::Namespaces(n) => &n.names[["s", "a", "b"].iter().position(|r| *r == role).unwrap_or(0)],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Site::Loopback => "loopback",
            Site::Namespaces(_) => "veth + bridge (netns)",
        }
    }

    /// The scheduler's address, and each machine's.
    pub fn hosts(&self) -> (String, String, String) {
        match self {
            Site::Loopback => ("127.0.0.1".into(), "127.0.0.1".into(), "127.0.0.1".into()),
            Site::Namespaces(_) => (format!("{SUBNET}.1"), format!("{SUBNET}.2"), format!("{SUBNET}.3")),
        }
    }

    /// A command run on machine `role` ("a" or "b").
    pub fn command(&self, role: &str, program: &str) -> Command {
        match self {
            Site::Loopback => Command::new(program),
            Site::Namespaces(_) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", self.ns(role), program]);
                c
            }
        }
    }
}

/// A running cluster: scheduler, workers (killed on drop) and a client.
pub struct Cluster {
    pub server: ServerHandle,
    pub client: Client,
    workers: Children,
}

impl Cluster {
    /// A scheduler with one worker process of `threads` threads on each of
    /// `machines` (roles "a", "b" of the site; on loopback, any number of
    /// machines), and a client. The cluster has a secret (a scheduler off
    /// loopback needs one).
    pub fn start(site: &Site, machines: &[&str], threads: usize) -> shoal::Result<Cluster> {
        Cluster::start_placing(site, machines, threads, Placement::Locality, true)
    }

    /// As [`Cluster::start`], with the scheduler placing tasks by
    /// `placement`, weighing transfers or not (the `locality` benchmark
    /// compares them).
    pub fn start_placing(
        site: &Site,
        machines: &[&str],
        threads: usize,
        placement: Placement,
        weigh_transfers: bool,
    ) -> shoal::Result<Cluster> {
        let start_err = |e: String| shoal::Error::Start(e);
        let secret_file = std::env::temp_dir().join(format!("shoal-bench-secret-{}", std::process::id()));
        std::fs::write(&secret_file, format!("bench {:?}", Instant::now()))
            .map_err(|e| start_err(format!("cannot write the secret file: {e}")))?;
        let secret = shoal_net::Secret::from_file(&secret_file).map_err(|e| start_err(e.to_string()))?;
        let server = server::spawn(ServerConfig {
            host: site.hosts().0,
            port: 0,
            secret: Some(secret),
            dashboard: None,
            placement,
            weigh_transfers,
            ..ServerConfig::default()
        })
        .map_err(|e| start_err(e.to_string()))?;
        let exe = std::env::current_exe().map_err(|e| start_err(e.to_string()))?;
        let mut workers = Children(Vec::new());
        for role in machines {
            let child = site
                .command(role, &exe.to_string_lossy())
                .env("SHOAL_WORKER", server.url())
                .env("SHOAL_WORKER_THREADS", threads.to_string())
                .env("SHOAL_SECRET_FILE", &secret_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| start_err(format!("cannot start a worker: {e}")))?;
            workers.0.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.workers() < machines.len() {
            if Instant::now() > deadline {
                let _ = std::fs::remove_file(&secret_file);
                return Err(start_err(format!("only {} of {} workers connected", server.workers(), machines.len())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let options = ClusterOptions { secret_file: Some(secret_file.clone()), ..ClusterOptions::default() };
        let client = Client::connect_with(&server.url(), options, ClientOptions::default());
        let _ = std::fs::remove_file(&secret_file);
        Ok(Cluster { server, client: client?, workers })
    }
}

impl Cluster {
    /// The worker processes' ids (their CPU time is the cluster's work).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.0.iter().map(Child::id).collect()
    }
}

/// Child processes, killed on drop.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The three namespaces; deleted on drop.
pub struct Namespaces {
    pub names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `s` (the bridge at .1), `a` (.2) and `b` (.3), each machine's `eth0`
/// a veth linked to a port of the bridge in `s` (as tests/netns.rs).
pub fn make_namespaces() -> Result<Namespaces, String> {
    if !rustix::process::getuid().is_root() {
        return Err("not running as root".into());
    }
    let tag = std::process::id();
    let names: Vec<String> = ["s", "a", "b"].iter().map(|r| format!("shoalbench{tag}{r}")).collect();
    let mut made = Namespaces { names: Vec::new() };
    for name in &names {
        ip(&["netns", "add", name])?;
        made.names.push(name.clone());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
    }
    let s = &names[0];
    ip(&["-n", s, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", s, "link", "set", "br0", "up"])?;
    ip(&["-n", s, "addr", "add", &format!("{SUBNET}.1/24"), "dev", "br0"])?;
    for (machine, port, host) in [(&names[1], "va", 2), (&names[2], "vb", 3)] {
        ip(&["-n", s, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", machine])?;
        ip(&["-n", s, "link", "set", port, "master", "br0"])?;
        ip(&["-n", s, "link", "set", port, "up"])?;
        ip(&["-n", machine, "addr", "add", &format!("{SUBNET}.{host}/24"), "dev", "eth0"])?;
        ip(&["-n", machine, "link", "set", "eth0", "up"])?;
    }
    Ok(made)
}

/// Moves the calling thread (and the threads it starts from now on) into
/// the namespace.
pub fn enter(name: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/run/netns/{name}")).map_err(|e| format!("open /run/netns/{name}: {e}"))?;
    // SAFETY: `setns` on a descriptor this function owns (open for the
    // call's duration) changes only the calling thread's network namespace;
    // no memory is involved.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns into {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The load averages, as `uptime` gives them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
