//! SplitMix64, keyed by (seed, domain, product, view): any row can be drawn without the rows
//! before it, which is what makes `row(cfg, k)` cheap and equal to the k-th row of `generate`.

/// A SplitMix64 stream. Small, fast and statistically fine for choosing attributes and jitter; it is
/// not meant for anything cryptographic.
#[derive(Clone, Debug)]
pub(super) struct Rng {
    state: u64,
}

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    /// A stream keyed by the catalog seed and a path of integers (a domain tag, then indices).
    /// Each key is pushed through the mixer so that neighbouring indices give unrelated streams.
    pub(super) fn keyed(seed: u64, keys: &[u64]) -> Rng {
        let mut h = mix(seed ^ GAMMA);
        for &k in keys {
            h = mix(h ^ mix(k.wrapping_add(0x632B_E59B_D9B4_E019)));
        }
        Rng { state: h }
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 24 bits, exactly representable as f32.
    pub(super) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (0 when n is 0), by Lemire's multiply-shift, which avoids modulo bias.
    pub(super) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// One element of a table; `fallback` only for an empty table, which the tables here never are.
    pub(super) fn pick<T: Copy>(&mut self, items: &[T], fallback: T) -> T {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or(fallback)
    }

    /// One element of a table, or `None` for an empty one (attributes a category does not have).
    pub(super) fn pick_some<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len())).copied()
    }
}

/// The SplitMix64 finaliser (Stafford's mix 13).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed_and_bounded() {
        let a: Vec<u64> = (0..4).map(|_| Rng::keyed(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::keyed(7, &[1, 2]).next_u64(),
            Rng::keyed(7, &[1, 3]).next_u64()
        );
        assert_ne!(
            Rng::keyed(7, &[1, 2]).next_u64(),
            Rng::keyed(8, &[1, 2]).next_u64()
        );
        let mut r = Rng::keyed(1, &[]);
        for n in [1usize, 2, 9, 1000] {
            for _ in 0..200 {
                assert!(r.below(n) < n);
                let u = r.unit();
                assert!((0.0..1.0).contains(&u));
            }
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.pick::<u8>(&[], 5), 5);
    }
}
