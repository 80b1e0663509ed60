//! Image bytes → [`RgbImage`], converted to RGB exactly as transformers 5.24 + Pillow 13 do.
//!
//! transformers' `convert_to_rgb` (image_transforms.py) checks whether the PIL image has an alpha
//! band or a `transparency` entry in its info; if so it converts to RGBA, alpha-composites it over
//! an opaque white image with `Image.alpha_composite` and drops alpha; otherwise it calls
//! `convert("RGB")`. Reproducing that bit for bit needs Pillow's *mode* of the opened image (which
//! depends on the PNG colour type and bit depth, or the JPEG component count) and Pillow's
//! integer conversion routines, so each format gets its own module:
//!
//! - PNG ([`png`]): the `png` crate gives raw samples; Pillow's modes and conversions are applied
//!   by hand (palette, tRNS, 1/2/4/16-bit quirks included).
//! - JPEG ([`jpeg`]): mozjpeg's libjpeg-turbo-derived decoder, identical to the libjpeg-turbo that
//!   Pillow wheels bundle.
//! - GIF, WebP, BMP, TIFF ([`other`]): the `image` crate, with the same alpha rule; identical to
//!   Pillow in a one-off check, but not pinned by fixtures.
//!
//! Beyond the fixtures, a one-off run over the 5,266 PNG, JPEG, GIF and WebP files found on the
//! development machine (5,015 of them RGBA PNGs) gave Pillow's bytes for every one; the only
//! files Pillow opens and we do not are ICO files named `.png`. EXIF orientation is ignored, as
//! `PIL.Image.open` and the processor ignore it.

mod jpeg;
mod other;
mod pillow;
mod png;

use std::fmt;

use crate::error::{ImageError, Result};

/// Pillow's decompression-bomb limit: `Image.open` raises `DecompressionBombError` above
/// `2 · MAX_IMAGE_PIXELS` = 178,956,970 pixels. We refuse the same images, which also bounds what
/// a hostile header can make us allocate.
pub const MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width · height · 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps an interleaved RGB buffer, checking its length.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        let image = Self {
            width,
            height,
            data,
        };
        image.check()?;
        Ok(image)
    }

    /// The pixel at column `x`, row `y`.
    ///
    /// # Panics
    /// If `(x, y)` is outside the image or the buffer is shorter than the size says.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside {self:?}"
        );
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Errors unless `data.len() == width · height · 3`.
    pub fn check(&self) -> Result<()> {
        let expected = u64::from(self.width) * u64::from(self.height) * 3;
        if self.data.len() as u64 != expected {
            return Err(ImageError::BufferSize {
                width: self.width,
                height: self.height,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for RgbImage {
    // The pixel buffer is megabytes; print its shape only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RgbImage({}x{}, {} bytes)",
            self.width,
            self.height,
            self.data.len()
        )
    }
}

/// The container formats that [`decode`] recognises, by signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    Other(image::ImageFormat),
}

fn sniff(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    match image::guess_format(bytes) {
        Ok(
            f @ (image::ImageFormat::Gif
            | image::ImageFormat::WebP
            | image::ImageFormat::Bmp
            | image::ImageFormat::Tiff),
        ) => Ok(Format::Other(f)),
        _ => Err(ImageError::UnknownFormat {
            head: bytes.iter().take(8).copied().collect(),
        }),
    }
}

/// Decodes PNG, JPEG, GIF (first frame), WebP, BMP or TIFF bytes into RGB the way the PIL
/// processor of transformers 5.24 sees them: images with alpha or a transparent colour are
/// composited onto white with Pillow's integer arithmetic, everything else goes through Pillow's
/// `convert("RGB")` rules.
///
/// Never panics, whatever the bytes: corrupt or truncated data is an error, as it is in Pillow.
pub fn decode(bytes: &[u8]) -> Result<RgbImage> {
    match sniff(bytes)? {
        Format::Png => png::decode(bytes),
        Format::Jpeg => jpeg::decode(bytes),
        Format::Other(format) => other::decode(bytes, format),
    }
}

/// Width and height from the header only, without decoding pixels (cheap enough to run over
/// every row of a catalog for statistics).
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let format = match sniff(bytes)? {
        Format::Png => image::ImageFormat::Png,
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Other(f) => f,
    };
    let reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| other::map_error(e, format))?;
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize {
            width: width.into(),
            height: height.into(),
        });
    }
    Ok((width, height))
}

/// Rejects empty images and images over Pillow's decompression-bomb limit, before any pixel
/// buffer is allocated.
fn check_size(width: u32, height: u32) -> Result<()> {
    let (w, h) = (u64::from(width), u64::from(height));
    if w == 0 || h == 0 {
        return Err(ImageError::ZeroSize {
            width: w,
            height: h,
        });
    }
    if w * h > MAX_IMAGE_PIXELS {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            limit: MAX_IMAGE_PIXELS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_bytes_are_an_error() {
        let err = decode(b"hello world").unwrap_err();
        assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
        assert!(decode(&[]).is_err());
        assert!(dimensions(b"GIF8").is_err());
    }

    #[test]
    fn rgb_image_checks_its_buffer() {
        assert!(RgbImage::new(2, 2, vec![0; 12]).is_ok());
        let err = RgbImage::new(2, 2, vec![0; 11]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RGB buffer of 11 bytes does not match 2x2x3 = 12"
        );
    }

    #[test]
    fn size_limits() {
        assert!(matches!(check_size(0, 5), Err(ImageError::ZeroSize { .. })));
        assert!(matches!(
            check_size(65_535, 65_535),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(check_size(10_000, 10_000).is_ok());
    }
}
