//! Merging a LoRA adapter into its base model and writing the result in the Hugging Face layout.
//!
//! Each adapted weight becomes `W + scaling · B·A`, computed in float32 and cast to the export
//! dtype; everything else is copied (cast when the dtype changes). Tensors are written under the
//! on-disk names that `save_pretrained` uses (`model.layers.*`, `visual.*`, `lm_head.weight`), in
//! shards of at most `max_shard_bytes` with `model.safetensors.index.json`, and every other file
//! of the model folder (config, generation config, tokenizer, processor, chat template) is copied,
//! `config.json` with its dtype updated. Memory holds one shard at a time.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use crate::adapter::{AdapterFile, write_safetensors};
use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::weights::{Checkpoint, LM_HEAD, TEXT_PREFIX, VISION_PREFIX};

/// What [`export_merged`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Shard file names in order.
    pub shards: Vec<String>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of weights that received an adapter delta.
    pub merged: usize,
    /// Total bytes of tensor data.
    pub total_bytes: u64,
}

/// The name `save_pretrained` writes for a canonical in-memory name.
pub fn on_disk_name(canonical: &str) -> String {
    if let Some(rest) = canonical.strip_prefix(TEXT_PREFIX) {
        format!("model{rest}")
    } else if let Some(rest) = canonical.strip_prefix(VISION_PREFIX) {
        format!("visual{rest}")
    } else {
        canonical.to_owned()
    }
}

/// `W + scaling · (B·A)` in float32, cast to `dtype`.
pub fn merge_weight(
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    dtype: DType,
) -> Result<Tensor> {
    let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * scaling)?;
    Ok((w.to_dtype(DType::F32)? + delta)?.to_dtype(dtype)?)
}

/// Merges `adapter` into the model in `model_dir` and writes the merged model to `out_dir`
/// (created; it must not be `model_dir`). `progress` is called after each tensor with
/// (done, total).
pub fn export_merged(
    model_dir: &Path,
    adapter: &AdapterFile,
    out_dir: &Path,
    dtype: DType,
    max_shard_bytes: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExportReport> {
    let cfg = Config::from_file(&model_dir.join("config.json"))?;
    let checkpoint = Checkpoint::open(model_dir)?;
    let report = checkpoint.report(&cfg);
    if !report.is_clean() {
        return Err(ModelError::WeightMismatch(report));
    }
    let tied = checkpoint.ties_lm_head(&cfg);
    let scaling_of = |r: usize| {
        if adapter.spec.use_rslora {
            adapter.spec.lora_alpha / (r as f64).sqrt()
        } else {
            adapter.spec.lora_alpha / r as f64
        }
    };
    for path in adapter.weights.keys() {
        let name = format!("{path}.weight");
        if !checkpoint.tensors().contains_key(&name) {
            return Err(ModelError::InvalidAdapter {
                path: adapter.dir.clone(),
                detail: format!(
                    "module {path} has no weight `{name}` in {}",
                    model_dir.display()
                ),
            });
        }
    }
    let embed = format!("{}.embed_tokens.weight", crate::weights::TEXT_PREFIX);
    for name in adapter.saved.keys() {
        if !(checkpoint.tensors().contains_key(name) || tied && name == LM_HEAD) {
            return Err(ModelError::InvalidAdapter {
                path: adapter.dir.clone(),
                detail: format!(
                    "modules_to_save weight `{name}` is not a weight of {}",
                    model_dir.display()
                ),
            });
        }
    }
    // A saved copy of a tied head or embedding unties them (each is then its own matrix).
    let untie = tied && (adapter.saved.contains_key(LM_HEAD) || adapter.saved.contains_key(&embed));
    std::fs::create_dir_all(out_dir).map_err(|source| ModelError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;

    let mut names: Vec<&String> = checkpoint
        .tensors()
        .keys()
        .filter(|n| !(tied && n.as_str() == LM_HEAD))
        .collect();
    let head = LM_HEAD.to_owned();
    if untie {
        names.push(&head);
    }
    let total = names.len();
    let device = Device::Cpu;
    let mut current: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut shard_bytes = 0u64;
    let mut total_bytes = 0u64;
    let mut merged = 0;
    let mut written: Vec<(String, usize)> = Vec::new();
    let mut shard_files = Vec::new();
    let flush = |shard: &BTreeMap<String, Tensor>, index: usize| -> Result<String> {
        let file = format!("model.shard-{index:05}.safetensors");
        write_safetensors(&out_dir.join(&file), shard)?;
        Ok(file)
    };
    for (done, name) in names.iter().enumerate() {
        let module = name.strip_suffix(".weight");
        let tensor = if let Some(saved) = adapter.saved.get(name.as_str()) {
            merged += 1;
            saved.to_device(&device)?.to_dtype(dtype)?
        } else {
            // An untied head without its own copy keeps the original (embedding) matrix.
            let source = if untie && name.as_str() == LM_HEAD {
                &embed
            } else {
                name
            };
            let stored = checkpoint.load(source, &device)?;
            match module.and_then(|m| adapter.weights.get(m)) {
                Some((a, b)) => {
                    merged += 1;
                    merge_weight(&stored, a, b, scaling_of(a.dim(0)?), dtype)?
                }
                None => stored.to_dtype(dtype)?,
            }
        };
        let bytes = (tensor.elem_count() * dtype.size_in_bytes()) as u64;
        if shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes {
            shard_files.push(flush(&current, shard_files.len())?);
            current = BTreeMap::new();
            shard_bytes = 0;
        }
        shard_bytes += bytes;
        total_bytes += bytes;
        let disk = on_disk_name(name);
        written.push((disk.clone(), shard_files.len()));
        current.insert(disk, tensor);
        progress(done + 1, total);
    }
    shard_files.push(flush(&current, shard_files.len())?);
    drop(current);

    // Final names follow transformers' `model-0000i-of-0000n.safetensors`.
    let n = shard_files.len();
    let mut final_names = Vec::with_capacity(n);
    for (i, tmp) in shard_files.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        std::fs::rename(out_dir.join(tmp), out_dir.join(&name)).map_err(|source| {
            ModelError::Write {
                path: out_dir.join(&name),
                source,
            }
        })?;
        final_names.push(name);
    }
    let weight_map: BTreeMap<String, String> = written
        .iter()
        .map(|(name, shard)| (name.clone(), final_names[*shard].clone()))
        .collect();
    let index = json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map});
    write_json(&out_dir.join("model.safetensors.index.json"), &index)?;
    copy_model_files(model_dir, out_dir, dtype)?;
    if untie {
        untie_config(&out_dir.join("config.json"))?;
    }
    Ok(ExportReport {
        shards: final_names,
        tensors: written.len(),
        merged,
        total_bytes,
    })
}

