//! A user's own types with one line, `#[shoal::data]`, in every mode; read
//! by value or in place (`&Archived<T>`).

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions};

#[shoal::data]
struct WordCount {
    file: String,
    words: u64,
    longest: Option<String>,
}

#[shoal::data]
enum Shape {
    Circle { r: f64 },
    Square(f64),
}

#[shoal::task]
fn count_words(file: String) -> WordCount {
    let words = file.split('-').count() as u64;
    let longest = file.split('-').max_by_key(|w| w.len()).map(str::to_string);
    WordCount { file, words, longest }
}

/// In place: numbers are little-endian archived (`to_native`), strings
/// `as_str`, vectors iterate.
#[shoal::task]
fn total_words(counts: &Archived<Vec<WordCount>>) -> u64 {
    counts.iter().map(|c| c.words.to_native()).sum()
}

#[shoal::task]
fn longest_name(count: &Archived<WordCount>) -> String {
    count.longest.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default()
}

#[shoal::task]
fn area(shape: Shape) -> f64 {
    match shape {
        Shape::Circle { r } => std::f64::consts::PI * r * r,
        Shape::Square(a) => a * a,
    }
}

fn run(client: &Client) {
    let one = client.submit(count_words, "a-bb-ccc").unwrap();
    let got = one.result().unwrap();
    assert_eq!((got.file.as_str(), got.words, got.longest.as_deref()), ("a-bb-ccc", 3, Some("ccc")));
    assert_eq!(client.submit(longest_name, &one).unwrap().result().unwrap(), "ccc");
    let counts = client.map(count_words, ["x", "x-y", "x-y-z"]).unwrap();
    assert_eq!(client.submit(total_words, &counts).unwrap().result().unwrap(), 6);
    let square = client.submit(area, Shape::Square(2.0)).unwrap().result().unwrap();
    assert_eq!(square, 4.0);
    assert_eq!(client.submit(area, Shape::Circle { r: 2.0 }).unwrap().result().unwrap(), 4.0 * std::f64::consts::PI);
}

#[test]
fn own_types_work_in_the_threads_mode() {
    run(&Client::threads(2).unwrap());
}

#[test]
fn own_types_work_in_the_processes_mode() {
    let client = Client::processes_with(
        ProcessesOptions { workers: 2, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .unwrap();
    run(&client);
}
