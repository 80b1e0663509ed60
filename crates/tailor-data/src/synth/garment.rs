//! Garment silhouettes: each category2 as a handful of filled polygons in garment units.
//!
//! Garment units: x to the right of the centre line, y downwards from the garment's top edge; a
//! women's tee is about 1.4 wide (sleeves included) and 1.35 tall. The renderer centres and, if
//! needed, shrinks the result, so only proportions matter here, and proportions are what tell the
//! categories apart: sleeves and their angle for tops, a waist seam and flared skirt for dresses, a
//! crotch notch for pants and shorts, ribbed bands for sweaters, lapels and pockets for jackets.

use super::raster::Rgb;
use super::{Accessory, Category, Gender, Length, Neckline, Sleeve};

/// A point in garment units.
pub(super) type P = (f32, f32);

/// How an element is coloured; the renderer owns the product's colours and textures.
#[derive(Clone, Copy, Debug)]
pub(super) enum Paint {
    /// The fabric with its pattern and texture, times a tone (below 1 shades a piece).
    Fabric(f32),
    /// The fabric's colour and texture without the pattern (bands, lapels, waistbands).
    Trim(f32),
    /// The inside of the garment seen through an opening, and stitched lines.
    Inner,
    /// The graphic print, in the pattern's second colour.
    Print,
    /// A fixed colour (hats, belts, buttons, the shirt under a jacket).
    Flat(Rgb),
}

/// One filled polygon. Elements that share a part id show no seam between them.
pub(super) struct Element {
    pub(super) poly: Vec<P>,
    pub(super) paint: Paint,
    pub(super) part: u8,
}

/// The printed shape of a graphic pattern; a product keeps one shape across its views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Graphic {
    Star,
    Circle,
    Triangle,
    Diamond,
}

impl Graphic {
    pub(super) const ALL: [Graphic; 4] = [
        Graphic::Star,
        Graphic::Circle,
        Graphic::Triangle,
        Graphic::Diamond,
    ];
}

/// Everything the silhouette of one product in one view depends on.
pub(super) struct Spec {
    pub(super) category: Category,
    pub(super) gender: Gender,
    pub(super) sleeve: Option<Sleeve>,
    /// The product's neckline; a back view draws the plain back neck instead.
    pub(super) neckline: Option<Neckline>,
    pub(super) length: Option<Length>,
    pub(super) accessory: Option<Accessory>,
    pub(super) back: bool,
    /// The print to draw on the chest, if any (never on a back view).
    pub(super) graphic: Option<Graphic>,
    /// Per-product proportions (about ±6 %), shared by all views of the product.
    pub(super) width: f32,
    pub(super) height: f32,
    pub(super) hat: Rgb,
    pub(super) belt: Rgb,
    pub(super) button: Rgb,
    pub(super) shirt: Rgb,
}

/// The elements of one product view, in drawing order.
pub(super) fn build(s: &Spec) -> Vec<Element> {
    let mut b = Builder::default();
    match s.category {
        Category::Tees => tee(&mut b, s),
        Category::Blouses => blouse(&mut b, s),
        Category::Dresses => dress(&mut b, s),
        Category::Skirts => skirt(&mut b, s),
        Category::Pants => pants(&mut b, s, false),
        Category::Shorts => pants(&mut b, s, true),
        Category::Jackets => jacket(&mut b, s),
        Category::Sweaters => sweater(&mut b, s),
        Category::Rompers => romper(&mut b, s),
    }
    for e in &mut b.elements {
        for p in &mut e.poly {
            *p = (p.0 * s.width, p.1 * s.height);
        }
    }
    b.elements
}

#[derive(Default)]
struct Builder {
    elements: Vec<Element>,
    parts: u8,
}

impl Builder {
    /// Adds a new part; it is drawn over, and seamed against, everything added before.
    fn add(&mut self, poly: Vec<P>, paint: Paint) -> u8 {
        self.parts = self.parts.saturating_add(1);
        self.on(self.parts, poly, paint);
        self.parts
    }

