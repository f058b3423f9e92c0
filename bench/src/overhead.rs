//! `overhead`: what shoal costs per task when tasks do nothing.
//!
//! | case | what is timed |
//! |---|---|
//! | map | `map` of N no-op tasks, then `gather` |
//! | tree | a binary-tree reduction over L leaves, built lazily, computed |
//! | chain | N tasks each taking the previous one's future; wait on the last |
//! | round trip | one `submit` + `result`, median over N calls |
//! | million | a lazy graph of ~1,000,000 tasks (tree of 2^19 leaves), built and computed |
//! | memory | resident bytes per task while 1,000,000 futures (and results) are held |

use shoal::prelude::*;

use crate::Opts;
use crate::table::{Samples, Table, median, secs, time, verdict};

#[shoal::task]
pub fn noop(x: u64) -> u64 {
    x
}

#[shoal::task]
pub fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// Work sizes; `--quick` shrinks them.
pub struct Sizes {
    pub map: u64,
    pub tree_leaves: u64,
    pub chain: u64,
    pub round_trips: u64,
    pub million_leaves: u64,
    pub memory_tasks: u64,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                map: 20_000,
                tree_leaves: 1 << 12,
                chain: 2_000,
                round_trips: 200,
                million_leaves: 1 << 16,
                memory_tasks: 100_000,
            }
        } else {
            Sizes {
                map: 100_000,
                tree_leaves: 1 << 16,
                chain: 10_000,
                round_trips: 1_000,
                million_leaves: 1 << 19,
                memory_tasks: 1_000_000,
            }
        }
    }
}

pub fn map_gather(client: &Client, n: u64) -> shoal::Result<()> {
    let futures = client.map(noop, 0..n)?;
    let values = client.gather(&futures)?;
    expect(values.len() as u64 == n && values.last() == Some(&(n - 1)), "map results")
}

/// Build a pairwise reduction over `leaves` lazily; the root.
pub fn build_tree(leaves: u64) -> shoal::Result<Lazy<u64>> {
    let mut level: Vec<Lazy<u64>> = (0..leaves).map(|i| noop.lazy(i)).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            next.push(match pair {
                [a, b] => add.lazy((a, b)),
                [a] => a.clone(),
                _ => unreachable!("chunks(2) yields one or two"),
            });
        }
        level = next;
    }
    level.pop().ok_or_else(|| shoal::Error::msg("empty tree"))
}

pub fn tree(client: &Client, leaves: u64) -> shoal::Result<()> {
    let root = build_tree(leaves)?;
    let sum = root.compute(client)?;
    expect(sum == leaves * (leaves - 1) / 2, "tree sum")
}

pub fn chain(client: &Client, n: u64) -> shoal::Result<()> {
    let mut last = client.submit(noop, 1)?;
    for i in 1..n {
        // add(prev, 0) keeps the value but makes each key distinct.
        last = client.submit(add, (&last, i % 2))?;
    }
    let v = last.result()?;
    expect(v == 1 + n / 2, "chain value")
}

/// Seconds of each of `n` sequential submit + result calls.
pub fn round_trips(client: &Client, n: u64) -> shoal::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (d, v) = time(|| client.submit(noop, i).and_then(|f| f.result()));
        expect(v? == i, "round trip value")?;
        out.push(d.as_secs_f64());
    }
    Ok(out)
}

/// Resident bytes of this process.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident bytes per task while `n` futures and their results are held.
pub fn memory_per_task(client: &Client, n: u64) -> shoal::Result<Option<f64>> {
    let before = rss_bytes();
    let futures = client.map(noop, 0..n)?;
    shoal::wait(&futures)?;
    let after = rss_bytes();
    expect(futures.len() as u64 == n, "futures")?;
    drop(futures);
    Ok(before.zip(after).map(|(b, a)| a.saturating_sub(b) as f64 / n as f64))
}

fn expect(ok: bool, what: &str) -> shoal::Result<()> {
    if ok { Ok(()) } else { Err(shoal::Error::msg(format!("wrong {what}"))) }
}

/// Targets on a 2-core machine, per mode.
struct Targets {
    tasks_per_s: f64,
    hop_s: Option<f64>,
    round_trip_s: f64,
    million_s: Option<f64>,
    bytes_per_task: Option<f64>,
}

/// The threads mode.
const THREADS: Targets = Targets {
    tasks_per_s: 1_000_000.0,
    hop_s: Some(5e-6),
    round_trip_s: 20e-6,
    million_s: Some(3.0),
    bytes_per_task: Some(256.0),
};

/// The processes mode (issue 7 raised issue 3's 200,000/s): map and round trip only.
const PROCESSES: Targets =
    Targets { tasks_per_s: 300_000.0, hop_s: None, round_trip_s: 50e-6, million_s: None, bytes_per_task: None };

/// The cluster mode (issue 8): map and round trip through the scheduler.
const CLUSTER: Targets =
    Targets { tasks_per_s: 100_000.0, hop_s: None, round_trip_s: 200e-6, million_s: None, bytes_per_task: None };

/// The case names `--only` takes.
pub const CASES: [&str; 6] = ["map", "tree", "chain", "round-trip", "million", "memory"];

