//! Training-path ops with hand-written backward passes, for work that candle's generic autograd
//! would waste.
//!
//! candle's backward of `x.matmul(w)` always computes both `dx` and `dw`, even when `w` is a
//! frozen base weight that no optimizer will ever read: with LoRA every base linear layer pays a
//! full `xᵀ · dy` product (a third of the layer's backward arithmetic), a zero-filled buffer the
//! size of the weight and an addition into it, all thrown away. [`frozen_linear`] computes the
//! same forward with a backward that returns `dx` only.
//!
//! [`softmax_last_dim`] and [`silu_mul`] replace chains of candle ops (five for a softmax, two
//! for SiLU·up, each a pass over memory and each with its own backward allocating zero-filled
//! buffers) by one float32 CPU kernel forward and one backward; other dtypes and devices keep
//! the composed ops.
//!
//! [`scale_to_f32`] and [`narrow_scaled`] are the attention scores' scale-and-cast between the
//! model dtype and the float32 softmax, in one pass for bfloat16 with candle's exact rounding.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, D, DType, Device, Layout, Result, Shape, Storage, Tensor,
};

use half::bf16;

use crate::kernels;

/// `x · wᵀ` over the last axis of `x` for a weight `w` `[out, in]` that takes no gradient.
///
/// On the CPU, when `x` is tracked and `w` is not, the product is a custom op whose backward
/// returns only `dL/dx = dL/dy · w`; elsewhere it is candle's plain matmul. Forward values are
/// those of candle's matmul either way (the same kernel runs).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    let dims = x.dims();
    let Some((&last, lead)) = dims.split_last() else {
        candle_core::bail!("frozen_linear: a scalar input has no feature axis");
    };
    if last != in_dim {
        candle_core::bail!(
            "frozen_linear: input has {last} features, the weight {w:?} expects {in_dim}",
            w = w.dims()
        );
    }
    let rows: usize = lead.iter().product();
    let x2 = x.contiguous()?.reshape((rows, in_dim))?;
    let y = if matches!(x.device(), Device::Cpu) && x.track_op() && !w.track_op() {
        x2.apply_op1_arc(std::sync::Arc::new(Box::new(FrozenMatmul { w: w.clone() })))?
    } else {
        x2.matmul(&w.t()?)?
    };
    let mut shape = lead.to_vec();
    shape.push(out_dim);
    y.reshape(shape)
}

/// The op behind [`frozen_linear`]: `x [rows, in] · wᵀ`, gradient for `x` only.
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = x_layout.shape().dims2()?;
        let (n, k2) = self.w.dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-linear: [{rows}, {k}] input for a [{n}, {k2}] weight");
        }
        let (w_storage, w_layout) = self.w.storage_and_layout();
        let Storage::Cpu(w) = &*w_storage else {
            candle_core::bail!("frozen-linear: the weight is not on the CPU");
        };
        let wt_layout = w_layout.transpose(0, 1)?;
        let out = x.matmul(w, (1, rows, n, k), x_layout, &wt_layout)?;
        Ok((out, Shape::from((rows, n))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.matmul(&self.w)?))
    }
}

/// Whether `t` can go through the float32 CPU kernels.
fn f32_cpu(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu)
}

/// The values of a contiguous float32 CPU storage under `layout`.
fn f32_values<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused op: the input is not contiguous");
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Runs `f` on the values of a float32 CPU tensor (made contiguous first).
pub(crate) fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    with_slice(t, f)
}

/// Runs `f` on the values of a bfloat16 CPU tensor (made contiguous first).
fn with_bf16<R>(t: &Tensor, f: impl FnOnce(&[bf16]) -> R) -> Result<R> {
    with_slice(t, f)
}

/// Runs `f` on the values of a CPU tensor of element type `T` (made contiguous first).
fn with_slice<T: candle_core::WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fused op: the tensor is not on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused op: the tensor is not contiguous");
    };
    Ok(f(&cpu.as_slice::<T>()?[start..end]))
}

/// Softmax over the last axis; differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if f32_cpu(x) && x.rank() > 0 {
        return x.contiguous()?.apply_op1(SoftmaxLastDim);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = layout.shape().dims().last().copied().unwrap_or(1);
        let out = kernels::softmax_rows(f32_values(x, layout)?, 1.0, d);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        softmax_last_dim_backward(y, dy).map(Some)
    }
}

