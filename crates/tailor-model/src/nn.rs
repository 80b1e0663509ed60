//! Building blocks shared by the vision tower and the decoder, written from differentiable
//! primitives only.
//!
//! candle-nn's fast kernels (`RmsNorm::forward` on contiguous input, `softmax_last_dim`,
//! `rotary_emb::rope*`) have no backward and silently detach their outputs, so nothing here uses
//! them: the LoRA training path runs through these functions.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::lora::Projection;

/// Root-mean-square norm with a learned scale, as transformers' `Qwen2RMSNorm`: normalise in
/// float32, cast back to the input dtype, then multiply by the weight.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            // Ones when the builder initialises (a VarMap), as transformers initialises norms.
            weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            eps,
        })
    }

    /// The learned scale and epsilon, for inference-only kernels that compute the same norm.
    pub(crate) fn parts(&self) -> (&Tensor, f64) {
        (&self.weight, self.eps)
    }
}

impl RmsNorm {
    /// Whether [`RmsNorm::traced`] applies: a frozen scale on the CPU.
    pub(crate) fn traceable(&self) -> bool {
        !self.weight.track_op() && matches!(self.weight.device(), candle_core::Device::Cpu)
    }

    /// The norm without a graph, with its backward (see [`crate::fused::Traced`]).
    pub(crate) fn traced(&self, xs: &Tensor) -> Result<crate::fused::Traced> {
        crate::fused::rms_norm_traced(xs, &self.weight, self.eps)
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !self.weight.track_op() && crate::fused::applies(&[xs]) {
            return crate::fused::rms_norm(xs, &self.weight, self.eps);
        }
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_rms = (variance + self.eps)?.sqrt()?.recip()?;
        xs.broadcast_mul(&inv_rms)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)
    }
}

/// `down(silu(gate(x)) · up(x))`, with or without biases.
#[derive(Debug, Clone)]
pub(crate) struct SwiGlu {
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

impl SwiGlu {
    pub(crate) fn new(
        hidden: usize,
        intermediate: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let linear = |i, o, name| Projection::new(i, o, bias, vb.pp(name));
        Ok(Self {
            gate_proj: linear(hidden, intermediate, "gate_proj")?,
            up_proj: linear(hidden, intermediate, "up_proj")?,
            down_proj: linear(intermediate, hidden, "down_proj")?,
        })
    }
}

impl SwiGlu {
    pub(crate) fn projections_mut(&mut self) -> [&mut Projection; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    /// `[gate, up, down]`, for inference-only code that fuses the activation.
    pub(crate) fn projections(&self) -> [&Projection; 3] {
        [&self.gate_proj, &self.up_proj, &self.down_proj]
    }
}

impl Module for SwiGlu {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?;
        let up = self.up_proj.forward(xs)?;
        self.down_proj.forward(&crate::ops::silu_mul(&gate, &up)?)
    }
}

/// `concat(−x[half..], x[..half])` over the last dimension.
pub(crate) fn rotate_half(xs: &Tensor) -> Result<Tensor> {
    let half = xs.dim(D::Minus1)? / 2;
    let x1 = xs.narrow(D::Minus1, 0, half)?;
    let x2 = xs.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// `x·cos + rotate_half(x)·sin`, with `cos`/`sin` broadcast against `x`.
pub(crate) fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if let Some(ys) = crate::ops::rotary_untracked(xs, cos, sin)? {
        return Ok(ys);
    }
    xs.broadcast_mul(cos)? + rotate_half(xs)?.broadcast_mul(sin)?
}

/// `[b, kv, l, d]` → `[b, kv·groups, l, d]`: KV head `g` serves query heads `g·groups..`
/// (contiguous either way).
pub(crate) fn repeat_kv(xs: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return xs.contiguous();
    }
    let (b, kv, l, d) = xs.dims4()?;
    xs.unsqueeze(2)?
        .expand((b, kv, groups, l, d))?
        .reshape((b, kv * groups, l, d))
}

/// Scaled dot-product attention over `[batch, heads, len, head_dim]` inputs: scores scaled after
/// the product, an optional additive float32 mask, softmax in float32, result in the input dtype.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = q.dtype();
    let scores = crate::ops::scale_to_f32(&q.matmul(&k.t()?)?, scale)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    let probs = crate::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    probs.matmul(v)
}

/// `1 / theta^(2i/dim)` for `i` in `0..dim/2`, in float32 as transformers computes it.
pub(crate) fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    let theta = theta as f32;
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn rms_norm_matches_the_formula_and_propagates_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![1f32, 2., 3., 4., -1., 0., 1., 2.], (2, 4), &dev).unwrap();
        let weight = Tensor::new(&[1f32, 2., 0.5, 1.], &dev).unwrap();
        let norm = RmsNorm { weight, eps: 1e-6 };
        let y = norm.forward(x.as_tensor()).unwrap();
        let rms0 = ((1. + 4. + 9. + 16.) / 4f32 + 1e-6).sqrt();
        let got = y.to_vec2::<f32>().unwrap();
        assert!((got[0][1] - 2. * 2. / rms0).abs() < 1e-6);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(g.to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn rotate_half_negates_and_swaps_the_halves() {
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        assert_eq!(
            rotate_half(&x).unwrap().to_vec1::<f32>().unwrap(),
            vec![-3., -4., 1., 2.]
        );
    }

    #[test]
    fn inverse_frequencies_follow_theta() {
        let f = inv_freq(8, 10_000.0);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[2] - 0.01).abs() < 1e-9);
    }
}
