//! A fast, seeded hasher for the scheduler's maps (keys → tasks, worker ids
//! → workers), and for any other map keyed by task keys (the facade's lazy
//! graph builder: a million-task graph is a million inserts and lookups).
//!
//! Every task costs a key insert, lookup and removal, and every event a few
//! worker lookups: with std's SipHash that was a sixth of the scheduler's
//! time. Keys are already hashes (or counters mixed with a random seed), so
//! a multiply-and-fold mix is enough to spread them; the mix starts from a
//! random state drawn per map, as ahash's fallback does, so that keys crafted
//! by a remote client cannot be made to collide without knowing it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// An odd constant with well-spread bits (from PCG).
const MULTIPLE: u64 = 6_364_136_223_846_793_005;

/// The high and low halves of the 128-bit product, xored: every input bit
/// reaches every output bit.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Builds [`FoldHasher`]s that all start from one random state.
#[derive(Clone)]
pub struct SeededState {
    start: u64,
    pad: u64,
}

impl Default for SeededState {
    fn default() -> Self {
        let random = RandomState::new();
        SeededState { start: random.hash_one(1u64), pad: random.hash_one(2u64) | 1 }
    }
}

impl BuildHasher for SeededState {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: self.start, pad: self.pad }
    }
}

/// A multiply-and-fold hasher started from a [`SeededState`].
pub struct FoldHasher {
    state: u64,
    pad: u64,
}

impl FoldHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, MULTIPLE);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let rot = (self.state & 63) as u32;
        folded_multiply(self.state, self.pad).rotate_left(rot)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::key::Key;

    #[test]
    fn spreads_sequential_keys_over_the_low_bits() {
        // hashbrown picks buckets with the low bits: counters must spread.
        let state = SeededState::default();
        let buckets: HashSet<u64> =
            (0..4096u64).map(|i| state.hash_one(Key { func: 0, token: [i, 0] }) & 4095).collect();
        assert!(buckets.len() > 2400, "only {} of 4096 buckets used", buckets.len());
    }

    #[test]
    fn every_part_of_a_key_matters() {
        let state = SeededState::default();
        let base = Key { func: 1, token: [2, 3] };
        let h = state.hash_one(base);
        assert_ne!(h, state.hash_one(Key { func: 0, ..base }));
        assert_ne!(h, state.hash_one(Key { token: [0, 3], ..base }));
        assert_ne!(h, state.hash_one(Key { token: [2, 0], ..base }));
    }
}
