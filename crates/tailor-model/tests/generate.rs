//! KV-cache generation against transformers 5.24 `generate` on the tiny random-weight models of
//! `tests/fixtures/model/{tied,windows}` (references written by
//! `tools/reference/model_fixtures.py`: greedy ids of three prompts, with and without repetition
//! penalty 1.05, and the first-step logits).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use tailor_core::{Batch, IGNORE_INDEX, ImageGrid};
use tailor_model::{Config, GenerationConfig, Qwen25Vl, RawGenerationConfig, Sampling, VlmInputs};
use tailor_text::{CollateConfig, EncodedSample, RopeConfig, collate, rope_index};

const FIXTURES: [&str; 2] = ["tied", "windows"];

struct Prompt {
    ids: Vec<u32>,
    pixels: Tensor,
    grids: Vec<ImageGrid>,
    rope_delta: i64,
    greedy: Vec<u32>,
    penalised: Vec<u32>,
    last_logits: Tensor,
}

struct Fixture {
    name: &'static str,
    dir: PathBuf,
    cfg: Config,
    model: Qwen25Vl,
    prompts: Vec<Prompt>,
    eos: Vec<u32>,
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

impl Fixture {
    fn load(name: &'static str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/model")
            .join(name);
        let cfg = Config::from_file(&dir.join("config.json")).unwrap();
        let model = Qwen25Vl::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let reference =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let generation = &meta["generation"];
        let pixels = &reference["pixel_values"];
        let prompts = generation["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let rows = u32s(&p["pixel_values_rows"]);
                let grids = p["image_grid_thw"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| {
                        let g = u32s(g);
                        ImageGrid {
                            t: g[0],
                            h: g[1],
                            w: g[2],
                        }
                    })
                    .collect();
                Prompt {
                    ids: u32s(&p["input_ids"]),
                    pixels: pixels
                        .narrow(0, rows[0] as usize, (rows[1] - rows[0]) as usize)
                        .unwrap(),
                    grids,
                    rope_delta: p["rope_delta"].as_i64().unwrap(),
                    greedy: u32s(&p["greedy"]["generated_ids"]),
                    penalised: u32s(&p["greedy_repetition_penalty_1_05"]["generated_ids"]),
                    last_logits: reference[&format!("gen.{k}.last_logits")].clone(),
                }
            })
            .collect();
        Self {
            name,
            cfg,
            model,
            prompts,
            eos: u32s(&generation["eos_token_id"]),
            dir,
        }
    }

    fn rope_config(&self) -> RopeConfig {
        RopeConfig::from_config_json(&self.dir.join("config.json")).unwrap()
    }

    /// Prompt `k` alone: ids, all-ones mask, `rope_index` positions; and its rope delta.
    fn single(&self, k: usize) -> (VlmInputs, i64) {
        let p = &self.prompts[k];
        let positions = rope_index(&p.ids, &p.grids, &[], &self.rope_config()).unwrap();
        assert_eq!(
            positions.rope_delta, p.rope_delta,
            "{}: prompt {k}",
            self.name
        );
        let l = p.ids.len();
        let inputs = VlmInputs {
            input_ids: Tensor::from_slice(&p.ids, (1, l), &Device::Cpu).unwrap(),
            attention_mask: Tensor::ones((1, l), DType::U8, &Device::Cpu).unwrap(),
            position_ids: Tensor::from_vec(positions.rows.concat(), (3, 1, l), &Device::Cpu)
                .unwrap(),
            pixel_values: Some(p.pixels.clone()),
            image_grids: p.grids.clone(),
        };
        (inputs, positions.rope_delta)
    }

