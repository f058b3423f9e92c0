//! The mode flags shared by the small examples: `--threads N`,
//! `--processes P` or `--scheduler tcp://HOST:PORT` (a cluster: start
//! `shoal scheduler` and workers `SHOAL_WORKER=tcp://HOST:PORT <this example>`
//! first); default: `Client::local()`, one thread per core.

use shoal::Client;

const USAGE: &str = "flags: [--threads N | --processes P | --scheduler tcp://HOST:PORT]";

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
        Some("--scheduler") => match args.get(1) {
            Some(url) => Client::connect(url),
            None => {
                eprintln!("--scheduler needs a URL such as tcp://127.0.0.1:8786\n{USAGE}");
                std::process::exit(2);
            }
        },
        Some(other) => {
            eprintln!("unknown argument {other}\n{USAGE}");
            std::process::exit(2);
        }
    }
}
