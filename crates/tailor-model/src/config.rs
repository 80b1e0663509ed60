//! `config.json` → resolved [`Config`]: both the flat hub layout and the nested transformers-5
//! layout, with every architecture size required and cross-checked.
//!
//! The file is first read into a serde mirror whose fields are all optional, then resolved with
//! an explicit `Result`: a size that is absent is a [`ModelError::MissingKey`] naming the key, never
//! a silent default. Text fields are looked up in `text_config` first and then at the root (this is
//! how transformers routes root-level text fields of a flat file into `text_config`); special token
//! ids are looked up at the root first.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

/// RMSNorm epsilon of the vision blocks and the merger; transformers hard-codes it.
pub const VISION_RMS_NORM_EPS: f64 = 1e-6;

/// Rotary base of the vision tower when the config does not name one: transformers ≤ 4.57
/// hard-codes 10000 and only transformers 5 writes `vision_config.rope_parameters.rope_theta`.
const DEFAULT_VISION_ROPE_THETA: f64 = 10_000.0;

/// The resolved configuration of a Qwen2.5-VL model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The language model (decoder).
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// Whether `lm_head` shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Special token ids.
    pub tokens: SpecialTokenIds,
}

/// Sizes of the Qwen2 decoder with M-RoPE.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Model width (2048 for the 3B).
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// SwiGLU MLP width.
    pub intermediate_size: usize,
    /// Rows of the embedding matrix (and of `lm_head`).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// Frequencies taken from the temporal, height and width position rows; sums to
    /// `head_dim / 2`.
    pub mrope_section: [usize; 3],
}

/// Sizes of the windowed ViT and its patch merger.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Vision blocks.
    pub depth: usize,
    /// Vision width (1280 for the 3B).
    pub hidden_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// `hidden_size / num_heads`.
    pub head_dim: usize,
    /// SwiGLU MLP width.
    pub intermediate_size: usize,
    /// Patch side in pixels (14).
    pub patch_size: usize,
    /// Frames per temporal patch (2).
    pub temporal_patch_size: usize,
    /// Patches merged per side into one LLM token (2).
    pub spatial_merge_size: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Attention window side in pixels (112).
    pub window_size: usize,
    /// Blocks (0-based) that attend over the whole image instead of windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// Merger output width; equals the text `hidden_size`.
    pub out_hidden_size: usize,
    /// Temporal positions per second of video (only affects video positions).
    pub tokens_per_second: usize,
    /// Rotary base of the 2-D vision rope.
    pub rope_theta: f64,
}

impl VisionConfig {
    /// Length of one `pixel_values` row: `in_channels · temporal_patch_size · patch_size²` (1176).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Patches per merged token: `spatial_merge_size²` (4).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }

    /// Window side in merged tokens: `window_size / spatial_merge_size / patch_size` (4).
    pub fn window_merged_side(&self) -> usize {
        self.window_size / self.spatial_merge_size / self.patch_size
    }
}

