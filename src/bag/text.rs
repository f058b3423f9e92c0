//! `bag::read_text`: the lines of text files, as a `Bag<String>`.
//!
//! A file is split into blocks of about `block_size` bytes, one partition
//! each. A partition reads the lines that *start* in its byte range
//! `[start, end)`: it skips the partial line at `start` (the previous block
//! reads it whole) and reads on past `end` to finish its last line, so every
//! line is read exactly once, whatever the block size. Lines lose their
//! `\n` (and a `\r` before it); a line that is not UTF-8 fails its task.
//! The block is read by the first task of its partition's pipeline, so
//! reading fuses with the steps after it (one task per block).
//!
//! A file whose name ends in `.gz` is decompressed as it is read (flate2,
//! its pure-Rust backend; concatenated gzip members are read as one
//! stream, as `gzip -d` does). A gzip stream cannot be entered in the
//! middle, so such a file is one partition whatever its size: many
//! smaller `.gz` files spread better than one big one.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use super::registry::Stream;
use super::words::{Counts, Word, WordCounts};
use super::{Bag, PartSrc, invalid, registry};
use crate::error::Result;

/// The default block size of [`read_text`]: 64 MiB, big enough that a
/// task's work dwarfs its scheduling, small enough to spread a big file.
pub const DEFAULT_BLOCK_SIZE: u64 = 64 << 20;

/// The lines of the files matching `pattern`, in order of file name then
/// line (blocks of [`DEFAULT_BLOCK_SIZE`]). The pattern is a path whose
/// last component may hold `*` (any characters) and `?` (one character),
/// like `data/2015-*.txt`; a pattern without them names one file.
pub fn read_text(pattern: &str) -> Result<Bag<String>> {
    read_text_with(pattern, DEFAULT_BLOCK_SIZE)
}

/// [`read_text`] with partitions of about `block_size` bytes (at least 1).
pub fn read_text_with(pattern: &str, block_size: u64) -> Result<Bag<String>> {
    let block_size = block_size.max(1);
    let files = matching(pattern)?;
    let mut parts = Vec::new();
    for file in files {
        let name = file.to_string_lossy().into_owned();
        if is_gzip(&name) {
            parts.push(PartSrc::Gzip { path: name });
            continue;
        }
        let len = std::fs::metadata(&file)?.len();
        let mut start = 0;
        loop {
            let end = (start + block_size).min(len);
            parts.push(PartSrc::Text { path: name.clone(), start, end });
            start = end;
            if start >= len {
                break;
            }
        }
    }
    Ok(Bag::from_parts(parts, registry::item_name::<String>()))
}

/// Whether a file is read as gzip (by its name, as Dask's
/// `compression="infer"` does).
fn is_gzip(path: &str) -> bool {
    path.ends_with(".gz")
}

/// The files a pattern names, sorted.
fn matching(pattern: &str) -> Result<Vec<std::path::PathBuf>> {
    let path = std::path::Path::new(pattern);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?']) {
        return if path.is_file() {
            Ok(vec![path.to_path_buf()])
        } else {
            Err(invalid(format!("bag::read_text: `{pattern}` is not a file")))
        };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(invalid(format!(
            "bag::read_text: `{pattern}`: only the file name may hold `*` or `?`, not the directory"
        )));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_str().is_some_and(|n| wildcard(name, n)) {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        return Err(invalid(format!("bag::read_text: no file matches `{pattern}`")));
    }
    files.sort();
    Ok(files)
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Greedy matching with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The lines that start in `[start, end)` of `path` (see the module docs),
/// read by the partition's pipeline task itself: the block is read into one
/// buffer, checked as UTF-8 once, and its lines are handed out one at a
/// time (no `Vec` of lines).
pub(super) fn read_lines(path: &str, start: u64, end: u64) -> std::io::Result<Lines> {
    let mut file = open(path)?;
    // Begin one byte early: if that byte is a newline, a line starts at
    // `start` exactly; otherwise the partial line belongs to the block before.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(file);
    let mut pos = from;
    if start > 0 {
        pos += reader.read_until(b'\n', &mut Vec::new())? as u64;
    }
    let mut buf = Vec::new();
    if pos < end {
        (&mut reader).take(end - pos).read_to_end(&mut buf)?;
        // The last line starts before `end`: read it to its end.
        if buf.last().is_some_and(|&b| b != b'\n') {
            reader.read_until(b'\n', &mut buf)?;
        }
    }
    Lines::new(buf, path)
}

/// Every line of the gzip file `path`, decompressed as it is read.
pub(super) fn read_gzip_lines(path: &str) -> std::io::Result<Lines> {
    let mut buf = Vec::new();
    flate2::read::MultiGzDecoder::new(BufReader::new(open(path)?))
        .read_to_end(&mut buf)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bag::read_text: {path} (read as gzip): {e}")))?;
    Lines::new(buf, path)
}

fn open(path: &str) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bag::read_text: could not open {path}: {e}")))
}

