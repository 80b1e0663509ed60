//! The Qwen2 decoder with M-RoPE (`model.language_model`): token embedding, grouped-query
//! attention with q/k/v biases, SwiGLU MLPs, RMSNorms.
//!
//! Positions are the `[3, batch, len]` M-RoPE rows (temporal, height, width) that
//! `tailor_text::rope_index` computes; frequency `j` of the rotary table takes its angle from the
//! row whose `mrope_section` contains `j`. The attention mask is causal plus key padding.

use candle_core::{DType, Device, Module, Result, Tensor, TensorId};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Embedding, VarBuilder};

use crate::config::TextConfig;
use crate::fused::Traced;
use crate::lora::Projection;
use crate::nn::{RmsNorm, SwiGlu, apply_rotary, attention, inv_freq, repeat_kv};
use crate::ops::add;

/// The decoder stack.
#[derive(Debug, Clone)]
pub struct TextModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    cfg: TextConfig,
    inv_freq: Vec<f32>,
}

impl TextModel {
    /// Builds the decoder from `vb` rooted at `model.language_model`.
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            cfg: cfg.clone(),
            inv_freq: inv_freq(cfg.head_dim, cfg.rope_theta),
        })
    }

    /// Every linear layer, in module order.
    pub(crate) fn projections_mut(&mut self) -> Vec<&mut Projection> {
        let mut out = Vec::new();
        for layer in &mut self.layers {
            let a = &mut layer.self_attn;
            out.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj]);
            out.extend(layer.mlp.projections_mut());
        }
        out
    }

    /// The embedding matrix `[vocab, hidden]` (also the tied output projection).
    pub fn embedding_weight(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }

    /// Token embeddings `[batch, len, hidden]` of `input_ids` `[batch, len]`.
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(input_ids)
    }

    /// Runs the decoder on input embeddings and returns the final-normed hidden states
    /// `[batch, len, hidden]`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let mut states = self.run(embeds, position_ids, attention_mask, false)?;
        Ok(states.pop().expect("run returns the final state"))
    }

    /// Runs the decoder and returns transformers' `hidden_states`: the input embeddings, the output
    /// of every layer but the last, and the final-normed output of the last layer
    /// (`num_hidden_layers + 1` tensors).
    pub fn forward_hidden_states(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        self.run(embeds, position_ids, attention_mask, true)
    }

    fn run(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        keep: bool,
    ) -> Result<Vec<Tensor>> {
        let (b, l, _) = embeds.dims3()?;
        let (cos, sin) = self.rotary(position_ids, b, l, embeds.dtype())?;
        let mask = causal_padding_mask(attention_mask, b, l, embeds.device())?;
        let mut states = Vec::new();
        let mut xs = embeds.clone();
        for layer in &self.layers {
            if keep {
                states.push(xs.clone());
            }
            xs = layer.forward(&xs, &cos, &sin, &mask)?;
        }
        states.push(self.norm.forward(&xs)?);
        Ok(states)
    }

    /// The rotary tables and the additive mask of a `[b, l]` batch, shared by every layer.
    pub(crate) fn context(
        &self,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        b: usize,
        l: usize,
        dtype: DType,
    ) -> Result<LayerContext> {
        let (cos, sin) = self.rotary(position_ids, b, l, dtype)?;
        let mask = causal_padding_mask(attention_mask, b, l, attention_mask.device())?;
        Ok(LayerContext { cos, sin, mask })
    }

    /// Decoder layer `i` alone (gradient checkpointing re-runs layers one at a time).
    pub(crate) fn layer(&self, i: usize, xs: &Tensor, ctx: &LayerContext) -> Result<Tensor> {
        self.layers[i].forward(xs, &ctx.cos, &ctx.sin, &ctx.mask)
    }

    /// Gradient checkpointing's re-run of decoder layer `i` without a graph: the gradients of
    /// `Σ layer(xs) · grad_out` for `xs` and the layer's LoRA weights, or `None` when the layer
    /// has other trainable weights or is not on the CPU (then the caller differentiates
    /// [`TextModel::layer`] through candle's graph). See [`DecoderLayer::input_and_lora_grads`].
    pub(crate) fn layer_grads(
        &self,
        i: usize,
        xs: &Tensor,
        ctx: &LayerContext,
        grad_out: &Tensor,
    ) -> Result<Option<LayerGrads>> {
        self.layers[i].input_and_lora_grads(xs, &ctx.cos, &ctx.sin, &ctx.mask, grad_out)
    }

    /// Decoder layer `i` without a gradient graph (its output is untracked even when LoRA
    /// weights are `Var`s): block by block where the layer allows it, else the graph's output
    /// detached. Gradient checkpointing's first pass and evaluation run layers this way.
    pub(crate) fn layer_untracked(
        &self,
        i: usize,
        xs: &Tensor,
        ctx: &LayerContext,
    ) -> Result<Tensor> {
        let layer = &self.layers[i];
        match layer.trace(xs, &ctx.cos, &ctx.sin, &ctx.mask)? {
            Some(trace) => Ok(trace.output),
            None => Ok(layer.forward(xs, &ctx.cos, &ctx.sin, &ctx.mask)?.detach()),
        }
    }

    /// The final RMSNorm.
    pub(crate) fn final_norm(&self, xs: &Tensor) -> Result<Tensor> {
        self.norm.forward(xs)
    }

    /// Number of decoder layers (one KV cache entry each).
    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Inference-only decoder pass over `embeds` `[batch, len, hidden]` that follow the tokens
    /// already in `caches` (one per layer): each layer's rotated keys and values are appended to
    /// its cache and the queries attend to the whole cache. `mask` is the additive float32
    /// `[batch, 1, len, cached + len]` mask. Returns the final-normed hidden states.
    pub(crate) fn forward_cached(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        mask: &Tensor,
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        let (b, l, _) = embeds.dims3()?;
        if caches.len() != self.layers.len() {
            candle_core::bail!(
                "the KV cache has {} layers, the decoder {}",
                caches.len(),
                self.layers.len()
            );
        }
        let (cos, sin) = self.rotary(position_ids, b, l, embeds.dtype())?;
        let mut xs = embeds.clone();
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            xs = layer.forward_cached(&xs, &cos, &sin, mask, cache)?;
        }
        self.norm.forward(&xs)
    }

    /// M-RoPE tables `[batch, 1, len, head_dim]` in `dtype`: the float32 angles `pos_r · inv_freq`
    /// with each frequency's row picked by `mrope_section`, duplicated to the full head dimension.
    fn rotary(
        &self,
        position_ids: &Tensor,
        b: usize,
        l: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let dims = position_ids.dims();
        if dims != [3, b, l] {
            candle_core::bail!("position_ids must be [3, {b}, {l}] (M-RoPE rows), found {dims:?}");
        }
        let half = self.inv_freq.len();
        let inv_freq = Tensor::from_vec(
            self.inv_freq.clone(),
            (1, 1, 1, half),
            position_ids.device(),
        )?;
        let freqs = position_ids
            .to_dtype(DType::F32)?
            .unsqueeze(3)?
            .broadcast_mul(&inv_freq)?; // [3, b, l, half]
        let [s0, s1, s2] = self.cfg.mrope_section;
        let picked = Tensor::cat(
            &[
                freqs.get(0)?.narrow(2, 0, s0)?,
                freqs.get(1)?.narrow(2, s0, s1)?,
                freqs.get(2)?.narrow(2, s0 + s1, s2)?,
            ],
            2,
        )?; // [b, l, half]
        let angles = Tensor::cat(&[&picked, &picked], 2)?.unsqueeze(1)?;
        Ok((
            angles.cos()?.to_dtype(dtype)?,
            angles.sin()?.to_dtype(dtype)?,
        ))
    }
}

