//! Checkpoint files → a verified [`VarBuilder`] under tailor's canonical tensor names.
//!
//! Checkpoints come in two naming schemes: what `save_pretrained` writes in every transformers
//! version (`visual.*`, `model.*`, `lm_head.weight`) and the in-memory naming of transformers
//! ≥ 4.52 (`model.visual.*`, `model.language_model.*`, `lm_head.weight`). Every stored name is
//! normalised to the second form with transformers' own rule (`^visual` → `model.visual`,
//! `^model(?!\.(language_model|visual))` → `model.language_model`), so the model's `vb.pp(..)`
//! paths equal the module names that PEFT adapters use. Before a [`VarBuilder`] is handed out, the
//! set of stored names and shapes is compared with [`expected_tensors`]; any difference is one
//! [`ModelError::WeightMismatch`] listing every missing, unexpected and mis-shaped tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::config::Config;
use crate::error::{ModelError, Result, ShapeMismatch, TensorSpec, WeightReport};

/// Canonical name of the output projection.
pub const LM_HEAD: &str = "lm_head.weight";

/// Canonical prefix of the vision tower.
pub const VISION_PREFIX: &str = "model.visual";

/// Canonical prefix of the language model.
pub const TEXT_PREFIX: &str = "model.language_model";

/// Maps a stored tensor name of either naming scheme to the canonical (in-memory) name.
pub fn canonical_name(stored: &str) -> String {
    if stored.starts_with("visual") {
        format!("model.{stored}")
    } else if let Some(rest) = stored.strip_prefix("model")
        && !rest.starts_with(".language_model")
        && !rest.starts_with(".visual")
    {
        format!("model.language_model{rest}")
    } else {
        stored.to_owned()
    }
}

/// Every tensor the model reads, with its shape, in canonical naming. `lm_head.weight` is listed
/// only when `with_lm_head` (untied output projection).
pub fn expected_tensors(cfg: &Config, with_lm_head: bool) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| out.push(TensorSpec { name, shape });

    let v = &cfg.vision;
    let p = VISION_PREFIX;
    let (vh, vi) = (v.hidden_size, v.intermediate_size);
    push(
        format!("{p}.patch_embed.proj.weight"),
        vec![
            vh,
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ],
    );
    for i in 0..v.depth {
        let b = format!("{p}.blocks.{i}");
        push(format!("{b}.norm1.weight"), vec![vh]);
        push(format!("{b}.norm2.weight"), vec![vh]);
        push(format!("{b}.attn.qkv.weight"), vec![3 * vh, vh]);
        push(format!("{b}.attn.qkv.bias"), vec![3 * vh]);
        push(format!("{b}.attn.proj.weight"), vec![vh, vh]);
        push(format!("{b}.attn.proj.bias"), vec![vh]);
        for proj in ["gate_proj", "up_proj"] {
            push(format!("{b}.mlp.{proj}.weight"), vec![vi, vh]);
            push(format!("{b}.mlp.{proj}.bias"), vec![vi]);
        }
        push(format!("{b}.mlp.down_proj.weight"), vec![vh, vi]);
        push(format!("{b}.mlp.down_proj.bias"), vec![vh]);
    }
    let merged = vh * v.merge_unit();
    push(format!("{p}.merger.ln_q.weight"), vec![vh]);
    push(format!("{p}.merger.mlp.0.weight"), vec![merged, merged]);
    push(format!("{p}.merger.mlp.0.bias"), vec![merged]);
    push(
        format!("{p}.merger.mlp.2.weight"),
        vec![v.out_hidden_size, merged],
    );
    push(format!("{p}.merger.mlp.2.bias"), vec![v.out_hidden_size]);

    let t = &cfg.text;
    let p = TEXT_PREFIX;
    let (h, inter) = (t.hidden_size, t.intermediate_size);
    let q = t.num_attention_heads * t.head_dim;
    let kv = t.num_key_value_heads * t.head_dim;
    push(format!("{p}.embed_tokens.weight"), vec![t.vocab_size, h]);
    for i in 0..t.num_hidden_layers {
        let l = format!("{p}.layers.{i}");
        push(format!("{l}.input_layernorm.weight"), vec![h]);
        push(format!("{l}.post_attention_layernorm.weight"), vec![h]);
        push(format!("{l}.self_attn.q_proj.weight"), vec![q, h]);
        push(format!("{l}.self_attn.q_proj.bias"), vec![q]);
        for proj in ["k_proj", "v_proj"] {
            push(format!("{l}.self_attn.{proj}.weight"), vec![kv, h]);
            push(format!("{l}.self_attn.{proj}.bias"), vec![kv]);
        }
        push(format!("{l}.self_attn.o_proj.weight"), vec![h, q]);
        push(format!("{l}.mlp.gate_proj.weight"), vec![inter, h]);
        push(format!("{l}.mlp.up_proj.weight"), vec![inter, h]);
        push(format!("{l}.mlp.down_proj.weight"), vec![h, inter]);
    }
    push(format!("{p}.norm.weight"), vec![h]);
    if with_lm_head {
        push(LM_HEAD.to_owned(), vec![t.vocab_size, h]);
    }
    out
}