    /// All prompts in one batch, padded on the left or the right with the pad id (positions 0
    /// at padding, as transformers 5 writes them).
    fn batch(&self, left: bool) -> (VlmInputs, Vec<i64>) {
        let pad = self.cfg.tokens.pad.unwrap();
        let l = self.prompts.iter().map(|p| p.ids.len()).max().unwrap();
        let b = self.prompts.len();
        let mut ids = vec![pad; b * l];
        let mut mask = vec![0u8; b * l];
        let mut positions = vec![0i64; 3 * b * l];
        let mut deltas = Vec::new();
        for (row, p) in self.prompts.iter().enumerate() {
            let n = p.ids.len();
            let start = row * l + if left { l - n } else { 0 };
            ids[start..start + n].copy_from_slice(&p.ids);
            mask[start..start + n].fill(1);
            let pos = rope_index(&p.ids, &p.grids, &[], &self.rope_config()).unwrap();
            for (r, values) in pos.rows.iter().enumerate() {
                let at = r * b * l + start;
                positions[at..at + n].copy_from_slice(values);
            }
            deltas.push(pos.rope_delta);
        }
        let pixels: Vec<&Tensor> = self.prompts.iter().map(|p| &p.pixels).collect();
        let inputs = VlmInputs {
            input_ids: Tensor::from_vec(ids, (b, l), &Device::Cpu).unwrap(),
            attention_mask: Tensor::from_vec(mask, (b, l), &Device::Cpu).unwrap(),
            position_ids: Tensor::from_vec(positions, (3, b, l), &Device::Cpu).unwrap(),
            pixel_values: Some(Tensor::cat(&pixels, 0).unwrap()),
            image_grids: self.prompts.iter().flat_map(|p| p.grids.clone()).collect(),
        };
        (inputs, deltas)
    }

    /// The fixture's `generation_config.json` with an explicit penalty and 12 new tokens.
    fn config(&self, repetition_penalty: f32) -> GenerationConfig {
        let mut cfg = GenerationConfig::load(&self.dir, &self.cfg, 0).unwrap();
        assert_eq!(cfg.eos_token_ids, self.eos, "{}", self.name);
        cfg.max_new_tokens = 12;
        cfg.pipeline.repetition_penalty = repetition_penalty;
        cfg
    }
}

/// Splits a transformers output at its first eos id: (ids before it, whether one was found).
fn until_eos(ids: &[u32], eos: &[u32]) -> (Vec<u32>, bool) {
    match ids.iter().position(|id| eos.contains(id)) {
        Some(i) => (ids[..i].to_vec(), true),
        None => (ids.to_vec(), false),
    }
}

#[test]
fn greedy_ids_equal_transformers_generate() {
    for name in FIXTURES {
        let f = Fixture::load(name);
        for (penalty, pick) in [
            (1.0, (|p: &Prompt| &p.greedy) as fn(&Prompt) -> &Vec<u32>),
            (1.05, |p: &Prompt| &p.penalised),
        ] {
            let cfg = f.config(penalty);
            for (k, p) in f.prompts.iter().enumerate() {
                let (inputs, delta) = f.single(k);
                let got = f.model.generate(&inputs, &[delta], &cfg).unwrap();
                let (ids, finished) = until_eos(pick(p), &f.eos);
                assert_eq!(got[0].ids, ids, "{name}: prompt {k}, penalty {penalty}");
                assert_eq!(got[0].finished, finished, "{name}: prompt {k}");
            }
        }
    }
}

#[test]
fn prefill_logits_equal_transformers_first_step_scores() {
    for name in FIXTURES {
        let f = Fixture::load(name);
        for (k, p) in f.prompts.iter().enumerate() {
            let (inputs, delta) = f.single(k);
            let (logits, cache) = f.model.prefill(&inputs, &[delta], 64).unwrap();
            let diff = max_abs_diff(&logits.get(0).unwrap(), &p.last_logits);
            assert!(
                diff <= 1e-4,
                "{name}: prompt {k} first-step logits differ by {diff}"
            );
            assert_eq!(cache.len(), p.ids.len());
            assert_eq!(cache.next_positions(), [p.ids.len() as i64 + p.rope_delta]);
        }
    }
}

#[test]
fn batched_prompts_decode_as_they_do_alone() {
    for name in FIXTURES {
        let f = Fixture::load(name);
        for penalty in [1.0, 1.05] {
            let cfg = f.config(penalty);
            let alone: Vec<_> = (0..f.prompts.len())
                .map(|k| {
                    let (inputs, delta) = f.single(k);
                    f.model.generate(&inputs, &[delta], &cfg).unwrap().remove(0)
                })
                .collect();
            for left in [true, false] {
                let (inputs, deltas) = f.batch(left);
                let batched = f.model.generate(&inputs, &deltas, &cfg).unwrap();
                assert_eq!(
                    batched, alone,
                    "{name}: left padding {left}, penalty {penalty}"
                );
            }
        }
    }
}

