//! Plain data shared by every tailor stage.
//!
//! # Brief overview
//!
//! This crate holds the types that cross crate boundaries and nothing that computes: the
//! [`ImageGrid`] of a processed image, the token-level [`TokenBatch`] that collation produces and the
//! full [`Batch`] (tokens plus pixel patches) that the model consumes. It has no dependency on
//! candle, image decoding or tokenizers, so every other crate can depend on it cheaply.
//!
//! ```
//! use tailor_core::ImageGrid;
//! let grid = ImageGrid { t: 1, h: 4, w: 6 };
//! assert_eq!(grid.patches(), 24);
//! assert_eq!(grid.llm_tokens(2), 6);
//! ```
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// The label value that the loss ignores, as in PyTorch's `cross_entropy(ignore_index=-100)`.
pub const IGNORE_INDEX: i64 = -100;

/// The patch grid of one processed image: `image_grid_thw` in Hugging Face's processor output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageGrid {
    /// Temporal groups (1 for a still image).
    pub t: u32,
    /// Patch rows.
    pub h: u32,
    /// Patch columns.
    pub w: u32,
}

impl ImageGrid {
    /// Grids from the flattened `image_grid_thw` rows `[t, h, w, t, h, w, …]` that
    /// transformers' processors return.
    pub fn from_thw_rows(thw: &[i64]) -> Vec<ImageGrid> {
        thw.chunks_exact(3)
            .map(|g| ImageGrid {
                t: g[0] as u32,
                h: g[1] as u32,
                w: g[2] as u32,
            })
            .collect()
    }

    /// Number of vision patches (= rows of `pixel_values`).
    pub fn patches(&self) -> usize {
        self.t as usize * self.h as usize * self.w as usize
    }

    /// Number of LLM tokens after the `merge × merge` patch merger.
    pub fn llm_tokens(&self, merge_size: u32) -> usize {
        self.patches() / (merge_size as usize * merge_size as usize)
    }
}

/// Which label positions are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelMask {
    /// Only assistant answers and their closing `<|im_end|>` carry labels (tailor's default).
    Assistant,
    /// The TRL tutorial collator: everything is a label except padding and image pad tokens.
    Recipe,
}

/// Token-level tensors of a collated batch, row-major and right-padded to a common length.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Number of sequences.
    pub batch_size: usize,
    /// Padded sequence length.
    pub seq_len: usize,
    /// Token ids, `[batch_size, seq_len]`.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding, `[batch_size, seq_len]`.
    pub attention_mask: Vec<u8>,
    /// Target ids with [`IGNORE_INDEX`] where no loss is taken, `[batch_size, seq_len]`
    /// (unshifted, as Hugging Face passes `labels`).
    pub labels: Vec<i64>,
    /// M-RoPE position ids, `[3, batch_size, seq_len]` (temporal, height, width rows).
    pub position_ids: Vec<i64>,
    /// Per sequence: `max position + 1 - seq_len`, used to place generated tokens.
    pub rope_deltas: Vec<i64>,
}

/// A batch ready for the model: tokens plus the pixel patches of every image, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Token-level tensors.
    pub tokens: TokenBatch,
    /// Concatenated `pixel_values` of all images, `[Σ patches, patch_dim]`.
    pub pixel_values: Vec<f32>,
    /// Length of one patch row (`3 · temporal_patch_size · patch_size²`, 1176 for Qwen2.5-VL).
    pub patch_dim: usize,
    /// One grid per image, in the order the images appear in the batch.
    pub image_grids: Vec<ImageGrid>,
}
