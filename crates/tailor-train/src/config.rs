//! The training config file: TOML with the Hugging Face key names of `SFTConfig` (TRL 1.16,
//! over transformers 5.24's `TrainingArguments`) and PEFT 0.21's `LoraConfig`, so that the
//! tutorial's settings port key by key.
//!
//! ```toml
//! [model]     # which base model, in which dtype
//! [data]      # catalog, split and chat format (the `tailor data` options)
//! [lora]      # LoraConfig
//! [training]  # SFTConfig / TrainingArguments
//! ```
//!
//! Every default below was read in the installed sources and names the class it comes from.
//! An unknown key is an error that lists the valid keys; a value tailor cannot honour is an error
//! that says why; keys accepted only for compatibility produce [`TrainConfig::notes`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tailor_core::LabelMask;

use crate::schedule::{self, SchedulerType};

/// The four sections, in file order.
pub const SECTIONS: [&str; 4] = ["model", "data", "lora", "training"];

/// A config that cannot be read, parsed or accepted; `origin` is the file (or `<config>`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has unknown or missing keys, a bad override, or a value tailor
    /// does not support.
    #[error("{origin}: {message}")]
    Invalid {
        /// The config file, or `<config>` for text without a file.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// A complete training configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `[model]`
    pub model: ModelSection,
    /// `[data]`
    pub data: DataSection,
    /// `[lora]`; without it every weight of the model is trained (full fine-tuning, as TRL does
    /// when no `peft_config` is given).
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// `[training]`
    pub training: TrainingArgs,
}

/// Parameter dtype of the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    /// 32-bit floats (`"f32"`, or torch's `"float32"`).
    #[serde(alias = "float32")]
    F32,
    /// bfloat16 (`"bf16"`, or `"bfloat16"`).
    #[serde(alias = "bfloat16")]
    Bf16,
    /// IEEE half (`"f16"`, or `"float16"`).
    #[serde(alias = "float16")]
    F16,
}

impl ModelDtype {
    /// The candle dtype.
    pub fn to_candle(self) -> candle_core::DType {
        match self {
            ModelDtype::F32 => candle_core::DType::F32,
            ModelDtype::Bf16 => candle_core::DType::BF16,
            ModelDtype::F16 => candle_core::DType::F16,
        }
    }
}

/// `[model]`: the base model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model folder or a hub id such as `Qwen/Qwen2.5-VL-3B-Instruct` (required).
    pub name_or_path: String,
    /// Parameter dtype; absent means [`TrainConfig::resolved_dtype`] decides from
    /// `training.bf16`.
    #[serde(default)]
    pub dtype: Option<ModelDtype>,
    /// Override of the image processor's `min_pixels`.
    #[serde(default)]
    pub min_pixels: Option<u64>,
    /// Override of the image processor's `max_pixels` (caps image tokens).
    #[serde(default)]
    pub max_pixels: Option<u64>,
}

/// `[data]`: catalog, split and chat format, with the meanings and defaults of
/// `tailor data split` / `tailor data stats` (`src/args.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Catalog: a folder or file in any layout `tailor data` reads, or a hub dataset id
    /// (required).
    pub dataset: String,
    /// A `split.json` written by `tailor data split`; when given, the split keys below are not
    /// used.
    #[serde(default)]
    pub split_file: Option<PathBuf>,
    /// Fraction of rows held out from training (valid + test); default 0.2 as `tailor data
    /// split`.
    #[serde(default = "default_test_size")]
    pub test_size: f64,
    /// Fraction of the held-out rows that become the test split; default 0.5.
    #[serde(default = "default_valid_size")]
    pub valid_size: f64,
    /// Seed of the NumPy generator the split shuffles with; default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Column that identifies the product; rows of one product stay in one split.
    #[serde(default)]
    pub group_by: Option<String>,
    /// Regex over `group_by` whose first capture group is the product id (needs `group_by`).
    #[serde(default)]
    pub group_pattern: Option<String>,
    /// System message template; `None` means the recipe's (`tailor_data::chat::RECIPE_SYSTEM`).
    #[serde(default)]
    pub system_message: Option<String>,
    /// User prompt template after the image; `None` means the recipe's ("What is this
    /// product?").
    #[serde(default)]
    pub prompt: Option<String>,
    /// Assistant answer template; `None` means the recipe's (`"{category1}/{category2}:
    /// {text}"`).
    #[serde(default)]
    pub target: Option<String>,
    /// Which tokens carry labels: `assistant` (default) or `recipe` (the tutorial's collator).
    #[serde(default = "default_label_mask")]
    pub label_mask: LabelMask,
    /// Longest sample in tokens (longer ones are skipped whole, never cut through image tokens);
    /// `"none"` for no limit. Default 1024: `SFTConfig.max_length` (trl/trainer/sft_config.py).
    #[serde(default = "default_max_length", deserialize_with = "de_max_length")]
    pub max_length: Option<usize>,
}

/// `target_modules` of `LoraConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// A list: a module matches when its full name equals an entry or ends with `.` + entry
    /// (PEFT's `check_target_module_exists`).
    Names(Vec<String>),
    /// `"all-linear"`: every linear layer except the output head.
    AllLinear,
    /// Any other string: a regex that must match the *whole* module name (PEFT's
    /// `re.fullmatch`).
    Regex(String),
}

/// `init_lora_weights` of `LoraConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitLoraWeights {
    /// `true` (PEFT's default): A Kaiming-uniform, B zero, so the adapter starts as a no-op.
    Default,
    /// `"gaussian"`: A normal with std `1/r`, B zero.
    Gaussian,
}

/// `[lora]`: PEFT `LoraConfig` keys (defaults from peft/tuners/lora/config.py, peft 0.21.2),
/// plus tailor's `adapt_vision`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// LoRA rank (`LoraConfig.r`, default 8).
    #[serde(default = "default_r")]
    pub r: usize,
    /// Scale numerator (`LoraConfig.lora_alpha`, default 8); scaling is `lora_alpha / r`.
    #[serde(default = "default_lora_alpha")]
    pub lora_alpha: f64,
    /// Dropout on the LoRA input (`LoraConfig.lora_dropout`, default 0.0).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which modules get adapters (required: PEFT has no default for `qwen2_5_vl`).
    #[serde(deserialize_with = "de_target_modules")]
    pub target_modules: TargetModules,
    /// Bias training (`LoraConfig.bias`); only `"none"` (the default) is supported.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// PEFT task type; only `"CAUSAL_LM"` (PEFT's default is unset, which means the same here).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank-stabilised scaling `lora_alpha / sqrt(r)` (`LoraConfig.use_rslora`, default false).
    #[serde(default)]
    pub use_rslora: bool,
    /// Modules trained in full and saved with the adapter (`LoraConfig.modules_to_save`).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Adapter initialisation (`LoraConfig.init_lora_weights`, default `true`).
    #[serde(default = "default_init", deserialize_with = "de_init_lora_weights")]
    pub init_lora_weights: InitLoraWeights,
    /// tailor's key, default false. `false`: `target_modules` are matched only against the
    /// language model's modules, so the vision tower stays frozen whatever the names say.
    /// `true`: PEFT's plain name matching over the whole model, vision tower included (what the
    /// tutorial's PEFT would do; with `q_proj`/`v_proj` the vision blocks, whose attention is a
    /// fused `qkv`, match nothing anyway, but `"all-linear"` or a broad regex would adapt them).
    #[serde(default)]
    pub adapt_vision: bool,
}

