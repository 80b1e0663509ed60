//! Resolving `--model` and `[data] dataset`: a local path as is, a hub repo id (model or dataset)
//! through `tailor-hub` with a progress bar.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tailor_hub::RepoType;

/// The files a model folder needs; weights, configs, tokenizer and processor files.
const MODEL_FILES: &[&str] = &["*.json", "*.safetensors", "*.jinja", "*.txt"];

/// A local folder, or the snapshot folder of a hub repo id (`org/name`, optionally `@revision`),
/// downloaded into the standard Hugging Face cache when needed.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let local = Path::new(model);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let (repo, revision) = model.split_once('@').unwrap_or((model, "main"));
    if !tailor_hub::is_repo_id(repo) {
        bail!("--model {model}: no such folder, and not a hub repo id (org/name)");
    }
    download_with_bar(RepoType::Model, repo, revision, MODEL_FILES)
}

/// A local catalog path (file or folder) as is, or the snapshot folder of a hub dataset repo id
/// (`org/name`, optionally `@revision`), downloaded into the standard Hugging Face cache
/// (`datasets--{org}--{name}`) when needed, with a progress bar. Only the files a catalog can
/// use are fetched (see [`tailor_hub::DATASET_FILES`]); `HF_HUB_OFFLINE` resolves from the cache alone.
pub fn resolve_dataset(dataset: &str) -> Result<PathBuf> {
    let local = Path::new(dataset);
    if local.exists() {
        return Ok(local.to_path_buf());
    }
    let (repo, revision) = dataset.split_once('@').unwrap_or((dataset, "main"));
    if !tailor_hub::is_repo_id(repo) {
        bail!("dataset {dataset}: no such file or folder, and not a hub dataset id (org/name)");
    }
    download_with_bar(RepoType::Dataset, repo, revision, tailor_hub::DATASET_FILES)
        .with_context(|| format!("dataset {dataset}"))
}

/// Downloads (or finds in the cache) `repo` at `revision`, drawing one byte bar on stderr for
/// the file in flight (hidden when stderr is not a terminal).
fn download_with_bar(
    repo_type: RepoType,
    repo: &str,
    revision: &str,
    allow: &[&str],
) -> Result<PathBuf> {
    let cfg = tailor_hub::HubConfig::from_env();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg:>30} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let dir = tailor_hub::snapshot_download_typed(&cfg, repo_type, repo, revision, allow, &|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("{}/{} {}", p.index + 1, p.count, p.path));
    })?;
    bar.finish_and_clear();
    Ok(dir)
}
