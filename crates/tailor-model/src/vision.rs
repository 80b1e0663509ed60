//! The Qwen2.5-VL vision tower (`model.visual`): patch embedding, 2-D rotary positions, windowed
//! and full attention blocks, and the 2×2 patch merger.
//!
//! All images of a batch are one flat sequence of patch rows. Attention never crosses an image:
//! window blocks attend inside `window_size`-pixel windows of one image, full blocks inside one
//! image (one temporal group). Within the tower the rows are kept in window order; the merger
//! output is put back in raster order, images in input order.

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use tailor_core::ImageGrid;

use crate::config::{VISION_RMS_NORM_EPS, VisionConfig};
use crate::lora::Projection;
use crate::nn::{RmsNorm, SwiGlu, apply_rotary, attention, inv_freq};

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

        // 2-D rotary table in window order: [row·inv_freq, col·inv_freq] twice.
        let positions = patch_positions(grids, m);
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

        let full = full_attention_seqlens(grids);
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

        let mut reverse = vec![0u32; windows.window_index.len()];
        for (position, &token) in windows.window_index.iter().enumerate() {
            reverse[token] = position as u32;
        }
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
        let mut i = 0;
        while i + 1 < segments.len() {
            let start = segments[i];
            let len = segments[i + 1] - start;
            let mut j = i + 1;
            while j + 1 < segments.len() && segments[j + 1] - segments[j] == len {
                j += 1;
            }
            let count = j - i;
            if len > 0 {
                let take = |t: &Tensor| -> Result<Tensor> {
                    t.narrow(0, start, count * len)?
                        .reshape((count, len, heads, hd))?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let out = attention(&take(&q)?, &take(&k)?, &take(&v)?, scale, None)?;
                outputs.push(out.transpose(1, 2)?.reshape((count * len, heads * hd))?);
            }
            i = j;
        }
        let out = Tensor::cat(&outputs, 0)?;
        self.proj.forward(&out)
    }
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

impl Module for PatchMerger {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Four consecutive rows are one 2×2 merge unit; concatenate them.
        let xs = self.ln_q.forward(xs)?.reshape(((), self.merged_dim))?;
        let xs = self.fc1.forward(&xs)?.gelu_erf()?;
        self.fc2.forward(&xs)
    }
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
