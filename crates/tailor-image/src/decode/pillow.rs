//! Pillow 13's integer pixel conversions that `convert_to_rgb` goes through.
//!
//! Written from a reading of Pillow's `src/libImaging/AlphaComposite.c`, `Convert.c` and
//! `ImagingUtils.h`; each function names the C routine whose arithmetic it reproduces.

/// `SHIFTFORDIV255` from ImagingUtils.h: `x / 255` for the ranges Pillow feeds it, by shifts.
#[inline(always)]
fn shift_for_div255(a: u32) -> u32 {
    ((a >> 8) + a) >> 8
}

/// One colour channel of `ImagingAlphaComposite(dst = opaque white, src)`, then alpha dropped.
///
/// transformers composites every image with transparency over `Image.new("RGBA", size,
/// (255, 255, 255, 255))`. Pillow's integer routine (7 extra bits of precision, rounded
/// divisions) is reproduced with the destination fixed to white and opaque; a fully transparent
/// source pixel copies the destination.
#[inline(always)]
pub(crate) fn over_white(src: u8, src_alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    const DST: u32 = 255;
    const DST_ALPHA: u32 = 255;
    if src_alpha == 0 {
        return DST as u8;
    }
    let (c, a) = (u32::from(src), u32::from(src_alpha));
    let blend = DST_ALPHA * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = c * coef1 + DST * coef2;
    (shift_for_div255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
}

/// An RGBA pixel composited over white, alpha dropped (`alpha_composite` + `convert("RGB")`).
#[inline(always)]
pub(crate) fn rgba_over_white(rgba: [u8; 4]) -> [u8; 3] {
    let a = rgba[3];
    [
        over_white(rgba[0], a),
        over_white(rgba[1], a),
        over_white(rgba[2], a),
    ]
}

/// `cmyk2rgb` from Convert.c, applied to the *stored* CMYK values.
///
/// Pillow opens every 4-component JPEG with raw mode `CMYK;I` (Adobe polarity, values inverted
/// on unpacking), so callers pass `255 - decoded` here.
#[inline(always)]
pub(crate) fn cmyk_to_rgb(cmyk: [u8; 4]) -> [u8; 3] {
    let nk = 255 - i32::from(cmyk[3]);
    // MULDIV255(a, b) = SHIFTFORDIV255(a · b + 128); the operands are non-negative here.
    let muldiv255 = |a: u8| shift_for_div255((i32::from(a) * nk + 128) as u32) as i32;
    let ch = |a: u8| (nk - muldiv255(a)).clamp(0, 255) as u8;
    [ch(cmyk[0]), ch(cmyk[1]), ch(cmyk[2])]
}

/// `I16_RGB` from Convert.c: a 16-bit grey value saturates at 255 (it is *not* scaled down, so a
/// typical 16-bit greyscale PNG comes out mostly white, exactly as in Pillow).
#[inline(always)]
pub(crate) fn i16_to_l(v: u16) -> u8 {
    v.min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_pixels_pass_through_and_transparent_ones_turn_white() {
        for c in 0..=255u8 {
            assert_eq!(over_white(c, 255), c);
            assert_eq!(over_white(c, 0), 255);
        }
    }

    // Values computed with Pillow 13.0.0:
    // Image.alpha_composite(Image.new("RGBA", (1, 1), "white"), Image.new("RGBA", (1, 1), px)).
    #[test]
    fn partial_alpha_matches_pillow() {
        assert_eq!(rgba_over_white([0, 0, 0, 128]), [127, 127, 127]);
        assert_eq!(rgba_over_white([200, 100, 0, 1]), [255, 254, 254]);
        assert_eq!(rgba_over_white([10, 20, 30, 254]), [11, 21, 31]);
    }

    // Pillow 13.0.0: Image.new("CMYK", (1, 1), stored).convert("RGB").
    #[test]
    fn cmyk_conversion() {
        assert_eq!(cmyk_to_rgb([10, 100, 200, 50]), [197, 125, 44]);
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 255]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([255, 0, 0, 0]), [0, 255, 255]);
    }
}
