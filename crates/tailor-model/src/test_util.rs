//! Helpers shared by the unit tests.

use candle_core::{DType, Device, Tensor};

/// Deterministic values in [-0.5, 0.5) (a linear congruential stream from `seed`).
pub(crate) fn draw(shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// [`draw`] as a CPU tensor of `dtype`.
pub(crate) fn tensor(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    Tensor::from_vec(draw(shape, seed), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

/// The largest absolute entry, in float32.
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.abs()?.max_all()?.to_scalar::<f32>())
        .unwrap()
}

/// The largest absolute difference, in float32 (shapes must match).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}
