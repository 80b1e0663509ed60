//! The full Qwen2.5-VL model: vision tower, embedding merge, decoder and output projection.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use tailor_core::{Batch, ImageGrid};

use crate::adapter::{Adapter, AdapterFile, select_targets};
use crate::config::Config;
use crate::lora::{InitFrom, LoraRuntime, LoraSpec, Projection, build_layers};
use crate::text::TextModel;
use crate::vision::VisionTower;
use crate::weights::{Checkpoint, LM_HEAD, TEXT_PREFIX, VISION_PREFIX};

/// The inputs of one forward pass.
#[derive(Debug, Clone)]
pub struct VlmInputs {
    /// Token ids `[batch, len]` (u32 or i64).
    pub input_ids: Tensor,
    /// 1 for real tokens, 0 for padding, `[batch, len]` (any integer or float dtype).
    pub attention_mask: Tensor,
    /// M-RoPE positions `[3, batch, len]` (temporal, height, width rows), as
    /// `tailor_text::rope_index` computes them.
    pub position_ids: Tensor,
    /// Patch rows `[Σ t·h·w, patch_dim]` of all images in batch order, or `None` without images.
    pub pixel_values: Option<Tensor>,
    /// One grid per image, in the order of `pixel_values` and of the image placeholder runs.
    pub image_grids: Vec<ImageGrid>,
}

impl VlmInputs {
    /// Moves a collated [`Batch`] onto `device`.
    pub fn from_batch(batch: &Batch, device: &Device) -> Result<Self> {
        let tokens = &batch.tokens;
        let (b, l) = (tokens.batch_size, tokens.seq_len);
        let pixel_values = if batch.image_grids.is_empty() {
            None
        } else {
            let rows = batch.pixel_values.len() / batch.patch_dim.max(1);
            Some(Tensor::from_slice(
                &batch.pixel_values,
                (rows, batch.patch_dim),
                device,
            )?)
        };
        Ok(Self {
            input_ids: Tensor::from_slice(&tokens.input_ids, (b, l), device)?,
            attention_mask: Tensor::from_slice(&tokens.attention_mask, (b, l), device)?,
            position_ids: Tensor::from_slice(&tokens.position_ids, (3, b, l), device)?,
            pixel_values,
            image_grids: batch.image_grids.clone(),
        })
    }
}

/// Qwen2.5-VL for conditional generation.
#[derive(Debug, Clone)]
pub struct Qwen25Vl {
    visual: VisionTower,
    language_model: TextModel,
    lm_head: Tensor,
    cfg: Config,
    vision_lora: bool,
    /// Trainable copies of `modules_to_save` weights by canonical name (name order).
    saved: Vec<(String, candle_core::Var)>,
    /// The `modules_to_save` rules the weights were loaded for.
    saved_rules: Vec<String>,
}

