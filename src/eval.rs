//! `tailor eval`: generate an answer for every sample of a catalog split, score it against the
//! reference answer, and write `metrics.json`, `predictions.jsonl` and `report.html`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tailor_data::chat::{ChatFormat, RECIPE_TARGET, Template};
use tailor_data::prepare::Processor;
use tailor_data::{Catalog, ColumnMap, Row};
use tailor_eval::{
    ConstrainedComparison, Labels, LogEntry, Metrics, ReportInput, ReportSample, RunMetrics,
    RunPrediction, Sample, render_report, score_sample,
};
use tailor_model::{GenerationConfig, PrefixTrie};
use tailor_text::Tokenizer;

use crate::args::EvalArgs;
use crate::predict::{answer_rows, device, dtype, load_model};

/// The training label pairs `tailor train` writes next to its adapter.
pub const LABELS_FILE: &str = "labels.json";

/// Writes the label pairs as a JSON list of `[category1, category2]`.
pub fn write_labels(path: &Path, pairs: &BTreeSet<(String, String)>) -> Result<()> {
    std::fs::write(path, serde_json::to_string(pairs)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The label pairs of an adapter or model folder, when `tailor train` wrote them.
pub fn read_labels(dir: &Path) -> Result<Option<Labels>> {
    let path = dir.join(LABELS_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let pairs: BTreeSet<(String, String)> = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{}: not a list of [category1, category2]", path.display()))?;
    Ok(Some(Labels { pairs }))
}

/// Gallery size in the report.
const GALLERY: usize = 12;

/// The token ids of the `category1/category2:` prefix as it starts an answer: the shortest
/// prefix of the tokenized answer whose text covers the label and its colon.
pub fn prefix_tokens(tok: &Tokenizer, c1: &str, c2: &str) -> Result<Vec<u32>> {
    let label = format!("{c1}/{c2}:");
    let ids = tok.encode(&format!("{label} x"))?;
    for k in 1..=ids.len() {
        if tok.decode(&ids[..k], false)?.starts_with(&label) {
            return Ok(ids[..k].to_vec());
        }
    }
    bail!("the tokenizer does not reproduce the label {label:?}")
}

/// The trie of every known label pair's prefix.
pub fn label_trie(tok: &Tokenizer, labels: &Labels) -> Result<PrefixTrie> {
    let seqs = labels
        .pairs
        .iter()
        .map(|(c1, c2)| prefix_tokens(tok, c1, c2))
        .collect::<Result<Vec<_>>>()?;
    Ok(PrefixTrie::new(&seqs))
}

/// The (category1, category2) pairs of the given catalog rows.
pub fn labels_of(catalog: &Catalog, rows: &HashSet<usize>) -> Result<Labels> {
    let map = catalog.map();
    let mut pairs = BTreeSet::new();
    for row in catalog.rows(false)? {
        let row = row?;
        if rows.contains(&row.index) {
            pairs.insert((
                row.require(&map.category1)?.trim().to_string(),
                row.require(&map.category2)?.trim().to_string(),
            ));
        }
    }
    Ok(Labels { pairs })
}

/// One evaluated model: its name, metrics and answers in sample order.
pub struct Run {
    /// Name in the report and the metrics file.
    pub name: String,
    /// Scores.
    pub metrics: Metrics,
    /// Generated answers (or the prompt error) per sample.
    pub answers: Vec<String>,
}

/// What an evaluation needs besides the model.
pub struct EvalData {
    /// Rows to evaluate, in catalog order.
    pub rows: Vec<Row>,
    /// Reference answers, one per row.
    pub references: Vec<String>,
    /// The catalog's image column.
    pub image_column: String,
    /// Labels seen in training (empty when unknown).
    pub labels: Labels,
}

/// Generates and scores one model over `data`.
#[allow(clippy::too_many_arguments)]
pub fn run_model(
    name: &str,
    processor: &Processor,
    model: &tailor_model::Qwen25Vl,
    generation: &GenerationConfig,
    format: &ChatFormat,
    data: &EvalData,
    batch_size: usize,
) -> Result<Run> {
    let bar = crate::progress::bar(Some(data.rows.len()), name);
    let started = Instant::now();
    let mut answers = Vec::with_capacity(data.rows.len());
    let mut generated_tokens = 0usize;
    for chunk in data.rows.chunks(batch_size.max(1)) {
        let rows: Vec<std::result::Result<&Row, String>> = chunk.iter().map(Ok).collect();
        for answer in answer_rows(
            processor,
            model,
            generation,
            format,
            &data.image_column,
            &rows,
            false,
        )? {
            match answer {
                Ok((text, ids)) => {
                    generated_tokens += ids.len();
                    answers.push(text);
                }
                Err(e) => answers.push(format!("<error: {e}>")),
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let samples: Vec<Sample> = data
        .references
        .iter()
        .zip(&answers)
        .map(|(r, p)| Sample {
            reference: r.clone(),
            prediction: p.clone(),
        })
        .collect();
    let mut metrics = tailor_eval::compute(&samples, &data.labels)?;
    metrics.throughput.samples_per_second = Some(data.rows.len() as f64 / secs);
    metrics.throughput.generated_tokens_per_second = Some(generated_tokens as f64 / secs);
    Ok(Run {
        name: name.to_string(),
        metrics,
        answers,
    })
}

/// Writes `metrics.json`, `predictions.jsonl` and `report.html` into `out`.
pub fn write_outputs(
    out: &Path,
    title: &str,
    data: &EvalData,
    runs: &[Run],
    constrained: Option<ConstrainedComparison>,
    training_log: Option<Vec<LogEntry>>,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let metrics: BTreeMap<&str, &Metrics> =
        runs.iter().map(|r| (r.name.as_str(), &r.metrics)).collect();
    let mut doc = serde_json::to_value(&metrics)?;
    if let (Some(c), Some(obj)) = (&constrained, doc.as_object_mut()) {
        obj.insert(
            "unconstrained".into(),
            serde_json::to_value(&c.unconstrained)?,
        );
    }
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    let mut lines = String::new();
    for (i, row) in data.rows.iter().enumerate() {
        let mut obj = json!({"row": row.index, "reference": data.references[i]});
        for run in runs {
            obj[&run.name] = json!(run.answers[i]);
        }
        lines.push_str(&obj.to_string());
        lines.push('\n');
    }
    std::fs::write(out.join("predictions.jsonl"), lines)?;

    let samples = data
        .rows
        .iter()
        .enumerate()
        .take(GALLERY)
        .map(|(i, row)| {
            let image = row
                .image(&data.image_column)
                .ok()
                .and_then(|img| img.bytes().ok().map(|b| b.into_owned()))
                .unwrap_or_default();
            ReportSample {
                image,
                reference: data.references[i].clone(),
                predictions: runs
                    .iter()
                    .map(|run| {
                        let sample = Sample {
                            reference: data.references[i].clone(),
                            prediction: run.answers[i].clone(),
                        };
                        RunPrediction {
                            run: run.name.clone(),
                            prediction: run.answers[i].clone(),
                            category2_correct: score_sample(&sample, &data.labels)
                                .is_some_and(|s| s.category2_correct),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let input = ReportInput {
        title: title.to_string(),
        runs: runs
            .iter()
            .map(|r| RunMetrics {
                name: r.name.clone(),
                metrics: r.metrics.clone(),
            })
            .collect(),
        training_log,
        constrained,
        samples,
    };
    std::fs::write(out.join("report.html"), render_report(&input))?;
    Ok(())
}

/// Reads a training log when there is one.
pub fn read_log(path: &Path) -> Result<Option<Vec<LogEntry>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)?;
    Ok(Some(
        LogEntry::parse_jsonl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    ))
}

/// Loads the rows to evaluate (one split when a split file is given), their references, and the
/// training labels (`labels_split`'s train rows).
pub fn eval_data(
    dataset: &Path,
    split: Option<(&Path, &str)>,
    labels_split: Option<&Path>,
    limit: Option<usize>,
) -> Result<EvalData> {
    let catalog = Catalog::open(dataset, &ColumnMap::deepfashion())?;
    let keep: Option<HashSet<usize>> = match split {
        Some((file, which)) => {
            let s = crate::data::read_split_file(file)?;
            Some(
                match which {
                    "train" => s.train,
                    "valid" => s.valid,
                    "test" => s.test,
                    other => bail!("--split {other:?}: expected train, valid or test"),
                }
                .into_iter()
                .collect(),
            )
        }
        None => None,
    };
    let target = Template::parse(RECIPE_TARGET)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut references: Vec<String> = Vec::new();
    for row in catalog.rows(true)? {
        let row = row?;
        if keep.as_ref().is_some_and(|k| !k.contains(&row.index)) {
            continue;
        }
        references.push(target.render(&row)?);
        rows.push(row);
    }
    // With a limit, samples spread evenly over the split (its head may be a few products only).
    if let Some(l) = limit.filter(|&l| l > 0 && l < rows.len()) {
        let n = rows.len();
        let picks: HashSet<usize> = (0..l).map(|i| i * n / l).collect();
        let (mut r, mut refs) = (Vec::with_capacity(l), Vec::with_capacity(l));
        for (i, (row, reference)) in rows.into_iter().zip(references).enumerate() {
            if picks.contains(&i) {
                r.push(row);
                refs.push(reference);
            }
        }
        (rows, references) = (r, refs);
    }
    if rows.is_empty() {
        bail!("{}: no rows to evaluate", dataset.display());
    }
    let labels = match labels_split {
        Some(file) => {
            let s = crate::data::read_split_file(file)?;
            labels_of(&catalog, &s.train.into_iter().collect())?
        }
        None => Labels::default(),
    };
    Ok(EvalData {
        rows,
        references,
        image_column: catalog.image_column().to_string(),
        labels,
    })
}

/// `tailor eval`
pub fn eval(a: EvalArgs) -> Result<()> {
    let dir = crate::hub::resolve_model(&a.model)?;
    let processor = Processor::from_dir(&dir, a.pixels.min_pixels, a.pixels.max_pixels)
        .with_context(|| format!("loading the processor of {}", dir.display()))?;
    let device = device(a.device)?;
    if let Some(adapter) = &a.adapter {
        // Fail before any generation when the adapter is unusable.
        tailor_model::AdapterFile::read(adapter, &device)
            .with_context(|| format!("reading the adapter in {}", adapter.display()))?;
    }
    let format = crate::data::prompt_format(&a.chat, "")?;
    // Training labels: the split file's train rows, else the adapter's own split.json.
    // Training labels: the split file's train rows, else what `tailor train` wrote beside the
    // adapter (or into a fully fine-tuned model folder).
    let mut data = eval_data(
        &a.dataset,
        a.split_file.as_deref().map(|f| (f, a.split.as_str())),
        a.split_file.as_deref(),
        a.limit,
    )?;
    if data.labels.pairs.is_empty()
        && let Some(labels) = read_labels(a.adapter.as_deref().unwrap_or(&dir))?
    {
        data.labels = labels;
    }
    let constrain = !a.no_constrain && !data.labels.pairs.is_empty();
    eprintln!(
        "evaluating {} samples; {} training labels known{}",
        data.rows.len(),
        data.labels.pairs.len(),
        if constrain {
            ", category prefix constrained to them"
        } else {
            ""
        }
    );
    let trie = if constrain {
        Some(Arc::new(label_trie(
            processor.text.tokenizer(),
            &data.labels,
        )?))
    } else {
        None
    };
    let mut plan: Vec<(&str, Option<&Path>)> = Vec::new();
    if a.compare_base && a.adapter.is_some() {
        plan.push(("base", None));
    }
    plan.push((
        if a.adapter.is_some() {
            "finetuned"
        } else {
            "model"
        },
        a.adapter.as_deref(),
    ));
    let mut runs = Vec::new();
    let mut constrained = None;
    let last = plan.len() - 1;
    for (i, (name, adapter)) in plan.into_iter().enumerate() {
        let model = load_model(&dir, adapter, dtype(a.dtype), &device)?;
        let mut generation = GenerationConfig::load(&dir, model.config(), 0)?;
        generation.max_new_tokens = a.max_new_tokens;
        generation.prefix = trie.clone();
        let run = run_model(
            name,
            &processor,
            &model,
            &generation,
            &format,
            &data,
            a.batch_size,
        )?;
        if i == last && trie.is_some() {
            // The effect of the constraint, measured on the same model.
            generation.prefix = None;
            let free = run_model(
                "unconstrained",
                &processor,
                &model,
                &generation,
                &format,
                &data,
                a.batch_size,
            )?;
            constrained = Some(ConstrainedComparison {
                unconstrained: free.metrics,
                constrained: run.metrics.clone(),
            });
        }
        print_summary(&run);
        runs.push(run);
    }
    let log = match &a.adapter {
        Some(d) => read_log(&d.join("log.jsonl"))?,
        None => None,
    };
    let title = format!("tailor evaluation — {}", a.dataset.display());
    write_outputs(&a.out, &title, &data, &runs, constrained, log)?;
    eprintln!(
        "wrote {}/{{metrics.json, predictions.jsonl, report.html}}",
        a.out.display()
    );
    Ok(())
}

/// One line per run on stderr.
pub fn print_summary(run: &Run) {
    let m = &run.metrics;
    eprintln!(
        "{:>10}: category1 {:.1}%  category2 {:.1}% (macro-F1 {:.1}%)  invalid {:.1}%  BLEU-4 {:.2}  ROUGE-L {:.2}",
        run.name,
        100.0 * m.category1_accuracy,
        100.0 * m.category2_accuracy,
        100.0 * m.category2_macro_f1,
        100.0 * m.invalid_rate,
        m.bleu4,
        m.rouge_l
    );
}
