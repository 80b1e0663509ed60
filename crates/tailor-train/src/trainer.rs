//! The training loop, in one place: seeded data order per epoch, micro-batches, gradient
//! accumulation, global-norm clipping, AdamW with a transformers schedule, evaluation, atomic
//! checkpoints with rotation, the best model, and exact resume.
//!
//! # Exactness
//!
//! Everything random derives from the seed and counters stored in the checkpoint: the data order of
//! epoch `e` is NumPy's `default_rng(seed + e).permutation(n)` and the LoRA dropout key of
//! micro-batch `m` is a hash of `(seed, m)`. A checkpoint stores the adapter (float32), the AdamW
//! moments and step count, the scheduler step and the data position, so a resumed run performs
//! the same arithmetic in the same order as an uninterrupted one: on the CPU in float32 the final
//! adapter is bitwise identical.
//!
//! # Loss normalisation
//!
//! [`LossNormalization::Tokens`] (the default) divides every micro-batch's summed cross-entropy by
//! the number of labelled tokens of the whole accumulated batch, as transformers does with
//! `num_items_in_batch`; [`LossNormalization::MicroBatchMean`] divides each micro-batch's mean
//! by the number of micro-batches in the update (transformers' path for models that do not accept
//! loss keyword arguments).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde_json::{Value, json};
use tailor_core::Batch;
use tailor_model::{Adapter, AdapterFile, Qwen25Vl, VlmInputs};

use crate::checkpoint::{
    self, CheckpointError, OPTIMIZER_FILE, ResumePosition, TrainerState, write_atomically,
};
use crate::optim::{AdamW, AdamWConfig, OptimError, clip_grad_norm, grad_norm};
use crate::schedule::{
    LrSchedule, ScheduleError, SchedulerType, TrainingSteps, resolve_interval, training_steps,
    warmup_steps,
};

/// Samples the trainer can batch by index.
pub trait BatchSource: Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A collated batch (right padding, labels, M-RoPE positions) of the given samples.
    fn batch(&self, indices: &[usize]) -> std::result::Result<Batch, BoxError>;

    /// The sample order of epoch `epoch` (0-based).
    fn epoch_order(&self, epoch: u64, seed: u64) -> Vec<usize> {
        tailor_data::split::numpy_rng::default_rng(seed.wrapping_add(epoch)).permutation(self.len())
    }
}