impl LoraSection {
    /// The factor applied to `B·A·x`: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with
    /// `use_rslora` (PEFT's `LoraLayer.update_layer`).
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// `optim` values tailor supports; both are `torch.optim.AdamW` (the fused kernel computes the
/// same update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimizer {
    /// `adamw_torch`
    AdamwTorch,
    /// `adamw_torch_fused` (the default of `TrainingArguments` 5.24 with torch ≥ 2.8)
    AdamwTorchFused,
}

impl Optimizer {
    /// The supported names.
    pub const NAMES: [&'static str; 2] = ["adamw_torch", "adamw_torch_fused"];
}

impl<'de> Deserialize<'de> for Optimizer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "adamw_torch" => Ok(Optimizer::AdamwTorch),
            "adamw_torch_fused" => Ok(Optimizer::AdamwTorchFused),
            other => Err(serde::de::Error::custom(format!(
                "optim {other:?} is not supported by tailor; supported: {} (both run AdamW)",
                Optimizer::NAMES.join(", ")
            ))),
        }
    }
}

/// `eval_strategy` (`transformers.IntervalStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    /// Never.
    No,
    /// Every `eval_steps` updates.
    Steps,
    /// At the end of each epoch.
    Epoch,
}

/// `save_strategy` (`transformers.SaveStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveStrategy {
    /// Never.
    No,
    /// Every `save_steps` updates.
    Steps,
    /// At the end of each epoch.
    Epoch,
    /// Whenever `metric_for_best_model` improves.
    Best,
}

impl SaveStrategy {
    fn name(self) -> &'static str {
        match self {
            SaveStrategy::No => "no",
            SaveStrategy::Steps => "steps",
            SaveStrategy::Epoch => "epoch",
            SaveStrategy::Best => "best",
        }
    }
}

impl IntervalStrategy {
    fn name(self) -> &'static str {
        match self {
            IntervalStrategy::No => "no",
            IntervalStrategy::Steps => "steps",
            IntervalStrategy::Epoch => "epoch",
        }
    }
}

/// `gradient_checkpointing_kwargs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientCheckpointingKwargs {
    /// torch's choice between reentrant and non-reentrant checkpointing. Accepted for the
    /// tutorial; it has no meaning in tailor, whose per-layer recomputation is one mechanism.
    #[serde(default)]
    pub use_reentrant: Option<bool>,
}

/// `[training]`: `SFTConfig` keys. Defaults are `TrainingArguments`' (transformers 5.24,
/// transformers/training_args.py) except where TRL 1.16 overrides them — `learning_rate`,
/// `logging_steps`, `gradient_checkpointing` and `bf16` (trl/trainer/sft_config.py and
/// trl/trainer/base_config.py `_BaseConfig`) — and `max_length`, which lives in `[data]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingArgs {
    /// Where checkpoints, the adapter and `log.jsonl` go (required).
    pub output_dir: PathBuf,
    /// Epochs, may be fractional (`TrainingArguments`: 3.0).
    #[serde(default = "default_epochs")]
    pub num_train_epochs: f64,
    /// Total updates when positive, overriding epochs (`TrainingArguments`: -1).
    #[serde(default = "default_max_steps")]
    pub max_steps: i64,
    /// Samples per micro-batch (`TrainingArguments`: 8).
    #[serde(default = "default_batch")]
    pub per_device_train_batch_size: usize,
    /// Samples per evaluation batch (`TrainingArguments`: 8).
    #[serde(default = "default_batch")]
    pub per_device_eval_batch_size: usize,
    /// Micro-batches per update (`TrainingArguments`: 1).
    #[serde(default = "default_one")]
    pub gradient_accumulation_steps: usize,
    /// Recompute activations per decoder layer in backward (`_BaseConfig` of TRL: true;
    /// transformers' own default is false).
    #[serde(default = "default_true")]
    pub gradient_checkpointing: bool,
    /// Options of torch's checkpointing; only `use_reentrant` is accepted (and ignored).
    #[serde(default)]
    pub gradient_checkpointing_kwargs: Option<GradientCheckpointingKwargs>,
    /// Optimizer (`TrainingArguments` 5.24: `adamw_torch_fused` when torch ≥ 2.8).
    #[serde(default = "default_optim")]
    pub optim: Optimizer,
    /// Peak learning rate (`SFTConfig`: 2e-5; `TrainingArguments` has 5e-5).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Decoupled weight decay (`TrainingArguments`: 0.0).
    #[serde(default)]
    pub weight_decay: f64,
    /// AdamW beta1 (`TrainingArguments`: 0.9).
    #[serde(default = "default_beta1")]
    pub adam_beta1: f64,
    /// AdamW beta2 (`TrainingArguments`: 0.999).
    #[serde(default = "default_beta2")]
    pub adam_beta2: f64,
    /// AdamW epsilon (`TrainingArguments`: 1e-8).
    #[serde(default = "default_eps")]
    pub adam_epsilon: f64,
    /// Schedule (`TrainingArguments`: `linear`).
    #[serde(default = "default_scheduler")]
    pub lr_scheduler_type: SchedulerType,
    /// Warmup as a fraction of all updates, rounded up. Removed from `TrainingArguments` in
    /// transformers 5 (where a fractional `warmup_steps` means the same) but used by the
    /// tutorial; exclusive with `warmup_steps`.
    #[serde(default)]
    pub warmup_ratio: Option<f64>,
    /// Warmup updates: a whole number, or a float below 1 meaning a fraction of all updates
    /// (`TrainingArguments` 5.24: 0).
    #[serde(default)]
    pub warmup_steps: Option<f64>,
    /// Global-norm clipping threshold; 0 disables (`TrainingArguments`: 1.0).
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Updates between logs, or a fraction (< 1) of all updates (`_BaseConfig` of TRL: 10;
    /// transformers has 500).
    #[serde(default = "default_logging_steps")]
    pub logging_steps: f64,
    /// When to evaluate (`TrainingArguments`: `no`).
    #[serde(default = "default_eval_strategy")]
    pub eval_strategy: IntervalStrategy,
    /// Updates between evaluations; unset means `logging_steps`, as `TrainingArguments`.
    #[serde(default)]
    pub eval_steps: Option<f64>,
    /// When to save (`TrainingArguments`: `steps`).
    #[serde(default = "default_save_strategy")]
    pub save_strategy: SaveStrategy,
    /// Updates between saves, or a fraction (`TrainingArguments`: 500).
    #[serde(default = "default_save_steps")]
    pub save_steps: f64,
    /// Checkpoints kept; older ones are deleted, the best is always kept (`TrainingArguments`:
    /// unlimited).
    #[serde(default)]
    pub save_total_limit: Option<usize>,
    /// `loss` or `eval_loss` (the same metric; HF prefixes `eval_`). Unset means `loss` when
    /// `load_best_model_at_end`, as `TrainingArguments`.
    #[serde(default)]
    pub metric_for_best_model: Option<String>,
    /// Unset means "not a loss": false for `loss`/`eval_loss`, as `TrainingArguments`.
    #[serde(default)]
    pub greater_is_better: Option<bool>,
    /// Restore the best checkpoint's adapter at the end (`TrainingArguments`: false).
    #[serde(default)]
    pub load_best_model_at_end: bool,
    /// Train in bfloat16 (`_BaseConfig` of TRL: true when fp16 is unset, which it always is
    /// here). Decides [`TrainConfig::resolved_dtype`] when `[model] dtype` is absent.
    #[serde(default = "default_true")]
    pub bf16: bool,
    /// TF32 matmuls on Ampere+ GPUs (`TrainingArguments`: unset). Accepted; meaningless on the
    /// CPU.
    #[serde(default)]
    pub tf32: Option<bool>,
    /// Seed for adapter initialisation, dropout and shuffling (`TrainingArguments`: 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Must be false: tailor does not upload (`TrainingArguments`: false).
    #[serde(default)]
    pub push_to_hub: bool,
    /// Logging integrations; `"none"` or `[]` (the default in transformers 5.24). tailor logs
    /// to `output_dir/log.jsonl` whatever is given.
    #[serde(default, deserialize_with = "de_report_to")]
    pub report_to: Vec<String>,
    /// Accepted for compatibility (`SFTConfig`: `"text"`); tailor builds samples from the
    /// `[data]` templates.
    #[serde(default)]
    pub dataset_text_field: Option<String>,
    /// Accepted for compatibility (`SFTConfig`: unset); tailor always prepares samples itself,
    /// which is what the tutorial's `skip_prepare_dataset = true` asks for.
    #[serde(default)]
    pub dataset_kwargs: Option<toml::Table>,
    /// Accepted for compatibility (`TrainingArguments`: true); tailor passes the model only
    /// what it uses.
    #[serde(default)]
    pub remove_unused_columns: Option<bool>,
    /// tailor's key: how micro-batch losses combine under gradient accumulation. `"tokens"`
    /// (default): Σ cross-entropy over the whole accumulated batch / its labelled-token count,
    /// transformers' `num_items_in_batch` rule, so every token weighs the same.
    /// `"micro_batch_mean"`: each micro-batch's mean loss / the number of micro-batches, which is
    /// what TRL 1.16 + transformers 5.24 do for Qwen2.5-VL (its `accepts_loss_kwargs = False`);
    /// choose it to reproduce a TRL run number for number.
    #[serde(default)]
    pub loss_normalization: LossNormalizationKey,
}

