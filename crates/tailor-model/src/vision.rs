//! The Qwen2.5-VL vision tower (`model.visual`): patch embedding, 2-D rotary positions, windowed
//! and full attention blocks, and the 2×2 patch merger.
//!
//! All images of a batch are one flat sequence of patch rows. Attention never crosses an image:
//! window blocks attend inside `window_size`-pixel windows of one image, full blocks inside one
//! image (one temporal group). Within the tower the rows are kept in window order; the merger
//! output is put back in raster order, images in input order.
//!
//! Two paths compute the same values. The differentiable one (candle primitives only) runs
//! whenever a gradient may be needed: a vision adapter is attached, or any weight or the pixels
//! are tracked by autograd, or the model is not float32 on the CPU. Otherwise an inference path
//! runs fused CPU kernels with no backward: rotary + head split into per-segment blocks in one
//! pass, a scaled softmax, residual add + RMS norm, SiLU·up (see `VisionTower::inference_only`).

use rayon::prelude::*;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use tailor_core::ImageGrid;

use crate::config::{VISION_RMS_NORM_EPS, VisionConfig};
use crate::kernels::{self, par_rows};
use crate::lora::Projection;
use crate::nn::{RmsNorm, SwiGlu, apply_rotary, attention, inv_freq};
use crate::ops::with_values;

/// The window order of the merged tokens and the window segment boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowIndex {
    /// Merged-token indices (over all images) in window order.
    pub window_index: Vec<usize>,
    /// Window segment boundaries in patch rows, starting at 0, empty windows removed.
    pub cu_window_seqlens: Vec<usize>,
}

/// Computes transformers' `get_window_index`: per image, the merged tokens laid out as
/// `[t, h/m, w/m]` are padded at the bottom/right to whole windows of `window_merged_side()` tokens
/// (a side that is already a multiple gains a whole empty window row, as in transformers), and
/// enumerated window by window (frame, window row, window column), row-major inside a window.
pub fn window_index(grids: &[ImageGrid], cfg: &VisionConfig) -> WindowIndex {
    let m = cfg.spatial_merge_size;
    let unit = cfg.merge_unit();
    let vw = cfg.window_merged_side();
    let mut window_index = Vec::new();
    let mut cu = vec![0usize];
    let mut base = 0usize;
    for grid in grids {
        let (gt, lh, lw) = (grid.t as usize, grid.h as usize / m, grid.w as usize / m);
        let windows_h = (lh + vw - lh % vw) / vw;
        let windows_w = (lw + vw - lw % vw) / vw;
        for t in 0..gt {
            for wr in 0..windows_h {
                for wc in 0..windows_w {
                    let mut count = 0;
                    for r in (wr * vw..(wr + 1) * vw).filter(|&r| r < lh) {
                        for c in (wc * vw..(wc + 1) * vw).filter(|&c| c < lw) {
                            window_index.push(base + (t * lh + r) * lw + c);
                            count += 1;
                        }
                    }
                    let last = *cu.last().expect("cu starts with 0");
                    cu.push(last + count * unit);
                }
            }
        }
        base += gt * lh * lw;
    }
    cu.dedup();
    WindowIndex {
        window_index,
        cu_window_seqlens: cu,
    }
}

/// Full-attention segment boundaries in patch rows: one segment of `h·w` rows per temporal
/// group of each image.
pub fn full_attention_seqlens(grids: &[ImageGrid]) -> Vec<usize> {
    let mut cu = vec![0usize];
    for grid in grids {
        for _ in 0..grid.t {
            let last = *cu.last().expect("cu starts with 0");
            cu.push(last + grid.h as usize * grid.w as usize);
        }
    }
    cu
}

