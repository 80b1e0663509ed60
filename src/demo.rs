//! `tailor demo`: the whole product on a fresh machine with no download — a synthetic catalog,
//! the small base model shipped in `assets/demo-base/` (pretrained by tailor on generic captions
//! that never name a category), a split grouped by product, a LoRA fine-tune with the recipe's
//! settings scaled to the demo, the base and the fine-tuned model evaluated side by side on
//! held-out products, a few predictions and the HTML report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tailor_data::catalog::write::write_parquet;
use tailor_data::synth::{self, ImageFormat, SynthConfig};

use crate::args::{DemoArgs, DeviceArg, DtypeArg, EvalArgs, PixelArgs, PromptArgs, TrainArgs};

/// Products × views of the demo catalog (112×168 PNG renderings, seed 42): every category2 drawn
/// equally often (blocks of nine), four views per product — the rows of
/// `tailor data synth --rows 1440 --seed 42 --caption --width 112 --height 168`.
pub(crate) const PRODUCTS: usize = 360;
const VIEWS: usize = 4;
const SEED: u64 = 42;
/// The base model's image budget (its preprocessor's min = max pixels, 112×168: 8×12 patches,
/// 24 image tokens), so images are drawn at the resolution the model sees, not upscaled.
const WIDTH: u32 = 112;
const HEIGHT: u32 = 168;

/// A file of the repository (the demo's base model and config live next to the sources).
fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes the demo catalog (the recipe's columns plus the generic `caption`).
fn write_catalog(path: &Path, products: usize) -> Result<usize> {
    let cfg = SynthConfig {
        products,
        views_per_product: VIEWS,
        seed: SEED,
        width: WIDTH,
        height: HEIGHT,
        format: ImageFormat::Png,
    };
    let bar = crate::progress::bar(Some(synth::len(&cfg)), "catalog");
    let records = synth::generate(&cfg).map(|r| {
        bar.inc(1);
        crate::data::synth_record(r, true)
    });
    let n = write_parquet(path, records)?;
    bar.finish_and_clear();
    Ok(n)
}

/// `tailor demo [--out DIR]`
pub fn demo(a: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let out = a.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let base = a
        .base_model
        .clone()
        .unwrap_or_else(|| repo_path("assets/demo-base"));
    if !base.join("config.json").is_file() {
        bail!(
            "the demo's base model is not in {} (see assets/demo-base/README.md for its recipe)",
            base.display()
        );
    }
    let config = a
        .config
        .clone()
        .unwrap_or_else(|| repo_path("configs/demo-finetune.toml"));

    eprintln!("[1/4] synthetic catalog");
    let catalog = out.join("catalog.parquet");
    let rows = write_catalog(&catalog, a.products)?;
    eprintln!(
        "      {rows} rows ({} products × {VIEWS} views) in {}",
        a.products,
        catalog.display()
    );

    eprintln!("[2/4] LoRA fine-tune of the base model (split grouped by product)");
    let run = out.join("finetune");
    let q = |p: &Path| format!("\"{}\"", p.display());
    crate::train::train(TrainArgs {
        config,
        set: vec![
            format!("model.name_or_path={}", q(&base)),
            format!("data.dataset={}", q(&catalog)),
            format!("training.output_dir={}", q(&run)),
        ],
        resume: None,
        device: DeviceArg::Cpu,
    })?;

    eprintln!("[3/4] evaluation on held-out products: base, then fine-tuned");
    crate::eval::eval(EvalArgs {
        model: base.display().to_string(),
        adapter: Some(run.clone()),
        compare_base: true,
        dataset: catalog.clone(),
        split_file: Some(run.join("split.json")),
        split: "test".into(),
        out: out.clone(),
        no_constrain: false,
        limit: a.limit,
        max_new_tokens: 96,
        batch_size: 16,
        chat: PromptArgs {
            system: None,
            no_system: false,
            prompt: None,
        },
        dtype: DtypeArg::F32,
        device: DeviceArg::Cpu,
        pixels: PixelArgs {
            min_pixels: None,
            max_pixels: None,
        },
    })?;

    eprintln!("[4/4] a few held-out predictions");
    let predictions = std::fs::read_to_string(out.join("predictions.jsonl"))?;
    for line in predictions.lines().take(4) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        eprintln!("  reference : {}", v["reference"].as_str().unwrap_or(""));
        eprintln!("  base      : {}", v["base"].as_str().unwrap_or(""));
        eprintln!("  fine-tuned: {}\n", v["finetuned"].as_str().unwrap_or(""));
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json"))?)?;
    let pct = |run: &str, key: &str| 100.0 * metrics[run][key].as_f64().unwrap_or(f64::NAN);
    println!(
        "category2 accuracy on held-out products: base {:.1}% → fine-tuned {:.1}% (macro-F1 {:.1}% → {:.1}%); BLEU-4 {:.1} → {:.1}; ROUGE-L {:.1} → {:.1}",
        pct("base", "category2_accuracy"),
        pct("finetuned", "category2_accuracy"),
        pct("base", "category2_macro_f1"),
        pct("finetuned", "category2_macro_f1"),
        metrics["base"]["bleu4"].as_f64().unwrap_or(f64::NAN),
        metrics["finetuned"]["bleu4"].as_f64().unwrap_or(f64::NAN),
        metrics["base"]["rouge_l"].as_f64().unwrap_or(f64::NAN),
        metrics["finetuned"]["rouge_l"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "report: {}  (metrics.json, predictions.jsonl and the training run are beside it; {:.0} s in all)",
        out.join("report.html").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
