//! GIF, WebP, BMP and TIFF through the `image` crate, with transformers' alpha rule.
//!
//! These formats are rare in catalogs and no fixture pins them. A one-off check on the
//! development machine found them identical to Pillow 13 + `convert_to_rgb` on 131 GIFs
//! (palette, with and without a transparent index, one animated) and 10 lossless RGBA WebPs found
//! on the system, and on Pillow-written lossy and lossless WebP (with and without alpha), BMP and
//! TIFF. Known differences in principle: 16-bit samples (the `image` crate rounds `v / 257`,
//! Pillow often truncates), and GIF frames smaller than the logical screen. The alpha rule is the
//! same as for PNG: an image with an alpha channel (a GIF with a transparent index decodes as
//! RGBA) is composited onto white with Pillow's arithmetic.

use super::{RgbImage, check_size, pillow};
use crate::error::{ImageError, Result};

/// Decodes one of the formats above (the first frame of an animation).
pub(crate) fn decode(bytes: &[u8], format: image::ImageFormat) -> Result<RgbImage> {
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader()
        .into_dimensions()
        .map_err(|e| map_error(e, format))?;
    // Pillow's bomb limit first; the crate's default 512 MiB allocation limit stays as a second
    // guard against headers that lie about strip or frame sizes.
    check_size(width, height)?;
    let decoded = reader().decode().map_err(|e| map_error(e, format))?;
    let data = if decoded.color().has_alpha() {
        let rgba = decoded.into_rgba8();
        rgba.as_raw()
            .chunks_exact(4)
            .flat_map(|p| pillow::rgba_over_white([p[0], p[1], p[2], p[3]]))
            .collect()
    } else {
        decoded.into_rgb8().into_raw()
    };
    RgbImage::new(width, height, data)
}

fn name(format: image::ImageFormat) -> &'static str {
    match format {
        image::ImageFormat::Png => "PNG",
        image::ImageFormat::Jpeg => "JPEG",
        image::ImageFormat::Gif => "GIF",
        image::ImageFormat::WebP => "WebP",
        image::ImageFormat::Bmp => "BMP",
        image::ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// Maps an `image` crate error to ours, keeping truncation distinct.
pub(crate) fn map_error(e: image::ImageError, format: image::ImageFormat) -> ImageError {
    let format = name(format);
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated { format }
        }
        image::ImageError::Unsupported(u) => ImageError::UnsupportedFormat {
            format,
            detail: u.to_string(),
        },
        other => ImageError::Corrupt {
            format,
            detail: other.to_string(),
        },
    }
}