/// `(row, column)` of every patch row in `pixel_values` order (2×2 merge units, then raster),
/// repeated for each temporal group.
fn patch_positions(grids: &[ImageGrid], m: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for grid in grids {
        let (gh, gw) = (grid.h as usize, grid.w as usize);
        for _ in 0..grid.t {
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            out.push((bh * m + mh, bw * m + mw));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Intermediate results of one vision forward pass, for parity checks.
#[derive(Debug, Clone)]
pub struct VisionTrace {
    /// Patch embedding output `[N, hidden]`, in `pixel_values` row order.
    pub patch_embeds: Tensor,
    /// Output of each block `[N, hidden]`, in window order.
    pub block_outputs: Vec<Tensor>,
    /// Merger output `[N/4, out_hidden]`, raster order, images in order.
    pub embeds: Tensor,
}

/// The vision tower.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    cfg: VisionConfig,
    inv_freq: Vec<f32>,
}

impl VisionTower {
    /// Builds the tower from `vb` rooted at `model.visual`.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let patch = vb.pp("patch_embed.proj").get(
            (
                cfg.hidden_size,
                cfg.in_channels,
                cfg.temporal_patch_size,
                cfg.patch_size,
                cfg.patch_size,
            ),
            "weight",
        )?;
        // Conv3d with kernel = stride = input is a matmul over the flattened (c, t, i, j) patch.
        let patch_embed = patch.reshape((cfg.hidden_size, cfg.patch_dim()))?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let merger = PatchMerger::new(cfg, vb.pp("merger"))?;
        Ok(Self {
            patch_embed,
            blocks,
            merger,
            cfg: cfg.clone(),
            inv_freq: inv_freq(cfg.head_dim / 2, cfg.rope_theta),
        })
    }

    /// Every linear layer, in module order.
    pub(crate) fn projections_mut(&mut self) -> Vec<&mut Projection> {
        let mut out = Vec::new();
        for block in &mut self.blocks {
            out.push(&mut block.attn.qkv);
            out.push(&mut block.attn.proj);
            out.extend(block.mlp.projections_mut());
        }
        out.push(&mut self.merger.fc1);
        out.push(&mut self.merger.fc2);
        out
    }

    /// Whether this pass needs no gradient, so that the fused inference kernels may run: float32
    /// on the CPU, no adapter on any vision layer, and neither the weights nor the pixels tracked
    /// by autograd (a model built from a `VarMap` trains every weight).
    fn inference_only(&self, pixel_values: &Tensor) -> bool {
        let cpu = matches!(pixel_values.device(), Device::Cpu);
        let f32 = self.patch_embed.dtype() == DType::F32 && pixel_values.dtype() == DType::F32;
        let tracked = |t: &Tensor| t.track_op();
        let projection_free = |p: &Projection| p.lora().is_none() && !tracked(p.weight());
        let norm_free = |n: &RmsNorm| !tracked(n.parts().0);
        cpu && f32
            && !tracked(pixel_values)
            && !tracked(&self.patch_embed)
            && self.blocks.iter().all(|b| {
                norm_free(&b.norm1)
                    && norm_free(&b.norm2)
                    && projection_free(&b.attn.qkv)
                    && projection_free(&b.attn.proj)
                    && b.mlp.projections().into_iter().all(projection_free)
            })
            && norm_free(&self.merger.ln_q)
            && projection_free(&self.merger.fc1)
            && projection_free(&self.merger.fc2)
    }

    /// Image features `[Σ t·h·w / m², out_hidden]` for `pixel_values` `[Σ t·h·w, patch_dim]`.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[ImageGrid]) -> Result<Tensor> {
        self.run(pixel_values, grids, None)
    }

    /// As [`forward`](Self::forward), also returning the patch embedding and every block output.
    pub fn forward_traced(
        &self,
        pixel_values: &Tensor,
        grids: &[ImageGrid],
    ) -> Result<VisionTrace> {
        let mut trace = (None, Vec::with_capacity(self.blocks.len()));
        let embeds = self.run(pixel_values, grids, Some(&mut trace))?;
        Ok(VisionTrace {
            patch_embeds: trace.0.expect("the patch embedding is always traced"),
            block_outputs: trace.1,
            embeds,
        })
    }

    fn run(
        &self,
        pixel_values: &Tensor,
        grids: &[ImageGrid],
        mut trace: Option<&mut (Option<Tensor>, Vec<Tensor>)>,
    ) -> Result<Tensor> {
        let (n, patch_dim) = pixel_values.dims2()?;
        let m = self.cfg.spatial_merge_size;
        let unit = self.cfg.merge_unit();
        if patch_dim != self.cfg.patch_dim() {
            candle_core::bail!(
                "pixel_values rows have {patch_dim} values, the model expects {}",
                self.cfg.patch_dim()
            );
        }
        if let Some(g) = grids.iter().find(|g| {
            !(g.h as usize).is_multiple_of(m) || !(g.w as usize).is_multiple_of(m) || g.t == 0
        }) {
            candle_core::bail!("image grid {g:?} is not a positive multiple of the merge size {m}");
        }
        let patches: usize = grids.iter().map(ImageGrid::patches).sum();
        if patches != n {
            candle_core::bail!(
                "pixel_values has {n} rows but the image grids hold {patches} patches"
            );
        }
        let device = pixel_values.device();
        let dtype = self.patch_embed.dtype();

        let xs = pixel_values
            .to_dtype(dtype)?
            .matmul(&self.patch_embed.t()?)?;
        if let Some(trace) = trace.as_deref_mut() {
            trace.0 = Some(xs.clone());
        }

        // Reorder patch rows (in groups of one merge unit) into window order.
        let windows = window_index(grids, &self.cfg);
        let order: Vec<usize> = windows
            .window_index
            .iter()
            .flat_map(|&w| w * unit..(w + 1) * unit)
            .collect();
        let order_ids: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        let xs = xs.index_select(&Tensor::new(order_ids.as_slice(), device)?, 0)?;

        let positions = patch_positions(grids, m);
        let mut reverse = vec![0u32; windows.window_index.len()];
        for (position, &token) in windows.window_index.iter().enumerate() {
            reverse[token] = position as u32;
        }
        let full = full_attention_seqlens(grids);

        if self.inference_only(pixel_values) {
            let rope = FastRope::new(&order, &positions, &self.inv_freq);
            // Each block also returns its output normalised by the next norm (the next block's
            // `norm1`, then the merger's `ln_q`), fused with its last residual add.
            let first_norm = self.blocks.first().map_or(&self.merger.ln_q, |b| &b.norm1);
            let mut normed = rms_norm_fast(&xs, first_norm)?;
            let mut xs = xs;
            for (i, block) in self.blocks.iter().enumerate() {
                let segments = if self.cfg.fullatt_block_indexes.contains(&i) {
                    &full
                } else {
                    &windows.cu_window_seqlens
                };
                let next = self
                    .blocks
                    .get(i + 1)
                    .map_or(&self.merger.ln_q, |b| &b.norm1);
                (xs, normed) = block.forward_fast(&xs, &normed, &rope, segments, next)?;
                if let Some(trace) = trace.as_deref_mut() {
                    trace.1.push(xs.clone());
                }
            }
            let merged = self.merger.forward_fast(&normed)?;
            return merged.index_select(&Tensor::new(reverse.as_slice(), device)?, 0);
        }

        // 2-D rotary table in window order: [row·inv_freq, col·inv_freq] twice.
        let half = self.inv_freq.len();
        let head_dim = self.cfg.head_dim;
        let mut angles = Vec::with_capacity(n * head_dim);
        for &row in &order {
            let (pr, pc) = positions[row];
            let freqs: Vec<f32> = (self.inv_freq.iter().map(|f| pr as f32 * f))
                .chain(self.inv_freq.iter().map(|f| pc as f32 * f))
                .collect();
            debug_assert_eq!(freqs.len(), 2 * half);
            angles.extend_from_slice(&freqs);
            angles.extend_from_slice(&freqs);
        }
        let angles = Tensor::from_vec(angles, (n, 1, head_dim), device)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);

        let mut xs = xs;
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = if self.cfg.fullatt_block_indexes.contains(&i) {
                &full
            } else {
                &windows.cu_window_seqlens
            };
            xs = block.forward(&xs, &cos, &sin, segments)?;
            if let Some(trace) = trace.as_deref_mut() {
                trace.1.push(xs.clone());
            }
        }
        let merged = self.merger.forward(&xs)?;
        merged.index_select(&Tensor::new(reverse.as_slice(), device)?, 0)
    }
}

