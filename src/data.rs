//! `tailor data …` commands.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tailor_core::LabelMask;
use tailor_data::catalog::write::{self, Record, TextImages};
use tailor_data::chat::{ChatFormat, RECIPE_PROMPT, RECIPE_SYSTEM, RECIPE_TARGET};
use tailor_data::groups::{GroupIds, GroupKey};
use tailor_data::prepare::Processor;
use tailor_data::split::{SplitIndices, grouped_split, hf_split};
use tailor_data::stats::{self, Stats, StatsOptions, Summary};
use tailor_data::synth::{self, SynthConfig};
use tailor_data::{Catalog, ColumnMap};

use crate::args::{
    ChatArgs, DatasetArgs, GroupArgs, LabelMaskArg, PreviewArgs, PromptArgs, SplitArgs, StatsArgs,
    SynthArgs, SynthFormat,
};
use crate::progress;

fn open(a: &DatasetArgs) -> Result<Catalog> {
    let mut map = ColumnMap::deepfashion();
    map.image = a.image_column.clone();
    map.category1 = a.category1_column.clone();
    map.category2 = a.category2_column.clone();
    map.text = a.text_column.clone();
    Ok(match &a.dataset {
        Some(path) => Catalog::open(path, &map)?,
        None => Catalog::sample(),
    })
}

fn group_key(catalog: &Catalog, g: &GroupArgs) -> Result<Option<GroupKey>> {
    let Some(column) = &g.group_by else {
        return Ok(None);
    };
    catalog.require_column(column, "group-by")?;
    Ok(Some(GroupKey::new(column, g.group_pattern.as_deref())?))
}

fn chat_format(a: &ChatArgs) -> Result<ChatFormat> {
    prompt_format(&a.prompt, a.target.as_deref().unwrap_or(RECIPE_TARGET))
}

/// The chat templates from the prompt options (recipe defaults) and an answer template.
pub fn prompt_format(a: &PromptArgs, target: &str) -> Result<ChatFormat> {
    let system = if a.no_system {
        None
    } else {
        Some(a.system.as_deref().unwrap_or(RECIPE_SYSTEM))
    };
    Ok(ChatFormat::new(
        system,
        a.prompt.as_deref().unwrap_or(RECIPE_PROMPT),
        target,
    )?)
}

fn label_mask(a: LabelMaskArg) -> LabelMask {
    match a {
        LabelMaskArg::Assistant => LabelMask::Assistant,
        LabelMaskArg::Recipe => LabelMask::Recipe,
    }
}

/// `tailor data stats`
pub fn stats(a: StatsArgs) -> Result<()> {
    let catalog = open(&a.dataset)?;
    let key = group_key(&catalog, &a.group)?;
    let format = chat_format(&a.chat)?;
    let processor = Processor::load(
        a.model.model.as_deref(),
        a.model.pixels.min_pixels,
        a.model.pixels.max_pixels,
    )?;
    let bar = progress::bar(catalog.row_count().ok(), "stats");
    let s = stats::compute(
        &catalog,
        &StatsOptions {
            processor: &processor,
            format: &format,
            label_mask: label_mask(a.chat.label_mask),
            max_length: a.chat.max_length,
            group: key.as_ref(),
            test_size: a.sizes.test_size,
            valid_size: a.sizes.valid_size,
            seed: a.sizes.seed,
            skip_bad: a.dataset.skip_bad,
            on_row: &|| bar.inc(1),
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render_stats(&s));
    }
    Ok(())
}

fn summary_line(name: &str, s: &Summary) -> String {
    format!(
        "  {name:<24} mean {:>9.1}   p50 {:>7}   p95 {:>7}   max {:>7}   min {:>7}\n",
        s.mean, s.p50, s.p95, s.max, s.min
    )
}

