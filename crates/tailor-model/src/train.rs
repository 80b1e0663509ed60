//! The training-side forward and backward passes: causal-LM cross-entropy computed only at the
//! labelled positions, with or without gradient checkpointing.
//!
//! The loss follows transformers' `ForCausalLMLoss`: position `p` predicts `labels[p + 1]`, logits
//! are upcast to float32, positions whose shifted label is `IGNORE_INDEX` do not count. Instead
//! of the mean, [`Qwen25Vl::loss_and_grads`] back-propagates `Σ CE / normalizer`, so the trainer
//! can divide by the number of labelled tokens of a whole accumulated batch (transformers'
//! `num_items_in_batch`) and simply add the micro-batch gradients.

use std::collections::HashMap;

use candle_core::{D, DType, Result, Tensor, TensorId, Var};
use tailor_core::IGNORE_INDEX;

use crate::model::{Qwen25Vl, VlmInputs};

/// Positions that have a label to predict, and those labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftedTargets {
    /// `(row, position)` pairs whose next token is labelled.
    pub positions: Vec<(usize, usize)>,
    /// The label each of those positions predicts.
    pub targets: Vec<u32>,
}

impl ShiftedTargets {
    /// From row-major `labels` `[batch, len]`: position `p` of row `r` is kept when
    /// `labels[r][p + 1]` is not [`IGNORE_INDEX`].
    pub fn new(labels: &[i64], batch: usize, len: usize) -> Self {
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for r in 0..batch {
            for p in 0..len.saturating_sub(1) {
                let next = labels[r * len + p + 1];
                if next != IGNORE_INDEX {
                    positions.push((r, p));
                    targets.push(next as u32);
                }
            }
        }
        Self { positions, targets }
    }

    /// Number of labelled tokens.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether nothing is labelled.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// One micro-batch's loss and gradients.
#[derive(Debug)]
pub struct LossAndGrads {
    /// Σ cross-entropy over the labelled tokens (float32 arithmetic, as a f64).
    pub loss_sum: f64,
    /// Number of labelled tokens.
    pub tokens: usize,
    /// d(Σ CE / normalizer)/d(param), one per parameter passed in, in that order (zeros for a
    /// parameter that the loss does not reach).
    pub grads: Vec<Tensor>,
}

impl Qwen25Vl {
    /// Σ cross-entropy over the labelled tokens `[1]` (a tensor, so that it can be
    /// back-propagated) from final hidden states.
    fn cross_entropy_sum(&self, hidden: &Tensor, targets: &ShiftedTargets) -> Result<Tensor> {
        let logits = self
            .logits_at(hidden, &targets.positions)?
            .to_dtype(DType::F32)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let index = Tensor::from_slice(&targets.targets, (targets.len(), 1), hidden.device())?;
        log_probs.gather(&index, 1)?.sum_all()?.neg()
    }

    /// Σ cross-entropy and the number of labelled tokens, without building a gradient graph
    /// (each decoder layer's output is detached), for evaluation.
    pub fn loss_sum(&self, inputs: &VlmInputs, labels: &[i64]) -> Result<(f64, usize)> {
        let (b, l) = inputs.input_ids.dims2()?;
        let targets = ShiftedTargets::new(labels, b, l);
        if targets.is_empty() {
            return Ok((0.0, 0));
        }
        let hidden = self.checkpointed_forward(inputs)?.1;
        let text = self.text();
        let hidden = text.final_norm(&hidden)?.detach();
        let ce = self.cross_entropy_sum(&hidden, &targets)?.detach();
        Ok((f64::from(ce.to_scalar::<f32>()?), targets.len()))
    }

    /// Runs the decoder layer by layer with detached outputs; returns each layer's input and the
    /// last layer's output (not yet normed). The input embeddings keep their graph (for vision
    /// adapters); the first layer's input is their detached copy.
    fn checkpointed_forward(&self, inputs: &VlmInputs) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
        let embeds = self.input_embeds(inputs)?;
        let (b, l, _) = embeds.dims3()?;
        let text = self.text();
        let ctx = text.context(
            &inputs.position_ids,
            &inputs.attention_mask,
            b,
            l,
            embeds.dtype(),
        )?;
        let mut layer_inputs = Vec::with_capacity(text.num_layers());
        let mut xs = embeds.detach();
        for i in 0..text.num_layers() {
            layer_inputs.push(xs.clone());
            xs = text.layer_untracked(i, &xs, &ctx)?;
        }
        Ok((layer_inputs, xs, embeds))
    }

