//! Learning-rate schedules and step counts with the semantics of transformers 5.24.
//!
//! Sources ported (read, not guessed):
//! - `transformers/optimization.py`: `get_scheduler` and the `LambdaLR` lambdas
//!   `_get_constant_lambda`, `_get_constant_schedule_with_warmup_lr_lambda`,
//!   `_get_linear_schedule_with_warmup_lr_lambda`, `_get_cosine_schedule_with_warmup_lr_lambda`.
//! - `transformers/training_args.py`: `TrainingArguments.get_warmup_steps`.
//! - `transformers/trainer.py`: `Trainer.set_initial_training_values`, `Trainer._run_epoch`.
//! - `transformers/trainer_callback.py`: `TrainerState.compute_steps`.
//!
//! # Which learning rate, when
//!
//! `torch.optim.lr_scheduler.LambdaLR` applies `lambda(0)` at construction, so the first optimizer
//! update uses `base_lr * lambda(0)`. After each update the trainer calls `lr_scheduler.step()`.
//! Update `k` (1-based, `global_step` becomes `k` after it) therefore uses
//! `base_lr * lambda(k - 1)`: [`LrSchedule::lr_for_update`].
//!
//! In transformers 5.24 `Trainer._run_epoch` reads `_get_learning_rate()` right after
//! `optimizer.step()` and *before* `lr_scheduler.step()` ("get leaning rate before update"), and
//! passes that value to `_maybe_log_save_evaluate`, which logs it as `learning_rate`. So the value
//! logged at `global_step = k` is the rate update `k` used: [`LrSchedule::logged_lr`]. (Trainers of
//! the 4.x series logged `get_last_lr()` after `lr_scheduler.step()`, i.e. `base_lr * lambda(k)`;
//! that value is [`LrSchedule::lr_after_step`], kept for comparing against older logs.)

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// The `lr_scheduler_type` values tailor supports (`transformers.SchedulerType` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerType {
    /// `constant`: `lambda = 1`; warmup is ignored, exactly as `get_scheduler` does.
    Constant,
    /// `constant_with_warmup`: linear warmup from 0, then 1.
    ConstantWithWarmup,
    /// `linear`: linear warmup, then linear decay to 0 at `num_training_steps`.
    Linear,
    /// `cosine`: linear warmup, then half a cosine (`num_cycles = 0.5`) down to 0.
    Cosine,
}

impl SchedulerType {
    /// Every supported name, in the order of the variants.
    pub const NAMES: [&'static str; 4] = ["constant", "constant_with_warmup", "linear", "cosine"];

    /// The transformers name.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerType::Constant => "constant",
            SchedulerType::ConstantWithWarmup => "constant_with_warmup",
            SchedulerType::Linear => "linear",
            SchedulerType::Cosine => "cosine",
        }
    }
}

