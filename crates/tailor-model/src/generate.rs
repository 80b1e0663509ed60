//! Autoregressive generation with a KV cache: `generation_config.json`, prefill, one-token
//! decoding steps and the `generate` loop.
//!
//! The prefill runs the whole prompt batch (with its images, which are consumed only there) and
//! caches every layer's keys and values; each later step feeds one token per row. Prompts may be
//! padded on either side: padded slots stay hidden from every query, the first token is predicted
//! from each row's last real position, and a generated token's M-RoPE position is (on all three
//! rows) the row's real token count so far plus its `rope_delta` (transformers 5.24 decoding).
//! Rows that hit an end-of-sequence id keep being fed the pad id until the batch ends; what they
//! produce is discarded.
//!
//! ```
//! use std::path::Path;
//! use candle_core::{DType, Device, Tensor};
//! use tailor_model::{GenerationConfig, Qwen25Vl, VlmInputs};
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/tied");
//! let model = Qwen25Vl::load(&dir, DType::F32, &Device::Cpu)?;
//! let mut cfg = GenerationConfig::load(&dir, model.config(), 0)?;
//! cfg.max_new_tokens = 4;
//!
//! // A text-only prompt: positions 0..len on all three rows, rope delta 0. A collated
//! // `tailor_core::Batch` gives `VlmInputs::from_batch(&batch, &device)?` and
//! // `batch.tokens.rope_deltas` instead.
//! let ids = [747u32, 665, 198, 30];
//! let positions: Vec<i64> = (0..3).flat_map(|_| 0..ids.len() as i64).collect();
//! let inputs = VlmInputs {
//!     input_ids: Tensor::new(&[ids], &Device::Cpu)?,
//!     attention_mask: Tensor::ones((1, ids.len()), DType::U8, &Device::Cpu)?,
//!     position_ids: Tensor::from_vec(positions, (3, 1, ids.len()), &Device::Cpu)?,
//!     pixel_values: None,
//!     image_grids: vec![],
//! };
//! let out = model.generate(&inputs, &[0], &cfg)?;
//! assert!(out[0].ids.len() <= 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use candle_core::{DType, Result, Tensor};
use serde::Deserialize;

use crate::cache::KvCache;
use crate::config::Config;
use crate::constrain::{PrefixState, PrefixTrie};
use crate::error::ModelError;
use crate::model::{Qwen25Vl, VlmInputs};
use crate::sampling::{LogitsPipeline, Rng, Sampling};

/// New tokens per prompt when neither the caller nor `generation_config.json` sets
/// `max_new_tokens`. transformers' own default is `max_length = 20` *including* the prompt, which
/// would generate nothing after a vision-language prompt, so tailor picks its own.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

/// The generation fields of a `generation_config.json` that tailor reads, as written (absent and
/// `null` fields are `None`; everything else in the file is ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawGenerationConfig {
    /// Sample instead of taking the argmax.
    pub do_sample: Option<bool>,
    /// Temperature of the sampler.
    pub temperature: Option<f32>,
    /// Top-k filter of the sampler (0 disables it).
    pub top_k: Option<usize>,
    /// Top-p filter of the sampler (1 disables it).
    pub top_p: Option<f32>,
    /// Repetition penalty (1 disables it).
    pub repetition_penalty: Option<f32>,
    /// End-of-sequence id or ids.
    pub eos_token_id: Option<EosTokenIds>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// New tokens per prompt.
    pub max_new_tokens: Option<usize>,
}

/// `eos_token_id` as JSON allows it: one id or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EosTokenIds {
    /// A single id.
    One(u32),
    /// Several ids; any of them ends a sequence.
    Many(Vec<u32>),
}