    /// Adds an element to an existing part, so that no seam separates them (prints).
    fn on(&mut self, part: u8, poly: Vec<P>, paint: Paint) {
        self.elements.push(Element { poly, paint, part });
    }
}

/// Upper-body proportions: neck half-width, shoulder point, armpit, waist and hem.
#[derive(Clone, Copy)]
struct Top {
    nw: f32,
    sw: f32,
    sh: f32,
    bw: f32,
    ay: f32,
    ww: f32,
    wy: f32,
    hw: f32,
    hy: f32,
}

/// How a pair of sleeves hangs: direction, length along it, flare at the cuff, and a cuff band
/// (fraction of the length, tone).
struct SleeveStyle {
    dir: P,
    len: f32,
    spread: f32,
    cuff: Option<(f32, Paint)>,
    tone: f32,
}

fn tee(b: &mut Builder, s: &Spec) {
    let t = match s.gender {
        Gender::Women => Top {
            nw: 0.16,
            sw: 0.42,
            sh: 0.08,
            bw: 0.40,
            ay: 0.42,
            ww: 0.37,
            wy: 0.85,
            hw: 0.40,
            hy: 1.35,
        },
        Gender::Men => Top {
            nw: 0.17,
            sw: 0.52,
            sh: 0.09,
            bw: 0.50,
            ay: 0.46,
            ww: 0.50,
            wy: 0.90,
            hw: 0.50,
            hy: 1.45,
        },
    };
    let sleeveless = s.sleeve == Some(Sleeve::Sleeveless);
    if !sleeveless {
        let len = if s.gender == Gender::Men { 0.34 } else { 0.30 };
        sleeves(
            b,
            &t,
            &SleeveStyle {
                dir: (1.0, 0.8),
                len,
                spread: 0.0,
                cuff: None,
                tone: 0.96,
            },
        );
    }
    let mut right = shoulders(&t, sleeveless);
    right.extend([(t.hw, t.hy), (0.0, t.hy)]);
    let body = b.add(mirror(&right), Paint::Fabric(1.0));
    neck(b, s, &t, Some(0.8));
    print(b, s, body, t.ay + 0.1);
    accessory(b, s, t.ww);
}

fn blouse(b: &mut Builder, s: &Spec) {
    let t = Top {
        nw: 0.15,
        sw: 0.40,
        sh: 0.07,
        bw: 0.37,
        ay: 0.40,
        ww: 0.31,
        wy: 0.78,
        hw: 0.54,
        hy: 1.30,
    };
    let sleeveless = s.sleeve == Some(Sleeve::Sleeveless);
    match s.sleeve {
        Some(Sleeve::Short) => sleeves(
            b,
            &t,
            &SleeveStyle {
                dir: (1.0, 0.9),
                len: 0.27,
                spread: 0.05,
                cuff: None,
                tone: 0.96,
            },
        ),
        Some(Sleeve::Long) => sleeves(
            b,
            &t,
            &SleeveStyle {
                dir: (0.4, 0.92),
                len: 1.0,
                spread: 0.06,
                cuff: Some((0.12, Paint::Trim(0.85))),
                tone: 0.96,
            },
        ),
        _ => {}
    }
    let mut upper = shoulders(&t, sleeveless);
    upper.push((0.0, t.wy));
    b.add(mirror(&upper), Paint::Fabric(1.0));
    // The peplum: a flared, rounded hem below a waist seam is the blouse's cue.
    b.add(
        mirror(&[
            (t.ww, t.wy),
            (t.hw, t.hy),
            (t.hw * 0.55, t.hy + 0.07),
            (0.0, t.hy + 0.09),
        ]),
        Paint::Fabric(1.0),
    );
    let top = neck(b, s, &t, None);
    if !s.back {
        // A button placket from the neckline to the hem.
        let (y0, y1) = (top + 0.09, t.hy - 0.06);
        for i in 0..5 {
            let y = y0 + (y1 - y0) * i as f32 / 4.0;
            b.add(ellipse((0.0, y), 0.03, 0.03), Paint::Flat(s.button));
        }
    }
    accessory(b, s, t.ww);
}

