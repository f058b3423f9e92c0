//! Where an attribute is written: in an `impl` or `trait` block, or not.
//!
//! A proc macro is not told what surrounds the item it is applied to, and
//! no expansion can tell either: an `impl` block refuses the items a task
//! needs (its handle `struct`, the `impl Task`), each with rustc's own
//! parse error, before any error of ours could be reached. So for a clear
//! error the macro looks at the source file itself (`Span::local_file`
//! and `Span::line`, stable since Rust 1.88): it lexes the file up to the
//! attribute's line and finds the innermost `{ … }` block open there.
//!
//! # What is judged, and how
//!
//! - The lexer skips comments (nested block comments too), string, byte,
//!   C and raw string literals and character literals, so braces and words
//!   inside them are not counted; a lifetime (`'a`) is not a character.
//! - A block is named by the first of `fn`, `impl`, `trait`, `mod` among
//!   the words since the previous `;`, `{` or `}` (a `;` inside `( … )` or
//!   `[ … ]`, as in `[u8; 4]`, does not count): `fn f() -> impl Trait {`
//!   is a function body, `impl From<fn(u8)> for X {` an `impl` block.
//! - Only a sure answer leads to an error: if the file cannot be read (the
//!   item comes from another macro, or from a file that is gone), the
//!   answer is "unknown" and the task is expanded as usual.

use std::path::Path;

/// The kind of the innermost block around a place in a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The file's top level.
    Module,
    /// An `impl` block.
    Impl,
    /// A `trait` block.
    Trait,
    /// A function body, a `mod { … }`, a `struct { … }`, an expression …
    Other,
}

/// The innermost block open at the start of line `line` (1-based) of the
/// file at `path`; `None` if the file cannot be read or has fewer lines.
pub fn block_at(path: &Path, line: usize) -> Option<Block> {
    let text = std::fs::read_to_string(path).ok()?;
    let offset = line_start(&text, line)?;
    Some(block_before(&text[..offset]))
}

/// The byte offset where line `line` (1-based) starts.
fn line_start(text: &str, line: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    if line == 1 {
        return Some(0);
    }
    text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
}

/// The innermost block still open at the end of `text`.
pub fn block_before(text: &str) -> Block {
    let b = text.as_bytes();
    // The blocks open, innermost last.
    let mut open: Vec<Block> = Vec::new();
    // The first block keyword since the last `;`, `{` or `}`, and the
    // depth of `(`/`[` since then.
    let mut header: Option<Block> = None;
    let mut nest = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                continue;
            }
            b'"' => {
                i = skip_string(b, i + 1);
                continue;
            }
            b'\'' => {
                i = skip_quote(b, i);
                continue;
            }
            b'{' => {
                open.push(header.take().unwrap_or(Block::Other));
                nest = 0;
            }
            b'}' => {
                open.pop();
                header = None;
                nest = 0;
            }
            b';' if nest == 0 => header = None,
            b'(' | b'[' => nest += 1,
            b')' | b']' => nest = nest.saturating_sub(1),
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let end =
                    b[i..].iter().position(|&c| !(c == b'_' || c.is_ascii_alphanumeric())).map_or(b.len(), |n| i + n);
                let word = &text[i..end];
                // A raw string (`r"…"`, `r#"…"#`, `br"…"`) or a byte / C
                // string (`b"…"`, `c"…"`) starts like a word.
                match (word, b.get(end)) {
                    ("r" | "br" | "cr", Some(b'"' | b'#')) => {
                        i = skip_raw_string(b, end);
                        continue;
                    }
                    ("b" | "c", Some(b'"')) => {
                        i = skip_string(b, end + 1);
                        continue;
                    }
                    ("b", Some(b'\'')) => {
                        i = skip_quote(b, end);
                        continue;
                    }
                    _ => {}
                }
                if header.is_none() {
                    header = match word {
                        "fn" | "mod" => Some(Block::Other),
                        "impl" => Some(Block::Impl),
                        "trait" => Some(Block::Trait),
                        _ => None,
                    };
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    open.last().copied().unwrap_or(Block::Module)
}