#[derive(Debug, Clone)]
struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    attn: VisionAttention,
    mlp: SwiGlu,
}

impl VisionBlock {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: RmsNorm::new(cfg.hidden_size, VISION_RMS_NORM_EPS, vb.pp("norm1"))?,
            norm2: RmsNorm::new(cfg.hidden_size, VISION_RMS_NORM_EPS, vb.pp("norm2"))?,
            attn: VisionAttention::new(cfg, vb.pp("attn"))?,
            mlp: SwiGlu::new(cfg.hidden_size, cfg.intermediate_size, true, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        let residual = xs;
        let xs = (residual
            + self
                .attn
                .forward(&self.norm1.forward(xs)?, cos, sin, segments)?)?;
        let residual = &xs;
        residual + self.mlp.forward(&self.norm2.forward(&xs)?)?
    }

    /// [`forward`](Self::forward) for inference: the same arithmetic in fused CPU kernels, with
    /// no backward. `normed` is `norm1(xs)`; returns the block output and `next(output)`, the
    /// last residual add fused with the norm that follows the block.
    fn forward_fast(
        &self,
        xs: &Tensor,
        normed: &Tensor,
        rope: &FastRope,
        segments: &[usize],
        next: &RmsNorm,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward_fast(normed, rope, segments)?;
        let (xs, h) = add_rms_norm_fast(xs, &attn, &self.norm2)?;
        let [gate, up, down] = self.mlp.projections();
        let act = silu_mul_fast(&gate.forward(&h)?, &up.forward(&h)?)?;
        add_rms_norm_fast(&xs, &down.forward(&act)?, next)
    }
}

