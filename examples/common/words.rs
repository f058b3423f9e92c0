//! Text files of made-up words for the bag word count (the example and
//! the benchmark make the same files from the same flags).

use std::path::Path;

/// A vocabulary of made-up words, drawn with a skew (a few are frequent,
/// most are rare), as in natural text.
pub fn write_files(dir: &Path, files: usize, lines: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe"];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: a fixed seed, so the same flags make the same files.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for f in 0..files {
        let path = dir.join(format!("text-{f:04}.txt"));
        if path.exists() {
            continue;
        }
        let mut text = String::new();
        for _ in 0..lines {
            for _ in 0..(4 + next() % 8) {
                // Skewed: the minimum of two draws favours small numbers.
                let n = (next() % 4096).min(next() % 4096);
                let (a, b) = (n as usize % syllables.len(), (n as usize / syllables.len()) % syllables.len());
                text.push_str(syllables[a]);
                text.push_str(syllables[b]);
                text.push_str(&(n / 144).to_string());
                text.push(' ');
            }
            text.push('\n');
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}