/// What the loop trains: its parameters, how dropout is driven, and how its state is saved into
/// and restored from a checkpoint folder (and `output_dir` at the end).
pub trait Trainable: Sync {
    /// The trainable tensors by name, in a fixed order.
    fn params(&self) -> Vec<(String, candle_core::Var)>;
    /// Training mode (dropout on) or evaluation mode.
    fn set_training(&self, on: bool);
    /// The dropout key of the next forward pass.
    fn set_dropout_key(&self, key: u64);
    /// Writes the trained weights into `dir` (which exists).
    fn save(&self, dir: &Path, base_model_name_or_path: &str) -> Result<()>;
    /// Sets the live weights from what [`Trainable::save`] wrote into `dir`.
    fn restore(&self, dir: &Path, device: &Device) -> Result<()>;
    /// Number of trainable values.
    fn num_params(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

impl Trainable for Adapter {
    fn params(&self) -> Vec<(String, candle_core::Var)> {
        Adapter::params(self)
    }

    fn set_training(&self, on: bool) {
        self.runtime().set_training(on);
    }

    fn set_dropout_key(&self, key: u64) {
        self.runtime().set_dropout_key(key);
    }

    fn save(&self, dir: &Path, base_model_name_or_path: &str) -> Result<()> {
        Ok(Adapter::save(self, dir, base_model_name_or_path)?)
    }

    fn restore(&self, dir: &Path, device: &Device) -> Result<()> {
        restore_adapter(self, dir, device)
    }
}

/// Every weight of the model (full fine-tuning): checkpoints and the final output are complete
/// model folders (`model.safetensors` plus the source folder's config and tokenizer files).
#[derive(Debug, Clone)]
pub struct FullWeights {
    /// The weights by canonical name ([`Qwen25Vl::load_trainable`]).
    pub vars: Vec<(String, candle_core::Var)>,
    /// The model folder whose non-weight files are copied next to saved weights.
    pub source_dir: PathBuf,
}

impl Trainable for FullWeights {
    fn params(&self) -> Vec<(String, candle_core::Var)> {
        self.vars.clone()
    }

    // No dropout outside LoRA branches: Qwen2.5-VL's attention dropout is 0.
    fn set_training(&self, _on: bool) {}

    fn set_dropout_key(&self, _key: u64) {}

    fn save(&self, dir: &Path, _base: &str) -> Result<()> {
        let weights: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        Ok(tailor_model::export::save_full_model(
            &self.source_dir,
            &weights,
            dir,
        )?)
    }

    fn restore(&self, dir: &Path, device: &Device) -> Result<()> {
        let checkpoint = tailor_model::Checkpoint::open(dir)?;
        for (name, var) in &self.vars {
            let t = checkpoint.load(name, device)?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }
}

/// A boxed error from a data source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How micro-batch losses combine under gradient accumulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossNormalization {
    /// Σ CE over the accumulated batch / its labelled-token count.
    #[default]
    Tokens,
    /// Mean over each micro-batch, averaged over the update's micro-batches.
    MicroBatchMean,
}

/// When evaluation or saving happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Never.
    No,
    /// Every N updates.
    Steps,
    /// At the end of each epoch.
    Epoch,
    /// Saving only: whenever the metric reaches a new best.
    Best,
}

/// The resolved settings of a run (the config file's values, HF semantics).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where checkpoints, the log and the final adapter go.
    pub output_dir: PathBuf,
    /// Written into `adapter_config.json`.
    pub base_model_name_or_path: String,
    /// `per_device_train_batch_size`.
    pub batch_size: usize,
    /// `per_device_eval_batch_size`.
    pub eval_batch_size: usize,
    /// `gradient_accumulation_steps`.
    pub accumulation: usize,
    /// `num_train_epochs`.
    pub num_train_epochs: f64,
    /// `max_steps` (−1: from epochs).
    pub max_steps: i64,
    /// AdamW hyper-parameters (`lr` is the schedule's base).
    pub adamw: AdamWConfig,
    /// `lr_scheduler_type`.
    pub scheduler: SchedulerType,
    /// `warmup_steps` (≥ 1) or a fraction of the run (< 1).
    pub warmup: f64,
    /// `max_grad_norm`; ≤ 0 disables clipping.
    pub max_grad_norm: f64,
    /// `logging_steps` (≥ 1 or a fraction).
    pub logging_steps: f64,
    /// `eval_strategy`.
    pub eval_strategy: Strategy,
    /// `eval_steps`.
    pub eval_steps: f64,
    /// `save_strategy`.
    pub save_strategy: Strategy,
    /// `save_steps`.
    pub save_steps: f64,
    /// `save_total_limit`.
    pub save_total_limit: Option<u64>,
    /// `metric_for_best_model` without an `eval_` prefix (`loss`).
    pub metric_for_best_model: Option<String>,
    /// `greater_is_better`.
    pub greater_is_better: bool,
    /// `load_best_model_at_end`.
    pub load_best_model_at_end: bool,
    /// `gradient_checkpointing`.
    pub gradient_checkpointing: bool,
    /// `seed`.
    pub seed: u64,
    /// How accumulated losses are normalised.
    pub loss_normalization: LossNormalization,
}