/// Step `k` with the cache equals a full forward over prompt + generated tokens (positions of
/// the generated tokens continuing at `length + rope_delta`).
#[test]
fn cached_steps_equal_full_recomputation() {
    for name in FIXTURES {
        let f = Fixture::load(name);
        for (k, p) in f.prompts.iter().enumerate() {
            let (inputs, delta) = f.single(k);
            let prompt_positions = inputs.position_ids.to_vec3::<i64>().unwrap();
            let (_, mut cache) = f.model.prefill(&inputs, &[delta], 4).unwrap();
            let mut ids = p.ids.clone();
            let mut worst = 0f32;
            for (step, &token) in p.greedy.iter().enumerate().take(8) {
                ids.push(token);
                let logits = f.model.decode_step(&[token], &mut cache).unwrap();
                let l = ids.len();
                let positions: Vec<i64> = (0..3)
                    .flat_map(|r| {
                        let mut row = prompt_positions[r][0].clone();
                        row.extend((p.ids.len()..l).map(|i| i as i64 + delta));
                        row
                    })
                    .collect();
                let full = VlmInputs {
                    input_ids: Tensor::from_slice(&ids, (1, l), &Device::Cpu).unwrap(),
                    attention_mask: Tensor::ones((1, l), DType::U8, &Device::Cpu).unwrap(),
                    position_ids: Tensor::from_vec(positions, (3, 1, l), &Device::Cpu).unwrap(),
                    pixel_values: Some(p.pixels.clone()),
                    image_grids: p.grids.clone(),
                };
                let hidden = f.model.forward(&full).unwrap();
                let expected = f.model.logits_at(&hidden, &[(0, l - 1)]).unwrap();
                let diff = max_abs_diff(&logits, &expected);
                worst = worst.max(diff);
                assert!(
                    diff <= 1e-5,
                    "{name}: prompt {k} step {} differs by {diff}",
                    step + 1
                );
            }
            // The cache grew past its initial capacity (the prompt length).
            assert_eq!(cache.len(), p.ids.len() + 8);
            println!("{name}: prompt {k} cached vs full max |Δ| = {worst:.3e}");
        }
    }
}

#[test]
fn generation_stops_on_eos_and_on_max_new_tokens() {
    let f = Fixture::load("tied");
    let p = &f.prompts[0];
    let (inputs, delta) = f.single(0);
    let mut cfg = f.config(1.0);
    // Make the third greedy token an eos id: two tokens come out and the row is finished.
    cfg.eos_token_ids = vec![p.greedy[2]];
    let got = f.model.generate(&inputs, &[delta], &cfg).unwrap();
    assert_eq!(got[0].ids, p.greedy[..2]);
    assert!(got[0].finished);
    // Without eos the row stops at max_new_tokens unfinished.
    cfg.eos_token_ids.clear();
    cfg.max_new_tokens = 5;
    let got = f.model.generate(&inputs, &[delta], &cfg).unwrap();
    assert_eq!(got[0].ids, p.greedy[..5]);
    assert!(!got[0].finished);
    cfg.max_new_tokens = 0;
    let got = f.model.generate(&inputs, &[delta], &cfg).unwrap();
    assert!(got[0].ids.is_empty() && !got[0].finished);
}

#[test]
fn a_finished_row_does_not_disturb_the_others() {
    let f = Fixture::load("windows");
    let mut cfg = f.config(1.0);
    // Prompt 0 ends after its first token; the others run on.
    cfg.eos_token_ids = vec![f.prompts[0].greedy[1]];
    let (inputs, deltas) = f.batch(true);
    let batched = f.model.generate(&inputs, &deltas, &cfg).unwrap();
    for (k, got) in batched.iter().enumerate() {
        let (inputs, delta) = f.single(k);
        let alone = f.model.generate(&inputs, &[delta], &cfg).unwrap().remove(0);
        assert_eq!(got, &alone, "prompt {k}");
    }
    assert_eq!(batched[0].ids.len(), 1);
    assert!(batched[0].finished);
}

