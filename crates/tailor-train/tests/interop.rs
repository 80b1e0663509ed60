//! Adapters and merged models that tailor writes, read back by Python.
//!
//! `tests/fixtures/train/interop/adapter/` is an adapter that tailor wrote (two AdamW steps from a
//! seeded init on the `tied` model, targets `q_proj`, `v_proj` and `gate_proj` in the language
//! model only — so `target_modules` must be a rule that keeps PEFT off the vision MLPs).
//! `tools/reference/adapter_interop.py` loaded it with PEFT and wrote its logits on the reference
//! batch (`peft_logits.safetensors`); `tools/reference/export_check.py` loaded tailor's merged
//! export with transformers (`export.json`, `export.safetensors`).
//!
//! `tests/fixtures/train/interop-saved/` is the same with `modules_to_save = ["lm_head",
//! "embed_tokens"]`: the adapter file also carries those trained copies, and PEFT's logits
//! come from the same script.
//!
//! Regenerate the Rust side with `TAILOR_WRITE_FIXTURES=1 cargo test -p tailor-train --test
//! interop`, then run the two Python scripts (see tools/reference/README.md).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{fixture, max_abs, model_dir, reference_batch};
use tailor_model::export::export_merged;
use tailor_model::{AdapterFile, InitFrom, LoraInit, LoraSpec, Qwen25Vl, TargetModules};
use tailor_train::optim::{AdamW, AdamWConfig, clip_grad_norm};

fn interop_dir() -> PathBuf {
    fixture("interop")
}

/// Writes the interop adapter into `dir` exactly as the fixture was made (with
/// `modules_to_save` for the `interop-saved` fixture).
fn make_adapter(dir: &Path, modules_to_save: &[&str]) {
    let modules_to_save: Vec<String> = modules_to_save.iter().map(|m| m.to_string()).collect();
    let mut model = Qwen25Vl::load_with_saved(
        &model_dir(),
        DType::F32,
        &Device::Cpu,
        &modules_to_save,
        None,
        true,
    )
    .unwrap();
    let spec = LoraSpec {
        r: 4,
        lora_alpha: 16.0,
        lora_dropout: 0.05,
        use_rslora: false,
        target_modules: TargetModules::Names(vec![
            "q_proj".into(),
            "v_proj".into(),
            "gate_proj".into(),
        ]),
        adapt_vision: false,
        init: LoraInit::Kaiming,
        modules_to_save,
    };
    let adapter = model.attach_lora(&spec, InitFrom::Seed(2024)).unwrap();
    let (inputs, labels) = reference_batch();
    let params = adapter.params();
    let vars: Vec<_> = params.iter().map(|(_, v)| v.clone()).collect();
    let mut optim = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 5e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )
    .unwrap();
    for _ in 0..2 {
        let out = model
            .loss_and_grads(&inputs, &labels, &vars, 100.0, false)
            .unwrap();
        let mut grads = params
            .iter()
            .map(|(n, _)| n.clone())
            .zip(out.grads)
            .collect();
        clip_grad_norm(&mut grads, 1.0).unwrap();
        optim.step(&grads, 5e-2).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    adapter.save(dir, "tests/fixtures/model/tied").unwrap();
}

/// Loads `dir` (base + adapter) as `tailor predict --adapter` does.
fn load_adapted(adapter_dir: &Path) -> (Qwen25Vl, AdapterFile) {
    let file = AdapterFile::read(adapter_dir, &Device::Cpu).unwrap();
    let mut model = Qwen25Vl::load_with_saved(
        &model_dir(),
        DType::F32,
        &Device::Cpu,
        &file.spec.modules_to_save,
        Some(&file.saved),
        false,
    )
    .unwrap();
    model.load_adapter(&file).unwrap();
    (model, file)
}