/// The input gradient of the float32 [`softmax_last_dim`] from its output `y` and output
/// gradient `dy`.
pub(crate) fn softmax_last_dim_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let d = y.dims().last().copied().unwrap_or(1);
    let dx = with_values(y, |y| {
        with_values(dy, |dy| kernels::softmax_backward(y, dy, d))
    })??;
    Tensor::from_vec(dx, y.shape(), y.device())
}

/// `silu(gate) · up`, element-wise; differentiable in both.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if f32_cpu(gate) && f32_cpu(up) && gate.shape() == up.shape() {
        return gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul);
    }
    if gate.shape() == up.shape() && crate::fused::applies(&[gate, up]) {
        return crate::fused::silu_mul(gate, up);
    }
    gate.silu()? * up
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = kernels::silu_mul(f32_values(gate, gate_layout)?, f32_values(up, up_layout)?);
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dgate, dup) = silu_mul_backward(gate, up, dy)?;
        Ok((Some(dgate), Some(dup)))
    }
}

/// The gradients of `gate` and `up` in the float32 [`silu_mul`] for the output gradient `dy`.
pub(crate) fn silu_mul_backward(
    gate: &Tensor,
    up: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (dgate, dup) = with_values(gate, |g| {
        with_values(up, |u| {
            with_values(dy, |dy| kernels::silu_mul_backward(g, u, dy))
        })
    })???;
    let (shape, device) = (gate.shape(), gate.device());
    Ok((
        Tensor::from_vec(dgate, shape, device)?,
        Tensor::from_vec(dup, shape, device)?,
    ))
}

/// `(x * scale)?.to_dtype(F32)`: the scaled attention scores widened for the float32 softmax.
///
/// For an untracked bfloat16 CPU tensor, one pass with the same arithmetic as candle's bf16
/// `affine` (`x · bf16(scale) + bf16(0)`, each step rounded to bfloat16) followed by the exact
/// widening; candle's version makes two passes through non-inlined per-element conversions and
/// was a tenth of a bf16 training step. Anything else takes the composed ops.
pub fn scale_to_f32(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (mul, add) = (bf16::from_f64(scale).to_f32(), bf16::from_f64(0.0).to_f32());
    if untracked_bf16(x) {
        let out = with_bf16(x, |v| {
            v.iter()
                .map(|&v| round_bf16(round_bf16(v.to_f32() * mul) + add))
                .collect::<Vec<f32>>()
        })?;
        return Tensor::from_vec(out, x.shape(), x.device());
    }
    (x * scale)?.to_dtype(DType::F32)
}

/// `(x.to_dtype(dtype)? * scale)` for a float32 `x`: the scores' gradient narrowed back to the
/// attention's dtype and scaled. One pass for an untracked float32 CPU `x` narrowed to
/// bfloat16 (same arithmetic as candle's cast and bf16 `affine`); the composed ops otherwise.
pub fn narrow_scaled(x: &Tensor, dtype: DType, scale: f64) -> Result<Tensor> {
    if dtype == DType::BF16 && f32_cpu(x) && !x.track_op() {
        let (mul, add) = (bf16::from_f64(scale).to_f32(), bf16::from_f64(0.0).to_f32());
        let out: Vec<bf16> = with_values(x, |v| {
            v.iter()
                .map(|&v| to_bf16(round_bf16(round_bf16(v) * mul) + add))
                .collect()
        })?;
        return Tensor::from_vec(out, x.shape(), x.device());
    }
    x.to_dtype(dtype)? * scale
}

/// `a + b` for tensors of one shape. Two untracked bfloat16 CPU tensors are added in one pass
/// with candle's arithmetic (widen, add in float32, round to nearest even); candle 0.11.1 goes
/// through non-inlined conversion calls per eight elements, which made these additions (the
/// residual stream and the gradient sums of a decoder layer) a tenth of a bf16 training step.
/// Anything else is candle's `add`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() == b.shape() && untracked_bf16(a) && untracked_bf16(b) {
        let sum = with_bf16(a, |x| {
            with_bf16(b, |y| {
                x.iter()
                    .zip(y)
                    .map(|(&x, &y)| to_bf16(x.to_f32() + y.to_f32()))
                    .collect::<Vec<bf16>>()
            })
        })??;
        return Tensor::from_vec(sum, a.shape(), a.device());
    }
    a + b
}