    /// Forward and backward of `Σ CE / normalizer` over the labelled tokens of one micro-batch.
    /// `labels` is row-major `[batch, len]` with [`IGNORE_INDEX`] for ignored positions.
    ///
    /// With `checkpointing`, the forward pass keeps only each decoder layer's input; the backward
    /// pass re-runs one layer at a time (same dropout masks: they derive from the runtime's key,
    /// not from a stream) and back-propagates `Σ out · grad_out` through it. The gradients equal
    /// those of the full graph up to float rounding order.
    pub fn loss_and_grads(
        &self,
        inputs: &VlmInputs,
        labels: &[i64],
        params: &[Var],
        normalizer: f64,
        checkpointing: bool,
    ) -> Result<LossAndGrads> {
        let (b, l) = inputs.input_ids.dims2()?;
        if labels.len() != b * l {
            candle_core::bail!("labels hold {} values for a [{b}, {l}] batch", labels.len());
        }
        let targets = ShiftedTargets::new(labels, b, l);
        let mut acc = GradAccumulator::new(params)?;
        if targets.is_empty() {
            return Ok(LossAndGrads {
                loss_sum: 0.0,
                tokens: 0,
                grads: acc.finish(),
            });
        }
        let loss_sum;
        if checkpointing {
            let (layer_inputs, last, embeds) = self.checkpointed_forward(inputs)?;
            let text = self.text();
            let ctx = text.context(
                &inputs.position_ids,
                &inputs.attention_mask,
                b,
                l,
                last.dtype(),
            )?;
            let top = Var::from_tensor(&last)?;
            let ce = self.cross_entropy_sum(&text.final_norm(top.as_tensor())?, &targets)?;
            loss_sum = f64::from(ce.to_scalar::<f32>()?);
            let grads = (ce / normalizer)?.backward()?;
            acc.add(&grads)?;
            let mut grad_out = match grads.get(top.as_tensor()) {
                Some(g) => g.detach(),
                None => last.zeros_like()?,
            };
            drop(grads);
            for i in (0..text.num_layers()).rev() {
                if let Some(layer) = text.layer_grads(i, &layer_inputs[i], &ctx, &grad_out)? {
                    acc.add_each(layer.lora)?;
                    grad_out = layer.input;
                    continue;
                }
                let input = Var::from_tensor(&layer_inputs[i])?;
                let out = text.layer(i, input.as_tensor(), &ctx)?;
                let grads = (out * &grad_out)?.sum_all()?.backward()?;
                acc.add(&grads)?;
                grad_out = match grads.get(input.as_tensor()) {
                    Some(g) => g.detach(),
                    None => grad_out.zeros_like()?,
                };
            }
            // Trainable weights below the decoder (vision adapters, a trainable embedding or
            // vision tower in full fine-tuning, `modules_to_save` copies) make the embeddings
            // tracked; only then is there anything to back-propagate into.
            if embeds.track_op() {
                let grads = (embeds * &grad_out)?.sum_all()?.backward()?;
                acc.add(&grads)?;
            }
        } else {
            let hidden = self.forward(inputs)?;
            let ce = self.cross_entropy_sum(&hidden, &targets)?;
            loss_sum = f64::from(ce.to_scalar::<f32>()?);
            let grads = (ce / normalizer)?.backward()?;
            acc.add(&grads)?;
        }
        Ok(LossAndGrads {
            loss_sum,
            tokens: targets.len(),
            grads: acc.finish(),
        })
    }
}

