//! Choosing the next token from a row of logits, in transformers' order: repetition penalty →
//! temperature → top-k → top-p → sample (or argmax when greedy).
//!
//! Each processor works in place on one row of float32 logits, as transformers 5.24's
//! `RepetitionPenaltyLogitsProcessor`, `TemperatureLogitsWarper`, `TopKLogitsWarper` and
//! `TopPLogitsWarper` do (with `min_tokens_to_keep = 1` and filtered values set to `-inf`).
//! Like `generate`, a processor whose setting is neutral (penalty 1, temperature 1, `top_k` 0,
//! `top_p` ≥ 1) is not run at all; this matters for top-p, which would otherwise drop tokens whose
//! probability underflows to zero. Random draws come from [`Rng`], a small seeded generator, so the
//! same seed gives the same tokens on every platform (not the same tokens as PyTorch's generator).

/// How the next token is picked once the repetition penalty is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The highest logit (the first one on ties, as `torch.argmax`).
    Greedy,
    /// A draw from the softmax of the warped logits.
    Sample {
        /// Divides the logits; must be > 0 (1 leaves them unchanged).
        temperature: f32,
        /// Keeps the `top_k` highest logits and every logit tied with the last of them; 0 keeps
        /// all.
        top_k: usize,
        /// Keeps the smallest set of most probable tokens whose probabilities add up to at least
        /// `top_p`; 1 keeps all.
        top_p: f32,
        /// Seed of the [`Rng`] of one `generate` call.
        seed: u64,
    },
}

/// The full decoding rule of one step: the repetition penalty and the [`Sampling`] mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsPipeline {
    /// Penalty for every token id already in the sequence (prompt included); 1 disables it.
    pub repetition_penalty: f32,
    /// Greedy or sampled choice.
    pub sampling: Sampling,
}

impl LogitsPipeline {
    /// Processes `logits` in place and returns the chosen token. `previous` holds the ids already
    /// in the sequence (prompt and generated tokens, padding excluded).
    pub fn next_token(&self, logits: &mut [f32], previous: &[u32], rng: &mut Rng) -> u32 {
        if self.repetition_penalty != 1.0 {
            apply_repetition_penalty(logits, previous, self.repetition_penalty);
        }
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
                ..
            } => {
                if temperature != 1.0 {
                    apply_temperature(logits, temperature);
                }
                if top_k != 0 {
                    apply_top_k(logits, top_k, 1);
                }
                if top_p < 1.0 {
                    apply_top_p(logits, top_p, 1);
                }
                sample(logits, rng)
            }
        }
    }
}

/// Divides positive logits and multiplies negative ones by `penalty`, once per distinct id in
/// `previous` (ids outside the vocabulary are ignored).
pub fn apply_repetition_penalty(logits: &mut [f32], previous: &[u32], penalty: f32) {
    let mut ids: Vec<usize> = previous
        .iter()
        .map(|&id| id as usize)
        .filter(|&id| id < logits.len())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let x = logits[id];
        logits[id] = if x < 0.0 { x * penalty } else { x / penalty };
    }
}

/// Divides every logit by `temperature`.
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    for x in logits.iter_mut() {
        *x /= temperature;
    }
}

