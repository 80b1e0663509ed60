//! `tailor train` and `tailor export`.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tailor_data::chat::{ChatFormat, RECIPE_PROMPT, RECIPE_SYSTEM, RECIPE_TARGET};
use tailor_data::groups::GroupKey;
use tailor_data::prepare::Processor;
use tailor_data::{Catalog, ColumnMap};
use tailor_model::export::export_merged;
use tailor_model::{AdapterFile, Checkpoint, InitFrom, Qwen25Vl, expected_tensors};
use tailor_train::checkpoint::latest_checkpoint;
use tailor_train::config::TrainConfig;
use tailor_train::data::CatalogSource;
use tailor_train::trainer::{Event, FullWeights, Trainable, check_writable, train as run_training};

use crate::args::{ExportArgs, TrainArgs};

/// Formats a count with thousands separators, as PEFT's summary does.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rows of the train and valid splits, read once (image bytes stay encoded).
fn load_rows(
    catalog: &Catalog,
    train: &HashSet<usize>,
    valid: &HashSet<usize>,
) -> Result<(Vec<tailor_data::Row>, Vec<tailor_data::Row>)> {
    let bar = crate::progress::bar(Some(train.len() + valid.len()), "reading");
    let (mut t, mut v) = (Vec::new(), Vec::new());
    for row in catalog.rows(true)? {
        let row = row?;
        if train.contains(&row.index) {
            t.push(row);
            bar.inc(1);
        } else if valid.contains(&row.index) {
            v.push(row);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    // Catalog order, which is also the split's index order once sorted.
    Ok((t, v))
}

/// `tailor train --config FILE [--set k=v]… [--resume [latest|DIR]]`.
pub fn train(a: TrainArgs) -> Result<()> {
    // First, before any thread exists (see `interrupt`).
    let stop = crate::interrupt::install().context("installing the Ctrl-C handling")?;
    let cfg = TrainConfig::from_file(&a.config, &a.set)?;
    for note in cfg.notes() {
        eprintln!("tailor: note: {note}");
    }
    let out = cfg.training.output_dir.clone();
    check_writable(&out)?;
    let resume = match a.resume.as_deref() {
        None => None,
        Some("latest") => Some(latest_checkpoint(&out)?),
        Some(dir) => Some(PathBuf::from(dir)),
    };

    let model_dir = crate::hub::resolve_model(&cfg.model.name_or_path)?;
    let processor = Processor::from_dir(&model_dir, cfg.model.min_pixels, cfg.model.max_pixels)
        .with_context(|| format!("loading the processor of {}", model_dir.display()))?;
    let d = &cfg.data;
    let format = ChatFormat::new(
        Some(d.system_message.as_deref().unwrap_or(RECIPE_SYSTEM)),
        d.prompt.as_deref().unwrap_or(RECIPE_PROMPT),
        d.target.as_deref().unwrap_or(RECIPE_TARGET),
    )?;
    let dataset = crate::hub::resolve_dataset(&d.dataset)?;
    let catalog = Catalog::open(&dataset, &ColumnMap::deepfashion())?;
    let split = match &d.split_file {
        Some(file) => crate::data::read_split_file(file)?,
        None => {
            let key = match &d.group_by {
                Some(col) => {
                    catalog.require_column(col, "group_by")?;
                    Some(GroupKey::new(col, d.group_pattern.as_deref())?)
                }
                None => None,
            };
            crate::data::compute_split(
                &catalog,
                key.as_ref(),
                (d.test_size, d.valid_size, d.seed),
                false,
            )?
        }
    };
    std::fs::write(
        out.join("split.json"),
        serde_json::to_string(&split)? + "\n",
    )
    .with_context(|| format!("writing {}", out.join("split.json").display()))?;
    let train_ids: HashSet<usize> = split.train.iter().copied().collect();
    let valid_ids: HashSet<usize> = split.valid.iter().copied().collect();
    let (train_rows, valid_rows) = load_rows(&catalog, &train_ids, &valid_ids)?;
    let image_column = catalog.image_column().to_owned();
    // The label pairs seen in training: `predict` and `eval` constrain answers to them.
    let map = catalog.map();
    let mut labels = std::collections::BTreeSet::new();
    for row in &train_rows {
        if let (Some(c1), Some(c2)) = (row.get(&map.category1), row.get(&map.category2)) {
            labels.insert((c1.trim().to_string(), c2.trim().to_string()));
        }
    }
    crate::eval::write_labels(&out.join(crate::eval::LABELS_FILE), &labels)?;
    let (train_set, report) = CatalogSource::new(
        train_rows,
        &processor,
        &format,
        &image_column,
        d.label_mask,
        d.max_length,
    )?;
    let (valid_set, valid_report) = CatalogSource::new(
        valid_rows,
        &processor,
        &format,
        &image_column,
        d.label_mask,
        d.max_length,
    )?;
    for (name, r) in [("train", &report), ("valid", &valid_report)] {
        eprintln!(
            "{name}: {} samples, {} tokens, {} labelled{}",
            r.kept,
            r.tokens,
            r.label_tokens,
            if r.too_long.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} longer than max_length {} left out (rows {})",
                    r.too_long.len(),
                    d.max_length.unwrap_or(0),
                    r.too_long
                        .iter()
                        .take(5)
                        .map(|(row, n)| format!("{row}: {n} tokens"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }

    let device = crate::predict::device(a.device)?;
    let dtype = cfg.resolved_dtype().to_candle();
    // LoRA when the config has a [lora] section, else every weight (full fine-tuning).
    let (model, trainable): (Qwen25Vl, Box<dyn Trainable>) = match cfg.lora_spec() {
        Some(spec) => {
            let mut model = Qwen25Vl::load_with_saved(
                &model_dir,
                dtype,
                &device,
                &spec.modules_to_save,
                None,
                true,
            )
            .with_context(|| format!("loading the model in {}", model_dir.display()))?;
            let adapter = model.attach_lora(&spec, InitFrom::Seed(cfg.training.seed))?;
            (model, Box::new(adapter))
        }
        None => {
            let (model, vars) = Qwen25Vl::load_trainable(&model_dir, dtype, &device)
                .with_context(|| format!("loading the model in {}", model_dir.display()))?;
            eprintln!("no [lora] section: training every weight of the model");
            (
                model,
                Box::new(FullWeights {
                    vars,
                    source_dir: model_dir.clone(),
                }),
            )
        }
    };
    let checkpoint = Checkpoint::open(&model_dir)?;
    let base: usize = expected_tensors(model.config(), !checkpoint.ties_lm_head(model.config()))
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let trainable_count = trainable.num_params();
    let all = if cfg.lora.is_some() {
        base + trainable_count
    } else {
        base
    };
    // PEFT's `print_trainable_parameters` line.
    eprintln!(
        "trainable params: {} || all params: {} || trainable%: {:.4}",
        thousands(trainable_count),
        thousands(all),
        100.0 * trainable_count as f64 / all as f64
    );
    std::fs::copy(&a.config, out.join("tailor_config.toml"))
        .with_context(|| format!("copying {} into {}", a.config.display(), out.display()))?;

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} steps {msg} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_prefix("train");
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A hidden bar swallows `println`; without a terminal, lines go to stderr directly.
    let say = |line: &str| {
        if quiet {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut on = |e: Event| match e {
        Event::Started {
            steps, from_step, ..
        } => {
            bar.set_length(steps.max_steps);
            bar.set_position(from_step);
            bar.reset_eta();
            eprintln!(
                "{} updates ({} epochs × {} updates of {} micro-batches of {}){}",
                steps.max_steps,
                steps.epochs,
                steps.updates_per_epoch,
                steps.accumulation,
                cfg.training.per_device_train_batch_size,
                if from_step > 0 {
                    format!(", resuming after update {from_step}")
                } else {
                    String::new()
                }
            );
        }
        Event::Update {
            step,
            loss,
            grad_norm,
            lr,
        } => {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} |g| {grad_norm:.3}"));
        }
        Event::Logged(entry) => say(&entry.to_string()),
        Event::Evaluating { batches } => {
            bar.set_message(format!("evaluating ({batches} batches)"));
        }
        Event::Saved(path) => say(&format!("saved {}", path.display())),
        Event::Interrupted { step } => say(&format!(
            "stopped after update {step}; resume with --resume latest"
        )),
    };
    let outcome = run_training(
        &model,
        trainable.as_ref(),
        &train_set,
        Some(&valid_set),
        &cfg.settings(),
        resume.as_deref(),
        &stop,
        &mut on,
    )?;
    bar.finish_and_clear();
    if outcome.completed {
        // Full fine-tuning leaves a whole model folder, LoRA an adapter.
        let what = if cfg.lora.is_some() {
            "adapter"
        } else {
            "model"
        };
        match &outcome.best_model_checkpoint {
            Some(best) => eprintln!(
                "done: {} updates; the best {what} ({}) is in {}",
                outcome.global_step,
                best.display(),
                out.display()
            ),
            None => eprintln!(
                "done: {} updates; the {what} is in {}",
                outcome.global_step,
                out.display()
            ),
        }
    }
    Ok(())
}

/// Parses sizes such as `5GB`, `500MB`, `300KB` or a byte count (decimal units, as transformers).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = [("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)]
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n.trim().to_string(), *m)))
        .unwrap_or((t.clone(), 1.0));
    let v: f64 = num
        .parse()
        .with_context(|| format!("--max-shard-size {s:?}: expected e.g. 5GB or 500MB"))?;
    if v <= 0.0 {
        bail!("--max-shard-size must be positive, got {s:?}");
    }
    Ok((v * mult) as u64)
}

