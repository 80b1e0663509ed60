//! The byte-level BPE tokenizer and the special-token ids resolved by name.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Result, TextError};

/// Token strings of the Qwen2.5-VL chat and vision markers. They are names, not ids: every id is
/// looked up in the tokenizer's vocabulary, so a model with another vocabulary just works.
const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";
const VISION_START: &str = "<|vision_start|>";
const VISION_END: &str = "<|vision_end|>";
/// Processor defaults when `tokenizer_config.json` names no `image_token` / `video_token`
/// (`Qwen2_5_VLProcessor.__init__` falls back to the same strings).
const IMAGE_PAD: &str = "<|image_pad|>";
const VIDEO_PAD: &str = "<|video_pad|>";

/// Ids of the special tokens that chat rendering, label masking and positions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Padding (`pad_token` of `tokenizer_config.json`; `<|endoftext|>` for Qwen).
    pub pad: u32,
    /// End of sequence (`eos_token`; `<|im_end|>` for Qwen2.5-VL).
    pub eos: u32,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>`.
    pub im_end: u32,
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|vision_end|>`.
    pub vision_end: u32,
    /// The image placeholder (`<|image_pad|>`), repeated once per merged image patch.
    pub image_pad: u32,
    /// The video placeholder (`<|video_pad|>`).
    pub video_pad: u32,
}

/// The strings of the special tokens, as the chat template and the pad expansion see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokenStrings {
    /// `pad_token`.
    pub pad: String,
    /// `eos_token`.
    pub eos: String,
    /// `bos_token`, when the tokenizer has one (Qwen has none).
    pub bos: Option<String>,
    /// `unk_token`, when the tokenizer has one (Qwen has none).
    pub unk: Option<String>,
    /// The image placeholder string.
    pub image_pad: String,
    /// The video placeholder string.
    pub video_pad: String,
}

/// Token ids of a text with the byte range of each token in that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` byte offsets into the encoded text, one per id. A token that holds part of a
    /// multi-byte character covers the whole character.
    pub offsets: Vec<(usize, usize)>,
}

/// A Hugging Face fast tokenizer (`tokenizer.json`) with its special tokens resolved.
///
/// Encoding never adds special tokens: Qwen's tokenizer adds none, and the chat template writes
/// every marker into the text, which the tokenizer then matches as added tokens before BPE.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    strings: SpecialTokenStrings,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and `tokenizer_config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_json = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_json).map_err(|source| {
            TextError::Tokenizer {
                context: format!("loading {}", tokenizer_json.display()),
                source,
            }
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        Self::from_parts(inner, &config, &config_path)
    }

    /// Builds the tokenizer from an already loaded `tokenizers` object and the parsed
    /// `tokenizer_config.json` (`config_path` is only used in error messages).
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        config: &Json,
        config_path: &Path,
    ) -> Result<Self> {
        let required = |key: &str| {
            token_string(config, key).ok_or_else(|| TextError::MissingKey {
                path: config_path.to_path_buf(),
                key: key.to_owned(),
            })
        };
        // transformers 5 keeps model-specific tokens either at the top level or under
        // `extra_special_tokens`; the processor uses them when present.
        let extra = |key: &str| {
            token_string(config, key).or_else(|| {
                config
                    .get("extra_special_tokens")
                    .and_then(|e| token_string(e, key))
            })
        };
        let strings = SpecialTokenStrings {
            pad: required("pad_token")?,
            eos: required("eos_token")?,
            bos: token_string(config, "bos_token"),
            unk: token_string(config, "unk_token"),
            image_pad: extra("image_token").unwrap_or_else(|| IMAGE_PAD.to_owned()),
            video_pad: extra("video_token").unwrap_or_else(|| VIDEO_PAD.to_owned()),
        };
        let id = |role: &'static str, token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TextError::MissingSpecialToken {
                    role,
                    token: token.to_owned(),
                })
        };
        let special = SpecialTokens {
            pad: id("pad", &strings.pad)?,
            eos: id("eos", &strings.eos)?,
            im_start: id("im_start", IM_START)?,
            im_end: id("im_end", IM_END)?,
            vision_start: id("vision_start", VISION_START)?,
            vision_end: id("vision_end", VISION_END)?,
            image_pad: id("image_pad", &strings.image_pad)?,
            video_pad: id("video_pad", &strings.video_pad)?,
        };
        Ok(Self {
            inner,
            special,
            strings,
        })
    }

    /// The resolved special-token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// The special-token strings (what the template and the pad expansion work with).
    pub fn special_strings(&self) -> &SpecialTokenStrings {
        &self.strings
    }

    /// Number of ids, added tokens included (the embedding may have more rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes text without adding special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text)?.ids)
    }

    /// Encodes text without adding special tokens, keeping each token's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<EncodedText> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|source| TextError::Tokenizer {
                context: "encoding text".to_owned(),
                source,
            })?;
        Ok(EncodedText {
            ids: encoding.get_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
        })
    }

    /// Decodes ids back to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| TextError::Tokenizer {
                context: "decoding ids".to_owned(),
                source,
            })
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| TextError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a UTF-8 file.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TextError::Io {
        path: PathBuf::from(path),
        source,
    })
}

/// A special token in `tokenizer_config.json` is either a plain string or a serialised
/// `AddedToken` object with a `content` field; `null` means "none".
fn token_string(config: &Json, key: &str) -> Option<String> {
    match config.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}
