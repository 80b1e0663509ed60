//! Target size (`smart_resize`) and Pillow 13's bicubic resampling, bit for bit.
//!
//! Pillow's `ImagingResample` (src/libImaging/Resample.c, read at 13.0.0) is separable: one pass
//! along each axis, each producing uint8 (rounded, clamped) before the next, and a pass is skipped
//! when its dimension does not change. Per pass it precomputes, for every output index, the first
//! input index and a list of weights: the bicubic kernel (a = −0.5) evaluated in f64 at
//! `(x + xmin − center + 0.5) · (1 / filterscale)`, divided by its sum, then rounded half away from
//! zero to fixed point with 22 fractional bits. Each output sample is
//! `clamp((2^21 + Σ pixel · weight) >> 22, 0, 255)` in 32-bit integers.
//!
//! Pillow 13.0.0 also chooses the *order* of the passes (Pillow 11.3, which the reference doc
//! describes, always went horizontal first): when the height shrinks by more than twice as many
//! rows as the width shrinks by columns (`in_h − out_h > 0 && in_h − out_h > 2 · (in_w − out_w)`),
//! the vertical pass runs first. This matters for exactness (the intermediate image is rounded to
//! uint8) and it is common: 750×1101 → 756×1092 runs vertically first because the width grows.
//!
//! Speed: weights are computed once per pass (O(out · taps), negligible next to the pixels), the
//! inner loops are integer multiply-adds over contiguous memory, and the horizontal pass works on
//! strips of rows transposed into column-major order so that it, too, runs over contiguous lanes
//! that the compiler vectorises (with AVX2 when the CPU has it, chosen at run time). When the
//! vertical pass goes first, the two passes are interleaved strip by strip, so the intermediate
//! rows are resampled again while still in cache.

use crate::decode::RgbImage;
use crate::error::{ImageError, Result};

/// Fractional bits of Pillow's fixed-point weights (`PRECISION_BITS = 32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;
/// Pillow starts every accumulator at one half for rounding.
const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Support of Pillow's bicubic filter.
const BICUBIC_SUPPORT: f64 = 2.0;

/// The size (height, width) that `smart_resize` in transformers 5.24 picks: both sides multiples
/// of `factor`, `h · w` within `[min_pixels, max_pixels]`, aspect ratio kept as well as possible.
///
/// Semantics of transformers ≥ 4.53 (and 5.x): an aspect ratio over 200 is an error, images
/// smaller than `factor` are *not* rejected, and the downscale branch is clamped to at least
/// `factor` per side. Rounding is Python's `round` (half to even) on the f64 quotient, and all
/// arithmetic is f64 in Python's order, so results are exact for any image whose `h · w` is below
/// 2^53.
///
/// ```
/// use tailor_image::smart_resize;
/// assert_eq!(smart_resize(42, 70, 28, 3136, 12_845_056)?, (56, 56)); // 1.5 → 2, 2.5 → 2
/// assert_eq!(smart_resize(1000, 3000, 28, 3136, 200_000)?, (252, 756));
/// # Ok::<(), tailor_image::ImageError>(())
/// ```
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32)> {
    if height == 0 || width == 0 {
        return Err(ImageError::ZeroSize {
            width: width.into(),
            height: height.into(),
        });
    }
    let (h, w, f) = (f64::from(height), f64::from(width), f64::from(factor));
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        return Err(ImageError::AspectRatio {
            height,
            width,
            ratio,
        });
    }
    let area = f64::from(height) * f64::from(width); // exact below 2^53
    let (min_p, max_p) = (min_pixels as f64, max_pixels as f64);
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_p {
        let beta = (area / max_p).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_p {
        let beta = (min_p / area).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    // Products of small integers held in f64 are exact, so the comparisons above are the integer
    // comparisons Python makes; only absurd configs leave the u32 range.
    if h_bar > f64::from(u32::MAX) || w_bar > f64::from(u32::MAX) {
        return Err(ImageError::TargetTooLarge {
            height: h_bar,
            width: w_bar,
            in_width: width,
            in_height: height,
        });
    }
    Ok((h_bar as u32, w_bar as u32))
}

/// Resizes with Pillow 13's `Image.resize((width, height), Image.BICUBIC)` on an RGB image,
/// bit for bit. Returns a copy when the size is unchanged, as Pillow does. Targets over
/// [`MAX_IMAGE_PIXELS`](crate::MAX_IMAGE_PIXELS) are refused.
pub fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    src.check()?;
    check_target(width, height)?;
    let mut out = Vec::new();
    Resampler::default().resize_into(src, width, height, &mut out);
    RgbImage::new(width, height, out)
}

