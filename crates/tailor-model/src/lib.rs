//! Qwen2.5-VL in candle: configuration, verified weight loading, the windowed vision tower and
//! the M-RoPE decoder.
//!
//! # Brief overview
//!
//! - [`Config`] resolves a `config.json`, flat (hub) or nested (transformers 5), failing on any
//!   missing size.
//! - [`Checkpoint`] memory-maps `model.safetensors` or the shards of
//!   `model.safetensors.index.json`, accepts both tensor naming schemes, compares the stored
//!   names and shapes with [`expected_tensors`] and hands out a [`VarBuilder`](candle_nn::VarBuilder)
//!   under canonical (transformers ≥ 4.52 in-memory) names.
//! - [`VisionTower`] turns `pixel_values` into image features; [`TextModel`] is the decoder;
//!   [`Qwen25Vl`] joins them, scatters image features over the `<|image_pad|>` positions and
//!   computes logits, in full or only at chosen positions ([`Qwen25Vl::logits_at`]).
//! - Generation: [`Qwen25Vl::generate`] runs a prefill ([`Qwen25Vl::prefill`]) that fills a
//!   [`KvCache`] and then one-token steps ([`Qwen25Vl::decode_step`]); the next token is chosen
//!   by a [`LogitsPipeline`] (repetition penalty, then greedy or [`Sampling`] with temperature,
//!   top-k and top-p, in transformers' order), configured by a [`GenerationConfig`] resolved
//!   from `generation_config.json`.
//!
//! The model does no tokenization and computes no positions: [`VlmInputs`] carries the M-RoPE
//! `position_ids` that `tailor_text::rope_index` produces (a collated
//! [`Batch`](tailor_core::Batch) converts with [`VlmInputs::from_batch`]). Every op on the forward
//! path has a backward (no fused candle kernels), so LoRA can train through it; only the cached
//! attention of generation, which needs no gradient, uses candle's fused softmax. On the CPU the
//! training graph is built from whole blocks (a LoRA projection, the attention core, a norm) that
//! each enter it as one node with a hand-written backward mirroring candle's (private `fused`
//! module), and gradient checkpointing differentiates each re-run decoder layer without a graph.
//!
//! Parity with transformers 5.24 (float32, eager attention) is tested against the fixtures that
//! `tools/reference/model_fixtures.py` writes to `tests/fixtures/model/`.
//!
//! ```
//! use std::path::Path;
//! use candle_core::{DType, Device, Tensor};
//! use tailor_model::{Qwen25Vl, VlmInputs};
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/tied");
//! let model = Qwen25Vl::load(&dir, DType::F32, &Device::Cpu)?;
//!
//! // A text-only sequence: all three M-RoPE rows are 0..len.
//! let ids = [747u32, 665, 198, 30];
//! let positions: Vec<i64> = (0..3).flat_map(|_| 0..ids.len() as i64).collect();
//! let inputs = VlmInputs {
//!     input_ids: Tensor::new(&[ids], &Device::Cpu)?,
//!     attention_mask: Tensor::ones((1, ids.len()), DType::U8, &Device::Cpu)?,
//!     position_ids: Tensor::from_vec(positions, (3, 1, ids.len()), &Device::Cpu)?,
//!     pixel_values: None,
//!     image_grids: vec![],
//! };
//! let hidden = model.forward(&inputs)?;
//! let next = model.logits_at(&hidden, &[(0, ids.len() - 1)])?;
//! assert_eq!(next.dims(), [1, model.config().text.vocab_size]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod adapter;
mod cache;
pub mod config;
pub mod constrain;
pub mod error;
pub mod export;
mod fused;
mod generate;
mod kernels;
pub mod lora;
mod model;
mod nn;
pub mod ops;
pub mod runtime;
pub mod sampling;
#[cfg(test)]
mod test_util;
pub mod text;
pub mod train;
pub mod vision;
pub mod weights;

pub use adapter::{Adapter, AdapterFile};
pub use cache::KvCache;
pub use config::{Config, SpecialTokenIds, TextConfig, VisionConfig};
pub use constrain::PrefixTrie;
pub use error::{ModelError, Result, ShapeMismatch, TensorSpec, WeightReport};
pub use generate::{
    DEFAULT_MAX_NEW_TOKENS, EosTokenIds, Generated, GenerationConfig, RawGenerationConfig,
};
pub use lora::{InitFrom, LoraInit, LoraSpec, TargetModules};
pub use model::{Qwen25Vl, VlmInputs};
pub use sampling::{LogitsPipeline, Sampling};
pub use text::TextModel;
pub use train::{LossAndGrads, ShiftedTargets};
pub use vision::{VisionTower, VisionTrace, WindowIndex, full_attention_seqlens, window_index};
pub use weights::{Checkpoint, StoredTensor, canonical_name, expected_tensors};