impl EosTokenIds {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

impl RawGenerationConfig {
    /// Reads a `generation_config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// Resolves the file against the model config and transformers' defaults: absent fields give
    /// `do_sample` false, temperature 1, `top_k` 50, `top_p` 1, repetition penalty 1; absent
    /// `eos_token_id` / `pad_token_id` come from `config.json`, and a still-missing pad id from
    /// the first eos id (as `generate` does); `seed` seeds the sampler.
    pub fn resolve(&self, model: &Config, seed: u64) -> crate::Result<GenerationConfig> {
        let invalid = |key: &str, detail: String| ModelError::InvalidConfig {
            key: key.to_owned(),
            detail,
        };
        let temperature = self.temperature.unwrap_or(1.0);
        let top_k = self.top_k.unwrap_or(50);
        let top_p = self.top_p.unwrap_or(1.0);
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if repetition_penalty.is_nan() || repetition_penalty <= 0.0 {
            return Err(invalid(
                "repetition_penalty",
                format!("must be > 0, found {repetition_penalty}"),
            ));
        }
        let sampling = if self.do_sample.unwrap_or(false) {
            if temperature.is_nan() || temperature <= 0.0 {
                return Err(invalid(
                    "temperature",
                    format!("must be > 0 when sampling, found {temperature}"),
                ));
            }
            if !(0.0..=1.0).contains(&top_p) {
                return Err(invalid(
                    "top_p",
                    format!("must lie in [0, 1], found {top_p}"),
                ));
            }
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            }
        } else {
            Sampling::Greedy
        };
        let eos_token_ids = match &self.eos_token_id {
            Some(ids) => ids.to_vec(),
            None => model.tokens.eos.clone(),
        };
        let pad_token_id = self
            .pad_token_id
            .or(model.tokens.pad)
            .or_else(|| eos_token_ids.first().copied())
            // Without any eos id no row ever finishes, so the pad id is never fed.
            .unwrap_or(0);
        Ok(GenerationConfig {
            max_new_tokens: self.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            pipeline: LogitsPipeline {
                repetition_penalty,
                sampling,
            },
            eos_token_ids,
            pad_token_id,
            prefix: None,
        })
    }
}

/// A resolved decoding configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per row (the eos token not counted in the output, but counted here).
    pub max_new_tokens: usize,
    /// Repetition penalty and greedy or sampled choice.
    pub pipeline: LogitsPipeline,
    /// A row ends when it produces any of these ids.
    pub eos_token_ids: Vec<u32>,
    /// Fed to rows that have ended.
    pub pad_token_id: u32,
    /// Allowed answer prefixes (constrained decoding), or `None` for free decoding.
    pub prefix: Option<std::sync::Arc<PrefixTrie>>,
}

impl GenerationConfig {
    /// Reads `generation_config.json` from a model directory when it exists, else resolves
    /// transformers' defaults against the model config (see [`RawGenerationConfig::resolve`]).
    pub fn load(dir: &Path, model: &Config, seed: u64) -> crate::Result<Self> {
        let path = dir.join("generation_config.json");
        let raw = if path.exists() {
            RawGenerationConfig::from_file(&path)?
        } else {
            RawGenerationConfig::default()
        };
        raw.resolve(model, seed)
    }

    /// Greedy decoding without penalty, stopping on the model config's eos ids.
    pub fn greedy(model: &Config, max_new_tokens: usize) -> Self {
        let eos_token_ids = model.tokens.eos.clone();
        Self {
            max_new_tokens,
            pipeline: LogitsPipeline {
                repetition_penalty: 1.0,
                sampling: Sampling::Greedy,
            },
            pad_token_id: model
                .tokens
                .pad
                .or_else(|| eos_token_ids.first().copied())
                .unwrap_or(0),
            eos_token_ids,
            prefix: None,
        }
    }
}

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Generated ids, without the prompt and without the final eos id.
    pub ids: Vec<u32>,
    /// True when the row ended on an eos id, false when it ran out of `max_new_tokens`.
    pub finished: bool,
}