impl fmt::Display for SchedulerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(SchedulerType::Constant),
            "constant_with_warmup" => Ok(SchedulerType::ConstantWithWarmup),
            "linear" => Ok(SchedulerType::Linear),
            "cosine" => Ok(SchedulerType::Cosine),
            other => Err(format!(
                "lr_scheduler_type {other:?} is not supported by tailor; supported: {}",
                SchedulerType::NAMES.join(", ")
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SchedulerType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A learning-rate schedule: `base_lr` times the `LambdaLR` multiplier of transformers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    kind: SchedulerType,
    base_lr: f64,
    num_warmup_steps: u64,
    num_training_steps: u64,
}

impl LrSchedule {
    /// The schedule `get_scheduler(kind, num_warmup_steps, num_training_steps)` builds.
    /// `num_warmup_steps` comes from [`warmup_steps`]; `num_training_steps` is
    /// [`TrainingSteps::max_steps`] (what `Trainer.create_scheduler` passes).
    pub fn new(
        kind: SchedulerType,
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
    ) -> LrSchedule {
        LrSchedule {
            kind,
            base_lr,
            num_warmup_steps,
            num_training_steps,
        }
    }

    /// The schedule kind.
    pub fn kind(&self) -> SchedulerType {
        self.kind
    }

    /// The optimizer's initial learning rate (`learning_rate`).
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// Warmup steps the lambda uses (unused by `constant`).
    pub fn num_warmup_steps(&self) -> u64 {
        self.num_warmup_steps
    }

    /// Total optimizer updates the lambda decays over.
    pub fn num_training_steps(&self) -> u64 {
        self.num_training_steps
    }

    /// The `LambdaLR` multiplier after `scheduler_steps` calls of `lr_scheduler.step()`
    /// (`current_step` in transformers' lambdas).
    pub fn lambda(&self, scheduler_steps: u64) -> f64 {
        // Python ints are unbounded and the lambdas subtract them freely; i128 keeps every
        // difference exact for any u64 input.
        let step = scheduler_steps as i128;
        let warmup = self.num_warmup_steps as i128;
        let total = self.num_training_steps as i128;
        match self.kind {
            SchedulerType::Constant => 1.0,
            SchedulerType::ConstantWithWarmup => {
                if step < warmup {
                    // `float(max(1.0, num_warmup_steps))`
                    step as f64 / (warmup as f64).max(1.0)
                } else {
                    1.0
                }
            }
            SchedulerType::Linear => {
                if step < warmup {
                    return step as f64 / warmup.max(1) as f64;
                }
                let v = (total - step) as f64 / (total - warmup).max(1) as f64;
                v.max(0.0)
            }
            SchedulerType::Cosine => {
                if step < warmup {
                    return step as f64 / warmup.max(1) as f64;
                }
                let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                let num_cycles = 0.5;
                // Same evaluation order as `math.pi * float(num_cycles) * 2.0 * progress`, so the
                // f64 result is bit-identical; the `min_lr_rate = 0` blend of the redefined
                // lambda in optimization.py (`factor * 1 + 0`) changes no value.
                let factor = 0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos());
                factor.max(0.0)
            }
        }
    }

    /// The learning rate the optimizer uses for update `update` (1-based; `global_step` is
    /// `update` once it is done): `base_lr * lambda(update - 1)`. `update = 0` is treated as 1.
    pub fn lr_for_update(&self, update: u64) -> f64 {
        self.base_lr * self.lambda(update.saturating_sub(1))
    }

    /// The `learning_rate` transformers 5.24 logs at `global_step`: the rate of the update that
    /// produced that step, read before `lr_scheduler.step()` (see the module docs).
    pub fn logged_lr(&self, global_step: u64) -> f64 {
        self.lr_for_update(global_step)
    }

    /// `lr_scheduler.get_last_lr()` after `global_step` scheduler steps: the rate the *next*
    /// update will use. transformers 4.x logged this value.
    pub fn lr_after_step(&self, global_step: u64) -> f64 {
        self.base_lr * self.lambda(global_step)
    }
}

/// `TrainingArguments.get_warmup_steps`: `warmup >= 1` is a step count truncated like Python's
/// `int()`, `warmup < 1` a fraction of `num_training_steps` rounded up
/// (`math.ceil(num_training_steps * warmup)`). The tutorial's `warmup_ratio` (removed in
/// transformers 5) is the same fraction. Negative or non-finite values give 0 (the config
/// rejects them before this is called).
pub fn warmup_steps(warmup: f64, num_training_steps: u64) -> u64 {
    if !warmup.is_finite() || warmup <= 0.0 {
        0
    } else if warmup >= 1.0 {
        warmup.trunc() as u64
    } else {
        (num_training_steps as f64 * warmup).ceil() as u64
    }
}

/// `TrainerState.compute_steps` for `logging_steps`, `eval_steps` and `save_steps`: a value
/// `< 1` is a fraction of `max_steps` rounded up, any other value is used as is (truncated; the
/// config only allows whole numbers above 1, as `TrainingArguments._validate_args` does).
pub fn resolve_interval(steps: f64, max_steps: u64) -> u64 {
    if steps < 1.0 {
        (max_steps as f64 * steps).ceil().max(0.0) as u64
    } else {
        steps.trunc() as u64
    }
}

