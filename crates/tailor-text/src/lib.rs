//! Chats to token batches for Qwen2.5-VL, identical to Hugging Face's processor and collator.
//!
//! # Brief overview
//!
//! This crate owns the text side of a sample, from chat messages to the token-level tensors of a
//! batch:
//!
//! - [`Tokenizer`] wraps a `tokenizer.json` and resolves the special tokens (pad, eos, chat and
//!   vision markers) by name from the tokenizer files; no id is hard-coded.
//! - [`ChatTemplate`] finds the processor chat template of a model directory in transformers'
//!   order and renders [`Message`]s with minijinja the way transformers renders them with Jinja2.
//! - [`TextProcessor`] expands each `<|image_pad|>` to one placeholder per merged patch,
//!   tokenizes, and builds the labels under a [`LabelMask`](tailor_core::LabelMask) in one
//!   function, [`TextProcessor::encode_chat`]; [`TextProcessor::encode_prompt`] does the
//!   inference side.
//! - [`rope_index`] computes the 3-D M-RoPE positions of a sequence as transformers 5.24 does.
//! - [`collate`] pads samples into a [`TokenBatch`](tailor_core::TokenBatch), skipping (never
//!   truncating) samples over the length limit.
//!
//! Parity with transformers 5.24 / TRL is checked against fixtures written by
//! `tools/reference/text_fixtures.py` on the tiny model in `tests/fixtures/tiny-model`.
//!
//! ```
//! use std::path::Path;
//! use tailor_core::{ImageGrid, LabelMask, IGNORE_INDEX};
//! use tailor_text::{collate, CollateConfig, Message, Part, RopeConfig, TextProcessor};
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model");
//! let processor = TextProcessor::from_dir(&dir)?;
//! let rope = RopeConfig::from_config_json(&dir.join("config.json"))?;
//!
//! let chat = [
//!     Message::parts("user", vec![Part::Image, Part::Text("What is this product?".into())]),
//!     Message::text("assistant", "WOMEN/dresses: This female wears a dress."),
//! ];
//! let grid = ImageGrid { t: 1, h: 4, w: 6 }; // 6 LLM tokens after the 2×2 merge
//! let sample = processor.encode_chat(&chat, &[grid], 2, LabelMask::Assistant)?;
//! assert_eq!(sample.input_ids.len(), sample.labels.len());
//!
//! // Only the answer and its closing <|im_end|> are trained.
//! let trained: Vec<u32> = sample.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
//! let text = processor.tokenizer().decode(&trained, false)?;
//! assert_eq!(text, "WOMEN/dresses: This female wears a dress.<|im_end|>");
//!
//! let cfg = CollateConfig { pad_id: processor.tokenizer().special().pad, max_length: None, rope };
//! let (batch, report) = collate(&[sample], &[vec![grid]], &cfg)?;
//! assert_eq!((batch.batch_size, report.skipped.len()), (1, 0));
//! assert_eq!(batch.position_ids.len(), 3 * batch.seq_len);
//! # Ok::<(), tailor_text::TextError>(())
//! ```
#![deny(missing_docs)]

mod collate;
mod encode;
mod error;
mod rope;
mod template;
mod tokenizer;

pub use collate::{CollateConfig, CollateReport, SkippedSample, collate};
pub use encode::{EncodedSample, TextProcessor};
pub use error::{Result, TextError};
pub use rope::{MropePositions, RopeConfig, VideoGrid, rope_index};
pub use template::{ChatTemplate, Content, Message, Part, TemplateSource};
pub use tokenizer::{EncodedText, SpecialTokenStrings, SpecialTokens, Tokenizer};