fn peft_interop(fixture_dir: &Path, modules_to_save: &[&str]) {
    let committed = fixture_dir.join("adapter");
    if std::env::var_os("TAILOR_WRITE_FIXTURES").is_some() {
        make_adapter(&committed, modules_to_save);
    }
    // The committed adapter is what tailor writes today: same config text, same tensors.
    let fresh = tempfile::tempdir().unwrap();
    make_adapter(fresh.path(), modules_to_save);
    let read = |p: &Path| std::fs::read_to_string(p.join("adapter_config.json")).unwrap();
    assert_eq!(read(fresh.path()), read(&committed));
    let now = AdapterFile::read(fresh.path(), &Device::Cpu).unwrap();
    let then = AdapterFile::read(&committed, &Device::Cpu).unwrap();
    for (path, (a, b)) in &then.weights {
        let (na, nb) = &now.weights[path];
        assert!(max_abs(a, na) < 1e-6 && max_abs(b, nb) < 1e-6, "{path}");
    }
    assert_eq!(
        then.saved.keys().collect::<Vec<_>>(),
        now.saved.keys().collect::<Vec<_>>()
    );
    for (name, t) in &then.saved {
        assert!(max_abs(t, &now.saved[name]) < 1e-6, "{name}");
    }

    let (model, _) = load_adapted(&committed);
    let (inputs, _) = reference_batch();
    let logits = model.logits(&model.forward(&inputs).unwrap()).unwrap();
    let peft =
        candle_core::safetensors::load(fixture_dir.join("peft_logits.safetensors"), &Device::Cpu)
            .unwrap();
    let diff = max_abs(&logits, &peft["logits"]);
    assert!(diff < 1e-4, "tailor vs PEFT logits differ by {diff}");
    // The adapter moved the model: the comparison is not base against base.
    let base = Qwen25Vl::load(&model_dir(), DType::F32, &Device::Cpu).unwrap();
    let base_logits = base.logits(&base.forward(&inputs).unwrap()).unwrap();
    assert!(max_abs(&logits, &base_logits) > 1e-2);
}

#[test]
fn python_peft_loads_tailors_adapter_and_reproduces_its_logits() {
    peft_interop(&interop_dir(), &[]);
}

/// `modules_to_save = ["lm_head", "embed_tokens"]` on the tied model: PEFT gives each its own
/// trainable copy (untying them); the trained copies travel in the adapter file.
#[test]
fn python_peft_loads_an_adapter_with_modules_to_save() {
    let dir = fixture("interop-saved");
    peft_interop(&dir, &["lm_head", "embed_tokens"]);
    let file = AdapterFile::read(&dir.join("adapter"), &Device::Cpu).unwrap();
    let names: Vec<&str> = file.saved.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["lm_head.weight", "model.language_model.embed_tokens.weight"]
    );
    // Training moved both copies apart from the shared original (every copy got a gradient).
    let base = tailor_model::Checkpoint::open(&model_dir()).unwrap();
    let original = base
        .load("model.language_model.embed_tokens.weight", &Device::Cpu)
        .unwrap();
    for (name, t) in &file.saved {
        assert!(max_abs(t, &original) > 1e-3, "{name} did not train");
    }
    assert!(max_abs(&file.saved[names[0]], &file.saved[names[1]]) > 1e-3);

    // The merged export unties them and gives the adapted model's logits.
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    export_merged(&model_dir(), &file, &merged, DType::F32, 300_000, |_, _| {}).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["tie_word_embeddings"], false);
    let exported = Qwen25Vl::load(&merged, DType::F32, &Device::Cpu).unwrap();
    let (adapted, _) = load_adapted(&dir.join("adapter"));
    let (inputs, _) = reference_batch();
    let a = exported
        .logits(&exported.forward(&inputs).unwrap())
        .unwrap();
    let b = adapted.logits(&adapted.forward(&inputs).unwrap()).unwrap();
    assert!(
        max_abs(&a, &b) < 1e-4,
        "merged vs adapted: {}",
        max_abs(&a, &b)
    );
}

#[test]
fn transformers_loads_tailors_merged_export() {
    let dir = interop_dir();
    let adapter = AdapterFile::read(&dir.join("adapter"), &Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    export_merged(
        &model_dir(),
        &adapter,
        &merged,
        DType::F32,
        300_000,
        |_, _| {},
    )
    .unwrap();
    if std::env::var_os("TAILOR_WRITE_FIXTURES").is_some() {
        // For tools/reference/export_check.py (not committed).
        let keep = std::env::temp_dir().join("tailor-interop-merged");
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::rename(&merged, &keep).unwrap();
        eprintln!("merged export kept in {}", keep.display());
        return;
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("export.json")).unwrap()).unwrap();
    let hf = candle_core::safetensors::load(dir.join("export.safetensors"), &Device::Cpu).unwrap();
    let model = Qwen25Vl::load(&merged, DType::F32, &Device::Cpu).unwrap();
    let (inputs, _) = reference_batch();
    let logits = model.logits(&model.forward(&inputs).unwrap()).unwrap();
    // transformers' logits of tailor's merged model equal tailor's, and equal PEFT base+adapter.
    let diff = max_abs(&logits, &hf["merged_logits"]);
    assert!(
        diff < 1e-4,
        "tailor vs transformers on the merged model: {diff}"
    );
    let recorded = report["max_abs_diff"].as_f64().unwrap_or(f64::INFINITY);
    assert!(
        recorded < 1e-4,
        "export.json: merged vs base+adapter {recorded}"
    );
}