/// Sets `tie_word_embeddings = false` in a written `config.json` (top level and `text_config`,
/// where transformers 5 reads it).
fn untie_config(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cfg: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        what: path.display().to_string(),
        source,
    })?;
    if let Some(obj) = cfg.as_object_mut() {
        obj.insert("tie_word_embeddings".into(), json!(false));
        if let Some(t) = obj.get_mut("text_config").and_then(Value::as_object_mut) {
            t.insert("tie_word_embeddings".into(), json!(false));
        }
    }
    write_json(path, &cfg)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise") + "\n";
    std::fs::write(path, text).map_err(|source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a whole model's weights (`(canonical name, tensor)`) as `model.safetensors` with the
/// on-disk names, and copies the other files of `source_dir` (config, tokenizer, processor):
/// the folder then loads like any Hugging Face model folder (full fine-tuning checkpoints).
pub fn save_full_model(
    source_dir: &Path,
    weights: &[(String, Tensor)],
    out_dir: &Path,
) -> Result<()> {
    let dtype = weights.first().map_or(DType::F32, |(_, t)| t.dtype());
    let tensors: BTreeMap<String, Tensor> = weights
        .iter()
        .map(|(name, t)| (on_disk_name(name), t.clone()))
        .collect();
    write_safetensors(&out_dir.join("model.safetensors"), &tensors)?;
    copy_model_files(source_dir, out_dir, dtype)
}

/// Copies every non-weight file of the model folder; `config.json` gets the export dtype.
pub fn copy_model_files(model_dir: &Path, out_dir: &Path, dtype: DType) -> Result<()> {
    let entries = std::fs::read_dir(model_dir).map_err(|source| ModelError::Io {
        path: model_dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ModelError::Io {
            path: model_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let weights = name.ends_with(".safetensors")
            || name == "model.safetensors.index.json"
            || name.starts_with("adapter_");
        if !path.is_file() || weights {
            continue;
        }
        let target = out_dir.join(&name);
        if name == "config.json" {
            let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?;
            let mut cfg: Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    what: path.display().to_string(),
                    source,
                })?;
            let torch = match dtype {
                DType::BF16 => "bfloat16",
                DType::F16 => "float16",
                _ => "float32",
            };
            if let Some(obj) = cfg.as_object_mut() {
                let key = if obj.contains_key("dtype") {
                    "dtype"
                } else {
                    "torch_dtype"
                };
                obj.insert(key.into(), json!(torch));
                for sub in ["text_config", "vision_config"] {
                    if let Some(s) = obj.get_mut(sub).and_then(Value::as_object_mut)
                        && (s.contains_key("dtype") || s.contains_key("torch_dtype"))
                    {
                        let k = if s.contains_key("dtype") {
                            "dtype"
                        } else {
                            "torch_dtype"
                        };
                        s.insert(k.into(), json!(torch));
                    }
                }
            }
            write_json(&target, &cfg)?;
        } else {
            std::fs::copy(&path, &target).map_err(|source| ModelError::Write {
                path: target.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_disk_names_are_the_save_pretrained_ones() {
        assert_eq!(
            on_disk_name("model.language_model.layers.0.mlp.up_proj.weight"),
            "model.layers.0.mlp.up_proj.weight"
        );
        assert_eq!(
            on_disk_name("model.visual.merger.mlp.0.bias"),
            "visual.merger.mlp.0.bias"
        );
        assert_eq!(on_disk_name("lm_head.weight"), "lm_head.weight");
    }

    #[test]
    fn merge_adds_the_scaled_product() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        let a = Tensor::new(&[[1f32, 2.]], &dev).unwrap();
        let b = Tensor::new(&[[3f32], [4.]], &dev).unwrap();
        let m = merge_weight(&w, &a, &b, 0.5, DType::F32).unwrap();
        assert_eq!(
            m.to_vec2::<f32>().unwrap(),
            vec![vec![2.5, 3.], vec![2., 5.]]
        );
    }
}
