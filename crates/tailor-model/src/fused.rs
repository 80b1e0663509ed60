//! Whole blocks of the training graph as single autograd nodes.
//!
//! candle's backward gives every node of the graph a gradient buffer: it zero-fills one the size
//! of the node's output and adds the incoming gradient into it, even when a node has a single
//! consumer. A LoRA projection is about ten nodes (reshapes, the frozen product, the bias, the
//! dtype casts, dropout, two low-rank products, the scaling, the sum) and the attention between
//! the projections about thirty (head reshapes and transposes, rotary embedding, the key/value
//! repetition, scores, scale, mask, softmax, casts, the value product). In bfloat16 those
//! additions go through candle 0.11.1's element-by-element bf16 conversions and were half of a
//! training step's time on the CPU.
//!
//! Here each block computes its forward value with the same candle ops on detached tensors (so
//! the values are exactly those of the composed ops, in any dtype) and enters the graph as one
//! node, whose backward applies, in the same order and dtypes, the formulas candle's backward
//! would have applied to the composed ops. Only the accumulation into per-node buffers is gone.
//! As graph nodes the blocks are used on the CPU when their input carries a graph and computes
//! in a dtype other than float32 (see [`applies`]); untracked (inference), float32 and non-CPU
//! calls keep the composed ops. Gradient checkpointing's layer re-run uses the blocks in every
//! dtype through [`Traced`], without a graph (`TextModel::layer_grads`).

use std::sync::Arc;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Device, Layout, Result, Shape, Storage,
    Tensor,
};

/// A node's backward: from the gradient of its output, the gradients of its arguments (in
/// argument order; `None` for an argument that takes none).
type Backward = dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// A block evaluated without a graph: its value, and the function from the gradient of that
/// value to the gradients of the block's arguments (in argument order; `None` for an argument
/// that takes none). Gradient checkpointing's layer re-run calls the backward directly; the
/// graph path wraps it in a [`Node`].
pub(crate) struct Traced {
    /// The block's output.
    pub(crate) value: Tensor,
    backward: Box<Backward>,
}

impl Traced {
    fn new(
        value: Tensor,
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            value,
            backward: Box::new(backward),
        }
    }

    /// The arguments' gradients for the output gradient `grad`; the saved tensors are freed.
    pub(crate) fn backward(self, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        (self.backward)(grad)
    }

    /// Enters the block into the graph as one node over `args` (one to three of them, the
    /// tensors the value was computed from); untracked arguments get no gradient.
    fn node(self, name: &'static str, args: &[&Tensor]) -> Result<Tensor> {
        let tracked: Vec<bool> = args.iter().map(|t| t.track_op()).collect();
        let backward = self.backward;
        let node = Node {
            name,
            value: self.value,
            backward: Box::new(move |grad| {
                let mut grads = backward(grad)?;
                for (g, &tracked) in grads.iter_mut().zip(&tracked) {
                    if !tracked {
                        *g = None;
                    }
                }
                Ok(grads)
            }),
        };
        match args {
            [a] => a.apply_op1_arc(Arc::new(Box::new(node))),
            [a, b] => a.apply_op2_arc(b, Arc::new(Box::new(node))),
            [a, b, c] => a.apply_op3_arc(b, c, Arc::new(Box::new(node))),
            _ => candle_core::bail!("{name}: a fused node takes one to three arguments"),
        }
    }
}

/// A graph node whose value was computed beforehand without a graph.
struct Node {
    name: &'static str,
    value: Tensor,
    backward: Box<Backward>,
}

impl Node {
    /// A copy of the precomputed value's storage (the forward of the node).
    fn value(&self) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.value.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("{}: the value is not on the CPU", self.name);
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the value is not contiguous", self.name);
        };
        let out = match cpu {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[start..end].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[start..end].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
            _ => candle_core::bail!("{}: unsupported dtype {:?}", self.name, self.value.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    fn grads<const N: usize>(&self, grad: &Tensor) -> Result<[Option<Tensor>; N]> {
        let grads = (self.backward)(grad)?;
        let n = grads.len();
        grads.try_into().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: backward gave {n} gradients for {N} arguments",
                self.name
            ))
        })
    }
}

