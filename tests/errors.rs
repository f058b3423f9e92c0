//! What a failed task's error says: the task's name and `file:line`, its
//! arguments (shortened), the error's type and `source()` chain; in the
//! threads mode the original error by downcast; for a list, the item's
//! index. `?` on common errors in a task returning `shoal::Result`.

use std::num::ParseIntError;

use shoal::prelude::*;
use shoal::{ClientOptions, ProcessesOptions, TaskFailure};

/// A user's own error enum with a source.
#[derive(Debug)]
enum ConfigError {
    BadNumber { line: u32, source: ParseIntError },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::BadNumber { line, .. } => write!(f, "bad number on line {line}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::BadNumber { source, .. } => Some(source),
        }
    }
}

#[shoal::task]
fn parse_config(text: String) -> Result<u64, ConfigError> {
    text.trim().parse::<u64>().map_err(|source| ConfigError::BadNumber { line: 3, source })
}

/// `?` on a `ParseIntError` in a task returning `shoal::Result`.
#[shoal::task]
fn parse_plain(text: String) -> shoal::Result<u64> {
    Ok(text.parse::<u64>()?)
}

#[shoal::task]
fn parse_or_message(text: String) -> Result<u64, String> {
    text.parse::<u64>().map_err(|e| format!("not a number: {e}"))
}

#[shoal::task]
fn long_input(text: String) -> shoal::Result<u64> {
    Err(shoal::Error::msg(format!("refused {} bytes", text.len())))
}

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn double(x: u64) -> u64 {
    x * 2
}

fn processes() -> Client {
    Client::processes_with(
        ProcessesOptions { workers: 1, ..ProcessesOptions::default() },
        ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
    )
    .expect("processes client")
}

