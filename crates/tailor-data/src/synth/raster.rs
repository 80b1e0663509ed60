//! A tiny supersampled RGB canvas: scanline polygon fill, seam outlines and box downsampling.
//!
//! Every shape is a polygon (circles are 24-gons), filled with the even-odd rule at pixel centres.
//! Each filled pixel also records a part id, so that a later pass can darken the pixels where one
//! part meets the background or a part drawn before it: that gives garments outlines and seams
//! without stroking paths. Only IEEE basic arithmetic is used, so images are bit-identical across
//! platforms.

/// An sRGB colour with channels in 0..=1; blending in sRGB rather than linear light is fine here.
pub(super) type Rgb = [f32; 3];

/// A point in pixel coordinates of the supersampled canvas.
pub(super) type Pt = (f32, f32);

pub(super) struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<Rgb>,
    part: Vec<u8>,
    /// Scratch buffer for scanline crossings, kept to avoid an allocation per row.
    xs: Vec<f32>,
}

impl Canvas {
    /// A canvas painted by `bg(x, y)` (pixel indices), with every part id 0 (background).
    pub(super) fn new(w: usize, h: usize, bg: impl Fn(usize, usize) -> Rgb) -> Canvas {
        let mut rgb = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                rgb.push(bg(x, y));
            }
        }
        Canvas {
            w,
            h,
            rgb,
            part: vec![0; w * h],
            xs: Vec::new(),
        }
    }

    /// Fills `poly` (even-odd rule, pixel centres) with `paint(x, y)` evaluated at each pixel
    /// centre, and marks the pixels as `part`.
    pub(super) fn fill(&mut self, poly: &[Pt], part: u8, paint: &mut dyn FnMut(f32, f32) -> Rgb) {
        if poly.len() < 3 || self.w == 0 || self.h == 0 {
            return;
        }
        let (mut y0, mut y1) = (f32::INFINITY, f32::NEG_INFINITY);
        for &(_, y) in poly {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        // Rows whose centre j + 0.5 lies in [y0, y1]; `as` saturates, so off-canvas and NaN
        // coordinates clip instead of wrapping.
        let first = (y0 - 0.5).ceil().max(0.0) as usize;
        let last = ((y1 - 0.5).floor().min(self.h as f32 - 1.0)).max(-1.0);
        if last < 0.0 {
            return;
        }
        let last = last as usize;
        let w = self.w;
        for j in first..=last {
            let yc = j as f32 + 0.5;
            self.xs.clear();
            for (a, b) in poly.iter().zip(poly.iter().cycle().skip(1)) {
                if (a.1 <= yc) != (b.1 <= yc) {
                    self.xs.push(a.0 + (yc - a.1) * (b.0 - a.0) / (b.1 - a.1));
                }
            }
            self.xs.sort_by(f32::total_cmp);
            for span in self.xs.chunks_exact(2) {
                let i0 = (span[0] - 0.5).ceil().max(0.0) as usize;
                let i1 = ((span[1] - 0.5).ceil().min(w as f32)).max(0.0) as usize;
                let row = j * w;
                for i in i0..i1 {
                    let px = paint(i as f32 + 0.5, yc);
                    if let (Some(c), Some(p)) =
                        (self.rgb.get_mut(row + i), self.part.get_mut(row + i))
                    {
                        *c = px;
                        *p = part;
                    }
                }
            }
        }
    }

    /// Multiplies by `keep` the pixels of a part that touch the background or a part with a lower
    /// id (drawn earlier), so outlines sit on the outside of garments and seams on the upper piece.
    pub(super) fn outline(&mut self, keep: f32) {
        let (w, h) = (self.w, self.h);
        let part = &self.part;
        let at = |x: usize, y: usize| part.get(y * w + x).copied().unwrap_or(0);
        let mut edge = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let p = at(x, y);
                if p == 0 {
                    continue;
                }
                let mut neighbours = [None; 4];
                if x > 0 {
                    neighbours[0] = Some(at(x - 1, y));
                }
                if x + 1 < w {
                    neighbours[1] = Some(at(x + 1, y));
                }
                if y > 0 {
                    neighbours[2] = Some(at(x, y - 1));
                }
                if y + 1 < h {
                    neighbours[3] = Some(at(x, y + 1));
                }
                if neighbours.iter().flatten().any(|&q| q < p)
                    && let Some(e) = edge.get_mut(y * w + x)
                {
                    *e = true;
                }
            }
        }
        for (c, e) in self.rgb.iter_mut().zip(&edge) {
            if *e {
                for v in c.iter_mut() {
                    *v *= keep;
                }
            }
        }
    }

    /// Averages k×k blocks into 8-bit RGB (`w / k` × `h / k` pixels, row-major).
    pub(super) fn downsample(&self, k: usize) -> Vec<u8> {
        let k = k.max(1);
        let (ow, oh) = (self.w / k, self.h / k);
        let norm = 255.0 / (k * k) as f32;
        let mut out = Vec::with_capacity(ow * oh * 3);
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = [0.0f32; 3];
                for y in oy * k..(oy + 1) * k {
                    let row = y * self.w;
                    for c in self
                        .rgb
                        .get(row + ox * k..row + (ox + 1) * k)
                        .unwrap_or(&[])
                    {
                        for (s, v) in sum.iter_mut().zip(c) {
                            *s += v.clamp(0.0, 1.0);
                        }
                    }
                }
                out.extend(sum.map(|s| (s * norm).round().clamp(0.0, 255.0) as u8));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_outlines_a_square() {
        let mut c = Canvas::new(8, 8, |_, _| [1.0; 3]);
        let sq = [(2.0, 2.0), (6.0, 2.0), (6.0, 6.0), (2.0, 6.0)];
        c.fill(&sq, 1, &mut |_, _| [0.5; 3]);
        let inside = c.part.iter().filter(|&&p| p == 1).count();
        assert_eq!(inside, 16);
        c.outline(0.0);
        // The 4×4 square keeps only its 2×2 core unoutlined.
        let dark = c.rgb.iter().filter(|p| p[0] == 0.0).count();
        assert_eq!(dark, 12);
        let small = c.downsample(2);
        assert_eq!(small.len(), 4 * 4 * 3);
    }

    #[test]
    fn off_canvas_and_degenerate_polygons_are_clipped() {
        let mut c = Canvas::new(4, 4, |_, _| [0.0; 3]);
        c.fill(
            &[(-10.0, -10.0), (20.0, -10.0), (20.0, 20.0)],
            1,
            &mut |_, _| [1.0; 3],
        );
        c.fill(
            &[(f32::NAN, 1.0), (2.0, f32::NAN), (3.0, 3.0)],
            2,
            &mut |_, _| [1.0; 3],
        );
        c.fill(&[(0.0, 0.0), (1.0, 1.0)], 3, &mut |_, _| [1.0; 3]);
        assert!(c.part.iter().all(|&p| p <= 2));
        let mut empty = Canvas::new(0, 0, |_, _| [0.0; 3]);
        empty.fill(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)], 1, &mut |_, _| {
            [1.0; 3]
        });
        assert!(empty.downsample(2).is_empty());
    }
}