impl CustomOp1 for Node {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.value()
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [a] = self.grads(grad)?;
        Ok(a)
    }
}

impl CustomOp2 for Node {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.value()
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [a, b] = self.grads(grad)?;
        Ok((a, b))
    }
}

impl CustomOp3 for Node {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.value()
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [a, b, c] = self.grads(grad)?;
        Ok((a, b, c))
    }
}

/// Whether a block over these inputs (the first one in the compute dtype) should be one fused
/// node: something to differentiate, on the CPU, in a dtype other than float32.
///
/// Float32 graphs keep the composed ops: a fused node returns its input's gradient already
/// summed over the block's internal branches (the base product and the LoRA branch), where
/// candle adds each edge into the input's buffer one by one, so sums over several consumers (the
/// normed input feeds q, k and v) associate differently. That moves float32 results at the 1e-7
/// level, which long runs amplify: the shipped demo's tuned trajectory fell from 91 % to 83 %
/// held-out accuracy. Float32 training without checkpointing therefore stays bit for bit what
/// it was; bfloat16, where candle's per-edge additions are the cost, takes the fused nodes.
pub(crate) fn applies(inputs: &[&Tensor]) -> bool {
    inputs.first().is_some_and(|t| t.dtype() != DType::F32)
        && inputs.iter().any(|t| t.track_op())
        && inputs.iter().all(|t| matches!(t.device(), Device::Cpu))
}

/// The low-rank branch of a LoRA projection: `((dropout(x) · Aᵀ) · Bᵀ) · scaling` in float32.
pub(crate) struct LowRank<'a> {
    /// `lora_A.weight [r, in]`.
    pub a: &'a Tensor,
    /// `lora_B.weight [out, r]`.
    pub b: &'a Tensor,
    /// `alpha / r` (or `/ √r`).
    pub scaling: f64,
    /// The dropout multiplier `[rows, in]` (0 or `1 / (1 − p)`), when dropout is on.
    pub mask: Option<Tensor>,
}

/// `x · Wᵀ (+ bias) (+ LoRA branch)` over the last axis of `x`, as one node whose backward
/// gives `x` (when tracked) and the LoRA pair their gradients; `W` and the bias are frozen.
///
/// The values are those of the composed ops: the base product in the input dtype, the bias
/// added, and the branch computed in float32 and cast to the input dtype before the sum.
pub(crate) fn projection(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    lora: Option<LowRank<'_>>,
) -> Result<Tensor> {
    let args: Vec<&Tensor> = match &lora {
        Some(lora) => vec![xs, lora.a, lora.b],
        None => vec![xs],
    };
    let name = if lora.is_some() {
        "lora-projection"
    } else {
        "projection"
    };
    projection_traced(xs, weight, bias, lora, xs.track_op())?.node(name, &args)
}

