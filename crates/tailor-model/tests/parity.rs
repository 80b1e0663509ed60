//! Parity with transformers 5.24 (float32, eager attention) on the tiny random-weight models of
//! `tests/fixtures/model/{tied,windows}`, written by `tools/reference/model_fixtures.py`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{Fixture, max_abs_diff};
use tailor_core::ImageGrid;
use tailor_model::{VlmInputs, full_attention_seqlens, window_index};
use tailor_text::rope_index;

const TOLERANCE: f32 = 1e-4;

/// Largest absolute difference over the first `lengths[b]` positions of each row of two
/// `[batch, len, ...]` tensors (padding rows are meaningless).
fn max_abs_diff_unpadded(got: &Tensor, expected: &Tensor, lengths: &[usize]) -> f32 {
    assert_eq!(got.dims(), expected.dims());
    lengths
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            let g = got.get(b).unwrap().narrow(0, 0, n).unwrap();
            let e = expected.get(b).unwrap().narrow(0, 0, n).unwrap();
            max_abs_diff(&g, &e)
        })
        .fold(0.0, f32::max)
}

fn check_unpadded(fixture: &Fixture, what: &str, got: &Tensor, expected: &Tensor) {
    let diff = max_abs_diff_unpadded(got, expected, &fixture.lengths());
    println!("{}: {what} max |Δ| = {diff:.3e}", fixture.name);
    assert!(
        diff <= TOLERANCE,
        "{}: {what} differs by {diff}",
        fixture.name
    );
}

fn check(fixture: &Fixture, what: &str, got: &Tensor, expected: &Tensor) {
    let diff = max_abs_diff(got, expected);
    println!("{}: {what} max |Δ| = {diff:.3e}", fixture.name);
    assert!(
        diff <= TOLERANCE,
        "{}: {what} differs by {diff}",
        fixture.name
    );
}

#[test]
fn window_index_and_segments_match_transformers() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let grids = f.grids();
        let w = window_index(&grids, &f.cfg.vision);
        let as_usize = |v: Vec<i64>| v.into_iter().map(|x| x as usize).collect::<Vec<_>>();
        assert_eq!(
            w.window_index,
            as_usize(f.ints("vision.window_index")),
            "{name}"
        );
        assert_eq!(
            w.cu_window_seqlens,
            as_usize(f.ints("vision.cu_window_seqlens")),
            "{name}"
        );
        assert_eq!(
            full_attention_seqlens(&grids),
            as_usize(f.ints("vision.cu_seqlens")),
            "{name}"
        );
    }
}

#[test]
fn vision_tower_matches_transformers() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let trace = f
            .vision()
            .forward_traced(f.tensor("pixel_values"), &f.grids())
            .unwrap();
        check(
            &f,
            "patch_embed",
            &trace.patch_embeds,
            f.tensor("vision.patch_embed"),
        );
        for (i, block) in trace.block_outputs.iter().enumerate() {
            check(
                &f,
                &format!("vision block {i}"),
                block,
                f.tensor(&format!("vision.blocks.{i}")),
            );
        }
        check(
            &f,
            "vision_embeds",
            &trace.embeds,
            f.tensor("vision_embeds"),
        );
    }
}

#[test]
fn decoder_hidden_states_and_logits_match_transformers() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let model = f.model(DType::F32);
        let inputs = f.batch_inputs();
        let states = model.forward_hidden_states(&inputs).unwrap();
        assert_eq!(states.len(), f.cfg.text.num_hidden_layers + 1);
        for (i, state) in states.iter().enumerate() {
            check_unpadded(
                &f,
                &format!("hidden_states.{i}"),
                state,
                f.tensor(&format!("hidden_states.{i}")),
            );
        }
        let logits = model.logits(states.last().unwrap()).unwrap();
        check_unpadded(&f, "logits", &logits, f.tensor("logits"));

        // forward() is the last hidden state; logits_at picks rows of the full logits.
        let hidden = model.forward(&inputs).unwrap();
        assert_eq!(max_abs_diff(&hidden, states.last().unwrap()), 0.0);
        let lengths = f.lengths();
        let picks: Vec<(usize, usize)> =
            vec![(0, 0), (1, lengths[1] - 1), (0, lengths[0] - 1), (1, 3)];
        let at = model.logits_at(&hidden, &picks).unwrap();
        for (k, &(b, p)) in picks.iter().enumerate() {
            let expected = f.tensor("logits").get(b).unwrap().get(p).unwrap();
            check(
                &f,
                &format!("logits_at({b}, {p})"),
                &at.get(k).unwrap(),
                &expected,
            );
        }
    }
}

