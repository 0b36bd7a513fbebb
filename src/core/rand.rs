//! Non-cryptographic randomness for jitter and idempotency keys (no extra crate): a
//! per-thread SplitMix64 stream seeded from the standard library's random hasher keys.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// The next 64 random bits.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    })
}

/// A uniform number in [0, 1).
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A version-4 UUID string.
pub fn uuid4() -> String {
    let (a, b) = (next_u64(), next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_is_in_range_and_uuids_differ() {
        for _ in 0..1000 {
            let u = super::unit();
            assert!((0.0..1.0).contains(&u));
        }
        let (a, b) = (super::uuid4(), super::uuid4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
