//! `tailor predict`: generate the catalog answer for images or catalog rows, one JSON line each.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use serde_json::json;
use tailor_data::chat::{ChatFormat, ParsedAnswer};
use tailor_data::prepare::{Processor, Prompt};
use tailor_data::{Catalog, ColumnMap, DataError, ImageRef, Row};
use tailor_model::sampling::Sampling;
use tailor_model::{AdapterFile, GenerationConfig, Qwen25Vl, VlmInputs};

use crate::args::{DeviceArg, DtypeArg, PredictArgs};
use crate::progress;

/// One thing to predict: where it came from (for the output line) and its row, or why it could
/// not be read.
struct Item {
    label: String,
    row: Option<usize>,
    source: std::result::Result<Row, DataError>,
}

/// The candle dtype of `--dtype`.
pub(crate) fn dtype(d: DtypeArg) -> DType {
    match d {
        DtypeArg::F32 => DType::F32,
        DtypeArg::Bf16 => DType::BF16,
        DtypeArg::F16 => DType::F16,
    }
}

/// Loads the model of `dir` with an optional adapter on top.
pub(crate) fn load_model(
    dir: &Path,
    adapter: Option<&Path>,
    dtype: DType,
    device: &Device,
) -> Result<Qwen25Vl> {
    let Some(adapter) = adapter else {
        return Qwen25Vl::load(dir, dtype, device)
            .with_context(|| format!("loading the model in {}", dir.display()));
    };
    let file = AdapterFile::read(adapter, device)
        .with_context(|| format!("reading the adapter in {}", adapter.display()))?;
    // The adapter's `modules_to_save` weights replace the base's as the model loads.
    let mut model = Qwen25Vl::load_with_saved(
        dir,
        dtype,
        device,
        &file.spec.modules_to_save,
        Some(&file.saved),
        false,
    )
    .with_context(|| format!("loading the model in {}", dir.display()))?;
    model
        .load_adapter(&file)
        .with_context(|| format!("attaching the adapter in {}", adapter.display()))?;
    Ok(model)
}

/// The generated answer of one row, or why its prompt could not be built.
pub(crate) type Answer = std::result::Result<(String, Vec<u32>), String>;

/// Generates the answers of `rows` (one batch, prompts left-padded together), in order.
pub(crate) fn answer_rows(
    processor: &Processor,
    model: &Qwen25Vl,
    generation: &GenerationConfig,
    format: &ChatFormat,
    image_column: &str,
    rows: &[std::result::Result<&Row, String>],
    by_path: bool,
) -> Result<Vec<Answer>> {
    let mut answers: Vec<Option<Answer>> = vec![None; rows.len()];
    let mut prompts: Vec<Prompt> = Vec::new();
    let mut slots = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        let prompt = row.clone().and_then(|row| {
            processor
                .prompt(row, format, image_column)
                .map_err(|e| describe(e, by_path))
        });
        match prompt {
            Ok(p) => {
                prompts.push(p);
                slots.push(k);
            }
            Err(e) => answers[k] = Some(Err(e)),
        }
    }
    if !prompts.is_empty() {
        let device = model.lm_head().device();
        let batch = processor.prompt_batch(&prompts)?;
        let inputs = VlmInputs::from_batch(&batch, device)?;
        let generated = model.generate(&inputs, &batch.tokens.rope_deltas, generation)?;
        let tok = processor.text.tokenizer();
        for (g, &k) in generated.iter().zip(&slots) {
            answers[k] = Some(Ok((tok.decode(&g.ids, true)?, g.ids.clone())));
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every row has an answer or an error"))
        .collect())
}

