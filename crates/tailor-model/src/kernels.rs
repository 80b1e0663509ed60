//! Float32 CPU kernels for the element-wise work around the matrix products: SiLU·up, the
//! scaled row softmax, and the parallel loop that spreads them over the thread pool that gemm
//! already uses.
//!
//! Why our own: candle 0.11.1 computes `exp` one scalar libm call at a time, and its element-wise
//! pool is either a spinning barrier (slow when another process shares the cores) or, with
//! `CANDLE_NUM_THREADS=1`, a single thread. On the vision tower's shapes that left SiLU and the
//! attention softmax at a third of the tower's time. Here `exp` is a branch-free polynomial that
//! the compiler vectorises, compiled twice (baseline x86-64 and AVX2) and picked at run time, and
//! the rows are split over rayon.
//!
//! Results do not depend on the instruction set or the thread count: every kernel is plain IEEE
//! arithmetic (no fused multiply-add, no reassociation across threads; reductions run within one
//! row in a fixed order).

use rayon::prelude::*;

/// Elements per unit of parallel work: enough to amortise the dispatch.
pub(crate) const UNIT: usize = 16 * 1024;

/// Runs `f(first_row, rows)` over `out` (rows of `row_len`) in units of about [`UNIT`] elements
/// on rayon's pool.
pub(crate) fn par_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let row_len = row_len.max(1);
    let rows_per_unit = (UNIT / row_len).max(1);
    out.par_chunks_mut(rows_per_unit * row_len)
        .enumerate()
        .for_each(|(u, chunk)| f(u * rows_per_unit, chunk));
}

/// `e^x` in float32 with a relative error of about 1 ulp (Cephes' `expf` polynomial after a
/// Cody–Waite reduction by ln 2); 0 below the smallest normal result, +∞ above the largest.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    const MAX: f32 = 88.722_83;
    const MIN: f32 = -87.336_54;
    let xc = x.clamp(MIN, MAX);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n by building the exponent bits; n is in [-126, 128] after the clamp.
    let n = n as i32;
    let (n1, n2) = (n >> 1, n - (n >> 1));
    let scale = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = er * scale(n1) * scale(n2);
    if x < MIN {
        0.0
    } else if x > MAX {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// Compiles `$generic` (an `#[inline(always)]` function) a second time with AVX2 enabled and
/// picks that copy at run time when the CPU has it.
macro_rules! dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $generic:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

#[inline(always)]
fn silu_mul_generic(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

dispatch! {
    /// `out = silu(gate) · up`, element by element, on one thread.
    fn silu_mul_serial(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul_generic
}

/// `silu(gate) · up` over whole buffers, in parallel.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "silu_mul: operands differ in length");
    let mut out = vec![0f32; gate.len()];
    par_rows(&mut out, 1, |start, o| {
        let end = start + o.len();
        silu_mul_serial(&gate[start..end], &up[start..end], o);
    });
    out
}

/// Sum with eight independent accumulators, in a fixed order (vectorisable).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline(always)]
fn softmax_rows_generic(src: &[f32], scale: f32, d: usize, out: &mut [f32]) {
    for (srow, orow) in src.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mut max = f32::NEG_INFINITY;
        for (o, &v) in orow.iter_mut().zip(srow) {
            *o = v * scale;
            max = max.max(*o);
        }
        for o in orow.iter_mut() {
            *o = exp(*o - max);
        }
        let inv = 1.0 / sum8(orow);
        for o in orow.iter_mut() {
            *o *= inv;
        }
    }
}

dispatch! {
    /// `softmax(src · scale)` of each row of length `d`, on one thread.
    fn softmax_rows_serial(src: &[f32], scale: f32, d: usize, out: &mut [f32]) => softmax_rows_generic
}

/// `softmax(src · scale)` over rows of length `d`, in parallel.
pub(crate) fn softmax_rows(src: &[f32], scale: f32, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    par_rows(&mut out, d, |r0, o| {
        softmax_rows_serial(&src[r0 * d..r0 * d + o.len()], scale, d, o);
    });
    out
}

#[inline(always)]
fn silu_mul_backward_generic(
    gate: &[f32],
    up: &[f32],
    dy: &[f32],
    dgate: &mut [f32],
    dup: &mut [f32],
) {
    for i in 0..dgate
        .len()
        .min(dup.len())
        .min(gate.len())
        .min(up.len())
        .min(dy.len())
    {
        let (g, u, d) = (gate[i], up[i], dy[i]);
        let s = 1.0 / (1.0 + exp(-g));
        dup[i] = d * g * s;
        dgate[i] = d * u * s * (1.0 + g * (1.0 - s));
    }
}

dispatch! {
    /// The gradients of `silu(gate) · up` for the output gradient `dy`, on one thread.
    fn silu_mul_backward_serial(gate: &[f32], up: &[f32], dy: &[f32], dgate: &mut [f32], dup: &mut [f32]) => silu_mul_backward_generic
}

/// `(d gate, d up)` of `silu(gate) · up` for the output gradient `dy`, in parallel.
pub(crate) fn silu_mul_backward(gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        gate.len() == up.len() && up.len() == dy.len(),
        "silu_mul_backward: operands differ in length"
    );
    let mut dgate = vec![0f32; gate.len()];
    let mut dup = vec![0f32; gate.len()];
    let rows = UNIT;
    dgate
        .par_chunks_mut(rows)
        .zip(dup.par_chunks_mut(rows))
        .enumerate()
        .for_each(|(c, (dg, du))| {
            let at = c * rows..c * rows + dg.len();
            silu_mul_backward_serial(&gate[at.clone()], &up[at.clone()], &dy[at], dg, du);
        });
    (dgate, dup)
}