fn sweater(b: &mut Builder, s: &Spec) {
    let t = match s.gender {
        Gender::Women => Top {
            nw: 0.16,
            sw: 0.46,
            sh: 0.10,
            bw: 0.47,
            ay: 0.46,
            ww: 0.48,
            wy: 0.95,
            hw: 0.43,
            hy: 1.42,
        },
        Gender::Men => Top {
            nw: 0.17,
            sw: 0.54,
            sh: 0.10,
            bw: 0.55,
            ay: 0.48,
            ww: 0.56,
            wy: 1.00,
            hw: 0.51,
            hy: 1.52,
        },
    };
    let len = if s.gender == Gender::Men { 1.1 } else { 1.0 };
    sleeves(
        b,
        &t,
        &SleeveStyle {
            dir: (0.45, 0.9),
            len,
            spread: 0.0,
            cuff: Some((0.15, Paint::Trim(0.8))),
            tone: 0.96,
        },
    );
    let mut right = shoulders(&t, false);
    right.extend([(t.hw, t.hy), (0.0, t.hy)]);
    let body = b.add(mirror(&right), Paint::Fabric(1.0));
    // Ribbed hem band: the body narrows into it, which reads as a sweater even in silhouette.
    let band = 0.17;
    let top_w = t.hw + (t.ww - t.hw) * band / (t.hy - t.wy);
    b.add(
        vec![
            (-top_w, t.hy - band),
            (top_w, t.hy - band),
            (t.hw, t.hy),
            (-t.hw, t.hy),
        ],
        Paint::Trim(0.8),
    );
    neck(b, s, &t, Some(0.8));
    print(b, s, body, t.ay + 0.12);
    accessory(b, s, t.ww);
}

fn jacket(b: &mut Builder, s: &Spec) {
    let t = match s.gender {
        Gender::Women => Top {
            nw: 0.15,
            sw: 0.46,
            sh: 0.10,
            bw: 0.46,
            ay: 0.46,
            ww: 0.41,
            wy: 0.88,
            hw: 0.47,
            hy: 1.58,
        },
        Gender::Men => Top {
            nw: 0.16,
            sw: 0.56,
            sh: 0.10,
            bw: 0.56,
            ay: 0.50,
            ww: 0.54,
            wy: 0.95,
            hw: 0.56,
            hy: 1.68,
        },
    };
    let len = if s.gender == Gender::Men { 1.15 } else { 1.05 };
    sleeves(
        b,
        &t,
        &SleeveStyle {
            dir: (0.42, 0.9),
            len,
            spread: 0.01,
            cuff: None,
            tone: 0.93,
        },
    );
    let mut right = shoulders(&t, false);
    right.extend([(t.hw, t.hy), (0.0, t.hy)]);
    b.add(mirror(&right), Paint::Fabric(1.0));
    let pocket_x = t.hw / 0.47;
    if s.back {
        b.add(
            vec![
                (-t.nw - 0.05, -0.03),
                (t.nw + 0.05, -0.03),
                (t.nw + 0.06, 0.08),
                (-t.nw - 0.06, 0.08),
            ],
            Paint::Trim(0.8),
        );
        b.add(rect(-0.01, 0.3, 0.01, t.hy), Paint::Inner);
    } else {
        // Open front: the shirt underneath in the V, lapels folded back on either side.
        let v = 0.64;
        b.add(
            vec![(-t.nw, 0.0), (t.nw, 0.0), (0.0, v)],
            Paint::Flat(s.shirt),
        );
        let lapel = [
            (t.nw, 0.0),
            (t.nw + 0.05, -0.03),
            (t.nw + 0.17, 0.30),
            (0.05, v + 0.04),
            (0.0, v),
        ];
        b.add(lapel.to_vec(), Paint::Trim(0.8));
        b.add(flip(&lapel), Paint::Trim(0.8));
        b.add(rect(-0.012, v, 0.012, t.hy), Paint::Inner);
        for y in [0.8, 1.08] {
            b.add(ellipse((0.07, y), 0.032, 0.032), Paint::Flat(s.button));
        }
        let flap = rect(0.17 * pocket_x, 1.1, 0.40 * pocket_x, 1.17);
        b.add(flip(&flap), Paint::Trim(0.82));
        b.add(flap, Paint::Trim(0.82));
    }
}