#[derive(Debug, Clone)]
struct VisionAttention {
    qkv: Projection,
    proj: Projection,
    num_heads: usize,
    head_dim: usize,
}

impl VisionAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            qkv: Projection::new(h, 3 * h, true, vb.pp("qkv"))?,
            proj: Projection::new(h, h, true, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim,
        })
    }

    /// Non-causal attention inside each segment `[segments[i], segments[i+1])`. Runs of segments
    /// of equal length (most windows are full) are computed as one batched matmul.
    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        let (n, _) = xs.dims2()?;
        let (heads, hd) = (self.num_heads, self.head_dim);
        if segments.first() != Some(&0) || segments.last() != Some(&n) {
            candle_core::bail!("attention segments {segments:?} do not cover the {n} vision rows");
        }
        let dtype = xs.dtype();
        let qkv = self.qkv.forward(xs)?.reshape((n, 3, heads, hd))?;
        // The rotary embedding is applied in float32, as transformers does.
        let rotate = |t: Tensor| -> Result<Tensor> {
            apply_rotary(&t.to_dtype(DType::F32)?, cos, sin)?.to_dtype(dtype)
        };
        let q = rotate(qkv.i((.., 0))?)?;
        let k = rotate(qkv.i((.., 1))?)?;
        let v = qkv.i((.., 2))?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut outputs = Vec::new();
        for (start, len, count) in equal_segment_runs(segments) {
            let take = |t: &Tensor| -> Result<Tensor> {
                t.narrow(0, start, count * len)?
                    .reshape((count, len, heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let out = attention(&take(&q)?, &take(&k)?, &take(&v)?, scale, None)?;
            outputs.push(out.transpose(1, 2)?.reshape((count * len, heads * hd))?);
        }
        let out = Tensor::cat(&outputs, 0)?;
        self.proj.forward(&out)
    }

    /// [`forward`](Self::forward) for inference: one pass splits `qkv` into per-segment
    /// `[heads, len, head_dim]` blocks with the rotary embedding applied, so that each run of
    /// equal segments is a batched matmul over a contiguous range, with a fused scaled softmax.
    fn forward_fast(&self, xs: &Tensor, rope: &FastRope, segments: &[usize]) -> Result<Tensor> {
        let (n, _) = xs.dims2()?;
        let (heads, hd) = (self.num_heads, self.head_dim);
        if segments.first() != Some(&0) || segments.last() != Some(&n) {
            candle_core::bail!("attention segments {segments:?} do not cover the {n} vision rows");
        }
        let device = xs.device();
        let qkv = self.qkv.forward(xs)?;
        let (q, k, v) = split_heads_rotary(&qkv, rope, segments, heads, hd)?;
        let (q, k, v) = (
            Tensor::from_vec(q, n * heads * hd, device)?,
            Tensor::from_vec(k, n * heads * hd, device)?,
            Tensor::from_vec(v, n * heads * hd, device)?,
        );
        let scale = 1.0 / (hd as f32).sqrt();
        let row = heads * hd;
        let mut runs = Vec::new();
        for (start, len, count) in equal_segment_runs(segments) {
            let take = |t: &Tensor| {
                t.narrow(0, start * row, count * len * row)?
                    .reshape((count * heads, len, hd))
            };
            let probs = softmax_scaled_fast(&take(&q)?.matmul(&take(&k)?.t()?)?, scale)?;
            runs.push(probs.matmul(&take(&v)?)?.flatten_all()?);
        }
        // The runs cover the rows in order, in the same per-segment layout as `q`.
        let out = Tensor::cat(&runs, 0)?;
        let out = merge_heads(&out, segments, heads, hd)?;
        self.proj.forward(&out)
    }
}

/// Maximal runs of consecutive non-empty segments of equal length, as `(first row, segment
/// length, segment count)`: each run is one batched attention (most windows are full).
fn equal_segment_runs(segments: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i + 1 < segments.len() {
        let start = segments[i];
        let len = segments[i + 1] - start;
        let mut j = i + 1;
        while j + 1 < segments.len() && segments[j + 1] - segments[j] == len {
            j += 1;
        }
        if len > 0 {
            runs.push((start, len, j - i));
        }
        i = j;
    }
    runs
}

#[derive(Debug, Clone)]
struct PatchMerger {
    ln_q: RmsNorm,
    fc1: Projection,
    fc2: Projection,
    merged_dim: usize,
}

impl PatchMerger {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.merge_unit();
        Ok(Self {
            ln_q: RmsNorm::new(cfg.hidden_size, VISION_RMS_NORM_EPS, vb.pp("ln_q"))?,
            fc1: Projection::new(merged_dim, merged_dim, true, vb.pp("mlp.0"))?,
            fc2: Projection::new(merged_dim, cfg.out_hidden_size, true, vb.pp("mlp.2"))?,
            merged_dim,
        })
    }
}

