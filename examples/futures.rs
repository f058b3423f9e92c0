//! Futures: `submit`, `map` and `gather`, with dependencies between tasks,
//! errors that name their task, and `as_completed`.
//!
//! ```text
//! cargo run --release --example futures [-- --processes P | --threads N]
//! ```

#[path = "common/mode.rs"]
mod mode;

#[shoal::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[shoal::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[shoal::task]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[shoal::task]
fn checked_sqrt(x: i64) -> Result<f64, String> {
    if x < 0 { Err(format!("cannot take the square root of {x}")) } else { Ok((x as f64).sqrt()) }
}

fn main() -> shoal::Result<()> {
    shoal::init();
    let client = mode::client_from_args()?;

    // One task, then one that depends on it: pass the future as the argument.
    let x = client.submit(inc, 10)?;
    let y = client.submit(add, (&x, 100))?;
    println!("inc(10) = {}, add(inc(10), 100) = {}", x.result()?, y.result()?);

    // map: one task per item; a Vec parameter takes a list of futures.
    let incremented = client.map(inc, 0..1000)?;
    let sum = client.submit(total, &incremented)?;
    println!("sum of inc(0..1000) = {}", sum.result()?);
    let first: Vec<i64> = client.gather(&incremented[..5])?;
    println!("first five: {first:?}");

    // Tasks with two parameters map over tuples.
    let pairs = client.map(add, (0..5).map(|i| (i, i * 10)))?;
    println!("pairs: {:?}", client.gather(&pairs)?);

    // A failing task fails its future (and its dependents), nothing else.
    let bad = client.submit(checked_sqrt, -4)?;
    let after = client.submit(add, (0, 1))?;
    match bad.result() {
        Err(e) => println!("as expected: {e}"),
        Ok(v) => println!("unexpected success: {v}"),
    }
    println!("the rest goes on: add(0, 1) = {}", after.result()?);

    // Results in the order they finish.
    let roots = client.map(checked_sqrt, [16, 9, 4])?;
    for f in shoal::as_completed(roots) {
        println!("finished: {} = {}", f.key(), f.result()?);
    }
    Ok(())
}