/// `tailor predict`
pub fn predict(a: PredictArgs) -> Result<()> {
    let dir = crate::hub::resolve_model(&a.model)?;
    let processor = Processor::from_dir(&dir, a.pixels.min_pixels, a.pixels.max_pixels)
        .with_context(|| format!("loading the processor of {}", dir.display()))?;
    let device = device(a.device)?;
    let model = load_model(&dir, a.adapter.as_deref(), dtype(a.dtype), &device)?;
    let mut generation = generate_config(&a, &dir, &model)?;
    // Answers start with a label seen in training when `tailor train` left its labels.
    if !a.no_constrain
        && let Some(labels) = crate::eval::read_labels(a.adapter.as_deref().unwrap_or(&dir))?
        && !labels.pairs.is_empty()
    {
        generation.prefix = Some(Arc::new(crate::eval::label_trie(
            processor.text.tokenizer(),
            &labels,
        )?));
    }
    let format = crate::data::prompt_format(&a.chat, "")?;
    let (items, image_column) = gather(&a)?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let bar = progress::bar((items.len() > 3).then_some(items.len()), "predict");
    for chunk in items.chunks(a.batch_size.max(1)) {
        let rows: Vec<std::result::Result<&Row, String>> = chunk
            .iter()
            .map(|item| item.source.as_ref().map_err(|e| e.to_string()))
            .collect();
        let answers = answer_rows(
            &processor,
            &model,
            &generation,
            &format,
            &image_column,
            &rows,
            !a.image.is_empty(),
        )?;
        let lines = answers.into_iter().zip(chunk).map(|(answer, item)| {
            let value = match answer {
                Ok((text, ids)) => {
                    let parsed = ParsedAnswer::parse(&text);
                    json!({
                        "image": item.label,
                        "text": text,
                        "token_ids": ids,
                        "category1": parsed.as_ref().map(|p| &p.category1),
                        "category2": parsed.as_ref().map(|p| &p.category2),
                        "description": parsed.as_ref().map(|p| &p.description),
                    })
                }
                Err(e) => json!({"image": item.label, "error": e}),
            };
            Some(with_row(value, item.row))
        });
        for line in lines.into_iter().flatten() {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// An image given by path has no row or column worth naming: say only the file and the problem.
fn describe(e: DataError, by_path: bool) -> String {
    match e {
        DataError::Row { path, reason, .. } if by_path => format!("{}: {reason}", path.display()),
        e => e.to_string(),
    }
}

fn with_row(mut v: serde_json::Value, row: Option<usize>) -> serde_json::Value {
    if let (Some(r), Some(obj)) = (row, v.as_object_mut()) {
        obj.insert("row".into(), r.into());
    }
    v
}

/// The candle device of `--device`.
pub(crate) fn device(d: DeviceArg) -> Result<Device> {
    Ok(match d {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::new_cuda(0)
            .context("--device cuda needs a build with `--features cuda` and an NVIDIA GPU")?,
    })
}

fn generate_config(a: &PredictArgs, dir: &Path, model: &Qwen25Vl) -> Result<GenerationConfig> {
    let seed = a.seed.unwrap_or(0);
    let mut generation = GenerationConfig::load(dir, model.config(), seed)?;
    generation.max_new_tokens = a.max_new_tokens;
    let sampling =
        a.temperature.is_some() || a.top_k.is_some() || a.top_p.is_some() || a.seed.is_some();
    generation.pipeline.sampling = if sampling {
        // Unset knobs take HF's library defaults, as `generate(do_sample=True)` does.
        Sampling::Sample {
            temperature: a.temperature.unwrap_or(1.0) as f32,
            top_k: a.top_k.unwrap_or(50),
            top_p: a.top_p.unwrap_or(1.0) as f32,
            seed,
        }
    } else {
        Sampling::Greedy
    };
    if let Some(p) = a.repetition_penalty {
        if p <= 0.0 {
            bail!("--repetition-penalty must be positive, got {p}");
        }
        generation.pipeline.repetition_penalty = p as f32;
    }
    Ok(generation)
}

/// The items in input order: `--image` paths, or the catalog rows (of one split when a split
/// file is given, in catalog order).
fn gather(a: &PredictArgs) -> Result<(Vec<Item>, String)> {
    if !a.image.is_empty() {
        let items = a
            .image
            .iter()
            .enumerate()
            .map(|(i, p)| Item {
                label: p.display().to_string(),
                row: None,
                source: Ok(Row::new(
                    i,
                    Arc::from(p.as_path()),
                    Some(ImageRef::Path(p.clone())),
                    vec![],
                )),
            })
            .collect();
        return Ok((items, "image".into()));
    }
    let Some(path) = &a.dataset else {
        bail!("give images with --image PATH … or a catalog with --dataset PATH");
    };
    let catalog = Catalog::open(path, &ColumnMap::deepfashion())?;
    let keep: Option<std::collections::HashSet<usize>> = match &a.split_file {
        None => None,
        Some(f) => Some(read_split(f, &a.split)?.into_iter().collect()),
    };
    let mut items = Vec::new();
    for (i, row) in catalog.rows(true)?.enumerate() {
        if keep.as_ref().is_some_and(|k| !k.contains(&i)) {
            continue;
        }
        let label = match &row {
            Ok(r) => r
                .image
                .as_ref()
                .map_or_else(|| format!("row {i}"), ImageRef::describe),
            Err(_) => format!("row {i}"),
        };
        let label = if label.starts_with('<') {
            format!("{}#{i}", path.display())
        } else {
            label
        };
        items.push(Item {
            label,
            row: Some(i),
            source: row,
        });
    }
    Ok((items, catalog.image_column().to_string()))
}

fn read_split(file: &Path, which: &str) -> Result<Vec<usize>> {
    let split = crate::data::read_split_file(file)?;
    Ok(match which {
        "train" => split.train,
        "valid" => split.valid,
        "test" => split.test,
        other => bail!("--split {other:?}: expected train, valid or test"),
    })
}
