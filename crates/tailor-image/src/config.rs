//! `preprocessor_config.json` → [`ProcessorConfig`], with transformers 5.24's precedence rules.
//!
//! The file is parsed key by key from a `serde_json::Value` rather than through a derived
//! `Deserialize`, so that a wrong type names its key, unknown keys (processor configs carry many:
//! `image_processor_type`, `processor_class`, video settings, ...) are ignored, and missing keys
//! take the defaults of transformers' `Qwen2VLImageProcessorPil` class.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ImageError, Result};

/// PIL's numeric value for bicubic resampling, the only filter implemented here.
pub const RESAMPLE_BICUBIC: i64 = 3;

/// OpenAI CLIP's mean, the class default of `Qwen2VLImageProcessorPil` (and the 3B value).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's standard deviation, the class default (and the 3B value).
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Resolved settings of the Qwen2-VL image processor.
///
/// Floats are kept as the f64 values that Python would hold; the processor rounds them to f32
/// exactly where numpy does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorConfig {
    /// Lower bound on `h · w` after resizing (`size.shortest_edge` / `min_pixels`).
    pub min_pixels: u64,
    /// Upper bound on `h · w` after resizing (`size.longest_edge` / `max_pixels`).
    pub max_pixels: u64,
    /// Side of one vision patch in pixels (14).
    pub patch_size: u32,
    /// Frames per temporal patch (2); a still image is repeated this many times.
    pub temporal_patch_size: u32,
    /// Patches merged per side into one LLM token (2).
    pub merge_size: u32,
    /// Per-channel mean subtracted after rescaling (R, G, B).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub image_std: [f64; 3],
    /// Factor that maps uint8 values to [0, 1] (1/255).
    pub rescale_factor: f64,
    /// Resize with `smart_resize` + bicubic; when off, sides must already be multiples of
    /// `patch_size · merge_size`.
    pub do_resize: bool,
    /// Multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Subtract `image_mean` and divide by `image_std`.
    pub do_normalize: bool,
    /// Recorded for completeness: [`decode`](crate::decode) always converts to RGB, and the
    /// processor only takes RGB, on which transformers' conversion is a no-op.
    pub do_convert_rgb: bool,
    /// PIL resampling filter number; only [`RESAMPLE_BICUBIC`] is accepted by
    /// [`ImageProcessor::new`](crate::ImageProcessor::new).
    pub resample: i64,
}