impl Qwen25Vl {
    /// Builds the model from a [`VarBuilder`] that serves canonical names (`model.visual.*`,
    /// `model.language_model.*`, `lm_head.weight`), normally from [`Checkpoint::var_builder`].
    /// `lm_head` is tied to the embedding when the config says so or when the builder holds no
    /// `lm_head.weight` (as transformers does; note that a fresh `VarMap` holds nothing yet, so a
    /// model built on one is always tied).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let visual = VisionTower::new(&cfg.vision, vb.pp(VISION_PREFIX))?;
        let language_model = TextModel::new(&cfg.text, vb.pp(TEXT_PREFIX))?;
        let lm_head = if cfg.tie_word_embeddings || !vb.contains_tensor(LM_HEAD) {
            language_model.embedding_weight().clone()
        } else {
            vb.get((cfg.text.vocab_size, cfg.text.hidden_size), LM_HEAD)?
        };
        Ok(Self {
            visual,
            language_model,
            lm_head,
            cfg: cfg.clone(),
            vision_lora: false,
            saved: Vec::new(),
            saved_rules: Vec::new(),
        })
    }

    /// [`Qwen25Vl::load`] for an adapter with `modules_to_save` (PEFT's trainable module copies):
    /// the weights of the modules that `modules_to_save` selects come from `values` (canonical
    /// tensor names, e.g. an [`AdapterFile::saved`]) or else from the checkpoint, and with
    /// `trainable` they are [`Var`](candle_core::Var)s that the next
    /// [`Qwen25Vl::attach_lora`] hands to its adapter. Under tied embeddings, saving
    /// `lm_head` or `embed_tokens` unties them as PEFT does: each selected one is its own copy,
    /// the other keeps the original matrix. A value that names no selected weight is an error.
    pub fn load_with_saved(
        dir: &Path,
        dtype: DType,
        device: &Device,
        modules_to_save: &[String],
        values: Option<&std::collections::BTreeMap<String, Tensor>>,
        trainable: bool,
    ) -> crate::Result<Self> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let tied = checkpoint.ties_lm_head(&cfg);
        let rules = modules_to_save.to_vec();
        let select = move |name: &str| crate::lora::saved_module_tensor(&rules, name);
        // The weights this model has under the rules (a tied head counts as its own module).
        let selected: Vec<String> = crate::weights::expected_tensors(&cfg, true)
            .into_iter()
            .map(|t| t.name)
            .filter(|n| select(n))
            .collect();
        if let Some(values) = values
            && let Some(unknown) = values.keys().find(|k| !selected.contains(k))
        {
            return Err(crate::ModelError::InvalidConfig {
                key: "modules_to_save".into(),
                detail: format!(
                    "the adapter holds `{unknown}`, which is not a weight of a module that \
                     modules_to_save {modules_to_save:?} selects in this model"
                ),
            });
        }
        let values = values.cloned().unwrap_or_default();
        let embed = format!("{TEXT_PREFIX}.embed_tokens.weight");
        let head_own = tied && select(LM_HEAD);
        let embed_own = tied && select(&embed);
        let head_value = values.get(LM_HEAD).cloned();
        let replace = crate::weights::Replace {
            select: Box::new(select),
            values: values.into_iter().collect(),
            trainable,
        };
        let (vb, made) = checkpoint.var_builder_replacing(&cfg, dtype, device, replace)?;
        let mut model = Self::new(&cfg, vb)?;
        let mut saved = std::mem::take(&mut *made.lock().expect("not poisoned"));
        if head_own || embed_own {
            // Untie: the head is its own copy (selected) or the original matrix (only the
            // embedding selected).
            let head = match head_value.filter(|_| head_own) {
                Some(t) => t.to_device(device)?,
                None => checkpoint.load(&embed, device)?,
            }
            .to_dtype(dtype)?;
            model.lm_head = if head_own && trainable {
                let var = candle_core::Var::from_tensor(&head)?;
                saved.push((LM_HEAD.to_owned(), var.clone()));
                var.as_tensor().clone()
            } else {
                head
            };
        }
        saved.sort_by(|a, b| a.0.cmp(&b.0));
        model.saved = saved;
        model.saved_rules = modules_to_save.to_vec();
        Ok(model)
    }

    /// Reads `config.json` and the verified weights of a model directory.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let vb = checkpoint.var_builder(&cfg, dtype, device)?;
        Ok(Self::new(&cfg, vb)?)
    }

    /// Every linear layer (vision tower first, then the decoder), in module order.
    fn projections_mut(&mut self) -> Vec<&mut Projection> {
        let mut all = self.visual.projections_mut();
        all.extend(self.language_model.projections_mut());
        all
    }

    /// Module paths of every linear layer that LoRA could adapt, in module order.
    pub fn linear_modules(&mut self) -> Vec<String> {
        self.projections_mut()
            .iter()
            .map(|p| p.path().to_owned())
            .collect()
    }

    /// Adds LoRA pairs to the modules that `spec` targets (replacing any adapter already there),
    /// initialised from `init`. With [`InitFrom::Weights`] exactly the modules present in the
    /// map are adapted, and a map entry that names no linear layer is an error.
    pub fn attach_lora(&mut self, spec: &LoraSpec, init: InitFrom<'_>) -> crate::Result<Adapter> {
        let matcher = spec.matcher()?;
        let given = match init {
            InitFrom::Weights(map) => Some(map),
            InitFrom::Seed(_) => None,
        };
        let device = self.lm_head.device().clone();
        let mut projections = self.projections_mut();
        let all_paths: Vec<String> = projections.iter().map(|p| p.path().to_owned()).collect();
        if let Some(map) = given
            && let Some(unknown) = map.keys().find(|k| !all_paths.contains(k))
        {
            return Err(crate::ModelError::InvalidAdapter {
                path: unknown.into(),
                detail: format!("module {unknown} is not a linear layer of this model"),
            });
        }
        let mut targets = Vec::new();
        for p in projections.iter_mut() {
            p.set_lora(None);
            if select_targets(&matcher, given, p.path()) {
                let (i, o) = p.dims()?;
                targets.push((p.path().to_owned(), i, o));
            }
        }
        if targets.is_empty() {
            return Err(crate::ModelError::InvalidConfig {
                key: "target_modules".into(),
                detail: format!("{:?} matches no linear layer", spec.target_modules),
            });
        }
        let runtime = Arc::new(LoraRuntime::default());
        let layers = build_layers(spec, &targets, init, &runtime, &device)?;
        let mut by_path: std::collections::HashMap<&str, _> =
            targets.iter().map(|t| t.0.as_str()).zip(layers).collect();
        let mut named = Vec::with_capacity(targets.len());
        for p in projections.iter_mut() {
            if let Some(layer) = by_path.remove(p.path()) {
                p.set_lora(Some(layer.clone()));
                named.push((p.path().to_owned(), layer));
            }
        }
        drop(projections);
        self.vision_lora = named
            .iter()
            .any(|(p, _)| p.starts_with(crate::weights::VISION_PREFIX));
        Ok(Adapter::new(
            spec.clone(),
            named,
            all_paths,
            runtime,
            self.saved.clone(),
        ))
    }

    /// Attaches an adapter read from disk ([`AdapterFile::read`]).
    /// Its `modules_to_save` weights must have been loaded with the model
    /// ([`Qwen25Vl::load_with_saved`]).
    pub fn load_adapter(&mut self, file: &AdapterFile) -> crate::Result<Adapter> {
        if file.spec.modules_to_save != self.saved_rules {
            return Err(crate::ModelError::InvalidAdapter {
                path: file.dir.clone(),
                detail: format!(
                    "the adapter saves modules {:?}, the model was loaded for {:?} (load it \
                     with Qwen25Vl::load_with_saved)",
                    file.spec.modules_to_save, self.saved_rules
                ),
            });
        }
        self.attach_lora(&file.spec, InitFrom::Weights(&file.weights))
    }

    /// Whether any vision-tower layer carries an adapter (then the tower needs gradients).
    pub fn vision_adapted(&self) -> bool {
        self.vision_lora
    }

    /// Loads a model whose every weight is a trainable [`Var`](candle_core::Var) (full
    /// fine-tuning), returned by canonical name in checkpoint order. A tied `lm_head` is the
    /// embedding `Var` itself, so it is listed once.
    pub fn load_trainable(
        dir: &Path,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<(Self, Vec<(String, candle_core::Var)>)> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let tied = checkpoint.ties_lm_head(&cfg);
        // The same mechanism as `modules_to_save`, selecting every weight.
        let replace = crate::weights::Replace {
            select: Box::new(|_| true),
            values: Default::default(),
            trainable: true,
        };
        let (vb, made) = checkpoint.var_builder_replacing(&cfg, dtype, device, replace)?;
        let model = Self::new(&cfg, vb)?;
        let made = std::mem::take(&mut *made.lock().expect("not poisoned"));
        let read = made.len();
        let mut made: std::collections::HashMap<String, candle_core::Var> =
            made.into_iter().collect();
        if made.len() != read {
            // A weight read twice would be two separate variables.
            return Err(candle_core::Error::Msg("the model read a weight twice".into()).into());
        }
        let vars = crate::weights::expected_tensors(&cfg, !tied)
            .into_iter()
            .map(|spec| {
                let var = made.remove(&spec.name).ok_or_else(|| {
                    candle_core::Error::Msg(format!("the model never read {}", spec.name))
                })?;
                Ok((spec.name, var))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((model, vars))
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The vision tower.
    pub fn vision(&self) -> &VisionTower {
        &self.visual
    }

    /// The decoder.
    pub fn text(&self) -> &TextModel {
        &self.language_model
    }

    /// The output projection `[vocab, hidden]` (the embedding matrix when tied).
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// Decoder input `[batch, len, hidden]`: token embeddings with the image features written,
    /// in row-major (batch, position) order, over the `<|image_pad|>` positions. The number of
    /// such positions must equal the number of image features.
    pub fn input_embeds(&self, inputs: &VlmInputs) -> Result<Tensor> {
        let embeds = self.language_model.embed(&inputs.input_ids)?;
        let features = match &inputs.pixel_values {
            Some(pixels) => Some(self.visual.forward(pixels, &inputs.image_grids)?),
            None => None,
        };
        self.merge_image_features(&inputs.input_ids, embeds, features.as_ref())
    }

    fn merge_image_features(
        &self,
        input_ids: &Tensor,
        embeds: Tensor,
        features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, l, h) = embeds.dims3()?;
        let image = i64::from(self.cfg.tokens.image);
        let ids = input_ids
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        let positions: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == image).collect();
        let n_features = match features {
            Some(f) => f.dims2()?.0,
            None => 0,
        };
        if positions.len() != n_features {
            candle_core::bail!(
                "the input ids hold {} image tokens but the images give {n_features} features",
                positions.len()
            );
        }
        let Some(features) = features.filter(|_| n_features > 0) else {
            return Ok(embeds);
        };
        // Gather from [token embeddings; image features] so that the result stays differentiable
        // with respect to both.
        let rows = b * l;
        let all = Tensor::cat(
            &[
                &embeds.reshape((rows, h))?,
                &features.to_dtype(embeds.dtype())?,
            ],
            0,
        )?;
        let mut index: Vec<u32> = (0..rows as u32).collect();
        for (k, &p) in positions.iter().enumerate() {
            index[p] = (rows + k) as u32;
        }
        let index = Tensor::from_vec(index, rows, embeds.device())?;
        all.index_select(&index, 0)?.reshape((b, l, h))
    }

    /// Final-normed hidden states `[batch, len, hidden]`.
    pub fn forward(&self, inputs: &VlmInputs) -> Result<Tensor> {
        let embeds = self.input_embeds(inputs)?;
        self.language_model
            .forward(&embeds, &inputs.position_ids, &inputs.attention_mask)
    }

    /// transformers' `hidden_states` (see [`TextModel::forward_hidden_states`]).
    pub fn forward_hidden_states(&self, inputs: &VlmInputs) -> Result<Vec<Tensor>> {
        let embeds = self.input_embeds(inputs)?;
        self.language_model.forward_hidden_states(
            &embeds,
            &inputs.position_ids,
            &inputs.attention_mask,
        )
    }

    /// Logits `[batch, len, vocab]` of final hidden states `[batch, len, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, l, h) = hidden.dims3()?;
        hidden
            .reshape((b * l, h))?
            .matmul(&self.lm_head.t()?)?
            .reshape((b, l, ()))
    }

    /// Logits `[n, vocab]` at the given `(batch, position)` pairs only: the output projection runs
    /// on `n` rows instead of `batch · len` (a 151,936-word vocabulary makes full logits large).
    pub fn logits_at(&self, hidden: &Tensor, positions: &[(usize, usize)]) -> Result<Tensor> {
        let (b, l, h) = hidden.dims3()?;
        let mut index = Vec::with_capacity(positions.len());
        for &(row, pos) in positions {
            if row >= b || pos >= l {
                candle_core::bail!(
                    "logits_at: position ({row}, {pos}) is outside the [{b}, {l}] batch"
                );
            }
            index.push((row * l + pos) as u32);
        }
        let index = Tensor::from_vec(index, positions.len(), hidden.device())?;
        hidden
            .reshape((b * l, h))?
            .index_select(&index, 0)?
            .matmul(&self.lm_head.t()?)
    }
}