/// [`projection`] without a graph; the backward gives `[dx, dA, dB]` (`[dx]` without LoRA),
/// `dx` only when `need_dx`.
pub(crate) fn projection_traced(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    lora: Option<LowRank<'_>>,
    need_dx: bool,
) -> Result<Traced> {
    let (out_dim, in_dim) = weight.dims2()?;
    let dims = xs.dims().to_vec();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("projection: input {dims:?} for a [{out_dim}, {in_dim}] weight");
    }
    let rows = xs.elem_count() / in_dim.max(1);
    let mut out_shape = dims.clone();
    *out_shape.last_mut().expect("checked above") = out_dim;
    let dtype = xs.dtype();
    let x2 = xs.detach().contiguous()?.reshape((rows, in_dim))?;
    let weight = weight.detach();
    let mut ys = x2.matmul(&weight.t()?)?;
    if let Some(bias) = bias {
        ys = ys.broadcast_add(&bias.detach())?;
    }
    let Some(lora) = lora else {
        let value = ys.reshape(out_shape)?;
        return Ok(Traced::new(value, move |grad| {
            let dx = if need_dx {
                Some(
                    grad.reshape((rows, out_dim))?
                        .matmul(&weight)?
                        .reshape(dims.as_slice())?,
                )
            } else {
                None
            };
            Ok(vec![dx])
        }));
    };
    let (a, b) = (lora.a.detach(), lora.b.detach());
    let xf = x2.to_dtype(DType::F32)?;
    let xd = match &lora.mask {
        Some(mask) => (&xf * mask)?,
        None => xf,
    };
    let u = xd.matmul(&a.t()?)?;
    let delta = (u.matmul(&b.t()?)? * lora.scaling)?;
    let value = crate::ops::add(&ys, &delta.to_dtype(dtype)?)?.reshape(out_shape)?;
    let (mask, scaling) = (lora.mask, lora.scaling);
    Ok(Traced::new(value, move |grad| {
        let g = grad.reshape((rows, out_dim))?;
        // The branch, as candle differentiates `(u · Bᵀ) · s` and `(x_d · Aᵀ)`.
        let gs = (g.to_dtype(DType::F32)? * scaling)?;
        let db = u.t()?.matmul(&gs)?.t()?;
        let du = gs.matmul(&b)?;
        let da = xd.t()?.matmul(&du)?.t()?;
        let dx = if need_dx {
            let dxd = du.matmul(&a)?;
            let dxf = match &mask {
                Some(mask) => (dxd * mask)?,
                None => dxd,
            };
            let dx = crate::ops::add(&g.matmul(&weight)?, &dxf.to_dtype(dtype)?)?;
            Some(dx.reshape(dims.as_slice())?)
        } else {
            None
        };
        Ok(vec![dx, Some(da), Some(db)])
    }))
}

/// The decoder's attention between the projections and `o_proj`: per-head queries, keys and
/// values from `q [b, l, heads·d]`, `k`/`v [b, l, kv_heads·d]`, M-RoPE on queries and keys, each
/// KV head repeated over its query group, `softmax(q·kᵀ · scale + mask)` in float32 and the
/// weighted values, returned as `[b, l, heads·d]` in the input dtype. One node; the values and
/// gradients are those of the composed ops in `nn` (same ops, same order, same dtypes).
pub(crate) struct Attention<'a> {
    /// `cos`/`sin` tables `[b, 1, l, d]`.
    pub cos: &'a Tensor,
    /// See `cos`.
    pub sin: &'a Tensor,
    /// Additive float32 mask `[b, 1, l, l]`.
    pub mask: &'a Tensor,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl Attention<'_> {
    /// Runs the block as one graph node; see [`Attention`].
    pub(crate) fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let need = [q.track_op(), k.track_op(), v.track_op()];
        self.traced(q, k, v, need)?.node("attention", &[q, k, v])
    }

    /// The block without a graph; the backward gives `[dq, dk, dv]`, each only where `need`.
    pub(crate) fn traced(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        need: [bool; 3],
    ) -> Result<Traced> {
        let (b, l, _) = q.dims3()?;
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        if h % kv.max(1) != 0 {
            candle_core::bail!("attention: {h} query heads for {kv} key/value heads");
        }
        let groups = h / kv;
        let dtype = q.dtype();
        let (cos, sin, mask) = (self.cos.detach(), self.sin.detach(), self.mask.detach());
        let split = |t: &Tensor, n: usize| -> Result<Tensor> {
            t.detach().reshape((b, l, n, d))?.transpose(1, 2)
        };
        let q_rot = crate::nn::apply_rotary(&split(q, h)?, &cos, &sin)?.contiguous()?;
        let k_rot = crate::nn::apply_rotary(&split(k, kv)?, &cos, &sin)?;
        let k_rep = crate::nn::repeat_kv(&k_rot, groups)?;
        let v_rep = crate::nn::repeat_kv(&split(v, kv)?, groups)?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores =
            crate::ops::scale_to_f32(&q_rot.matmul(&k_rep.t()?)?, scale)?.broadcast_add(&mask)?;
        let probs = crate::ops::softmax_last_dim(&scores)?;
        let probs_d = probs.to_dtype(dtype)?;
        let value = probs_d
            .matmul(&v_rep)?
            .transpose(1, 2)?
            .reshape((b, l, h * d))?;
        Ok(Traced::new(value, move |grad| {
            let dout = grad.reshape((b, l, h, d))?.transpose(1, 2)?.contiguous()?;
            let dprobs_d = dout.matmul(&v_rep.t()?)?;
            let dv_rep = probs_d.t()?.matmul(&dout)?;
            let dprobs = dprobs_d.to_dtype(DType::F32)?;
            let dscores = crate::ops::softmax_last_dim_backward(&probs, &dprobs)?;
            let draw = crate::ops::narrow_scaled(&dscores, dtype, scale)?;
            // The repetition's backward sums each group's gradients into its KV head.
            let unrepeat = |t: Tensor| -> Result<Tensor> {
                if groups == 1 {
                    return Ok(t);
                }
                t.reshape((b, kv, groups, l, d))?.sum(2)
            };
            let merge = |t: Tensor, n: usize| -> Result<Tensor> {
                t.transpose(1, 2)?.contiguous()?.reshape((b, l, n * d))
            };
            let dq = if need[0] {
                let dq_rot = draw.matmul(&k_rep)?;
                Some(merge(rotary_backward(&dq_rot, &cos, &sin)?, h)?)
            } else {
                None
            };
            let dk = if need[1] {
                let dk_rep = q_rot.t()?.matmul(&draw)?.t()?.contiguous()?;
                Some(merge(rotary_backward(&unrepeat(dk_rep)?, &cos, &sin)?, kv)?)
            } else {
                None
            };
            let dv = if need[2] {
                Some(merge(unrepeat(dv_rep)?, kv)?)
            } else {
                None
            };
            Ok(vec![dq, dk, dv])
        }))
    }
}

