//! NumPy's `np.random.default_rng(seed)`, bit for bit: `SeedSequence`, the `PCG64` bit
//! generator, and the `Generator.shuffle` / `Generator.permutation` pair built on them.
//!
//! Hugging Face `datasets` draws every shuffle and split from this generator, so reproducing
//! its rows in Rust means reproducing NumPy's exact stream, not merely "a PCG64". The pieces
//! and the NumPy files they follow:
//!
//! - [`SeedSequence`]: `numpy/random/bit_generator.pyx` (O'Neill's `seed_seq` alternative:
//!   a 4-word entropy pool filled by `hashmix` and stirred by `mix`).
//! - [`Pcg64`]: `numpy/random/src/pcg64/pcg64.{h,c}` (128-bit LCG with the XSL-RR output,
//!   seeded by `pcg64_set_seed` from four 64-bit `generate_state` words) and its 32-bit
//!   draw, which hands out the two halves of one 64-bit draw, low half first.
//! - [`Generator::random_interval`]: `random_interval` in
//!   `numpy/random/src/distributions/distributions.c` (bit-mask rejection).
//! - [`Generator::shuffle`] / [`Generator::permutation`]: `numpy/random/_generator.pyx`
//!   (Fisher–Yates from the last element down, `j = random_interval(i)`).
//!
//! `Generator` carries no compatibility promise in NumPy; the values here were checked
//! against NumPy 2.4.6 (see `tools/reference/split_fixtures.py`).

/// Words in the entropy pool; NumPy's `DEFAULT_POOL_SIZE`, which `default_rng` uses.
pub const POOL_SIZE: usize = 4;

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
/// Half the bits of a `u32`: the xor-shift in `hashmix`, `mix` and `generate_state`.
const XSHIFT: u32 = 16;

/// The LCG multiplier of PCG64 (`PCG_DEFAULT_MULTIPLIER_128`).
const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924_u128 << 64) | 4_865_540_595_714_422_341;

/// `np.random.default_rng(seed)`: a [`Generator`] over [`Pcg64`] seeded through
/// [`SeedSequence::new`].
pub fn default_rng(seed: u64) -> Generator {
    Generator::new(Pcg64::new(&SeedSequence::new(seed)))
}

/// NumPy's `SeedSequence` with the default pool of [`POOL_SIZE`] words and no spawn key:
/// it turns a seed of any size into well-mixed state words for a bit generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// `SeedSequence(seed)` for a non-negative Python int that fits in 64 bits.
    ///
    /// NumPy splits the int into 32-bit words, lowest first, with no high zero words (0
    /// itself is the single word `[0]`): `5` is `[5]`, `2**32` is `[0, 1]`. Up to the pool
    /// size a high zero word hashes exactly like the pool's zero padding, so `[5]` and
    /// `[5, 0]` agree; beyond it they would not, which is why this follows Python's coercion
    /// rather than always passing two words.
    pub fn new(seed: u64) -> Self {
        let lo = seed as u32;
        let hi = (seed >> 32) as u32;
        if hi == 0 {
            Self::from_words(&[lo])
        } else {
            Self::from_words(&[lo, hi])
        }
    }

    /// `SeedSequence(entropy)` from entropy already coerced to `uint32` words, lowest first
    /// (what NumPy's `_coerce_to_uint32_array` produces for an int or a list of ints).
    pub fn from_words(entropy: &[u32]) -> Self {
        let mut pool = [0u32; POOL_SIZE];
        // One running multiplier threads through every hash below; NumPy's `mix_entropy`
        // shares it across all three loops, so the order of the calls is part of the output.
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            // Short entropy is padded by hashing zeros, not by leaving the pool at zero.
            let word = entropy.get(i).copied().unwrap_or(0);
            *slot = hashmix(word, &mut hash_const);
        }
        // Every pool word is mixed into every other, so late words affect early ones.
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let hashed = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], hashed);
                }
            }
        }
        // Entropy beyond the pool is folded into each pool word in turn.
        for &word in entropy.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let hashed = hashmix(word, &mut hash_const);
                *slot = mix(*slot, hashed);
            }
        }
        Self { pool }
    }

    /// The mixed entropy pool (NumPy's `SeedSequence.pool`).
    pub fn pool(&self) -> [u32; POOL_SIZE] {
        self.pool
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        self.pool
            .iter()
            .cycle()
            .take(n_words)
            .map(|&word| {
                let mut value = word ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash_const);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: twice as many 32-bit words, paired
    /// little-endian (the first word of each pair is the low half), as NumPy's
    /// `view('<u8')` does on every platform.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        self.generate_state_u32(2 * n_words)
            .chunks_exact(2)
            .map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32))
            .collect()
    }
}

