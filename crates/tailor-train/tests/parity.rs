//! Training parity with PEFT + torch and with TRL's SFTTrainer, on the fixtures that
//! `tools/reference/train_fixtures.py` writes to `tests/fixtures/train/` (tiny `tied` model,
//! float32, dropout 0).
//!
//! - `peft_steps` / `peft_vision`: from PEFT's own initial adapter, AdamW steps on one fixed batch
//!   (clipping at 1.0): losses and pre-clip gradient norms within 1e-5 relative, gradients and the
//!   final adapter close to torch's.
//! - `trl_run`: ten updates of the full training loop (batch 2 × accumulation 2, linear schedule
//!   with warmup, clipping at 0.3) over the exact micro-batches TRL fed its model: logged loss,
//!   grad norm and learning rate per step, and the final adapter.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use common::{fixture, grids_of, ints, max_abs, model_dir, reference_batch};
use tailor_core::Batch;
use tailor_model::{AdapterFile, Qwen25Vl};
use tailor_text::{CollateConfig, EncodedSample, RopeConfig, collate};
use tailor_train::optim::{AdamW, AdamWConfig, clip_grad_norm};
use tailor_train::schedule::SchedulerType;
use tailor_train::trainer::{BatchSource, BoxError, LossNormalization, Settings, Strategy, train};

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Runs `steps` AdamW steps (lr 1e-2, weight decay 0.01, clip 1.0) on the reference batch from
/// PEFT's initial adapter and compares with torch.
fn peft_steps(name: &str, check_grads: bool) {
    let dir = fixture(name);
    let m = meta(&dir);
    let dev = Device::Cpu;
    let mut model = Qwen25Vl::load(&model_dir(), DType::F32, &dev).unwrap();
    let initial = AdapterFile::read(&dir.join("initial_adapter"), &dev).unwrap();
    assert!(
        (initial.spec.lora_alpha - m["lora_config"]["lora_alpha"].as_f64().unwrap()).abs() < 1e-12
    );
    let adapter = model.load_adapter(&initial).unwrap();
    let adapted: Vec<String> = adapter.modules().map(str::to_owned).collect();
    let want: Vec<String> = m["adapted_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["module"].as_str().unwrap().to_owned())
        .collect();
    let (mut a, mut w) = (adapted.clone(), want.clone());
    a.sort();
    w.sort();
    assert_eq!(a, w, "{name}: adapted modules");

    let tensors = candle_core::safetensors::load(dir.join("tensors.safetensors"), &dev).unwrap();
    // The reference batch, with the fixture's own labels (padding and image pads ignored).
    let (inputs, _) = reference_batch();
    let labels = ints(&tensors["labels"]);

    let params = adapter.params();
    let vars: Vec<candle_core::Var> = params.iter().map(|(_, v)| v.clone()).collect();
    let mut optim = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )
    .unwrap();
    let losses = floats(&m["losses"]);
    let norms = floats(&m["grad_norms"]);
    let tokens = m["num_label_tokens"].as_u64().unwrap() as f64;
    let (mut worst_loss, mut worst_norm, mut worst_grad, mut worst_final) =
        (0f64, 0f64, 0f32, 0f32);
    for step in 0..losses.len() {
        let out = model
            .loss_and_grads(&inputs, &labels, &vars, tokens, false)
            .unwrap();
        assert_eq!(out.tokens as f64, tokens);
        let loss = out.loss_sum / tokens;
        worst_loss = worst_loss.max(rel(loss, losses[step]));
        assert!(
            rel(loss, losses[step]) < 1e-5,
            "{name} step {step}: loss {loss} vs {}",
            losses[step]
        );
        let mut grads: HashMap<String, Tensor> = params
            .iter()
            .map(|(n, _)| n.clone())
            .zip(out.grads)
            .collect();
        if check_grads && step < 2 {
            for (key, g) in &grads {
                let want = &tensors[&format!("grads.step{step}.{key}")];
                let scale = want
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .max_keepdim(1)
                    .unwrap();
                let scale = scale.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].max(1e-6);
                let diff = max_abs(g, want);
                worst_grad = worst_grad.max(diff / scale);
                assert!(
                    diff <= 1e-4 * scale,
                    "{name} step {step} {key}: grad differs by {diff} (max {scale})"
                );
            }
        }
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        worst_norm = worst_norm.max(rel(norm, norms[step]));
        assert!(
            rel(norm, norms[step]) < 1e-5,
            "{name} step {step}: grad norm {norm} vs {}",
            norms[step]
        );
        optim.step(&grads, 1e-2).unwrap();
    }
    let final_adapter = AdapterFile::read(&dir.join("final_adapter"), &dev).unwrap();
    for (path, layer) in adapter.layers() {
        let (a, b) = &final_adapter.weights[path];
        for (got, want, which) in [(&layer.a, a, "A"), (&layer.b, b, "B")] {
            let diff = max_abs(got.as_tensor(), want);
            worst_final = worst_final.max(diff);
            assert!(
                diff < 2e-5,
                "{name}: final lora_{which} of {path} differs by {diff}"
            );
        }
    }
    let hidden = model.forward(&inputs).unwrap();
    let logits = model.logits(&hidden).unwrap();
    let diff = max_abs(&logits, &tensors["final_logits"]);
    assert!(diff < 1e-4, "{name}: final logits differ by {diff}");
    eprintln!(
        "{name}: worst relative loss diff {worst_loss:.2e}, grad norm {worst_norm:.2e}, \
         gradient (relative to its max) {worst_grad:.2e}; final adapter {worst_final:.2e}, \
         final logits {diff:.2e}"
    );
}

