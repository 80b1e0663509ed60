//! The decoding state of a batch: per-layer key/value cache, which cached slots each row may
//! attend to, and the M-RoPE position of each row's next token.

use candle_core::{Device, Result, Tensor};

/// Keys and values of every decoder layer for the tokens seen so far, plus per-row bookkeeping.
///
/// Slot `j` of the cache is the `j`-th token fed to the model (prompt slots first, padding
/// included); a row sees slot `j` only where its attention mask was 1. A token fed after the
/// prompt gets, on all three M-RoPE rows, the position `real tokens so far + rope_delta` — i.e.
/// `cache_len + rope_delta` counted over the row's own (unpadded) tokens, which is the same
/// position for left-padded, right-padded and single-sample prompts.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<candle_nn::kv_cache::KvCache>,
    visible: Vec<Vec<bool>>,
    next_positions: Vec<i64>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers and one row per entry of `next_positions`, with
    /// room for `capacity` slots before it has to grow.
    pub(crate) fn new(num_layers: usize, next_positions: Vec<i64>, capacity: usize) -> Self {
        Self {
            layers: (0..num_layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, capacity.max(1)))
                .collect(),
            visible: vec![Vec::new(); next_positions.len()],
            next_positions,
        }
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.next_positions.len()
    }

    /// Number of cached slots (the same for every row; padding included).
    pub fn len(&self) -> usize {
        self.visible.first().map_or(0, Vec::len)
    }

    /// True before the prefill.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position (on all three M-RoPE rows) of each row's next token.
    pub fn next_positions(&self) -> &[i64] {
        &self.next_positions
    }

    /// Records `len` new slots per row (`keep[row][i]`: whether slot `i` of them is a real
    /// token) and returns the additive float32 mask `[batch, 1, len, cached + len]` for the
    /// queries of those slots: 0 where query `i` may see key `j` (`j ≤ cached + i` and key `j`
    /// is real), the most negative float otherwise (finite, so padded queries stay finite).
    pub(crate) fn push_slots(&mut self, keep: &[Vec<bool>], device: &Device) -> Result<Tensor> {
        let b = self.batch_size();
        if keep.len() != b {
            candle_core::bail!("expected {b} rows of new slots, found {}", keep.len());
        }
        let l = keep.first().map_or(0, Vec::len);
        if keep.iter().any(|k| k.len() != l) {
            candle_core::bail!("every row must add the same number of slots");
        }
        let cached = self.len();
        let total = cached + l;
        let mut mask = vec![f32::MIN; b * l * total];
        for (row, keep) in keep.iter().enumerate() {
            self.visible[row].extend_from_slice(keep);
            let visible = &self.visible[row];
            for i in 0..l {
                let base = (row * l + i) * total;
                for j in 0..=cached + i {
                    if visible[j] {
                        mask[base + j] = 0.0;
                    }
                }
            }
        }
        Tensor::from_vec(mask, (b, 1, l, total), device)
    }

    /// Moves every row's next position on by one (after a decoding step).
    pub(crate) fn advance(&mut self) {
        for p in &mut self.next_positions {
            *p += 1;
        }
    }
}