impl ProcessorConfig {
    /// The defaults of transformers 5.24's `Qwen2VLImageProcessorPil` class, used for keys a
    /// config file leaves out. Note `max_pixels` here is 1,003,520 (28·28·1280), not the 3B
    /// checkpoint's value: always read the checkpoint's file.
    pub fn transformers_defaults() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            do_convert_rgb: true,
            resample: RESAMPLE_BICUBIC,
        }
    }

    /// The published `preprocessor_config.json` of Qwen2.5-VL-3B-Instruct: min_pixels 3136,
    /// max_pixels 12,845,056, patch 14, temporal patch 2, merge 2, CLIP mean/std, bicubic.
    pub fn qwen2_5_vl() -> Self {
        Self {
            max_pixels: 12_845_056,
            ..Self::transformers_defaults()
        }
    }

    /// Parses the text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_value(&value)
    }

    /// Resolves a parsed `preprocessor_config.json`.
    ///
    /// Precedence follows `Qwen2VLImageProcessorPil.__init__` in transformers 5.24: a `size`
    /// object replaces the class default size as a whole; flat `min_pixels` / `max_pixels` then
    /// override its `shortest_edge` / `longest_edge`. A size left without either bound is an
    /// error (transformers fails later, at the first image). `null` counts as absent everywhere.
    pub fn from_value(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| ImageError::ConfigType {
            key: "<root>".into(),
            expected: "a JSON object",
            found: short(value),
        })?;
        let defaults = Self::transformers_defaults();

        // `size` replaces the default dict entirely, so a partial `size` loses the other bound.
        let (mut shortest, mut longest) = match present(obj, "size") {
            None => (Some(defaults.min_pixels), Some(defaults.max_pixels)),
            Some(Value::Object(size)) => (
                get_uint(size, "shortest_edge", "size.shortest_edge")?,
                get_uint(size, "longest_edge", "size.longest_edge")?,
            ),
            Some(other) => {
                return Err(ImageError::ConfigType {
                    key: "size".into(),
                    expected: "an object with shortest_edge and longest_edge",
                    found: short(other),
                });
            }
        };
        if let Some(v) = get_uint(obj, "min_pixels", "min_pixels")? {
            shortest = Some(v);
        }
        if let Some(v) = get_uint(obj, "max_pixels", "max_pixels")? {
            longest = Some(v);
        }
        let missing = |key: &str| ImageError::ConfigValue {
            key: key.into(),
            reason: "missing: the size needs both bounds (size.shortest_edge or min_pixels, \
                     size.longest_edge or max_pixels)"
                .into(),
        };
        let min_pixels = shortest.ok_or_else(|| missing("size.shortest_edge"))?;
        let max_pixels = longest.ok_or_else(|| missing("size.longest_edge"))?;

        let cfg = Self {
            min_pixels,
            max_pixels,
            patch_size: get_u32(obj, "patch_size")?.unwrap_or(defaults.patch_size),
            temporal_patch_size: get_u32(obj, "temporal_patch_size")?
                .unwrap_or(defaults.temporal_patch_size),
            merge_size: get_u32(obj, "merge_size")?.unwrap_or(defaults.merge_size),
            image_mean: get_triple(obj, "image_mean")?.unwrap_or(defaults.image_mean),
            image_std: get_triple(obj, "image_std")?.unwrap_or(defaults.image_std),
            rescale_factor: get_f64(obj, "rescale_factor")?.unwrap_or(defaults.rescale_factor),
            do_resize: get_bool(obj, "do_resize")?.unwrap_or(defaults.do_resize),
            do_rescale: get_bool(obj, "do_rescale")?.unwrap_or(defaults.do_rescale),
            do_normalize: get_bool(obj, "do_normalize")?.unwrap_or(defaults.do_normalize),
            do_convert_rgb: get_bool(obj, "do_convert_rgb")?.unwrap_or(defaults.do_convert_rgb),
            resample: get_int(obj, "resample")?.unwrap_or(defaults.resample),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Overrides `min_pixels` (like passing `min_pixels=` to the Python constructor).
    pub fn with_min_pixels(mut self, min_pixels: u64) -> Self {
        self.min_pixels = min_pixels;
        self
    }

    /// Overrides `max_pixels` (like passing `max_pixels=` to the Python constructor).
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// `patch_size · merge_size`: resized sides are multiples of it (28 for Qwen2.5-VL).
    pub fn factor(&self) -> u32 {
        self.patch_size * self.merge_size
    }

    /// Checks the values the processor relies on. Called by [`from_value`](Self::from_value)
    /// and [`ImageProcessor::new`](crate::ImageProcessor::new).
    pub fn validate(&self) -> Result<()> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                // transformers tests these with `not size.shortest_edge`, so 0 fails there too.
                Err(ImageError::ConfigValue {
                    key: key.into(),
                    reason: "must be positive".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("min_pixels", self.min_pixels)?;
        positive("max_pixels", self.max_pixels)?;
        positive("patch_size", u64::from(self.patch_size))?;
        positive("temporal_patch_size", u64::from(self.temporal_patch_size))?;
        positive("merge_size", u64::from(self.merge_size))?;
        if self
            .patch_size
            .checked_mul(self.merge_size)
            .is_none_or(|f| f > 1 << 16)
        {
            return Err(ImageError::ConfigValue {
                key: "patch_size".into(),
                reason: format!(
                    "patch_size · merge_size = {} · {} is too large",
                    self.patch_size, self.merge_size
                ),
            });
        }
        if self.temporal_patch_size > 64 {
            return Err(ImageError::ConfigValue {
                key: "temporal_patch_size".into(),
                reason: format!("{} is too large (at most 64)", self.temporal_patch_size),
            });
        }
        if self.resample != RESAMPLE_BICUBIC {
            return Err(ImageError::UnsupportedResample {
                value: self.resample,
            });
        }
        Ok(())
    }
}

/// The value of `key` unless it is absent or `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A JSON value shortened for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// A non-negative integer; an integral float such as `3136.0` is accepted because Python would
/// compute the same sizes with it.
fn get_uint(obj: &Map<String, Value>, key: &str, name: &str) -> Result<Option<u64>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    let as_float = || {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    };
    match v.as_u64().or_else(as_float) {
        Some(n) => Ok(Some(n)),
        None => Err(ImageError::ConfigType {
            key: name.into(),
            expected: "a non-negative integer",
            found: short(v),
        }),
    }
}

fn get_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
    match get_uint(obj, key, key)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| ImageError::ConfigValue {
                key: key.into(),
                reason: format!("{n} does not fit in 32 bits"),
            }),
    }
}

fn get_int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_i64().map(Some).ok_or_else(|| ImageError::ConfigType {
        key: key.into(),
        expected: "an integer",
        found: short(v),
    })
}

