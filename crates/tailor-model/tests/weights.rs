//! Weight loading: both naming schemes, shards, tying, dtypes, and the errors for missing,
//! unexpected and mis-shaped tensors, on hand-made checkpoints of the tiny model's config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tailor_model::{Checkpoint, Config, ModelError, expected_tensors};

fn tiny_config() -> Config {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model/config.json");
    Config::from_file(&path).unwrap()
}

/// The name `save_pretrained` writes for a canonical (in-memory) name.
fn on_disk(canonical: &str) -> String {
    if let Some(rest) = canonical.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else if let Some(rest) = canonical.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else {
        canonical.to_owned()
    }
}

/// One tensor per expected name; tensor `i` is filled with the value `i` so that a mix-up of names
/// shows.
fn tensors(
    cfg: &Config,
    with_lm_head: bool,
    rename: fn(&str) -> String,
) -> HashMap<String, Tensor> {
    expected_tensors(cfg, with_lm_head)
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let t = Tensor::full(i as f32, spec.shape.as_slice(), &Device::Cpu).unwrap();
            (rename(&spec.name), t)
        })
        .collect()
}

fn write(dir: &Path, file: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(file);
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

fn mismatch(dir: &Path, cfg: &Config) -> tailor_model::WeightReport {
    let ckpt = Checkpoint::open(dir).unwrap();
    match ckpt.var_builder(cfg, DType::F32, &Device::Cpu) {
        Err(ModelError::WeightMismatch(report)) => report,
        Err(other) => panic!("expected a weight mismatch, got {other}"),
        Ok(_) => panic!("expected a weight mismatch, got a var builder"),
    }
}

#[test]
fn on_disk_and_in_memory_names_load_the_same_values() {
    let cfg = tiny_config();
    let name = "model.language_model.layers.1.self_attn.k_proj.bias";
    let index = expected_tensors(&cfg, false)
        .iter()
        .position(|s| s.name == name)
        .unwrap();
    for rename in [on_disk as fn(&str) -> String, str::to_owned] {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model.safetensors",
            &tensors(&cfg, false, rename),
        );
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert!(ckpt.report(&cfg).is_clean());
        assert!(ckpt.ties_lm_head(&cfg));
        let vb = ckpt.var_builder(&cfg, DType::F32, &Device::Cpu).unwrap();
        let t = vb
            .pp("model.language_model.layers.1.self_attn")
            .get(32, "k_proj.bias")
            .unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![index as f32; 32]);
    }
}

#[test]
fn sharded_checkpoints_are_read_through_the_index() {
    let cfg = tiny_config();
    let all = tensors(&cfg, false, on_disk);
    let (visual, text): (HashMap<_, _>, HashMap<_, _>) = all
        .into_iter()
        .partition(|(name, _)| name.starts_with("visual."));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model-00001-of-00002.safetensors", &visual);
    write(dir.path(), "model-00002-of-00002.safetensors", &text);
    let mut weight_map = serde_json::Map::new();
    for name in visual.keys() {
        weight_map.insert(name.clone(), "model-00001-of-00002.safetensors".into());
    }
    for name in text.keys() {
        weight_map.insert(name.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.files().len(), 2);
    let vb = ckpt.var_builder(&cfg, DType::F32, &Device::Cpu).unwrap();
    assert!(vb.contains_tensor("model.visual.merger.ln_q.weight"));
    assert!(vb.contains_tensor("model.language_model.norm.weight"));
}

#[test]
fn a_missing_tensor_is_reported_with_its_shape() {
    let cfg = tiny_config();
    let mut all = tensors(&cfg, false, on_disk);
    all.remove("model.layers.0.self_attn.q_proj.bias").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.safetensors", &all);
    let report = mismatch(dir.path(), &cfg);
    assert_eq!(report.missing.len(), 1);
    assert_eq!(
        report.missing[0].name,
        "model.language_model.layers.0.self_attn.q_proj.bias"
    );
    assert_eq!(report.missing[0].shape, vec![64]);
    assert!(report.unexpected.is_empty() && report.mismatched.is_empty());
    let message = ModelError::WeightMismatch(report).to_string();
    assert!(
        message.contains("missing 1: model.language_model.layers.0.self_attn.q_proj.bias [64]"),
        "{message}"
    );
}

#[test]
fn a_wrong_shape_is_reported_with_both_shapes() {
    let cfg = tiny_config();
    let mut all = tensors(&cfg, false, on_disk);
    all.insert(
        "visual.blocks.1.attn.qkv.weight".into(),
        Tensor::zeros((96, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.safetensors", &all);
    let report = mismatch(dir.path(), &cfg);
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.mismatched.len(), 1);
    let m = &report.mismatched[0];
    assert_eq!(m.name, "model.visual.blocks.1.attn.qkv.weight");
    assert_eq!(
        (m.expected.as_slice(), m.found.as_slice()),
        (&[96, 32][..], &[96, 16][..])
    );
    let message = ModelError::WeightMismatch(report).to_string();
    assert!(
        message.contains("model.visual.blocks.1.attn.qkv.weight expected [96, 32] found [96, 16]"),
        "{message}"
    );
}

#[test]
fn an_unexpected_tensor_is_reported() {
    let cfg = tiny_config();
    let mut all = tensors(&cfg, false, on_disk);
    all.insert(
        "model.layers.2.input_layernorm.weight".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.safetensors", &all);
    let report = mismatch(dir.path(), &cfg);
    assert_eq!(report.unexpected.len(), 1);
    assert_eq!(
        report.unexpected[0].name,
        "model.language_model.layers.2.input_layernorm.weight"
    );
    assert!(report.missing.is_empty() && report.mismatched.is_empty());
}

#[test]
fn the_same_tensor_under_both_names_is_an_error() {
    let cfg = tiny_config();
    let mut all = tensors(&cfg, false, on_disk);
    all.insert(
        "model.language_model.norm.weight".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.safetensors", &all);
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::DuplicateTensor { .. }), "{err}");
}

#[test]
fn lm_head_is_tied_by_the_config_or_by_its_absence() {
    let tied = tiny_config();
    let mut untied = tied.clone();
    untied.tie_word_embeddings = false;

    // Untied config with an lm_head: loaded.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model.safetensors",
        &tensors(&untied, true, on_disk),
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert!(!ckpt.ties_lm_head(&untied));
    assert!(
        ckpt.var_builder(&untied, DType::F32, &Device::Cpu)
            .unwrap()
            .contains_tensor("lm_head.weight")
    );
    // A tied config ignores a stored lm_head, as transformers does.
    assert!(ckpt.ties_lm_head(&tied));
    assert!(ckpt.report(&tied).is_clean());

    // Untied config without an lm_head: tied.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model.safetensors",
        &tensors(&untied, false, on_disk),
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert!(ckpt.ties_lm_head(&untied));
    assert!(ckpt.report(&untied).is_clean());
}

#[test]
fn tensors_are_converted_to_the_requested_dtype() {
    let cfg = tiny_config();
    let dir = tempfile::tempdir().unwrap();
    let all: HashMap<String, Tensor> = tensors(&cfg, false, on_disk)
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap()))
        .collect();
    write(dir.path(), "model.safetensors", &all);
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let vb = ckpt.var_builder(&cfg, dtype, &Device::Cpu).unwrap();
        let t = vb.get(64, "model.language_model.norm.weight").unwrap();
        assert_eq!(t.dtype(), dtype);
    }
}

#[test]
fn a_directory_without_weights_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::NoWeights { .. }), "{err}");
}