impl Qwen25Vl {
    /// Runs the prompt batch (images included) and fills a fresh cache. Returns the float32
    /// logits `[batch, vocab]` at each row's last real token and the cache.
    ///
    /// `rope_deltas[row]` is the row's `max position + 1 − unpadded length`, as
    /// `tailor_text::rope_index` and collation (`TokenBatch::rope_deltas`) compute it. `capacity`
    /// is the number of slots to allocate up front (prompt length plus new tokens; the cache
    /// grows past it if needed).
    pub fn prefill(
        &self,
        inputs: &VlmInputs,
        rope_deltas: &[i64],
        capacity: usize,
    ) -> Result<(Tensor, KvCache)> {
        let (b, l) = inputs.input_ids.dims2()?;
        if rope_deltas.len() != b {
            candle_core::bail!(
                "prefill: {} rope deltas for a batch of {b}",
                rope_deltas.len()
            );
        }
        let keep: Vec<Vec<bool>> = inputs
            .attention_mask
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| row.into_iter().map(|m| m != 0.0).collect())
            .collect();
        let mut last = Vec::with_capacity(b);
        let mut next_positions = Vec::with_capacity(b);
        for (row, keep) in keep.iter().enumerate() {
            let Some(pos) = keep.iter().rposition(|&k| k) else {
                candle_core::bail!("prefill: row {row} has no real token");
            };
            last.push((row, pos));
            let real = keep.iter().filter(|&&k| k).count() as i64;
            next_positions.push(real + rope_deltas[row]);
        }
        let embeds = self.input_embeds(inputs)?;
        let mut cache = KvCache::new(self.text().num_layers(), next_positions, capacity.max(l));
        let mask = cache.push_slots(&keep, embeds.device())?;
        let hidden =
            self.text()
                .forward_cached(&embeds, &inputs.position_ids, &mask, &mut cache.layers)?;
        let logits = self.logits_at(&hidden, &last)?.to_dtype(DType::F32)?;
        Ok((logits, cache))
    }

    /// Feeds one token per row after the cached ones and returns the float32 logits
    /// `[batch, vocab]` of the next token.
    pub fn decode_step(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let b = cache.batch_size();
        if tokens.len() != b {
            candle_core::bail!("decode_step: {} tokens for a batch of {b}", tokens.len());
        }
        let device = self.lm_head().device();
        let ids = Tensor::from_slice(tokens, (b, 1), device)?;
        let embeds = self.text().embed(&ids)?;
        let positions: Vec<i64> = (0..3)
            .flat_map(|_| cache.next_positions().iter().copied())
            .collect();
        let positions = Tensor::from_vec(positions, (3, b, 1), device)?;
        let mask = cache.push_slots(&vec![vec![true]; b], device)?;
        let hidden = self
            .text()
            .forward_cached(&embeds, &positions, &mask, &mut cache.layers)?;
        cache.advance();
        self.logits(&hidden)?.squeeze(1)?.to_dtype(DType::F32)
    }

    /// Generates up to `cfg.max_new_tokens` tokens for every prompt row of `inputs` (padded on
    /// the left or the right), stopping a row at the first of `cfg.eos_token_ids`. The
    /// repetition penalty sees each row's real prompt tokens and its generated tokens (padding is
    /// not penalised, unlike transformers on a left-padded batch, so that a batched row decodes
    /// exactly as it would alone). Sampling draws from one generator seeded by the configured
    /// seed, row by row, so the same seed and batch give the same ids.
    pub fn generate(
        &self,
        inputs: &VlmInputs,
        rope_deltas: &[i64],
        cfg: &GenerationConfig,
    ) -> Result<Vec<Generated>> {
        let (b, l) = inputs.input_ids.dims2()?;
        let ids = inputs.input_ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let mask = inputs
            .attention_mask
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let mut history: Vec<Vec<u32>> = ids
            .iter()
            .zip(&mask)
            .map(|(ids, mask)| {
                ids.iter()
                    .zip(mask)
                    .filter(|(_, m)| **m != 0.0)
                    .map(|(&id, _)| id as u32)
                    .collect()
            })
            .collect();
        let mut out: Vec<Generated> = (0..b)
            .map(|_| Generated {
                ids: Vec::new(),
                finished: false,
            })
            .collect();
        if cfg.max_new_tokens == 0 {
            return Ok(out);
        }
        let seed = match cfg.pipeline.sampling {
            Sampling::Sample { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        let mut rng = Rng::new(seed);
        let mut states: Vec<PrefixState> = (0..b)
            .map(|_| match &cfg.prefix {
                Some(trie) => trie.start(),
                None => PrefixState::Done,
            })
            .collect();
        let (mut logits, mut cache) = self.prefill(inputs, rope_deltas, l + cfg.max_new_tokens)?;
        for step in 0..cfg.max_new_tokens {
            let rows = logits.to_vec2::<f32>()?;
            let mut next = vec![cfg.pad_token_id; b];
            for (row, mut row_logits) in rows.into_iter().enumerate() {
                if out[row].finished {
                    continue;
                }
                if let Some(trie) = &cfg.prefix {
                    trie.mask(states[row], &mut row_logits);
                }
                let token = cfg
                    .pipeline
                    .next_token(&mut row_logits, &history[row], &mut rng);
                if let Some(trie) = &cfg.prefix {
                    states[row] = trie.advance(states[row], token);
                }
                if cfg.eos_token_ids.contains(&token) {
                    out[row].finished = true;
                } else {
                    out[row].ids.push(token);
                    history[row].push(token);
                    next[row] = token;
                }
            }
            if step + 1 == cfg.max_new_tokens || out.iter().all(|g| g.finished) {
                break;
            }
            logits = self.decode_step(&next, &mut cache)?;
        }
        Ok(out)
    }
}
