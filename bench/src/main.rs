//! shoal's benchmarks: `cargo run --release -p shoal-bench -- <name>`.
//!
//! Each prints a table of medians over several rounds and the ratios that
//! the targets are stated in, all measured in the same run.

mod count_letters;
mod overhead;
mod table;

const USAGE: &str = "\
usage: shoal-bench <benchmark> [--rounds N] [--quick]

benchmarks:
  count-letters   sequential vs rayon vs shoal threads on the count_letters job
  overhead        per-task cost: map, tree reduction, chain, round trip, million tasks, memory
  all             every benchmark above";

/// Options shared by every benchmark.
pub struct Opts {
    pub rounds: usize,
    pub quick: bool,
}

fn main() {
    shoal::init();
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut opts = Opts { rounds: 5, quick: false };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--rounds" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => opts.rounds = n,
                _ => fail("--rounds needs a positive number"),
            },
            other => fail(&format!("unknown option {other}")),
        }
    }
    let result = match name.as_str() {
        "count-letters" => count_letters::run(&opts),
        "overhead" => overhead::run(&opts),
        "all" => count_letters::run(&opts).and_then(|_| overhead::run(&opts)),
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => fail(&format!("unknown benchmark {other}")),
    };
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}\n\n{USAGE}");
    std::process::exit(2);
}