/// `x·cos + rotate_half(x)·sin` for untracked float32 or bfloat16 CPU tensors `x [b, n, l, d]`
/// and `cos`/`sin [b, 1, l, d]` (the decoder's M-RoPE), in one pass with the arithmetic of the
/// composed ops (each product and the sum rounded to the dtype); `None` for anything else, which
/// the caller computes with the composed ops. Those are five passes over `x`-sized buffers (two
/// for `rotate_half`), each with candle's per-element bf16 conversions.
pub fn rotary_untracked(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    let dtype = xs.dtype();
    let plain =
        |t: &Tensor| t.dtype() == dtype && !t.track_op() && matches!(t.device(), Device::Cpu);
    if !(matches!(dtype, DType::F32 | DType::BF16) && plain(xs) && plain(cos) && plain(sin)) {
        return Ok(None);
    }
    let Ok((b, n, l, d)) = xs.dims4() else {
        return Ok(None);
    };
    if cos.dims() != [b, 1, l, d] || sin.dims() != [b, 1, l, d] || d % 2 != 0 {
        return Ok(None);
    }
    fn rotate<T: Element + candle_core::WithDType>(
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        dims: [usize; 4],
    ) -> Result<Tensor> {
        let y = with_slice(xs, |x| {
            with_slice(cos, |c| {
                with_slice(sin, |s| rotary_rows::<T>(x, c, s, dims))
            })
        })???;
        Tensor::from_vec(y, dims.as_slice(), xs.device())
    }
    let dims = [b, n, l, d];
    Ok(Some(match dtype {
        DType::F32 => rotate::<f32>(xs, cos, sin, dims)?,
        _ => rotate::<bf16>(xs, cos, sin, dims)?,
    }))
}

/// A float dtype's storage element: exact widening to float32, and the rounding of a float32
/// result to the dtype (kept in float32).
trait Element: Copy {
    fn widen(self) -> f32;
    fn round(x: f32) -> f32;
    /// `x`, already rounded by [`Element::round`], as the element.
    fn narrow(x: f32) -> Self;
}

impl Element for f32 {
    fn widen(self) -> f32 {
        self
    }
    fn round(x: f32) -> f32 {
        x
    }
    fn narrow(x: f32) -> Self {
        x
    }
}

impl Element for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn round(x: f32) -> f32 {
        round_bf16(x)
    }
    fn narrow(x: f32) -> Self {
        to_bf16(x)
    }
}

/// The rows of [`rotary_untracked`]: `x` `[b, n, l, d]`, `cos`/`sin` `[b, l, d]`.
fn rotary_rows<T: Element>(x: &[T], cos: &[T], sin: &[T], [b, n, l, d]: [usize; 4]) -> Vec<T> {
    let half = d / 2;
    let mut out = Vec::with_capacity(x.len());
    for bi in 0..b {
        for hi in 0..n {
            for li in 0..l {
                let row = &x[((bi * n + hi) * l + li) * d..][..d];
                let c = &cos[(bi * l + li) * d..][..d];
                let s = &sin[(bi * l + li) * d..][..d];
                for j in 0..d {
                    // rotate_half: [−x₂, x₁].
                    let r = if j < half {
                        -row[j + half].widen()
                    } else {
                        row[j - half].widen()
                    };
                    let a = T::round(row[j].widen() * c[j].widen());
                    let rs = T::round(r * s[j].widen());
                    out.push(T::narrow(T::round(a + rs)));
                }
            }
        }
    }
    out
}

/// `silu(gate) · up` for untracked bfloat16 CPU tensors of one shape, in one pass with the
/// arithmetic of candle's bf16 `silu` and `mul` (`g / (1 + exp(−g))` and the product, each
/// step rounded to bfloat16); `None` for anything else.
pub fn silu_mul_bf16(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if gate.shape() != up.shape() || !untracked_bf16(gate) || !untracked_bf16(up) {
        return Ok(None);
    }
    let out = with_bf16(gate, |g| {
        with_bf16(up, |u| {
            g.iter()
                .zip(u)
                .map(|(&g, &u)| to_bf16(silu_bf16(g.to_f32()) * u.to_f32()))
                .collect::<Vec<bf16>>()
        })
    })??;
    Ok(Some(Tensor::from_vec(out, gate.shape(), gate.device())?))
}

