//! The seed's Dask Bag program in shoal: records from JSON-lines files,
//! the most frequent names, top 10.
//!
//! ```python
//! b = db.read_text('people-*.json').map(json.loads)
//! b.pluck('name').frequencies().topk(10, lambda pair: pair[1]).compute()
//! ```
//!
//! ```text
//! cargo run --example bag_json -- [--files N] [--lines L] [--threads N | --processes P | --scheduler tcp://HOST:PORT]
//! ```
//!
//! It writes the files if they are not there yet (default 8 files of
//! 10 000 records under the system temp dir), runs the bag and a plain
//! sequential loop, checks that they agree, and prints the top 10. A line
//! that is not a record is skipped (`parse` returns an `Option`, and
//! `flat_map` keeps the `Some`s).

use std::collections::HashMap;
use std::path::Path;

use shoal::Client;
use shoal::bag;

/// One record of the files.
#[shoal::data]
pub struct Person {
    name: String,
    age: u64,
}

/// A JSON line as a record; `None` for a line that is not one.
#[shoal::func]
fn parse(line: String) -> Option<Person> {
    let value: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(Person { name: value.get("name")?.as_str()?.to_string(), age: value.get("age")?.as_u64()? })
}

/// `pluck('name')`: Rust has no field access by name, so a function does it.
#[shoal::func]
fn person_name(person: Person) -> String {
    person.name
}

#[shoal::func]
fn by_count(pair: (String, u64)) -> u64 {
    pair.1
}

const NAMES: [&str; 16] = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia",
    "Peggy", "Rupert", "Sybil",
];

fn write_files(dir: &Path, files: usize, lines: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for f in 0..files {
        let path = dir.join(format!("people-{f:04}.json"));
        if path.exists() {
            continue;
        }
        let mut text = String::new();
        for i in 0..lines {
            // A linear congruential generator: the same files for the same flags.
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let draw = (state >> 33) as usize;
            // Skewed names: the minimum of two draws favours the first ones.
            let n = (draw % NAMES.len()).min((draw / 7) % NAMES.len());
            let record = serde_json::json!({ "name": NAMES[n], "age": draw % 90, "id": f * lines + i });
            text.push_str(&record.to_string());
            text.push('\n');
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn main() -> shoal::Result<()> {
    shoal::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let number = |name: &str, default: usize| -> shoal::Result<usize> {
        flag(name).map_or(Ok(default), |v| v.parse().map_err(|e| shoal::Error::msg(format!("{name}: {e}"))))
    };
    let (files, lines) = (number("--files", 8)?, number("--lines", 10_000)?);
    let client = if let Some(p) = flag("--processes") {
        Client::processes(p.parse().map_err(|e| shoal::Error::msg(format!("--processes: {e}")))?)?
    } else if let Some(n) = flag("--threads") {
        Client::threads(n.parse().map_err(|e| shoal::Error::msg(format!("--threads: {e}")))?)?
    } else if let Some(url) = flag("--scheduler") {
        Client::connect(url)?
    } else {
        Client::local()?
    };
    let dir = std::env::temp_dir().join(format!("shoal-bag-json-{files}x{lines}"));
    write_files(&dir, files, lines)?;
    let pattern = format!("{}/people-*.json", dir.display());

    let top =
        bag::read_text(&pattern)?.flat_map(parse).map(person_name).frequencies().topk(10, by_count).compute(&client)?;
    for (name, n) in &top {
        println!("{name:>8} {n}");
    }

    // The same, sequentially.
    let mut counts: HashMap<String, u64> = HashMap::new();
    for f in 0..files {
        for line in std::fs::read_to_string(dir.join(format!("people-{f:04}.json")))?.lines() {
            if let Some(person) = parse::call(line.to_string()) {
                *counts.entry(person.name).or_insert(0) += 1;
            }
        }
    }
    let mut expected: Vec<u64> = counts.values().copied().collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    expected.truncate(10);
    let agree = top.iter().map(|(_, n)| *n).eq(expected.iter().copied())
        && top.iter().all(|(name, n)| counts.get(name) == Some(n));
    if !agree {
        eprintln!("MISMATCH: the bag's top 10 {top:?}, the sequential counts {expected:?}");
        std::process::exit(1);
    }
    println!("{} records in {files} files: the bag agrees with the sequential loop", counts.values().sum::<u64>());
    Ok(())
}
