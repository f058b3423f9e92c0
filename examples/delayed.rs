//! A lazy graph, as in the `dask.delayed` docs: load each file, process it,
//! summarize the list — built in a plain loop, computed at once.
//!
//! ```text
//! cargo run --release --example delayed [-- --processes P | --threads N]
//! ```

#[path = "common/mode.rs"]
mod mode;

use shoal::prelude::*;

/// "Load" a file: here, make its contents from its name.
#[shoal::task]
fn load(name: String) -> Vec<u8> {
    name.bytes().cycle().take(1 << 16).collect()
}

/// Process it in place: the parameter is the archived form, read without a copy.
#[shoal::task]
fn process(data: &Archived<Vec<u8>>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[shoal::task]
fn summarize(results: Vec<u64>) -> (u64, u64) {
    (results.iter().sum(), results.iter().copied().max().unwrap_or(0))
}

fn main() -> shoal::Result<()> {
    shoal::init();
    let client = mode::client_from_args()?;

    let filenames: Vec<String> = (0..32).map(|i| format!("file-{i:02}.dat")).collect();
    let mut results = Vec::new();
    for name in &filenames {
        let data = load.lazy(name.clone());
        results.push(process.lazy(data));
    }
    let summary = summarize.lazy(results);
    println!("graph built: {} (nothing has run yet)", summary.key());

    let (sum, max) = summary.compute(&client)?;
    println!("summary over {} files: sum = {sum}, max = {max}", filenames.len());

    // The same check done directly, without shoal.
    let direct: Vec<u64> = filenames.iter().map(|n| n.bytes().cycle().take(1 << 16).map(u64::from).sum()).collect();
    assert_eq!((sum, max), (direct.iter().sum(), direct.iter().copied().max().unwrap_or(0)));
    println!("matches the direct computation");
    Ok(())
}
