//! Batching encoded samples: right padding, attention mask, labels and M-RoPE positions.

use tailor_core::{IGNORE_INDEX, ImageGrid, TokenBatch};

use crate::encode::EncodedSample;
use crate::error::{Result, TextError};
use crate::rope::{RopeConfig, rope_index};

/// How to collate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollateConfig {
    /// Id written into padding positions (the tokenizer's `pad_token`).
    pub pad_id: u32,
    /// Samples longer than this are skipped whole, never truncated: cutting a sample could split
    /// an image's placeholder run from its pixels. `None` keeps every sample.
    pub max_length: Option<usize>,
    /// Token ids and merge size for the M-RoPE positions.
    pub rope: RopeConfig,
}

/// What collation did besides building the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateReport {
    /// Indices (into the input) of the samples in the batch, in batch row order. The caller uses
    /// them to pick the matching images.
    pub kept: Vec<usize>,
    /// Samples left out because they exceed `max_length`.
    pub skipped: Vec<SkippedSample>,
}

/// A sample that collation left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedSample {
    /// Index of the sample in the input.
    pub index: usize,
    /// Its length in tokens.
    pub len: usize,
}

/// Pads `samples` on the right to a common length and computes attention mask, labels (with
/// [`IGNORE_INDEX`] on padding), `[3, B, L]` positions and per-row rope deltas.
///
/// `grids_per_sample[i]` are the image grids of sample `i`, in placeholder order.
///
/// Positions follow what transformers 5.24 feeds the decoder: when the batch has at least one
/// image, every row gets `get_rope_index` positions over its real tokens and 0 on padding; a
/// batch without images gets plain `0..L` on all rows (transformers then skips
/// `get_rope_index`), with delta 0.
///
/// Samples over `max_length` are skipped and listed in the report. If every sample is skipped, or
/// `samples` is empty, the result is [`TextError::EmptyBatch`]: an empty batch has no use and
/// would only move the check to the caller.
pub fn collate(
    samples: &[EncodedSample],
    grids_per_sample: &[Vec<ImageGrid>],
    cfg: &CollateConfig,
) -> Result<(TokenBatch, CollateReport)> {
    if samples.len() != grids_per_sample.len() {
        return Err(TextError::BatchShape {
            samples: samples.len(),
            grid_lists: grids_per_sample.len(),
        });
    }
    let mut kept = Vec::with_capacity(samples.len());
    let mut skipped = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        let len = sample.input_ids.len();
        if len != sample.labels.len() {
            return Err(TextError::MisalignedLabels {
                index,
                ids: len,
                labels: sample.labels.len(),
            });
        }
        if cfg.max_length.is_some_and(|max| len > max) {
            skipped.push(SkippedSample { index, len });
        } else {
            kept.push(index);
        }
    }
    if kept.is_empty() {
        return Err(TextError::EmptyBatch {
            skipped: skipped.iter().map(|s| s.index).collect(),
        });
    }

    let batch_size = kept.len();
    let seq_len = kept
        .iter()
        .map(|&i| samples[i].input_ids.len())
        .max()
        .unwrap_or(0);
    let cells = batch_size * seq_len;
    let mut input_ids = vec![cfg.pad_id; cells];
    let mut attention_mask = vec![0u8; cells];
    let mut labels = vec![IGNORE_INDEX; cells];
    let mut position_ids = vec![0i64; 3 * cells];
    let mut rope_deltas = vec![0i64; batch_size];
    let has_images = kept.iter().any(|&i| !grids_per_sample[i].is_empty());

    for (row, &i) in kept.iter().enumerate() {
        let sample = &samples[i];
        let n = sample.input_ids.len();
        let base = row * seq_len;
        input_ids[base..base + n].copy_from_slice(&sample.input_ids);
        attention_mask[base..base + n].fill(1);
        labels[base..base + n].copy_from_slice(&sample.labels);
        if has_images {
            let positions = rope_index(&sample.input_ids, &grids_per_sample[i], &[], &cfg.rope)?;
            for (r, values) in positions.rows.iter().enumerate() {
                let at = r * cells + base;
                position_ids[at..at + n].copy_from_slice(values);
            }
            rope_deltas[row] = positions.rope_delta;
        } else {
            for r in 0..3 {
                let at = r * cells + base;
                for (p, slot) in position_ids[at..at + seq_len].iter_mut().enumerate() {
                    *slot = p as i64;
                }
            }
        }
    }

    let batch = TokenBatch {
        batch_size,
        seq_len,
        input_ids,
        attention_mask,
        labels,
        position_ids,
        rope_deltas,
    };
    Ok((batch, CollateReport { kept, skipped }))
}
