//! [`ImageProcessor`]: RGB image → `pixel_values` rows and `image_grid_thw`, as
//! `Qwen2VLImageProcessorPil` in transformers 5.24 computes them.
//!
//! The Python pipeline per image is: `smart_resize` → PIL bicubic resize → rescale
//! (`f32(f64(v) · rescale_factor)`, numpy's `astype(float64) * scale` then `astype(float32)`) →
//! normalize (`(x − f32(mean)) / f32(std)` in float32) → patchify. Since the input of rescale is
//! uint8, the two float steps are a function of (channel, byte) only; they are tabulated once per
//! processor with exactly those operations (256 × 3 entries), which is bit-exact and turns the
//! float work into one table lookup per value.
//!
//! Patch layout (transformers 5.24 `patchify`): rows in the order (bh, bw, mh, mw) — merge units
//! of `merge × merge` patches, row-major — and inside a row the values in the order (c, t, i, j):
//! channel, frame, pixel row, pixel column. A still image is one temporal group (`grid.t == 1`)
//! whose `temporal_patch_size` frames are copies, so each channel block repeats.

use std::cell::RefCell;

use tailor_core::ImageGrid;

use crate::config::ProcessorConfig;
use crate::decode::RgbImage;
use crate::error::{ImageError, Result};
use crate::resize::{Resampler, smart_resize};

/// `pixel_values` and grid of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `grid.patches()` rows of `3 · temporal_patch_size · patch_size²` values (1176 for
    /// Qwen2.5-VL), row-major.
    pub pixel_values: Vec<f32>,
    /// `image_grid_thw` of the image.
    pub grid: ImageGrid,
}

/// The Qwen2-VL image processor (PIL path), configured once and shared freely: it is `Sync`,
/// and its scratch buffers live per thread.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ProcessorConfig,
    /// `table[c][v]`: the normalised value of byte `v` in channel `c`.
    table: Box<[[f32; 256]; 3]>,
}

thread_local! {
    /// Resize scratch (intermediate pass, accumulators) and the resized image, reused by every
    /// image this thread processes, so steady-state processing allocates only the output.
    static SCRATCH: RefCell<(Resampler, Vec<u8>)> = RefCell::new((Resampler::default(), Vec::new()));
}

impl ImageProcessor {
    /// Validates the config and tabulates rescale + normalize.
    pub fn new(config: ProcessorConfig) -> Result<Self> {
        config.validate()?;
        let mut table = Box::new([[0f32; 256]; 3]);
        for (c, row) in table.iter_mut().enumerate() {
            // numpy: `np.array(mean, dtype=float32)`, so the f64 config values round to f32.
            let (mean, std) = (config.image_mean[c] as f32, config.image_std[c] as f32);
            for (v, slot) in row.iter_mut().enumerate() {
                let mut x = if config.do_rescale {
                    // `image.astype(np.float64) * scale`, then `.astype(np.float32)`.
                    (v as f64 * config.rescale_factor) as f32
                } else {
                    // `normalize` / `patchify` cast the uint8 image with `astype(np.float32)`.
                    v as f32
                };
                if config.do_normalize {
                    x = (x - mean) / std;
                }
                *slot = x;
            }
        }
        Ok(Self { config, table })
    }

    /// The config this processor was built with.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// Values per `pixel_values` row: `3 · temporal_patch_size · patch_size²`.
    pub fn row_len(&self) -> usize {
        let p = self.config.patch_size as usize;
        3 * self.config.temporal_patch_size as usize * p * p
    }

    /// The (height, width) an image of this size is resized to.
    pub fn target_size(&self, height: u32, width: u32) -> Result<(u32, u32)> {
        let cfg = &self.config;
        if height == 0 || width == 0 {
            return Err(ImageError::ZeroSize { width: width.into(), height: height.into() });
        }
        if cfg.do_resize {
            smart_resize(height, width, cfg.factor(), cfg.min_pixels, cfg.max_pixels)
        } else if height % cfg.factor() != 0 || width % cfg.factor() != 0 {
            Err(ImageError::NotDivisible { height, width, factor: cfg.factor() })
        } else {
            Ok((height, width))
        }
    }

    /// The `image_grid_thw` of an image of this size, without touching pixels.
    pub fn grid_for(&self, height: u32, width: u32) -> Result<ImageGrid> {
        let (h, w) = self.target_size(height, width)?;
        let p = self.config.patch_size;
        Ok(ImageGrid { t: 1, h: h / p, w: w / p })
    }

    /// Processes one image into a new buffer.
    pub fn process(&self, image: &RgbImage) -> Result<ProcessedImage> {
        let mut pixel_values = Vec::new();
        let grid = self.process_into(image, &mut pixel_values)?;
        Ok(ProcessedImage { pixel_values, grid })
    }

    /// Processes one image and *appends* its rows to `out`, so that a batch's pixel buffer is
    /// filled in place, image after image. On error `out` is left as it was.
    pub fn process_into(&self, image: &RgbImage, out: &mut Vec<f32>) -> Result<ImageGrid> {
        image.check()?;
        let (h, w) = self.target_size(image.height, image.width)?;
        let p = self.config.patch_size;
        let grid = ImageGrid { t: 1, h: h / p, w: w / p };
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (resampler, resized) = &mut *scratch;
            let pixels: &[u8] = if (h, w) == (image.height, image.width) {
                // Pillow returns a copy for an unchanged size; reading the input is the same.
                &image.data
            } else {
                resampler.resize_into(image, w, h, resized);
                resized
            };
            self.patchify(pixels, h as usize, w as usize, out);
        });
        Ok(grid)
    }

    /// Appends the rows of a resized `h × w` RGB image in transformers' patch order.
    fn patchify(&self, pixels: &[u8], h: usize, w: usize, out: &mut Vec<f32>) {
        let p = self.config.patch_size as usize;
        let m = self.config.merge_size as usize;
        let frames = self.config.temporal_patch_size as usize;
        let (gh, gw) = (h / p, w / p);
        let block = p * p;
        out.reserve(gh * gw * self.row_len());
        // One patch is looked up into three channel blocks in a single sweep over its pixels,
        // then each block is appended `frames` times with a plain copy.
        let mut blocks = vec![0f32; 3 * block];
        let [t_r, t_g, t_b] = &*self.table;
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let (pr, pc) = (bh * m + mh, bw * m + mw);
                        let (r, rest) = blocks.split_at_mut(block);
                        let (g, b) = rest.split_at_mut(block);
                        for i in 0..p {
                            let row = &pixels[((pr * p + i) * w + pc * p) * 3..][..p * 3];
                            let (pixels_i, _) = row.as_chunks::<3>();
                            let span = i * p..(i + 1) * p;
                            let dst = r[span.clone()].iter_mut().zip(&mut g[span.clone()]).zip(&mut b[span]);
                            for (((dr, dg), db), px) in dst.zip(pixels_i) {
                                *dr = t_r[usize::from(px[0])];
                                *dg = t_g[usize::from(px[1])];
                                *db = t_b[usize::from(px[2])];
                            }
                        }
                        for channel in blocks.chunks_exact(block) {
                            // A still image's frames are copies of the one frame.
                            for _ in 0..frames {
                                out.extend_from_slice(channel);
                            }
                        }
                    }
                }
            }
        }
    }
}
