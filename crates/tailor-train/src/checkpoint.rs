//! Checkpoint folders: `output_dir/checkpoint-N/` written atomically, found again for `--resume`,
//! rotated under `save_total_limit` without ever deleting the best one.
//!
//! A checkpoint is assembled in `output_dir/.tmp-checkpoint-N/`, every file is synced, and the
//! folder is renamed into place: a crash leaves at most a temporary folder, which resume ignores
//! and the next save removes. Only folders named `checkpoint-N` holding `trainer_state.json` count.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Name of the state file inside a checkpoint (the HF name).
pub const STATE_FILE: &str = "trainer_state.json";
/// Name of the optimizer moments inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What `trainer_state.json` holds: HF's `TrainerState` fields plus tailor's exact-resume
/// position under `tailor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub global_step: u64,
    /// Fractional epoch (`epoch + batches_done / batches_per_epoch`).
    pub epoch: f64,
    /// Total updates planned.
    pub max_steps: u64,
    /// Epochs the loop runs.
    pub num_train_epochs: u64,
    /// `logging_steps` resolved.
    pub logging_steps: u64,
    /// `eval_steps` resolved.
    pub eval_steps: u64,
    /// `save_steps` resolved.
    pub save_steps: u64,
    /// Per-device train batch size.
    pub train_batch_size: u64,
    /// Best value of `metric_for_best_model` so far.
    pub best_metric: Option<f64>,
    /// Step of the best checkpoint.
    pub best_global_step: Option<u64>,
    /// Folder of the best checkpoint.
    pub best_model_checkpoint: Option<String>,
    /// Every log entry so far (training logs and evaluations), as in `log.jsonl`.
    pub log_history: Vec<Value>,
    /// Where the data stream stands, for exact resume.
    pub tailor: ResumePosition,
}

/// tailor's resume data: the data position and everything random is derived from these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePosition {
    /// The seed of the run (data order per epoch and dropout keys derive from it).
    pub seed: u64,
    /// Epoch (0-based) of the next micro-batch.
    pub epoch_index: u64,
    /// Micro-batches of that epoch already consumed.
    pub batches_done_in_epoch: u64,
    /// Micro-batches consumed since the start (the dropout key counter).
    pub micro_batches: u64,
    /// AdamW steps taken (the optimizer's bias-correction counter).
    pub optimizer_steps: u64,
    /// Scheduler steps taken (`LambdaLR.last_epoch`).
    pub scheduler_steps: u64,
}

/// Errors of checkpoint handling, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `trainer_state.json` is unreadable.
    #[error("cannot parse {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `--resume` found nothing to resume from.
    #[error(
        "no checkpoint to resume in {0} (looked for checkpoint-N folders with trainer_state.json)"
    )]
    NothingToResume(PathBuf),
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `checkpoint-{step}`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