impl PatchMerger {
    /// The merger on rows already normalised by `ln_q`.
    fn forward_fast(&self, normed: &Tensor) -> Result<Tensor> {
        let xs = normed.reshape(((), self.merged_dim))?;
        let xs = self.fc1.forward(&xs)?.gelu_erf()?;
        self.fc2.forward(&xs)
    }
}

impl Module for PatchMerger {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Four consecutive rows are one 2×2 merge unit; concatenate them.
        let xs = self.ln_q.forward(xs)?.reshape(((), self.merged_dim))?;
        let xs = self.fc1.forward(&xs)?.gelu_erf()?;
        self.fc2.forward(&xs)
    }
}

// Inference-only CPU kernels (float32). Each computes what the differentiable path computes, in
// one pass over contiguous memory spread over rayon's pool; none has a backward, so
// they run only when `VisionTower::inference_only` holds.

/// Cosine and sine `[rows, head_dim / 2]` of the 2-D rotary angles, rows in window order.
struct FastRope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl FastRope {
    fn new(order: &[usize], positions: &[(usize, usize)], inv_freq: &[f32]) -> Self {
        let quarter = inv_freq.len();
        let half = 2 * quarter;
        let mut cos = Vec::with_capacity(order.len() * half);
        let mut sin = Vec::with_capacity(order.len() * half);
        for &row in order {
            let (pr, pc) = positions[row];
            for pos in [pr, pc] {
                for f in inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Self { cos, sin, half }
    }
}

/// Sum of squares with eight independent accumulators (vectorisable).
fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`RmsNorm::forward`] over the rows of a float32 `[n, d]` tensor.
fn rms_norm_fast(xs: &Tensor, norm: &RmsNorm) -> Result<Tensor> {
    let (n, d) = xs.dims2()?;
    let (weight, eps) = norm.parts();
    let eps = eps as f32;
    let mut out = vec![0f32; n * d];
    with_values(weight, |w| {
        with_values(xs, |x| {
            par_rows(&mut out, d, |r0, o| {
                for (i, orow) in o.chunks_mut(d).enumerate() {
                    let xrow = &x[(r0 + i) * d..(r0 + i + 1) * d];
                    let inv_rms = 1.0 / (sum_sq(xrow) / d as f32 + eps).sqrt();
                    for ((o, &v), &g) in orow.iter_mut().zip(xrow).zip(w) {
                        *o = v * inv_rms * g;
                    }
                }
            })
        })
    })??;
    Tensor::from_vec(out, (n, d), xs.device())
}

/// `(a + b, rms_norm(a + b))` over the rows of float32 `[n, d]` tensors: a residual add fused
/// with the norm that follows it.
fn add_rms_norm_fast(a: &Tensor, b: &Tensor, norm: &RmsNorm) -> Result<(Tensor, Tensor)> {
    let (n, d) = a.dims2()?;
    if b.dims2()? != (n, d) {
        candle_core::bail!(
            "add_rms_norm: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        );
    }
    let (weight, eps) = norm.parts();
    let eps = eps as f32;
    let mut sum = vec![0f32; n * d];
    let mut out = vec![0f32; n * d];
    let rows_per_unit = (kernels::UNIT / d.max(1)).max(1);
    with_values(weight, |w| {
        with_values(a, |x| {
            with_values(b, |y| {
                sum.par_chunks_mut(rows_per_unit * d.max(1))
                    .zip(out.par_chunks_mut(rows_per_unit * d.max(1)))
                    .enumerate()
                    .for_each(|(u, (srows, orows))| {
                        let r0 = u * rows_per_unit;
                        for (i, (srow, orow)) in
                            srows.chunks_mut(d).zip(orows.chunks_mut(d)).enumerate()
                        {
                            let at = (r0 + i) * d..(r0 + i + 1) * d;
                            for ((s, &p), &q) in srow.iter_mut().zip(&x[at.clone()]).zip(&y[at]) {
                                *s = p + q;
                            }
                            let inv_rms = 1.0 / (sum_sq(srow) / d as f32 + eps).sqrt();
                            for ((o, &v), &g) in orow.iter_mut().zip(srow.iter()).zip(w) {
                                *o = v * inv_rms * g;
                            }
                        }
                    })
            })
        })
    })???;
    let device = a.device();
    Ok((
        Tensor::from_vec(sum, (n, d), device)?,
        Tensor::from_vec(out, (n, d), device)?,
    ))
}

/// `silu(gate) · up`, element-wise.
fn silu_mul_fast(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let shape = gate.shape().clone();
    if up.shape() != &shape {
        candle_core::bail!("silu_mul: shapes {shape:?} and {:?} differ", up.shape());
    }
    let out = with_values(gate, |g| with_values(up, |u| kernels::silu_mul(g, u)))??;
    Tensor::from_vec(out, shape, gate.device())
}

/// `softmax(scores · scale)` over the last dimension, in float32.
fn softmax_scaled_fast(scores: &Tensor, scale: f32) -> Result<Tensor> {
    let shape = scores.shape().clone();
    let d = shape.dims().last().copied().unwrap_or(1);
    let out = with_values(scores, |s| kernels::softmax_rows(s, scale, d))?;
    Tensor::from_vec(out, shape, scores.device())
}

/// `x·cos + rotate_half(x)·sin` for one head vector.
fn rotate_into(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        o2[i] = x2[i] * cos[i] + x1[i] * sin[i];
    }
}

/// Splits `qkv` `[n, 3·heads·head_dim]` into q, k (rotary applied) and v, each laid out segment
/// by segment as `[heads, len, head_dim]`: the rows of a run of equal segments are then one
/// contiguous `[count·heads, len, head_dim]` range.
fn split_heads_rotary(
    qkv: &Tensor,
    rope: &FastRope,
    segments: &[usize],
    heads: usize,
    hd: usize,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (n, width) = qkv.dims2()?;
    let row = heads * hd;
    if width != 3 * row || rope.half * 2 != hd || rope.cos.len() != n * rope.half {
        candle_core::bail!("qkv width {width} does not match {heads} heads of {hd}");
    }
    let mut q = vec![0f32; n * row];
    let mut k = vec![0f32; n * row];
    let mut v = vec![0f32; n * row];
    {
        // One unit per segment: (first row, rows, q block, k block, v block).
        type Unit<'a> = (usize, usize, &'a mut [f32], &'a mut [f32], &'a mut [f32]);
        let mut units: Vec<Unit> = Vec::with_capacity(segments.len());
        let (mut qr, mut kr, mut vr) = (q.as_mut_slice(), k.as_mut_slice(), v.as_mut_slice());
        for w in segments.windows(2) {
            let len = w[1] - w[0];
            let (qa, qb) = qr.split_at_mut(len * row);
            let (ka, kb) = kr.split_at_mut(len * row);
            let (va, vb) = vr.split_at_mut(len * row);
            units.push((w[0], len, qa, ka, va));
            (qr, kr, vr) = (qb, kb, vb);
        }
        let half = rope.half;
        with_values(qkv, |src| {
            units.into_par_iter().for_each(|(start, len, qd, kd, vd)| {
                for r in 0..len {
                    let at = start + r;
                    let s = &src[at * 3 * row..(at + 1) * 3 * row];
                    let cos = &rope.cos[at * half..(at + 1) * half];
                    let sin = &rope.sin[at * half..(at + 1) * half];
                    for h in 0..heads {
                        let dst = (h * len + r) * hd..(h * len + r + 1) * hd;
                        let (qs, ks, vs) = (
                            &s[h * hd..(h + 1) * hd],
                            &s[row + h * hd..row + (h + 1) * hd],
                            &s[2 * row + h * hd..2 * row + (h + 1) * hd],
                        );
                        rotate_into(qs, cos, sin, &mut qd[dst.clone()]);
                        rotate_into(ks, cos, sin, &mut kd[dst.clone()]);
                        vd[dst].copy_from_slice(vs);
                    }
                }
            })
        })?;
    }
    Ok((q, k, v))
}