/// `processes`: run on that many worker processes (one thread each)
/// instead of the threads mode; `scheduler`: on the cluster of the
/// scheduler at that URL (start it and its workers first).
/// `only`: just these cases (names from [`CASES`]; empty: all).
pub fn run(opts: &Opts, processes: Option<usize>, scheduler: Option<&str>, only: &[String]) -> shoal::Result<()> {
    let sz = Sizes::new(opts.quick);
    let wanted = |case: &str| only.is_empty() || only.iter().any(|o| o == case);
    let (client, targets) = match (scheduler, processes) {
        (Some(url), _) => (Client::connect(url)?, CLUSTER),
        (None, Some(p)) => (Client::processes(p)?, PROCESSES),
        (None, None) => (Client::local()?, THREADS),
    };
    // Memory first, while the allocator holds nothing from other cases.
    let bytes_per_task = if wanted("memory") { memory_per_task(&client, sz.memory_tasks)? } else { None };
    let (mut map, mut tree_s, mut chain_s, mut million, mut million_build) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let mut rt_medians = Vec::new();
    for round in 0..opts.rounds {
        eprintln!("  round {}/{}", round + 1, opts.rounds);
        if wanted("map") {
            map.push(time(|| map_gather(&client, sz.map)).0);
        }
        if wanted("tree") {
            tree_s.push(time(|| tree(&client, sz.tree_leaves)).0);
        }
        if wanted("chain") {
            chain_s.push(time(|| chain(&client, sz.chain)).0);
        }
        if wanted("round-trip") {
            rt_medians.push(median(&round_trips(&client, sz.round_trips)?));
        }
        if !wanted("million") {
            continue;
        }
        let (d, root) = time(|| build_tree(sz.million_leaves));
        let root = root?;
        million_build.push(d);
        let (d, v) = time(|| root.compute(&client));
        v?;
        million.push(d + million_build.0.last().map(|s| std::time::Duration::from_secs_f64(*s)).unwrap_or_default());
        drop(root);
    }
    let tasks_per_s = sz.map as f64 / map.median();
    let tree_tasks = 2 * sz.tree_leaves - 1;
    let hop = chain_s.median() / sz.chain as f64;
    let rt = median(&rt_medians);
    let million_tasks = 2 * sz.million_leaves - 1;
    println!(
        "\noverhead: {}, median of {} rounds{}",
        match (scheduler, processes) {
            (Some(url), _) => format!("cluster mode at {url}, {} worker threads", client.nthreads()),
            (None, Some(p)) => format!("processes mode, {p} worker processes of 1 thread"),
            (None, None) => format!("{} threads", client.nthreads()),
        },
        opts.rounds,
        if opts.quick { " (quick sizes)" } else { "" }
    );
    let mut t = Table::new(&["case", "size", "median", "min", "max", "per task", "figure", "target", ""]);
    if wanted("map") {
        t.row(vec![
            "map + gather".into(),
            format!("{} tasks", sz.map),
            secs(map.median()),
            secs(map.min()),
            secs(map.max()),
            secs(map.median() / sz.map as f64),
            format!("{tasks_per_s:.0} tasks/s"),
            format!("≥ {:.0}/s", targets.tasks_per_s),
            verdict(tasks_per_s >= targets.tasks_per_s),
        ]);
    }
    if wanted("tree") {
        t.row(vec![
            "tree reduction (lazy)".into(),
            format!("{tree_tasks} tasks"),
            secs(tree_s.median()),
            secs(tree_s.min()),
            secs(tree_s.max()),
            secs(tree_s.median() / tree_tasks as f64),
            format!("{:.0} tasks/s", tree_tasks as f64 / tree_s.median()),
            String::new(),
            String::new(),
        ]);
    }
    if wanted("chain") {
        t.row(vec![
            "chain".into(),
            format!("{} hops", sz.chain),
            secs(chain_s.median()),
            secs(chain_s.min()),
            secs(chain_s.max()),
            secs(hop),
            format!("{} per hop", secs(hop)),
            targets.hop_s.map(|t| format!("≤ {}", secs(t))).unwrap_or_default(),
            targets.hop_s.map(|t| verdict(hop <= t)).unwrap_or_default(),
        ]);
    }
    if wanted("round-trip") {
        t.row(vec![
            "submit + result".into(),
            format!("{} calls", sz.round_trips),
            secs(rt),
            secs(rt_medians.iter().copied().fold(f64::INFINITY, f64::min)),
            secs(rt_medians.iter().copied().fold(0.0, f64::max)),
            secs(rt),
            format!("{} round trip", secs(rt)),
            format!("≤ {}", secs(targets.round_trip_s)),
            verdict(rt <= targets.round_trip_s),
        ]);
    }
    if wanted("million") {
        t.row(vec![
            "million-task lazy graph".into(),
            format!("{million_tasks} tasks"),
            secs(million.median()),
            secs(million.min()),
            secs(million.max()),
            secs(million.median() / million_tasks as f64),
            format!("build {} of it", secs(million_build.median())),
            targets.million_s.map(|t| format!("≤ {t} s")).unwrap_or_default(),
            match targets.million_s {
                Some(t) if !opts.quick => verdict(million.median() <= t),
                _ => String::new(),
            },
        ]);
    }
    match bytes_per_task {
        Some(b) => t.row(vec![
            "memory, futures held".into(),
            format!("{} futures", sz.memory_tasks),
            String::new(),
            String::new(),
            String::new(),
            format!("{b:.0} B"),
            format!("{b:.0} bytes per task"),
            targets.bytes_per_task.map(|t| format!("≤ {t} B")).unwrap_or_default(),
            targets.bytes_per_task.map(|t| verdict(b <= t)).unwrap_or_default(),
        ]),
        None if wanted("memory") => t.row(vec!["memory, futures held".into(), "no /proc/self/statm".into()]),
        None => {}
    }
    t.print();
    Ok(())
}
