//! LoRA as PEFT implements it (`peft/tuners/lora/layer.py`): every linear layer of the model is a
//! [`Projection`] that may carry a low-rank pair `A [r, in]`, `B [out, r]` so that
//! `y = base(x) + B(A(dropout(x))) · scaling`.
//!
//! The adapter weights are float32 [`Var`]s whatever the base dtype (PEFT's
//! `autocast_adapter_dtype`): the branch casts its input to float32 and its output back. Dropout
//! masks come from a counter-based generator keyed by (dropout key, layer), so a recomputed layer
//! (gradient checkpointing) and a resumed run see exactly the masks of the original pass. The key
//! is per thread, so micro-batches trained on different threads at once each see their own masks.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{Linear, VarBuilder};

/// Which modules get an adapter, as `LoraConfig.target_modules`.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    /// A module whose full name equals an entry or ends with `"." + entry`.
    Names(Vec<String>),
    /// A regular expression that must match the whole module name (Python's `re.fullmatch`).
    Regex(String),
    /// Every linear layer except the output head.
    AllLinear,
}

/// How `A` is initialised (`LoraConfig.init_lora_weights`); `B` always starts at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInit {
    /// `true`: Kaiming-uniform with `a = √5`, i.e. U(−1/√in, 1/√in).
    Kaiming,
    /// `"gaussian"`: normal with standard deviation `1/r`.
    Gaussian,
}

/// The LoRA settings that shape the model (LoraConfig names).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `lora_dropout`, applied to the branch input in training only.
    pub lora_dropout: f64,
    /// `use_rslora`: scaling `alpha/√r` instead of `alpha/r`.
    pub use_rslora: bool,
    /// `target_modules`.
    pub target_modules: TargetModules,
    /// Whether the target rule also applies inside the vision tower (PEFT's plain name matching);
    /// when false only `model.language_model.*` modules are adapted.
    pub adapt_vision: bool,
    /// `init_lora_weights`.
    pub init: LoraInit,
    /// `modules_to_save`: modules trained in full next to the LoRA pairs and saved with the
    /// adapter (PEFT keeps a trainable copy and leaves the original untouched). A module is
    /// selected when its full name *ends with* an entry, as a plain string (PEFT's rule: `"norm"`
    /// selects every `…input_layernorm` too).
    pub modules_to_save: Vec<String>,
}

/// Whether the weight `tensor` (canonical name, e.g. `model.language_model.norm.weight`) belongs
/// to a module that `modules_to_save` selects: one of its enclosing module names ends with an
/// entry.
pub fn saved_module_tensor(modules_to_save: &[String], tensor: &str) -> bool {
    tensor
        .match_indices('.')
        .map(|(i, _)| &tensor[..i])
        .any(|module| modules_to_save.iter().any(|m| module.ends_with(m.as_str())))
}

impl LoraSpec {
    /// `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        scaling(self.lora_alpha, self.r, self.use_rslora)
    }

    /// A matcher over full module names.
    pub fn matcher(&self) -> Result<TargetMatcher> {
        let regex = match &self.target_modules {
            TargetModules::Regex(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| candle_core::Error::Msg(format!("target_modules regex: {e}")))?,
            ),
            _ => None,
        };
        Ok(TargetMatcher {
            rule: self.target_modules.clone(),
            regex,
            adapt_vision: self.adapt_vision,
        })
    }
}

