// Temporary profiling driver (not committed).
use shoal::prelude::*;
#[shoal::task]
fn noop(x: u64) -> u64 { x }
fn main() {
    let client = Client::local().unwrap();
    for _ in 0..30 {
        let f = client.map(noop, 0..100_000u64).unwrap();
        client.gather(&f).unwrap();
    }
}