/// Why the step counts cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// An empty training set with no positive `max_steps` (HF raises the same).
    #[error(
        "the training set is empty and max_steps is {0}: nothing to train (set max_steps > 0 or add rows)"
    )]
    NoData(i64),
    /// A batch size or accumulation count of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// The step counts `Trainer.set_initial_training_values` computes (single device,
/// `dataloader_drop_last = False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingSteps {
    /// Micro-batches per epoch: `len(dataloader) = ceil(num_examples / batch_size)`
    /// (`steps_in_epoch`).
    pub batches_per_epoch: u64,
    /// Optimizer updates per epoch: `max(ceil(batches_per_epoch / accumulation), 1)`.
    pub updates_per_epoch: u64,
    /// Total optimizer updates: `max_steps` when positive, else
    /// `ceil(num_train_epochs * updates_per_epoch)`; training stops when `global_step` reaches it,
    /// in the middle of an epoch for fractional epochs.
    pub max_steps: u64,
    /// Epochs the loop starts (`num_train_epochs` of the trainer): `ceil(max_steps /
    /// updates_per_epoch)` when `max_steps` was given, else `ceil(num_train_epochs)`.
    pub epochs: u64,
    /// Gradient accumulation steps.
    pub accumulation: u64,
}

impl TrainingSteps {
    /// Micro-batches in update `update_in_epoch` (0-based within an epoch): `accumulation`,
    /// except the epoch's last update, which takes the remainder
    /// (`steps_in_epoch % gradient_accumulation_steps`, or a full group when that is 0).
    pub fn batches_in_update(&self, update_in_epoch: u64) -> u64 {
        if update_in_epoch + 1 == self.updates_per_epoch {
            let rem = self.batches_per_epoch % self.accumulation;
            if rem == 0 { self.accumulation } else { rem }
        } else {
            self.accumulation
        }
    }

    /// `TrainerState.epoch` after `batches_done` micro-batches of epoch `epoch` (0-based):
    /// `epoch + batches_done / steps_in_epoch`, the value HF logs as `epoch`.
    pub fn epoch_progress(&self, epoch: u64, batches_done: u64) -> f64 {
        epoch as f64 + batches_done as f64 / self.batches_per_epoch.max(1) as f64
    }
}