/// The gradient of `x` in `x·cos + rotate_half(x)·sin` for the output gradient `dy`:
/// `dy·cos + [z₂, −z₁]` with `z = dy·sin` split into halves.
fn rotary_backward(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let z = dy.broadcast_mul(sin)?;
    let half = z.dim(D::Minus1)? / 2;
    let z1 = z.narrow(D::Minus1, 0, half)?;
    let z2 = z.narrow(D::Minus1, half, half)?;
    dy.broadcast_mul(cos)? + Tensor::cat(&[&z2, &z1.neg()?], D::Minus1)?
}

/// `Qwen2RMSNorm` with a frozen `weight`: normalise in float32, cast back to the input dtype,
/// multiply by the weight. One node over `x`; values and gradient are those of the composed ops
/// in `nn::RmsNorm`.
pub(crate) fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    rms_norm_traced(xs, weight, eps)?.node("rms-norm", &[xs])
}

/// [`rms_norm`] without a graph; the backward gives `[dx]`.
pub(crate) fn rms_norm_traced(xs: &Tensor, weight: &Tensor, eps: f64) -> Result<Traced> {
    let dtype = xs.dtype();
    let weight = weight.detach();
    let xf = xs.detach().to_dtype(DType::F32)?;
    let hidden = xf.dim(D::Minus1)?;
    let variance = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let root = (variance + eps)?.sqrt()?;
    let inv = root.recip()?;
    let value = xf
        .broadcast_mul(&inv)?
        .to_dtype(dtype)?
        .broadcast_mul(&weight)?;
    Ok(Traced::new(value, move |grad| {
        let dn = grad.broadcast_mul(&weight)?.to_dtype(DType::F32)?;
        // n = x · inv: through x directly, and through inv = 1 / √(mean(x²) + eps).
        let dx_direct = dn.broadcast_mul(&inv)?;
        let dinv = (&dn * &xf)?.sum_keepdim(D::Minus1)?;
        let droot = (dinv / root.sqr()?)?.neg()?;
        let dvariance =
            (droot.div(&root)?.affine(0.5, 0.)?.affine(1., 0.)? * (1. / hidden as f64))?;
        let dx_square = xf
            .mul(&dvariance.broadcast_as(xf.shape())?)?
            .affine(2., 0.)?;
        Ok(vec![Some((dx_direct + dx_square)?.to_dtype(dtype)?)])
    }))
}

/// `silu(gate) · up` as one node over both, for dtypes without a dedicated kernel; values and
/// gradients are those of candle's `silu` and `mul`.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    silu_mul_traced(gate, up)?.node("silu-mul", &[gate, up])
}