fn scaling(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// Decides for one module name whether it is targeted.
#[derive(Debug, Clone)]
pub struct TargetMatcher {
    rule: TargetModules,
    regex: Option<regex::Regex>,
    adapt_vision: bool,
}

impl TargetMatcher {
    /// Whether the module `path` (canonical in-memory name) gets an adapter.
    pub fn matches(&self, path: &str) -> bool {
        if !self.adapt_vision && !path.starts_with(crate::weights::TEXT_PREFIX) {
            return false;
        }
        match &self.rule {
            TargetModules::AllLinear => true,
            TargetModules::Names(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Regex(_) => self.regex.as_ref().is_some_and(|r| r.is_match(path)),
        }
    }
}

thread_local! {
    /// The dropout key of forward passes on this thread (see [`LoraRuntime::set_dropout_key`]).
    static DROPOUT_KEY: Cell<u64> = const { Cell::new(0) };
}

/// State shared by every adapter of one model: training mode and the current dropout key.
#[derive(Debug, Default)]
pub struct LoraRuntime {
    training: AtomicBool,
}

impl LoraRuntime {
    /// Training mode turns dropout on.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// Whether dropout is active.
    pub fn training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// The key from which every dropout mask of the next forward pass derives (the trainer sets
    /// one per micro-batch, derived from the seed and the micro-batch number). It holds for
    /// forward passes on the calling thread only: the trainer runs micro-batches on several
    /// threads at once, each with its own key.
    pub fn set_dropout_key(&self, key: u64) {
        DROPOUT_KEY.with(|k| k.set(key));
    }

    fn dropout_key(&self) -> u64 {
        DROPOUT_KEY.with(Cell::get)
    }
}

/// One adapted layer's pair and settings.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// `lora_A.weight [r, in]`, float32.
    pub a: Var,
    /// `lora_B.weight [out, r]`, float32.
    pub b: Var,
    /// `alpha / r` (or `/ √r`).
    pub scaling: f64,
    dropout: f64,
    id: u64,
    runtime: Arc<LoraRuntime>,
}

impl LoraLayer {
    /// The dropout multiplier (0 or `1 / (1 − p)`) for a branch input `[rows, in]`, or `None`
    /// when dropout is off (evaluation, or `lora_dropout = 0`).
    fn dropout_mask(&self, rows: usize, in_dim: usize, device: &Device) -> Result<Option<Tensor>> {
        if self.dropout <= 0.0 || !self.runtime.training() {
            return Ok(None);
        }
        let key = self.runtime.dropout_key();
        let mut rng = SplitMix64::new(key ^ self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let keep = 1.0 / (1.0 - self.dropout) as f32;
        let p = self.dropout;
        let mask: Vec<f32> = (0..rows * in_dim)
            .map(|_| if rng.next_f64() < p { 0.0 } else { keep })
            .collect();
        Tensor::from_vec(mask, (rows, in_dim), device).map(Some)
    }
}

/// A linear layer, possibly with a LoRA branch.
#[derive(Debug, Clone)]
pub struct Projection {
    base: Linear,
    path: String,
    lora: Option<LoraLayer>,
}

impl Projection {
    /// Reads `weight` (and `bias` when `bias`) under `vb`; the builder's prefix becomes the
    /// module name that target rules and adapter keys use.
    pub(crate) fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let path = vb.prefix();
        Ok(Self {
            base: candle_nn::linear_b(in_dim, out_dim, bias, vb)?,
            path,
            lora: None,
        })
    }

    /// The module name (canonical, e.g. `model.language_model.layers.0.self_attn.q_proj`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The base weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.base.weight()
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> Result<(usize, usize)> {
        let (out, inp) = self.base.weight().dims2()?;
        Ok((inp, out))
    }

    /// The adapter, if any.
    pub fn lora(&self) -> Option<&LoraLayer> {
        self.lora.as_ref()
    }

    pub(crate) fn set_lora(&mut self, lora: Option<LoraLayer>) {
        self.lora = lora;
    }
}

impl Projection {
    /// Whether the base weight and bias are frozen (only a LoRA pair, if any, trains).
    fn frozen(&self) -> bool {
        !self.base.weight().track_op() && !self.base.bias().is_some_and(|b| b.track_op())
    }

    /// Whether [`Projection::traced`] applies: a frozen base on the CPU.
    pub(crate) fn traceable(&self) -> bool {
        self.frozen() && matches!(self.base.weight().device(), Device::Cpu)
    }

    /// The LoRA branch's operands for the input `xs` (the dropout mask drawn as the composed
    /// path draws it).
    fn low_rank(&self, xs: &Tensor) -> Result<Option<crate::fused::LowRank<'_>>> {
        let Some(lora) = &self.lora else {
            return Ok(None);
        };
        let (rows, in_dim) = rows_and_features(xs);
        Ok(Some(crate::fused::LowRank {
            a: lora.a.as_tensor(),
            b: lora.b.as_tensor(),
            scaling: lora.scaling,
            mask: lora.dropout_mask(rows, in_dim, xs.device())?,
        }))
    }

    /// The projection without a graph (see [`crate::fused::Traced`]); its backward gives
    /// `[dx, dA, dB]` with a LoRA pair, `[dx]` without.
    pub(crate) fn traced(&self, xs: &Tensor) -> Result<crate::fused::Traced> {
        let branch = self.low_rank(xs)?;
        crate::fused::projection_traced(xs, self.base.weight(), self.base.bias(), branch, true)
    }
}

/// `(rows, features)` of a linear layer's input `[.., features]`.
fn rows_and_features(xs: &Tensor) -> (usize, usize) {
    let in_dim = *xs.dims().last().expect("a linear input has a feature axis");
    (xs.elem_count() / in_dim.max(1), in_dim)
}