/// The fitted bodice (with sleeves) that dresses and rompers share, ending at the waist; `waist`
/// is the half-width there.
fn fitted_bodice(b: &mut Builder, s: &Spec, waist: f32) -> Top {
    let t = Top {
        nw: 0.15,
        sw: 0.36,
        sh: 0.07,
        bw: 0.33,
        ay: 0.40,
        ww: waist,
        wy: 0.80,
        hw: waist,
        hy: 0.80,
    };
    bodice_sleeves(b, s, &t);
    let sleeveless = s.sleeve == Some(Sleeve::Sleeveless);
    let mut upper = shoulders(&t, sleeveless);
    upper.push((0.0, t.wy));
    b.add(mirror(&upper), Paint::Fabric(1.0));
    t
}

fn dress(b: &mut Builder, s: &Spec) {
    let t = fitted_bodice(b, s, 0.27);
    let len = lower_length(s.length);
    let hem = t.ww + 0.22 + 0.13 * len;
    b.add(
        mirror(&[
            (t.ww, t.wy),
            (hem, t.wy + len),
            (hem * 0.55, t.wy + len + 0.05),
            (0.0, t.wy + len + 0.06),
        ]),
        Paint::Fabric(1.0),
    );
    neck(b, s, &t, None);
    accessory(b, s, t.ww);
}

fn romper(b: &mut Builder, s: &Spec) {
    let t = fitted_bodice(b, s, 0.28);
    // Shorts joined to the bodice: the crotch notch separates rompers from dresses.
    let y = t.wy;
    b.add(
        vec![
            (t.ww + 0.01, y),
            (t.ww + 0.12, y + 0.32),
            (t.ww + 0.15, y + 0.72),
            (0.03, y + 0.72),
            (0.0, y + 0.5),
            (-0.03, y + 0.72),
            (-t.ww - 0.15, y + 0.72),
            (-t.ww - 0.12, y + 0.32),
            (-t.ww - 0.01, y),
        ],
        Paint::Fabric(1.0),
    );
    b.add(
        rect(-t.ww - 0.02, y - 0.03, t.ww + 0.02, y + 0.05),
        Paint::Trim(0.8),
    );
    neck(b, s, &t, None);
    accessory(b, s, t.ww + 0.01);
}

fn skirt(b: &mut Builder, s: &Spec) {
    let wb = 0.34;
    b.add(rect(-wb, 0.0, wb, 0.11), Paint::Trim(0.82));
    let len = lower_length(s.length) + 0.05;
    // A flared A-line: the hem is much wider than the waistband, unlike shorts' straight legs.
    let hem = wb + 0.2 + 0.14 * len;
    b.add(
        mirror(&[
            (wb, 0.11),
            (hem, 0.11 + len),
            (hem * 0.55, 0.11 + len + 0.05),
            (0.0, 0.11 + len + 0.06),
        ]),
        Paint::Fabric(1.0),
    );
    accessory(b, s, wb);
}

