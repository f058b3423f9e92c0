//! `shoal::bag` against plain sequential code on random data, in the
//! threads and the processes modes (worker processes are re-executed from
//! this test binary, whose registry holds the functions below), and the
//! fusion rule: a pipeline of element-wise steps is one task per partition.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use proptest::prelude::*;
use shoal::bag::{self, Bag};
use shoal::{Client, ClientOptions, ProcessesOptions, Task};

#[shoal::func]
fn double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

#[shoal::func]
fn is_even(x: u64) -> bool {
    x.is_multiple_of(2)
}

#[shoal::func]
fn digits(x: u64) -> Vec<u64> {
    x.to_string().bytes().map(|b| u64::from(b - b'0')).collect()
}

#[shoal::func]
fn small(x: u64) -> u64 {
    x % 7
}

#[shoal::func]
fn render(x: u64) -> String {
    format!("n{x}")
}

#[shoal::func]
fn reverse(xs: Vec<u64>) -> Vec<u64> {
    xs.into_iter().rev().collect()
}

#[shoal::func]
fn words(line: String) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[shoal::func]
fn render_len(word: String) -> u64 {
    word.len() as u64
}

#[shoal::func]
fn is_long(n: u64) -> bool {
    n > 2
}

#[shoal::func]
fn by_count(pair: (String, u64)) -> u64 {
    pair.1
}

#[shoal::func]
fn identity(x: u64) -> u64 {
    x
}

/// A fold's step: (sum of squares, count) with one more element.
#[shoal::func]
fn square_and_count(acc: (u64, u64), x: u64) -> (u64, u64) {
    (acc.0 + x * x, acc.1 + 1)
}

/// A fold's combine: two partial results into one.
#[shoal::func]
fn add_pairs(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 + b.0, a.1 + b.1)
}

#[shoal::func]
fn add(acc: u64, x: u64) -> u64 {
    acc + x
}

/// A group's size (`groupby`'s pairs, then a `map`).
#[shoal::func]
fn group_len(group: (u64, Vec<u64>)) -> u64 {
    group.1.len() as u64
}

// `foldby` by a `u64` key into `(u64, u64)` accumulators makes
// `(u64, (u64, u64))` pairs, which no function takes or returns.
shoal::bag_item!((u64, (u64, u64)));

fn threads() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::threads_with(2, ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() })
            .expect("threads client")
    })
}

fn processes() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::processes_with(
            ProcessesOptions { workers: 2, ..ProcessesOptions::default() },
            ClientOptions { progress: shoal::ProgressBar::Never, ..ClientOptions::default() },
        )
        .expect("processes client")
    })
}

fn clients() -> [(&'static str, &'static Client); 2] {
    assert!(!processes().worker_pids().contains(&std::process::id()), "the processes mode runs tasks elsewhere");
    [("threads", threads()), ("processes", processes())]
}

