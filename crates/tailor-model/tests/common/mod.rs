//! Helpers shared by the integration tests (each test crate uses a part of them).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use tailor_core::ImageGrid;
use tailor_model::{Checkpoint, Config, Qwen25Vl, VisionTower, VlmInputs};
use tailor_text::{RopeConfig, rope_index};

use candle_core::Tensor;

/// Largest absolute difference; panics on a shape difference.
pub fn max_abs_diff(got: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(got.dims(), expected.dims());
    (got - expected)
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

/// A model fixture folder and its reference tensors.
pub struct Fixture {
    pub name: &'static str,
    pub dir: PathBuf,
    pub cfg: Config,
    pub reference: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

impl Fixture {
    pub fn load(name: &'static str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/model")
            .join(name);
        let cfg = Config::from_file(&dir.join("config.json")).unwrap();
        let reference =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        Self {
            name,
            dir,
            cfg,
            reference,
            meta,
        }
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.reference
            .get(key)
            .unwrap_or_else(|| panic!("{}: reference.safetensors has no {key}", self.name))
    }

    pub fn ints(&self, key: &str) -> Vec<i64> {
        self.tensor(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    }

    pub fn grids(&self) -> Vec<ImageGrid> {
        ImageGrid::from_thw_rows(&self.ints("image_grid_thw"))
    }

    pub fn model(&self, dtype: DType) -> Qwen25Vl {
        Qwen25Vl::load(&self.dir, dtype, &Device::Cpu).unwrap()
    }

    /// The padded batch exactly as transformers received it.
    pub fn batch_inputs(&self) -> VlmInputs {
        VlmInputs {
            input_ids: self.tensor("input_ids").clone(),
            attention_mask: self.tensor("attention_mask").clone(),
            position_ids: self.tensor("position_ids").clone(),
            pixel_values: Some(self.tensor("pixel_values").clone()),
            image_grids: self.grids(),
        }
    }

    /// Unpadded length of each batch row.
    pub fn lengths(&self) -> Vec<usize> {
        let mask = self.tensor("attention_mask").to_vec2::<i64>().unwrap();
        mask.iter()
            .map(|row| row.iter().filter(|&&m| m == 1).count())
            .collect()
    }

    pub fn rope_config(&self) -> RopeConfig {
        RopeConfig::from_config_json(&self.dir.join("config.json")).unwrap()
    }

    /// One sequence run alone (batch of one, no padding), positions from `tailor_text::rope_index`.
    pub fn single_inputs(&self, ids: &[u32], pixels: Tensor, grids: Vec<ImageGrid>) -> VlmInputs {
        let positions = rope_index(ids, &grids, &[], &self.rope_config()).unwrap();
        let l = ids.len();
        let rows: Vec<i64> = positions.rows.concat();
        VlmInputs {
            input_ids: Tensor::from_slice(ids, (1, l), &Device::Cpu).unwrap(),
            attention_mask: Tensor::ones((1, l), DType::U8, &Device::Cpu).unwrap(),
            position_ids: Tensor::from_vec(rows, (3, 1, l), &Device::Cpu).unwrap(),
            pixel_values: Some(pixels),
            image_grids: grids,
        }
    }

    pub fn vision(&self) -> VisionTower {
        let ckpt = Checkpoint::open(&self.dir).unwrap();
        let vb = ckpt
            .var_builder(&self.cfg, DType::F32, &Device::Cpu)
            .unwrap();
        VisionTower::new(&self.cfg.vision, vb.pp("model.visual")).unwrap()
    }
}
