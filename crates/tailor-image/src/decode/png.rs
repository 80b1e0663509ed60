//! PNG decoding with Pillow 13's modes: raw samples from the `png` crate, Pillow's rules on top.
//!
//! Pillow opens a PNG in a mode chosen from (bit depth, colour type) (`_MODES` in
//! PngImagePlugin.py) and records a tRNS chunk as `info["transparency"]`. transformers then
//! composites anything with alpha or transparency onto white. The quirks reproduced here:
//!
//! - 1-bit grey is mode "1" (0 or 255); 2- and 4-bit grey are scaled by 0x55 / 0x11.
//! - The grey tRNS value is compared *unscaled* with the scaled samples, and only its low byte
//!   is used (`rgbT2a` masks with 0xff); for mode "1" it is 255 if non-zero (here: if its low
//!   byte is non-zero, which differs only for out-of-range values in invalid files).
//! - 16-bit grey is mode "I;16" and saturates at 255 in `convert("RGB")` instead of scaling.
//! - 16-bit RGB, RGBA and grey+alpha keep the high byte of each sample; an RGB tRNS is still
//!   compared by its low bytes.
//! - Palette indices past the PLTE entries read Pillow's default entry, opaque black; tRNS
//!   alphas apply to the first entries only.

use std::io::Cursor;

use ::png::{BitDepth, ColorType, Decoder, DecodingError, Limits, Transformations};

use super::{RgbImage, check_size, pillow};
use crate::error::{ImageError, Result};

const FORMAT: &str = "PNG";

