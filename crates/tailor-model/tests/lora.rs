//! LoRA on the tiny fixture models: every adapter weight is trained (gets a finite, non-zero
//! gradient), gradient checkpointing gives the gradients of the full graph, a zero-B adapter
//! leaves the model unchanged, and an adapter survives a save → read → attach round trip.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{Fixture, max_abs_diff};
use tailor_core::IGNORE_INDEX;
use tailor_model::{AdapterFile, InitFrom, LoraInit, LoraSpec, Qwen25Vl, TargetModules};

fn spec(targets: TargetModules, vision: bool, dropout: f64) -> LoraSpec {
    LoraSpec {
        r: 2,
        lora_alpha: 4.0,
        lora_dropout: dropout,
        use_rslora: false,
        target_modules: targets,
        adapt_vision: vision,
        init: LoraInit::Kaiming,
        modules_to_save: vec![],
    }
}

/// Labels as the recipe's collator makes them: padding and image pads ignored.
fn recipe_labels(f: &Fixture) -> Vec<i64> {
    let ids = f.ints("input_ids");
    let mask = f.ints("attention_mask");
    let image = i64::from(f.cfg.tokens.image);
    ids.iter()
        .zip(&mask)
        .map(|(&id, &m)| {
            if m == 0 || id == image {
                IGNORE_INDEX
            } else {
                id
            }
        })
        .collect()
}

/// Sets every B to small random values so that A's gradients are not zero by construction.
fn randomise_b(params: &[(String, Var)]) {
    for (name, var) in params {
        if name.contains("lora_B") {
            let noise = Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).unwrap();
            var.set(&noise).unwrap();
        }
    }
}

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

#[test]
fn every_adapter_weight_gets_a_gradient_and_checkpointing_changes_nothing() {
    // The last case also trains PEFT `modules_to_save` copies: the (tied) embedding and head
    // and the vision merger, below the decoder that checkpointing recomputes.
    let saved: Vec<String> = ["embed_tokens", "lm_head", "merger"]
        .map(String::from)
        .to_vec();
    for (fixture, vision, to_save) in [
        ("windows", true, vec![]),
        ("tied", false, vec![]),
        ("tied", false, saved),
    ] {
        let f = Fixture::load(fixture);
        let mut model =
            Qwen25Vl::load_with_saved(&f.dir, DType::F32, &Device::Cpu, &to_save, None, true)
                .unwrap();
        let mut lora = spec(TargetModules::AllLinear, vision, 0.2);
        lora.modules_to_save = to_save.clone();
        let adapter = model.attach_lora(&lora, InitFrom::Seed(3)).unwrap();
        assert_eq!(model.vision_adapted(), vision);
        assert_eq!(
            adapter.saved().len(),
            if to_save.is_empty() { 0 } else { 2 + 5 },
            "embedding, head, the merger's ln_q (RMSNorm) and two linears with biases"
        );
        let params = adapter.params();
        randomise_b(&params);
        let vars: Vec<Var> = params.iter().map(|(_, v)| v.clone()).collect();
        let inputs = f.batch_inputs();
        let labels = recipe_labels(&f);
        adapter.runtime().set_training(true);
        adapter.runtime().set_dropout_key(99);
        let full = model
            .loss_and_grads(&inputs, &labels, &vars, 7.0, false)
            .unwrap();
        let ckpt = model
            .loss_and_grads(&inputs, &labels, &vars, 7.0, true)
            .unwrap();
        assert_eq!(full.tokens, ckpt.tokens);
        assert!(full.loss_sum.is_finite() && full.loss_sum > 0.0);
        assert!((full.loss_sum - ckpt.loss_sum).abs() <= 1e-6 * full.loss_sum);
        for (((name, _), g_full), g_ckpt) in params.iter().zip(&full.grads).zip(&ckpt.grads) {
            let n = norm(g_full);
            assert!(
                n.is_finite() && n > 0.0,
                "{fixture}: {name} gets no gradient"
            );
            // Gradients carry no graph (an optimizer moment built from one would keep every
            // step's graph alive).
            assert!(
                !g_full.track_op() && !g_ckpt.track_op(),
                "{fixture}: {name}"
            );
            let diff = max_abs_diff(g_full, g_ckpt);
            assert!(
                diff <= 1e-5 * n.max(1e-3),
                "{fixture}: {name}: checkpointed gradient differs by {diff} (norm {n})"
            );
        }
        if !vision && to_save.is_empty() {
            assert!(params.iter().all(|(n, _)| n.contains("language_model")));
        }
    }
}

#[test]
fn evaluation_loss_equals_the_training_loss_without_dropout() {
    let f = Fixture::load("tied");
    let mut model = f.model(DType::F32);
    let adapter = model
        .attach_lora(
            &spec(TargetModules::Names(vec!["q_proj".into()]), false, 0.5),
            InitFrom::Seed(1),
        )
        .unwrap();
    randomise_b(&adapter.params());
    let labels = recipe_labels(&f);
    let (sum, n) = model.loss_sum(&f.batch_inputs(), &labels).unwrap();
    let vars: Vec<Var> = adapter.params().into_iter().map(|(_, v)| v).collect();
    let train = model
        .loss_and_grads(&f.batch_inputs(), &labels, &vars, 1.0, false)
        .unwrap();
    assert_eq!(n, train.tokens);
    assert!((sum - train.loss_sum).abs() < 1e-5 * sum);
}

