//! Your own types as task arguments and results: one line, `#[shoal::data]`,
//! and they work in every mode — taken by value, or read in place as
//! `&Archived<T>` (in the processes mode straight from the producer's
//! shared memory). A task's own error type is kept whole.
//!
//! ```text
//! cargo run --example own_types [-- --processes P | --threads N]
//! ```

use shoal::prelude::*;

#[path = "common/mode.rs"]
mod mode;

/// A reading from one sensor.
#[shoal::data]
struct Reading {
    sensor: String,
    celsius: Vec<f64>,
    kind: Kind,
}

#[shoal::data]
enum Kind {
    Indoor,
    Outdoor { latitude: f64 },
}

/// What a day of readings comes to.
#[shoal::data]
struct Summary {
    sensor: String,
    mean: f64,
    max: f64,
}

/// The task's own error: a plain `std::error::Error`.
#[derive(Debug)]
struct NoReadings(String);

impl std::fmt::Display for NoReadings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sensor {} sent no readings", self.0)
    }
}

impl std::error::Error for NoReadings {}

#[shoal::task]
fn read_sensor(sensor: String, n: u32) -> Reading {
    let kind = if sensor.starts_with("in") { Kind::Indoor } else { Kind::Outdoor { latitude: 47.4 } };
    let celsius = (0..n).map(|i| 15.0 + f64::from(i % 7)).collect();
    Reading { sensor, celsius, kind }
}

/// Reads the reading in place: archived numbers are little-endian
/// (`to_native`), an archived `String` is read with `as_str`.
#[shoal::task]
fn summarize(reading: &Archived<Reading>) -> Result<Summary, NoReadings> {
    let sensor = reading.sensor.as_str().to_string();
    if reading.celsius.is_empty() {
        return Err(NoReadings(sensor));
    }
    let values = reading.celsius.iter().map(|c| c.to_native());
    let max = values.clone().fold(f64::MIN, f64::max);
    let mean = values.sum::<f64>() / reading.celsius.len() as f64;
    Ok(Summary { sensor, mean, max })
}

/// By value: a `Vec` of your own type.
#[shoal::task]
fn warmest(summaries: Vec<Summary>) -> Option<Summary> {
    summaries.into_iter().max_by(|a, b| a.max.total_cmp(&b.max))
}

fn main() -> shoal::Result<()> {
    shoal::init();
    let client = mode::client_from_args()?;
    let sensors = ["indoor-1", "outdoor-1", "outdoor-2"];
    let readings = client.map(read_sensor, sensors.iter().zip([24, 48, 5]).map(|(s, n)| (*s, n)))?;
    let summaries = client.map(summarize, &readings)?;
    for summary in client.gather(&summaries)? {
        println!("{}: mean {:.1} °C, max {:.1} °C", summary.sensor, summary.mean, summary.max);
    }
    let best = client.submit(warmest, &summaries)?.result()?;
    println!("warmest: {best:?}");

    // A sensor with no readings: the error names the task, its arguments and
    // the error's type.
    let silent = client.submit(read_sensor, ("indoor-9", 0))?;
    let err = client.submit(summarize, &silent)?.result().expect_err("no readings");
    println!("as expected: {err}");
    Ok(())
}