/// Decodes a PNG as `convert_to_rgb(Image.open(...))` sees it.
pub(crate) fn decode(bytes: &[u8]) -> Result<RgbImage> {
    let mut decoder = Decoder::new(Cursor::new(bytes));
    // Raw samples: no palette expansion, no tRNS → alpha, no 16 → 8 stripping; Pillow's rules
    // for all of these differ from the PNG specification's.
    decoder.set_transformations(Transformations::IDENTITY);
    // The pixel count is checked against Pillow's bomb limit before the frame buffer is
    // allocated, so the crate's own byte limit would only reject legitimate large images.
    decoder.set_limits(Limits { bytes: usize::MAX });
    let mut reader = decoder.read_info().map_err(map_error)?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    check_size(width, height)?;
    let (color, depth) = (info.color_type, info.bit_depth);
    let palette = info.palette.as_deref().map(<[u8]>::to_vec);
    let trns = info.trns.as_deref().map(<[u8]>::to_vec);

    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::TooLarge {
            width: width.into(),
            height: height.into(),
            limit: super::MAX_IMAGE_PIXELS,
        })?;
    let mut raw = vec![0u8; size];
    let frame = reader.next_frame(&mut raw).map_err(map_error)?;
    let line = frame.line_size;
    let (w, h) = (width as usize, height as usize);
    if line == 0 || raw.len() < line * h {
        return Err(corrupt("frame buffer smaller than the image".into()));
    }
    let rows = raw.chunks_exact(line).take(h);
    let mut out = Vec::with_capacity(w * h * 3);

    match (color, depth) {
        (ColorType::Grayscale, _) => {
            // The png crate keeps only the low byte of a sub-16-bit tRNS value, and the low
            // byte is all that Pillow's `rgbT2a` compares.
            let transparent = match (&trns, depth) {
                (None, _) => None,
                (Some(t), BitDepth::Sixteen) if t.len() >= 2 => Some(t[1]),
                (Some(t), BitDepth::One) if !t.is_empty() => Some(if t[0] != 0 { 255 } else { 0 }),
                (Some(t), _) if !t.is_empty() => Some(t[0]),
                (Some(_), _) => return Err(corrupt("truncated tRNS chunk".into())),
            };
            for row in rows {
                for x in 0..w {
                    let v = match depth {
                        BitDepth::One => {
                            if packed(row, x, 1) != 0 {
                                255
                            } else {
                                0
                            }
                        }
                        BitDepth::Two => packed(row, x, 2) * 0x55,
                        BitDepth::Four => packed(row, x, 4) * 0x11,
                        BitDepth::Eight => row[x],
                        BitDepth::Sixteen => {
                            pillow::i16_to_l(u16::from_be_bytes([row[2 * x], row[2 * x + 1]]))
                        }
                    };
                    // A pixel equal to the transparent value gets alpha 0, and compositing
                    // turns it white; every other pixel is opaque and unchanged.
                    let v = if transparent == Some(v) { 255 } else { v };
                    out.extend_from_slice(&[v, v, v]);
                }
            }
        }
        (ColorType::Rgb, _) => {
            let transparent = match (&trns, depth) {
                (None, _) => None,
                (Some(t), BitDepth::Sixteen) if t.len() >= 6 => Some([t[1], t[3], t[5]]),
                (Some(t), BitDepth::Eight) if t.len() >= 3 => Some([t[0], t[1], t[2]]),
                (Some(_), _) => return Err(corrupt("truncated tRNS chunk".into())),
            };
            let step = if depth == BitDepth::Sixteen { 2 } else { 1 };
            for row in rows {
                for x in 0..w {
                    let i = 3 * step * x;
                    let px = [row[i], row[i + step], row[i + 2 * step]];
                    if transparent == Some(px) {
                        out.extend_from_slice(&[255, 255, 255]);
                    } else {
                        out.extend_from_slice(&px);
                    }
                }
            }
        }
        (ColorType::Indexed, _) => {
            let plte = palette.ok_or_else(|| corrupt("palette image without PLTE".into()))?;
            let mut table = [[0u8, 0, 0, 255]; 256];
            for (entry, rgb) in table.iter_mut().zip(plte.chunks_exact(3)) {
                entry[..3].copy_from_slice(rgb);
            }
            let has_alpha = trns.is_some();
            if let Some(alphas) = &trns {
                for (entry, &a) in table.iter_mut().zip(alphas) {
                    entry[3] = a;
                }
            }
            let bits = match depth {
                BitDepth::One => 1,
                BitDepth::Two => 2,
                BitDepth::Four => 4,
                BitDepth::Eight => 8,
                BitDepth::Sixteen => return Err(corrupt("16-bit palette image".into())),
            };
            for row in rows {
                for x in 0..w {
                    let entry = table[usize::from(packed(row, x, bits))];
                    if has_alpha {
                        out.extend_from_slice(&pillow::rgba_over_white(entry));
                    } else {
                        out.extend_from_slice(&entry[..3]);
                    }
                }
            }
        }
        (ColorType::GrayscaleAlpha, _) => {
            let step = if depth == BitDepth::Sixteen { 2 } else { 1 };
            for row in rows {
                for x in 0..w {
                    let i = 2 * step * x;
                    let (v, a) = (row[i], row[i + step]);
                    out.extend_from_slice(&pillow::rgba_over_white([v, v, v, a]));
                }
            }
        }
        (ColorType::Rgba, _) => {
            let step = if depth == BitDepth::Sixteen { 2 } else { 1 };
            for row in rows {
                for x in 0..w {
                    let i = 4 * step * x;
                    let px = [row[i], row[i + step], row[i + 2 * step], row[i + 3 * step]];
                    out.extend_from_slice(&pillow::rgba_over_white(px));
                }
            }
        }
    }
    RgbImage::new(width, height, out)
}

/// Sample `x` of a row packed at `bits` (1, 2, 4 or 8) bits per sample, most significant first.
#[inline(always)]
fn packed(row: &[u8], x: usize, bits: usize) -> u8 {
    if bits == 8 {
        return row[x];
    }
    let bit = x * bits;
    let shift = 8 - bits - bit % 8;
    (row[bit / 8] >> shift) & ((1u8 << bits) - 1)
}

fn corrupt(detail: String) -> ImageError {
    ImageError::Corrupt {
        format: FORMAT,
        detail,
    }
}

fn map_error(e: DecodingError) -> ImageError {
    match e {
        DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated { format: FORMAT }
        }
        other => corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_samples_are_msb_first() {
        let row = [0b1011_0001, 0b0100_0000];
        let ones: Vec<u8> = (0..9).map(|x| packed(&row, x, 1)).collect();
        assert_eq!(ones, [1, 0, 1, 1, 0, 0, 0, 1, 0]);
        let twos: Vec<u8> = (0..5).map(|x| packed(&row, x, 2)).collect();
        assert_eq!(twos, [2, 3, 0, 1, 1]);
        let fours: Vec<u8> = (0..3).map(|x| packed(&row, x, 4)).collect();
        assert_eq!(fours, [11, 1, 4]);
    }
}