/// Rejects empty targets and targets over Pillow's bomb limit, which also keeps every buffer
/// size computation far from overflow.
pub(crate) fn check_target(width: u32, height: u32) -> Result<()> {
    let (w, h) = (u64::from(width), u64::from(height));
    if w == 0 || h == 0 {
        return Err(ImageError::ZeroSize {
            width: w,
            height: h,
        });
    }
    if w * h > crate::MAX_IMAGE_PIXELS {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            limit: crate::MAX_IMAGE_PIXELS,
        });
    }
    Ok(())
}

/// Scratch space for resizing, reused across images so that a steady stream of images allocates
/// nothing after the first few.
#[derive(Default)]
pub(crate) struct Resampler {
    /// The intermediate image between the passes (horizontal first), or one strip's rows of the
    /// vertical pass (vertical first).
    temp: Vec<u8>,
    /// Transposed strip (input and output columns) of the horizontal pass.
    strip: Vec<u8>,
}

impl Resampler {
    /// Resizes `src` (already checked) to `width × height` into `out` (overwritten).
    pub(crate) fn resize_into(
        &mut self,
        src: &RgbImage,
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) {
        let (in_w, in_h) = (src.width as usize, src.height as usize);
        let (out_w, out_h) = (width as usize, height as usize);
        let need_h = out_w != in_w;
        let need_v = out_h != in_h;
        if !need_h && !need_v {
            out.clear();
            out.extend_from_slice(&src.data);
            return;
        }
        // Pillow 13, ImagingResampleInner: `horizontal_first`.
        let shrink_h = in_h as i64 - out_h as i64;
        let shrink_w = in_w as i64 - out_w as i64;
        let horizontal_first = !(shrink_h > 0 && shrink_h > shrink_w * 2);
        let mut temp = std::mem::take(&mut self.temp);
        match (need_h, need_v) {
            (true, false) => {
                let ch = Coefficients::new(in_w, out_w);
                self.horizontal(&src.data, in_w, 0..in_h, &ch, out);
            }
            (false, true) => {
                let cv = Coefficients::new(in_h, out_h);
                self.vertical(&src.data, in_w, 0, &cv, out);
            }
            (true, true) if horizontal_first => {
                let cv = Coefficients::new(in_h, out_h);
                let ch = Coefficients::new(in_w, out_w);
                // Only the rows that the vertical pass reads are resampled horizontally; the
                // vertical bounds are then relative to the first of them.
                let first = cv.start[0] as usize;
                let last = cv.start[out_h - 1] as usize + cv.len[out_h - 1] as usize;
                self.horizontal(&src.data, in_w, first..last, &ch, &mut temp);
                self.vertical(&temp, out_w, first, &cv, out);
            }
            (true, true) => {
                let cv = Coefficients::new(in_h, out_h);
                let ch = Coefficients::new(in_w, out_w);
                self.vertical_then_horizontal(&src.data, in_w, &cv, &ch, &mut temp, out);
            }
            (false, false) => unreachable!("handled above"),
        }
        self.temp = temp;
    }