#[test]
fn a_fresh_adapter_changes_nothing_and_a_saved_one_round_trips() {
    let f = Fixture::load("windows");
    let base = f.model(DType::F32);
    let inputs = f.batch_inputs();
    let base_logits = base.logits(&base.forward(&inputs).unwrap()).unwrap();

    let mut model = f.model(DType::F32);
    let adapter = model
        .attach_lora(
            &spec(
                TargetModules::Names(vec!["q_proj".into(), "gate_proj".into()]),
                false,
                0.0,
            ),
            InitFrom::Seed(5),
        )
        .unwrap();
    let fresh = model.logits(&model.forward(&inputs).unwrap()).unwrap();
    assert_eq!(max_abs_diff(&fresh, &base_logits), 0.0);

    randomise_b(&adapter.params());
    let trained = model.logits(&model.forward(&inputs).unwrap()).unwrap();
    assert!(max_abs_diff(&trained, &base_logits) > 1e-3);

    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path(), "tiny").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    // gate_proj also names vision MLPs, which were not adapted: PEFT must get a rule that
    // selects only the decoder's modules.
    let rule = config["target_modules"].as_str().unwrap();
    assert!(
        rule.contains("language_model") && !rule.contains("visual"),
        "{rule}"
    );

    let file = AdapterFile::read(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(file.weights.len(), adapter.layers().len());
    let mut reloaded: Qwen25Vl = f.model(DType::F32);
    reloaded.load_adapter(&file).unwrap();
    let again = reloaded
        .logits(&reloaded.forward(&inputs).unwrap())
        .unwrap();
    assert_eq!(max_abs_diff(&again, &trained), 0.0);
}

#[test]
fn bf16_base_keeps_float32_adapters() {
    let f = Fixture::load("tied");
    let mut model = f.model(DType::BF16);
    let adapter = model
        .attach_lora(
            &spec(TargetModules::Names(vec!["v_proj".into()]), false, 0.0),
            InitFrom::Seed(2),
        )
        .unwrap();
    for (name, var) in adapter.params() {
        assert_eq!(var.dtype(), DType::F32, "{name}");
    }
    let vars: Vec<Var> = adapter.params().into_iter().map(|(_, v)| v).collect();
    randomise_b(&adapter.params());
    let out = model
        .loss_and_grads(&f.batch_inputs(), &recipe_labels(&f), &vars, 1.0, true)
        .unwrap();
    assert!(out.loss_sum.is_finite());
    assert!(out.grads.iter().all(|g| g.dtype() == DType::F32));
}

#[test]
fn unknown_adapter_modules_and_empty_targets_are_errors() {
    let f = Fixture::load("tied");
    let mut model = f.model(DType::F32);
    let err = model
        .attach_lora(
            &spec(TargetModules::Names(vec!["nothing".into()]), false, 0.0),
            InitFrom::Seed(1),
        )
        .unwrap_err();
    assert!(err.to_string().contains("matches no linear layer"), "{err}");
    let mut map = std::collections::BTreeMap::new();
    let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    map.insert(
        "model.language_model.layers.0.bogus".to_string(),
        (t.clone(), t),
    );
    let err = model
        .attach_lora(
            &spec(TargetModules::AllLinear, false, 0.0),
            InitFrom::Weights(&map),
        )
        .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn an_exported_merged_model_gives_the_adapted_logits() {
    let f = Fixture::load("windows");
    let mut model = f.model(DType::F32);
    let adapter = model
        .attach_lora(
            &spec(TargetModules::AllLinear, true, 0.0),
            InitFrom::Seed(8),
        )
        .unwrap();
    randomise_b(&adapter.params());
    let inputs = f.batch_inputs();
    let adapted = model.logits(&model.forward(&inputs).unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let adapter_dir = dir.path().join("adapter");
    std::fs::create_dir(&adapter_dir).unwrap();
    adapter.save(&adapter_dir, "windows").unwrap();
    let file = AdapterFile::read(&adapter_dir, &Device::Cpu).unwrap();
    let out = dir.path().join("merged");
    // A small shard limit forces several shards.
    let report =
        tailor_model::export::export_merged(&f.dir, &file, &out, DType::F32, 20_000, |_, _| {})
            .unwrap();
    assert!(report.shards.len() > 1, "{report:?}");
    assert_eq!(report.merged, adapter.layers().len());
    assert!(out.join("tokenizer.json").is_file() && out.join("config.json").is_file());

    let merged = Qwen25Vl::load(&out, DType::F32, &Device::Cpu).unwrap();
    let logits = merged.logits(&merged.forward(&inputs).unwrap()).unwrap();
    let diff = max_abs_diff(&logits, &adapted);
    assert!(diff < 1e-4, "merged logits differ by {diff}");
}