fn pants(b: &mut Builder, s: &Spec, shorts: bool) {
    let wb = if s.gender == Gender::Men { 0.42 } else { 0.37 };
    b.add(rect(-wb, 0.0, wb, 0.1), Paint::Trim(0.82));
    let (len, hip, outer, inner, crotch) = if shorts {
        let len = match s.length {
            Some(Length::ThreePoint) => 0.64,
            _ => 0.92,
        };
        (len, wb + 0.05, wb + 0.09, 0.05, 0.4)
    } else {
        match s.length {
            Some(Length::ThreeQuarter) => (1.55, wb + 0.04, wb - 0.02, 0.05, 0.62),
            _ => (2.1, wb + 0.04, wb - 0.05, 0.05, 0.62),
        }
    };
    let right = [(wb, 0.1), (hip, 0.45), (outer, len), (inner, len)];
    let mut legs = right.to_vec();
    legs.push((0.0, crotch));
    legs.extend(right.iter().rev().map(|&(x, y)| (-x, y)));
    b.add(legs, Paint::Fabric(1.0));
    if shorts {
        // Turned-up hems.
        let cuff = [
            (inner, len - 0.07),
            (outer - 0.006, len - 0.07),
            (outer, len),
            (inner, len),
        ];
        b.add(cuff.to_vec(), Paint::Trim(0.85));
        b.add(flip(&cuff), Paint::Trim(0.85));
    }
    if s.back {
        let pocket = rect(0.09, 0.2, 0.29, 0.38);
        b.add(flip(&pocket), Paint::Trim(0.88));
        b.add(pocket, Paint::Trim(0.88));
    } else {
        b.add(rect(-0.008, 0.1, 0.008, 0.42), Paint::Inner);
        let pocket = [(wb - 0.01, 0.1), (wb - 0.17, 0.1), (wb + 0.015, 0.33)];
        b.add(flip(&pocket), Paint::Trim(0.8));
        b.add(pocket.to_vec(), Paint::Trim(0.8));
    }
    accessory(b, s, wb);
}

/// Sleeves of dresses and rompers, which are slimmer than those of tops.
fn bodice_sleeves(b: &mut Builder, s: &Spec, t: &Top) {
    let style = match s.sleeve {
        Some(Sleeve::Short) => SleeveStyle {
            dir: (1.0, 0.85),
            len: 0.24,
            spread: 0.0,
            cuff: None,
            tone: 0.96,
        },
        Some(Sleeve::Long) => SleeveStyle {
            dir: (0.38, 0.93),
            len: 0.95,
            spread: 0.02,
            cuff: None,
            tone: 0.96,
        },
        _ => return,
    };
    sleeves(b, t, &style);
}

/// The length of a skirt or dress below the waist, in garment units.
fn lower_length(length: Option<Length>) -> f32 {
    match length {
        Some(Length::ThreePoint) => 0.5,
        Some(Length::MediumShort) => 0.85,
        Some(Length::ThreeQuarter) => 1.25,
        Some(Length::Long) | None => 1.7,
    }
}

/// The right half of an upper body from the neck to the waist. Sleeveless tops get straps and a
/// curved armhole instead of a shoulder seam.
fn shoulders(t: &Top, sleeveless: bool) -> Vec<P> {
    if sleeveless {
        let strap = t.nw + 0.11;
        vec![
            (t.nw, 0.0),
            (strap, 0.0),
            (strap + 0.01, t.ay * 0.3),
            (strap + 0.03, t.ay * 0.7),
            (t.bw, t.ay),
            (t.ww, t.wy),
        ]
    } else {
        vec![(t.nw, 0.0), (t.sw, t.sh), (t.bw, t.ay), (t.ww, t.wy)]
    }
}