/// `[training] loss_normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossNormalizationKey {
    /// Σ CE / labelled tokens of the accumulated batch.
    #[default]
    Tokens,
    /// Mean of micro-batch means.
    MicroBatchMean,
}

impl TrainingArgs {
    /// `eval_steps` as `TrainingArguments.__post_init__` resolves it: with the `steps` strategy,
    /// unset or 0 means `logging_steps`. `None` when evaluation is not by steps.
    pub fn resolved_eval_steps(&self) -> Option<f64> {
        match self.eval_strategy {
            IntervalStrategy::Steps => Some(
                self.eval_steps
                    .filter(|s| *s != 0.0)
                    .unwrap_or(self.logging_steps),
            ),
            _ => self.eval_steps,
        }
    }

    /// `metric_for_best_model` as `TrainingArguments` resolves it (`loss` when
    /// `load_best_model_at_end` and unset).
    pub fn resolved_metric_for_best_model(&self) -> Option<&str> {
        match &self.metric_for_best_model {
            Some(m) => Some(m),
            None if self.load_best_model_at_end => Some("loss"),
            None => None,
        }
    }

    /// `greater_is_better` as `TrainingArguments` resolves it: explicit, else `not
    /// metric.endswith("loss")`.
    pub fn resolved_greater_is_better(&self) -> Option<bool> {
        self.greater_is_better.or_else(|| {
            self.resolved_metric_for_best_model()
                .map(|m| !m.ends_with("loss"))
        })
    }

    /// Warmup updates for `num_training_steps` total updates: `warmup_ratio` as
    /// `ceil(total * ratio)`, else `warmup_steps` through `get_warmup_steps`.
    pub fn resolved_warmup_steps(&self, num_training_steps: u64) -> u64 {
        match (self.warmup_ratio, self.warmup_steps) {
            (Some(r), _) => (num_training_steps as f64 * r).ceil() as u64,
            (None, Some(w)) => schedule::warmup_steps(w, num_training_steps),
            (None, None) => 0,
        }
    }
}

fn default_test_size() -> f64 {
    0.2
}
fn default_valid_size() -> f64 {
    0.5
}
fn default_seed() -> u64 {
    42
}
fn default_label_mask() -> LabelMask {
    LabelMask::Assistant
}
fn default_max_length() -> Option<usize> {
    Some(1024)
}
fn default_r() -> usize {
    8
}
fn default_lora_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}
fn default_init() -> InitLoraWeights {
    InitLoraWeights::Default
}
fn default_epochs() -> f64 {
    3.0
}
fn default_max_steps() -> i64 {
    -1
}
fn default_batch() -> usize {
    8
}
fn default_one() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_optim() -> Optimizer {
    Optimizer::AdamwTorchFused
}
fn default_lr() -> f64 {
    2e-5
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_scheduler() -> SchedulerType {
    SchedulerType::Linear
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_logging_steps() -> f64 {
    10.0
}
fn default_eval_strategy() -> IntervalStrategy {
    IntervalStrategy::No
}
fn default_save_strategy() -> SaveStrategy {
    SaveStrategy::Steps
}
fn default_save_steps() -> f64 {
    500.0
}

/// A string or a list of strings (`target_modules`, `report_to`), read through `toml::Value`
/// so that a wrong type gets a message naming what was expected.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
) -> std::result::Result<std::result::Result<String, Vec<String>>, D::Error> {
    use serde::de::Error;
    let wrong = || D::Error::custom(format!("{key}: expected a string or a list of strings"));
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(Ok(s)),
        toml::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                _ => Err(wrong()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Err),
        _ => Err(wrong()),
    }
}

fn de_target_modules<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<TargetModules, D::Error> {
    Ok(match one_or_many(d, "target_modules")? {
        Err(v) => TargetModules::Names(v),
        Ok(s) if s == "all-linear" => TargetModules::AllLinear,
        Ok(s) => TargetModules::Regex(s),
    })
}

fn de_report_to<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    // transformers normalises "none" / ["none"] to [] and a single name to a list.
    Ok(match one_or_many(d, "report_to")? {
        Ok(s) if s == "none" => Vec::new(),
        Ok(s) => vec![s],
        Err(v) if v == ["none"] => Vec::new(),
        Err(v) => v,
    })
}

fn de_max_length<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<usize>, D::Error> {
    use serde::de::Error;
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(n) if n >= 1 => Ok(Some(n as usize)),
        toml::Value::String(s) if s.eq_ignore_ascii_case("none") => Ok(None),
        other => Err(D::Error::custom(format!(
            "max_length = {other}: expected a token count of at least 1, or \"none\" for no limit"
        ))),
    }
}

fn de_init_lora_weights<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<InitLoraWeights, D::Error> {
    use serde::de::Error;
    match toml::Value::deserialize(d)? {
        toml::Value::Boolean(true) => Ok(InitLoraWeights::Default),
        toml::Value::String(s) if s == "gaussian" => Ok(InitLoraWeights::Gaussian),
        toml::Value::Boolean(false) => Err(D::Error::custom(
            "init_lora_weights = false (random A and B, PEFT's debugging option) is not supported; \
             use true or \"gaussian\"",
        )),
        other => Err(D::Error::custom(format!(
            "init_lora_weights = {other} is not supported; use true or \"gaussian\""
        ))),
    }
}

/// Where a text came from, for error messages.
struct Origin<'a>(&'a str);

impl Origin<'_> {
    fn err(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            origin: self.0.to_string(),
            message: message.to_string(),
        }
    }
}

impl TrainConfig {
    /// Reads a config file, applies `--set section.key=value` overrides, and validates it.
    /// Errors name the file.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// [`TrainConfig::from_file`] for text without a file (errors say `<config>`).
    pub fn from_str(text: &str, overrides: &[String]) -> Result<TrainConfig> {
        Self::parse(text, "<config>", overrides)
    }

    fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<TrainConfig> {
        let origin = Origin(origin);
        let mut doc: toml::Table = text.parse().map_err(|e| origin.err(e))?;
        for o in overrides {
            apply_override(&mut doc, o).map_err(|e| origin.err(e))?;
        }
        check_structure(&doc).map_err(|e| origin.err(e))?;
        let config: TrainConfig = if overrides.is_empty() {
            // Straight from the text, so that errors carry line and column.
            toml::from_str(text).map_err(|e| origin.err(e))?
        } else {
            TrainConfig::deserialize(toml::Value::Table(doc))
                .map_err(|e| origin.err(format!("after --set overrides: {e}")))?
        };
        config.validate().map_err(|e| origin.err(e))?;
        Ok(config)
    }

    /// The model dtype: `[model] dtype` if given, else bf16 when `training.bf16`, else f32.
    pub fn resolved_dtype(&self) -> ModelDtype {
        match self.model.dtype {
            Some(d) => d,
            None if self.training.bf16 => ModelDtype::Bf16,
            None => ModelDtype::F32,
        }
    }

    /// Checks values tailor cannot honour and combinations transformers rejects; the message
    /// names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.validate_model()?;
        self.validate_data()?;
        self.validate_lora()?;
        self.validate_training()
    }

    fn validate_model(&self) -> std::result::Result<(), String> {
        let m = &self.model;
        if m.name_or_path.trim().is_empty() {
            return Err("[model] name_or_path is empty".into());
        }
        if let (Some(lo), Some(hi)) = (m.min_pixels, m.max_pixels)
            && lo > hi
        {
            return Err(format!(
                "[model] min_pixels = {lo} is larger than max_pixels = {hi}"
            ));
        }
        Ok(())
    }

    fn validate_data(&self) -> std::result::Result<(), String> {
        let d = &self.data;
        if d.dataset.trim().is_empty() {
            return Err("[data] dataset is empty".into());
        }
        for (key, v) in [("test_size", d.test_size), ("valid_size", d.valid_size)] {
            if !(v > 0.0 && v < 1.0) {
                return Err(format!(
                    "[data] {key} = {v}: must be strictly between 0 and 1"
                ));
            }
        }
        if d.group_pattern.is_some() && d.group_by.is_none() {
            return Err("[data] group_pattern needs group_by (the column it applies to)".into());
        }
        if let Some(p) = &d.group_pattern {
            let re = regex::Regex::new(p)
                .map_err(|e| format!("[data] group_pattern {p:?} is not a valid regex: {e}"))?;
            if re.captures_len() < 2 {
                return Err(format!(
                    "[data] group_pattern {p:?} has no capture group (the first one is the product id)"
                ));
            }
        }
        Ok(())
    }

    fn validate_lora(&self) -> std::result::Result<(), String> {
        let Some(l) = &self.lora else {
            return Ok(());
        };
        if l.r == 0 {
            return Err("[lora] r must be at least 1".into());
        }
        if !l.lora_alpha.is_finite() {
            return Err(format!(
                "[lora] lora_alpha = {} is not finite",
                l.lora_alpha
            ));
        }
        if !(0.0..1.0).contains(&l.lora_dropout) {
            return Err(format!(
                "[lora] lora_dropout = {}: must be in [0, 1)",
                l.lora_dropout
            ));
        }
        match &l.target_modules {
            TargetModules::Names(v) if v.is_empty() => {
                return Err(
                    "[lora] target_modules is empty: no module would get an adapter, so nothing \
                     would train"
                        .into(),
                );
            }
            TargetModules::Names(v) => {
                if let Some(bad) = v.iter().find(|n| n.trim().is_empty()) {
                    return Err(format!("[lora] target_modules has an empty name {bad:?}"));
                }
            }
            TargetModules::Regex(r) => {
                regex::Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                    format!("[lora] target_modules {r:?} is not a valid regex: {e}")
                })?;
            }
            TargetModules::AllLinear => {}
        }
        if l.bias != "none" {
            return Err(format!(
                "[lora] bias = {:?} is not supported: tailor trains no bias terms; only \"none\" \
                 (PEFT also has \"all\" and \"lora_only\")",
                l.bias
            ));
        }
        if let Some(t) = &l.task_type
            && t != "CAUSAL_LM"
        {
            return Err(format!(
                "[lora] task_type = {t:?} is not supported; tailor trains CAUSAL_LM only"
            ));
        }
        if let Some(m) = &l.modules_to_save
            && let Some(bad) = m.iter().find(|n| n.trim().is_empty())
        {
            return Err(format!("[lora] modules_to_save has an empty name {bad:?}"));
        }
        Ok(())
    }

    fn validate_training(&self) -> std::result::Result<(), String> {
        let t = &self.training;
        if t.output_dir.as_os_str().is_empty() {
            return Err("[training] output_dir is empty".into());
        }
        if t.max_steps == 0 {
            return Err(
                "[training] max_steps = 0: set a positive number of updates, or -1 to train for \
                 num_train_epochs"
                    .into(),
            );
        }
        if t.max_steps < 0 && !(t.num_train_epochs > 0.0 && t.num_train_epochs.is_finite()) {
            return Err(format!(
                "[training] num_train_epochs = {}: must be positive when max_steps is not set",
                t.num_train_epochs
            ));
        }
        for (key, v) in [
            ("per_device_train_batch_size", t.per_device_train_batch_size),
            ("per_device_eval_batch_size", t.per_device_eval_batch_size),
            ("gradient_accumulation_steps", t.gradient_accumulation_steps),
        ] {
            if v == 0 {
                return Err(format!("[training] {key} must be at least 1"));
            }
        }
        let non_negative = [
            ("learning_rate", t.learning_rate),
            ("weight_decay", t.weight_decay),
            ("adam_epsilon", t.adam_epsilon),
            ("max_grad_norm", t.max_grad_norm),
        ];
        for (key, v) in non_negative {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("[training] {key} = {v}: must be finite and >= 0"));
            }
        }
        for (key, v) in [("adam_beta1", t.adam_beta1), ("adam_beta2", t.adam_beta2)] {
            // torch.optim.AdamW's own check.
            if !(0.0..1.0).contains(&v) {
                return Err(format!("[training] {key} = {v}: must be in [0, 1)"));
            }
        }
        match (t.warmup_ratio, t.warmup_steps) {
            (Some(_), Some(_)) => {
                return Err(
                    "[training] warmup_ratio and warmup_steps are both set; use one (in \
                     transformers 5 a warmup_steps below 1 is the ratio)"
                        .into(),
                );
            }
            (Some(r), None) if !(0.0..=1.0).contains(&r) => {
                return Err(format!("[training] warmup_ratio = {r}: must be in [0, 1]"));
            }
            (None, Some(w)) if !(w >= 0.0 && w.is_finite()) => {
                return Err(format!("[training] warmup_steps = {w}: must be >= 0"));
            }
            _ => {}
        }
        check_interval("logging_steps", t.logging_steps)?;
        let eval_steps = t.resolved_eval_steps();
        if t.eval_strategy == IntervalStrategy::Steps {
            check_interval("eval_steps", eval_steps.unwrap_or(0.0))?;
        }
        if t.save_strategy == SaveStrategy::Steps {
            check_interval("save_steps", t.save_steps)?;
        }
        if t.save_total_limit == Some(0) {
            return Err("[training] save_total_limit must be at least 1 (or left out)".into());
        }
        if let Some(m) = &t.metric_for_best_model
            && m != "loss"
            && m != "eval_loss"
        {
            return Err(format!(
                "[training] metric_for_best_model = {m:?} is not supported; tailor evaluates the \
                 loss only: \"eval_loss\" or \"loss\""
            ));
        }
        if t.load_best_model_at_end && t.save_strategy != SaveStrategy::Best {
            check_load_best(t, eval_steps)?;
        }
        if t.save_strategy == SaveStrategy::Best && t.resolved_metric_for_best_model().is_none() {
            return Err(
                "[training] save_strategy = \"best\" needs metric_for_best_model (as transformers' \
                 Trainer)"
                    .into(),
            );
        }
        if t.push_to_hub {
            return Err(
                "[training] push_to_hub = true: tailor does not upload; set it to false and \
                 publish output_dir yourself (e.g. `hf upload`)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Notes to print at start about keys that were accepted but change nothing in tailor.
    pub fn notes(&self) -> Vec<String> {
        let t = &self.training;
        let mut notes = Vec::new();
        if let Some(kw) = &t.gradient_checkpointing_kwargs
            && let Some(r) = kw.use_reentrant
        {
            notes.push(format!(
                "gradient_checkpointing_kwargs.use_reentrant = {r} has no meaning in tailor \
                 (recomputation is per decoder layer, one mechanism)"
            ));
        }
        if let Some(tf32) = t.tf32 {
            notes.push(format!(
                "tf32 = {tf32} only concerns CUDA matmuls on Ampere or newer; it has no effect on \
                 the CPU"
            ));
        }
        if !t.report_to.is_empty() {
            notes.push(format!(
                "report_to = {:?}: tailor reports to no integration; it logs to {}",
                t.report_to,
                t.output_dir.join("log.jsonl").display()
            ));
        }
        if let Some(f) = &t.dataset_text_field {
            notes.push(format!(
                "dataset_text_field = {f:?} is accepted for compatibility: samples come from the \
                 [data] templates"
            ));
        }
        if let Some(kw) = &t.dataset_kwargs {
            let keys: Vec<&str> = kw.keys().map(String::as_str).collect();
            notes.push(format!(
                "dataset_kwargs ({}) is accepted for compatibility: tailor always prepares \
                 samples itself",
                keys.join(", ")
            ));
        }
        if let Some(r) = t.remove_unused_columns {
            notes.push(format!(
                "remove_unused_columns = {r} is accepted for compatibility: the model only \
                 receives the tensors it uses"
            ));
        }
        if self.lora.as_ref().is_some_and(|l| l.task_type.is_none()) {
            notes.push("[lora] task_type is unset; tailor trains a CAUSAL_LM adapter".into());
        }
        notes
    }
}

/// `logging_steps` / `eval_steps` / `save_steps`: positive, and whole when above 1
/// (`TrainingArguments._validate_args`).
fn check_interval(key: &str, v: f64) -> std::result::Result<(), String> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!(
            "[training] {key} = {v}: must be positive (a step count, or a fraction below 1 of all \
             updates)"
        ));
    }
    if v > 1.0 && v.fract() != 0.0 {
        return Err(format!(
            "[training] {key} = {v}: must be a whole number when larger than 1"
        ));
    }
    Ok(())
}

