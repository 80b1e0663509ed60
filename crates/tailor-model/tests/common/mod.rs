//! Helpers shared by the integration tests.

use candle_core::Tensor;

/// Largest absolute difference; panics on a shape difference.
pub fn max_abs_diff(got: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(got.dims(), expected.dims());
    (got - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