fn distribution(out: &mut String, title: &str, counts: &[(String, usize)], total: usize) {
    let _ = writeln!(out, "\n{title} ({} values)", counts.len());
    let widest = counts
        .iter()
        .map(|c| c.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    for (value, n) in counts {
        let share = *n as f64 / total as f64;
        let bar = "#".repeat((share * 40.0).round() as usize);
        let _ = writeln!(
            out,
            "  {value:<widest$} {n:>7} {:>6.1}%  {bar}",
            share * 100.0
        );
    }
}

/// The human-readable report.
pub fn render_stats(s: &Stats) -> String {
    let mut out = String::new();
    let used = s.rows - s.skipped_rows;
    let _ = writeln!(out, "catalog    {} ({})", s.source, s.format);
    let _ = writeln!(out, "processor  {}", s.processor);
    let _ = writeln!(
        out,
        "pixels     min {} / max {}",
        s.min_pixels, s.max_pixels
    );
    let _ = writeln!(
        out,
        "rows       {} ({} used, {} skipped as unusable)",
        s.rows, used, s.skipped_rows
    );
    for e in &s.skipped_examples {
        let _ = writeln!(out, "  skipped: {e}");
    }
    let _ = writeln!(out, "\ncolumns");
    let _ = writeln!(
        out,
        "  {:<16} {:<12} {:>7} {:>9}  example",
        "name", "type", "nulls", "distinct"
    );
    for c in &s.columns {
        let distinct = format!("{}{}", c.distinct, if c.distinct_capped { "+" } else { "" });
        let _ = writeln!(
            out,
            "  {:<16} {:<12} {:>7} {:>9}  {}",
            c.name,
            c.kind,
            c.nulls,
            distinct,
            c.example.as_deref().unwrap_or("")
        );
    }
    distribution(&mut out, "category1", &s.category1, used);
    distribution(&mut out, "category2", &s.category2, used);
    let _ = writeln!(out, "\nimages");
    out.push_str(&summary_line("width (px)", &s.image_width));
    out.push_str(&summary_line("height (px)", &s.image_height));
    let common: Vec<String> = s
        .common_sizes
        .iter()
        .map(|(w, h, n)| format!("{w}×{h} ({n})"))
        .collect();
    let _ = writeln!(out, "  {:<24} {}", "most common sizes", common.join(", "));
    out.push_str(&summary_line("image tokens / image", &s.image_tokens));
    let t = &s.tokens;
    let _ = writeln!(out, "\ntokens");
    out.push_str(&summary_line("tokens / sample", &t.per_sample));
    out.push_str(&summary_line("labelled / sample", &t.labelled_per_sample));
    let _ = writeln!(out, "  {:<24} {}", "over --max-length", t.over_max_length);
    let _ = writeln!(
        out,
        "  {:<24} {} tokens, {} labelled (train split of {} rows)",
        "per epoch", t.tokens_per_epoch, t.labelled_per_epoch, s.split_sizes[0]
    );
    let [tr, va, te] = s.split_sizes;
    let _ = writeln!(
        out,
        "\nrandom split (recipe)  train {tr} / valid {va} / test {te}"
    );
    if let Some(g) = &s.groups {
        let pattern = g
            .pattern
            .as_deref()
            .map(|p| format!(" ~ {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\nproducts   {} groups by {}{}",
            g.groups, g.column, pattern
        );
        out.push_str(&summary_line("rows / product", &g.rows_per_group));
        let l = &g.random_split_leak;
        let _ = writeln!(
            out,
            "  random split leak        {} of {} products span splits ({} rows); {} valid and {} test rows show a product seen in train",
            l.leaked_groups,
            l.groups,
            l.leaked_rows,
            l.valid_rows_seen_in_train,
            l.test_rows_seen_in_train
        );
        match &g.grouped_split_sizes {
            Ok([tr, va, te]) => {
                let _ = writeln!(
                    out,
                    "  grouped split            train {tr} / valid {va} / test {te}, no product shared"
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  grouped split            impossible: {e}");
            }
        }
    }
    out
}

/// `tailor data split`
pub fn split(a: SplitArgs) -> Result<()> {
    let catalog = open(&a.dataset)?;
    let key = group_key(&catalog, &a.group)?;
    let split = compute_split(
        &catalog,
        key.as_ref(),
        (a.sizes.test_size, a.sizes.valid_size, a.sizes.seed),
        a.dataset.skip_bad,
    )?;
    write_split(&a.out, &split)?;
    eprintln!(
        "wrote {} (train {}, valid {}, test {})",
        a.out.join("split.json").display(),
        split.train.len(),
        split.valid.len(),
        split.test.len()
    );
    Ok(())
}

/// Train / valid / test row indices: `datasets.train_test_split` exactly, or grouped by the
/// product key when one is given. `sizes` is (test_size, valid_size, seed).
pub fn compute_split(
    catalog: &Catalog,
    key: Option<&GroupKey>,
    sizes: (f64, f64, u64),
    skip_bad: bool,
) -> Result<SplitIndices> {
    let (test_size, valid_size, seed) = sizes;
    Ok(match key {
        None => {
            let n = catalog.row_count()?;
            hf_split(n, test_size, valid_size, seed)?
        }
        Some(key) => {
            let bar = progress::bar(catalog.row_count().ok(), "groups");
            let mut ids = GroupIds::default();
            let mut skipped = 0usize;
            for row in catalog.rows(false)? {
                bar.inc(1);
                let k = row.and_then(|r| key.key(&r).map(str::to_string));
                match k {
                    Ok(k) => {
                        ids.push(&k);
                    }
                    Err(e) if skip_bad && e.is_row_error() => {
                        skipped += 1;
                        // Keep indices aligned; the row becomes a group of its own.
                        ids.push(&format!("\u{0}skipped-{}", ids.rows.len()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            bar.finish_and_clear();
            if skipped > 0 {
                eprintln!(
                    "tailor: {skipped} rows without a readable group key were kept as their own groups"
                );
            }
            grouped_split(&ids.rows, test_size, valid_size, seed)?
        }
    })
}

/// Reads a `split.json` written by `tailor data split` (or `tailor train`).
pub fn read_split_file(file: &Path) -> Result<SplitIndices> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a split.json", file.display()))
}

/// Writes `dir/split.json` atomically (temporary file, then rename), so a crash never leaves a
/// half-written split that a later run would read.
fn write_split(dir: &Path, split: &SplitIndices) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("split.json");
    let tmp = dir.join(".split.json.tmp");
    let json = serde_json::to_string(split)?;
    std::fs::write(&tmp, json + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `tailor data preview`
pub fn preview(a: PreviewArgs) -> Result<()> {
    let catalog = open(&a.dataset)?;
    let format = chat_format(&a.chat)?;
    let p = Processor::load(
        a.model.model.as_deref(),
        a.model.pixels.min_pixels,
        a.model.pixels.max_pixels,
    )?;
    let mask = label_mask(a.chat.label_mask);
    let tok = p.text.tokenizer();
    let mut shown = 0;
    for row in catalog.rows(true)?.skip(a.from) {
        if shown == a.rows {
            break;
        }
        let row = match row {
            Ok(r) => r,
            Err(e) if a.dataset.skip_bad && e.is_row_error() => {
                eprintln!("tailor: skipped: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (batch, _) = p.batch(
            std::slice::from_ref(&row),
            &format,
            catalog.image_column(),
            mask,
            None,
        )?;
        let ids = &batch.tokens.input_ids;
        let labels = &batch.tokens.labels;
        let grid = batch.image_grids[0];
        let text = tok.decode(ids, false)?;
        let labelled: Vec<u32> = ids
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l >= 0)
            .map(|(i, _)| *i)
            .collect();
        println!("── row {} ──", row.index);
        println!(
            "image grid {}×{}×{} → {} patches, {} image tokens; {} tokens, {} labelled",
            grid.t,
            grid.h,
            grid.w,
            grid.patches(),
            grid.llm_tokens(p.image.config().merge_size),
            ids.len(),
            labelled.len()
        );
        println!(
            "{}",
            collapse_image_pads(&text, &tok.special_strings().image_pad)
        );
        println!("labels: {:?}", tok.decode(&labelled, false)?);
        shown += 1;
    }
    Ok(())
}

/// Shows a run of N image-pad tokens as one `<|image_pad|>×N`.
fn collapse_image_pads(text: &str, pad: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(pad) {
        out.push_str(&rest[..i]);
        let mut n = 0;
        while rest[i + n * pad.len()..].starts_with(pad) {
            n += 1;
        }
        let _ = write!(out, "{pad}×{n}");
        rest = &rest[i + n * pad.len()..];
    }
    out.push_str(rest);
    out
}

/// `tailor data synth`
/// A synthetic row as a catalog record: the recipe's columns, plus the generic `caption` (shape,
/// colour, pattern; never a category or gender word) when asked.
pub fn synth_record(r: synth::SynthRow, caption: bool) -> Record {
    let ext = if r.image.starts_with(&[0xFF, 0xD8]) {
        "jpg"
    } else {
        "png"
    };
    let mut columns = vec![
        ("category1".into(), Some(r.category1)),
        ("category2".into(), Some(r.category2)),
        ("text".into(), Some(r.text)),
        ("item_ID".into(), Some(r.item_id.clone())),
    ];
    if caption {
        columns.push(("caption".into(), Some(r.caption)));
    }
    Record {
        image_name: format!("{}.{ext}", r.item_id),
        image: r.image,
        columns,
    }
}

/// `tailor data synth`.
pub fn synth(a: SynthArgs) -> Result<()> {
    let mut cfg = SynthConfig::sample();
    if let Some(seed) = a.seed {
        cfg.seed = seed;
    }
    cfg.width = a.width.unwrap_or(cfg.width);
    cfg.height = a.height.unwrap_or(cfg.height);
    cfg.validate()?;
    let per_product = synth::len(&cfg) / cfg.products.max(1);
    let rows = a.rows.unwrap_or_else(|| synth::len(&cfg));
    if rows == 0 {
        bail!("--rows must be at least 1");
    }
    cfg.products = rows.div_ceil(per_product.max(1));
    let format = match a.format {
        Some(f) => f,
        None => match a.out.extension().and_then(|e| e.to_str()) {
            Some("parquet") => SynthFormat::Parquet,
            Some("jsonl") => SynthFormat::Jsonl,
            Some("csv") => SynthFormat::Csv,
            _ => SynthFormat::Imagefolder,
        },
    };
    let bar = progress::bar(Some(rows), "synth");
    let records = synth::generate(&cfg).take(rows).map(|r| {
        bar.inc(1);
        synth_record(r, a.caption)
    });
    let n = match format {
        SynthFormat::Parquet => write::write_parquet(&a.out, records)?,
        SynthFormat::Jsonl => write::write_jsonl(&a.out, records, TextImages::Base64, "image")?,
        SynthFormat::Csv => write::write_csv(&a.out, records, TextImages::Base64, "image")?,
        SynthFormat::Imagefolder => write::write_imagefolder(&a.out, records)?,
    };
    bar.finish_and_clear();
    eprintln!("wrote {n} rows to {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pad_runs_collapse() {
        assert_eq!(collapse_image_pads("a<p><p><p>b<p>", "<p>"), "a<p>×3b<p>×1");
        assert_eq!(collapse_image_pads("none", "<p>"), "none");
    }
}
