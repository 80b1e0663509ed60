//! Resolving `--model`: a local folder as is, a hub repo id through `tailor-hub` with a progress
//! bar.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

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
    let dir = tailor_hub::snapshot_download(&cfg, repo, revision, MODEL_FILES, &|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("{}/{} {}", p.index + 1, p.count, p.path));
    })?;
    bar.finish_and_clear();
    Ok(dir)
}
