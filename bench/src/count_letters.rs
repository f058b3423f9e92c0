//! `count-letters`: the headline job — sequential, rayon `par_iter` (the
//! in-process limit) and shoal threads, alternated round by round.

#[path = "../../examples/common/letters.rs"]
mod letters;

use rayon::prelude::*;
use shoal::prelude::*;

use crate::Opts;
use crate::cluster::{Cluster, Site, load};
use crate::table::{Samples, Table, secs, time, verdict};

#[shoal::task]
fn count_letters(path: String) -> shoal::Result<u64> {
    Ok(letters::count_file(&path)?)
}

/// shoal within this fraction of rayon meets the threads-mode target.
const TARGET_VS_RAYON: f64 = 1.05;
/// The cluster's target (issue 8): within 15% of rayon.
const CLUSTER_TARGET_VS_RAYON: f64 = 1.15;

pub fn files(opts: &Opts) -> shoal::Result<Vec<String>> {
    let (n, size) = if opts.quick { (20, 2_000_000) } else { (100, 10_000_000) };
    let dir = letters::default_dir(n, size);
    eprintln!("count-letters: {n} files of {size} bytes in {}", dir.display());
    Ok(letters::ensure_files(&dir, n, size)?)
}

pub fn sequential(files: &[String]) -> shoal::Result<u64> {
    let mut total = 0;
    for f in files {
        total += letters::count_file(f)?;
    }
    Ok(total)
}

pub fn rayon(files: &[String]) -> shoal::Result<u64> {
    let counts: std::io::Result<Vec<u64>> = files.par_iter().map(|f| letters::count_file(f)).collect();
    Ok(counts?.into_iter().sum())
}

pub fn shoal(client: &Client, files: &[String]) -> shoal::Result<u64> {
    let futures = client.map(count_letters, files.iter().cloned())?;
    Ok(client.gather(&futures)?.into_iter().sum())
}

pub fn run(opts: &Opts) -> shoal::Result<()> {
    let files = files(opts)?;
    let client = Client::local()?;
    let expected = sequential(&files)?;
    let (mut seq, mut ray, mut sho) = (Samples::default(), Samples::default(), Samples::default());
    for round in 0..opts.rounds {
        eprintln!("  round {}/{}", round + 1, opts.rounds);
        let (d, n) = time(|| sequential(&files));
        check(n?, expected, "sequential")?;
        seq.push(d);
        let (d, n) = time(|| rayon(&files));
        check(n?, expected, "rayon")?;
        ray.push(d);
        let (d, n) = time(|| shoal(&client, &files));
        check(n?, expected, "shoal")?;
        sho.push(d);
    }
    println!("\ncount-letters: {} files, {} threads, median of {} rounds", files.len(), client.nthreads(), opts.rounds);
    let mut t = Table::new(&["runner", "median", "min", "max", "speedup vs sequential"]);
    for (name, s) in [("sequential", &seq), ("rayon par_iter", &ray), ("shoal threads", &sho)] {
        t.row(vec![
            name.into(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            format!("{:.2}x", seq.median() / s.median()),
        ]);
    }
    t.print();
    let ratio = sho.median() / ray.median();
    let mut r = Table::new(&["ratio", "value", "target", ""]);
    r.row(vec![
        "shoal ÷ rayon".into(),
        format!("{ratio:.3}"),
        format!("≤ {TARGET_VS_RAYON}"),
        verdict(ratio <= TARGET_VS_RAYON),
    ]);
    r.row(vec!["sequential ÷ shoal".into(), format!("{:.2}", seq.median() / sho.median()), "".into(), "".into()]);
    r.print();
    Ok(())
}

/// The same job on a loopback cluster — a scheduler in this process and two
/// worker machines of one process of one thread each (this binary with
/// `SHOAL_WORKER`) — against rayon on every core, alternated round by round.
pub fn run_cluster(opts: &Opts) -> shoal::Result<()> {
    let files = files(opts)?;
    let cluster = Cluster::start(&Site::Loopback, &["a", "b"], 1)?;
    let expected = sequential(&files)?;
    let (mut ray, mut sho) = (Samples::default(), Samples::default());
    let load_before = load();
    for round in 0..opts.rounds {
        eprintln!("  round {}/{}", round + 1, opts.rounds);
        let (d, n) = time(|| rayon(&files));
        check(n?, expected, "rayon")?;
        ray.push(d);
        let (d, n) = time(|| shoal(&cluster.client, &files));
        check(n?, expected, "shoal cluster")?;
        sho.push(d);
    }
    println!(
        "\ncount-letters on a loopback cluster: {} files, scheduler + 2 worker machines × 1 process × 1 thread vs \
         rayon on {} threads, median of {} rounds (load before {load_before}, after {})",
        files.len(),
        rayon::current_num_threads(),
        opts.rounds,
        load()
    );
    let mut t = Table::new(&["runner", "median", "min", "max", "÷ rayon"]);
    for (name, s) in [("rayon par_iter", &ray), ("shoal cluster (loopback)", &sho)] {
        t.row(vec![
            name.into(),
            secs(s.median()),
            secs(s.min()),
            secs(s.max()),
            format!("{:.3}", s.median() / ray.median()),
        ]);
    }
    t.print();
    let ratio = sho.median() / ray.median();
    let mut r = Table::new(&["ratio", "value", "target", ""]);
    r.row(vec![
        "shoal cluster ÷ rayon".into(),
        format!("{ratio:.3}"),
        format!("≤ {CLUSTER_TARGET_VS_RAYON}"),
        verdict(ratio <= CLUSTER_TARGET_VS_RAYON),
    ]);
    r.print();
    Ok(())
}

fn check(got: u64, expected: u64, who: &str) -> shoal::Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(shoal::Error::msg(format!("{who} counted {got} letters, expected {expected}")))
    }
}