    /// Vertical pass: `src` is `width` pixels wide; input row `r` of the coefficients is row
    /// `r − offset` of `src`. Writes `cv.out_len()` rows into `out`.
    fn vertical(
        &mut self,
        src: &[u8],
        width: usize,
        offset: usize,
        cv: &Coefficients,
        out: &mut Vec<u8>,
    ) {
        let stride = width * 3;
        set_len(out, cv.out_len() * stride);
        for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
            let start = cv.start[y] as usize - offset;
            let weights = cv.weights(y);
            let rows = &src[start * stride..(start + weights.len()) * stride];
            kernels::vertical_row(rows, stride, weights, dst);
        }
    }

    /// Both passes, vertical first, strip by strip: the STRIP rows that the vertical pass makes
    /// are resampled horizontally while they are still in L1, instead of going through a whole
    /// intermediate image in memory. Same arithmetic, same uint8 rounding between the passes.
    fn vertical_then_horizontal(
        &mut self,
        src: &[u8],
        in_w: usize,
        cv: &Coefficients,
        ch: &Coefficients,
        rows_buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        let out_w = ch.out_len();
        let out_h = cv.out_len();
        let (in_stride, out_stride) = (in_w * 3, out_w * 3);
        set_len(out, out_h * out_stride);
        set_len(rows_buf, kernels::STRIP * in_stride);
        set_len(&mut self.strip, (in_w + out_w) * kernels::LANES);
        for (strip_index, dst_rows) in out.chunks_mut(kernels::STRIP * out_stride).enumerate() {
            let first = strip_index * kernels::STRIP;
            let n = dst_rows.len() / out_stride;
            for (r, row) in rows_buf.chunks_exact_mut(in_stride).take(n).enumerate() {
                let y = first + r;
                let start = cv.start[y] as usize;
                let weights = cv.weights(y);
                let taps = &src[start * in_stride..(start + weights.len()) * in_stride];
                kernels::vertical_row(taps, in_stride, weights, row);
            }
            kernels::horizontal_strip(
                &rows_buf[..n * in_stride],
                in_w,
                n,
                ch,
                &mut self.strip,
                dst_rows,
            );
        }
    }

    /// Horizontal pass over rows `rows` of `src` (`in_w` pixels wide), writing
    /// `rows.len()` rows of `ch.out_len()` pixels into `out`.
    fn horizontal(
        &mut self,
        src: &[u8],
        in_w: usize,
        rows: std::ops::Range<usize>,
        ch: &Coefficients,
        out: &mut Vec<u8>,
    ) {
        let out_w = ch.out_len();
        let (in_stride, out_stride) = (in_w * 3, out_w * 3);
        set_len(out, rows.len() * out_stride);
        let src = &src[rows.start * in_stride..rows.end * in_stride];
        // Rows go in strips of STRIP: the strip is transposed so that each input column holds
        // STRIP pixels contiguously, every output pixel becomes a multiply-add over contiguous
        // lanes, and the output columns are transposed back. A strip of a 1,000-pixel row is
        // 2 · 1000 · 48 = 96 KB, so it stays in L2 while its outputs are computed.
        set_len(&mut self.strip, (in_w + out_w) * kernels::LANES);
        let mut row = 0;
        while row < rows.len() {
            let n = kernels::STRIP.min(rows.len() - row);
            let src_rows = &src[row * in_stride..(row + n) * in_stride];
            let dst_rows = &mut out[row * out_stride..(row + n) * out_stride];
            kernels::horizontal_strip(src_rows, in_w, n, ch, &mut self.strip, dst_rows);
            row += n;
        }
    }
}

/// Gives a reused scratch buffer the length `len`. Its old bytes are kept, not zeroed: every
/// caller overwrites all of them, and zeroing megabytes per image was measurable.
fn set_len(buf: &mut Vec<u8>, len: usize) {
    buf.resize(len, 0);
}

/// Pillow's per-pass resampling weights for one axis.
pub(crate) struct Coefficients {
    /// First input index of each output index (Pillow's `xmin`).
    start: Vec<u32>,
    /// Number of weights of each output index (Pillow's `xmax − xmin`).
    len: Vec<u32>,
    /// `ksize` slots per output index, the first `len` used.
    weights: Vec<i32>,
    /// Pillow's `ksize`.
    ksize: usize,
}

impl Coefficients {
    /// `precompute_coeffs` + `normalize_coeffs_8bpc` for the bicubic filter and the whole input
    /// (Pillow's default box `(0, 0, in, in)`), with every operation in Pillow's order.
    pub(crate) fn new(in_size: usize, out_size: usize) -> Self {
        // `(double)(in1 - in0) / outSize` with float box edges; exact for sizes below 2^24.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, slots) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let n = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, slot) in k[..n].iter_mut().enumerate() {
                let w = bicubic((((x as i64 + xmin) as f64 - center) + 0.5) * inv_filterscale);
                *slot = w;
                ww += w;
            }
            for (slot, &w) in slots.iter_mut().zip(&k[..n]) {
                let w = if ww != 0.0 { w / ww } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *slot = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin as u32);
            len.push(n as u32);
        }
        Self {
            start,
            len,
            weights,
            ksize,
        }
    }

    fn out_len(&self) -> usize {
        self.start.len()
    }

    /// The used weights of output index `i`.
    fn weights(&self, i: usize) -> &[i32] {
        &self.weights[i * self.ksize..][..self.len[i] as usize]
    }
}