impl Module for Projection {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let weight = self.base.weight();
        let bias = self.base.bias();
        let dims = xs.dims();
        let (rows, in_dim) = rows_and_features(xs);
        let frozen = self.frozen();
        let mut inputs = vec![xs];
        if let Some(lora) = &self.lora {
            inputs.extend([lora.a.as_tensor(), lora.b.as_tensor()]);
        }
        if frozen && crate::fused::applies(&inputs) {
            // Training on the CPU: the whole projection is one graph node.
            return crate::fused::projection(xs, weight, bias, self.low_rank(xs)?);
        }
        let ys = if xs.track_op() && frozen {
            // A frozen base weight under a tracked input: skip candle's discarded weight gradient.
            let ys = crate::ops::frozen_linear(xs, weight)?;
            match bias {
                Some(bias) => ys.broadcast_add(bias)?,
                None => ys,
            }
        } else {
            self.base.forward(xs)?
        };
        let Some(lora) = &self.lora else {
            return Ok(ys);
        };
        let mut x = xs.to_dtype(DType::F32)?.reshape((rows, in_dim))?;
        if let Some(mask) = lora.dropout_mask(rows, in_dim, xs.device())? {
            x = (x * mask)?;
        }
        let delta = (x.matmul(&lora.a.t()?)?.matmul(&lora.b.t()?)? * lora.scaling)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty") = delta.dim(1)?;
        let delta = delta.reshape(shape)?.to_dtype(ys.dtype())?;
        ys + delta
    }
}

/// Where an adapter's initial weights come from.
#[derive(Debug, Clone, Copy)]
pub enum InitFrom<'a> {
    /// Fresh weights from the spec's init rule, drawn from `seed`.
    Seed(u64),
    /// Given `(A, B)` per module path (a saved adapter or a checkpoint).
    Weights(&'a std::collections::BTreeMap<String, (Tensor, Tensor)>),
}

/// Builds the adapter pairs for the projections `targets` (in model order). Errors name the
/// module when given weights are missing or mis-shaped.
pub(crate) fn build_layers(
    spec: &LoraSpec,
    targets: &[(String, usize, usize)],
    init: InitFrom<'_>,
    runtime: &Arc<LoraRuntime>,
    device: &Device,
) -> Result<Vec<LoraLayer>> {
    let mut rng = match init {
        InitFrom::Seed(seed) => Some(SplitMix64::new(seed)),
        InitFrom::Weights(_) => None,
    };
    let mut out = Vec::with_capacity(targets.len());
    for (id, (path, inp, outp)) in targets.iter().enumerate() {
        let (a, b) = match (&mut rng, init) {
            (Some(rng), _) => {
                let a: Vec<f32> = match spec.init {
                    LoraInit::Kaiming => {
                        let bound = 1.0 / (*inp as f64).sqrt();
                        (0..spec.r * inp)
                            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                            .collect()
                    }
                    LoraInit::Gaussian => {
                        let std = 1.0 / spec.r as f64;
                        (0..spec.r * inp)
                            .map(|_| (rng.next_normal() * std) as f32)
                            .collect()
                    }
                };
                (
                    Tensor::from_vec(a, (spec.r, *inp), device)?,
                    Tensor::zeros((*outp, spec.r), DType::F32, device)?,
                )
            }
            (None, InitFrom::Weights(map)) => {
                let Some((a, b)) = map.get(path) else {
                    candle_core::bail!("the adapter has no weights for module {path}");
                };
                let r = a.dim(0)?;
                if a.dims() != [r, *inp] || b.dims() != [*outp, r] {
                    candle_core::bail!(
                        "adapter weights for {path}: lora_A {:?} / lora_B {:?}, the module needs \
                         [r, {inp}] / [{outp}, r]",
                        a.dims(),
                        b.dims()
                    );
                }
                (
                    a.to_dtype(DType::F32)?.to_device(device)?,
                    b.to_dtype(DType::F32)?.to_device(device)?,
                )
            }
            (None, InitFrom::Seed(_)) => unreachable!("a seed always gives an rng"),
        };
        let r = a.dim(0)?;
        out.push(LoraLayer {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scaling: scaling(spec.lora_alpha, r, spec.use_rslora),
            dropout: spec.lora_dropout,
            id: id as u64,
            runtime: runtime.clone(),
        });
    }
    Ok(out)
}