/// The lines of a block of text, one `String` each, without their `\n`
/// (nor a `\r` before it).
pub(super) struct Lines {
    text: String,
    pos: usize,
}

impl Lines {
    fn new(bytes: Vec<u8>, path: &str) -> std::io::Result<Lines> {
        let text = String::from_utf8(bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
        Ok(Lines { text, pos: 0 })
    }
}

impl Lines {
    /// The block's words instead of its lines (the same words: a line
    /// break is whitespace).
    pub(super) fn into_words(self) -> Words {
        Words { rest: Box::new(std::iter::empty()), text: self.text, pos: self.pos }
    }
}

/// The whitespace-separated words of a sequence of strings (as
/// `str::split_whitespace` finds them), a partition of its own type rather
/// than a [`Stream`]: each string is scanned in place, so a word handed out
/// costs one allocation and a string none, and a reduction that only
/// counts or dedups the words ([`Words::frequencies`], [`Words::distinct`])
/// looks each one up by `&str` and allocates once per *distinct* word.
pub(super) struct Words {
    /// The strings after `text`.
    rest: Stream<String>,
    /// The string being split, from byte `pos` on.
    text: String,
    pos: usize,
}

impl Words {
    pub(super) fn new(strings: Stream<String>) -> Words {
        Words { rest: strings, text: String::new(), pos: 0 }
    }

    /// Every string's words, from where the iteration stopped, in order.
    fn for_each_word(self, mut f: impl FnMut(&str)) {
        let Words { rest, text, pos } = self;
        text.get(pos..).unwrap_or("").split_whitespace().for_each(&mut f);
        for s in rest {
            s.split_whitespace().for_each(&mut f);
        }
    }

    /// Each distinct word and its number of occurrences.
    pub(super) fn frequencies(self) -> Vec<(String, u64)> {
        let mut counts = WordCounts::new();
        self.for_each_word(|w| counts.add(w));
        counts.into_iter().collect()
    }

    /// Each distinct word once.
    pub(super) fn distinct(self) -> Vec<String> {
        let mut seen: Counts<()> = Counts::default();
        self.for_each_word(|w| {
            if !seen.contains_key(&Word(w)) {
                seen.insert(w.to_owned(), ());
            }
        });
        seen.into_keys().collect()
    }
}

impl Iterator for Words {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let rest = self.text.get(self.pos..).unwrap_or("");
            if let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
                let len = rest[start..].find(char::is_whitespace).unwrap_or(rest.len() - start);
                let word = rest[start..start + len].to_string();
                self.pos += start + len;
                return Some(word);
            }
            self.text = self.rest.next()?;
            self.pos = 0;
        }
    }
}

impl Iterator for Lines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let (line, used) = match rest.find('\n') {
            Some(i) => (rest[..i].strip_suffix('\r').unwrap_or(&rest[..i]), i + 1),
            None => (rest, rest.len()),
        };
        self.pos += used;
        Some(line.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard("*.txt", "a.txt"));
        assert!(wildcard("2015-*-*.json", "2015-01-02.json"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "abbc"));
        assert!(!wildcard("*.txt", "a.txt.gz"));
        assert!(wildcard("*", ""));
    }
}
