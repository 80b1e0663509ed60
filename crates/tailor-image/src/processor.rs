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
use crate::resize::{Resampler, check_target, smart_resize};
use crate::stream;

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
#[derive(Clone)]
pub struct ImageProcessor {
    config: ProcessorConfig,
    /// `table[c][v]`: the normalised value of byte `v` in channel `c`.
    table: Box<[[f32; 256]; 3]>,
}

thread_local! {
    /// Resize scratch (intermediate rows, transposed strips) and the resized image, reused by every
    /// image this thread processes, so steady-state processing allocates only the output.
    static SCRATCH: RefCell<(Resampler, Vec<u8>)> = RefCell::new((Resampler::default(), Vec::new()));
}

impl std::fmt::Debug for ImageProcessor {
    // The 768-entry table is derived from the config; printing the config says it all.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageProcessor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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

    /// The (height, width) an image of this size is resized to. Sizes over
    /// [`MAX_IMAGE_PIXELS`](crate::MAX_IMAGE_PIXELS), reachable only with absurd configs, are
    /// refused.
    pub fn target_size(&self, height: u32, width: u32) -> Result<(u32, u32)> {
        let cfg = &self.config;
        if height == 0 || width == 0 {
            return Err(ImageError::ZeroSize {
                width: width.into(),
                height: height.into(),
            });
        }
        let (h, w) = if cfg.do_resize {
            smart_resize(height, width, cfg.factor(), cfg.min_pixels, cfg.max_pixels)?
        } else if !height.is_multiple_of(cfg.factor()) || !width.is_multiple_of(cfg.factor()) {
            return Err(ImageError::NotDivisible {
                height,
                width,
                factor: cfg.factor(),
            });
        } else {
            (height, width)
        };
        check_target(w, h)?;
        Ok((h, w))
    }

    /// The `image_grid_thw` of an image of this size, without touching pixels.
    pub fn grid_for(&self, height: u32, width: u32) -> Result<ImageGrid> {
        let (h, w) = self.target_size(height, width)?;
        let p = self.config.patch_size;
        Ok(ImageGrid {
            t: 1,
            h: h / p,
            w: w / p,
        })
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
        let grid = ImageGrid {
            t: 1,
            h: h / p,
            w: w / p,
        };
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
        let units_per_row = gw / m;
        let block = p * p;
        let [t_r, t_g, t_b] = &*self.table;
        stream::append_rows(out, gh * gw, self.row_len(), |k, row| {
            // Row k is patch (mh, mw) of merge unit (bh, bw), units in row-major order.
            let (mw, mh, unit) = (k % m, k / m % m, k / (m * m));
            let (pr, pc) = (
                (unit / units_per_row) * m + mh,
                (unit % units_per_row) * m + mw,
            );
            let (r, rest) = row.split_at_mut(frames * block);
            let (g, b) = rest.split_at_mut(frames * block);
            // One sweep over the patch's pixels fills frame 0 of the three channel blocks.
            let origin = (pr * p * w + pc * p) * 3;
            let tables = [t_r, t_g, t_b];
            if p == 14 {
                // Qwen2-VL's patch size, with the loop bounds known to the compiler.
                lookup_patch::<14>(&pixels[origin..], w * 3, tables, [r, g, b]);
            } else {
                lookup_patch_any(&pixels[origin..], w * 3, p, tables, [r, g, b]);
            }
            // A still image's other frames are copies of the one frame.
            let (r, rest) = row.split_at_mut(frames * block);
            let (g, b) = rest.split_at_mut(frames * block);
            for channel in [r, g, b] {
                for t in 1..frames {
                    channel.copy_within(0..block, t * block);
                }
            }
        });
    }
}

