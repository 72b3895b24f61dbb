//! Maps keyed by task ids and other counters the pool hands out itself.
//!
//! The keys are sequential integers no outsider chooses, so SipHash's
//! protection against crafted keys buys nothing, and at a few hundred
//! thousand tasks a second its cost shows. A multiply by the golden ratio
//! spreads sequential keys over the whole word, which hashbrown needs (it
//! takes its control bits from the top).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` for pool-assigned integer keys.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one integer key.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; kept correct for any other key.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_over_the_top_bits() {
        let tops: std::collections::HashSet<u64> = (0u64..128)
            .map(|k| {
                let mut h = IdHasher::default();
                h.write_u64(k);
                h.finish() >> 57
            })
            .collect();
        assert!(
            tops.len() > 64,
            "only {} distinct top-7-bit values",
            tops.len()
        );
        let mut m: IdMap<u64, u64> = IdMap::default();
        for k in 0..10_000 {
            m.insert(k, k * 2);
        }
        assert!((0..10_000).all(|k| m[&k] == k * 2));
    }
}