/// Sums the gradients of a fixed parameter list over several backward passes.
struct GradAccumulator {
    ids: HashMap<TensorId, usize>,
    params: Vec<Tensor>,
    sums: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    fn new(params: &[Var]) -> Result<Self> {
        Ok(Self {
            ids: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id(), i))
                .collect(),
            params: params.iter().map(|p| p.as_tensor().clone()).collect(),
            sums: vec![None; params.len()],
        })
    }

    fn add(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        let found: Vec<(TensorId, Tensor)> = self
            .params
            .iter()
            .filter_map(|p| Some((p.id(), grads.get(p)?.clone())))
            .collect();
        self.add_each(found)
    }

    /// Adds gradients given by parameter id (ids outside the parameter list are ignored, as
    /// [`GradAccumulator::add`] ignores the graph's other tensors).
    fn add_each(&mut self, grads: Vec<(TensorId, Tensor)>) -> Result<()> {
        for (id, g) in grads {
            if let Some(&i) = self.ids.get(&id) {
                self.sums[i] = Some(match self.sums[i].take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// The sums, detached: candle's backward returns gradients that can still carry a graph
    /// (e.g. `grad · x` for a tracked `x`), and an optimizer moment built from one would keep
    /// every earlier step's graph alive.
    fn finish(self) -> Vec<Tensor> {
        self.sums
            .into_iter()
            .zip(&self.params)
            .map(|(s, p)| match s {
                Some(s) => s.detach(),
                None => p.zeros_like().expect("zeros of a live tensor").detach(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::{max_abs, max_diff, tensor};
    use crate::{InitFrom, LoraInit, LoraSpec, Qwen25Vl, TargetModules};
    use candle_core::Device;

    fn tied(dtype: DType, modules_to_save: &[&str]) -> (Qwen25Vl, crate::Adapter) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/model/tied");
        let saved: Vec<String> = modules_to_save.iter().map(|m| m.to_string()).collect();
        let mut model =
            Qwen25Vl::load_with_saved(&dir, dtype, &Device::Cpu, &saved, None, true).unwrap();
        let spec = LoraSpec {
            r: 4,
            lora_alpha: 8.0,
            lora_dropout: 0.2,
            use_rslora: false,
            target_modules: TargetModules::AllLinear,
            adapt_vision: false,
            init: LoraInit::Kaiming,
            modules_to_save: saved,
        };
        let adapter = model.attach_lora(&spec, InitFrom::Seed(5)).unwrap();
        // B starts at zero; random B exercises every path of the branch.
        for (i, (_, var)) in adapter.params().iter().enumerate() {
            var.set(&tensor(var.dims(), i as u64, DType::F32)).unwrap();
        }
        adapter.runtime().set_training(true);
        adapter.runtime().set_dropout_key(7);
        (model, adapter)
    }

    #[test]
    fn a_layers_graph_free_backward_equals_candles_graph() {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 3e-2)] {
            let (model, adapter) = tied(dtype, &[]);
            let text = model.text();
            let (b, l) = (2, 6);
            let hidden = model.config().text.hidden_size;
            let xs = tensor(&[b, l, hidden], 100, dtype);
            let grad_out = tensor(&[b, l, hidden], 101, dtype);
            let positions = Tensor::arange(0i64, l as i64, &Device::Cpu)
                .unwrap()
                .reshape((1, 1, l))
                .unwrap()
                .broadcast_as((3, b, l))
                .unwrap()
                .contiguous()
                .unwrap();
            let attention =
                Tensor::new(&[[1u8, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], &Device::Cpu).unwrap();
            let ctx = text.context(&positions, &attention, b, l, dtype).unwrap();

            let ours = text
                .layer_grads(1, &xs, &ctx, &grad_out)
                .unwrap()
                .expect("a LoRA layer is traceable");
            let input = Var::from_tensor(&xs).unwrap();
            let out = text.layer(1, input.as_tensor(), &ctx).unwrap();
            let graph = (out * &grad_out)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();

            let close = |name: &str, a: &Tensor, b: &Tensor| {
                let (scale, diff) = (max_abs(b), max_diff(a, b));
                assert!(scale > 0.0, "{dtype:?} {name}: zero gradient");
                assert!(
                    diff <= tol * scale,
                    "{dtype:?} {name}: differs by {diff} (max {scale})"
                );
            };
            close("input", &ours.input, graph.get(input.as_tensor()).unwrap());
            let layer_params: Vec<_> = adapter
                .params()
                .into_iter()
                .filter(|(n, _)| n.contains("layers.1."))
                .collect();
            // q, k, v, o, gate, up, down: an A and a B each.
            assert_eq!(ours.lora.len(), 14);
            assert_eq!(layer_params.len(), 14);
            for (name, var) in &layer_params {
                let (_, g) = ours
                    .lora
                    .iter()
                    .find(|(id, _)| *id == var.id())
                    .expect(name);
                close(name, g, graph.get(var.as_tensor()).unwrap());
            }
        }
    }

    #[test]
    fn a_layer_with_trainable_base_weights_goes_through_the_graph() {
        let (model, _) = tied(DType::F32, &["input_layernorm"]);
        let text = model.text();
        let hidden = model.config().text.hidden_size;
        let xs = Tensor::zeros((1, 2, hidden), DType::F32, &Device::Cpu).unwrap();
        let positions = Tensor::zeros((3, 1, 2), DType::I64, &Device::Cpu).unwrap();
        let attention = Tensor::ones((1, 2), DType::U8, &Device::Cpu).unwrap();
        let ctx = text
            .context(&positions, &attention, 1, 2, DType::F32)
            .unwrap();
        assert!(text.layer_grads(0, &xs, &ctx, &xs).unwrap().is_none());
    }

    #[test]
    fn targets_shift_left_and_skip_ignored_labels() {
        let labels = [IGNORE_INDEX, 5, 6, IGNORE_INDEX, 1, IGNORE_INDEX, 7, 8];
        let t = ShiftedTargets::new(&labels, 2, 4);
        assert_eq!(t.positions, vec![(0, 0), (0, 1), (1, 1), (1, 2)]);
        assert_eq!(t.targets, vec![5, 6, 7, 8]);
    }
}
