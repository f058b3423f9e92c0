//! Counting words by `&str`: [`WordCounts`], what `split_whitespace()`
//! followed by `frequencies()` uses for each partition, public so that a
//! `map_partitions` function (or a plain Rust loop, such as the rayon
//! reference of `shoal-bench bag-wordcount`) counts the same way.
//!
//! A word already counted costs a hash and an inline compare, no
//! allocation: one `String` is made per *distinct* word, not per word.

use super::registry;

/// Occurrences of words, counted by `&str`.
///
/// ```
/// let mut counts = shoal::bag::WordCounts::new();
/// counts.add_words("the cat and the hat".split_whitespace());
/// let mut other = shoal::bag::WordCounts::new();
/// other.add("cat");
/// counts.merge(other);
/// assert_eq!((counts.get("the"), counts.get("cat"), counts.get("dog")), (2, 2, 0));
/// assert_eq!(counts.len(), 4);
/// let mut pairs: Vec<(String, u64)> = counts.into_iter().collect();
/// pairs.sort();
/// assert_eq!(pairs[0], ("and".to_string(), 1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct WordCounts {
    counts: Counts<u64>,
}

impl WordCounts {
    /// No word counted yet.
    pub fn new() -> WordCounts {
        WordCounts::default()
    }

    /// Counts one occurrence of `word`.
    pub fn add(&mut self, word: &str) {
        self.add_n(word, 1);
    }

    /// Counts `n` occurrences of `word`.
    pub fn add_n(&mut self, word: &str, n: u64) {
        match self.counts.get_mut(&Word(word)) {
            Some(count) => *count += n,
            None => {
                self.counts.insert(word.to_owned(), n);
            }
        }
    }

    /// Counts every word of `words`.
    pub fn add_words<'a>(&mut self, words: impl IntoIterator<Item = &'a str>) {
        for word in words {
            self.add(word);
        }
    }

    /// Adds `other`'s counts to these (the larger map absorbs the smaller,
    /// so merging per-file counts in a tree moves each word few times).
    pub fn merge(&mut self, other: WordCounts) {
        let small = if other.counts.len() > self.counts.len() {
            std::mem::replace(&mut self.counts, other.counts)
        } else {
            other.counts
        };
        for (word, n) in small {
            *self.counts.entry(word).or_insert(0) += n;
        }
    }

    /// How many times `word` was counted (0 if never).
    pub fn get(&self, word: &str) -> u64 {
        self.counts.get(&Word(word)).copied().unwrap_or(0)
    }

    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no word was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

impl IntoIterator for WordCounts {
    type Item = (String, u64);
    type IntoIter = WordCountsIntoIter;

    /// Each distinct word with its count, in no particular order.
    fn into_iter(self) -> WordCountsIntoIter {
        WordCountsIntoIter(self.counts.into_iter())
    }
}

/// The words of a [`WordCounts`] with their counts, in no particular order.
pub struct WordCountsIntoIter(hashbrown::hash_map::IntoIter<String, u64>);

impl Iterator for WordCountsIntoIter {
    type Item = (String, u64);

    fn next(&mut self) -> Option<(String, u64)> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A map from words, with the bag's hasher (see [`registry::Fast`]),
/// looked up by [`Word`].
pub(super) type Counts<V> = hashbrown::HashMap<String, V, registry::Fast>;

/// A borrowed word as a key of [`Counts`]: hashed as its `String` is, and
/// compared inline. Words are a few bytes, where `String`'s own `==` calls
/// `memcmp`, which was a quarter of a word count's CPU.
pub(super) struct Word<'a>(pub(super) &'a str);

impl std::hash::Hash for Word<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Exactly as `String`'s hash (it is `str`'s), or lookups would miss.
        self.0.hash(state);
    }
}

impl hashbrown::Equivalent<String> for Word<'_> {
    fn equivalent(&self, key: &String) -> bool {
        same_bytes(self.0.as_bytes(), key.as_bytes())
    }
}

/// `a == b` for short byte strings without a call: up to 16 bytes as two
/// overlapping words of 8, 4 or 2 bytes (longer ones by the slice `==`).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    /// The first and the last `N` bytes of `s` (`N <= s.len() <= 2N`).
    fn ends<const N: usize>(s: &[u8]) -> ([u8; N], [u8; N]) {
        let (mut head, mut tail) = ([0u8; N], [0u8; N]);
        head.copy_from_slice(&s[..N]);
        tail.copy_from_slice(&s[s.len() - N..]);
        (head, tail)
    }
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        0 => true,
        1 => a[0] == b[0],
        2..=3 => ends::<2>(a) == ends::<2>(b),
        4..=7 => ends::<4>(a) == ends::<4>(b),
        8..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::{WordCounts, same_bytes};

    #[test]
    fn short_byte_strings_compare_as_slices_do() {
        let words: Vec<Vec<u8>> = (0..=20usize)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n).map(|i| b'a' + (i % 7) as u8).collect();
                // Equal, and differing in the first, the middle or the last byte.
                let mut out = vec![base.clone()];
                for at in [0, n / 2, n.saturating_sub(1)] {
                    if n > 0 {
                        let mut other = base.clone();
                        other[at] ^= 1;
                        out.push(other);
                    }
                }
                out
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn words_counted_by_str_match_a_plain_count() {
        let text = "a b a ccc b a dddddddddddddddddddd e é a";
        let mut plain = std::collections::HashMap::<&str, u64>::new();
        for w in text.split_whitespace() {
            *plain.entry(w).or_default() += 1;
        }
        let (mut left, mut right) = (WordCounts::new(), WordCounts::new());
        let words: Vec<&str> = text.split_whitespace().collect();
        left.add_words(words[..4].iter().copied());
        right.add_words(words[4..].iter().copied());
        left.merge(right);
        let mut counted: Vec<(String, u64)> = left.into_iter().collect();
        counted.sort();
        let mut expected: Vec<(String, u64)> = plain.into_iter().map(|(w, n)| (w.to_string(), n)).collect();
        expected.sort();
        assert_eq!(counted, expected);
    }
}