/// Special token ids from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokenIds {
    /// `<|image_pad|>`: positions that receive image features.
    pub image: u32,
    /// `<|video_pad|>`.
    pub video: u32,
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|vision_end|>`.
    pub vision_end: u32,
    /// `<|vision_pad|>` (unused by the forward pass), if the config names it.
    pub vision_pad: Option<u32>,
    /// Beginning-of-sequence id, if the config names it.
    pub bos: Option<u32>,
    /// End-of-sequence ids (a config may give one id or a list).
    pub eos: Vec<u32>,
    /// Padding id, if the config names it.
    pub pad: Option<u32>,
}

impl Config {
    /// Reads and resolves a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            what: path.display().to_string(),
            source,
        })?;
        raw.resolve()
    }

    /// Parses and resolves the text of a `config.json`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|source| ModelError::Json {
            what: "config".to_owned(),
            source,
        })?;
        raw.resolve()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRope {
    rope_theta: Option<f64>,
    mrope_section: Option<Vec<usize>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawText {
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    hidden_act: Option<String>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    use_sliding_window: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    image_token_id: Option<u32>,
    video_token_id: Option<u32>,
    vision_start_token_id: Option<u32>,
    vision_end_token_id: Option<u32>,
    vision_token_id: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawVision {
    depth: Option<usize>,
    hidden_size: Option<usize>,
    num_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    patch_size: Option<usize>,
    spatial_patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    in_channels: Option<usize>,
    in_chans: Option<usize>,
    window_size: Option<usize>,
    fullatt_block_indexes: Option<Vec<usize>>,
    out_hidden_size: Option<usize>,
    tokens_per_second: Option<usize>,
    rope_parameters: Option<RawRope>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    #[serde(flatten)]
    root: RawText,
}

fn missing(key: impl Into<String>) -> ModelError {
    ModelError::MissingKey { key: key.into() }
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        key: key.into(),
        detail: detail.into(),
    }
}

impl RawConfig {
    fn resolve(self) -> Result<Config> {
        if let Some(model_type) = &self.model_type
            && model_type != "qwen2_5_vl"
        {
            return Err(invalid(
                "model_type",
                format!("expected \"qwen2_5_vl\", found {model_type:?}"),
            ));
        }
        let text = resolve_text(self.text_config.as_ref(), &self.root)?;
        let vision = resolve_vision(self.vision_config.as_ref())?;
        if vision.out_hidden_size != text.hidden_size {
            return Err(invalid(
                "vision_config.out_hidden_size",
                format!(
                    "{} must equal the text hidden_size {}",
                    vision.out_hidden_size, text.hidden_size
                ),
            ));
        }
        // Token ids and tying sit at the root in both layouts; nested files may repeat them in
        // text_config.
        let nested = self.text_config.as_ref();
        let id =
            |get: fn(&RawText) -> Option<u32>| get(&self.root).or_else(|| nested.and_then(get));
        let required =
            |key: &str, get: fn(&RawText) -> Option<u32>| id(get).ok_or_else(|| missing(key));
        let tokens = SpecialTokenIds {
            image: required("image_token_id", |r| r.image_token_id)?,
            video: required("video_token_id", |r| r.video_token_id)?,
            vision_start: required("vision_start_token_id", |r| r.vision_start_token_id)?,
            vision_end: required("vision_end_token_id", |r| r.vision_end_token_id)?,
            vision_pad: id(|r| r.vision_token_id),
            bos: id(|r| r.bos_token_id),
            eos: match self
                .root
                .eos_token_id
                .clone()
                .or_else(|| nested.and_then(|t| t.eos_token_id.clone()))
            {
                Some(OneOrMany::One(id)) => vec![id],
                Some(OneOrMany::Many(ids)) => ids,
                None => Vec::new(),
            },
            pad: id(|r| r.pad_token_id),
        };
        let tie_word_embeddings = self
            .root
            .tie_word_embeddings
            .or_else(|| nested.and_then(|t| t.tie_word_embeddings))
            .ok_or_else(|| missing("tie_word_embeddings"))?;
        Ok(Config {
            text,
            vision,
            tie_word_embeddings,
            tokens,
        })
    }
}

fn resolve_text(nested: Option<&RawText>, root: &RawText) -> Result<TextConfig> {
    let prefix = if nested.is_some() { "text_config." } else { "" };
    let key = |name: &str| format!("{prefix}{name}");
    // A field of text_config wins; a flat file (or a partial text_config) falls back to the root.
    fn pick<T>(
        nested: Option<&RawText>,
        root: &RawText,
        get: impl Fn(&RawText) -> Option<T>,
    ) -> Option<T> {
        nested.and_then(&get).or_else(|| get(root))
    }
    let size = |name: &str, get: fn(&RawText) -> Option<usize>| -> Result<usize> {
        match pick(nested, root, get) {
            None => Err(missing(key(name))),
            Some(0) => Err(invalid(key(name), "must be positive")),
            Some(v) => Ok(v),
        }
    };
    let hidden_size = size("hidden_size", |r| r.hidden_size)?;
    let num_hidden_layers = size("num_hidden_layers", |r| r.num_hidden_layers)?;
    let num_attention_heads = size("num_attention_heads", |r| r.num_attention_heads)?;
    let num_key_value_heads = size("num_key_value_heads", |r| r.num_key_value_heads)?;
    let intermediate_size = size("intermediate_size", |r| r.intermediate_size)?;
    let vocab_size = size("vocab_size", |r| r.vocab_size)?;
    let rms_norm_eps =
        pick(nested, root, |r| r.rms_norm_eps).ok_or_else(|| missing(key("rms_norm_eps")))?;
    match pick(nested, root, |r| r.hidden_act.clone()) {
        None => return Err(missing(key("hidden_act"))),
        Some(act) if act != "silu" => {
            return Err(invalid(
                key("hidden_act"),
                format!("only \"silu\" is supported, found {act:?}"),
            ));
        }
        Some(_) => {}
    }
    if pick(nested, root, |r| r.use_sliding_window) == Some(true) {
        return Err(invalid(
            key("use_sliding_window"),
            "sliding-window attention is not supported",
        ));
    }
    // transformers 5 writes `rope_parameters`; older files write `rope_theta` beside
    // `rope_scaling = {type: mrope, mrope_section}`.
    let rope_parameters = pick(nested, root, |r| r.rope_parameters.clone());
    let rope_scaling = pick(nested, root, |r| r.rope_scaling.clone());
    for (name, rope) in [
        ("rope_parameters", &rope_parameters),
        ("rope_scaling", &rope_scaling),
    ] {
        if let Some(kind) = rope
            .as_ref()
            .and_then(|r| r.rope_type.clone().or_else(|| r.kind.clone()))
            && kind != "default"
            && kind != "mrope"
        {
            return Err(invalid(
                key(&format!("{name}.rope_type")),
                format!("only default (m)rope is supported, found {kind:?}"),
            ));
        }
    }
    let rope_theta = rope_parameters
        .as_ref()
        .and_then(|r| r.rope_theta)
        .or_else(|| pick(nested, root, |r| r.rope_theta))
        .ok_or_else(|| missing(key("rope_theta")))?;
    let section = rope_parameters
        .as_ref()
        .and_then(|r| r.mrope_section.clone())
        .or_else(|| rope_scaling.as_ref().and_then(|r| r.mrope_section.clone()));
    let section_key = if rope_parameters.is_some() {
        key("rope_parameters.mrope_section")
    } else {
        key("rope_scaling.mrope_section")
    };
    let section = section.ok_or_else(|| missing(section_key.clone()))?;
    let mrope_section: [usize; 3] = section.as_slice().try_into().map_err(|_| {
        invalid(
            &section_key,
            format!("expected 3 entries, found {section:?}"),
        )
    })?;

    if hidden_size % num_attention_heads != 0 {
        return Err(invalid(
            key("num_attention_heads"),
            format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(invalid(
            key("num_key_value_heads"),
            format!(
                "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
            ),
        ));
    }
    let head_dim = hidden_size / num_attention_heads;
    if mrope_section.iter().sum::<usize>() * 2 != head_dim {
        return Err(invalid(
            section_key,
            format!(
                "{mrope_section:?} must sum to head_dim / 2 = {}",
                head_dim / 2
            ),
        ));
    }
    Ok(TextConfig {
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        intermediate_size,
        vocab_size,
        rms_norm_eps,
        rope_theta,
        mrope_section,
    })
}

fn resolve_vision(raw: Option<&RawVision>) -> Result<VisionConfig> {
    let raw = raw.ok_or_else(|| missing("vision_config"))?;
    let key = |name: &str| format!("vision_config.{name}");
    let size = |name: &str, value: Option<usize>| -> Result<usize> {
        match value {
            None => Err(missing(key(name))),
            Some(0) => Err(invalid(key(name), "must be positive")),
            Some(v) => Ok(v),
        }
    };
    let depth = size("depth", raw.depth)?;
    let hidden_size = size("hidden_size", raw.hidden_size)?;
    let num_heads = size("num_heads", raw.num_heads)?;
    let intermediate_size = size("intermediate_size", raw.intermediate_size)?;
    let patch_size = size("patch_size", raw.patch_size.or(raw.spatial_patch_size))?;
    let temporal_patch_size = size("temporal_patch_size", raw.temporal_patch_size)?;
    let spatial_merge_size = size("spatial_merge_size", raw.spatial_merge_size)?;
    // transformers calls it `in_channels`; the hub file of the 3B says `in_chans`.
    let in_channels = size("in_channels", raw.in_channels.or(raw.in_chans))?;
    let window_size = size("window_size", raw.window_size)?;
    let out_hidden_size = size("out_hidden_size", raw.out_hidden_size)?;
    let tokens_per_second = size("tokens_per_second", raw.tokens_per_second)?;
    let fullatt_block_indexes = raw
        .fullatt_block_indexes
        .clone()
        .ok_or_else(|| missing(key("fullatt_block_indexes")))?;
    match &raw.hidden_act {
        None => return Err(missing(key("hidden_act"))),
        Some(act) if act != "silu" => {
            return Err(invalid(
                key("hidden_act"),
                format!("only \"silu\" is supported, found {act:?}"),
            ));
        }
        Some(_) => {}
    }
    let rope_theta = raw
        .rope_parameters
        .as_ref()
        .and_then(|r| r.rope_theta)
        .unwrap_or(DEFAULT_VISION_ROPE_THETA);

    if hidden_size % num_heads != 0 {
        return Err(invalid(
            key("num_heads"),
            format!("{num_heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    let head_dim = hidden_size / num_heads;
    if head_dim % 4 != 0 {
        return Err(invalid(
            key("num_heads"),
            format!("vision head_dim {head_dim} must be a multiple of 4 for the 2-D rope"),
        ));
    }
    let unit = spatial_merge_size * patch_size;
    if window_size % unit != 0 {
        return Err(invalid(
            key("window_size"),
            format!("{window_size} must be a multiple of spatial_merge_size · patch_size = {unit}"),
        ));
    }
    if let Some(&bad) = fullatt_block_indexes.iter().find(|&&i| i >= depth) {
        return Err(invalid(
            key("fullatt_block_indexes"),
            format!("block {bad} is out of range for depth {depth}"),
        ));
    }
    Ok(VisionConfig {
        depth,
        hidden_size,
        num_heads,
        head_dim,
        intermediate_size,
        patch_size,
        temporal_patch_size,
        spatial_merge_size,
        in_channels,
        window_size,
        fullatt_block_indexes,
        out_hidden_size,
        tokens_per_second,
        rope_theta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published `config.json` of Qwen2.5-VL-3B-Instruct (flat hub layout), values from
    /// `qwen2_5_vl_reference.md` §1.1.
    const FLAT_3B: &str = include_str!("../tests/data/config_3b_flat.json");

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    #[test]
    fn flat_3b_config_resolves_to_the_published_sizes() {
        let cfg = Config::from_json_str(FLAT_3B).unwrap();
        assert_eq!(
            cfg.text,
            TextConfig {
                hidden_size: 2048,
                num_hidden_layers: 36,
                num_attention_heads: 16,
                num_key_value_heads: 2,
                head_dim: 128,
                intermediate_size: 11008,
                vocab_size: 151936,
                rms_norm_eps: 1e-6,
                rope_theta: 1e6,
                mrope_section: [16, 24, 24],
            }
        );
        assert_eq!(
            cfg.vision,
            VisionConfig {
                depth: 32,
                hidden_size: 1280,
                num_heads: 16,
                head_dim: 80,
                intermediate_size: 3420,
                patch_size: 14,
                temporal_patch_size: 2,
                spatial_merge_size: 2,
                in_channels: 3,
                window_size: 112,
                fullatt_block_indexes: vec![7, 15, 23, 31],
                out_hidden_size: 2048,
                tokens_per_second: 2,
                rope_theta: 10_000.0,
            }
        );
        assert!(cfg.tie_word_embeddings);
        assert_eq!(
            cfg.tokens,
            SpecialTokenIds {
                image: 151655,
                video: 151656,
                vision_start: 151652,
                vision_end: 151653,
                vision_pad: Some(151654),
                bos: Some(151643),
                eos: vec![151645],
                pad: None,
            }
        );
        assert_eq!(cfg.vision.patch_dim(), 1176);
        assert_eq!(cfg.vision.merge_unit(), 4);
        assert_eq!(cfg.vision.window_merged_side(), 4);
    }

    #[test]
    fn nested_transformers5_config_of_the_tiny_model() {
        let cfg = Config::from_file(&fixture("tests/fixtures/tiny-model/config.json")).unwrap();
        assert_eq!(cfg.text.hidden_size, 64);
        assert_eq!(cfg.text.num_hidden_layers, 2);
        assert_eq!(cfg.text.num_attention_heads, 4);
        assert_eq!(cfg.text.num_key_value_heads, 2);
        assert_eq!(cfg.text.head_dim, 16);
        assert_eq!(cfg.text.intermediate_size, 128);
        assert_eq!(cfg.text.vocab_size, 768);
        assert_eq!(cfg.text.mrope_section, [2, 3, 3]);
        assert_eq!(cfg.text.rope_theta, 1e6);
        assert_eq!(cfg.vision.depth, 2);
        assert_eq!(cfg.vision.hidden_size, 32);
        assert_eq!(cfg.vision.head_dim, 16);
        assert_eq!(cfg.vision.fullatt_block_indexes, vec![1]);
        assert_eq!(cfg.vision.rope_theta, 10_000.0);
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.tokens.image, 758);
        assert_eq!(cfg.tokens.video, 759);
        assert_eq!(cfg.tokens.vision_start, 755);
        assert_eq!(cfg.tokens.vision_end, 756);
        assert_eq!(cfg.tokens.vision_pad, Some(757));
        assert_eq!(cfg.tokens.eos, vec![748]);
        assert_eq!(cfg.tokens.pad, Some(746));
    }

    #[test]
    fn flat_and_nested_forms_of_one_model_resolve_identically() {
        let dir = fixture("tests/fixtures/model/tied");
        let nested = Config::from_file(&dir.join("config.json")).unwrap();
        let flat = Config::from_file(&dir.join("config.flat.json")).unwrap();
        assert_eq!(nested, flat);
    }

    fn without(json: &str, pointer: &str) -> String {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
        let (parent, leaf) = pointer.rsplit_once('/').unwrap();
        value
            .pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(leaf)
            .unwrap();
        value.to_string()
    }

    fn missing_key(json: &str) -> String {
        match Config::from_json_str(json) {
            Err(ModelError::MissingKey { key }) => key,
            other => panic!("expected a missing key, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_size_is_an_error_naming_the_key() {
        assert_eq!(
            missing_key(&without(FLAT_3B, "/hidden_size")),
            "hidden_size"
        );
        assert_eq!(
            missing_key(&without(FLAT_3B, "/vision_config/depth")),
            "vision_config.depth"
        );
        assert_eq!(
            missing_key(&without(FLAT_3B, "/rope_scaling/mrope_section")),
            "rope_scaling.mrope_section"
        );
        assert_eq!(
            missing_key(&without(FLAT_3B, "/tie_word_embeddings")),
            "tie_word_embeddings"
        );
        assert_eq!(
            missing_key(&without(FLAT_3B, "/image_token_id")),
            "image_token_id"
        );
        assert_eq!(
            missing_key(&without(FLAT_3B, "/vision_config")),
            "vision_config"
        );

        let tiny =
            std::fs::read_to_string(fixture("tests/fixtures/tiny-model/config.json")).unwrap();
        assert_eq!(
            missing_key(&without(&tiny, "/text_config/num_key_value_heads")),
            "text_config.num_key_value_heads"
        );
        assert_eq!(
            missing_key(&without(
                &tiny,
                "/text_config/rope_parameters/mrope_section"
            )),
            "text_config.rope_parameters.mrope_section"
        );
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let mut value: serde_json::Value = serde_json::from_str(FLAT_3B).unwrap();
        value["rope_scaling"]["mrope_section"] = serde_json::json!([16, 24, 23]);
        let err = Config::from_json_str(&value.to_string()).unwrap_err();
        assert!(
            matches!(&err, ModelError::InvalidConfig { key, .. } if key == "rope_scaling.mrope_section"),
            "{err}"
        );

        let mut value: serde_json::Value = serde_json::from_str(FLAT_3B).unwrap();
        value["vision_config"]["out_hidden_size"] = serde_json::json!(1024);
        let err = Config::from_json_str(&value.to_string()).unwrap_err();
        assert!(err.to_string().contains("out_hidden_size"), "{err}");

        let mut value: serde_json::Value = serde_json::from_str(FLAT_3B).unwrap();
        value["vision_config"]["fullatt_block_indexes"] = serde_json::json!([7, 32]);
        let err = Config::from_json_str(&value.to_string()).unwrap_err();
        assert!(err.to_string().contains("block 32"), "{err}");
    }

    #[test]
    fn eos_may_be_a_list() {
        let mut value: serde_json::Value = serde_json::from_str(FLAT_3B).unwrap();
        value["eos_token_id"] = serde_json::json!([151645, 151643]);
        let cfg = Config::from_json_str(&value.to_string()).unwrap();
        assert_eq!(cfg.tokens.eos, vec![151645, 151643]);
    }
}
