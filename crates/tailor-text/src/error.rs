//! The error type of the text stage.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer or template, rendering a chat, encoding
/// it, computing positions or collating a batch.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file of the model directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file of the model directory is malformed.
    #[error("cannot parse {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A key that tailor needs is missing from a JSON file, or has the wrong type.
    #[error("{path}: missing or invalid key `{key}`")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key, dotted for nested objects.
        key: String,
    },

    /// The `tokenizers` library rejected the tokenizer file or failed to encode or decode.
    #[error("tokenizer: {context}")]
    Tokenizer {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: tokenizers::Error,
    },

    /// A special token that the Qwen2.5-VL data path needs is not in the vocabulary.
    #[error("special token {token:?} ({role}) is not in the tokenizer vocabulary")]
    MissingSpecialToken {
        /// What the token is used for (`pad`, `eos`, `image_pad`, …).
        role: &'static str,
        /// The token string that was looked up.
        token: String,
    },

    /// The model directory has no chat template in any of the places transformers looks.
    #[error(
        "no chat template in {dir} (looked for processor_config.json, chat_template.json, chat_template.jinja, tokenizer_config.json)"
    )]
    NoChatTemplate {
        /// The model directory.
        dir: PathBuf,
    },

    /// The chat template failed to compile or to render (including `raise_exception` calls).
    #[error("chat template: {0:#}")]
    Template(#[from] minijinja::Error),

    /// Rendering the conversation up to an assistant answer is not a prefix of the full rendering,
    /// so the answer's place in the text cannot be found (needed for the assistant-only mask).
    #[error(
        "chat template is not prefix-stable at message {message_index}: cannot locate the assistant answer"
    )]
    TemplateNotPrefixStable {
        /// Index of the assistant message in the conversation.
        message_index: usize,
    },

    /// The rendered text holds a different number of image placeholders than images were given.
    #[error("the chat has {placeholders} image placeholders but {grids} image grids were given")]
    ImageCountMismatch {
        /// `<|image_pad|>` occurrences in the rendered text.
        placeholders: usize,
        /// Image grids supplied for the sample.
        grids: usize,
    },

    /// A run of image or video tokens does not have the length its grid implies, or there are more
    /// runs than grids (or fewer).
    #[error("{kind} tokens do not match the grids: {detail}")]
    VisionTokenMismatch {
        /// `image` or `video`.
        kind: &'static str,
        /// What exactly disagrees, with the sizes.
        detail: String,
    },

    /// A sample's `input_ids` and `labels` have different lengths.
    #[error("sample {index}: {ids} input ids but {labels} labels")]
    MisalignedLabels {
        /// Position of the sample in the batch.
        index: usize,
        /// Number of ids.
        ids: usize,
        /// Number of labels.
        labels: usize,
    },

    /// `collate` was given a different number of samples and per-sample grid lists.
    #[error("collate: {samples} samples but {grid_lists} grid lists")]
    BatchShape {
        /// Number of samples.
        samples: usize,
        /// Number of grid lists.
        grid_lists: usize,
    },

    /// Every sample of the batch was skipped (longer than `max_length`), or the batch was empty.
    #[error("empty batch: all {} samples skipped (indices {skipped:?})", skipped.len())]
    EmptyBatch {
        /// Indices of the skipped samples (empty when no samples were given).
        skipped: Vec<usize>,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TextError> = std::result::Result<T, E>;
