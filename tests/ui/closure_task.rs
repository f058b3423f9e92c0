// A closure is not a task: it cannot be found by name in another process.
fn main() {
    let client = shoal::Client::threads(1).unwrap();
    let _ = client.submit(|x: u64| x + 1, 1u64);
}