/// The inverse of [`split_heads_rotary`]'s layout: per-segment `[heads, len, head_dim]` blocks
/// back to rows `[n, heads·head_dim]`.
fn merge_heads(blocks: &Tensor, segments: &[usize], heads: usize, hd: usize) -> Result<Tensor> {
    let row = heads * hd;
    let n = *segments.last().unwrap_or(&0);
    if blocks.elem_count() != n * row {
        candle_core::bail!(
            "attention output has {} values, want {}",
            blocks.elem_count(),
            n * row
        );
    }
    let mut out = vec![0f32; n * row];
    with_values(blocks, |src| {
        par_rows(&mut out, row, |r0, o| {
            for (i, orow) in o.chunks_mut(row).enumerate() {
                let at = r0 + i;
                let seg = segments.partition_point(|&s| s <= at) - 1;
                let (start, len) = (segments[seg], segments[seg + 1] - segments[seg]);
                let r = at - start;
                for h in 0..heads {
                    let from = start * row + (h * len + r) * hd;
                    orow[h * hd..(h + 1) * hd].copy_from_slice(&src[from..from + hd]);
                }
            }
        })
    })?;
    Tensor::from_vec(out, (n, row), blocks.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_3b() -> VisionConfig {
        crate::Config::from_json_str(include_str!("../tests/data/config_3b_flat.json"))
            .unwrap()
            .vision
    }

    fn grid(t: u32, h: u32, w: u32) -> ImageGrid {
        ImageGrid { t, h, w }
    }

    /// The fused inference path computes what the differentiable path computes: the same
    /// random weights as `Var`s (differentiable path, gradients reach the weights) and as plain
    /// tensors (fast path), over images with several window sizes and two frames.
    #[test]
    fn fast_path_equals_the_differentiable_path() {
        use candle_core::Device;
        use candle_nn::VarMap;

        let cfg = crate::Config::from_json_str(include_str!(
            "../../../tests/fixtures/model/windows/config.json"
        ))
        .unwrap()
        .vision;
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let slow =
            VisionTower::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        let mut plain = std::collections::HashMap::new();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let value = Tensor::randn(0f32, 0.3, var.shape(), &dev).unwrap();
            let value = if name.contains("norm") || name.contains("ln_q") {
                (value + 1.0).unwrap()
            } else {
                value
            };
            var.set(&value).unwrap();
            plain.insert(name.clone(), value);
        }
        let fast =
            VisionTower::new(&cfg, VarBuilder::from_tensors(plain, DType::F32, &dev)).unwrap();
        let grids = [grid(1, 12, 10), grid(2, 4, 6), grid(1, 8, 8)];
        let n: usize = grids.iter().map(ImageGrid::patches).sum();
        let pixels = Tensor::randn(0f32, 1.0, (n, cfg.patch_dim()), &dev).unwrap();
        assert!(!slow.inference_only(&pixels));
        assert!(fast.inference_only(&pixels));

        let a = slow.forward_traced(&pixels, &grids).unwrap();
        let b = fast.forward_traced(&pixels, &grids).unwrap();
        let diff = crate::test_util::max_diff;
        // Random (unseeded) weights: compare relative to each tensor's magnitude, as float32
        // rounding differs between the fused and the composed ops.
        let tol = |x: &Tensor| {
            1e-5 * x
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1.0)
        };
        for (x, y) in a.block_outputs.iter().zip(&b.block_outputs) {
            assert!(
                diff(x, y) < tol(x),
                "block output differs by {}",
                diff(x, y)
            );
        }
        assert!(diff(&a.embeds, &b.embeds) < tol(&a.embeds));

        let grads = a
            .embeds
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            assert!(grads.get(var.as_tensor()).is_some(), "{name}: no gradient");
        }
    }

    /// `qwen2_5_vl_reference.md` §3.3, grid [1, 12, 20] (computed with transformers).
    #[test]
    fn window_index_of_a_12_by_20_grid() {
        let got = window_index(&[grid(1, 12, 20)], &cfg_3b());
        #[rustfmt::skip]
        let expected: Vec<usize> = vec![
            0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33,
            4, 5, 6, 7, 14, 15, 16, 17, 24, 25, 26, 27, 34, 35, 36, 37,
            8, 9, 18, 19, 28, 29, 38, 39,
            40, 41, 42, 43, 50, 51, 52, 53,
            44, 45, 46, 47, 54, 55, 56, 57,
            48, 49, 58, 59,
        ];
        assert_eq!(got.window_index, expected);
        assert_eq!(got.cu_window_seqlens, vec![0, 64, 128, 160, 192, 224, 240]);
    }

    /// §3.3: an 8×8 grid fills one window; the padded empty windows are dropped.
    #[test]
    fn window_index_of_an_exact_window() {
        let got = window_index(&[grid(1, 8, 8)], &cfg_3b());
        assert_eq!(got.window_index, (0..16).collect::<Vec<_>>());
        assert_eq!(got.cu_window_seqlens, vec![0, 64]);
    }

    /// §3.3: two images, offsets continue across them.
    #[test]
    fn window_index_of_two_images() {
        let got = window_index(&[grid(1, 4, 6), grid(1, 8, 8)], &cfg_3b());
        assert_eq!(got.window_index, (0..22).collect::<Vec<_>>());
        assert_eq!(got.cu_window_seqlens, vec![0, 24, 88]);
    }

    #[test]
    fn full_attention_segments_are_per_image_and_frame() {
        assert_eq!(
            full_attention_seqlens(&[grid(1, 4, 6), grid(2, 8, 8)]),
            vec![0, 24, 88, 152]
        );
    }

    #[test]
    fn patch_positions_follow_the_merge_unit_order() {
        let got = patch_positions(&[grid(1, 2, 4)], 2);
        assert_eq!(
            got,
            vec![
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (0, 2),
                (0, 3),
                (1, 2),
                (1, 3)
            ]
        );
    }
}