/// The gradients `(dgate, dup)` of [`silu_mul_bf16`] for the output gradient `grad`, with the
/// arithmetic of candle's bf16 ops in the order the composed backward applies them:
/// `dup = grad·silu`, `dgate = (grad·up) · (σ·(1 − silu) + silu)` with `σ = 1 / (exp(−g) + 1)`;
/// `None` unless all three are untracked bfloat16 CPU tensors of one shape.
pub fn silu_mul_bf16_backward(
    gate: &Tensor,
    up: &Tensor,
    grad: &Tensor,
) -> Result<Option<(Tensor, Tensor)>> {
    let same = gate.shape() == up.shape() && gate.shape() == grad.shape();
    if !(same && untracked_bf16(gate) && untracked_bf16(up) && untracked_bf16(grad)) {
        return Ok(None);
    }
    let (dgate, dup) = with_bf16(gate, |g| {
        with_bf16(up, |u| {
            with_bf16(grad, |d| {
                let mut dgate = Vec::with_capacity(g.len());
                let mut dup = Vec::with_capacity(g.len());
                for ((&g, &u), &d) in g.iter().zip(u).zip(d) {
                    let (g, u, d) = (g.to_f32(), u.to_f32(), d.to_f32());
                    let silu = silu_bf16(g);
                    let dsilu = round_bf16(d * u);
                    dup.push(to_bf16(d * silu));
                    let e = round_bf16((-g).exp());
                    let sigmoid = round_bf16(1.0 / round_bf16(e + 1.0));
                    let one_minus = round_bf16(round_bf16(-silu) + 1.0);
                    let slope = round_bf16(round_bf16(sigmoid * one_minus) + silu);
                    dgate.push(to_bf16(dsilu * slope));
                }
                (dgate, dup)
            })
        })
    })???;
    let (shape, device) = (gate.shape(), gate.device());
    Ok(Some((
        Tensor::from_vec(dgate, shape, device)?,
        Tensor::from_vec(dup, shape, device)?,
    )))
}

/// candle's bf16 `silu` of a bf16 value `g` (as f32): `g / (1 + exp(−g))`, each step rounded.
#[inline(always)]
fn silu_bf16(g: f32) -> f32 {
    let e = round_bf16((-g).exp());
    round_bf16(g / round_bf16(1.0 + e))
}

/// Whether the one-pass bfloat16 loops apply to `t`: bfloat16, no graph, on the CPU.
fn untracked_bf16(t: &Tensor) -> bool {
    t.dtype() == DType::BF16 && !t.track_op() && matches!(t.device(), Device::Cpu)
}

/// `x` rounded to bfloat16 (see [`round_bf16`]).
#[inline(always)]
fn to_bf16(x: f32) -> bf16 {
    bf16::from_bits((round_bf16(x).to_bits() >> 16) as u16)
}