#[test]
fn five_adamw_steps_match_peft_and_torch() {
    peft_steps("peft_steps", true);
}

#[test]
fn all_linear_rslora_with_vision_adapters_matches_peft() {
    peft_steps("peft_vision", false);
}

/// TRL's micro-batches, in the order it fed them: "sample" `2k`/`2k+1` is micro-batch `k`.
struct TrlBatches {
    batches: Vec<Batch>,
    batch_size: usize,
}

impl TrlBatches {
    fn load(dir: &Path) -> Self {
        let m = meta(dir);
        let t =
            candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu).unwrap();
        let rope = RopeConfig::from_config_json(&model_dir().join("config.json")).unwrap();
        let mut batches = Vec::new();
        for mb in m["micro_batches"].as_array().unwrap() {
            let k = mb["index"].as_u64().unwrap();
            let rows: Vec<u64> = mb["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
                .collect();
            let ids = t[&format!("mb.{k}.input_ids")].to_vec2::<i64>().unwrap();
            let mask = t[&format!("mb.{k}.attention_mask")]
                .to_vec2::<i64>()
                .unwrap();
            let labels = t[&format!("mb.{k}.labels")].to_vec2::<i64>().unwrap();
            let pad = ids
                .iter()
                .zip(&mask)
                .find_map(|(i, m)| m.iter().position(|&x| x == 0).map(|p| i[p]))
                .unwrap_or(0) as u32;
            let mut samples = Vec::new();
            let mut grids = Vec::new();
            let mut pixels = Vec::new();
            for (r, row) in rows.iter().enumerate() {
                let len = mask[r].iter().filter(|&&x| x == 1).count();
                assert!(mask[r][..len].iter().all(|&x| x == 1), "right padding");
                samples.push(EncodedSample {
                    input_ids: ids[r][..len].iter().map(|&x| x as u32).collect(),
                    labels: labels[r][..len].to_vec(),
                });
                grids.push(grids_of(&t[&format!("row.{row}.image_grid_thw")]));
                pixels.extend(
                    t[&format!("row.{row}.pixel_values")]
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                );
            }
            let cfg = CollateConfig {
                pad_id: pad,
                max_length: None,
                rope,
            };
            let (tokens, _) = collate(&samples, &grids, &cfg).unwrap();
            let flat_ids: Vec<i64> = ids.concat();
            let got: Vec<i64> = tokens.input_ids.iter().map(|&x| i64::from(x)).collect();
            assert_eq!(
                got, flat_ids,
                "micro-batch {k}: collation reproduces TRL's ids"
            );
            assert_eq!(tokens.labels, labels.concat(), "micro-batch {k}: labels");
            let patch_dim = t[&format!("row.{}.pixel_values", rows[0])].dim(1).unwrap();
            batches.push(Batch {
                tokens,
                pixel_values: pixels,
                patch_dim,
                image_grids: grids.concat(),
            });
        }
        Self {
            batches,
            batch_size: 2,
        }
    }
}