/// Everything that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model failed (shapes, devices, adapter files).
    #[error(transparent)]
    Model(#[from] tailor_model::ModelError),
    /// candle failed inside a step.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The optimizer rejected the gradients or its saved state.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The step counts could not be computed.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Writing or reading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The data source failed.
    #[error("data: {0}")]
    Data(BoxError),
    /// A NaN or infinite loss or gradient.
    #[error(
        "step {step}: the {what} is {value}; training stopped before the update. {}",
        match last_checkpoint { Some(p) => format!("The last good checkpoint is {}.", p.display()), None => "No checkpoint was written yet.".to_string() }
    )]
    NonFinite {
        /// The update that failed (1-based).
        step: u64,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value.
        value: f64,
        /// The newest checkpoint on disk.
        last_checkpoint: Option<PathBuf>,
    },
    /// The output folder cannot be written.
    #[error("output_dir {path} is not writable: {source}")]
    Unwritable {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A resumed checkpoint was written with other settings.
    #[error("cannot resume from {path}: {detail}")]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, TrainError>;

/// What the loop reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Before the first update: the plan.
    Started {
        /// Step counts.
        steps: TrainingSteps,
        /// The update the run starts after (0 for a fresh run).
        from_step: u64,
        /// Trainable values.
        trainable: usize,
    },
    /// After each update.
    Update {
        /// Updates done.
        step: u64,
        /// That update's loss.
        loss: f64,
        /// Pre-clip gradient norm.
        grad_norm: f64,
        /// Learning rate used.
        lr: f64,
    },
    /// An entry written to `log.jsonl` (training log or evaluation).
    Logged(Value),
    /// Evaluation is running over `batches` batches.
    Evaluating {
        /// Number of eval batches.
        batches: usize,
    },
    /// A checkpoint was written.
    Saved(PathBuf),
    /// The stop flag was seen; a checkpoint was saved and the run ends.
    Interrupted {
        /// Updates done.
        step: u64,
    },
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Updates done.
    pub global_step: u64,
    /// False when stopped by the stop flag.
    pub completed: bool,
    /// The checkpoint whose adapter was left in `output_dir` under `load_best_model_at_end`.
    pub best_model_checkpoint: Option<PathBuf>,
    /// The final state (also in `output_dir/trainer_state.json` when completed).
    pub state: TrainerState,
}

/// A stable 64-bit mix of the seed and a counter (SplitMix64's finaliser).
fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fault injection for the crash tests (`TAILOR_FAULT=point:step`): `crash_after_update:N`
/// aborts the process right after update N (like `kill -9` between checkpoints),
/// `crash_in_checkpoint:N` aborts halfway through writing checkpoint N, `nan_loss:N` makes
/// update N's loss NaN. Unset in normal use; read once per call, cheap.
fn fault(point: &str, step: u64) -> bool {
    std::env::var("TAILOR_FAULT").is_ok_and(|v| v == format!("{point}:{step}"))
}

/// Fails early when `dir` cannot be created or written.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |source| TrainError::Unwritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".tailor-write-test");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