#[test]
fn fixture_positions_equal_tailor_text_rope_index() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let ids = f.tensor("input_ids").to_vec2::<i64>().unwrap();
        let positions = f.tensor("position_ids").to_dtype(DType::I64).unwrap();
        let mut grids = f.grids().into_iter();
        for (b, &n) in f.lengths().iter().enumerate() {
            let row: Vec<u32> = ids[b][..n].iter().map(|&i| i as u32).collect();
            let images = row
                .windows(2)
                .filter(|w| w[0] == f.cfg.tokens.vision_start && w[1] == f.cfg.tokens.image)
                .count();
            let mine: Vec<ImageGrid> = grids.by_ref().take(images).collect();
            let got = rope_index(&row, &mine, &[], &f.rope_config()).unwrap();
            for r in 0..3 {
                let expected = positions
                    .get(r)
                    .unwrap()
                    .get(b)
                    .unwrap()
                    .narrow(0, 0, n)
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap();
                assert_eq!(got.rows[r], expected, "{name}: row {r} of sample {b}");
            }
        }
    }
}

/// Each sample of the padded batch run alone gives the same logits (padding bugs show here).
#[test]
fn batched_equals_single_sample() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let model = f.model(DType::F32);
        let batched = model
            .logits(&model.forward(&f.batch_inputs()).unwrap())
            .unwrap();
        let ids = f.tensor("input_ids").to_vec2::<i64>().unwrap();
        let pixels = f.tensor("pixel_values");
        let mut row_start = 0;
        for (b, (&n, grid)) in f.lengths().iter().zip(f.grids()).enumerate() {
            let row: Vec<u32> = ids[b][..n].iter().map(|&i| i as u32).collect();
            let rows = grid.patches();
            let inputs =
                f.single_inputs(&row, pixels.narrow(0, row_start, rows).unwrap(), vec![grid]);
            row_start += rows;
            let single = model.logits(&model.forward(&inputs).unwrap()).unwrap();
            let expected = batched.get(b).unwrap().narrow(0, 0, n).unwrap();
            let diff = max_abs_diff(&single.get(0).unwrap(), &expected);
            println!("{name}: sample {b} alone vs batched max |Δ| = {diff:.3e}");
            assert!(diff <= TOLERANCE, "{name}: sample {b} differs by {diff}");
        }
    }
}

/// The generation prompts of the fixture, each run alone: logits at the last prompt position.
#[test]
fn generation_prompt_logits_match_transformers() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let model = f.model(DType::F32);
        let pixels = f.tensor("pixel_values");
        let prompts = f.meta["generation"]["prompts"].as_array().unwrap();
        for (k, prompt) in prompts.iter().enumerate() {
            let ids: Vec<u32> = prompt["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let rows = prompt["pixel_values_rows"].as_array().unwrap();
            let (start, end) = (
                rows[0].as_u64().unwrap() as usize,
                rows[1].as_u64().unwrap() as usize,
            );
            let grids: Vec<ImageGrid> = prompt["image_grid_thw"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let g: Vec<u32> = g
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u32)
                        .collect();
                    ImageGrid {
                        t: g[0],
                        h: g[1],
                        w: g[2],
                    }
                })
                .collect();
            let inputs =
                f.single_inputs(&ids, pixels.narrow(0, start, end - start).unwrap(), grids);
            let hidden = model.forward(&inputs).unwrap();
            let last = model
                .logits_at(&hidden, &[(0, ids.len() - 1)])
                .unwrap()
                .get(0)
                .unwrap();
            check(
                &f,
                &format!("gen.{k}.last_logits"),
                &last,
                f.tensor(&format!("gen.{k}.last_logits")),
            );
        }
    }
}

/// Reduced precision runs end to end and stays near the float32 reference (transformers' own
/// bf16-vs-f32 difference on these models is recorded in reference.json).
#[test]
fn half_precision_stays_close_to_float32() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let hf_bf16_gap = f.meta["sensitivity_max_abs_logit_change"]["bf16_vs_f32_logits"]
            .as_f64()
            .unwrap() as f32;
        for dtype in [DType::BF16, DType::F16] {
            let model = f.model(dtype);
            let inputs = f.batch_inputs();
            let logits = model.logits(&model.forward(&inputs).unwrap()).unwrap();
            assert_eq!(logits.dtype(), dtype);
            let logits = logits.to_dtype(DType::F32).unwrap();
            let diff = max_abs_diff_unpadded(&logits, f.tensor("logits"), &f.lengths());
            println!(
                "{name}: {dtype:?} logits max |Δ| vs f32 reference = {diff:.3e} (transformers bf16: {hf_bf16_gap:.3e})"
            );
            assert!(
                diff <= 4.0 * hf_bf16_gap.max(0.02),
                "{name}: {dtype:?} differs by {diff}"
            );
        }
    }
}

