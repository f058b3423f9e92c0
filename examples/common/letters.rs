//! The count_letters data: files of random ASCII letters, and the per-file
//! work (read, sort, count). Shared by `examples/count_letters.rs` and the
//! `count-letters` benchmark (included with `#[path]`), so both measure the
//! same thing.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the files go by default: a folder under the system temp dir.
pub fn default_dir(files: usize, size: u64) -> PathBuf {
    std::env::temp_dir().join(format!("shoal-letters-{files}x{size}"))
}

/// Make sure `dir` holds `files` files of exactly `size` random letters
/// (files already there with the right size are kept); their paths.
pub fn ensure_files(dir: &Path, files: usize, size: u64) -> io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(files);
    for i in 0..files {
        let path = dir.join(format!("part-{i:05}.txt"));
        let fresh = fs::metadata(&path).map(|m| m.len() == size).unwrap_or(false);
        if !fresh {
            write_letters(&path, size, i as u64)?;
        }
        let path =
            path.into_os_string().into_string().map_err(|p| io::Error::other(format!("path is not UTF-8: {p:?}")))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Write `size` pseudo-random letters `a`–`z` (xorshift64*, seeded by the
/// file number: the same files every time, fast to make).
fn write_letters(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let tmp = path.with_extension("tmp");
    let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        for b in &mut buf[..n] {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
            *b = b'a' + (r % 26) as u8;
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    drop(out);
    fs::rename(tmp, path)
}

/// The work of one file: read it, sort its bytes, count them.
pub fn count_file(path: &str) -> io::Result<u64> {
    let mut data = fs::read(path)?;
    data.sort_unstable();
    Ok(data.len() as u64)
}