/// Past a (nested) block comment starting at `i` (at `/*`).
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Past a string whose text starts at `i` (after its `"`).
fn skip_string(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Past a raw string whose `#`s or `"` start at `i` (after its `r`).
fn skip_raw_string(b: &[u8], mut i: usize) -> usize {
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    i += hashes;
    if b.get(i) != Some(&b'"') {
        // `r#impl`: a raw identifier, not a string (nor a keyword).
        return b[i..].iter().position(|&c| !(c == b'_' || c.is_ascii_alphanumeric())).map_or(b.len(), |n| i + n);
    }
    i += 1;
    while i < b.len() {
        if b[i] == b'"' && b[i + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    b.len()
}

/// Past a character literal or a lifetime starting at `i` (at `'`).
fn skip_quote(b: &[u8], i: usize) -> usize {
    match b.get(i + 1) {
        // `'\n'`, `'\''`, `'\u{1F600}'`: up to the closing quote.
        Some(b'\\') => b[i + 3..].iter().position(|&c| c == b'\'').map_or(b.len(), |n| i + 3 + n + 1),
        // `'a'` or `'é'` (one character, maybe several bytes): a closing
        // quote right after it. Otherwise a lifetime `'a`: only the quote.
        Some(_) => {
            let len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
                .or_else(|e| std::str::from_utf8(&b[i + 1..i + 1 + e.valid_up_to()]))
                .ok()
                .and_then(|s| s.chars().next())
                .map_or(1, char::len_utf8);
            if b.get(i + 1 + len) == Some(&b'\'') { i + 2 + len } else { i + 1 }
        }
        None => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block open where `@` stands in `src`.
    fn at(src: &str) -> Block {
        block_before(&src[..src.find('@').expect("a marker")])
    }

    #[test]
    fn methods_and_trait_items_are_found_and_free_functions_are_not() {
        assert_eq!(at("struct P;\nimpl P {\n    @fn parse() {}\n}"), Block::Impl);
        assert_eq!(at("impl<T: Fn(u8)> Tr for P<T> where T: Clone {\n @"), Block::Impl);
        assert_eq!(at("pub unsafe impl Send for P {} trait T {\n @"), Block::Trait);
        assert_eq!(at("fn a() {}\n@fn parse() {}"), Block::Module);
        assert_eq!(at("mod m {\n @"), Block::Other);
        assert_eq!(at("impl P {\n fn f() {\n @"), Block::Other, "a task inside a method's body is a free fn");
        assert_eq!(at("fn f() -> impl Iterator<Item = u8> {\n @"), Block::Other);
        assert_eq!(at("impl From<fn(u8)> for P {\n @"), Block::Impl);
        assert_eq!(at("impl Tr for [u8; 4] {\n @"), Block::Impl);
        assert_eq!(at("fn f(x: [u8; 4]) {\n @"), Block::Other);
        assert_eq!(at("impl P { fn f() {} }\n@"), Block::Module);
    }

    #[test]
    fn braces_and_words_in_comments_strings_and_chars_do_not_count() {
        assert_eq!(at("// impl X {\n@"), Block::Module);
        assert_eq!(at("/* impl /* nested */ X { */\n@"), Block::Module);
        assert_eq!(at("const S: &str = \"impl X { \\\" {\";\n@"), Block::Module);
        assert_eq!(at("const S: &str = r#\"impl X { \"# ;\n@"), Block::Module);
        assert_eq!(at("const S: &[u8] = br\"{\";\n@"), Block::Module);
        assert_eq!(at("const C: char = '{'; const D: u8 = b'}'; const E: char = '\\'';\n@"), Block::Module);
        assert_eq!(at("fn f<'a>(x: &'a str) -> &'a str { x }\n@"), Block::Module, "lifetimes are not chars");
        assert_eq!(at("const C: char = 'é'; impl P {\n@"), Block::Impl);
        assert_eq!(at("fn r#impl() {}\n@"), Block::Module);
        assert_eq!(at("static r#impl: S = S {\n@"), Block::Other, "a raw identifier is no keyword");
    }

    #[test]
    fn lines_are_counted_from_one_and_a_missing_file_is_unknown() {
        let text = "a\nb\nc";
        assert_eq!((line_start(text, 1), line_start(text, 3), line_start(text, 4)), (Some(0), Some(4), None));
        assert_eq!(block_at(Path::new("/nonexistent/shoal/x.rs"), 1), None);
    }
}
