//! The mode flags shared by the small examples: `--threads N` or
//! `--processes P` (default: `Client::local()`, one thread per core).

use shoal::Client;

const USAGE: &str = "flags: [--threads N | --processes P]";

/// The client the command line asks for; exits with a usage line on a bad flag.
pub fn client_from_args() -> shoal::Result<Client> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> usize {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("{} needs a positive number\n{USAGE}", args[i]);
                std::process::exit(2);
            }
        }
    };
    match args.first().map(String::as_str) {
        None => Client::local(),
        Some("--threads") => Client::threads(number(0)),
        Some("--processes") => Client::processes(number(0)),
        Some(other) => {
            eprintln!("unknown argument {other}\n{USAGE}");
            std::process::exit(2);
        }
    }
}