/// `Trainer.set_initial_training_values` for `num_examples` training samples.
///
/// `max_steps = 0` is ported as is (`max_steps` 0, epochs `ceil(num_train_epochs)`); HF then stops
/// after its first update, which is why the config rejects it.
pub fn training_steps(
    num_examples: u64,
    batch_size: u64,
    accumulation: u64,
    num_train_epochs: f64,
    max_steps: i64,
) -> Result<TrainingSteps, ScheduleError> {
    if batch_size == 0 {
        return Err(ScheduleError::Zero("per_device_train_batch_size"));
    }
    if accumulation == 0 {
        return Err(ScheduleError::Zero("gradient_accumulation_steps"));
    }
    let batches_per_epoch = num_examples.div_ceil(batch_size);
    if batches_per_epoch == 0 {
        // HF falls back to `max_steps` only for loaders without a length; an empty loader with a
        // positive max_steps would just stop with a warning, so both cases are an error here.
        return Err(ScheduleError::NoData(max_steps));
    }
    let updates_per_epoch = batches_per_epoch.div_ceil(accumulation).max(1);
    let (total, epochs) = if max_steps > 0 {
        let total = max_steps as u64;
        (total, total.div_ceil(updates_per_epoch))
    } else if max_steps < 0 {
        let total = (num_train_epochs * updates_per_epoch as f64)
            .ceil()
            .max(0.0) as u64;
        (total, num_train_epochs.ceil().max(0.0) as u64)
    } else {
        (0, num_train_epochs.ceil().max(0.0) as u64)
    };
    Ok(TrainingSteps {
        batches_per_epoch,
        updates_per_epoch,
        max_steps: total,
        epochs,
        accumulation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1.0)
    }

    #[test]
    fn constant_ignores_warmup() {
        let s = LrSchedule::new(SchedulerType::Constant, 2e-4, 5, 100);
        for k in 0..120 {
            assert_eq!(s.lambda(k), 1.0);
        }
        assert_eq!(s.lr_for_update(1), 2e-4);
    }

    #[test]
    fn constant_with_warmup_values() {
        let s = LrSchedule::new(SchedulerType::ConstantWithWarmup, 1.0, 4, 100);
        let want = [0.0, 0.25, 0.5, 0.75, 1.0, 1.0];
        for (k, w) in want.iter().enumerate() {
            assert_eq!(s.lambda(k as u64), *w, "step {k}");
        }
        // No warmup: 1 from the start.
        let s = LrSchedule::new(SchedulerType::ConstantWithWarmup, 1.0, 0, 10);
        assert_eq!(s.lambda(0), 1.0);
    }

    #[test]
    fn linear_values() {
        // warmup 2, total 10: 0, .5, then (10-k)/8.
        let s = LrSchedule::new(SchedulerType::Linear, 1.0, 2, 10);
        let want = [
            0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0,
        ];
        for (k, w) in want.iter().enumerate() {
            assert!(
                close(s.lambda(k as u64), *w),
                "step {k}: {}",
                s.lambda(k as u64)
            );
        }
        // Without warmup the first update already uses the full rate.
        let s = LrSchedule::new(SchedulerType::Linear, 3e-4, 0, 4);
        assert_eq!(s.lr_for_update(1), 3e-4);
        assert!(close(s.lr_for_update(2), 3e-4 * 0.75));
    }

    #[test]
    fn cosine_values() {
        // warmup 1, total 5: 0, then 0.5*(1+cos(pi*(k-1)/4)).
        let s = LrSchedule::new(SchedulerType::Cosine, 1.0, 1, 5);
        assert_eq!(s.lambda(0), 0.0);
        assert_eq!(s.lambda(1), 1.0);
        let half_sqrt2 = std::f64::consts::FRAC_1_SQRT_2;
        assert!(close(s.lambda(2), 0.5 * (1.0 + half_sqrt2)));
        assert!(close(s.lambda(3), 0.5));
        assert!(close(s.lambda(4), 0.5 * (1.0 - half_sqrt2)));
        assert!(s.lambda(5).abs() < 1e-16);
        // Past the end the half cosine climbs again (HF does not clamp the progress).
        assert!(close(s.lambda(7), 0.5));
    }

    #[test]
    fn update_and_logged_rates() {
        let s = LrSchedule::new(SchedulerType::Linear, 1.0, 2, 10);
        // Update 1 uses lambda(0) = 0; HF 5.24 logs that same value at global step 1.
        assert_eq!(s.lr_for_update(1), 0.0);
        assert_eq!(s.logged_lr(1), 0.0);
        assert_eq!(s.lr_after_step(1), 0.5);
        assert_eq!(s.logged_lr(3), 1.0);
        assert_eq!(s.lr_after_step(3), 0.875);
    }

    #[test]
    fn warmup_resolution() {
        assert_eq!(warmup_steps(0.0, 100), 0);
        assert_eq!(warmup_steps(0.03, 100), 3);
        assert_eq!(warmup_steps(0.03, 101), 4); // ceil(3.03)
        assert_eq!(warmup_steps(0.03, 471), 15); // ceil(14.13): the tutorial's ratio
        assert_eq!(warmup_steps(5.0, 100), 5);
        assert_eq!(warmup_steps(2.7, 100), 2); // int() truncates
        assert_eq!(warmup_steps(1.0, 100), 1);
        assert_eq!(warmup_steps(-1.0, 100), 0);
    }

    #[test]
    fn intervals() {
        assert_eq!(resolve_interval(10.0, 471), 10);
        assert_eq!(resolve_interval(0.1, 471), 48);
        assert_eq!(resolve_interval(0.5, 3), 2);
    }

    #[test]
    fn step_counts_follow_the_trainer() {
        // The tutorial's batch 4 and accumulation 8 over 1,000 rows.
        let t = training_steps(1000, 4, 8, 3.0, -1).unwrap();
        assert_eq!(t.batches_per_epoch, 250);
        assert_eq!(t.updates_per_epoch, 32); // ceil(250 / 8)
        assert_eq!(t.max_steps, 96);
        assert_eq!(t.epochs, 3);
        assert_eq!(t.batches_in_update(0), 8);
        assert_eq!(t.batches_in_update(31), 2); // 250 % 8
        // A partial last batch still counts as a batch.
        let t = training_steps(10, 4, 1, 1.0, -1).unwrap();
        assert_eq!((t.batches_per_epoch, t.max_steps), (3, 3));
        // Fractional epochs: ceil(2.5 * 10) updates over ceil(2.5) epochs.
        let t = training_steps(40, 4, 1, 2.5, -1).unwrap();
        assert_eq!((t.updates_per_epoch, t.max_steps, t.epochs), (10, 25, 3));
        // max_steps overrides epochs.
        let t = training_steps(40, 4, 1, 2.5, 7).unwrap();
        assert_eq!((t.max_steps, t.epochs), (7, 1));
        let t = training_steps(40, 4, 1, 1.0, 25).unwrap();
        assert_eq!((t.max_steps, t.epochs), (25, 3));
        // Fewer batches than one accumulation group: still one update per epoch.
        let t = training_steps(3, 1, 8, 2.0, -1).unwrap();
        assert_eq!((t.updates_per_epoch, t.max_steps), (1, 2));
        assert_eq!(t.batches_in_update(0), 3);
        assert_eq!(t.epoch_progress(1, 3), 2.0);
    }

    #[test]
    fn step_count_errors() {
        assert_eq!(
            training_steps(0, 4, 1, 3.0, -1),
            Err(ScheduleError::NoData(-1))
        );
        assert!(training_steps(10, 0, 1, 3.0, -1).is_err());
        assert!(training_steps(10, 1, 0, 3.0, -1).is_err());
    }

    #[test]
    fn names_round_trip() {
        for n in SchedulerType::NAMES {
            assert_eq!(n.parse::<SchedulerType>().unwrap().name(), n);
        }
        let e = "cosine_with_restarts".parse::<SchedulerType>().unwrap_err();
        assert!(e.contains("constant_with_warmup"), "{e}");
    }

    proptest! {
        #[test]
        fn rates_stay_within_zero_and_base(
            kind in 0usize..4,
            base in 0.0f64..1.0,
            warmup in 0u64..50,
            total in 0u64..500,
            step in 0u64..1000,
        ) {
            let kind = [
                SchedulerType::Constant,
                SchedulerType::ConstantWithWarmup,
                SchedulerType::Linear,
                SchedulerType::Cosine,
            ][kind];
            let s = LrSchedule::new(kind, base, warmup, total);
            for lr in [s.lr_for_update(step), s.logged_lr(step), s.lr_after_step(step)] {
                prop_assert!((0.0..=base).contains(&lr), "{kind} step {step}: {lr}");
            }
        }

        #[test]
        fn warmup_rises_linearly(warmup in 1u64..100, total in 100u64..1000) {
            for kind in [SchedulerType::ConstantWithWarmup, SchedulerType::Linear, SchedulerType::Cosine] {
                let s = LrSchedule::new(kind, 1.0, warmup, total);
                for k in 0..warmup {
                    prop_assert_eq!(s.lambda(k), k as f64 / warmup as f64);
                }
                prop_assert_eq!(s.lambda(warmup), 1.0);
            }
        }

        #[test]
        fn step_counts_cover_the_data(
            n in 1u64..5000, batch in 1u64..16, accum in 1u64..16, epochs in 0.1f64..5.0,
        ) {
            let t = training_steps(n, batch, accum, epochs, -1).unwrap();
            let per_epoch: u64 = (0..t.updates_per_epoch).map(|u| t.batches_in_update(u)).sum();
            prop_assert_eq!(per_epoch, t.batches_per_epoch);
            prop_assert!(t.max_steps <= t.epochs * t.updates_per_epoch);
            prop_assert!(t.max_steps > (t.epochs - 1) * t.updates_per_epoch);
        }
    }
}
