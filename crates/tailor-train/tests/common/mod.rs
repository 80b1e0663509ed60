//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tailor_core::{IGNORE_INDEX, ImageGrid};
use tailor_model::VlmInputs;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny tied-embedding model of the model fixtures.
pub fn model_dir() -> PathBuf {
    root().join("tests/fixtures/model/tied")
}

/// A folder under `tests/fixtures/train`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/train").join(name)
}

/// Flattened i64 values of a tensor.
pub fn ints(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

/// Grids of an `image_grid_thw` tensor.
pub fn grids_of(t: &Tensor) -> Vec<ImageGrid> {
    ImageGrid::from_thw_rows(&ints(t))
}

/// Largest absolute difference.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The tied model's reference batch (as transformers received it) and labels that ignore only
/// padding.
pub fn reference_batch() -> (VlmInputs, Vec<i64>) {
    let r = candle_core::safetensors::load(model_dir().join("reference.safetensors"), &Device::Cpu)
        .unwrap();
    let labels = ints(&r["input_ids"])
        .into_iter()
        .zip(ints(&r["attention_mask"]))
        .map(|(id, m)| if m == 0 { IGNORE_INDEX } else { id })
        .collect();
    (
        VlmInputs {
            input_ids: r["input_ids"].clone(),
            attention_mask: r["attention_mask"].clone(),
            position_ids: r["position_ids"].clone(),
            pixel_values: Some(r["pixel_values"].clone()),
            image_grids: grids_of(&r["image_grid_thw"]),
        },
        labels,
    )
}