#[test]
fn image_token_and_feature_counts_must_agree() {
    let f = Fixture::load("tied");
    let model = f.model(DType::F32);
    let mut inputs = f.batch_inputs();
    let first = f.grids()[0];
    inputs.pixel_values = Some(
        f.tensor("pixel_values")
            .narrow(0, 0, first.patches())
            .unwrap(),
    );
    inputs.image_grids = vec![first];
    let tokens: usize = f.grids().iter().map(|g| g.llm_tokens(2)).sum();
    let err = model.forward(&inputs).unwrap_err().to_string();
    let expected = format!(
        "the input ids hold {tokens} image tokens but the images give {} features",
        first.llm_tokens(2)
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn inputs_from_a_collated_batch_equal_the_tensors() {
    let f = Fixture::load("tied");
    let reference = f.batch_inputs();
    let (b, l) = reference.input_ids.dims2().unwrap();
    let batch = tailor_core::Batch {
        tokens: tailor_core::TokenBatch {
            batch_size: b,
            seq_len: l,
            input_ids: f.ints("input_ids").into_iter().map(|i| i as u32).collect(),
            attention_mask: f
                .ints("attention_mask")
                .into_iter()
                .map(|m| m as u8)
                .collect(),
            labels: vec![tailor_core::IGNORE_INDEX; b * l],
            position_ids: f.ints("position_ids"),
            rope_deltas: f.ints("rope_deltas"),
        },
        pixel_values: f
            .tensor("pixel_values")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        patch_dim: f.cfg.vision.patch_dim(),
        image_grids: f.grids(),
    };
    let inputs = VlmInputs::from_batch(&batch, &Device::Cpu).unwrap();
    let model = f.model(DType::F32);
    let got = model.forward(&inputs).unwrap();
    let expected = model.forward(&reference).unwrap();
    assert_eq!(max_abs_diff(&got, &expected), 0.0);
}

/// The same batch padded on the left (positions 0 at padding, as transformers 5 writes them)
/// gives the same logits at every real token, and finite values at the padding.
#[test]
fn left_padding_equals_right_padding() {
    for name in ["tied", "windows"] {
        let f = Fixture::load(name);
        let model = f.model(DType::F32);
        let right = f.batch_inputs();
        let (b, l) = right.input_ids.dims2().unwrap();
        let lengths = f.lengths();
        // Move each row's padding to the front: index p of the left-padded row holds the token at
        // p - (l - n) of the right-padded one.
        let shift = |t: &Tensor, n: usize, fill: &Tensor| -> Tensor {
            let real = t.narrow(0, 0, n).unwrap();
            let pad = fill.narrow(0, 0, l - n).unwrap();
            Tensor::cat(&[&pad, &real], 0).unwrap()
        };
        let zeros = Tensor::zeros(l, DType::I64, &Device::Cpu).unwrap();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        let mut pos = vec![Vec::new(); 3];
        for (row, &n) in lengths.iter().enumerate() {
            let pad_ids = Tensor::full(f.cfg.tokens.pad.unwrap() as i64, l, &Device::Cpu).unwrap();
            ids.push(shift(&right.input_ids.get(row).unwrap(), n, &pad_ids));
            mask.push(shift(&right.attention_mask.get(row).unwrap(), n, &zeros));
            for (r, rows) in pos.iter_mut().enumerate() {
                rows.push(shift(
                    &right.position_ids.get(r).unwrap().get(row).unwrap(),
                    n,
                    &zeros,
                ));
            }
        }
        let pos: Vec<Tensor> = pos
            .into_iter()
            .map(|rows| Tensor::stack(&rows, 0).unwrap())
            .collect();
        let left = VlmInputs {
            input_ids: Tensor::stack(&ids, 0).unwrap(),
            attention_mask: Tensor::stack(&mask, 0).unwrap(),
            position_ids: Tensor::stack(&pos, 0).unwrap(),
            pixel_values: right.pixel_values.clone(),
            image_grids: right.image_grids.clone(),
        };
        let logits = model.logits(&model.forward(&left).unwrap()).unwrap();
        assert_eq!(logits.dims(), [b, l, f.cfg.text.vocab_size]);
        let finite = logits
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(finite.is_finite(), "{name}: non-finite logits at padding");
        for (row, &n) in lengths.iter().enumerate() {
            let got = logits.get(row).unwrap().narrow(0, l - n, n).unwrap();
            let expected = f
                .tensor("logits")
                .get(row)
                .unwrap()
                .narrow(0, 0, n)
                .unwrap();
            check(&f, &format!("left-padded sample {row}"), &got, &expected);
        }
    }
}

#[test]
fn logits_at_handles_no_positions_and_rejects_out_of_range_ones() {
    let f = Fixture::load("tied");
    let model = f.model(DType::F32);
    let hidden = model.forward(&f.batch_inputs()).unwrap();
    let none = model.logits_at(&hidden, &[]).unwrap();
    assert_eq!(none.dims(), [0, f.cfg.text.vocab_size]);
    let (b, l, _) = hidden.dims3().unwrap();
    let err = model.logits_at(&hidden, &[(0, l)]).unwrap_err().to_string();
    assert!(
        err.contains(&format!("outside the [{b}, {l}] batch")),
        "{err}"
    );
}
