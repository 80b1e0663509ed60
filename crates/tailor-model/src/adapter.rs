//! LoRA adapters in PEFT's folder layout: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Keys are written with the transformers ≥ 4.52 module names
//! (`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`); both those
//! and the older names (`base_model.model.model.layers.N…`, `base_model.model.visual…`) are read.
//! `adapter_config.json` is written as PEFT writes it (`indent=2`, sorted keys), with a
//! `target_modules` that selects, under PEFT's own matching rules, exactly the modules tailor
//! adapted (see [`Adapter::peft_target_modules`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Value, json};

use crate::error::{ModelError, Result};
use crate::lora::{LoraInit, LoraLayer, LoraRuntime, LoraSpec, TargetMatcher, TargetModules};
use crate::weights::canonical_name;

/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File name of the adapter configuration.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

const KEY_PREFIX: &str = "base_model.model.";

/// The PEFT key of a module's `lora_A` (`a = true`) or `lora_B` weight.
pub fn peft_key(path: &str, a: bool) -> String {
    let which = if a { "lora_A" } else { "lora_B" };
    format!("{KEY_PREFIX}{path}.{which}.weight")
}

/// The canonical module path and A/B of a PEFT key in either naming scheme (an adapter name such
/// as `.default` before `.weight` is accepted).
pub fn parse_peft_key(key: &str) -> Option<(String, bool)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let rest = rest.strip_suffix(".weight")?;
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    let (module, a) = if let Some(m) = rest.strip_suffix(".lora_A") {
        (m, true)
    } else if let Some(m) = rest.strip_suffix(".lora_B") {
        (m, false)
    } else {
        return None;
    };
    Some((canonical_name(module), a))
}

/// The adapter attached to a model: the trainable pairs in model order (their [`Var`]s share
/// storage with the model, so optimizer updates are what the next forward pass sees).
#[derive(Debug, Clone)]
pub struct Adapter {
    spec: LoraSpec,
    layers: Vec<(String, LoraLayer)>,
    all_paths: Vec<String>,
    runtime: Arc<LoraRuntime>,
    saved: Vec<(String, Var)>,
}

impl Adapter {
    pub(crate) fn new(
        spec: LoraSpec,
        layers: Vec<(String, LoraLayer)>,
        all_paths: Vec<String>,
        runtime: Arc<LoraRuntime>,
        saved: Vec<(String, Var)>,
    ) -> Self {
        Self {
            spec,
            layers,
            all_paths,
            runtime,
            saved,
        }
    }

    /// The trainable `modules_to_save` weights by canonical tensor name (see
    /// [`crate::Qwen25Vl::load_with_saved`]).
    pub fn saved(&self) -> &[(String, Var)] {
        &self.saved
    }

    /// The settings.
    pub fn spec(&self) -> &LoraSpec {
        &self.spec
    }

    /// Training mode and dropout key, shared with every adapted layer.
    pub fn runtime(&self) -> &LoraRuntime {
        &self.runtime
    }

