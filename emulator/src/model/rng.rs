//! Deterministic pseudo-random numbers and integer hashing (std only).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// The SplitMix64 finaliser: a strong bijective 64-bit integer mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a string (FNV-1a over its bytes, then [`mix64`]).
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in s.as_bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Derives an independent stream seed from a seed and a stream index.
pub(crate) fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A non-deterministic seed from the process's randomly keyed hasher.
pub(crate) fn entropy_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish()
}

/// SplitMix64: a tiny, fast, statistically solid 64-bit generator.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A uniform draw from `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform draw from `[-bound, bound)`.
    pub(crate) fn symmetric(&mut self, bound: f32) -> f32 {
        ((2.0 * self.next_f64() - 1.0) * f64::from(bound)) as f32
    }

    /// `len` uniform draws with standard deviation `std` (zero mean).
    pub(crate) fn uniform_vec(&mut self, len: usize, std: f32) -> Vec<f32> {
        let bound = std * 3f32.sqrt();
        (0..len).map(|_| self.symmetric(bound)).collect()
    }
}