/// How many micro-batches of one update run at once: one per rayon thread on the CPU, where a
/// small model's operations cannot keep every core busy on their own (candle parallelises
/// little besides matrix products); one on a GPU. Each lane holds one micro-batch's activations.
fn parallel_micro_batches(device: &Device) -> usize {
    if device.is_cpu() {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

/// `f(index, item)` for every item, on rayon's threads when there are several, in order.
fn in_lanes<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    if items.len() > 1 {
        items.par_iter().enumerate().map(|(j, x)| f(j, x)).collect()
    } else {
        items.iter().enumerate().map(|(j, x)| f(j, x)).collect()
    }
}

/// One micro-batch's share of the update's loss and its gradients.
type MicroOutcome = (f64, Vec<Tensor>);

/// One collated micro-batch on the device.
struct MicroBatch {
    inputs: VlmInputs,
    labels: Vec<i64>,
    tokens: usize,
    real_tokens: usize,
    samples: usize,
}

fn micro_batch<S: BatchSource>(
    source: &S,
    indices: &[usize],
    device: &Device,
) -> Result<MicroBatch> {
    let batch = source.batch(indices).map_err(TrainError::Data)?;
    let t = &batch.tokens;
    let targets = tailor_model::ShiftedTargets::new(&t.labels, t.batch_size, t.seq_len);
    Ok(MicroBatch {
        inputs: VlmInputs::from_batch(&batch, device)?,
        tokens: targets.len(),
        real_tokens: t.attention_mask.iter().filter(|&&m| m != 0).count(),
        samples: t.batch_size,
        labels: batch.tokens.labels,
    })
}

/// transformers' `eval_loss`: the mean of per-batch mean losses, each weighted by its batch size.
pub fn evaluate<S: BatchSource>(
    model: &Qwen25Vl,
    adapter: Option<&dyn Trainable>,
    source: &S,
    batch_size: usize,
) -> Result<f64> {
    if let Some(a) = adapter {
        a.set_training(false);
    }
    let device = model.lm_head().device().clone();
    let order: Vec<usize> = (0..source.len()).collect();
    let batches: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    let (mut weighted, mut samples) = (0.0f64, 0usize);
    // Batches run several at a time (as training's micro-batches do) and are summed in order.
    for wave in batches.chunks(parallel_micro_batches(&device)) {
        let loss = |_: usize, chunk: &&[usize]| -> Result<(f64, usize, usize)> {
            let mb = micro_batch(source, chunk, &device)?;
            let (sum, n) = model.loss_sum(&mb.inputs, &mb.labels)?;
            Ok((sum, n, mb.samples))
        };
        for result in in_lanes(wave, loss) {
            let (sum, n, batch_samples) = result?;
            if n > 0 {
                weighted += sum / n as f64 * batch_samples as f64;
                samples += batch_samples;
            }
        }
    }
    Ok(if samples == 0 {
        f64::NAN
    } else {
        weighted / samples as f64
    })
}

/// Copies saved adapter weights into the live variables (same modules, same shapes).
fn restore_adapter(adapter: &Adapter, dir: &Path, device: &Device) -> Result<()> {
    let file = AdapterFile::read(dir, device)?;
    for (path, layer) in adapter.layers() {
        let Some((a, b)) = file.weights.get(path) else {
            return Err(TrainError::Resume {
                path: dir.to_path_buf(),
                detail: format!("the saved adapter has no weights for {path}"),
            });
        };
        layer.a.set(a)?;
        layer.b.set(b)?;
    }
    for (name, var) in adapter.saved() {
        let Some(t) = file.saved.get(name) else {
            return Err(TrainError::Resume {
                path: dir.to_path_buf(),
                detail: format!("the saved adapter has no modules_to_save weight {name}"),
            });
        };
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Runs (or resumes) training of `adapter`'s parameters on `train`, evaluating on `valid`.
/// `stop` is polled after every update (Ctrl-C): the run then saves a checkpoint and returns
/// with `completed: false`.
#[allow(clippy::too_many_arguments)]
pub fn train<S: BatchSource>(
    model: &Qwen25Vl,
    adapter: &dyn Trainable,
    train: &S,
    valid: Option<&S>,
    settings: &Settings,
    resume: Option<&Path>,
    stop: &AtomicBool,
    on: &mut dyn FnMut(Event),
) -> Result<Outcome> {
    let out = &settings.output_dir;
    check_writable(out)?;
    let device = model.lm_head().device().clone();
    let steps = training_steps(
        train.len() as u64,
        settings.batch_size as u64,
        settings.accumulation as u64,
        settings.num_train_epochs,
        settings.max_steps,
    )?;
    let schedule = LrSchedule::new(
        settings.scheduler,
        settings.adamw.lr,
        warmup_steps(settings.warmup, steps.max_steps),
        steps.max_steps,
    );
    let logging_every = resolve_interval(settings.logging_steps, steps.max_steps).max(1);
    let eval_every = resolve_interval(settings.eval_steps, steps.max_steps).max(1);
    let save_every = resolve_interval(settings.save_steps, steps.max_steps).max(1);
    let valid = valid.filter(|v| !v.is_empty());
    let evaluating = settings.eval_strategy != Strategy::No && valid.is_some();

    let params = adapter.params();
    let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let vars: Vec<candle_core::Var> = params.iter().map(|(_, v)| v.clone()).collect();
    let mut optim = AdamW::new(params, settings.adamw)?;
    let lanes = parallel_micro_batches(&device);

    let mut state = TrainerState {
        global_step: 0,
        epoch: 0.0,
        max_steps: steps.max_steps,
        num_train_epochs: steps.epochs,
        logging_steps: logging_every,
        eval_steps: eval_every,
        save_steps: save_every,
        train_batch_size: settings.batch_size as u64,
        best_metric: None,
        best_global_step: None,
        best_model_checkpoint: None,
        log_history: Vec::new(),
        tailor: ResumePosition {
            seed: settings.seed,
            epoch_index: 0,
            batches_done_in_epoch: 0,
            micro_batches: 0,
            optimizer_steps: 0,
            scheduler_steps: 0,
        },
    };
    if let Some(ckpt) = resume {
        let saved = checkpoint::read_state(ckpt)?;
        let differs = |detail: String| TrainError::Resume {
            path: ckpt.to_path_buf(),
            detail,
        };
        if saved.tailor.seed != settings.seed {
            return Err(differs(format!(
                "it was trained with seed {}, the config says {}",
                saved.tailor.seed, settings.seed
            )));
        }
        if saved.train_batch_size != settings.batch_size as u64
            || saved.max_steps != steps.max_steps
        {
            return Err(differs(format!(
                "it was trained with batch size {} for {} steps; the config now gives batch size {} \
                 and {} steps",
                saved.train_batch_size, saved.max_steps, settings.batch_size, steps.max_steps
            )));
        }
        adapter.restore(ckpt, &device)?;
        let moments = candle_core::safetensors::load(ckpt.join(OPTIMIZER_FILE), &device)?;
        optim.load_state(&moments, saved.tailor.optimizer_steps)?;
        state = saved;
    }
    // The log always mirrors the state's history (a resumed run drops entries after its step).
    let log_path = out.join("log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|source| TrainError::Unwritable {
        path: log_path.clone(),
        source,
    })?;
    for entry in &state.log_history {
        writeln!(log, "{entry}").map_err(|source| TrainError::Unwritable {
            path: log_path.clone(),
            source,
        })?;
    }
    let mut write_log = |state: &mut TrainerState, entry: Value, on: &mut dyn FnMut(Event)| {
        let _ = writeln!(log, "{entry}").and_then(|_| log.flush());
        state.log_history.push(entry.clone());
        on(Event::Logged(entry));
    };

    on(Event::Started {
        steps,
        from_step: state.global_step,
        trainable: adapter.num_params(),
    });

    let save = |state: &mut TrainerState, optim: &AdamW, on: &mut dyn FnMut(Event)| -> Result<()> {
        let step = state.global_step;
        let final_path = out.join(checkpoint::checkpoint_name(step));
        if state.best_global_step == Some(step) {
            state.best_model_checkpoint = Some(final_path.display().to_string());
        }
        let path = write_atomically::<TrainError>(out, step, |tmp| {
            adapter.save(tmp, &settings.base_model_name_or_path)?;
            if fault("crash_in_checkpoint", step) {
                std::process::abort();
            }
            tailor_model::adapter::write_safetensors(
                &tmp.join(OPTIMIZER_FILE),
                &optim.state_tensors().into_iter().collect(),
            )?;
            checkpoint::write_state(tmp, state)?;
            Ok(())
        })?;
        let best = state.best_model_checkpoint.as_ref().map(PathBuf::from);
        checkpoint::rotate(out, settings.save_total_limit, best.as_deref())?;
        on(Event::Saved(path));
        Ok(())
    };

    let metric_is_better = |new: f64, old: Option<f64>| match old {
        None => true,
        Some(old) if settings.greater_is_better => new > old,
        Some(old) => new < old,
    };

    let started = Instant::now();
    let (mut window_loss, mut window_steps) = (0.0f64, 0u64);
    let (mut window_tokens, mut window_samples) = (0usize, 0usize);
    let mut window_start = Instant::now();
    let mut order: Option<(u64, Vec<usize>)> = None;
    let mut completed = true;

    while state.global_step < steps.max_steps {
        let pos = &mut state.tailor;
        if pos.batches_done_in_epoch >= steps.batches_per_epoch {
            pos.epoch_index += 1;
            pos.batches_done_in_epoch = 0;
        }
        if pos.epoch_index >= steps.epochs {
            break;
        }
        let epoch = pos.epoch_index;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, train.epoch_order(epoch, settings.seed)));
        }
        let epoch_order = &order.as_ref().expect("set above").1;
        let update_in_epoch = pos.batches_done_in_epoch / steps.accumulation;
        let count = steps.batches_in_update(update_in_epoch);

        let done = pos.batches_done_in_epoch as usize;
        let micro = (0..count as usize)
            .into_par_iter()
            .map(|j| {
                let lo = (done + j) * settings.batch_size;
                let hi = (lo + settings.batch_size).min(epoch_order.len());
                micro_batch(train, &epoch_order[lo..hi], &device)
            })
            .collect::<Result<Vec<MicroBatch>>>()?;
        let total_tokens: usize = micro.iter().map(|m| m.tokens).sum();
        let step = state.global_step + 1;

        adapter.set_training(true);
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut step_loss = 0.0f64;
        // Micro-batches run `lanes` at a time, each on its own thread with its own dropout key;
        // their results are summed in micro-batch order, so the update is bit for bit the one a
        // serial loop computes.
        let first_micro_batch = state.tailor.micro_batches;
        for (wave, chunk) in micro.chunks(lanes).enumerate() {
            let run = |j: usize, mb: &MicroBatch| -> Result<Option<MicroOutcome>> {
                if mb.tokens == 0 {
                    return Ok(None);
                }
                let index = (wave * lanes + j) as u64;
                adapter.set_dropout_key(mix(settings.seed, first_micro_batch + index));
                let normalizer = match settings.loss_normalization {
                    LossNormalization::Tokens => total_tokens as f64,
                    LossNormalization::MicroBatchMean => (mb.tokens * micro.len()) as f64,
                };
                let out = model.loss_and_grads(
                    &mb.inputs,
                    &mb.labels,
                    &vars,
                    normalizer,
                    settings.gradient_checkpointing,
                )?;
                Ok(Some((out.loss_sum / normalizer, out.grads)))
            };
            for result in in_lanes(chunk, run) {
                let Some((loss, micro_grads)) = result? else {
                    continue;
                };
                step_loss += loss;
                for (acc, g) in grads.iter_mut().zip(micro_grads) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + g)?,
                        None => g,
                    });
                }
            }
        }
        adapter.set_training(false);
        if fault("nan_loss", step) {
            step_loss = f64::NAN;
        }
        let last_checkpoint = || checkpoint::latest_checkpoint(out).ok();
        if !step_loss.is_finite() || total_tokens == 0 {
            return Err(TrainError::NonFinite {
                step,
                what: "loss",
                value: if total_tokens == 0 {
                    f64::NAN
                } else {
                    step_loss
                },
                last_checkpoint: last_checkpoint(),
            });
        }
        let mut grads: HashMap<String, Tensor> = names
            .iter()
            .cloned()
            .zip(
                grads
                    .into_iter()
                    .map(|g| g.expect("every parameter got a gradient")),
            )
            .collect();
        let norm = if settings.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, settings.max_grad_norm)?
        } else {
            grad_norm(&grads)?
        };
        if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "gradient norm",
                value: norm,
                last_checkpoint: last_checkpoint(),
            });
        }
        let lr = schedule.lr_for_update(step);
        optim.step(&grads, lr)?;
        drop(grads);

        state.global_step = step;
        let pos = &mut state.tailor;
        pos.micro_batches += count;
        pos.batches_done_in_epoch += count;
        pos.optimizer_steps = optim.step_count();
        pos.scheduler_steps = step;
        state.epoch = steps.epoch_progress(pos.epoch_index, pos.batches_done_in_epoch);
        let epoch_ended = pos.batches_done_in_epoch >= steps.batches_per_epoch;
        window_loss += step_loss;
        window_steps += 1;
        window_tokens += micro.iter().map(|m| m.real_tokens).sum::<usize>();
        window_samples += micro.iter().map(|m| m.samples).sum::<usize>();
        drop(micro);
        on(Event::Update {
            step,
            loss: step_loss,
            grad_norm: norm,
            lr,
        });

        let last = step == steps.max_steps;
        if step.is_multiple_of(logging_every) || last {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let entry = json!({
                "step": step,
                "epoch": state.epoch,
                "loss": window_loss / window_steps as f64,
                "grad_norm": norm,
                "learning_rate": schedule.logged_lr(step),
                "tokens_per_second": window_tokens as f64 / secs,
                "samples_per_second": window_samples as f64 / secs,
            });
            write_log(&mut state, entry, on);
            (window_loss, window_steps, window_tokens, window_samples) = (0.0, 0, 0, 0);
            window_start = Instant::now();
        }

        let eval_now = evaluating
            && match settings.eval_strategy {
                Strategy::Steps => step.is_multiple_of(eval_every),
                Strategy::Epoch => epoch_ended,
                _ => false,
            };
        let mut new_best = false;
        if eval_now {
            let valid = valid.expect("evaluating implies a valid set");
            on(Event::Evaluating {
                batches: valid.len().div_ceil(settings.eval_batch_size.max(1)),
            });
            let t0 = Instant::now();
            let eval_loss = evaluate(model, Some(adapter), valid, settings.eval_batch_size)?;
            let entry = json!({
                "step": step,
                "epoch": state.epoch,
                "eval_loss": eval_loss,
                "eval_runtime": t0.elapsed().as_secs_f64(),
            });
            write_log(&mut state, entry, on);
            if settings.metric_for_best_model.is_some()
                && eval_loss.is_finite()
                && metric_is_better(eval_loss, state.best_metric)
            {
                state.best_metric = Some(eval_loss);
                state.best_global_step = Some(step);
                new_best = true;
            }
        }
        let interrupted = stop.load(Ordering::Relaxed) && !last;
        let save_now = match settings.save_strategy {
            Strategy::Steps => step.is_multiple_of(save_every),
            Strategy::Epoch => epoch_ended,
            Strategy::Best => new_best,
            Strategy::No => false,
        };
        if save_now || interrupted {
            save(&mut state, &optim, on)?;
        }
        if fault("crash_after_update", step) {
            std::process::abort();
        }
        if interrupted {
            on(Event::Interrupted { step });
            completed = false;
            break;
        }
    }

    let mut best_loaded = None;
    if completed {
        if settings.load_best_model_at_end
            && let Some(best) = state.best_model_checkpoint.clone()
        {
            let best = PathBuf::from(best);
            if best.is_dir() {
                adapter.restore(&best, &device)?;
                best_loaded = Some(best);
            }
        }
        adapter.save(out, &settings.base_model_name_or_path)?;
        let entry = json!({
            "step": state.global_step,
            "epoch": state.epoch,
            "train_runtime": started.elapsed().as_secs_f64(),
        });
        write_log(&mut state, entry, on);
        checkpoint::write_state(out, &state)?;
    }
    Ok(Outcome {
        global_step: state.global_step,
        completed,
        best_model_checkpoint: best_loaded,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keys_differ_per_micro_batch_and_repeat_per_seed() {
        assert_eq!(mix(42, 7), mix(42, 7));
        assert_ne!(mix(42, 7), mix(42, 8));
        assert_ne!(mix(42, 7), mix(43, 7));
    }

    #[test]
    fn unwritable_output_dirs_fail_early() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = check_writable(&file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("not writable"), "{err}");
        check_writable(&dir.path().join("new")).unwrap();
    }
}