    /// Adapted module paths, in model order.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(p, _)| p.as_str())
    }

    /// The adapted layers by module path, in model order.
    pub fn layers(&self) -> &[(String, LoraLayer)] {
        &self.layers
    }

    /// Trainable tensors by PEFT key: the pairs in model order (A then B per module), then the
    /// `modules_to_save` weights by name (`base_model.model.<name>`, as PEFT saves them).
    pub fn params(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .flat_map(|(path, l)| {
                [
                    (peft_key(path, true), l.a.clone()),
                    (peft_key(path, false), l.b.clone()),
                ]
            })
            .chain(
                self.saved
                    .iter()
                    .map(|(name, v)| (format!("{KEY_PREFIX}{name}"), v.clone())),
            )
            .collect()
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The current weights by PEFT key.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.params()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// `target_modules` for `adapter_config.json`: the user's own form when PEFT's matching (which
    /// knows nothing of `adapt_vision`) selects exactly the adapted modules; otherwise a
    /// full-match regex built from the adapted paths with layer numbers generalised, or, when
    /// even that would select more, the full list of module paths.
    pub fn peft_target_modules(&self) -> Value {
        let adapted: BTreeSet<&str> = self.modules().collect();
        let selects = |matches: &dyn Fn(&str) -> bool| -> bool {
            self.all_paths
                .iter()
                .all(|p| matches(p) == adapted.contains(p.as_str()))
        };
        let plain = LoraSpec {
            adapt_vision: true,
            ..self.spec.clone()
        };
        if let Ok(m) = plain.matcher()
            && selects(&|p| m.matches(p))
        {
            return match &self.spec.target_modules {
                TargetModules::Names(n) => json!(n),
                TargetModules::Regex(r) => json!(r),
                TargetModules::AllLinear => json!("all-linear"),
            };
        }
        let patterns: BTreeSet<String> = adapted
            .iter()
            .map(|p| {
                regex::escape(p)
                    .split(r"\.")
                    .map(|part| {
                        if part.chars().all(|c| c.is_ascii_digit()) {
                            r"\d+".to_string()
                        } else {
                            part.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(r"\.")
            })
            .collect();
        let joined = patterns.into_iter().collect::<Vec<_>>().join("|");
        let general = format!("(?:{joined})");
        if let Ok(r) = regex::Regex::new(&format!("^{general}$"))
            && selects(&|p| r.is_match(p))
        {
            return json!(general);
        }
        json!(adapted.into_iter().collect::<Vec<_>>())
    }

    /// `adapter_config.json` as PEFT writes it.
    pub fn peft_config(&self, base_model_name_or_path: &str) -> Value {
        let s = &self.spec;
        let alpha = if s.lora_alpha.fract() == 0.0 && s.lora_alpha.abs() < 1e15 {
            json!(s.lora_alpha as i64)
        } else {
            json!(s.lora_alpha)
        };
        let init = match s.init {
            LoraInit::Kaiming => json!(true),
            LoraInit::Gaussian => json!("gaussian"),
        };
        let map: BTreeMap<&str, Value> = BTreeMap::from([
            ("alpha_pattern", json!({})),
            ("auto_mapping", Value::Null),
            ("base_model_name_or_path", json!(base_model_name_or_path)),
            ("bias", json!("none")),
            ("fan_in_fan_out", json!(false)),
            ("inference_mode", json!(true)),
            ("init_lora_weights", init),
            ("layers_pattern", Value::Null),
            ("layers_to_transform", Value::Null),
            ("lora_alpha", alpha),
            ("lora_bias", json!(false)),
            ("lora_dropout", json!(s.lora_dropout)),
            (
                "modules_to_save",
                if s.modules_to_save.is_empty() {
                    Value::Null
                } else {
                    json!(s.modules_to_save)
                },
            ),
            ("peft_type", json!("LORA")),
            ("r", json!(s.r)),
            ("rank_pattern", json!({})),
            ("revision", Value::Null),
            ("target_modules", self.peft_target_modules()),
            ("task_type", json!("CAUSAL_LM")),
            ("use_dora", json!(false)),
            ("use_rslora", json!(s.use_rslora)),
        ]);
        serde_json::to_value(map).expect("a map of values serialises")
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (float32, metadata
    /// `{"format": "pt"}`) into `dir`, which must exist.
    pub fn save(&self, dir: &Path, base_model_name_or_path: &str) -> Result<()> {
        let config = serde_json::to_string_pretty(&self.peft_config(base_model_name_or_path))
            .expect("JSON values serialise");
        let path = dir.join(ADAPTER_CONFIG);
        std::fs::write(&path, config + "\n")
            .map_err(|source| ModelError::Write { path, source })?;
        write_safetensors(&dir.join(ADAPTER_WEIGHTS), &self.tensors())
    }
}

/// Writes tensors with safetensors metadata `{"format": "pt"}` (what PyTorch loaders expect).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(contiguous, Some(meta), path).map_err(|e| ModelError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// An adapter folder read from disk.
#[derive(Debug, Clone)]
pub struct AdapterFile {
    /// The folder.
    pub dir: PathBuf,
    /// The settings from `adapter_config.json`.
    pub spec: LoraSpec,
    /// `base_model_name_or_path` from the config, if any.
    pub base_model: Option<String>,
    /// `(A, B)` per canonical module path, as stored.
    pub weights: BTreeMap<String, (Tensor, Tensor)>,
    /// The `modules_to_save` weights by canonical tensor name, as stored (their dtype kept).
    pub saved: BTreeMap<String, Tensor>,
}

impl AdapterFile {
    /// Reads a PEFT adapter folder (either key naming). Unsupported settings (DoRA, rank or alpha
    /// patterns, LoRA biases, a peft_type other than LORA) are errors.
    pub fn read(dir: &Path, device: &Device) -> Result<Self> {
        let bad = |detail: String| ModelError::InvalidAdapter {
            path: dir.to_path_buf(),
            detail,
        };
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let cfg: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            what: cfg_path.display().to_string(),
            source,
        })?;
        let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
        if let Some(t) = get("peft_type").and_then(Value::as_str)
            && t != "LORA"
        {
            return Err(bad(format!("peft_type {t} is not LORA")));
        }
        for flag in ["use_dora", "lora_bias", "fan_in_fan_out"] {
            if get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(bad(format!("{flag} = true is not supported")));
            }
        }
        for pattern in ["rank_pattern", "alpha_pattern"] {
            if get(pattern)
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty())
            {
                return Err(bad(format!("a non-empty {pattern} is not supported")));
            }
        }
        if let Some(b) = get("bias").and_then(Value::as_str)
            && b != "none"
        {
            return Err(bad(format!(
                "bias = {b:?} is not supported (only \"none\")"
            )));
        }
        let modules_to_save: Vec<String> = match get("modules_to_save") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("modules_to_save entry {v} is not a string")))
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(bad(format!("modules_to_save {v} is not a list"))),
        };
        let r = get("r").and_then(Value::as_u64).unwrap_or(8) as usize;
        let target_modules = match get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
            Some(Value::String(s)) => TargetModules::Regex(s.clone()),
            Some(Value::Array(a)) => TargetModules::Names(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => TargetModules::Names(vec![]),
        };
        let spec = LoraSpec {
            r,
            lora_alpha: get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0),
            lora_dropout: get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            use_rslora: get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            target_modules,
            adapt_vision: true,
            init: match get("init_lora_weights") {
                Some(Value::String(s)) if s == "gaussian" => LoraInit::Gaussian,
                _ => LoraInit::Kaiming,
            },
            modules_to_save,
        };
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.is_file() {
            return Err(ModelError::Io {
                path: weights_path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let tensors = candle_core::safetensors::load(&weights_path, device)?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        let mut saved = BTreeMap::new();
        for (key, tensor) in tensors {
            let Some((path, a)) = parse_peft_key(&key) else {
                let name = key
                    .strip_prefix(KEY_PREFIX)
                    .map(|k| canonical_name(k.replace(".modules_to_save.default", "").as_str()));
                match name {
                    Some(name)
                        if crate::lora::saved_module_tensor(&spec.modules_to_save, &name) =>
                    {
                        saved.insert(name, tensor);
                        continue;
                    }
                    _ => {
                        return Err(bad(format!(
                            "{} holds `{key}`, which is neither a LoRA weight nor a weight of \
                             a module in modules_to_save {:?}",
                            weights_path.display(),
                            spec.modules_to_save
                        )));
                    }
                }
            };
            let entry = halves.entry(path).or_default();
            let slot = if a { &mut entry.0 } else { &mut entry.1 };
            if slot.replace(tensor.to_dtype(DType::F32)?).is_some() {
                return Err(bad(format!("`{key}` occurs twice")));
            }
        }
        let mut weights = BTreeMap::new();
        for (path, pair) in halves {
            match pair {
                (Some(a), Some(b)) => {
                    weights.insert(path, (a, b));
                }
                (a, _) => {
                    let missing = peft_key(&path, a.is_none());
                    return Err(bad(format!("`{missing}` is missing")));
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            spec,
            base_model: get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_owned),
            weights,
            saved,
        })
    }
}

/// Matches used by [`crate::Qwen25Vl::attach_lora`] to decide targets.
pub(crate) fn select_targets(
    matcher: &TargetMatcher,
    given: Option<&BTreeMap<String, (Tensor, Tensor)>>,
    path: &str,
) -> bool {
    match given {
        Some(map) => map.contains_key(path),
        None => matcher.matches(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_both_schemes() {
        let path = "model.language_model.layers.3.self_attn.q_proj";
        assert_eq!(
            peft_key(path, true),
            "base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(
            parse_peft_key(&peft_key(path, false)),
            Some((path.to_string(), false))
        );
        assert_eq!(
            parse_peft_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((path.to_string(), true))
        );
        assert_eq!(
            parse_peft_key("base_model.model.visual.blocks.0.mlp.gate_proj.lora_B.default.weight"),
            Some(("model.visual.blocks.0.mlp.gate_proj".to_string(), false))
        );
        assert_eq!(
            parse_peft_key("base_model.model.lm_head.weight"),
            None,
            "not a LoRA weight"
        );
    }
}