#[test]
fn an_error_says_which_task_where_with_what_and_why() {
    let client = Client::threads(2).unwrap();
    let f = client.submit(parse_config, "x12".to_string()).unwrap();
    let err = f.result().expect_err("must fail");
    let msg = err.to_string();
    for needle in [
        "errors::parse_config",                     // the task's name
        "tests/errors.rs:",                         // where it is written
        "bad number on line 3",                     // its message
        "errors::ConfigError",                      // its type
        "caused by: invalid digit found in string", // its source
        "arguments: (\"x12\")",                     // its arguments
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    // The threads mode keeps the error itself: the user's enum, and its source.
    match err.downcast_ref::<ConfigError>() {
        Some(ConfigError::BadNumber { line: 3, .. }) => {}
        other => panic!("expected the original ConfigError, got {other:?}"),
    }
    assert!(err.downcast_ref::<ParseIntError>().is_some(), "sources are reachable too");
    let task_error = err.task_failure().and_then(TaskFailure::task_error).expect("a task error");
    assert_eq!(task_error.chain(), ["invalid digit found in string"]);
    assert_eq!(task_error.type_name(), std::any::type_name::<ConfigError>());
}

#[test]
fn question_mark_works_on_common_errors_and_keeps_them() {
    let client = Client::threads(1).unwrap();
    let err = client.submit(parse_plain, "12a".to_string()).unwrap().result().expect_err("must fail");
    let task_error = err.task_failure().and_then(TaskFailure::task_error).expect("a task error");
    assert_eq!(task_error.type_name(), "core::num::error::ParseIntError", "named after the error `?` wrapped");
    assert!(err.downcast_ref::<ParseIntError>().is_some(), "{err}");
    // A `Display`-only error keeps its text and its type's name.
    let err = client.submit(parse_or_message, "z".to_string()).unwrap().result().expect_err("must fail");
    assert!(err.to_string().contains("not a number: invalid digit"), "{err}");
    let task_error = err.task_failure().and_then(TaskFailure::task_error).expect("a task error");
    assert_eq!(task_error.type_name(), "alloc::string::String");
    assert!(err.downcast_ref::<ParseIntError>().is_none());
}

#[test]
fn arguments_are_shortened() {
    let client = Client::threads(1).unwrap();
    let err = client.submit(long_input, "y".repeat(100_000)).unwrap().result().expect_err("must fail");
    let arguments = err.task_failure().and_then(TaskFailure::task_error).and_then(|e| e.arguments()).unwrap();
    assert!(arguments.starts_with("(\"yyyy") && arguments.contains('…'), "{arguments}");
    assert!(arguments.chars().count() <= shoal::MAX_ARGUMENTS_CHARS + 1, "{} chars", arguments.chars().count());
}

#[test]
fn a_gathered_list_names_the_failed_item() {
    let client = Client::threads(2).unwrap();
    let texts: Vec<String> = ["1", "2", "three", "4"].iter().map(|s| s.to_string()).collect();
    let parsed = client.map(parse_plain, texts).unwrap();
    let err = client.gather(&parsed).expect_err("item 2 fails");
    assert!(matches!(err, shoal::Error::TaskAt { index: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("item 2 of the list failed") && msg.contains("(\"three\")"), "{msg}");
}

#[test]
fn processes_mode_errors_carry_type_chain_and_arguments_as_text() {
    let client = processes();
    let bad = client.submit(parse_config, "x12".to_string()).unwrap();
    let dependent = client.submit(inc, &bad).unwrap();
    let err = bad.result().expect_err("must fail");
    let msg = err.to_string();
    for needle in [
        "errors::parse_config",
        "tests/errors.rs:",
        "bad number on line 3",
        "errors::ConfigError",
        "caused by: invalid digit found in string",
        "arguments: (\"x12\")",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(err.downcast_ref::<ConfigError>().is_none(), "the original stays in the worker");
    // A dependent names the root cause, and shows its own input as a result.
    let msg = dependent.result().expect_err("dependent fails").to_string();
    assert!(msg.contains("bad number on line 3"), "{msg}");
    let failing_inc = client.submit(long_input, "abc".to_string()).unwrap();
    let msg = failing_inc.result().expect_err("must fail").to_string();
    assert!(msg.contains("refused 3 bytes") && msg.contains("(\"abc\")"), "{msg}");
}

/// Every report of a map item's failure names the item's index: its own
/// future's `result()`, `gather` (beside the list's own index), and the
/// failures of the tasks that needed it (which show their own index too if
/// a `map` made them). A plain `submit` names none.
fn map_items_name_their_index(client: &Client) {
    let texts: Vec<String> = ["1", "2", "three", "4"].iter().map(|s| s.to_string()).collect();
    let parsed = client.map(parse_plain, texts).unwrap();
    let err = parsed[2].result().expect_err("item 2 fails");
    assert_eq!(err.task_failure().and_then(TaskFailure::item), Some(2), "{err}");
    assert!(err.to_string().contains("(map item 2, errors::parse_plain at tests/errors.rs:"), "{err}");
    assert_eq!(parsed[1].result().unwrap(), 2);

    let err = client.gather(&parsed[1..]).expect_err("item 2 of the map fails");
    match &err {
        shoal::Error::TaskAt { index: 1, failure } => assert_eq!(failure.item(), Some(2), "{err}"),
        other => panic!("expected the list's item 1, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("item 1 of the list failed: task ") && msg.contains("(map item 2, "), "{msg}");

    let after = client.submit(inc, &parsed[2]).unwrap();
    let err = after.result().expect_err("its input failed");
    let failure = err.task_failure().expect("a task failure");
    assert!(matches!(failure, TaskFailure::DependencyFailed { .. }), "{err}");
    assert_eq!((failure.item(), failure.root().item()), (None, Some(2)), "{err}");
    assert!(err.to_string().contains("a dependency failed: task ") && err.to_string().contains("(map item 2, "));

    // (Not `inc` again: an equal pure call is the same task, `after`.)
    let doubles = client.map(double, parsed[2..].iter()).unwrap();
    let err = doubles[0].result().expect_err("its input failed");
    let failure = err.task_failure().expect("a task failure");
    assert_eq!((failure.item(), failure.root().item()), (Some(0), Some(2)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("(map item 0) did not run because a dependency failed") && msg.contains("(map item 2, "),
        "{msg}"
    );
    assert_eq!(doubles[1].result().unwrap(), 8);

    let single = client.submit(parse_plain, "3x".to_string()).unwrap();
    let err = single.result().expect_err("not a number");
    assert_eq!(err.task_failure().and_then(TaskFailure::item), None, "{err}");
    assert!(!err.to_string().contains("map item"), "{err}");
}

#[test]
fn a_map_items_failure_names_its_index_everywhere_in_threads_mode() {
    map_items_name_their_index(&Client::threads(2).unwrap());
}

#[test]
fn a_map_items_failure_names_its_index_everywhere_in_processes_mode() {
    map_items_name_their_index(&processes());
}

#[test]
fn a_map_index_counts_across_the_chunks_a_long_map_is_submitted_in() {
    // Longer than one submission chunk of `map` (8192 calls): the index is
    // the item's place in the whole map, not in its chunk.
    const BAD: usize = 8_195;
    let client = Client::threads(2).unwrap();
    let texts = (0..8_200).map(|i| if i == BAD { "bad".to_string() } else { i.to_string() });
    let parsed = client.map(parse_plain, texts).unwrap();
    let err = parsed[BAD].result().expect_err("the bad item fails");
    assert_eq!(err.task_failure().and_then(TaskFailure::item), Some(BAD), "{err}");
    assert!(err.to_string().contains(&format!("(map item {BAD}, ")), "{err}");
    assert_eq!(parsed[BAD - 1].result().unwrap(), BAD as u64 - 1);
}