/// `silu(gate) · up` without a graph, with the values and gradients of [`crate::ops::silu_mul`]
/// (its float32 kernel for float32 inputs, candle's `silu` and `mul` otherwise); the backward
/// gives `[dgate, dup]`.
pub(crate) fn silu_mul_traced(gate: &Tensor, up: &Tensor) -> Result<Traced> {
    let (g, u) = (gate.detach(), up.detach());
    if g.dtype() == DType::F32 {
        let value = crate::ops::silu_mul(&g, &u)?;
        return Ok(Traced::new(value, move |grad| {
            let (dgate, dup) = crate::ops::silu_mul_backward(&g, &u, grad)?;
            Ok(vec![Some(dgate), Some(dup)])
        }));
    }
    if let Some(value) = crate::ops::silu_mul_bf16(&g, &u)? {
        // bfloat16 on the CPU: one pass each way, candle's rounding at every step.
        return Ok(Traced::new(value, move |grad| {
            let grad = grad.detach();
            if let Some((dgate, dup)) = crate::ops::silu_mul_bf16_backward(&g, &u, &grad)? {
                return Ok(vec![Some(dgate), Some(dup)]);
            }
            let (dgate, dup) = composed_silu_mul_backward(&g, &u, &g.silu()?, &grad)?;
            Ok(vec![Some(dgate), Some(dup)])
        }));
    }
    let silu = g.silu()?;
    let value = (&silu * &u)?;
    Ok(Traced::new(value, move |grad| {
        let (dgate, dup) = composed_silu_mul_backward(&g, &u, &silu, grad)?;
        Ok(vec![Some(dgate), Some(dup)])
    }))
}

/// The gradients `(dgate, dup)` of `silu(g) · u` as candle differentiates `silu` and `mul`.
fn composed_silu_mul_backward(
    g: &Tensor,
    u: &Tensor,
    silu: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let dsilu = (grad * u)?;
    let dup = (grad * silu)?;
    let sigmoid = (g.neg()?.exp()? + 1.)?.recip()?;
    let dgate = (dsilu * ((&sigmoid * (1. - silu)?)? + silu)?)?;
    Ok((dgate, dup))
}

#[cfg(test)]
mod tests {
    use candle_core::{Var, backprop::GradStore};

    use super::*;
    use crate::test_util::{max_diff, tensor};

    fn var(shape: &[usize], seed: u64, dtype: DType) -> Var {
        Var::from_tensor(&tensor(shape, seed, dtype)).unwrap()
    }