/// Table lookups of one `P × P` patch whose top-left pixel starts `pixels`, rows `stride` bytes
/// apart, into frame 0 of the three channel blocks.
#[inline(always)]
fn lookup_patch<const P: usize>(
    pixels: &[u8],
    stride: usize,
    tables: [&[f32; 256]; 3],
    blocks: [&mut [f32]; 3],
) {
    let [t_r, t_g, t_b] = tables;
    let [r, g, b] = blocks;
    let (r, g, b) = (&mut r[..P * P], &mut g[..P * P], &mut b[..P * P]);
    for i in 0..P {
        let row: &[[u8; 3]; P] = pixels[i * stride..][..P * 3]
            .as_chunks::<3>()
            .0
            .try_into()
            .unwrap();
        for (j, px) in row.iter().enumerate() {
            r[i * P + j] = t_r[usize::from(px[0])];
            g[i * P + j] = t_g[usize::from(px[1])];
            b[i * P + j] = t_b[usize::from(px[2])];
        }
    }
}

/// [`lookup_patch`] for a patch size known only at run time.
fn lookup_patch_any(
    pixels: &[u8],
    stride: usize,
    p: usize,
    tables: [&[f32; 256]; 3],
    blocks: [&mut [f32]; 3],
) {
    let [t_r, t_g, t_b] = tables;
    let [r, g, b] = blocks;
    for i in 0..p {
        let (row, _) = pixels[i * stride..][..p * 3].as_chunks::<3>();
        for (j, px) in row.iter().enumerate() {
            r[i * p + j] = t_r[usize::from(px[0])];
            g[i * p + j] = t_g[usize::from(px[1])];
            b[i * p + j] = t_b[usize::from(px[2])];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of docs/qwen2_5_vl_reference.md §2.5, written as index arithmetic, against the
    /// production path on an image whose output (6 MB) is large enough to be streamed.
    #[test]
    fn patch_layout_matches_the_reference_formula() {
        let (h, w) = (448usize, 560usize);
        let data: Vec<u8> = (0..h * w * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let image = RgbImage::new(w as u32, h as u32, data).unwrap();
        let config = ProcessorConfig::qwen2_5_vl()
            .with_min_pixels(1)
            .with_max_pixels(1 << 30);
        let processor = ImageProcessor::new(config).unwrap();
        let out = processor.process(&image).unwrap();
        let (gh, gw) = (h / 14, w / 14);
        assert_eq!(
            out.grid,
            ImageGrid {
                t: 1,
                h: gh as u32,
                w: gw as u32
            }
        );
        assert!(
            out.pixel_values.len() * 4 >= 1 << 20,
            "must exercise the streaming path"
        );
        for bh in 0..gh / 2 {
            for bw in 0..gw / 2 {
                for mh in 0..2 {
                    for mw in 0..2 {
                        let row = ((bh * (gw / 2) + bw) * 2 + mh) * 2 + mw;
                        let (pr, pc) = (2 * bh + mh, 2 * bw + mw);
                        for c in 0..3 {
                            for t in 0..2 {
                                for i in 0..14 {
                                    for j in 0..14 {
                                        let v = image
                                            .pixel((pc * 14 + j) as u32, (pr * 14 + i) as u32)[c];
                                        let got = out.pixel_values
                                            [row * 1176 + ((c * 2 + t) * 14 + i) * 14 + j];
                                        assert_eq!(
                                            got.to_bits(),
                                            processor.table[c][usize::from(v)].to_bits()
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_patch_sizes_use_the_general_path() {
        let config = ProcessorConfig {
            patch_size: 8,
            merge_size: 3,
            temporal_patch_size: 3,
            ..ProcessorConfig::qwen2_5_vl().with_min_pixels(1)
        };
        let processor = ImageProcessor::new(config).unwrap();
        let image =
            RgbImage::new(48, 24, (0..48 * 24 * 3).map(|i| (i % 256) as u8).collect()).unwrap();
        let out = processor.process(&image).unwrap();
        assert_eq!(out.grid, ImageGrid { t: 1, h: 3, w: 6 });
        assert_eq!(processor.row_len(), 3 * 3 * 64);
        // Row 1 is patch (0, 1); its channel-1 block, frame 2, pixel (2, 5) is image pixel
        // (x 13, y 2).
        let v = image.pixel(13, 2)[1];
        let got = out.pixel_values[576 + (3 + 2) * 64 + 2 * 8 + 5];
        assert_eq!(got, processor.table[1][usize::from(v)]);
    }
}
