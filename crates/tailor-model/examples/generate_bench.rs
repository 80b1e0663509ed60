//! Generation benchmark, tailor side: prefill and greedy KV-cache decoding of a prompt batch on
//! the CPU in float32, with a per-phase profile. Run through `tools/bench/generate.sh`, which
//! also runs transformers on the same inputs and prints the comparison.
//!
//! ```text
//! cargo build --release --example generate_bench -p tailor-model
//! generate_bench MODEL_DIR INPUTS.safetensors [--new-tokens 32] [--repeats 3] [--no-profile]
//! ```
//!
//! `INPUTS.safetensors` is written by `tools/bench/generate_hf.py inputs` (transformers' processor
//! output: `input_ids`, `attention_mask`, `pixel_values`, `image_grid_thw`, plus transformers'
//! `position_ids` for a cross-check). The M-RoPE positions and rope deltas fed to the model are
//! tailor's own (`tailor_text::rope_index` over each row's real tokens); the run stops if they
//! differ from transformers' at any real token.
//!
//! Prints one JSON line. Timings are the best of `--repeats` runs after one warm-up run (medians
//! are reported too; the best run is the least disturbed by other processes on a shared machine):
//! - `prefill_s`: [`Qwen25Vl::prefill`] (vision tower, decoder over the whole batch filling the
//!   KV cache, logits at each row's last token);
//! - `generate_s`: [`Qwen25Vl::generate`] end to end, greedy with no end-of-sequence id, so each
//!   row yields exactly `--new-tokens` tokens;
//! - `decode_s`: the `new_tokens − 1` one-token steps alone (the first token comes from the
//!   prefill), timed directly in the loop `generate` runs ([`Qwen25Vl::decode_step`] + argmax),
//!   from the first chosen token to the last; its ids must equal `generate`'s;
//! - `profile` (unless `--no-profile`): the prefill, the vision tower alone and the decoder input
//!   (embedding + vision tower + merge), best of `--repeats`; per decoding step the whole
//!   `decode_step`, the output projection alone (on a `[batch, 1, hidden]` probe) and the greedy
//!   choice (logits to host + argmax), medians over one greedy run.
//!
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS` (default: all cores); the JSON reports
//! the count in use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use tailor_core::ImageGrid;
use tailor_model::sampling::argmax;
use tailor_model::{GenerationConfig, Qwen25Vl, VlmInputs};
use tailor_text::RopeConfig;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    model: PathBuf,
    inputs: PathBuf,
    new_tokens: usize,
    repeats: usize,
    profile: bool,
}

fn parse_args() -> Result<Args> {
    let mut positional = Vec::new();
    let (mut new_tokens, mut repeats, mut profile) = (32, 3, true);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--new-tokens" => {
                new_tokens = it.next().ok_or("--new-tokens needs a value")?.parse()?
            }
            "--repeats" => repeats = it.next().ok_or("--repeats needs a value")?.parse()?,
            "--no-profile" => profile = false,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [model, inputs] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| "usage: generate_bench MODEL_DIR INPUTS.safetensors [--new-tokens N] [--repeats R] [--no-profile]")?;
    if new_tokens < 2 || repeats == 0 {
        return Err("--new-tokens must be at least 2 and --repeats at least 1".into());
    }
    Ok(Args {
        model,
        inputs,
        new_tokens,
        repeats: repeats.max(1),
        profile,
    })
}

/// Wall times in seconds of `repeats` calls after one warm-up call, and the last result.
struct Timed<T> {
    best: f64,
    median: f64,
    value: T,
}

fn time_it<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<Timed<T>> {
    time_inner(repeats, || {
        let start = Instant::now();
        let value = f()?;
        Ok((start.elapsed().as_secs_f64(), value))
    })
}

/// As [`time_it`] for a closure that times its own measured part and returns `(seconds, value)`.
fn time_inner<T>(repeats: usize, mut f: impl FnMut() -> Result<(f64, T)>) -> Result<Timed<T>> {
    f()?;
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let (secs, value) = f()?;
        times.push(secs);
        last = Some(value);
    }
    Ok(Timed {
        best: times.iter().copied().fold(f64::INFINITY, f64::min),
        median: median(&mut times),
        value: last.expect("repeats >= 1"),
    })
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// The model inputs of the batch file, with tailor's own M-RoPE positions and rope deltas.
fn load_inputs(dir: &Path, path: &Path) -> Result<(VlmInputs, Vec<i64>, usize)> {
    let cpu = Device::Cpu;
    let t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &cpu)?;
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| format!("{}: no tensor {k}", path.display()))
    };
    let ids = get("input_ids")?.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    let mask = get("attention_mask")?
        .to_dtype(DType::I64)?
        .to_vec2::<i64>()?;
    let hf_positions = get("position_ids")?
        .to_dtype(DType::I64)?
        .to_vec3::<i64>()?;
    let grids: Vec<ImageGrid> = get("image_grid_thw")?
        .to_dtype(DType::I64)?
        .to_vec2::<i64>()?
        .into_iter()
        .map(|g| ImageGrid {
            t: g[0] as u32,
            h: g[1] as u32,
            w: g[2] as u32,
        })
        .collect();
    let rope = RopeConfig::from_config_json(&dir.join("config.json"))?;
    let merge = (rope.spatial_merge_size * rope.spatial_merge_size) as usize;
    let (b, l) = (ids.len(), ids[0].len());
    let mut positions = vec![0i64; 3 * b * l];
    let mut deltas = Vec::with_capacity(b);
    let mut next_grid = 0;
    let mut real_tokens = 0;
    for row in 0..b {
        let real: Vec<usize> = (0..l).filter(|&i| mask[row][i] != 0).collect();
        let row_ids: Vec<u32> = real.iter().map(|&i| ids[row][i] as u32).collect();
        real_tokens += real.len();
        // This row's image placeholder runs consume the next grids in order.
        let mut image_tokens = row_ids
            .iter()
            .filter(|&&id| id == rope.image_token_id)
            .count();
        let first = next_grid;
        while image_tokens > 0 {
            let g = grids.get(next_grid).ok_or("more image tokens than grids")?;
            image_tokens = image_tokens
                .checked_sub(g.patches() / merge)
                .ok_or("image tokens do not match the grids")?;
            next_grid += 1;
        }
        let pos = tailor_text::rope_index(&row_ids, &grids[first..next_grid], &[], &rope)?;
        for (k, &col) in real.iter().enumerate() {
            for axis in 0..3 {
                let p = pos.rows[axis][k];
                if p != hf_positions[axis][row][col] {
                    return Err(format!(
                        "row {row} column {col} axis {axis}: tailor position {p}, transformers {}",
                        hf_positions[axis][row][col]
                    )
                    .into());
                }
                positions[(axis * b + row) * l + col] = p;
            }
        }
        deltas.push(pos.rope_delta);
    }
    let ids_u32: Vec<u32> = ids.iter().flatten().map(|&i| i as u32).collect();
    let mask_u8: Vec<u8> = mask.iter().flatten().map(|&m| u8::from(m != 0)).collect();
    let inputs = VlmInputs {
        input_ids: Tensor::from_vec(ids_u32, (b, l), &cpu)?,
        attention_mask: Tensor::from_vec(mask_u8, (b, l), &cpu)?,
        position_ids: Tensor::from_vec(positions, (3, b, l), &cpu)?,
        pixel_values: Some(get("pixel_values")?.to_dtype(DType::F32)?),
        image_grids: grids,
    };
    Ok((inputs, deltas, real_tokens))
}

fn main() -> Result<()> {
    // As the `tailor` binary does.
    tailor_model::runtime::retain_freed_memory();
    let args = parse_args()?;
    let cpu = Device::Cpu;
    let start = Instant::now();
    let model = Qwen25Vl::load(&args.model, DType::F32, &cpu)?;
    let load_s = start.elapsed().as_secs_f64();
    let (inputs, deltas, prompt_tokens) = load_inputs(&args.model, &args.inputs)?;
    let (b, l) = inputs.input_ids.dims2()?;
    let n = args.new_tokens;
    let mut cfg = GenerationConfig::greedy(model.config(), n);
    cfg.eos_token_ids.clear(); // exactly n tokens per row, as transformers with eos_token_id=None

    let prefill = time_it(args.repeats, || {
        Ok(model.prefill(&inputs, &deltas, l + n)?.0)
    })?;
    let generate = time_it(args.repeats, || Ok(model.generate(&inputs, &deltas, &cfg)?))?;
    let generated: Vec<Vec<u32>> = generate.value.into_iter().map(|g| g.ids).collect();
    if generated.iter().any(|g| g.len() != n) {
        return Err("a row produced fewer tokens than asked".into());
    }
    // Decoding timed directly: the greedy loop that `generate` runs after its prefill (logits to
    // the host, argmax per row, one `decode_step` per new token), from the first token to the
    // last; it must reproduce `generate`'s ids.
    let decode = time_inner(args.repeats, || {
        let (mut logits, mut cache) = model.prefill(&inputs, &deltas, l + n)?;
        let start = Instant::now();
        let mut ids = vec![Vec::with_capacity(n); b];
        for step in 0..n {
            let next: Vec<u32> = logits.to_vec2::<f32>()?.iter().map(|r| argmax(r)).collect();
            for (row, &t) in ids.iter_mut().zip(&next) {
                row.push(t);
            }
            if step + 1 == n {
                break;
            }
            logits = model.decode_step(&next, &mut cache)?;
        }
        Ok((start.elapsed().as_secs_f64(), ids))
    })?;
    if decode.value != generated {
        return Err("the timed decoding loop and generate() chose different ids".into());
    }
    let decode_s = decode.best;

    let mut out = serde_json::json!({
        "side": "tailor",
        "threads": candle_core::utils::get_num_threads(),
        "batch": b,
        "prompt_len": l,
        "prompt_tokens": prompt_tokens,
        "new_tokens": n,
        "repeats": args.repeats,
        "load_s": load_s,
        "prefill_s": prefill.best,
        "prefill_median_s": prefill.median,
        "generate_s": generate.best,
        "generate_median_s": generate.median,
        "decode_s": decode_s,
        "decode_median_s": decode.median,
        "prefill_tok_s": prompt_tokens as f64 / prefill.best,
        "decode_tok_s": (b * (n - 1)) as f64 / decode_s,
        "generated": generated,
        "prefill_logits": prefill.value.to_vec2::<f32>()?,
    });
    if args.profile {
        out["profile"] = profile(&model, &inputs, &deltas, n, args.repeats)?;
    }
    println!("{out}");
    Ok(())
}

/// Time per phase: the vision tower, the rest of the prefill, and the parts of one decoding step.
fn profile(
    model: &Qwen25Vl,
    inputs: &VlmInputs,
    deltas: &[i64],
    n: usize,
    repeats: usize,
) -> Result<serde_json::Value> {
    let (b, l) = inputs.input_ids.dims2()?;
    let pixels = inputs.pixel_values.as_ref().ok_or("no images")?;
    let vision = time_it(repeats, || {
        Ok(model.vision().forward(pixels, &inputs.image_grids)?)
    })?;
    let embeds = time_it(repeats, || Ok(model.input_embeds(inputs)?))?;
    let prefill = time_it(repeats, || Ok(model.prefill(inputs, deltas, l + n)?))?;

    // One greedy decode run, timing each step's parts.
    let (mut logits, mut cache) = model.prefill(inputs, deltas, l + n)?;
    let hidden = model.config().text.hidden_size;
    let probe = Tensor::randn(0f32, 1f32, (b, 1, hidden), &Device::Cpu)?;
    let (mut step_s, mut head_s, mut choose_s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n - 1 {
        let start = Instant::now();
        let rows = logits.to_vec2::<f32>()?;
        let next: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
        choose_s.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        logits = model.decode_step(&next, &mut cache)?;
        step_s.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let head = model.logits(&probe)?.max(D::Minus1)?;
        head.to_vec2::<f32>()?;
        head_s.push(start.elapsed().as_secs_f64());
    }
    Ok(serde_json::json!({
        "prefill_s": prefill.best,
        "vision_tower_s": vision.best,
        "input_embeds_s": embeds.best,
        "decode_step_s": median(&mut step_s),
        "lm_head_step_s": median(&mut head_s),
        "choose_step_s": median(&mut choose_s),
    }))
}
