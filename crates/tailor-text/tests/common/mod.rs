//! Shared helpers of the integration tests: fixture paths and the tiny model.

#![allow(dead_code)]

use std::path::PathBuf;

use tailor_core::ImageGrid;
use tailor_text::{RopeConfig, TextProcessor};

/// `tests/fixtures/tiny-model` (written by `tools/reference/make_tiny_model.py`).
pub fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model")
}

/// `tests/fixtures/text/<name>` (written by `tools/reference/text_fixtures.py`).
pub fn text_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/text")
        .join(name)
}

pub fn processor() -> TextProcessor {
    TextProcessor::from_dir(&tiny_model_dir()).expect("tiny model loads")
}

pub fn rope_config() -> RopeConfig {
    RopeConfig::from_config_json(&tiny_model_dir().join("config.json")).expect("config loads")
}

pub fn grid(t: u32, h: u32, w: u32) -> ImageGrid {
    ImageGrid { t, h, w }
}

/// Reads `[[t, h, w], …]`.
pub fn grids(value: &serde_json::Value) -> Vec<ImageGrid> {
    value
        .as_array()
        .expect("grid list")
        .iter()
        .map(|g| {
            let g: Vec<u32> = serde_json::from_value(g.clone()).expect("grid triple");
            grid(g[0], g[1], g[2])
        })
        .collect()
}