/// Both sleeves, rooted on the shoulder-to-armpit edge of the body and drawn before it.
fn sleeves(b: &mut Builder, t: &Top, st: &SleeveStyle) {
    let s = (t.sw, t.sh);
    let a = (t.bw, t.ay);
    let d = unit(st.dir);
    let e1 = add(s, scale(d, st.len));
    // Square the cuff off: the armpit side is shorter by how far the shoulder sits along `d`.
    let len2 = (st.len + dot(sub(s, a), d)).max(st.len * 0.3);
    let e2 = add(a, scale(d, len2));
    let mut u = (d.1, -d.0);
    if dot(u, sub(s, a)) < 0.0 {
        u = (-u.0, -u.1);
    }
    let e1 = add(e1, scale(u, st.spread));
    let e2 = sub(e2, scale(u, st.spread));
    let right = [s, e1, e2, a];
    let cuff = st.cuff.map(|(frac, paint)| {
        let p1 = lerp(s, e1, 1.0 - frac);
        let p2 = lerp(a, e2, 1.0 - frac);
        ([p1, e1, e2, p2], paint)
    });
    b.add(flip(&right), Paint::Fabric(st.tone));
    if let Some((c, paint)) = cuff {
        b.add(flip(&c), paint);
    }
    b.add(right.to_vec(), Paint::Fabric(st.tone));
    if let Some((c, paint)) = cuff {
        b.add(c.to_vec(), paint);
    }
}

/// The neck opening (and a band around it for knit tops); returns how far down it reaches.
fn neck(b: &mut Builder, s: &Spec, t: &Top, band: Option<f32>) -> f32 {
    let (shape, depth): (Vec<P>, f32) = if s.back {
        (half_ellipse((0.0, 0.0), t.nw, 0.05), 0.05)
    } else {
        match s.neckline {
            Some(Neckline::Round) => (half_ellipse((0.0, 0.0), t.nw, 0.15), 0.15),
            Some(Neckline::VShape) => (vec![(-t.nw, 0.0), (t.nw, 0.0), (0.0, 0.34)], 0.34),
            Some(Neckline::Lapel) | None => return 0.0,
        }
    };
    if let Some(tone) = band {
        let grow = 0.045;
        let outer: Vec<P> = if s.back || s.neckline == Some(Neckline::Round) {
            half_ellipse((0.0, 0.0), t.nw + grow, depth + grow)
        } else {
            vec![
                (-t.nw - grow, 0.0),
                (t.nw + grow, 0.0),
                (0.0, depth + grow * 2.0),
            ]
        };
        b.add(outer, Paint::Trim(tone));
    }
    b.add(shape, Paint::Inner);
    depth
}

/// The graphic print on the chest, on the body's own part so that it reads as printed.
fn print(b: &mut Builder, s: &Spec, body: u8, y: f32) {
    let Some(g) = s.graphic else { return };
    let r = 0.15;
    let c = (0.0, y + r);
    let poly = match g {
        Graphic::Circle => ellipse(c, r, r),
        Graphic::Triangle => vec![
            (c.0, c.1 - r),
            (c.0 + 0.87 * r, c.1 + 0.5 * r),
            (c.0 - 0.87 * r, c.1 + 0.5 * r),
        ],
        Graphic::Diamond => vec![
            (c.0, c.1 - r),
            (c.0 + 0.7 * r, c.1),
            (c.0, c.1 + r),
            (c.0 - 0.7 * r, c.1),
        ],
        Graphic::Star => STAR
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| {
                let k = if i % 2 == 0 { r } else { r * 0.45 };
                (c.0 + x * k, c.1 + y * k)
            })
            .collect(),
    };
    b.on(body, poly, Paint::Print);
}

/// A hat above the garment or a belt at its waist (`waist` is the half-width there).
fn accessory(b: &mut Builder, s: &Spec, waist: f32) {
    match s.accessory {
        Some(Accessory::Hat) => {
            let cy = -0.17;
            let crown: Vec<P> = (12..=24)
                .map(|k| {
                    let (c, sn) = circle(k);
                    (0.23 * c, cy + 0.25 * sn)
                })
                .collect();
            b.add(crown, Paint::Flat(s.hat));
            b.add(
                rect(-0.225, cy - 0.07, 0.225, cy - 0.015),
                Paint::Flat(shade(s.hat, 0.55)),
            );
            b.add(
                ellipse((0.0, cy), 0.42, 0.065),
                Paint::Flat(shade(s.hat, 0.9)),
            );
        }
        Some(Accessory::Belt) => {
            let y = match s.category {
                Category::Dresses | Category::Rompers => 0.8,
                _ => 0.05,
            };
            let half = waist + 0.025;
            b.add(rect(-half, y - 0.04, half, y + 0.04), Paint::Flat(s.belt));
            b.add(
                rect(-0.055, y - 0.055, 0.055, y + 0.055),
                Paint::Flat([0.86, 0.7, 0.3]),
            );
            b.add(rect(-0.027, y - 0.03, 0.027, y + 0.03), Paint::Flat(s.belt));
        }
        None => {}
    }
}