/// Per-batch inputs of every decoder layer.
pub(crate) struct LayerContext {
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

/// Additive float32 mask `[batch, 1, len, len]`: 0 where query `i` may see key `j` (`j ≤ i` and
/// key `j` is not padding), the most negative float otherwise (a finite value, as transformers
/// uses, so a fully masked padding row stays finite).
fn causal_padding_mask(
    attention_mask: &Tensor,
    b: usize,
    l: usize,
    device: &Device,
) -> Result<Tensor> {
    let dims = attention_mask.dims();
    if dims != [b, l] {
        candle_core::bail!("attention_mask must be [{b}, {l}], found {dims:?}");
    }
    let keep = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut mask = vec![0f32; b * l * l];
    for (row, keep) in keep.iter().enumerate() {
        for i in 0..l {
            for j in 0..l {
                if j > i || keep[j] == 0.0 {
                    mask[(row * l + i) * l + j] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(mask, (b, 1, l, l), device)
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: SwiGlu,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: SwiGlu::new(cfg.hidden_size, cfg.intermediate_size, false, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, cos, sin, mask)?;
        let xs = add(xs, &attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?;
        add(&xs, &mlp)
    }
}

/// The gradients of one decoder layer's re-run: its input's, and each LoRA weight's (by the
/// weight's tensor id).
pub(crate) struct LayerGrads {
    /// `dL/dx` for the layer input.
    pub input: Tensor,
    /// `(lora_A or lora_B weight id, gradient)` for every adapted projection of the layer.
    pub lora: Vec<(TensorId, Tensor)>,
}

/// One decoder layer's blocks evaluated without a graph ([`DecoderLayer::trace`]), each with
/// its backward, and the layer's output.
struct LayerTrace {
    norm1: Traced,
    q: Traced,
    k: Traced,
    v: Traced,
    core: Traced,
    o: Traced,
    norm2: Traced,
    gate: Traced,
    up: Traced,
    act: Traced,
    down: Traced,
    output: Tensor,
}

impl DecoderLayer {
    fn projections(&self) -> [&Projection; 7] {
        let a = &self.self_attn;
        let [gate, up, down] = self.mlp.projections();
        [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, gate, up, down]
    }

    /// Whether [`DecoderLayer::trace`] applies: every base weight and norm frozen, on the CPU.
    fn traceable(&self, xs: &Tensor) -> bool {
        matches!(xs.device(), Device::Cpu)
            && self.input_layernorm.traceable()
            && self.post_attention_layernorm.traceable()
            && self.projections().iter().all(|p| p.traceable())
    }

    /// [`DecoderLayer::forward`] block by block without candle's graph (`crate::fused`'s blocks:
    /// the values of the graph path, bit for bit), keeping each block's backward; `None` unless
    /// [`DecoderLayer::traceable`]. With the LoRA weights read detached, nothing here builds a
    /// graph, so gradient checkpointing's first pass and evaluation use it too.
    fn trace(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> Result<Option<LayerTrace>> {
        if !self.traceable(xs) {
            return Ok(None);
        }
        let attn = &self.self_attn;
        let [gate_proj, up_proj, down_proj] = self.mlp.projections();
        let xs = xs.detach();
        let norm1 = self.input_layernorm.traced(&xs)?;
        let q = attn.q_proj.traced(&norm1.value)?;
        let k = attn.k_proj.traced(&norm1.value)?;
        let v = attn.v_proj.traced(&norm1.value)?;
        let core = attn
            .core(cos, sin, mask)
            .traced(&q.value, &k.value, &v.value, [true; 3])?;
        let o = attn.o_proj.traced(&core.value)?;
        let hidden = add(&xs, &o.value)?;
        let norm2 = self.post_attention_layernorm.traced(&hidden)?;
        let gate = gate_proj.traced(&norm2.value)?;
        let up = up_proj.traced(&norm2.value)?;
        let act = crate::fused::silu_mul_traced(&gate.value, &up.value)?;
        let down = down_proj.traced(&act.value)?;
        let output = add(&hidden, &down.value)?;
        Ok(Some(LayerTrace {
            norm1,
            q,
            k,
            v,
            core,
            o,
            norm2,
            gate,
            up,
            act,
            down,
            output,
        }))
    }

    /// [`DecoderLayer::trace`] and its backward for the output gradient `grad_out`: the
    /// gradients of `Σ out · grad_out` for the input and the LoRA weights.
    ///
    /// candle's backward zero-fills and adds a gradient buffer for every edge of the graph (about
    /// two dozen per layer even with fused blocks); here the only additions are the four real
    /// ones: where the normed input feeds q, k and v, the post-attention norm feeds gate and up,
    /// and the two residual branches meet.
    fn input_and_lora_grads(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        grad_out: &Tensor,
    ) -> Result<Option<LayerGrads>> {
        let Some(t) = self.trace(xs, cos, sin, mask)? else {
            return Ok(None);
        };
        let attn = &self.self_attn;
        let [gate_proj, up_proj, down_proj] = self.mlp.projections();
        // out = hidden + down(act): the residual passes grad_out through unchanged.
        let mut lora = Vec::new();
        let dact = input_grad(down_proj, t.down.backward(grad_out)?, &mut lora)?;
        let [dgate, dup] = exactly(t.act.backward(&dact)?)?;
        let dnorm2 = add(
            &input_grad(gate_proj, t.gate.backward(&dgate)?, &mut lora)?,
            &input_grad(up_proj, t.up.backward(&dup)?, &mut lora)?,
        )?;
        let [dnorm2_in] = exactly(t.norm2.backward(&dnorm2)?)?;
        let dhidden = add(grad_out, &dnorm2_in)?;
        let dcore = input_grad(&attn.o_proj, t.o.backward(&dhidden)?, &mut lora)?;
        let [dq, dk, dv] = exactly(t.core.backward(&dcore)?)?;
        let dnorm1 = add(
            &add(
                &input_grad(&attn.q_proj, t.q.backward(&dq)?, &mut lora)?,
                &input_grad(&attn.k_proj, t.k.backward(&dk)?, &mut lora)?,
            )?,
            &input_grad(&attn.v_proj, t.v.backward(&dv)?, &mut lora)?,
        )?;
        let [dnorm1_in] = exactly(t.norm1.backward(&dnorm1)?)?;
        let input = add(&dhidden, &dnorm1_in)?;
        Ok(Some(LayerGrads { input, lora }))
    }

    /// [`DecoderLayer::forward`] with the attention reading from and appending to `cache`.
    fn forward_cached(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let attn = self.self_attn.forward_cached(
            &self.input_layernorm.forward(xs)?,
            cos,
            sin,
            mask,
            cache,
        )?;
        let xs = add(xs, &attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?;
        add(&xs, &mlp)
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let q = cfg.num_attention_heads * cfg.head_dim;
        let kv = cfg.num_key_value_heads * cfg.head_dim;
        Ok(Self {
            q_proj: Projection::new(h, q, true, vb.pp("q_proj"))?,
            k_proj: Projection::new(h, kv, true, vb.pp("k_proj"))?,
            v_proj: Projection::new(h, kv, true, vb.pp("v_proj"))?,
            o_proj: Projection::new(q, h, false, vb.pp("o_proj"))?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        })
    }

    /// Projects `xs` `[b, l, hidden]` to per-head queries, keys and values
    /// (`[b, heads, l, d]`), with M-RoPE applied to queries and keys.
    fn rotated_qkv(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let q = self.q_proj.forward(xs)?;
        let k = self.k_proj.forward(xs)?;
        let v = self.v_proj.forward(xs)?;
        self.rotate(&q, &k, &v, cos, sin)
    }

    /// Splits projected `q`, `k`, `v` (`[b, l, n·d]`) into heads (`[b, n, l, d]`) and applies
    /// M-RoPE to queries and keys.
    fn rotate(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l, _) = q.dims3()?;
        let heads = |t: &Tensor, n: usize| -> Result<Tensor> {
            t.reshape((b, l, n, self.head_dim))?.transpose(1, 2)
        };
        let q = heads(q, self.num_heads)?;
        let k = heads(k, self.num_kv_heads)?;
        let v = heads(v, self.num_kv_heads)?;
        let q = apply_rotary(&q, cos, sin)?.contiguous()?;
        let k = apply_rotary(&k, cos, sin)?;
        Ok((q, k, v))
    }

    /// The attention between the projections as one block (see [`crate::fused::Attention`]).
    fn core<'a>(
        &self,
        cos: &'a Tensor,
        sin: &'a Tensor,
        mask: &'a Tensor,
    ) -> crate::fused::Attention<'a> {
        crate::fused::Attention {
            cos,
            sin,
            mask,
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
        }
    }

    fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let q = self.q_proj.forward(xs)?;
        let k = self.k_proj.forward(xs)?;
        let v = self.v_proj.forward(xs)?;
        if crate::fused::applies(&[&q, &k, &v]) {
            // Training on the CPU: everything between the projections is one graph node.
            let core = self.core(cos, sin, mask).forward(&q, &k, &v)?;
            return self.o_proj.forward(&core);
        }
        let (q, k, v) = self.rotate(&q, &k, &v, cos, sin)?;
        let groups = self.num_heads / self.num_kv_heads;
        let k = repeat_kv(&k, groups)?;
        let v = repeat_kv(&v, groups)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let out = attention(&q, &k, &v, scale, Some(mask))?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, l, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    /// [`SelfAttention::forward`] over the cached keys and values followed by the new ones; the
    /// new (rotated) keys and values are appended to `cache` (`[b, kv, len, d]`, before the
    /// repetition over query groups).
    fn forward_cached(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let (q, k, v) = self.rotated_qkv(xs, cos, sin)?;
        let (k, v) = cache.append(&k.contiguous()?, &v.contiguous()?)?;
        let out = self.grouped_attention(&q, &k, &v, mask)?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, l, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    /// Inference attention of `q` `[b, heads, l, d]` over the cached `k`/`v` `[b, kv, t, d]`
    /// (views into the cache's buffer) without [`repeat_kv`]: the query heads of
    /// each KV group are stacked along the length axis, so the cache is never copied per group.
    /// Same arithmetic as [`attention`] (scale after the product, float32 mask and softmax), with
    /// candle's fused last-dimension softmax since nothing here needs a gradient.
    fn grouped_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (b, h, l, d) = q.dims4()?;
        let (_, kv, t, _) = k.dims4()?;
        let groups = h / kv;
        let dtype = q.dtype();
        let scale = 1.0 / (d as f64).sqrt();
        let q = q.reshape((b, kv, groups * l, d))?;
        let scores = crate::ops::scale_to_f32(&q.matmul(&k.t()?)?, scale)?
            .reshape((b, h, l, t))?
            .broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?
            .to_dtype(dtype)?
            .reshape((b, kv, groups * l, t))?;
        probs.matmul(v)?.reshape((b, h, l, d))
    }
}

/// The input gradient of a traced projection's backward (`[dx, dA, dB]` or `[dx]`); the LoRA
/// weights' gradients go to `lora`.
fn input_grad(
    proj: &Projection,
    grads: Vec<Option<Tensor>>,
    lora: &mut Vec<(TensorId, Tensor)>,
) -> Result<Tensor> {
    let mut grads = grads.into_iter();
    let dx = grads.next().flatten();
    if let Some(layer) = proj.lora() {
        for (var, grad) in [&layer.a, &layer.b].into_iter().zip(grads) {
            if let Some(grad) = grad {
                lora.push((var.id(), grad));
            }
        }
    }
    dx.ok_or_else(|| candle_core::Error::Msg(format!("{}: no input gradient", proj.path())))
}

/// `N` gradients, all present.
fn exactly<const N: usize>(grads: Vec<Option<Tensor>>) -> Result<[Tensor; N]> {
    let n = grads.len();
    let present: Option<Vec<Tensor>> = grads.into_iter().collect();
    present.and_then(|g| g.try_into().ok()).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "expected {N} gradients, got {n} (or a missing one)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_and_hides_padded_keys() {
        let am = Tensor::new(&[[1u8, 1, 0], [0, 1, 1]], &Device::Cpu).unwrap();
        let mask = causal_padding_mask(&am, 2, 3, &Device::Cpu).unwrap();
        assert_eq!(mask.dims(), [2, 1, 3, 3]);
        let m: Vec<Vec<Vec<f32>>> = mask.squeeze(1).unwrap().to_vec3().unwrap();
        let open = |v: f32| v == 0.0;
        // Row 0 (right padding): key 2 is padding.
        assert!(open(m[0][2][0]) && open(m[0][2][1]) && !open(m[0][2][2]));
        assert!(!open(m[0][0][1]));
        // Row 1 (left padding): key 0 hidden everywhere; query 0 sees nothing but stays finite.
        assert!(m[1].iter().all(|r| !open(r[0])));
        assert!(open(m[1][2][1]) && open(m[1][2][2]));
        assert!(m[1][0].iter().all(|v| v.is_finite()));
    }
}