/// Few cases: each computes graphs on two clients.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 12, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn element_wise_steps_match_iterators(xs in prop::collection::vec(0u64..1_000_000, 0..200), p in 1usize..9) {
        let expected: Vec<String> = xs
            .iter()
            .filter(|x| *x % 2 == 0)
            .map(|x| x.wrapping_mul(2))
            .flat_map(|x| x.to_string().bytes().map(|b| u64::from(b - b'0')).collect::<Vec<_>>())
            .map(|x| x % 7)
            .map(|x| format!("n{x}"))
            .collect();
        for (mode, client) in clients() {
            let b = bag::from_vec(xs.clone(), p).unwrap();
            let got = b.filter(is_even).map(double).flat_map(digits).map(small).map(render).compute(client).unwrap();
            prop_assert_eq!(&got, &expected, "{}", mode);
            // map_partitions sees each partition whole, in order.
            let n = xs.len();
            let rev: Vec<u64> = (0..p).flat_map(|i| xs[n * i / p..n * (i + 1) / p].iter().rev().copied()).collect();
            let got = bag::from_vec(xs.clone(), p).unwrap().map_partitions(reverse).compute(client).unwrap();
            prop_assert_eq!(got, rev, "{}", mode);
            // After element-wise steps (which stream), it still sees its partition whole.
            let rev_evens: Vec<u64> = (0..p)
                .flat_map(|i| xs[n * i / p..n * (i + 1) / p].iter().rev().filter(|x| *x % 2 == 0).copied())
                .collect();
            let got = bag::from_vec(xs.clone(), p).unwrap().filter(is_even).map_partitions(reverse);
            prop_assert_eq!(got.compute(client).unwrap(), rev_evens, "{}", mode);
        }
    }

    #[test]
    fn reductions_match_sequential_code(
        xs in prop::collection::vec(0u64..50, 0..300),
        p in 1usize..20,
        split in 2usize..5,
        k in 0usize..12,
    ) {
        let mut freq: HashMap<u64, u64> = HashMap::new();
        for &x in &xs {
            *freq.entry(x).or_insert(0) += 1;
        }
        let distinct: HashSet<u64> = xs.iter().copied().collect();
        // topk: largest first, ties in input order (a stable sort).
        let mut top = xs.clone();
        top.sort_by(|a, b| b.cmp(a));
        top.truncate(k);
        for (mode, client) in clients() {
            let b: Bag<u64> = bag::from_vec(xs.clone(), p).unwrap().split_every(split);
            prop_assert_eq!(b.count().compute(client).unwrap(), xs.len() as u64, "{}", mode);
            prop_assert_eq!(b.sum().compute(client).unwrap(), xs.iter().sum::<u64>(), "{}", mode);
            let got: HashMap<u64, u64> = b.frequencies().compute(client).unwrap().into_iter().collect();
            prop_assert_eq!(&got, &freq, "{}", mode);
            let got = b.distinct().compute(client).unwrap();
            prop_assert_eq!(got.len(), distinct.len(), "{}: no duplicates", mode);
            prop_assert_eq!(got.into_iter().collect::<HashSet<_>>(), distinct.clone(), "{}", mode);
            prop_assert_eq!(b.topk(k, identity).compute(client).unwrap(), top.clone(), "{}", mode);
            prop_assert_eq!(b.map(identity).topk(k, identity).compute(client).unwrap(), top.clone(), "{}", mode);
            let squares = (xs.iter().map(|x| x * x).sum::<u64>(), xs.len() as u64);
            prop_assert_eq!(b.fold(square_and_count, add_pairs).compute(client).unwrap(), squares, "{}", mode);
            // A reduction after element-wise steps, fused into the same tasks.
            let evens = xs.iter().filter(|x| *x % 2 == 0).count() as u64;
            prop_assert_eq!(b.filter(is_even).map(double).count().compute(client).unwrap(), evens, "{}", mode);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn foldby_matches_a_sequential_fold_per_key(
        xs in prop::collection::vec(0u64..1_000, 0..300),
        p in 1usize..12,
        split in 2usize..5,
    ) {
        let mut sums: HashMap<u64, u64> = HashMap::new();
        let mut squares: HashMap<u64, (u64, u64)> = HashMap::new();
        for &x in &xs {
            *sums.entry(x % 7).or_insert(0) += x;
            let e = squares.entry(x % 7).or_insert((0, 0));
            *e = (e.0 + x * x, e.1 + 1);
        }
        for (mode, client) in clients() {
            let b = bag::from_vec(xs.clone(), p).unwrap().split_every(split);
            let got = b.foldby(small, add, add).unwrap().compute(client).unwrap();
            prop_assert_eq!(got.len(), sums.len(), "{}: one pair per key", mode);
            prop_assert_eq!(got.into_iter().collect::<HashMap<_, _>>(), sums.clone(), "{}", mode);
            let got = b.foldby(small, square_and_count, add_pairs).unwrap().compute(client).unwrap();
            prop_assert_eq!(got.into_iter().collect::<HashMap<_, _>>(), squares.clone(), "{}", mode);
            // After element-wise steps, fused into the same tasks.
            let evens: u64 = xs.iter().filter(|x| *x % 2 == 0).count() as u64;
            let got = b.filter(is_even).foldby(small, square_and_count, add_pairs).unwrap().compute(client).unwrap();
            prop_assert_eq!(got.iter().map(|(_, (_, n))| n).sum::<u64>(), evens, "{}", mode);
        }
    }

    #[test]
    fn groupby_shuffles_each_key_into_one_partition_in_order(
        xs in prop::collection::vec(0u64..1_000, 0..300),
        p in 1usize..10,
        m in 1usize..10,
    ) {
        let mut groups: HashMap<u64, Vec<u64>> = HashMap::new();
        for &x in &xs {
            groups.entry(x % 7).or_default().push(x);
        }
        for (mode, client) in clients() {
            let b = bag::from_vec(xs.clone(), p).unwrap();
            let grouped = b.groupby_with(small, m).unwrap();
            prop_assert_eq!(grouped.npartitions(), m);
            let parts = client.compute_values(&grouped.to_lazy()).unwrap();
            let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
            for part in parts {
                for (k, v) in part {
                    prop_assert!(seen.insert(k, v).is_none(), "{}: key {} in two groups", mode, k);
                }
            }
            prop_assert_eq!(&seen, &groups, "{}", mode);
            // The shuffle's output is a bag like any other: steps and reductions follow.
            let sizes = b.groupby(small).map(group_len).sum().compute(client).unwrap();
            prop_assert_eq!(sizes, xs.len() as u64, "{}", mode);
        }
    }

    #[test]
    fn split_whitespace_counts_match_str_split_whitespace(
        lines in prop::collection::vec(prop::collection::vec(0usize..TOKENS.len(), 0..12), 0..40),
        p in 1usize..6,
        block in 1u64..200,
    ) {
        // Lines of words, ASCII and not, between runs of ASCII and Unicode
        // whitespace (U+3000 is whitespace to `split_whitespace`).
        let lines: Vec<String> = lines.iter().map(|l| l.iter().map(|&t| TOKENS[t]).collect()).collect();
        let all_words: Vec<String> = lines.iter().flat_map(|l| l.split_whitespace()).map(String::from).collect();
        let mut freq: HashMap<String, u64> = HashMap::new();
        for w in &all_words {
            *freq.entry(w.clone()).or_insert(0) += 1;
        }
        let distinct: HashSet<String> = all_words.iter().cloned().collect();
        let dir = scratch_dir("split");
        let path = dir.join("lines.txt");
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        for (mode, client) in clients() {
            let bags = [
                ("stored", bag::from_vec(lines.clone(), p).unwrap()),
                // Words split from each text block in place.
                ("read_text", bag::read_text_with(path.to_str().unwrap(), block).unwrap()),
                // Words of a stream of lines (a step before the split).
                ("after a map", bag::read_text_with(path.to_str().unwrap(), block).unwrap().map(words_key)),
            ];
            for (source, b) in bags {
                let w = b.split_whitespace();
                prop_assert_eq!(&w.compute(client).unwrap(), &all_words, "{} {}", mode, source);
                prop_assert_eq!(w.count().compute(client).unwrap(), all_words.len() as u64, "{} {}", mode, source);
                let got = w.frequencies().compute(client).unwrap();
                prop_assert_eq!(got.len(), freq.len(), "{} {}: one pair per word", mode, source);
                prop_assert_eq!(got.into_iter().collect::<HashMap<_, _>>(), freq.clone(), "{} {}", mode, source);
                let got = w.distinct().compute(client).unwrap();
                prop_assert_eq!(got.len(), distinct.len(), "{} {}: no duplicates", mode, source);
                prop_assert_eq!(got.into_iter().collect::<HashSet<_>>(), distinct.clone(), "{} {}", mode, source);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pluck_takes_a_field_of_pairs(xs in prop::collection::vec(0u64..50, 0..200), p in 1usize..8) {
        let distinct: HashSet<u64> = xs.iter().copied().collect();
        for (mode, client) in clients() {
            let freq = bag::from_vec(xs.clone(), p).unwrap().frequencies();
            let keys = freq.pluck::<0>().compute(client).unwrap();
            prop_assert_eq!(keys.len(), distinct.len(), "{}", mode);
            prop_assert_eq!(keys.into_iter().collect::<HashSet<_>>(), distinct.clone(), "{}", mode);
            prop_assert_eq!(freq.pluck::<1>().sum().compute(client).unwrap(), xs.len() as u64, "{}", mode);
        }
    }
}

/// What `split_whitespace_counts_match_str_split_whitespace` builds lines of.
const TOKENS: [&str; 8] = ["a", "bé", "ab", " ", "\t", "\u{3000}", "  ", "é"];

/// A fresh folder under the temp dir, for one test case.
fn scratch_dir(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shoal-bag-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[shoal::task]
fn span(start: u64, n: u64) -> Vec<u64> {
    (start..start + n).collect()
}

#[test]
fn bags_start_from_lazy_values_and_futures() {
    let sizes = [5u64, 0, 17, 3];
    let mut starts = Vec::new();
    let mut at = 0;
    for n in sizes {
        starts.push(at);
        at += n;
    }
    let all: Vec<u64> = (0..at).collect();
    for (mode, client) in clients() {
        let lazies: Vec<_> = starts.iter().zip(sizes).map(|(&s, n)| span.lazy((s, n))).collect();
        let b = bag::from_lazy(lazies).unwrap();
        assert_eq!(b.npartitions(), sizes.len());
        assert_eq!(b.compute(client).unwrap(), all, "{mode}");
        assert_eq!(b.map(double).sum().compute(client).unwrap(), all.iter().map(|x| x * 2).sum::<u64>(), "{mode}");
        let futures: Vec<_> = starts.iter().zip(sizes).map(|(&s, n)| client.submit(span, (s, n)).unwrap()).collect();
        let b = bag::from_futures(&futures).unwrap();
        // The bag holds its own references: the futures may go.
        drop(futures);
        assert_eq!(b.compute(client).unwrap(), all, "{mode}");
        assert_eq!(b.filter(is_even).count().compute(client).unwrap(), at.div_ceil(2), "{mode}");
    }
    let none: Vec<shoal::Future<Vec<u64>>> = Vec::new();
    assert!(bag::from_futures(&none).unwrap_err().to_string().contains("at least one partition"));
    assert!(bag::from_lazy::<u64>(Vec::new()).unwrap_err().to_string().contains("at least one partition"));
}

#[test]
fn a_shuffle_is_one_split_per_input_and_one_gather_per_output() {
    let (p, m) = (6, 4);
    let b = bag::from_vec((0..100u64).collect(), p).unwrap();
    let parts = b.map(double).groupby_with(small, m).unwrap().to_lazy();
    assert_eq!(parts.len(), m);
    // Each output's graph: every source and its fused pipeline-and-split
    // task, then the gather.
    for part in &parts {
        assert_eq!(part.graph_len(), p + p + 1);
    }
    // All outputs together: p sources, p splits, m gathers.
    let total = b.map(double).groupby_with(small, m).unwrap().count();
    assert_eq!(total.graph_len(), p + p + m + 1);
    assert_eq!(total.compute(threads()).unwrap(), 7);
    assert!(b.groupby_with(small, 0).unwrap_err().to_string().contains("at least one output partition"));
}

#[test]
fn foldby_says_which_pair_type_to_register() {
    let b = bag::from_vec(vec!["a".to_string(), "bb".to_string()], 1).unwrap();
    // `(u64, u64)` accumulators by a `u64` key: registered above. By a
    // `String` key: `(String, (u64, u64))` is registered nowhere.
    let err = b.map(render_len).foldby(small, square_and_count, add_pairs).map(|_| ()).err();
    assert!(err.is_none(), "{err:?}");
    let err = b.foldby(words_key, square_len, add_pairs).unwrap_err().to_string();
    // Named as the user writes the type, not with `type_name`'s full paths.
    assert!(err.contains("shoal::bag_item!((String, (u64, u64)));"), "{err}");
}

#[shoal::func]
fn words_key(s: String) -> String {
    s
}

#[shoal::func]
fn square_len(acc: (u64, u64), s: String) -> (u64, u64) {
    (acc.0 + (s.len() * s.len()) as u64, acc.1 + 1)
}

#[test]
fn a_five_step_pipeline_is_one_task_per_partition() {
    let n = 37;
    let b = bag::from_vec((0..1000u64).collect(), n).unwrap();
    let piped = b.map(double).filter(is_even).flat_map(digits).map(small).map(render);
    let parts = piped.to_lazy();
    assert_eq!(parts.len(), n);
    // Each partition's graph: its source and ONE pipeline task.
    for part in &parts {
        assert_eq!(part.graph_len(), 2);
    }
    // A reduction over it: N sources, N fused tasks, then the tree:
    // ceil(37/8) = 5 combines, then 1 root.
    let count = b.map(double).filter(is_even).flat_map(digits).map(small).map(render).count();
    assert_eq!(count.graph_len(), n + n + 5 + 1);
    assert_eq!(count.compute(threads()).unwrap(), (0..1000u64).map(|x| (x * 2).to_string().len() as u64).sum::<u64>());
}

#[test]
fn word_frequencies_of_text_files_in_blocks() {
    let dir = std::env::temp_dir().join(format!("shoal-bag-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut all_lines = Vec::new();
    for f in 0..3 {
        let mut text = String::new();
        for l in 0..(40 + f * 17) {
            let line = format!("w{} w{} common{}", (l * 7 + f) % 11, l % 5, if l % 3 == 0 { "\r" } else { "" });
            text.push_str(&line);
            text.push('\n');
            let clean = line.trim_end_matches('\r').to_string();
            for w in clean.split_whitespace() {
                *expected.entry(w.to_string()).or_insert(0) += 1;
            }
            all_lines.push(clean);
        }
        if f == 2 {
            // The last line without a newline.
            text.push_str("tail w1");
            all_lines.push("tail w1".to_string());
            *expected.entry("tail".into()).or_insert(0) += 1;
            *expected.entry("w1".into()).or_insert(0) += 1;
        }
        std::fs::write(dir.join(format!("part-{f}.txt")), text).unwrap();
    }
    std::fs::write(dir.join("ignored.csv"), "not read\n").unwrap();
    let pattern = format!("{}/part-*.txt", dir.display());
    // Reading fuses with the steps: one task per block, whatever follows.
    let blocks = bag::read_text_with(&pattern, 64).unwrap();
    assert!(blocks.npartitions() > 3);
    for part in blocks.flat_map(words).map(render_len).filter(is_long).to_lazy() {
        assert_eq!(part.graph_len(), 1);
    }
    for (mode, client) in clients() {
        for block in [1u64, 7, 64, 1 << 20] {
            let lines = bag::read_text_with(&pattern, block).unwrap();
            assert_eq!(lines.compute(client).unwrap(), all_lines, "{mode}, block {block}");
            let got: HashMap<String, u64> =
                lines.flat_map(words).frequencies().compute(client).unwrap().into_iter().collect();
            assert_eq!(got, expected, "{mode}, block {block}");
            // The built-in split, fused with the read: the same words, in order.
            let all_words: Vec<String> =
                all_lines.iter().flat_map(|l| l.split_whitespace()).map(String::from).collect();
            assert_eq!(lines.split_whitespace().compute(client).unwrap(), all_words, "{mode}, block {block}");
            // And not fused with a read: after a step, or from stored lines.
            let stored = bag::from_vec(all_lines.clone(), 3).unwrap();
            assert_eq!(stored.split_whitespace().compute(client).unwrap(), all_words, "{mode}");
            let got: HashMap<String, u64> =
                lines.map(words_key).split_whitespace().frequencies().compute(client).unwrap().into_iter().collect();
            assert_eq!(got, expected, "{mode}, block {block}");
        }
        let top = bag::read_text(&pattern).unwrap().flat_map(words).frequencies().topk(1, by_count);
        assert_eq!(top.compute(client).unwrap(), vec![("common".to_string(), expected["common"])], "{mode}");
    }
    let err = bag::read_text(&format!("{}/nothing-*.txt", dir.display())).unwrap_err().to_string();
    assert!(err.contains("no file matches"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_text_decompresses_gz_files_each_one_partition() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("shoal-bag-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gz = |lines: &[String]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for l in lines {
            writeln!(enc, "{l}").unwrap();
        }
        enc.finish().unwrap()
    };
    let plain: Vec<String> = (0..50).map(|i| format!("plain{} w{}", i, i % 3)).collect();
    let first: Vec<String> = (0..300).map(|i| format!("zip{} w{}", i, i % 5)).collect();
    let second: Vec<String> = (0..20).map(|i| format!("member{i}")).collect();
    std::fs::write(dir.join("a.txt"), plain.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    // Two gzip members one after the other, as `cat x.gz y.gz` makes: one stream.
    let mut bytes = gz(&first);
    bytes.extend(gz(&second));
    std::fs::write(dir.join("b.txt.gz"), bytes).unwrap();
    let all: Vec<String> = plain.iter().chain(&first).chain(&second).cloned().collect();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for w in all.iter().flat_map(|l| l.split_whitespace()) {
        *expected.entry(w.to_string()).or_insert(0) += 1;
    }
    let pattern = format!("{}/*", dir.display());
    let lines = bag::read_text_with(&pattern, 64).unwrap();
    // a.txt in blocks of 64 bytes; the .gz, whatever its size, in one.
    let blocks = std::fs::metadata(dir.join("a.txt")).unwrap().len().div_ceil(64) as usize;
    assert_eq!(lines.npartitions(), blocks + 1);
    for (mode, client) in clients() {
        assert_eq!(lines.compute(client).unwrap(), all, "{mode}");
        let got: HashMap<String, u64> =
            lines.flat_map(words).frequencies().compute(client).unwrap().into_iter().collect();
        assert_eq!(got, expected, "{mode}");
    }
    std::fs::write(dir.join("c.gz"), b"not gzip at all\n").unwrap();
    let err = bag::read_text(&pattern).unwrap().count().compute(threads()).unwrap_err().to_string();
    assert!(err.contains("c.gz (read as gzip)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn to_textfiles_writes_one_file_per_partition_that_read_text_reads_back() {
    let dir = std::env::temp_dir().join(format!("shoal-bag-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xs: Vec<u64> = (0..500).map(|i| i * 37 % 101).collect();
    for (mode, client) in clients() {
        let out = format!("{}/{mode}-*.txt", dir.display());
        let paths = bag::from_vec(xs.clone(), 12).unwrap().map(double).to_textfiles(client, &out).unwrap();
        assert_eq!(paths.len(), 12);
        assert!(paths[3].ends_with(&format!("{mode}-0003.txt")), "{paths:?}");
        let back = bag::read_text(&out).unwrap().compute(client).unwrap();
        let expected: Vec<String> = xs.iter().map(|x| (x * 2).to_string()).collect();
        assert_eq!(back, expected, "{mode}");
    }
    let err = bag::from_vec(xs, 2).unwrap().to_textfiles(threads(), "no-star.txt").unwrap_err().to_string();
    assert!(err.contains("exactly one `*`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sources_refuse_no_partitions() {
    assert!(bag::from_vec(vec![1u64], 0).unwrap_err().to_string().contains("at least one partition"));
    assert!(bag::from_lazy::<u64>(Vec::new()).is_err());
}