#[inline(always)]
fn softmax_backward_generic(y: &[f32], dy: &[f32], d: usize, out: &mut [f32]) {
    for ((yrow, drow), orow) in y
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(out.chunks_exact_mut(d))
    {
        for ((o, &a), &b) in orow.iter_mut().zip(yrow).zip(drow) {
            *o = a * b;
        }
        let dot = sum8(orow);
        for ((o, &a), &b) in orow.iter_mut().zip(yrow).zip(drow) {
            *o = a * (b - dot);
        }
    }
}

dispatch! {
    /// The input gradient of a row softmax from its output `y` and output gradient `dy`, on one
    /// thread.
    fn softmax_backward_serial(y: &[f32], dy: &[f32], d: usize, out: &mut [f32]) => softmax_backward_generic
}

/// `dx = y · (dy − Σ dy·y)` per row of length `d` (the softmax's backward), in parallel.
pub(crate) fn softmax_backward(y: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    assert_eq!(
        y.len(),
        dy.len(),
        "softmax_backward: operands differ in length"
    );
    let mut out = vec![0f32; y.len()];
    par_rows(&mut out, d, |r0, o| {
        let at = r0 * d..r0 * d + o.len();
        softmax_backward_serial(&y[at.clone()], &dy[at], d, o);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_whole_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let (got, want) = (exp(x), x.exp());
            let rel = ((got - want) / want).abs() as f64 / f32::EPSILON as f64;
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_formula() {
        let d = 37;
        let src: Vec<f32> = (0..5 * d)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let out = softmax_rows(&src, 0.5, d);
        for (srow, orow) in src.chunks(d).zip(out.chunks(d)) {
            let max = srow.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * 0.5));
            let denom: f32 = srow.iter().map(|&v| (v * 0.5 - max).exp()).sum();
            for (&s, &o) in srow.iter().zip(orow) {
                let want = (s * 0.5 - max).exp() / denom;
                assert!((o - want).abs() <= 1e-6 * want.max(1e-3), "{o} vs {want}");
            }
            assert!((orow.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn silu_mul_matches_the_formula_for_any_length() {
        for n in [0usize, 1, 7, 8, 9, 100_003] {
            let g: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 4.0 - 12.0).collect();
            let u: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
            let out = silu_mul(&g, &u);
            for i in 0..n {
                let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
                assert!((out[i] - want).abs() <= 4e-7 * want.abs().max(1.0), "{i}");
            }
        }
    }
}