/// Pillow's `bicubic_filter` (a = −0.5), same operations in the same order.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The integer inner loops, compiled twice on x86-64 (baseline and AVX2) and picked at run time.
mod kernels {
    use super::{Coefficients, HALF, PRECISION_BITS};

    /// Rows per transposed strip in the horizontal pass: 16 rows × 3 channels = 48 lanes, six
    /// AVX2 accumulators (8 measured the same or slightly slower).
    pub(super) const STRIP: usize = 16;

    /// One output row of the vertical pass: `rows` holds `weights.len()` consecutive input rows
    /// of `stride` bytes.
    pub(super) fn vertical_row(rows: &[u8], stride: usize, weights: &[i32], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { vertical_row_avx2(rows, stride, weights, dst) };
            }
        }
        vertical_row_generic(rows, stride, weights, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn vertical_row_avx2(rows: &[u8], stride: usize, weights: &[i32], dst: &mut [u8]) {
        vertical_row_generic(rows, stride, weights, dst)
    }

    /// Bytes per register block of the vertical pass: 64 accumulators (eight AVX2 registers)
    /// stay in registers across all taps, so each input byte is loaded once and nothing but the
    /// result is stored.
    const BLOCK: usize = 64;

    #[inline(always)]
    fn vertical_row_generic(rows: &[u8], stride: usize, weights: &[i32], dst: &mut [u8]) {
        let full = stride / BLOCK * BLOCK;
        let (blocks, _) = dst[..full].as_chunks_mut::<BLOCK>();
        for (b, out) in blocks.iter_mut().enumerate() {
            let x = b * BLOCK;
            let mut acc = [HALF; BLOCK];
            for (k, &w) in weights.iter().enumerate() {
                let src: &[u8; BLOCK] = rows[k * stride + x..][..BLOCK].try_into().unwrap();
                for (a, &p) in acc.iter_mut().zip(src) {
                    *a += i32::from(p) * w;
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        for x in full..stride {
            let mut acc = HALF;
            for (k, &w) in weights.iter().enumerate() {
                acc += i32::from(rows[k * stride + x]) * w;
            }
            dst[x] = clip8(acc);
        }
    }

    /// Horizontal pass over `n ≤ STRIP` rows of `in_w` pixels.
    pub(super) fn horizontal_strip(
        src: &[u8],
        in_w: usize,
        n: usize,
        ch: &Coefficients,
        strip: &mut [u8],
        dst: &mut [u8],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { horizontal_strip_avx2(src, in_w, n, ch, strip, dst) };
            }
        }
        horizontal_strip_generic(src, in_w, n, ch, strip, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn horizontal_strip_avx2(
        src: &[u8],
        in_w: usize,
        n: usize,
        ch: &Coefficients,
        strip: &mut [u8],
        dst: &mut [u8],
    ) {
        horizontal_strip_generic(src, in_w, n, ch, strip, dst)
    }

    /// Lanes of one strip column: STRIP rows × 3 channels.
    pub(super) const LANES: usize = STRIP * 3;

    #[inline(always)]
    fn horizontal_strip_generic(
        src: &[u8],
        in_w: usize,
        n: usize,
        ch: &Coefficients,
        strip: &mut [u8],
        dst: &mut [u8],
    ) {
        let in_stride = in_w * 3;
        let out_w = ch.out_len();
        let out_stride = out_w * 3;
        let (columns, _) = strip.as_chunks_mut::<LANES>();
        let (columns, rest) = columns.split_at_mut(in_w);
        let out_columns = &mut rest[..out_w];
        // Transpose: column x holds pixel x of each of the n rows, R G B per row. Rows past `n`
        // keep stale values: their results are computed but never stored.
        if n == STRIP {
            // Full strips (all but the last) build each column in one go, from fixed offsets.
            let rows: [&[[u8; 3]]; STRIP] = std::array::from_fn(|r| {
                &src[r * in_stride..][..in_stride].as_chunks::<3>().0[..in_w]
            });
            for (x, column) in columns.iter_mut().enumerate() {
                for (r, row) in rows.iter().enumerate() {
                    column[r * 3..r * 3 + 3].copy_from_slice(&row[x]);
                }
            }
        } else {
            for (r, row) in src.chunks_exact(in_stride).take(n).enumerate() {
                let (pixels, _) = row.as_chunks::<3>();
                for (column, px) in columns.iter_mut().zip(pixels) {
                    column[r * 3..r * 3 + 3].copy_from_slice(px);
                }
            }
        }
        for (xx, out) in out_columns.iter_mut().enumerate() {
            let start = ch.start[xx] as usize;
            let weights = ch.weights(xx);
            let mut acc = [HALF; LANES];
            for (column, &w) in columns[start..].iter().zip(weights) {
                for (a, &p) in acc.iter_mut().zip(column) {
                    *a += i32::from(p) * w;
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        // Transpose back.
        if n == STRIP {
            let mut rows = dst.chunks_exact_mut(out_stride);
            let mut rows: [&mut [[u8; 3]]; STRIP] = std::array::from_fn(|_| {
                let row = rows.next().unwrap();
                &mut row.as_chunks_mut::<3>().0[..out_w]
            });
            for (xx, column) in out_columns.iter().enumerate() {
                for (r, row) in rows.iter_mut().enumerate() {
                    row[xx].copy_from_slice(&column[r * 3..r * 3 + 3]);
                }
            }
        } else {
            for (r, row) in dst.chunks_exact_mut(out_stride).take(n).enumerate() {
                let (pixels, _) = row.as_chunks_mut::<3>();
                for (px, column) in pixels.iter_mut().zip(out_columns.iter()) {
                    px.copy_from_slice(&column[r * 3..r * 3 + 3]);
                }
            }
        }
    }

    /// Pillow's `clip8`: the accumulator without its fraction, clamped to a byte.
    #[inline(always)]
    fn clip8(acc: i32) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_smart(h: u32, w: u32, max: u64, want: (u32, u32)) {
        assert_eq!(smart_resize(h, w, 28, 3136, max).unwrap(), want, "{h}x{w}");
    }

    // Examples from docs/qwen2_5_vl_reference.md §2.1 (computed with transformers).
    #[test]
    fn smart_resize_reference_examples() {
        let max = 12_845_056;
        check_smart(28, 28, max, (56, 56));
        check_smart(42, 70, max, (56, 56));
        check_smart(100, 200, max, (112, 196));
        check_smart(224, 224, max, (224, 224));
        check_smart(480, 640, max, (476, 644));
        check_smart(1080, 1920, max, (1092, 1932));
        check_smart(4000, 3000, max, (4004, 2996));
        check_smart(50, 80, max, (56, 84));
        check_smart(1000, 3000, 200_000, (252, 756));
    }

    #[test]
    fn smart_resize_errors_and_clamps() {
        let err = smart_resize(10, 2001, 28, 3136, 12_845_056).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aspect ratio 200.1 of a 2001x10 image is over the limit of 200"
        );
        assert!(smart_resize(10, 2000, 28, 3136, 12_845_056).is_ok());
        assert!(matches!(
            smart_resize(0, 5, 28, 1, 2),
            Err(ImageError::ZeroSize { .. })
        ));
        // The downscale branch clamps each side to at least one factor (transformers 5.24).
        assert_eq!(smart_resize(20, 3000, 28, 56, 5000).unwrap(), (28, 840));
        // Tiny images are upscaled, not rejected (transformers ≥ 4.53).
        assert_eq!(smart_resize(3, 5, 28, 3136, 12_845_056).unwrap(), (56, 84));
    }

    #[test]
    fn unchanged_size_is_a_copy() {
        let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(resize_bicubic(&img, 2, 1).unwrap(), img);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(50, 56), (80, 84), (1101, 1092), (3000, 28), (7, 300)] {
            let c = Coefficients::new(i, o);
            for xx in 0..o {
                let sum: i64 = c.weights(xx).iter().map(|&w| i64::from(w)).sum();
                assert!(
                    (sum - (1 << 22)).abs() <= c.len[xx] as i64,
                    "{i}->{o} at {xx}: {sum}"
                );
            }
        }
    }
}