/// One stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// The name in the file.
    pub stored_name: String,
    /// The shape in the file.
    pub shape: Vec<usize>,
}

/// Memory-mapped safetensors files (one file or the shards of an index) with their tensors
/// indexed by canonical name.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    data: Arc<MmapedSafetensors>,
    tensors: BTreeMap<String, StoredTensor>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.files)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens the weights of a model directory: `model.safetensors`, or else the shards named by
    /// `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        let index = dir.join("model.safetensors.index.json");
        if !index.is_file() {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
            path: index.clone(),
            source,
        })?;
        let parsed: ShardIndex =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                what: index.display().to_string(),
                source,
            })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for file in parsed.weight_map.values() {
            let path = dir.join(file);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        Self::open_files(&files)
    }

    /// Memory-maps the given safetensors files. A tensor name that occurs twice (in one scheme or
    /// across the two) is an error.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        for file in files {
            if !file.is_file() {
                return Err(ModelError::Io {
                    path: file.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
        }
        // SAFETY: the files are mapped read-only; like every safetensors loader we rely on them
        // not being modified while the model is alive.
        let data = unsafe { MmapedSafetensors::multi(files)? };
        let mut tensors = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (stored, view) in data.tensors() {
            if !seen.insert(stored.clone()) {
                return Err(ModelError::DuplicateTensor {
                    first: stored.clone(),
                    second: stored,
                });
            }
            let canonical = canonical_name(&stored);
            let entry = StoredTensor {
                stored_name: stored,
                shape: view.shape().to_vec(),
            };
            if let Some(previous) = tensors.insert(canonical, entry.clone()) {
                return Err(ModelError::DuplicateTensor {
                    first: previous.stored_name,
                    second: entry.stored_name,
                });
            }
        }
        Ok(Self {
            files: files.to_vec(),
            data: Arc::new(data),
            tensors,
        })
    }

    /// One stored tensor by canonical name, in its stored dtype.
    pub fn load(&self, canonical: &str, device: &Device) -> Result<Tensor> {
        let stored = self.tensors.get(canonical).ok_or_else(|| {
            ModelError::Candle(candle_core::Error::CannotFindTensor {
                path: canonical.to_owned(),
            })
        })?;
        Ok(self.data.load(&stored.stored_name, device)?)
    }

    /// The mapped files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Stored tensors by canonical name.
    pub fn tensors(&self) -> &BTreeMap<String, StoredTensor> {
        &self.tensors
    }

    /// Whether `lm_head` is tied to the embedding: when the config says so, or when the checkpoint
    /// has no `lm_head.weight` (transformers then ties it too). A stored `lm_head.weight` of a tied
    /// model is ignored, as transformers ignores it.
    pub fn ties_lm_head(&self, cfg: &Config) -> bool {
        cfg.tie_word_embeddings || !self.tensors.contains_key(LM_HEAD)
    }

    /// Compares the stored names and shapes with what `cfg` requires.
    pub fn report(&self, cfg: &Config) -> WeightReport {
        let tied = self.ties_lm_head(cfg);
        let expected = expected_tensors(cfg, !tied);
        let mut report = WeightReport::default();
        let mut wanted: HashMap<&str, &[usize]> = HashMap::new();
        for spec in &expected {
            wanted.insert(&spec.name, &spec.shape);
            match self.tensors.get(&spec.name) {
                None => report.missing.push(spec.clone()),
                Some(stored) if stored.shape != spec.shape => {
                    report.mismatched.push(ShapeMismatch {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                        found: stored.shape.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        for (name, stored) in &self.tensors {
            let ignored_lm_head = tied && name == LM_HEAD;
            if !wanted.contains_key(name.as_str()) && !ignored_lm_head {
                report.unexpected.push(TensorSpec {
                    name: name.clone(),
                    shape: stored.shape.clone(),
                });
            }
        }
        report
    }

    /// Verifies the checkpoint against `cfg` and returns a [`VarBuilder`] that reads tensors by
    /// canonical name, converted to `dtype` on `device`.
    pub fn var_builder(
        &self,
        cfg: &Config,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        let backend = self.backend(cfg, None)?;
        Ok(VarBuilder::from_backend(
            Box::new(backend),
            dtype,
            device.clone(),
        ))
    }

    /// [`Checkpoint::var_builder`] where the tensors that `replace.select` picks are served from
    /// `replace.values` when given there (else from the file), converted to `dtype`, and — with
    /// `replace.trainable` — as fresh [`Var`]s, which land in the returned list as they are read.
    pub(crate) fn var_builder_replacing(
        &self,
        cfg: &Config,
        dtype: DType,
        device: &Device,
        replace: Replace,
    ) -> Result<(VarBuilder<'static>, MadeVars)> {
        let made = Arc::new(Mutex::new(Vec::new()));
        let backend = self.backend(cfg, Some((replace, Arc::clone(&made))))?;
        Ok((
            VarBuilder::from_backend(Box::new(backend), dtype, device.clone()),
            made,
        ))
    }

    fn backend(
        &self,
        cfg: &Config,
        replace: Option<(Replace, MadeVars)>,
    ) -> Result<CanonicalNames> {
        let report = self.report(cfg);
        if !report.is_clean() {
            return Err(ModelError::WeightMismatch(report));
        }
        let names = self
            .tensors
            .iter()
            .map(|(canonical, stored)| (canonical.clone(), stored.stored_name.clone()))
            .collect();
        Ok(CanonicalNames {
            data: Arc::clone(&self.data),
            names,
            replace,
        })
    }
}

/// The [`Var`]s a replacing backend made, by canonical name, in the order they were read.
pub(crate) type MadeVars = Arc<Mutex<Vec<(String, Var)>>>;

/// Which tensors a [`Checkpoint::var_builder_replacing`] serves differently, and how.
pub(crate) struct Replace {
    /// Picks tensors by canonical name.
    pub select: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Values that replace the stored ones.
    pub values: HashMap<String, Tensor>,
    /// Serve the picked tensors as trainable [`Var`]s.
    pub trainable: bool,
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// A [`SimpleBackend`] that serves canonical names from the stored ones.
struct CanonicalNames {
    data: Arc<MmapedSafetensors>,
    names: HashMap<String, String>,
    replace: Option<(Replace, MadeVars)>,
}

impl CanonicalNames {
    fn stored(&self, name: &str) -> candle_core::Result<&str> {
        self.names.get(name).map(String::as_str).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            }
            .bt()
        })
    }
}

impl SimpleBackend for CanonicalNames {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "tensor {name}: expected shape {:?}, found {:?}",
                shape.dims(),
                tensor.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some((replace, made)) = self.replace.as_ref().filter(|(r, _)| (r.select)(name)) else {
            return self.data.load(self.stored(name)?, dev)?.to_dtype(dtype);
        };
        let tensor = match replace.values.get(name) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype)?,
            None => self.data.load(self.stored(name)?, dev)?.to_dtype(dtype)?,
        };
        if !replace.trainable {
            return Ok(tensor);
        }
        let var = Var::from_tensor(&tensor)?;
        made.lock()
            .expect("the list is only pushed to")
            .push((name.to_owned(), var.clone()));
        Ok(var.as_tensor().clone())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_naming_schemes_normalise_to_the_in_memory_names() {
        let cases = [
            (
                "visual.blocks.0.attn.qkv.weight",
                "model.visual.blocks.0.attn.qkv.weight",
            ),
            (
                "model.visual.merger.ln_q.weight",
                "model.visual.merger.ln_q.weight",
            ),
            (
                "model.layers.3.mlp.up_proj.weight",
                "model.language_model.layers.3.mlp.up_proj.weight",
            ),
            (
                "model.embed_tokens.weight",
                "model.language_model.embed_tokens.weight",
            ),
            (
                "model.language_model.norm.weight",
                "model.language_model.norm.weight",
            ),
            ("lm_head.weight", "lm_head.weight"),
        ];
        for (stored, canonical) in cases {
            assert_eq!(canonical_name(stored), canonical, "{stored}");
        }
    }

    #[test]
    fn parameter_counts_of_the_3b_match_the_published_summary() {
        let cfg = Config::from_json_str(include_str!("../tests/data/config_3b_flat.json")).unwrap();
        let specs = expected_tensors(&cfg, false);
        let count = |prefix: &str| -> usize {
            specs
                .iter()
                .filter(|s| s.name.starts_with(prefix))
                .map(|s| s.shape.iter().product::<usize>())
                .sum()
        };
        // docs/qwen2_5_vl_reference.md §1.1.
        assert_eq!(count("model.visual.patch_embed."), 1_505_280);
        assert_eq!(count("model.visual.blocks.0."), 19_702_200);
        assert_eq!(count("model.visual.merger.mlp."), 36_707_328);
        assert_eq!(count("model.language_model.layers.0."), 77_076_992);
        assert_eq!(count("model.language_model.embed_tokens."), 151_936 * 2048);
        assert!(!specs.iter().any(|s| s.name == LM_HEAD));
    }
}
