//! `tailor data stats`: one streaming pass over a catalog that reports what the data costs before
//! any training — rows, columns, categories, image sizes and tokens, text tokens and labels, and
//! how much the recipe's random split leaks products across splits.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use tailor_core::LabelMask;

use crate::catalog::Catalog;
use crate::chat::ChatFormat;
use crate::error::{DataError, Result};
use crate::groups::{GroupIds, GroupKey};
use crate::prepare::Processor;
use crate::split::{LeakReport, grouped_split, hf_split, leaked_groups};

/// Distinct values tracked per column before the count is reported as a lower bound.
const DISTINCT_CAP: usize = 10_000;
/// Bad-row messages kept for the report.
const KEEP_ERRORS: usize = 5;

/// What the pass computes and how.
pub struct StatsOptions<'a> {
    /// Processor for image grids and token counts.
    pub processor: &'a Processor,
    /// Chat templates.
    pub format: &'a ChatFormat,
    /// Label rule for labelled-token counts.
    pub label_mask: LabelMask,
    /// Samples longer than this are counted as skipped.
    pub max_length: Option<usize>,
    /// Product grouping, when requested.
    pub group: Option<&'a GroupKey>,
    /// Recipe split settings (for tokens per epoch and the leak).
    pub test_size: f64,
    /// Second split fraction.
    pub valid_size: f64,
    /// Split seed.
    pub seed: u64,
    /// Skip unusable rows instead of failing.
    pub skip_bad: bool,
    /// Called after each row (progress).
    pub on_row: &'a dyn Fn(),
}

/// Order statistics of a count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: u64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 95th percentile (nearest rank).
    pub p95: u64,
    /// Largest.
    pub max: u64,
    /// Sum.
    pub total: u64,
}

impl Summary {
    /// Summarises values (all zeros when empty).
    pub fn of(mut v: Vec<u64>) -> Summary {
        v.sort_unstable();
        let n = v.len();
        let rank = |q: f64| {
            if n == 0 {
                0
            } else {
                v[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
            }
        };
        let total: u64 = v.iter().sum();
        Summary {
            count: n,
            mean: if n == 0 { 0.0 } else { total as f64 / n as f64 },
            min: v.first().copied().unwrap_or(0),
            p50: rank(0.5),
            p95: rank(0.95),
            max: v.last().copied().unwrap_or(0),
            total,
        }
    }
}

/// One column's summary.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnStats {
    /// Name.
    pub name: String,
    /// Storage type.
    pub kind: String,
    /// Null (missing) values.
    pub nulls: usize,
    /// Distinct values (a lower bound when `distinct_capped`).
    pub distinct: usize,
    /// True when more than the tracked number of distinct values exist.
    pub distinct_capped: bool,
    /// The first non-null value, shortened.
    pub example: Option<String>,
}

/// Token counts under the processor.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStats {
    /// Tokens per sample (text + image tokens).
    pub per_sample: Summary,
    /// Labelled tokens per sample.
    pub labelled_per_sample: Summary,
    /// Samples over `max_length` (they would be skipped in training).
    pub over_max_length: usize,
    /// Tokens in one epoch over the recipe split's train rows.
    pub tokens_per_epoch: u64,
    /// Labelled tokens in one epoch.
    pub labelled_per_epoch: u64,
}

/// Product groups.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    /// The group column.
    pub column: String,
    /// The regex, if any.
    pub pattern: Option<String>,
    /// Distinct groups.
    pub groups: usize,
    /// Rows per group.
    pub rows_per_group: Summary,
    /// How the recipe's random split lets products cross splits.
    pub random_split_leak: LeakReport,
    /// Sizes of the grouped split (train, valid, test), or why it failed.
    pub grouped_split_sizes: std::result::Result<[usize; 3], String>,
}

/// Everything `tailor data stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The catalog path.
    pub source: String,
    /// Its layout.
    pub format: String,
    /// The processor used.
    pub processor: String,
    /// Processor `min_pixels`.
    pub min_pixels: u64,
    /// Processor `max_pixels`.
    pub max_pixels: u64,
    /// Rows in the catalog.
    pub rows: usize,
    /// Rows that were skipped as unusable.
    pub skipped_rows: usize,
    /// The first skipped rows' errors.
    pub skipped_examples: Vec<String>,
    /// Per-column summaries.
    pub columns: Vec<ColumnStats>,
    /// category1 counts, most frequent first.
    pub category1: Vec<(String, usize)>,
    /// category2 counts, most frequent first.
    pub category2: Vec<(String, usize)>,
    /// Original image widths.
    pub image_width: Summary,
    /// Original image heights.
    pub image_height: Summary,
    /// The most common original sizes `(width, height, rows)`.
    pub common_sizes: Vec<(u32, u32, usize)>,
    /// LLM image tokens per image after `smart_resize`.
    pub image_tokens: Summary,
    /// Text and label token counts.
    pub tokens: TokenStats,
    /// Sizes of the recipe's random split (train, valid, test).
    pub split_sizes: [usize; 3],
    /// Product groups, when `--group-by` was given.
    pub groups: Option<GroupStats>,
}

