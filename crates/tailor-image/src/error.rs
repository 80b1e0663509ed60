//! The crate's error type: every way that bytes, a config or a size can be rejected.
//!
//! Variants carry the offending values but no file, row or column: the caller (the data crate)
//! knows where the bytes came from and wraps the error with that context.

/// Result alias used throughout the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Everything that can go wrong between image bytes and `pixel_values`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The bytes start with no signature of a supported image format.
    #[error("unrecognised image format (first bytes {head:02x?})")]
    UnknownFormat {
        /// Up to the first 8 bytes of the input.
        head: Vec<u8>,
    },

    /// The format is recognised but this variant of it is not supported (for example a JPEG with
    /// two components, which Pillow rejects as well).
    #[error("unsupported {format} image: {detail}")]
    UnsupportedFormat {
        /// The container format ("PNG", "JPEG", ...).
        format: &'static str,
        /// What exactly is unsupported.
        detail: String,
    },

    /// The decoder rejected the data as malformed.
    #[error("corrupt {format} image: {detail}")]
    Corrupt {
        /// The container format ("PNG", "JPEG", ...).
        format: &'static str,
        /// The decoder's message.
        detail: String,
    },

    /// The data ends before the image does. Pillow raises "image file is truncated" here.
    #[error("truncated {format} image: the data ends before the image does")]
    Truncated {
        /// The container format ("PNG", "JPEG", ...).
        format: &'static str,
    },

    /// The image (or a requested size) has no pixels.
    #[error("image has zero size ({width}x{height})")]
    ZeroSize {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
    },

    /// The image has more pixels than Pillow's decompression-bomb limit, so Pillow refuses to
    /// open it and so do we (it also bounds the memory a hostile header can make us allocate).
    #[error("image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// The pixel limit.
        limit: u64,
    },

    /// `max(h, w) / min(h, w)` is over 200, which `smart_resize` rejects.
    #[error("aspect ratio {ratio} of a {width}x{height} image is over the limit of 200")]
    AspectRatio {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
        /// `max / min` as Python computes it.
        ratio: f64,
    },

    /// `do_resize` is off and the image side is not a multiple of `patch_size · merge_size`, so it
    /// cannot be cut into merge units (transformers fails in a reshape here).
    #[error("image of {width}x{height} is not a multiple of {factor} and do_resize is off")]
    NotDivisible {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
        /// `patch_size · merge_size`.
        factor: u32,
    },

    /// A resized side would not fit in 32 bits (only reachable with absurd `min_pixels`).
    #[error("target size {width}x{height} for a {in_width}x{in_height} image is too large")]
    TargetTooLarge {
        /// Target height.
        height: f64,
        /// Target width.
        width: f64,
        /// Input width.
        in_width: u32,
        /// Input height.
        in_height: u32,
    },

    /// The config asks for a resampling filter other than bicubic (PIL value 3).
    #[error("unsupported resample filter {value} (only 3, bicubic, is implemented)")]
    UnsupportedResample {
        /// The `resample` value from the config.
        value: i64,
    },

    /// A config key holds a value of the wrong JSON type.
    #[error("config key `{key}` must be {expected}, got {found}")]
    ConfigType {
        /// The key, with its parent for nested keys (`size.shortest_edge`).
        key: String,
        /// What was expected, e.g. "a positive integer".
        expected: &'static str,
        /// The JSON value found, shortened.
        found: String,
    },

    /// A config key has the right type but an unusable value, or a required key is missing.
    #[error("config key `{key}`: {reason}")]
    ConfigValue {
        /// The key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The config is not valid JSON (or not a JSON object).
    #[error("invalid preprocessor config JSON: {0}")]
    ConfigJson(#[from] serde_json::Error),

    /// An [`RgbImage`](crate::RgbImage) whose buffer length is not `width · height · 3`.
    #[error("RGB buffer of {actual} bytes does not match {width}x{height}x3 = {expected}")]
    BufferSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// `width · height · 3`.
        expected: u64,
        /// The buffer's length.
        actual: usize,
    },
}
