// A task's handle is a unit struct named like the function, so a local
// variable cannot take that name (the README's convention: name the result
// after what it holds, `let sum = client.submit(total, …)`).
#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

fn main() {
    let client = shoal::Client::threads(1).unwrap();
    let total = client.submit(total, vec![1u64, 2]).unwrap();
}