/// The `load_best_model_at_end` check of `TrainingArguments._validate_args` (5.24), for a
/// `save_strategy` other than `best`.
fn check_load_best(t: &TrainingArgs, eval_steps: Option<f64>) -> std::result::Result<(), String> {
    if t.eval_strategy.name() != t.save_strategy.name() {
        return Err(format!(
            "[training] load_best_model_at_end needs eval_strategy and save_strategy to match \
             (except save_strategy = \"best\"), but eval_strategy = {:?} and save_strategy = {:?}",
            t.eval_strategy.name(),
            t.save_strategy.name()
        ));
    }
    if t.eval_strategy != IntervalStrategy::Steps {
        return Ok(());
    }
    let eval = eval_steps.unwrap_or(t.logging_steps);
    let save = t.save_steps;
    if save % eval == 0.0 {
        return Ok(());
    }
    if eval < 1.0 || save < 1.0 {
        if !(eval < 1.0 && save < 1.0) {
            return Err(format!(
                "[training] load_best_model_at_end needs save_steps to be a multiple of \
                 eval_steps, which cannot be guaranteed when mixing a ratio and a step count \
                 (save_steps = {save}, eval_steps = {eval})"
            ));
        }
        // transformers scales both ratios by 1e6 to dodge float remainders; same here.
        const LARGE_MULTIPLIER: f64 = 1_000_000.0;
        if (save * LARGE_MULTIPLIER) % (eval * LARGE_MULTIPLIER) != 0.0 {
            return Err(format!(
                "[training] load_best_model_at_end needs save_steps to be a multiple of \
                 eval_steps, but {save} is not a multiple of {eval}"
            ));
        }
        return Ok(());
    }
    Err(format!(
        "[training] load_best_model_at_end needs save_steps to be a round multiple of eval_steps, \
         but {save} is not a round multiple of {eval}"
    ))
}

/// Applies one `section.key=value` (or `section.table.key=value`) override to the parsed
/// document. `value` is read as a TOML value (`3`, `true`, `"x"`, `["a", "b"]`, `{a = 1}`); text
/// that is not one is taken as a string, so `--set model.name_or_path=Qwen/Qwen2.5-VL-3B-Instruct`
/// needs no quotes.
fn apply_override(doc: &mut toml::Table, o: &str) -> std::result::Result<(), String> {
    let (path, raw) = o
        .split_once('=')
        .ok_or_else(|| format!("override {o:?}: expected section.key=value"))?;
    let path = path.trim();
    let mut parts = path.split('.').map(str::trim);
    let section = parts.next().unwrap_or_default();
    let keys: Vec<&str> = parts.collect();
    if keys.is_empty() {
        return Err(format!(
            "override {o:?}: {path:?} has no dot; expected section.key=value with a section among {}",
            SECTIONS.join(", ")
        ));
    }
    if !SECTIONS.contains(&section) {
        return Err(format!(
            "override {o:?}: unknown section {section:?}; sections: {}",
            SECTIONS.join(", ")
        ));
    }
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!("override {o:?}: empty key in {path:?}"));
    }
    let value = parse_value(raw.trim());
    let mut table = doc
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    for (i, key) in keys.iter().enumerate() {
        let toml::Value::Table(t) = table else {
            let at = std::iter::once(section)
                .chain(keys[..i].iter().copied())
                .collect::<Vec<_>>()
                .join(".");
            return Err(format!("override {o:?}: {at} is not a table"));
        };
        if i + 1 == keys.len() {
            t.insert(key.to_string(), value);
            return Ok(());
        }
        table = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    unreachable!("the loop returns at the last key")
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Unknown or missing sections, and the one required key whose plain serde error would not say
/// why it is required.
fn check_structure(doc: &toml::Table) -> std::result::Result<(), String> {
    if let Some(k) = doc.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
        return Err(format!(
            "unknown section or key {k:?} at the top level; sections: {}",
            SECTIONS.join(", ")
        ));
    }
    for s in SECTIONS {
        match doc.get(s) {
            // Without [lora] every weight is trained (full fine-tuning).
            None if s == "lora" => {}
            None => return Err(format!("missing section [{s}]")),
            Some(toml::Value::Table(_)) => {}
            Some(_) => return Err(format!("{s} must be a table ([{s}])")),
        }
    }
    if let Some(toml::Value::Table(lora)) = doc.get("lora")
        && !lora.contains_key("target_modules")
    {
        return Err(
            "[lora] target_modules is required: PEFT has no default target modules for \
             qwen2_5_vl (the tutorial uses [\"q_proj\", \"v_proj\"]; \"all-linear\" and a regex \
             are accepted too)"
                .into(),
        );
    }
    Ok(())
}

