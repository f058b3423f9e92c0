// A bag applies registered functions only: a closure cannot reach a worker
// process, so `map` refuses it, saying what to write instead.
fn main() {
    let b = shoal::bag::from_vec(vec![1u64, 2, 3], 2).unwrap();
    let _ = b.map(|x: u64| x + 1);
}