    /// Gradients of `Σ y · probe` (a probe with varied entries, so every path is weighted).
    fn grads_of(y: &Tensor, seed: u64) -> GradStore {
        let probe = tensor(y.dims(), seed, y.dtype());
        (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
    }

    /// The fused value equals the composed one exactly, and each listed tensor's gradient
    /// agrees within `tol` (relative to the gradient's largest entry).
    fn assert_same(fused: &Tensor, composed: &Tensor, wrt: &[(&str, &Tensor)], tol: f32) {
        assert!(fused.track_op(), "the fused block entered the graph");
        assert_eq!(max_diff(fused, composed), 0.0, "values");
        let (gf, gc) = (grads_of(fused, 99), grads_of(composed, 99));
        for (name, t) in wrt {
            let (a, b) = (gf.get(t), gc.get(t));
            let (Some(a), Some(b)) = (a, b) else {
                panic!("{name}: fused {} / composed {}", a.is_some(), b.is_some());
            };
            assert_eq!(a.dtype(), b.dtype(), "{name} gradient dtype");
            let scale = crate::test_util::max_abs(b).max(1.0);
            let diff = max_diff(a, b);
            assert!(diff <= tol * scale, "{name}: gradients differ by {diff}");
        }
    }

    /// Float32 gradients are bit for bit the composed ops' (the same formulas in the same
    /// order); bfloat16 ones may round differently where candle's backward adds per-node buffers.
    fn tolerance(dtype: DType) -> f32 {
        if dtype == DType::F32 { 0.0 } else { 1e-2 }
    }

    #[test]
    fn projection_equals_the_composed_lora_ops() {
        for dtype in [DType::F32, DType::BF16] {
            for (with_bias, with_mask) in [(false, false), (true, true)] {
                let (rows, inp, out, r) = (6, 8, 5, 3);
                let x = var(&[2, 3, inp], 1, dtype);
                let w = tensor(&[out, inp], 2, dtype);
                let bias = with_bias.then(|| tensor(&[out], 3, dtype));
                let a = var(&[r, inp], 4, DType::F32);
                let b = var(&[out, r], 5, DType::F32);
                let mask = with_mask.then(|| {
                    let keep: Vec<f32> = (0..rows * inp)
                        .map(|i| if i % 3 == 0 { 0.0 } else { 1.5 })
                        .collect();
                    Tensor::from_vec(keep, (rows, inp), &Device::Cpu).unwrap()
                });
                let scaling = 2.0;
                let fused = projection(
                    x.as_tensor(),
                    &w,
                    bias.as_ref(),
                    Some(LowRank {
                        a: a.as_tensor(),
                        b: b.as_tensor(),
                        scaling,
                        mask: mask.clone(),
                    }),
                )
                .unwrap();

                let x2 = x.as_tensor().reshape((rows, inp)).unwrap();
                let mut base = x2.matmul(&w.t().unwrap()).unwrap();
                if let Some(bias) = &bias {
                    base = base.broadcast_add(bias).unwrap();
                }
                let mut xf = x2.to_dtype(DType::F32).unwrap();
                if let Some(mask) = &mask {
                    xf = (xf * mask).unwrap();
                }
                let delta = (xf
                    .matmul(&a.as_tensor().t().unwrap())
                    .unwrap()
                    .matmul(&b.as_tensor().t().unwrap())
                    .unwrap()
                    * scaling)
                    .unwrap();
                let composed = (base + delta.to_dtype(dtype).unwrap())
                    .unwrap()
                    .reshape((2, 3, out))
                    .unwrap();
                // B starts at zero in training; random B here exercises the gradient to A.
                assert_same(
                    &fused,
                    &composed,
                    &[
                        ("x", x.as_tensor()),
                        ("lora_A", a.as_tensor()),
                        ("lora_B", b.as_tensor()),
                    ],
                    tolerance(dtype),
                );
            }
        }
    }

    #[test]
    fn projection_without_lora_gives_the_input_its_gradient() {
        let x = var(&[4, 6], 6, DType::F32);
        let w = tensor(&[3, 6], 7, DType::F32);
        let fused = projection(x.as_tensor(), &w, None, None).unwrap();
        let composed = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert_same(&fused, &composed, &[("x", x.as_tensor())], 1e-6);
        assert!(projection(x.as_tensor(), &w.t().unwrap(), None, None).is_err());
    }

    #[test]
    fn attention_equals_the_composed_ops() {
        let (bsz, l, d) = (2, 5, 4);
        for dtype in [DType::F32, DType::BF16] {
            for (heads, kv_heads) in [(2, 2), (4, 2)] {
                let q = var(&[bsz, l, heads * d], 10, dtype);
                let k = var(&[bsz, l, kv_heads * d], 11, dtype);
                let v = var(&[bsz, l, kv_heads * d], 12, dtype);
                let cos = tensor(&[bsz, 1, l, d], 13, dtype);
                let sin = tensor(&[bsz, 1, l, d], 14, dtype);
                // Causal, as the decoder's mask.
                let mask: Vec<f32> = (0..bsz * l * l)
                    .map(|i| {
                        if i % l > (i / l) % l {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (bsz, 1, l, l), &Device::Cpu).unwrap();
                let block = Attention {
                    cos: &cos,
                    sin: &sin,
                    mask: &mask,
                    heads,
                    kv_heads,
                    head_dim: d,
                };
                let fused = block
                    .forward(q.as_tensor(), k.as_tensor(), v.as_tensor())
                    .unwrap();

                let split = |t: &Tensor, n: usize| {
                    t.reshape((bsz, l, n, d)).unwrap().transpose(1, 2).unwrap()
                };
                let rq = crate::nn::apply_rotary(&split(q.as_tensor(), heads), &cos, &sin)
                    .and_then(|t| t.contiguous())
                    .unwrap();
                let rk =
                    crate::nn::apply_rotary(&split(k.as_tensor(), kv_heads), &cos, &sin).unwrap();
                let scale = 1.0 / (d as f64).sqrt();
                let composed = crate::nn::attention(
                    &rq,
                    &crate::nn::repeat_kv(&rk, heads / kv_heads).unwrap(),
                    &crate::nn::repeat_kv(&split(v.as_tensor(), kv_heads), heads / kv_heads)
                        .unwrap(),
                    scale,
                    Some(&mask),
                )
                .and_then(|t| t.transpose(1, 2)?.reshape((bsz, l, heads * d)))
                .unwrap();
                assert_same(
                    &fused,
                    &composed,
                    &[
                        ("q", q.as_tensor()),
                        ("k", k.as_tensor()),
                        ("v", v.as_tensor()),
                    ],
                    tolerance(dtype),
                );
            }
        }
    }

    #[test]
    fn attention_leaves_untracked_inputs_without_gradient() {
        let (bsz, l, d) = (1, 3, 2);
        let q = var(&[bsz, l, d], 20, DType::F32);
        let k = tensor(&[bsz, l, d], 21, DType::F32);
        let v = tensor(&[bsz, l, d], 22, DType::F32);
        let ones = Tensor::ones((bsz, 1, l, d), DType::F32, &Device::Cpu).unwrap();
        let zeros = ones.zeros_like().unwrap();
        let mask = Tensor::zeros((bsz, 1, l, l), DType::F32, &Device::Cpu).unwrap();
        let block = Attention {
            cos: &ones,
            sin: &zeros,
            mask: &mask,
            heads: 1,
            kv_heads: 1,
            head_dim: d,
        };
        let y = block.forward(q.as_tensor(), &k, &v).unwrap();
        let grads = grads_of(&y, 3);
        assert!(grads.get(q.as_tensor()).is_some());
        assert!(grads.get(&k).is_none() && grads.get(&v).is_none());
        let bad = Attention {
            heads: 3,
            kv_heads: 2,
            ..block
        };
        assert!(bad.forward(q.as_tensor(), &k, &v).is_err());
    }

    #[test]
    fn rms_norm_equals_the_composed_ops() {
        for dtype in [DType::F32, DType::BF16] {
            let x = var(&[2, 3, 8], 30, dtype);
            let weight = tensor(&[8], 31, dtype);
            let eps = 1e-6;
            let fused = rms_norm(x.as_tensor(), &weight, eps).unwrap();
            let xf = x.as_tensor().to_dtype(DType::F32).unwrap();
            let variance = xf.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let composed = xf
                .broadcast_mul(&(variance + eps).unwrap().sqrt().unwrap().recip().unwrap())
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .broadcast_mul(&weight)
                .unwrap();
            assert_same(&fused, &composed, &[("x", x.as_tensor())], tolerance(dtype));
        }
    }

    #[test]
    fn silu_mul_equals_the_composed_ops() {
        for dtype in [DType::F32, DType::BF16] {
            let gate = var(&[3, 7], 40, dtype);
            let up = var(&[3, 7], 41, dtype);
            let fused = silu_mul(gate.as_tensor(), up.as_tensor()).unwrap();
            // Float32 has a dedicated kernel op (with its own backward); other dtypes compose.
            let composed = if dtype == DType::F32 {
                crate::ops::silu_mul(gate.as_tensor(), up.as_tensor()).unwrap()
            } else {
                (gate.as_tensor().silu().unwrap() * up.as_tensor()).unwrap()
            };
            assert_same(
                &fused,
                &composed,
                &[("gate", gate.as_tensor()), ("up", up.as_tensor())],
                tolerance(dtype),
            );
        }
    }

    #[test]
    fn applies_only_to_tracked_cpu_inputs_outside_float32() {
        let plain = tensor(&[2, 2], 50, DType::BF16);
        let tracked = var(&[2, 2], 51, DType::F32);
        assert!(!applies(&[&plain]));
        assert!(applies(&[&plain, tracked.as_tensor()]));
        assert!(!applies(&[tracked.as_tensor()]));
    }
}