/// What the trainer and the model need, resolved from a validated config.
impl TrainConfig {
    /// The LoRA settings of `[lora]`, or `None` for full fine-tuning.
    pub fn lora_spec(&self) -> Option<tailor_model::LoraSpec> {
        let l = self.lora.as_ref()?;
        Some(tailor_model::LoraSpec {
            r: l.r,
            lora_alpha: l.lora_alpha,
            lora_dropout: l.lora_dropout,
            use_rslora: l.use_rslora,
            target_modules: match &l.target_modules {
                TargetModules::Names(n) => tailor_model::TargetModules::Names(n.clone()),
                TargetModules::AllLinear => tailor_model::TargetModules::AllLinear,
                TargetModules::Regex(r) => tailor_model::TargetModules::Regex(r.clone()),
            },
            adapt_vision: l.adapt_vision,
            init: match l.init_lora_weights {
                InitLoraWeights::Default => tailor_model::LoraInit::Kaiming,
                InitLoraWeights::Gaussian => tailor_model::LoraInit::Gaussian,
            },
            modules_to_save: l.modules_to_save.clone().unwrap_or_default(),
        })
    }

    /// The loop's settings of `[training]`, with transformers' resolutions (eval steps from
    /// logging steps, best-metric direction, warmup as a ratio or a count).
    pub fn settings(&self) -> crate::trainer::Settings {
        use crate::trainer::{LossNormalization, Strategy};
        let t = &self.training;
        let metric = t
            .resolved_metric_for_best_model()
            .map(|m| m.strip_prefix("eval_").unwrap_or(m).to_string());
        crate::trainer::Settings {
            output_dir: t.output_dir.clone(),
            base_model_name_or_path: self.model.name_or_path.clone(),
            batch_size: t.per_device_train_batch_size,
            eval_batch_size: t.per_device_eval_batch_size,
            accumulation: t.gradient_accumulation_steps,
            num_train_epochs: t.num_train_epochs,
            max_steps: t.max_steps,
            adamw: crate::optim::AdamWConfig {
                lr: t.learning_rate,
                beta1: t.adam_beta1,
                beta2: t.adam_beta2,
                eps: t.adam_epsilon,
                weight_decay: t.weight_decay,
            },
            scheduler: t.lr_scheduler_type,
            warmup: t.warmup_ratio.or(t.warmup_steps).unwrap_or(0.0),
            max_grad_norm: t.max_grad_norm,
            logging_steps: t.logging_steps,
            eval_strategy: match t.eval_strategy {
                IntervalStrategy::No => Strategy::No,
                IntervalStrategy::Steps => Strategy::Steps,
                IntervalStrategy::Epoch => Strategy::Epoch,
            },
            eval_steps: t.resolved_eval_steps().unwrap_or(t.logging_steps),
            save_strategy: match t.save_strategy {
                SaveStrategy::No => Strategy::No,
                SaveStrategy::Steps => Strategy::Steps,
                SaveStrategy::Epoch => Strategy::Epoch,
                SaveStrategy::Best => Strategy::Best,
            },
            save_steps: t.save_steps,
            save_total_limit: t.save_total_limit.map(|l| l as u64),
            metric_for_best_model: metric,
            greater_is_better: t.resolved_greater_is_better().unwrap_or(false),
            load_best_model_at_end: t.load_best_model_at_end,
            gradient_checkpointing: t.gradient_checkpointing,
            seed: t.seed,
            loss_normalization: match t.loss_normalization {
                LossNormalizationKey::Tokens => LossNormalization::Tokens,
                LossNormalizationKey::MicroBatchMean => LossNormalization::MicroBatchMean,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINIMAL: &str = r#"
[model]
name_or_path = "Qwen/Qwen2.5-VL-3B-Instruct"
[data]
dataset = "Marqo/deepfashion-multimodal"
[lora]
target_modules = ["q_proj", "v_proj"]
[training]
output_dir = "out"
"#;

    fn parse(text: &str) -> Result<TrainConfig> {
        TrainConfig::from_str(text, &[])
    }

    fn parse_set(text: &str, sets: &[&str]) -> Result<TrainConfig> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_str(text, &sets)
    }

    fn err(r: Result<TrainConfig>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn defaults_are_hf_s() {
        let c = parse(MINIMAL).unwrap();
        let t = &c.training;
        // SFTConfig / _BaseConfig overrides.
        assert_eq!(t.learning_rate, 2e-5);
        assert_eq!(t.logging_steps, 10.0);
        assert!(t.gradient_checkpointing);
        assert!(t.bf16);
        assert_eq!(c.data.max_length, Some(1024));
        // TrainingArguments.
        assert_eq!(t.num_train_epochs, 3.0);
        assert_eq!(t.max_steps, -1);
        assert_eq!(t.per_device_train_batch_size, 8);
        assert_eq!(t.per_device_eval_batch_size, 8);
        assert_eq!(t.gradient_accumulation_steps, 1);
        assert_eq!(t.optim, Optimizer::AdamwTorchFused);
        assert_eq!(t.lr_scheduler_type, SchedulerType::Linear);
        assert_eq!(
            (t.weight_decay, t.adam_beta1, t.adam_beta2, t.adam_epsilon),
            (0.0, 0.9, 0.999, 1e-8)
        );
        assert_eq!(t.max_grad_norm, 1.0);
        assert_eq!(t.resolved_warmup_steps(100), 0);
        assert_eq!(t.eval_strategy, IntervalStrategy::No);
        assert_eq!(t.save_strategy, SaveStrategy::Steps);
        assert_eq!(t.save_steps, 500.0);
        assert_eq!(t.seed, 42);
        assert!(t.report_to.is_empty());
        assert!(!t.push_to_hub && !t.load_best_model_at_end);
        assert_eq!(t.resolved_metric_for_best_model(), None);
        assert_eq!(t.resolved_greater_is_better(), None);
        // LoraConfig.
        let l = c.lora.as_ref().unwrap();
        assert_eq!((l.r, l.lora_alpha, l.lora_dropout), (8, 8.0, 0.0));
        assert_eq!(l.bias, "none");
        assert!(!l.use_rslora && !l.adapt_vision);
        assert_eq!(l.init_lora_weights, InitLoraWeights::Default);
        assert_eq!(l.scaling(), 1.0);
        // tailor data split.
        let d = &c.data;
        assert_eq!((d.test_size, d.valid_size, d.seed), (0.2, 0.5, 42));
        assert_eq!(d.label_mask, LabelMask::Assistant);
        assert!(d.system_message.is_none() && d.prompt.is_none() && d.target.is_none());
        // dtype follows bf16.
        assert_eq!(c.resolved_dtype(), ModelDtype::Bf16);
        assert_eq!(c.notes().len(), 1, "{:?}", c.notes()); // task_type unset
    }

    #[test]
    fn shipped_tutorial_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/deepfashion-qwen2.5-vl-3b.toml");
        let c = TrainConfig::from_file(&path, &[]).unwrap();
        assert_eq!(c.model.name_or_path, "Qwen/Qwen2.5-VL-3B-Instruct");
        assert_eq!(c.data.dataset, "Marqo/deepfashion-multimodal");
        let l = c.lora.as_ref().unwrap();
        assert_eq!((l.r, l.lora_alpha, l.lora_dropout), (8, 16.0, 0.05));
        assert_eq!(
            l.target_modules,
            TargetModules::Names(vec!["q_proj".into(), "v_proj".into()])
        );
        assert_eq!(l.task_type.as_deref(), Some("CAUSAL_LM"));
        let t = &c.training;
        assert_eq!(t.num_train_epochs, 3.0);
        assert_eq!(
            (t.per_device_train_batch_size, t.per_device_eval_batch_size),
            (4, 4)
        );
        assert_eq!(t.gradient_accumulation_steps, 8);
        assert!(t.gradient_checkpointing);
        assert_eq!(t.optim, Optimizer::AdamwTorchFused);
        assert_eq!(t.learning_rate, 2e-4);
        assert_eq!(t.lr_scheduler_type, SchedulerType::Constant);
        assert_eq!(t.logging_steps, 10.0);
        assert_eq!(t.eval_strategy, IntervalStrategy::Steps);
        assert_eq!(t.resolved_eval_steps(), Some(10.0));
        assert_eq!(t.save_strategy, SaveStrategy::Steps);
        assert_eq!(t.save_steps, 20.0);
        assert_eq!(t.resolved_metric_for_best_model(), Some("eval_loss"));
        assert_eq!(t.resolved_greater_is_better(), Some(false));
        assert!(t.load_best_model_at_end && t.bf16);
        assert_eq!(t.tf32, Some(true));
        assert_eq!(t.max_grad_norm, 0.3);
        assert_eq!(t.warmup_ratio, Some(0.03));
        assert_eq!(t.resolved_warmup_steps(471), 15);
        assert!(!t.push_to_hub && t.report_to.is_empty());
        assert_eq!(t.dataset_text_field.as_deref(), Some(""));
        assert_eq!(
            t.dataset_kwargs
                .as_ref()
                .unwrap()
                .get("skip_prepare_dataset"),
            Some(&toml::Value::Boolean(true))
        );
        assert_eq!(c.resolved_dtype(), ModelDtype::Bf16);
        let notes = c.notes().join("\n");
        for key in [
            "use_reentrant",
            "tf32",
            "dataset_text_field",
            "dataset_kwargs",
        ] {
            assert!(notes.contains(key), "{key} missing from {notes}");
        }
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let e = err(parse(&MINIMAL.replace("[lora]\n", "[lora]\nrank = 4\n")));
        assert!(
            e.contains("rank") && e.contains("lora_alpha") && e.contains("target_modules"),
            "{e}"
        );
        assert!(e.starts_with("<config>:"), "{e}");
        let e = err(parse(&format!("{MINIMAL}fp16 = true\n")));
        assert!(e.contains("fp16") && e.contains("learning_rate"), "{e}");
        let e = err(parse(&format!("{MINIMAL}[peft]\nr = 1\n")));
        assert!(e.contains("peft") && e.contains("training"), "{e}");
        // The same through an override.
        let e = err(parse_set(MINIMAL, &["training.fp16=true"]));
        assert!(e.contains("fp16") && e.contains("learning_rate"), "{e}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, MINIMAL.replace("[model]\n", "[model]\ncolour = 1\n")).unwrap();
        let e = TrainConfig::from_file(&path, &[]).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml") && e.contains("colour") && e.contains("line"),
            "{e}"
        );
        let e = TrainConfig::from_file(&dir.path().join("missing.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn target_modules_are_required_with_a_reason() {
        let e = err(parse(
            &MINIMAL.replace("target_modules = [\"q_proj\", \"v_proj\"]", ""),
        ));
        assert!(
            e.contains("target_modules") && e.contains("qwen2_5_vl"),
            "{e}"
        );
        let c = parse(&MINIMAL.replace("[\"q_proj\", \"v_proj\"]", "\"all-linear\"")).unwrap();
        assert_eq!(
            c.lora.as_ref().unwrap().target_modules,
            TargetModules::AllLinear
        );
        let c = parse(&MINIMAL.replace(
            "[\"q_proj\", \"v_proj\"]",
            r#"'.*language_model.*\.(q|v)_proj'"#,
        ))
        .unwrap();
        assert!(matches!(
            c.lora.as_ref().unwrap().target_modules,
            TargetModules::Regex(_)
        ));
        let e = err(parse(
            &MINIMAL.replace("[\"q_proj\", \"v_proj\"]", "\"(q_proj\""),
        ));
        assert!(e.contains("regex"), "{e}");
        let e = err(parse(&MINIMAL.replace("[\"q_proj\", \"v_proj\"]", "[]")));
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn unsupported_values_say_what_is_supported() {
        let e = err(parse(&format!("{MINIMAL}optim = \"sgd\"\n")));
        assert!(e.contains("sgd") && e.contains("adamw_torch_fused"), "{e}");
        let e = err(parse(&format!(
            "{MINIMAL}lr_scheduler_type = \"polynomial\"\n"
        )));
        assert!(e.contains("polynomial") && e.contains("cosine"), "{e}");
        let e = err(parse(
            &MINIMAL.replace("[lora]\n", "[lora]\nbias = \"all\"\n"),
        ));
        assert!(e.contains("bias") && e.contains("none"), "{e}");
        let e = err(parse(
            &MINIMAL.replace("[lora]\n", "[lora]\ntask_type = \"SEQ_CLS\"\n"),
        ));
        assert!(e.contains("CAUSAL_LM"), "{e}");
        let e = err(parse(
            &MINIMAL.replace("[lora]\n", "[lora]\ninit_lora_weights = \"pissa\"\n"),
        ));
        assert!(e.contains("pissa") && e.contains("gaussian"), "{e}");
        let e = err(parse(
            &MINIMAL.replace("[lora]\n", "[lora]\ninit_lora_weights = false\n"),
        ));
        assert!(e.contains("init_lora_weights"), "{e}");
        let e = err(parse(&format!("{MINIMAL}push_to_hub = true\n")));
        assert!(e.contains("does not upload"), "{e}");
        let e = err(parse(&format!(
            "{MINIMAL}metric_for_best_model = \"accuracy\"\n"
        )));
        assert!(e.contains("eval_loss"), "{e}");
        let e = err(parse(&format!("{MINIMAL}eval_strategy = \"sometimes\"\n")));
        assert!(e.contains("sometimes") && e.contains("epoch"), "{e}");
        let e = err(parse(&format!(
            "{MINIMAL}[training.gradient_checkpointing_kwargs]\npreserve_rng_state = true\n"
        )));
        assert!(
            e.contains("preserve_rng_state") && e.contains("use_reentrant"),
            "{e}"
        );
    }

    #[test]
    fn warmup_ratio_and_steps() {
        let c = parse(&format!("{MINIMAL}warmup_ratio = 0.1\n")).unwrap();
        assert_eq!(c.training.resolved_warmup_steps(95), 10);
        let c = parse(&format!("{MINIMAL}warmup_steps = 0.1\n")).unwrap();
        assert_eq!(c.training.resolved_warmup_steps(95), 10);
        let c = parse(&format!("{MINIMAL}warmup_steps = 7\n")).unwrap();
        assert_eq!(c.training.resolved_warmup_steps(95), 7);
        let e = err(parse(&format!(
            "{MINIMAL}warmup_steps = 7\nwarmup_ratio = 0.1\n"
        )));
        assert!(
            e.contains("warmup_ratio") && e.contains("warmup_steps"),
            "{e}"
        );
        assert!(parse(&format!("{MINIMAL}warmup_steps = -1\n")).is_err());
    }

    #[test]
    fn intervals_follow_training_arguments() {
        assert!(parse(&format!("{MINIMAL}logging_steps = 0.25\n")).is_ok());
        let e = err(parse(&format!("{MINIMAL}logging_steps = 2.5\n")));
        assert!(e.contains("whole number"), "{e}");
        assert!(parse(&format!("{MINIMAL}logging_steps = 0\n")).is_err());
        // eval_steps falls back to logging_steps.
        let c = parse(&format!(
            "{MINIMAL}eval_strategy = \"steps\"\nlogging_steps = 25\n"
        ))
        .unwrap();
        assert_eq!(c.training.resolved_eval_steps(), Some(25.0));
        let c = parse(&format!(
            "{MINIMAL}eval_strategy = \"steps\"\neval_steps = 0\n"
        ))
        .unwrap();
        assert_eq!(c.training.resolved_eval_steps(), Some(10.0));
    }

    #[test]
    fn load_best_model_checks_are_transformers_s() {
        let base = format!("{MINIMAL}load_best_model_at_end = true\n");
        // Strategies must match.
        let e = err(parse(&format!("{base}eval_strategy = \"epoch\"\n")));
        assert!(
            e.contains("match") && e.contains("epoch") && e.contains("steps"),
            "{e}"
        );
        // save_steps a multiple of eval_steps.
        let ok = format!("{base}eval_strategy = \"steps\"\neval_steps = 10\nsave_steps = 20\n");
        let c = parse(&ok).unwrap();
        assert_eq!(c.training.resolved_metric_for_best_model(), Some("loss"));
        assert_eq!(c.training.resolved_greater_is_better(), Some(false));
        let e = err(parse(&format!(
            "{base}eval_strategy = \"steps\"\neval_steps = 10\nsave_steps = 25\n"
        )));
        assert!(e.contains("round multiple"), "{e}");
        let e = err(parse(&format!(
            "{base}eval_strategy = \"steps\"\neval_steps = 0.1\nsave_steps = 20\n"
        )));
        assert!(e.contains("mixing"), "{e}");
        assert!(
            parse(&format!(
                "{base}eval_strategy = \"steps\"\neval_steps = 0.1\nsave_steps = 0.2\n"
            ))
            .is_ok()
        );
        let e = err(parse(&format!(
            "{base}eval_strategy = \"steps\"\neval_steps = 0.2\nsave_steps = 0.3\n"
        )));
        assert!(e.contains("not a multiple"), "{e}");
        // With save_strategy "best" nothing has to match.
        assert!(
            parse(&format!(
                "{base}save_strategy = \"best\"\neval_strategy = \"steps\"\n"
            ))
            .is_ok()
        );
        // "best" without load_best_model_at_end needs an explicit metric.
        let e = err(parse(&format!(
            "{MINIMAL}save_strategy = \"best\"\neval_strategy = \"steps\"\n"
        )));
        assert!(e.contains("metric_for_best_model"), "{e}");
        // greater_is_better explicit wins.
        let c = parse(&format!("{ok}greater_is_better = true\n")).unwrap();
        assert_eq!(c.training.resolved_greater_is_better(), Some(true));
    }

    #[test]
    fn overrides() {
        let c = parse_set(
            MINIMAL,
            &[
                "training.learning_rate=1e-4",
                "lora.r=16",
                "lora.target_modules=all-linear",
                "model.name_or_path=/models/qwen",
                "training.report_to=[\"wandb\"]",
                "training.gradient_checkpointing_kwargs.use_reentrant=false",
                "data.label_mask=recipe",
                "model.dtype=f32",
            ],
        )
        .unwrap();
        assert_eq!(c.training.learning_rate, 1e-4);
        assert_eq!(c.lora.as_ref().unwrap().r, 16);
        assert_eq!(
            c.lora.as_ref().unwrap().target_modules,
            TargetModules::AllLinear
        );
        assert_eq!(c.model.name_or_path, "/models/qwen");
        assert_eq!(c.training.report_to, vec!["wandb".to_string()]);
        assert_eq!(
            c.training.gradient_checkpointing_kwargs,
            Some(GradientCheckpointingKwargs {
                use_reentrant: Some(false)
            })
        );
        assert_eq!(c.data.label_mask, LabelMask::Recipe);
        assert_eq!(c.resolved_dtype(), ModelDtype::F32);
        assert!(c.notes().iter().any(|n| n.contains("log.jsonl")));

        let e = err(parse_set(MINIMAL, &["learning_rate=1e-4"]));
        assert!(e.contains("learning_rate") && e.contains("no dot"), "{e}");
        let e = err(parse_set(MINIMAL, &["train.learning_rate=1e-4"]));
        assert!(
            e.contains("train.learning_rate") && e.contains("unknown section"),
            "{e}"
        );
        let e = err(parse_set(MINIMAL, &["training.learning_rate"]));
        assert!(e.contains("section.key=value"), "{e}");
        let e = err(parse_set(MINIMAL, &["training.output_dir.x=1"]));
        assert!(e.contains("not a table"), "{e}");
        // A missing section can come entirely from overrides.
        let no_lora = MINIMAL.replace("[lora]\ntarget_modules = [\"q_proj\", \"v_proj\"]\n", "");
        // Without [lora] the config means full fine-tuning.
        let full = parse(&no_lora).unwrap();
        assert!(full.lora.is_none() && full.lora_spec().is_none());
        let c = parse_set(&no_lora, &["lora.target_modules=[\"q_proj\"]"]).unwrap();
        assert!(c.lora_spec().is_some());
    }

    #[test]
    fn other_validation() {
        let e = err(parse(&format!("{MINIMAL}max_steps = 0\n")));
        assert!(e.contains("max_steps"), "{e}");
        assert!(parse(&format!("{MINIMAL}max_steps = 50\nnum_train_epochs = 0\n")).is_ok());
        assert!(parse(&format!("{MINIMAL}num_train_epochs = 0\n")).is_err());
        assert!(parse(&format!("{MINIMAL}per_device_train_batch_size = 0\n")).is_err());
        assert!(parse(&format!("{MINIMAL}adam_beta2 = 1.0\n")).is_err());
        assert!(parse(&MINIMAL.replace("[data]\n", "[data]\ntest_size = 1.0\n")).is_err());
        let e = err(parse(
            &MINIMAL.replace("[data]\n", "[data]\ngroup_pattern = 'id_(\\d+)'\n"),
        ));
        assert!(e.contains("group_by"), "{e}");
        assert!(
            parse(&MINIMAL.replace(
                "[data]\n",
                "[data]\ngroup_by = \"item_ID\"\ngroup_pattern = 'id_(\\d+)'\n"
            ))
            .is_ok()
        );
        let c = parse(&MINIMAL.replace("[data]\n", "[data]\nmax_length = \"none\"\n")).unwrap();
        assert_eq!(c.data.max_length, None);
        assert!(parse(&MINIMAL.replace("[data]\n", "[data]\nmax_length = 0\n")).is_err());
        let c = parse(&MINIMAL.replace("[model]\n", "[model]\ndtype = \"bfloat16\"\n")).unwrap();
        assert_eq!(c.model.dtype, Some(ModelDtype::Bf16));
        let c = parse(&format!("{MINIMAL}bf16 = false\n")).unwrap();
        assert_eq!(c.resolved_dtype(), ModelDtype::F32);
        let c = parse(&MINIMAL.replace(
            "[lora]\n",
            "[lora]\nr = 16\nlora_alpha = 32\nuse_rslora = true\n",
        ))
        .unwrap();
        assert_eq!(c.lora.as_ref().unwrap().scaling(), 8.0);
        let e = err(parse(
            &MINIMAL.replace("[data]\n", "[data]\nmax_length = 1.5\n"),
        ));
        assert!(e.contains("token count"), "{e}");
        let e = err(parse(&MINIMAL.replace("[\"q_proj\", \"v_proj\"]", "3")));
        assert!(e.contains("list of strings"), "{e}");
        let e = err(parse("[model\n"));
        assert!(e.contains("line 1"), "{e}");
    }

    proptest! {
        #[test]
        fn any_override_value_parses_or_errors_cleanly(key in "[a-z_]{1,12}", value in "\\PC{0,20}") {
            let set = format!("training.{key}={value}");
            // Must never panic; unknown keys and bad values are errors.
            let _ = parse_set(MINIMAL, &[set.as_str()]);
        }

        #[test]
        fn numeric_overrides_round_trip(lr in 1e-7f64..1.0, r in 1usize..512) {
            let c = parse_set(
                MINIMAL,
                &[&format!("training.learning_rate={lr:e}"), &format!("lora.r={r}")],
            ).unwrap();
            prop_assert_eq!(c.training.learning_rate, lr);
            prop_assert_eq!(c.lora.as_ref().unwrap().r, r);
        }
    }
}
