//! The error type of the model crate: configuration and checkpoint problems.
//!
//! Shape contracts inside the forward pass are `candle_core::Error`s raised with `candle_core::bail!`
//! and the offending sizes; they reach callers of the loading functions as [`ModelError::Candle`].

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while reading a config, opening or verifying a checkpoint, or
/// building the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is malformed or a key has the wrong JSON type.
    #[error("cannot parse {what}")]
    Json {
        /// The file (or "config" for an in-memory string).
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A configuration key that the model needs is absent; nothing is defaulted.
    #[error("config is missing `{key}`")]
    MissingKey {
        /// The key, dotted for nested objects (`text_config.hidden_size`).
        key: String,
    },

    /// A configuration value is present but unusable.
    #[error("config key `{key}`: {detail}")]
    InvalidConfig {
        /// The key, dotted for nested objects.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A model directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("no weights in {dir}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The directory searched.
        dir: PathBuf,
    },

    /// Two checkpoint entries map to the same tensor once both naming schemes are normalised.
    #[error("checkpoint holds `{first}` and `{second}`, which name the same tensor")]
    DuplicateTensor {
        /// The first name seen.
        first: String,
        /// The second name seen.
        second: String,
    },

    /// The checkpoint's tensors do not match what the configuration requires.
    #[error("checkpoint does not match the config: {0}")]
    WeightMismatch(WeightReport),

    /// A LoRA adapter folder is unusable (unsupported setting, key that names no module, shape).
    #[error("adapter {path}: {detail}")]
    InvalidAdapter {
        /// The adapter folder or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// candle failed (file mapping, dtype conversion, a shape contract of the forward pass).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A tensor name with a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name in tailor's canonical (transformers ≥ 4.52 in-memory) naming.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// A tensor present under the expected name but with another shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor name in canonical naming.
    pub name: String,
    /// The shape the configuration requires.
    pub expected: Vec<usize>,
    /// The shape stored in the checkpoint.
    pub found: Vec<usize>,
}

/// The difference between the expected and the stored set of tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightReport {
    /// Required tensors that the checkpoint lacks (with the required shape).
    pub missing: Vec<TensorSpec>,
    /// Checkpoint tensors that the model has no place for (with the stored shape).
    pub unexpected: Vec<TensorSpec>,
    /// Tensors stored with the wrong shape.
    pub mismatched: Vec<ShapeMismatch>,
}

impl WeightReport {
    /// True when nothing is missing, unexpected or mis-shaped.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for WeightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let names: Vec<String> = self
                .missing
                .iter()
                .map(|t| format!("{} {:?}", t.name, t.shape))
                .collect();
            parts.push(format!("missing {}: {}", names.len(), names.join(", ")));
        }
        if !self.mismatched.is_empty() {
            let names: Vec<String> = self
                .mismatched
                .iter()
                .map(|m| format!("{} expected {:?} found {:?}", m.name, m.expected, m.found))
                .collect();
            parts.push(format!("wrong shape {}: {}", names.len(), names.join(", ")));
        }
        if !self.unexpected.is_empty() {
            let names: Vec<String> = self
                .unexpected
                .iter()
                .map(|t| format!("{} {:?}", t.name, t.shape))
                .collect();
            parts.push(format!("unexpected {}: {}", names.len(), names.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("no differences")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