/// Five-pointed star, outer and inner points alternating, unit radius, first point up.
const STAR: [P; 10] = [
    (0.0, -1.0),
    (0.587_785_3, -0.809_017),
    (0.951_056_5, -0.309_017),
    (0.951_056_5, 0.309_017),
    (0.587_785_3, 0.809_017),
    (0.0, 1.0),
    (-0.587_785_3, 0.809_017),
    (-0.951_056_5, 0.309_017),
    (-0.951_056_5, -0.309_017),
    (-0.587_785_3, -0.809_017),
];

/// sin(k·15°) for k in 0..=6, as literals so that shapes need no libm (bit-identical everywhere).
const SIN15: [f32; 7] = [
    0.0,
    0.258_819_04,
    0.5,
    0.707_106_77,
    0.866_025_4,
    0.965_925_8,
    1.0,
];

/// (cos, sin) of k·15°, any k (y grows downwards, so positive sin is below the centre).
pub(super) fn circle(k: usize) -> (f32, f32) {
    let q = (k / 6) % 4;
    let r = k % 6;
    let (s, c) = (
        SIN15.get(r).copied().unwrap_or(0.0),
        SIN15.get(6 - r).copied().unwrap_or(1.0),
    );
    match q {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

fn ellipse(c: P, rx: f32, ry: f32) -> Vec<P> {
    (0..24)
        .map(|k| {
            let (x, y) = circle(k);
            (c.0 + rx * x, c.1 + ry * y)
        })
        .collect()
}

/// The lower half of an ellipse, closed by its horizontal diameter (necklines).
fn half_ellipse(c: P, rx: f32, ry: f32) -> Vec<P> {
    (0..=12)
        .map(|k| {
            let (x, y) = circle(k);
            (c.0 + rx * x, c.1 + ry * y)
        })
        .collect()
}

fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Vec<P> {
    vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
}

/// A symmetric outline from its right half, given from the top centre round to the bottom centre.
fn mirror(right: &[P]) -> Vec<P> {
    let mut v = right.to_vec();
    v.extend(right.iter().rev().map(|&(x, y)| (-x, y)));
    v
}

fn flip(poly: &[P]) -> Vec<P> {
    poly.iter().map(|&(x, y)| (-x, y)).collect()
}

fn shade(c: Rgb, k: f32) -> Rgb {
    c.map(|v| v * k)
}

fn add(a: P, b: P) -> P {
    (a.0 + b.0, a.1 + b.1)
}

fn sub(a: P, b: P) -> P {
    (a.0 - b.0, a.1 - b.1)
}

fn scale(a: P, k: f32) -> P {
    (a.0 * k, a.1 * k)
}

fn dot(a: P, b: P) -> f32 {
    a.0 * b.0 + a.1 * b.1
}

fn lerp(a: P, b: P, t: f32) -> P {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

fn unit(a: P) -> P {
    let n = dot(a, a).sqrt();
    if n > 0.0 {
        scale(a, 1.0 / n)
    } else {
        (0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_table_is_a_unit_circle() {
        for k in 0..48 {
            let (c, s) = circle(k);
            assert!((c * c + s * s - 1.0).abs() < 1e-6, "k={k}");
        }
        assert_eq!(circle(6), (0.0, 1.0));
        assert_eq!(circle(12), (-1.0, 0.0));
        assert_eq!(circle(18), (0.0, -1.0));
    }
}