#[test]
fn seeded_sampling_is_deterministic() {
    let f = Fixture::load("tied");
    let (inputs, deltas) = f.batch(true);
    let sample = |seed| {
        let mut cfg = f.config(1.05);
        cfg.eos_token_ids.clear();
        cfg.pipeline.sampling = Sampling::Sample {
            temperature: 1.5,
            top_k: 50,
            top_p: 0.95,
            seed,
        };
        f.model.generate(&inputs, &deltas, &cfg).unwrap()
    };
    let a = sample(11);
    assert_eq!(a, sample(11));
    assert_ne!(a, sample(12));
    assert!(a.iter().all(|g| g.ids.len() == 12));
    // A hot sampler leaves the greedy path somewhere.
    let greedy: Vec<&Vec<u32>> = f.prompts.iter().map(|p| &p.greedy).collect();
    let sampled: Vec<&Vec<u32>> = a.iter().map(|g| &g.ids).collect();
    assert_ne!(sampled, greedy);
}

#[test]
fn generation_config_resolves_transformers_defaults() {
    let f = Fixture::load("tied");
    let parse = |json: &str| serde_json::from_str::<RawGenerationConfig>(json).unwrap();
    // The fixture's file: greedy, eos list, pad 746.
    let cfg = GenerationConfig::load(&f.dir, &f.cfg, 0).unwrap();
    assert_eq!(cfg.pipeline.sampling, Sampling::Greedy);
    assert_eq!(cfg.pipeline.repetition_penalty, 1.0);
    assert_eq!(
        (cfg.eos_token_ids.as_slice(), cfg.pad_token_id),
        (&[748, 746][..], 746)
    );
    // A Qwen-style file: sampling with absent top_k / top_p → 50 / 1.0; single eos id.
    let cfg = parse(
        r#"{"do_sample": true, "temperature": 1e-06, "repetition_penalty": 1.05,
            "eos_token_id": 7, "top_p": null, "transformers_version": "4.49.0"}"#,
    )
    .resolve(&f.cfg, 9)
    .unwrap();
    assert_eq!(
        cfg.pipeline.sampling,
        Sampling::Sample {
            temperature: 1e-6,
            top_k: 50,
            top_p: 1.0,
            seed: 9
        }
    );
    assert_eq!(cfg.pipeline.repetition_penalty, 1.05);
    assert_eq!(cfg.eos_token_ids, [7]);
    assert_eq!(cfg.max_new_tokens, tailor_model::DEFAULT_MAX_NEW_TOKENS);
    // Empty file: everything from the library defaults and config.json; pad falls back to the
    // config's pad id.
    let cfg = parse("{}").resolve(&f.cfg, 0).unwrap();
    assert_eq!(cfg.pipeline.sampling, Sampling::Greedy);
    assert_eq!(cfg.eos_token_ids, f.cfg.tokens.eos);
    assert_eq!(Some(cfg.pad_token_id), f.cfg.tokens.pad);
    // Sampling parameters are ignored when greedy, but validated when sampling.
    assert!(parse(r#"{"temperature": 0.0}"#).resolve(&f.cfg, 0).is_ok());
    assert!(
        parse(r#"{"do_sample": true, "temperature": 0.0}"#)
            .resolve(&f.cfg, 0)
            .is_err()
    );
    assert!(
        parse(r#"{"repetition_penalty": 0.0}"#)
            .resolve(&f.cfg, 0)
            .is_err()
    );
    // A directory without the file resolves to the defaults.
    let empty = tempfile::tempdir().unwrap();
    let cfg = GenerationConfig::load(empty.path(), &f.cfg, 0).unwrap();
    assert_eq!(cfg, parse("{}").resolve(&f.cfg, 0).unwrap());
    assert_eq!(
        GenerationConfig::greedy(&f.cfg, 3),
        GenerationConfig {
            max_new_tokens: 3,
            ..parse("{}").resolve(&f.cfg, 0).unwrap()
        }
    );
}

/// bfloat16 weights and cache decode end to end; the first token, whose float32 top-2 margin is
/// far above transformers' own bf16-vs-f32 logit change (0.07), agrees with float32.
#[test]
fn half_precision_generation_runs_and_agrees_on_the_first_token() {
    let f = Fixture::load("tied");
    let model = Qwen25Vl::load(&f.dir, DType::BF16, &Device::Cpu).unwrap();
    let cfg = f.config(1.05);
    // Float32 pixels, as `VlmInputs::from_batch` builds them: the vision tower casts.
    let (inputs, deltas) = f.batch(true);
    let out = model.generate(&inputs, &deltas, &cfg).unwrap();
    for (k, (got, p)) in out.iter().zip(&f.prompts).enumerate() {
        assert!(got.finished || got.ids.len() == 12, "prompt {k}");
        assert_eq!(got.ids.first(), p.penalised.first(), "prompt {k}");
    }
}

/// The CLI's path: encoded samples → `tailor_text::collate` (right padding) → `Batch` →
/// `VlmInputs::from_batch` + `TokenBatch::rope_deltas` → `generate`, equal to transformers.
#[test]
fn a_collated_batch_generates_the_reference_ids() {
    let f = Fixture::load("windows");
    let samples: Vec<EncodedSample> = f
        .prompts
        .iter()
        .map(|p| EncodedSample {
            input_ids: p.ids.clone(),
            labels: vec![IGNORE_INDEX; p.ids.len()],
        })
        .collect();
    let grids: Vec<Vec<ImageGrid>> = f.prompts.iter().map(|p| p.grids.clone()).collect();
    let collate_cfg = CollateConfig {
        pad_id: f.cfg.tokens.pad.unwrap(),
        max_length: None,
        rope: f.rope_config(),
    };
    let (tokens, _) = collate(&samples, &grids, &collate_cfg).unwrap();
    let pixels: Vec<&Tensor> = f.prompts.iter().map(|p| &p.pixels).collect();
    let pixels = Tensor::cat(&pixels, 0).unwrap();
    let batch = Batch {
        pixel_values: pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        patch_dim: pixels.dim(1).unwrap(),
        image_grids: grids.concat(),
        tokens,
    };
    let inputs = VlmInputs::from_batch(&batch, &Device::Cpu).unwrap();
    let cfg = f.config(1.05);
    let out = f
        .model
        .generate(&inputs, &batch.tokens.rope_deltas, &cfg)
        .unwrap();
    for (k, (got, p)) in out.iter().zip(&f.prompts).enumerate() {
        let (ids, finished) = until_eos(&p.penalised, &f.eos);
        assert_eq!((&got.ids, got.finished), (&ids, finished), "prompt {k}");
    }
}

/// With a prefix trie, every row starts with one of the allowed sequences (here sequences the
/// free greedy decoding does not produce), then continues freely.
#[test]
fn constrained_prefixes_are_always_respected() {
    let f = Fixture::load("tied");
    let (inputs, deltas) = f.batch(true);
    let free = f.model.generate(&inputs, &deltas, &f.config(1.0)).unwrap();
    let first: Vec<u32> = free.iter().filter_map(|g| g.ids.first().copied()).collect();
    // Two allowed prefixes whose first tokens no free row chose.
    let unused: Vec<u32> = (100u32..400)
        .filter(|t| !first.contains(t))
        .take(3)
        .collect();
    let allowed = vec![
        vec![unused[0], unused[1]],
        vec![unused[0], unused[2], unused[1]],
    ];
    let mut cfg = f.config(1.0);
    cfg.prefix = Some(std::sync::Arc::new(tailor_model::PrefixTrie::new(&allowed)));
    let constrained = f.model.generate(&inputs, &deltas, &cfg).unwrap();
    for g in &constrained {
        assert!(
            allowed.iter().any(|p| g.ids.starts_with(p)),
            "{:?} does not start with an allowed prefix",
            g.ids
        );
        assert!(g.ids.len() > 3 || g.finished);
    }
}
