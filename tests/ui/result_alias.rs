// A `Result` under another name would be stored as a successful value.
type MyResult<T> = Result<T, String>;

#[shoal::task]
fn parse(s: String) -> MyResult<u64> {
    s.parse::<u64>().map_err(|e| e.to_string())
}

fn main() {}