#[derive(Default)]
struct ColumnAcc {
    nulls: usize,
    distinct: HashSet<String>,
    capped: bool,
    example: Option<String>,
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

fn ranked(counts: HashMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Runs the pass. Image headers are read, pixels are not decoded.
pub fn compute(catalog: &Catalog, opts: &StatsOptions<'_>) -> Result<Stats> {
    let map = catalog.map();
    let image_column = catalog.image_column().to_string();
    let mut columns: BTreeMap<String, ColumnAcc> = BTreeMap::new();
    let mut cat1 = HashMap::new();
    let mut cat2 = HashMap::new();
    let mut widths = Vec::new();
    let mut heights = Vec::new();
    let mut sizes: HashMap<(u32, u32), usize> = HashMap::new();
    let mut image_tokens = Vec::new();
    // Per source row: tokens and labelled tokens (None when skipped).
    let mut per_row: Vec<Option<(u64, u64)>> = Vec::new();
    let mut over_max = 0usize;
    let mut groups = GroupIds::default();
    let mut skipped = 0usize;
    let mut examples = Vec::new();
    let merge = opts.processor.image.config().merge_size;

    for row in catalog.rows(true)? {
        (opts.on_row)();
        let measured = row.and_then(|row| {
            let group = opts
                .group
                .map(|g| g.key(&row).map(str::to_string))
                .transpose()?;
            let c1 = row.require(&map.category1)?.to_string();
            let c2 = row.require(&map.category2)?.to_string();
            let (w, h, grid) = opts.processor.grid_of(&row, &image_column)?;
            let enc = opts
                .processor
                .encode(&row, opts.format, grid, opts.label_mask)?;
            Ok((row, group, c1, c2, w, h, grid, enc))
        });
        let (row, group, c1, c2, w, h, grid, enc) = match measured {
            Ok(m) => m,
            Err(e) if opts.skip_bad && e.is_row_error() => {
                skipped += 1;
                if examples.len() < KEEP_ERRORS {
                    examples.push(e.to_string());
                }
                per_row.push(None);
                if opts.group.is_some() {
                    // A skipped row still occupies its index; give it a group of its own.
                    groups.push(&format!("\u{0}skipped-{}", per_row.len()));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        for (name, value) in row.columns() {
            let acc = columns.entry(name.to_string()).or_default();
            match value {
                None => acc.nulls += 1,
                Some(v) => {
                    if acc.example.is_none() {
                        acc.example = Some(shorten(v));
                    }
                    if acc.distinct.len() < DISTINCT_CAP {
                        acc.distinct.insert(v.to_string());
                    } else if !acc.distinct.contains(v) {
                        acc.capped = true;
                    }
                }
            }
        }
        *cat1.entry(c1).or_insert(0) += 1;
        *cat2.entry(c2).or_insert(0) += 1;
        widths.push(w as u64);
        heights.push(h as u64);
        *sizes.entry((w, h)).or_insert(0) += 1;
        image_tokens.push(grid.llm_tokens(merge) as u64);
        let len = enc.input_ids.len();
        if opts.max_length.is_some_and(|m| len > m) {
            over_max += 1;
        }
        let labelled = enc.labels.iter().filter(|&&l| l >= 0).count();
        per_row.push(Some((len as u64, labelled as u64)));
        if let Some(g) = group {
            groups.push(&g);
        }
    }
    let n = per_row.len();
    if n == 0 {
        return Err(DataError::Empty {
            path: catalog.origin().to_path_buf(),
        });
    }
    if skipped == n {
        return Err(DataError::Invalid(format!(
            "{}: all {n} rows are unusable; first error: {}",
            catalog.origin().display(),
            examples.first().map_or("", String::as_str)
        )));
    }
    let split = hf_split(n, opts.test_size, opts.valid_size, opts.seed)?;
    let in_epoch: Vec<(u64, u64)> = split
        .train
        .iter()
        .filter_map(|&i| per_row[i])
        .filter(|(len, _)| opts.max_length.is_none_or(|m| *len as usize <= m))
        .collect();
    let used: Vec<(u64, u64)> = per_row.iter().flatten().copied().collect();
    let tokens = TokenStats {
        per_sample: Summary::of(used.iter().map(|t| t.0).collect()),
        labelled_per_sample: Summary::of(used.iter().map(|t| t.1).collect()),
        over_max_length: over_max,
        tokens_per_epoch: in_epoch.iter().map(|t| t.0).sum(),
        labelled_per_epoch: in_epoch.iter().map(|t| t.1).sum(),
    };
    let group_stats = opts.group.map(|key| {
        let mut per_group: HashMap<u32, u64> = HashMap::new();
        for (i, g) in groups.rows.iter().enumerate() {
            if per_row[i].is_some() {
                *per_group.entry(*g).or_insert(0) += 1;
            }
        }
        GroupStats {
            column: key.column.clone(),
            pattern: key.pattern.as_ref().map(|p| p.as_str().to_string()),
            groups: per_group.len(),
            rows_per_group: Summary::of(per_group.into_values().collect()),
            random_split_leak: leaked_groups(&split, &groups.rows),
            grouped_split_sizes: grouped_split(
                &groups.rows,
                opts.test_size,
                opts.valid_size,
                opts.seed,
            )
            .map(|s| [s.train.len(), s.valid.len(), s.test.len()])
            .map_err(|e| e.to_string()),
        }
    });
    let mut common: Vec<(u32, u32, usize)> =
        sizes.into_iter().map(|((w, h), c)| (w, h, c)).collect();
    common.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0, a.1).cmp(&(b.0, b.1))));
    common.truncate(5);
    let cfg = opts.processor.image.config();
    Ok(Stats {
        source: catalog.origin().display().to_string(),
        format: catalog.format().to_string(),
        processor: opts.processor.source.to_string(),
        min_pixels: cfg.min_pixels,
        max_pixels: cfg.max_pixels,
        rows: n,
        skipped_rows: skipped,
        skipped_examples: examples,
        columns: catalog
            .columns()
            .iter()
            .map(|c| {
                let acc = columns.remove(&c.name).unwrap_or_default();
                ColumnStats {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    nulls: acc.nulls,
                    distinct: acc.distinct.len(),
                    distinct_capped: acc.capped,
                    example: acc.example,
                }
            })
            .filter(|c| c.name != image_column)
            .collect(),
        category1: ranked(cat1),
        category2: ranked(cat2),
        image_width: Summary::of(widths),
        image_height: Summary::of(heights),
        common_sizes: common,
        image_tokens: Summary::of(image_tokens),
        tokens,
        split_sizes: [split.train.len(), split.valid.len(), split.test.len()],
        groups: group_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let s = Summary::of((1..=20).collect());
        assert_eq!((s.min, s.p50, s.p95, s.max, s.total), (1, 10, 19, 20, 210));
        assert_eq!(s.mean, 10.5);
        let e = Summary::of(vec![]);
        assert_eq!((e.count, e.max), (0, 0));
    }

    #[test]
    fn sample_stats_are_complete_and_deterministic() {
        let cat = Catalog::sample();
        let p = Processor::embedded(None, None).unwrap();
        let key = GroupKey::new("item_ID", Some(r"id_(\d+)")).unwrap();
        let run = || {
            compute(
                &cat,
                &StatsOptions {
                    processor: &p,
                    format: &ChatFormat::recipe(),
                    label_mask: LabelMask::Assistant,
                    max_length: None,
                    group: Some(&key),
                    test_size: 0.2,
                    valid_size: 0.5,
                    seed: 42,
                    skip_bad: false,
                    on_row: &|| {},
                },
            )
            .unwrap()
        };
        let s = run();
        assert_eq!(s.rows, cat.row_count().unwrap());
        assert_eq!(s.split_sizes.iter().sum::<usize>(), s.rows);
        assert!(s.category2.len() >= 8);
        assert!(s.tokens.labelled_per_sample.min > 0);
        assert!(s.tokens.per_sample.min > s.tokens.labelled_per_sample.max);
        let g = s.groups.as_ref().unwrap();
        // Several views per product: the random split must leak some products.
        assert!(g.groups < s.rows && g.random_split_leak.leaked_groups > 0);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&run()).unwrap()
        );
    }
}