/// SplitMix64: tiny, seedable and counter-like, enough for initial weights and dropout masks
/// (torch's generator cannot be reproduced anyway; parity tests start from PEFT's own weights).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(targets: TargetModules, vision: bool) -> LoraSpec {
        LoraSpec {
            r: 4,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            use_rslora: false,
            target_modules: targets,
            adapt_vision: vision,
            init: LoraInit::Kaiming,
            modules_to_save: vec![],
        }
    }

    #[test]
    fn saved_modules_match_by_plain_suffix_of_any_enclosing_module() {
        let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let norm = rules(&["norm"]);
        assert!(saved_module_tensor(
            &norm,
            "model.language_model.norm.weight"
        ));
        assert!(saved_module_tensor(
            &norm,
            "model.language_model.layers.0.input_layernorm.weight"
        ));
        assert!(!saved_module_tensor(
            &norm,
            "model.visual.blocks.0.norm1.weight"
        ));
        let heads = rules(&["lm_head", "embed_tokens"]);
        assert!(saved_module_tensor(&heads, "lm_head.weight"));
        assert!(saved_module_tensor(
            &heads,
            "model.language_model.embed_tokens.weight"
        ));
        assert!(!saved_module_tensor(
            &heads,
            "model.language_model.norm.weight"
        ));
        // A container selects everything inside it.
        let mlp = rules(&["layers.1.mlp"]);
        assert!(saved_module_tensor(
            &mlp,
            "model.language_model.layers.1.mlp.down_proj.weight"
        ));
        assert!(!saved_module_tensor(
            &mlp,
            "model.language_model.layers.1.self_attn.q_proj.weight"
        ));
    }

    #[test]
    fn names_match_by_suffix_and_vision_only_when_asked() {
        let names = TargetModules::Names(vec!["gate_proj".into(), "q_proj".into()]);
        let text = "model.language_model.layers.3.mlp.gate_proj";
        let vision = "model.visual.blocks.0.mlp.gate_proj";
        let m = spec(names.clone(), false).matcher().unwrap();
        assert!(m.matches(text) && !m.matches(vision));
        assert!(!m.matches("model.language_model.layers.3.mlp.xgate_proj"));
        let m = spec(names, true).matcher().unwrap();
        assert!(m.matches(text) && m.matches(vision));
    }

    #[test]
    fn regex_must_match_the_whole_name() {
        let m = spec(TargetModules::Regex(r".*\.q_proj".into()), true)
            .matcher()
            .unwrap();
        assert!(m.matches("model.language_model.layers.0.self_attn.q_proj"));
        assert!(!m.matches("model.language_model.layers.0.self_attn.q_proj_x"));
    }

    #[test]
    fn scaling_follows_rslora() {
        let mut s = spec(TargetModules::AllLinear, false);
        assert_eq!(s.scaling(), 2.0);
        s.use_rslora = true;
        assert_eq!(s.scaling(), 4.0);
    }

    #[test]
    fn kaiming_init_stays_in_bounds_and_b_is_zero() {
        let s = spec(TargetModules::AllLinear, false);
        let rt = Arc::new(LoraRuntime::default());
        let layers = build_layers(
            &s,
            &[("m".into(), 16, 8)],
            InitFrom::Seed(7),
            &rt,
            &Device::Cpu,
        )
        .unwrap();
        let a = layers[0].a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 0.25) && a.iter().any(|v| v.abs() > 0.1));
        let b = layers[0].b.abs().unwrap().sum_all().unwrap();
        assert_eq!(b.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn dropout_masks_repeat_for_the_same_key_and_only_in_training() {
        let mut s = spec(TargetModules::AllLinear, false);
        s.lora_dropout = 0.5;
        let rt = Arc::new(LoraRuntime::default());
        let layers = build_layers(
            &s,
            &[("m".into(), 4, 4)],
            InitFrom::Seed(1),
            &rt,
            &Device::Cpu,
        )
        .unwrap();
        assert!(
            layers[0]
                .dropout_mask(8, 4, &Device::Cpu)
                .unwrap()
                .is_none()
        );
        rt.set_training(true);
        rt.set_dropout_key(11);
        let mask = || {
            layers[0]
                .dropout_mask(8, 4, &Device::Cpu)
                .unwrap()
                .expect("dropout is on in training")
                .to_vec2::<f32>()
                .unwrap()
        };
        let a = mask();
        assert_eq!(a, mask());
        assert!(a.iter().flatten().all(|&v| v == 0.0 || v == 2.0));
        // Another thread's key does not leak into this one (parallel micro-batches).
        std::thread::scope(|s| {
            s.spawn(|| rt.set_dropout_key(12));
        });
        assert_eq!(a, mask());
        rt.set_dropout_key(12);
        let c = mask();
        assert_ne!(a, c);
    }
}