/// Sets to `-inf` every logit below the `max(top_k, min_tokens_to_keep)`-th largest one (ties
/// with that value are kept).
pub fn apply_top_k(logits: &mut [f32], top_k: usize, min_tokens_to_keep: usize) {
    let k = top_k.max(min_tokens_to_keep).min(logits.len());
    if k == 0 || k == logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for x in logits.iter_mut() {
        if *x < threshold {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// Nucleus filtering: with the tokens sorted by ascending logit (ties in index order), removes
/// every token whose cumulative probability is at most `1 − top_p`, always keeping the
/// `min_tokens_to_keep` most probable ones; removed logits become `-inf`.
pub fn apply_top_p(logits: &mut [f32], top_p: f32, min_tokens_to_keep: usize) {
    let n = logits.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| logits[i]).collect();
    let probs = softmax(&sorted);
    let cut = 1.0 - top_p;
    let keep_from = n.saturating_sub(min_tokens_to_keep);
    let mut cumulative = 0f32;
    for (rank, (&i, p)) in order.iter().zip(probs).enumerate() {
        cumulative += p;
        if rank < keep_from && cumulative <= cut {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest logit, the first one on ties (NaN is never chosen over a number).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Draws an index from `softmax(logits)`; `-inf` logits are never drawn. Falls back to
/// [`argmax`] if no probability is positive (all logits `-inf` or NaN).
pub fn sample(logits: &[f32], rng: &mut Rng) -> u32 {
    let probs = softmax(logits);
    let total: f64 = probs.iter().map(|&p| f64::from(p)).sum();
    if total.is_nan() || total <= 0.0 {
        return argmax(logits);
    }
    let target = rng.next_f64() * total;
    let mut cumulative = 0f64;
    let mut last_positive = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cumulative += f64::from(p);
            last_positive = i;
            if target < cumulative {
                return i as u32;
            }
        }
    }
    // Rounding can leave `target` just above the final sum.
    last_positive as u32
}

/// Float32 softmax with the maximum subtracted first; `-inf` entries get probability 0.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A small seeded generator (SplitMix64): deterministic across platforms and runs.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose draws depend only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
        let mut logits = [2.0, -1.0, 0.5, 3.0, 0.0];
        // Id 0 appears twice but is penalised once; 9 is outside the vocabulary.
        apply_repetition_penalty(&mut logits, &[0, 1, 0, 4, 9], 2.0);
        assert_eq!(logits, [1.0, -2.0, 0.5, 3.0, 0.0]);
        let mut reward = [2.0, -1.0];
        apply_repetition_penalty(&mut reward, &[0, 1], 0.5);
        assert_eq!(reward, [4.0, -0.5]);
    }

    #[test]
    fn temperature_divides() {
        let mut logits = [1.0, -2.0, 0.5];
        apply_temperature(&mut logits, 0.5);
        assert_eq!(logits, [2.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_keeps_the_k_largest_and_their_ties() {
        let mut logits = [1.0, 4.0, 3.0, 2.0, 3.0];
        apply_top_k(&mut logits, 2, 1);
        // The second largest value is 3.0, held twice: both stay.
        assert_eq!(logits, [NEG, 4.0, 3.0, NEG, 3.0]);
        let mut all = [1.0, 2.0];
        apply_top_k(&mut all, 5, 1);
        assert_eq!(all, [1.0, 2.0]);
        let mut one = [1.0, 2.0, 0.0];
        apply_top_k(&mut one, 1, 2);
        assert_eq!(one, [1.0, 2.0, NEG]);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus_reaching_p() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their natural logs).
        let probs = [0.125f32, 0.5, 0.125, 0.25];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        // Ascending: 0.125 (id 0), 0.125 (id 2), 0.25, 0.5; cumulative 0.125, 0.25, 0.5, 1.
        // top_p 0.7 removes cumulative ≤ 0.3: ids 0 and 2.
        let mut l = logits.clone();
        apply_top_p(&mut l, 0.7, 1);
        assert_eq!(l[0], NEG);
        assert_eq!(l[2], NEG);
        assert_eq!((l[1], l[3]), (logits[1], logits[3]));
        // top_p 0.6 removes cumulative ≤ 0.4: still ids 0 and 2 (0.5 > 0.4 keeps id 3).
        let mut l = logits.clone();
        apply_top_p(&mut l, 0.6, 1);
        assert!(l[3].is_finite() && l[1].is_finite() && l[0] == NEG);
        // top_p 0.3 removes cumulative ≤ 0.7: only id 1 remains.
        let mut l = logits.clone();
        apply_top_p(&mut l, 0.3, 1);
        assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 1);
        assert!(l[1].is_finite());
        // top_p 0 would remove everything; min_tokens_to_keep keeps the most probable ones.
        let mut l = logits.clone();
        apply_top_p(&mut l, 0.0, 2);
        assert!(l[1].is_finite() && l[3].is_finite());
        assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 2);
    }

    #[test]
    fn top_p_removes_tied_tokens_in_index_order() {
        // Four equal probabilities; top_p 0.6 removes cumulative ≤ 0.4: the first token in sorted
        // order, which for ties is index order.
        let mut l = [0.0f32; 4];
        apply_top_p(&mut l, 0.6, 1);
        assert_eq!(l, [NEG, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_never_draws_filtered_tokens() {
        let logits = [0.0f32, NEG, 1.0, 0.5, NEG];
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| sample(&logits, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        assert!(a.iter().all(|&i| i == 0 || i == 2 || i == 3));
        // All three live tokens turn up, the most probable (id 2) most often.
        let count = |id| a.iter().filter(|&&i| i == id).count();
        assert!(count(0) > 0 && count(3) > 0);
        assert!(count(2) > count(3) && count(3) > count(0));
    }

    #[test]
    fn pipeline_applies_the_penalty_before_the_choice() {
        let pipeline = LogitsPipeline {
            repetition_penalty: 2.0,
            sampling: Sampling::Greedy,
        };
        let mut rng = Rng::new(0);
        // Without the penalty id 0 wins; halved it falls below id 1.
        let mut logits = [3.0, 2.0, 1.0];
        assert_eq!(pipeline.next_token(&mut logits, &[0], &mut rng), 1);
        // A sampler with top_k 1 is greedy whatever the temperature and seed.
        let pipeline = LogitsPipeline {
            repetition_penalty: 1.0,
            sampling: Sampling::Sample {
                temperature: 0.7,
                top_k: 1,
                top_p: 0.9,
                seed: 3,
            },
        };
        for _ in 0..20 {
            let mut logits = [0.1, 0.3, 0.2];
            assert_eq!(pipeline.next_token(&mut logits, &[], &mut rng), 1);
        }
    }

    #[test]
    fn rng_draws_are_uniform_enough() {
        let mut rng = Rng::new(42);
        let mean: f64 = (0..10_000).map(|_| rng.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02);
    }
}