impl BatchSource for TrlBatches {
    fn len(&self) -> usize {
        self.batches.len() * self.batch_size
    }

    fn batch(&self, indices: &[usize]) -> Result<Batch, BoxError> {
        Ok(self.batches[indices[0] / self.batch_size].clone())
    }

    fn epoch_order(&self, _epoch: u64, _seed: u64) -> Vec<usize> {
        (0..self.len()).collect()
    }
}

#[test]
fn ten_updates_of_the_training_loop_track_trl() {
    let dir = fixture("trl_run");
    let m = meta(&dir);
    let source = TrlBatches::load(&dir);
    let dev = Device::Cpu;
    let mut model = Qwen25Vl::load(&model_dir(), DType::F32, &dev).unwrap();
    let adapter = model
        .load_adapter(&AdapterFile::read(&dir.join("initial_adapter"), &dev).unwrap())
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let settings = Settings {
        output_dir: out.path().to_path_buf(),
        base_model_name_or_path: "tied".into(),
        batch_size: 2,
        eval_batch_size: 2,
        accumulation: 2,
        num_train_epochs: 1.0,
        max_steps: 10,
        adamw: AdamWConfig {
            lr: 5e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        scheduler: SchedulerType::Linear,
        warmup: 2.0,
        max_grad_norm: 0.3,
        logging_steps: 1.0,
        eval_strategy: Strategy::No,
        eval_steps: 1.0,
        save_strategy: Strategy::No,
        save_steps: 500.0,
        save_total_limit: None,
        metric_for_best_model: None,
        greater_is_better: false,
        load_best_model_at_end: false,
        gradient_checkpointing: true,
        seed: 42,
        loss_normalization: LossNormalization::MicroBatchMean,
    };
    let outcome = train(
        &model,
        &adapter,
        &source,
        None,
        &settings,
        None,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(outcome.global_step, 10);
    let logs: Vec<&serde_json::Value> = outcome
        .state
        .log_history
        .iter()
        .filter(|e| e.get("loss").is_some())
        .collect();
    let steps = m["steps"].as_array().unwrap();
    assert_eq!(logs.len(), steps.len());
    let mut worst_loss = 0f64;
    for (got, want) in logs.iter().zip(steps) {
        let step = want["step"].as_u64().unwrap();
        assert_eq!(got["step"].as_u64().unwrap(), step);
        let (gl, wl) = (
            got["loss"].as_f64().unwrap(),
            want["loss"].as_f64().unwrap(),
        );
        worst_loss = worst_loss.max(rel(gl, wl));
        assert!(rel(gl, wl) < 1e-5, "step {step}: loss {gl} vs TRL {wl}");
        let (gn, wn) = (
            got["grad_norm"].as_f64().unwrap(),
            want["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            rel(gn, wn) < 1e-4,
            "step {step}: grad norm {gn} vs TRL {wn}"
        );
        let (glr, wlr) = (
            got["learning_rate"].as_f64().unwrap(),
            want["learning_rate"].as_f64().unwrap(),
        );
        assert!(
            (glr - wlr).abs() < 1e-12,
            "step {step}: lr {glr} vs TRL {wlr}"
        );
    }
    eprintln!("worst relative loss difference over 10 steps: {worst_loss:.2e}");
    let want = AdapterFile::read(&dir.join("final_adapter"), &dev).unwrap();
    let got = AdapterFile::read(out.path(), &dev).unwrap();
    let mut worst = 0f32;
    for (path, (a, b)) in &want.weights {
        let (ga, gb) = &got.weights[path];
        worst = worst.max(max_abs(ga, a)).max(max_abs(gb, b));
        assert!(
            max_abs(ga, a) < 2e-5 && max_abs(gb, b) < 2e-5,
            "final adapter {path}"
        );
    }
    eprintln!("trl_run: final adapter max abs diff {worst:.2e}");
}