/// `tailor export --model DIR --adapter DIR --out DIR [--dtype bf16]`.
pub fn export(a: ExportArgs) -> Result<()> {
    let model_dir = crate::hub::resolve_model(&a.model)?;
    let adapter = AdapterFile::read(&a.adapter, &candle_core::Device::Cpu)
        .with_context(|| format!("reading the adapter in {}", a.adapter.display()))?;
    if a.out == model_dir || a.out.join("config.json") == model_dir.join("config.json") {
        bail!("--out must differ from the model folder");
    }
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!("--out {} exists and is not empty", a.out.display());
    }
    let dtype = match a.dtype {
        crate::args::DtypeArg::F32 => DType::F32,
        crate::args::DtypeArg::Bf16 => DType::BF16,
        crate::args::DtypeArg::F16 => DType::F16,
    };
    let bar = crate::progress::bar(None, "merging");
    let report = export_merged(
        &model_dir,
        &adapter,
        &a.out,
        dtype,
        parse_size(&a.max_shard_size)?,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    // The training labels travel with the merged model, so `predict` constrains it as it did
    // the adapter.
    let labels = a.adapter.join(crate::eval::LABELS_FILE);
    if labels.is_file() {
        std::fs::copy(&labels, a.out.join(crate::eval::LABELS_FILE))
            .with_context(|| format!("copying {}", labels.display()))?;
    }
    eprintln!(
        "wrote {} ({} tensors, {} merged with the adapter, {} shard{}, {:.1} MB)",
        a.out.display(),
        report.tensors,
        report.merged,
        report.shards.len(),
        if report.shards.len() == 1 { "" } else { "s" },
        report.total_bytes as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_format() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("300kb").unwrap(), 300_000);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("-1GB").is_err() && parse_size("lots").is_err());
        assert_eq!(thousands(1_843_200), "1,843,200");
        assert_eq!(thousands(12), "12");
    }
}