/// Writes a checkpoint for `step`: `fill` writes the files into a temporary folder, which is then
/// synced and renamed to `output_dir/checkpoint-{step}` (replacing an older folder of that name).
pub fn write_atomically<E>(
    output_dir: &Path,
    step: u64,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<PathBuf, E>
where
    E: From<CheckpointError>,
{
    let tmp = output_dir.join(format!(".tmp-{}", checkpoint_name(step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("cannot remove", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
    fill(&tmp)?;
    for entry in std::fs::read_dir(&tmp).map_err(io("cannot list", &tmp))? {
        let path = entry.map_err(io("cannot list", &tmp))?.path();
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io("cannot sync", &path))?;
    }
    let target = output_dir.join(checkpoint_name(step));
    if target.exists() {
        let old = output_dir.join(format!(".old-{}", checkpoint_name(step)));
        std::fs::rename(&target, &old).map_err(io("cannot move", &target))?;
        std::fs::remove_dir_all(&old).map_err(io("cannot remove", &old))?;
    }
    std::fs::rename(&tmp, &target).map_err(io("cannot rename into", &target))?;
    // The rename is durable only once the parent directory is synced.
    if let Ok(dir) = File::open(output_dir) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

/// Complete checkpoints in `output_dir`, sorted by step.
pub fn list_checkpoints(output_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !output_dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(output_dir).map_err(io("cannot list", output_dir))? {
        let entry = entry.map_err(io("cannot list", output_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|n| n.parse::<u64>().ok())
            && entry.path().join(STATE_FILE).is_file()
        {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The checkpoint `--resume latest` uses.
pub fn latest_checkpoint(output_dir: &Path) -> Result<PathBuf> {
    list_checkpoints(output_dir)?
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| CheckpointError::NothingToResume(output_dir.to_path_buf()))
}

/// Reads `trainer_state.json` of a checkpoint.
pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
    let path = checkpoint.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::State { path, source })
}

/// Writes `trainer_state.json` into `dir`.
pub fn write_state(dir: &Path, state: &TrainerState) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).expect("the state serialises") + "\n";
    std::fs::write(&path, text).map_err(io("cannot write", &path))
}

/// Deletes the oldest checkpoints beyond `limit`, as transformers' `_rotate_checkpoints`: the best
/// checkpoint is moved towards the newest end first so that it survives, and a limit of 1 becomes
/// 2 while the best is not the newest (the newest must stay for resuming). Returns what it
/// deleted.
pub fn rotate(output_dir: &Path, limit: Option<u64>, best: Option<&Path>) -> Result<Vec<PathBuf>> {
    let Some(limit) = limit.filter(|&l| l > 0) else {
        return Ok(Vec::new());
    };
    let mut sorted: Vec<PathBuf> = list_checkpoints(output_dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut limit = limit as usize;
    if let Some(best) = best
        && let Some(i) = sorted.iter().position(|p| p == best)
    {
        for j in i..sorted.len().saturating_sub(2) {
            sorted.swap(j, j + 1);
        }
        if limit == 1 && sorted.last().map(PathBuf::as_path) != Some(best) {
            limit = 2;
        }
    }
    if sorted.len() <= limit {
        return Ok(Vec::new());
    }
    let doomed: Vec<PathBuf> = sorted[..sorted.len() - limit].to_vec();
    for d in &doomed {
        std::fs::remove_dir_all(d).map_err(io("cannot delete", d))?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainerState {
        TrainerState {
            global_step: step,
            epoch: 0.5,
            max_steps: 10,
            num_train_epochs: 1,
            logging_steps: 1,
            eval_steps: 1,
            save_steps: 1,
            train_batch_size: 2,
            best_metric: None,
            best_global_step: None,
            best_model_checkpoint: None,
            log_history: vec![serde_json::json!({"step": step, "loss": 1.5})],
            tailor: ResumePosition {
                seed: 42,
                epoch_index: 0,
                batches_done_in_epoch: 3,
                micro_batches: 3,
                optimizer_steps: step,
                scheduler_steps: step,
            },
        }
    }

    fn save(dir: &Path, step: u64) -> PathBuf {
        write_atomically::<CheckpointError>(dir, step, |tmp| write_state(tmp, &state(step)))
            .unwrap()
    }

    #[test]
    fn checkpoints_are_found_in_step_order_and_temporaries_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for s in [2, 10, 4] {
            save(dir.path(), s);
        }
        std::fs::create_dir(dir.path().join(".tmp-checkpoint-12")).unwrap();
        std::fs::create_dir(dir.path().join("checkpoint-14")).unwrap(); // no state: incomplete
        let steps: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, vec![2, 4, 10]);
        let latest = latest_checkpoint(dir.path()).unwrap();
        assert_eq!(read_state(&latest).unwrap(), state(10));
    }

    #[test]
    fn a_failed_fill_leaves_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let r = write_atomically::<CheckpointError>(dir.path(), 3, |tmp| {
            std::fs::write(tmp.join("half"), b"x").unwrap();
            Err(CheckpointError::NothingToResume(tmp.to_path_buf()))
        });
        assert!(r.is_err());
        assert!(list_checkpoints(dir.path()).unwrap().is_empty());
        assert!(latest_checkpoint(dir.path()).is_err());
    }

    #[test]
    fn rotation_keeps_the_newest_and_the_best() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (1..=5).map(|s| save(dir.path(), s * 10)).collect();
        let deleted = rotate(dir.path(), Some(2), Some(&paths[1])).unwrap();
        assert_eq!(
            deleted,
            vec![paths[0].clone(), paths[2].clone(), paths[3].clone()]
        );
        let left: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(left, vec![20, 50]);
        // Limit 1 with an older best keeps two.
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (1..=3).map(|s| save(dir.path(), s)).collect();
        rotate(dir.path(), Some(1), Some(&paths[0])).unwrap();
        assert_eq!(list_checkpoints(dir.path()).unwrap().len(), 2);
        assert!(paths[0].exists() && paths[2].exists());
        // No limit: nothing deleted.
        assert!(rotate(dir.path(), None, None).unwrap().is_empty());
    }
}