/// NumPy's `PCG64` bit generator (PCG XSL RR 128/64), with the half-word buffer NumPy keeps
/// for 32-bit draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    /// The upper half of the last 64-bit draw, owed to the next 32-bit draw. NumPy's
    /// `pcg64_next32` returns the low half of a fresh draw and keeps the high half here, so a
    /// bounded draw below 2^32 consumes half a step; dropping this changes every later value.
    pending_u32: Option<u32>,
}

impl Pcg64 {
    /// `PCG64(seed_seq)`: seeds from `generate_state(4, np.uint64)` the way `pcg64_set_seed`
    /// does, with words 0–1 as the initial state and words 2–3 as the stream selector, each
    /// read as (high, low).
    pub fn new(seed_seq: &SeedSequence) -> Self {
        let words = seed_seq.generate_state_u64(4);
        let init_state = (u128::from(words[0]) << 64) | u128::from(words[1]);
        let init_seq = (u128::from(words[2]) << 64) | u128::from(words[3]);
        // `pcg_setseq_128_srandom_r`: the increment must be odd, and the state is stepped
        // once before and once after adding the initial state.
        let mut rng = Self {
            state: 0,
            inc: (init_seq << 1) | 1,
            pending_u32: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(init_state);
        rng.step();
        rng
    }

    /// The 128-bit LCG state and increment (NumPy's `bit_generator.state['state']`).
    pub fn state(&self) -> (u128, u128) {
        (self.state, self.inc)
    }

    /// One 64-bit draw (`next_uint64`, also what `random_raw` returns). It does not touch the
    /// pending 32-bit half, exactly as in NumPy.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        // XSL-RR: fold the halves together, then rotate by the top six bits of the state.
        let rot = (self.state >> 122) as u32;
        let folded = ((self.state >> 64) as u64) ^ (self.state as u64);
        folded.rotate_right(rot)
    }

    /// One 32-bit draw (`next_uint32`): the pending high half if there is one, else the low
    /// half of a fresh 64-bit draw, keeping its high half for next time.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(half) = self.pending_u32.take() {
            return half;
        }
        let draw = self.next_u64();
        self.pending_u32 = Some((draw >> 32) as u32);
        draw as u32
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }
}

/// The subset of NumPy's `Generator` that `datasets` uses to shuffle and split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    bit_generator: Pcg64,
}

impl Generator {
    /// `Generator(bit_generator)`.
    pub fn new(bit_generator: Pcg64) -> Self {
        Self { bit_generator }
    }

    /// The underlying bit generator (NumPy's `Generator.bit_generator`).
    pub fn bit_generator(&mut self) -> &mut Pcg64 {
        &mut self.bit_generator
    }

    /// A uniform integer in `0..=max`, by NumPy's `random_interval`: draw under the smallest
    /// all-ones mask covering `max` and reject values above it.
    ///
    /// For `max` up to `u32::MAX` it draws 32 bits at a time (halves of 64-bit draws), above
    /// that whole 64-bit draws. Shuffles always take the 32-bit branch in practice, which is
    /// why the buffered half in [`Pcg64::next_u32`] matters; NumPy's `integers` uses a
    /// different (Lemire) method, so it is no substitute here.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.bit_generator.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        } else {
            loop {
                let value = self.bit_generator.next_u64() & mask;
                if value <= max {
                    return value;
                }
            }
        }
    }

    /// `Generator.shuffle(x)` for a 1-D array: Fisher–Yates from the last position down to 1,
    /// swapping position `i` with `random_interval(i)`. Empty and one-element slices draw
    /// nothing.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            // `usize` to `u64` is lossless on every target Rust supports, and the draw is at
            // most `i`, so it converts back without loss.
            let j = self.random_interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `Generator.permutation(n)`: `arange(n)` shuffled.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..n).collect();
        self.shuffle(&mut items);
        items
    }
}

/// `hashmix` from `bit_generator.pyx`; `hash_const` is advanced in place.
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