/// `f32 → bf16 → f32` with bfloat16's round-to-nearest-even (NaN stays NaN, quietened), as
/// `half::bf16::from_f32` rounds, but inlined so that loops over it vectorise.
#[inline(always)]
fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        return f32::from_bits((bits | 0x0040_0000) & 0xFFFF_0000);
    }
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
    f32::from_bits(rounded & 0xFFFF_0000)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Var};

    use super::*;
    use crate::test_util::{draw, max_diff};

    #[test]
    fn equals_the_plain_matmul_forward_and_input_gradient() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let x = Var::from_vec(draw(&[2, 5, 7], 1), (2, 5, 7), &dev).unwrap();
            let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let w = Tensor::from_vec(draw(&[3, 7], 2), (3, 7), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let probe = Tensor::from_vec(draw(&[2, 5, 3], 3), (2, 5, 3), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();

            let ours = frozen_linear(x.as_tensor(), &w).unwrap();
            let plain = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            assert_eq!(ours.dims(), [2, 5, 3]);
            assert_eq!(max_diff(&ours, &plain), 0.0, "{dtype:?} forward");

            let (g_ours, g_plain) = (grads_of(ours, &probe), grads_of(plain, &probe));
            let (a, b) = (
                g_ours.get(x.as_tensor()).unwrap(),
                g_plain.get(x.as_tensor()).unwrap(),
            );
            let tol = if dtype == DType::F32 { 1e-6 } else { 2e-2 };
            assert!(
                max_diff(a, b) <= tol,
                "{dtype:?} dx differs by {}",
                max_diff(a, b)
            );
            // The frozen weight gets nothing.
            assert!(g_ours.get(&w).is_none());
        }
    }

    #[test]
    fn untracked_inputs_take_the_plain_path() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(draw(&[4, 6], 4), (4, 6), &dev).unwrap();
        let w = Tensor::from_vec(draw(&[2, 6], 5), (2, 6), &dev).unwrap();
        let y = frozen_linear(&x, &w).unwrap();
        assert!(!y.track_op());
        let expect = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            expect.to_vec2::<f32>().unwrap()
        );
        assert!(frozen_linear(&x, &w.t().unwrap()).is_err());
    }

    /// Values across bfloat16's range, with the special cases rounding has to get right.
    fn awkward_values() -> Vec<f32> {
        let mut v: Vec<f32> = draw(&[4096], 7)
            .iter()
            .enumerate()
            .map(|(i, x)| x * 10f32.powi((i % 80) as i32 - 40))
            .collect();
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            3.389_531_4e38,
            1.0 + f32::EPSILON,
        ]);
        v
    }

    /// [`awkward_values`] rotated left by `k`, to pair each value with others.
    fn awkward_rotated(k: usize) -> Vec<f32> {
        let mut v = awkward_values();
        v.rotate_left(k);
        v
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn rotary_equals_the_composed_ops_bit_for_bit() {
        let (b, n, l, d) = (2, 3, 5, 8);
        for dtype in [DType::F32, DType::BF16] {
            // Queries as the decoder splits them: a transposed view of [b, l, n, d].
            let x = Tensor::from_vec(draw(&[b, l, n, d], 1), (b, l, n, d), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let table = |seed| {
                let t = Tensor::from_vec(draw(&[b, 1, l, d], seed), (b, 1, l, d), &Device::Cpu);
                (t.unwrap() * 4.0).unwrap().to_dtype(dtype).unwrap()
            };
            let (cos, sin) = (table(2), table(3));
            let ours = rotary_untracked(&x, &cos, &sin)
                .unwrap()
                .expect("fast path");
            let half = d / 2;
            let rotated = Tensor::cat(
                &[
                    &x.narrow(3, half, half).unwrap().neg().unwrap(),
                    &x.narrow(3, 0, half).unwrap(),
                ],
                3,
            )
            .unwrap();
            let composed =
                (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap();
            assert_eq!(ours.dims(), composed.dims());
            assert_eq!(bits(&ours), bits(&composed), "{dtype:?}");
            // Other shapes and tracked inputs are left to the composed ops.
            let v = Var::from_tensor(&x).unwrap();
            assert!(
                rotary_untracked(v.as_tensor(), &cos, &sin)
                    .unwrap()
                    .is_none()
            );
            let flat = cos.squeeze(1).unwrap();
            assert!(rotary_untracked(&x, &flat, &flat).unwrap().is_none());
        }
    }

    #[test]
    fn bf16_silu_mul_equals_candles_ops_bit_for_bit() {
        let (g, u, d) = (awkward_values(), awkward_rotated(5), awkward_rotated(11));
        let n = g.len();
        let t = |v: Vec<f32>| {
            Tensor::from_vec(v, n, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        let (g, u, d) = (t(g), t(u), t(d));
        let silu = g.silu().unwrap();
        let ours = silu_mul_bf16(&g, &u).unwrap().expect("bf16 path");
        assert_eq!(bits(&ours), bits(&(&silu * &u).unwrap()));
        // The backward as the composed ops compute it (fused::composed_silu_mul_backward).
        let dsilu = (&d * &u).unwrap();
        let dup = (&d * &silu).unwrap();
        let sigmoid = (g.neg().unwrap().exp().unwrap() + 1.)
            .unwrap()
            .recip()
            .unwrap();
        let slope = ((&sigmoid * (1. - &silu).unwrap()).unwrap() + &silu).unwrap();
        let dgate = (dsilu * slope).unwrap();
        let (our_dgate, our_dup) = silu_mul_bf16_backward(&g, &u, &d).unwrap().expect("bf16");
        assert_eq!(bits(&our_dgate), bits(&dgate), "dgate");
        assert_eq!(bits(&our_dup), bits(&dup), "dup");
        // Other dtypes, tracked inputs and mismatched shapes are left to the composed ops.
        let f = g.to_dtype(DType::F32).unwrap();
        assert!(silu_mul_bf16(&f, &f).unwrap().is_none());
        let v = Var::from_tensor(&g).unwrap();
        assert!(silu_mul_bf16(v.as_tensor(), &u).unwrap().is_none());
        assert!(
            silu_mul_bf16_backward(&g, &u, &d.narrow(0, 0, 3).unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn add_equals_candles_add_bit_for_bit() {
        let (a, b) = (awkward_values(), awkward_rotated(17));
        let n = a.len();
        let a = Tensor::from_vec(a, n, &Device::Cpu).unwrap();
        let b = Tensor::from_vec(b, n, &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F32] {
            let (a, b) = (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
            let ours = add(&a, &b).unwrap();
            assert_eq!(ours.dtype(), dtype);
            assert_eq!(bits(&ours), bits(&(&a + &b).unwrap()), "{dtype:?}");
        }
        // Tracked inputs keep candle's op (and its gradient).
        let v = Var::from_tensor(&a.to_dtype(DType::BF16).unwrap()).unwrap();
        assert!(add(v.as_tensor(), v.as_tensor()).unwrap().track_op());
        assert!(add(&a, &a.reshape((1, n)).unwrap()).is_err());
    }

    #[test]
    fn scale_to_f32_equals_candles_affine_and_cast_bit_for_bit() {
        let values = awkward_values();
        let n = values.len();
        let x = Tensor::from_vec(values, n, &Device::Cpu).unwrap();
        for scale in [0.125, 1.0 / 128f64.sqrt(), 1.0 / 3.0, -2.5] {
            for dtype in [DType::BF16, DType::F32] {
                let xd = x.to_dtype(dtype).unwrap();
                let ours = scale_to_f32(&xd, scale).unwrap();
                let theirs = (&xd * scale).unwrap().to_dtype(DType::F32).unwrap();
                assert_eq!(ours.dtype(), DType::F32);
                assert_eq!(bits(&ours), bits(&theirs), "{dtype:?} × {scale}");
            }
            let ours = narrow_scaled(&x, DType::BF16, scale).unwrap();
            let theirs = (x.to_dtype(DType::BF16).unwrap() * scale).unwrap();
            assert_eq!(ours.dtype(), DType::BF16);
            assert_eq!(bits(&ours), bits(&theirs), "narrowed × {scale}");
        }
        // A strided view takes the same path after being made contiguous.
        let m = Tensor::from_vec(draw(&[6, 4], 8), (6, 4), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .t()
            .unwrap();
        let theirs = (&m * 0.3).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(bits(&scale_to_f32(&m, 0.3).unwrap()), bits(&theirs));
    }

    /// Gradients of `Σ y · probe`.
    fn grads_of(y: Tensor, probe: &Tensor) -> candle_core::backprop::GradStore {
        (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
    }

    #[test]
    fn fused_softmax_equals_the_composed_one_with_its_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_vec(draw(&[3, 2, 9], 6), (3, 2, 9), &dev).unwrap();
        let x = Var::from_tensor(&(x.as_tensor() * 8.0).unwrap()).unwrap();
        let probe = Tensor::from_vec(draw(&[3, 2, 9], 7), (3, 2, 9), &dev).unwrap();
        let ours = softmax_last_dim(x.as_tensor()).unwrap();
        let composed = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        assert!(max_diff(&ours, &composed) < 1e-7);
        let (g_ours, g_comp) = (grads_of(ours, &probe), grads_of(composed, &probe));
        let (a, b) = (
            g_ours.get(x.as_tensor()).unwrap(),
            g_comp.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(a, b) < 1e-7, "dx differs by {}", max_diff(a, b));
    }

    #[test]
    fn fused_silu_mul_equals_the_composed_one_with_its_gradients() {
        let dev = Device::Cpu;
        let g = Var::from_vec(draw(&[4, 33], 8), (4, 33), &dev).unwrap();
        let g = Var::from_tensor(&(g.as_tensor() * 12.0).unwrap()).unwrap();
        let u = Var::from_vec(draw(&[4, 33], 9), (4, 33), &dev).unwrap();
        let probe = Tensor::from_vec(draw(&[4, 33], 10), (4, 33), &dev).unwrap();
        let ours = silu_mul(g.as_tensor(), u.as_tensor()).unwrap();
        let composed = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        assert!(max_diff(&ours, &composed) < 1e-6);
        let (g_ours, g_comp) = (grads_of(ours, &probe), grads_of(composed, &probe));
        for v in [&g, &u] {
            let (a, b) = (
                g_ours.get(v.as_tensor()).unwrap(),
                g_comp.get(v.as_tensor()).unwrap(),
            );
            assert!(
                max_diff(a, b) < 1e-6,
                "gradient differs by {}",
                max_diff(a, b)
            );
        }
        // Other dtypes keep the composed ops.
        let gb = g.as_tensor().to_dtype(DType::BF16).unwrap();
        let ub = u.as_tensor().to_dtype(DType::BF16).unwrap();
        assert_eq!(silu_mul(&gb, &ub).unwrap().dtype(), DType::BF16);
    }
}
