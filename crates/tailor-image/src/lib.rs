//! Qwen2-VL image processing, bit-identical to transformers 5.24's `Qwen2VLImageProcessorPil`
//! with Pillow 13.
//!
//! # Brief overview
//!
//! This crate owns the image side of a sample, from file bytes to the `pixel_values` rows and
//! `image_grid_thw` that the vision tower consumes:
//!
//! - [`decode`] turns PNG / JPEG (and, best effort, GIF / WebP / BMP / TIFF) bytes into an
//!   [`RgbImage`] with transformers' RGB conversion: transparency composited onto white with
//!   Pillow's integer arithmetic, Pillow's mode rules for palettes, greyscale and 16-bit PNGs, and
//!   JPEG decoded by a libjpeg-turbo-derived decoder so that the pixels are Pillow's.
//!   [`dimensions`] reads only the header.
//! - [`ProcessorConfig`] resolves a `preprocessor_config.json` (flat `min_pixels`/`max_pixels`
//!   or `size: {shortest_edge, longest_edge}`) with transformers' precedence and defaults.
//! - [`smart_resize`] picks the target size; [`resize_bicubic`] is Pillow's bicubic resize.
//! - [`ImageProcessor`] runs the whole pipeline: [`ImageProcessor::grid_for`] gives the grid
//!   without pixels, [`ImageProcessor::process_into`] appends an image's rows to a batch buffer.
//!
//! Parity is checked bit for bit (f32 bits of `pixel_values`, bytes of the resized image) against
//! fixtures written by `tools/reference/image_fixtures.py` into `tests/fixtures/image/`.
//!
//! The test vector of the reference doc: a 50×80 gradient is resized to 56×84 and cut into
//! 24 patches of 1176 values.
//!
//! ```
//! use tailor_image::{ImageProcessor, ProcessorConfig, RgbImage};
//!
//! let (h, w) = (50u32, 80u32);
//! let mut data = Vec::new();
//! for y in 0..h {
//!     for x in 0..w {
//!         data.extend([(7 * x + 13 * y) % 256, (3 * x + 5 * y + 50) % 256, (11 * x + 2 * y + 100) % 256].map(|v| v as u8));
//!     }
//! }
//! let image = RgbImage::new(w, h, data)?;
//!
//! let processor = ImageProcessor::new(ProcessorConfig::qwen2_5_vl())?;
//! let out = processor.process(&image)?;
//! assert_eq!((out.grid.t, out.grid.h, out.grid.w), (1, 4, 6));
//! assert_eq!(out.pixel_values.len(), 24 * 1176);
//! assert_eq!(out.pixel_values[..4], [-1.7922626, -1.704672, -1.6024829, -1.500294]);
//! // The grid is known without decoding or resizing anything.
//! assert_eq!(processor.grid_for(h, w)?, out.grid);
//! # Ok::<(), tailor_image::ImageError>(())
//! ```
#![deny(missing_docs)]

mod config;
mod decode;
mod error;
mod processor;
mod resize;
mod stream;

pub use config::{ProcessorConfig, RESAMPLE_BICUBIC};
pub use decode::{MAX_IMAGE_PIXELS, RgbImage, decode, dimensions};
pub use error::{ImageError, Result};
pub use processor::{ImageProcessor, ProcessedImage};
pub use resize::{resize_bicubic, smart_resize};
pub use tailor_core::ImageGrid;