/// `mix` from `bit_generator.pyx`.
fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Fixture {
        numpy: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        seed: u64,
        pool: Vec<u32>,
        generate_state_u32_8: Vec<u32>,
        generate_state_u64_4: Vec<u64>,
        pcg_state: String,
        pcg_inc: String,
        random_raw_5: Vec<u64>,
        permutation_10: Vec<usize>,
        permutation_1000: Vec<usize>,
    }

    fn check(case: &Case) {
        let seed = case.seed;
        let seq = SeedSequence::new(seed);
        assert_eq!(seq.pool().to_vec(), case.pool, "pool, seed {seed}");
        assert_eq!(
            seq.generate_state_u32(8),
            case.generate_state_u32_8,
            "generate_state(8, uint32), seed {seed}"
        );
        assert_eq!(
            seq.generate_state_u64(4),
            case.generate_state_u64_4,
            "generate_state(4, uint64), seed {seed}"
        );

        let mut bit_generator = Pcg64::new(&seq);
        let expected_state = (
            u128::from_str_radix(&case.pcg_state, 16).unwrap(),
            u128::from_str_radix(&case.pcg_inc, 16).unwrap(),
        );
        assert_eq!(
            bit_generator.state(),
            expected_state,
            "PCG64 state, seed {seed}"
        );
        let raw: Vec<u64> = (0..5).map(|_| bit_generator.next_u64()).collect();
        assert_eq!(raw, case.random_raw_5, "random_raw(5), seed {seed}");

        assert_eq!(
            default_rng(seed).permutation(10),
            case.permutation_10,
            "permutation(10), seed {seed}"
        );
        assert_eq!(
            default_rng(seed).permutation(1000),
            case.permutation_1000,
            "permutation(1000), seed {seed}"
        );
    }

    // Expected values: tools/reference/split_fixtures.py (real NumPy) -> rng.json.
    #[test]
    fn matches_numpy_for_every_fixture_seed() {
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../../../tests/fixtures/split/rng.json"))
                .unwrap();
        assert_eq!(fixture.numpy, "2.4.6");
        assert_eq!(fixture.cases.len(), 7);
        for case in &fixture.cases {
            check(case);
        }
    }

    // The same NumPy values written out, so the most-used seed reads without the fixture:
    // np.random.SeedSequence(42).generate_state(4, np.uint64),
    // np.random.default_rng(42).bit_generator.random_raw(5), ....permutation(10).
    #[test]
    fn seed_42_by_hand() {
        assert_eq!(
            SeedSequence::new(42).generate_state_u64(4),
            [
                11_465_652_750_463_011_511,
                15_382_171_918_060_459_190,
                9_018_504_550_953_525_431,
                3_703_499_796_004_394_495,
            ]
        );
        let mut rng = default_rng(42);
        let raw: Vec<u64> = (0..5).map(|_| rng.bit_generator().next_u64()).collect();
        assert_eq!(
            raw,
            [
                14_276_969_152_011_380_360,
                8_095_878_257_575_067_585,
                15_838_336_090_824_644_132,
                12_864_169_557_245_331_597,
                1_737_265_434_024_182_251,
            ]
        );
        assert_eq!(
            default_rng(42).permutation(10),
            [5, 6, 0, 7, 3, 2, 4, 9, 1, 8]
        );
    }

    // Pools from NumPy 2.4.6: `np.random.SeedSequence(7).pool`, `SeedSequence([7, 0]).pool`
    // and `SeedSequence([7, 0, 0, 0, 0]).pool`.
    #[test]
    fn high_zero_words_match_padding_only_within_the_pool() {
        let seven = [1_898_436_647, 3_671_616_036, 1_028_708_257, 1_005_235_980];
        assert_eq!(SeedSequence::new(7).pool(), seven);
        assert_eq!(SeedSequence::from_words(&[7, 0]).pool(), seven);
        assert_eq!(
            SeedSequence::from_words(&[7, 0, 0, 0, 0]).pool(),
            [2_334_115_508, 1_396_349_838, 1_831_729_763, 502_016_109]
        );
        assert_eq!(
            SeedSequence::new(1 << 32),
            SeedSequence::from_words(&[0, 1])
        );
    }

    #[test]
    fn thirty_two_bit_draws_split_one_sixty_four_bit_draw_low_half_first() {
        let mut whole = default_rng(42);
        let mut halves = whole.clone();
        let draw = whole.bit_generator().next_u64();
        assert_eq!(halves.bit_generator().next_u32(), draw as u32);
        assert_eq!(halves.bit_generator().next_u32(), (draw >> 32) as u32);
        // Both generators have now consumed exactly one LCG step.
        assert_eq!(
            halves.bit_generator().next_u64(),
            whole.bit_generator().next_u64()
        );
    }

    #[test]
    fn random_interval_above_u32_uses_whole_draws_under_a_mask() {
        let max = (1u64 << 40) + 12_345;
        let mask = (1u64 << 41) - 1;
        let mut rng = default_rng(1234);
        let mut raw = rng.clone();
        let expected = loop {
            let value = raw.bit_generator().next_u64() & mask;
            if value <= max {
                break value;
            }
        };
        assert_eq!(rng.random_interval(max), expected);
        assert_eq!(rng, raw, "the same draws were consumed");
        assert_eq!(rng.random_interval(0), 0);
        assert_eq!(rng, raw, "max 0 draws nothing");
    }

    #[test]
    fn shuffle_of_short_slices_draws_nothing() {
        let mut rng = default_rng(3);
        let before = rng.clone();
        rng.shuffle::<u8>(&mut []);
        rng.shuffle(&mut [9]);
        assert_eq!(rng, before);
        assert_eq!(rng.permutation(0), Vec::<usize>::new());
    }
}