fn get_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_f64().map(Some).ok_or_else(|| ImageError::ConfigType {
        key: key.into(),
        expected: "a number",
        found: short(v),
    })
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_bool().map(Some).ok_or_else(|| ImageError::ConfigType {
        key: key.into(),
        expected: "true or false",
        found: short(v),
    })
}

/// A per-channel value: three numbers, or one number that transformers repeats per channel.
fn get_triple(obj: &Map<String, Value>, key: &str) -> Result<Option<[f64; 3]>> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    let type_error = || ImageError::ConfigType {
        key: key.into(),
        expected: "a number or a list of 3 numbers",
        found: short(v),
    };
    if let Some(x) = v.as_f64() {
        return Ok(Some([x; 3]));
    }
    let items = v.as_array().ok_or_else(type_error)?;
    if items.len() != 3 {
        return Err(ImageError::ConfigValue {
            key: key.into(),
            reason: format!("needs 3 values (R, G, B), got {}", items.len()),
        });
    }
    let mut out = [0.0; 3];
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = item.as_f64().ok_or_else(type_error)?;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProcessorConfig> {
        ProcessorConfig::from_json(text)
    }

    #[test]
    fn flat_form() {
        let cfg = parse(r#"{"min_pixels": 3136, "max_pixels": 12845056, "foo": [1]}"#).unwrap();
        assert_eq!(cfg, ProcessorConfig::qwen2_5_vl());
    }

    #[test]
    fn size_form() {
        let cfg = parse(r#"{"size": {"shortest_edge": 3136, "longest_edge": 12845056}}"#).unwrap();
        assert_eq!(cfg, ProcessorConfig::qwen2_5_vl());
    }

    // transformers 5.24: flat keys override the `size` object, each on its own.
    #[test]
    fn flat_keys_override_size() {
        let cfg = parse(
            r#"{"size": {"shortest_edge": 1000, "longest_edge": 5000}, "min_pixels": 2000,
                "max_pixels": 6000}"#,
        )
        .unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (2000, 6000));
        let cfg = parse(r#"{"size": {"shortest_edge": 1000}, "max_pixels": 7000}"#).unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (1000, 7000));
        let cfg = parse(r#"{"min_pixels": 1234}"#).unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (1234, 1_003_520));
    }

    #[test]
    fn partial_size_is_an_error() {
        let err = parse(r#"{"size": {"shortest_edge": 1000}}"#).unwrap_err();
        assert!(err.to_string().contains("size.longest_edge"), "{err}");
        let err = parse(r#"{"size": {"min_pixels": 1, "max_pixels": 2}}"#).unwrap_err();
        assert!(err.to_string().contains("size.shortest_edge"), "{err}");
    }

    #[test]
    fn missing_keys_take_class_defaults() {
        assert_eq!(
            parse("{}").unwrap(),
            ProcessorConfig::transformers_defaults()
        );
        assert_eq!(
            parse(r#"{"size": null}"#).unwrap(),
            ProcessorConfig::transformers_defaults()
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = parse(r#"{"patch_size": "14"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"config key `patch_size` must be a non-negative integer, got "14""#
        );
        let err = parse(r#"{"size": {"shortest_edge": -1, "longest_edge": 5}}"#).unwrap_err();
        assert!(err.to_string().contains("`size.shortest_edge`"), "{err}");
        let err = parse(r#"{"do_resize": 1}"#).unwrap_err();
        assert!(err.to_string().contains("`do_resize`"), "{err}");
        let err = parse(r#"{"image_mean": [0.5, 0.5]}"#).unwrap_err();
        assert!(err.to_string().contains("`image_mean`"), "{err}");
        let err = parse("[1]").unwrap_err();
        assert!(matches!(err, ImageError::ConfigType { .. }), "{err}");
    }

    #[test]
    fn resample_other_than_bicubic_is_rejected() {
        let err = parse(r#"{"resample": 2}"#).unwrap_err();
        assert!(
            matches!(err, ImageError::UnsupportedResample { value: 2 }),
            "{err}"
        );
        assert!(!err.to_string().ends_with('.'));
    }

    #[test]
    fn scalar_mean_is_broadcast_and_floats_are_exact() {
        let cfg = parse(r#"{"image_mean": 0.5, "rescale_factor": 0.00392156862745098}"#).unwrap();
        assert_eq!(cfg.image_mean, [0.5; 3]);
        assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
    }

    #[test]
    fn zero_bounds_are_rejected() {
        assert!(parse(r#"{"min_pixels": 0}"#).is_err());
        assert!(parse(r#"{"merge_size": 0}"#).is_err());
    }
}
