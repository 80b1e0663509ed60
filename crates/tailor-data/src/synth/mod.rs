//! A deterministic synthetic product catalog in the recipe's schema (Marqo/deepfashion-multimodal).
//!
//! Each product is one garment drawn as a flat lay on a light background: a silhouette per
//! category2 (tees, blouses, dresses, skirts, pants, shorts, jackets, sweaters, rompers), a colour
//! from a named palette, a pattern (pure color, striped, lattice, graphic, floral), a fabric hinted
//! by texture (ribs for knitting, twill for denim, sheen for leather, a lighter sheer look for
//! chiffon), sleeve length, neckline, lower-garment length and a hat or belt where they apply, and a
//! small gender marker in the top-left corner (a magenta disc for WOMEN, a blue square for MEN).
//! Captions are templated in DeepFashion's style from exactly the attributes the image shows.
//!
//! Each row also carries a *generic* caption ([`SynthRow::caption`]) for pretraining a base model
//! on a task other than the catalog's: plain sentences about shape, colour, pattern, texture and
//! the corner mark, built from the same drawn attributes but never naming a category1 or
//! category2 value, a garment noun or a gender (see [`GENERIC_CAPTION_BANNED_WORDS`]). A model
//! trained on those captions has seen the pictures but not the catalog's labels.
//!
//! It serves two purposes: the embedded sample catalog (`SynthConfig::sample`), so that every
//! `tailor data` command runs on a fresh clone with no download, and a demo data set whose
//! categories a small vision-language model can learn to name from the picture.
//!
//! Rows are pure functions of (seed, index): row k is rendered without rendering the rows before
//! it, so `row(cfg, k)` equals the k-th item of `generate(cfg)` byte for byte. Product ids group
//! the views of one product (`id_(\d+)` in `item_id`), so a split grouped by product keeps every
//! view of a held-out product out of training.
//!
//! # Example
//!
//! ```
//! use tailor_data::synth::{self, SynthConfig};
//!
//! let cfg = SynthConfig::sample();
//! let first = synth::row(&cfg, 0);
//! assert!(first.item_id.contains("-id_00000000-01_1_front"));
//! assert!(first.text.starts_with("This "));
//! assert_eq!(synth::generate(&cfg).len(), synth::len(&cfg));
//! ```

mod garment;
mod raster;
mod rng;

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use serde::{Deserialize, Serialize};

use garment::{Graphic, Paint, Spec};
use raster::{Canvas, Rgb};
use rng::Rng;

/// The category2 values the generator draws, in DeepFashion's lowercase spelling.
pub const CATEGORY2: [&str; 9] = [
    "tees", "blouses", "dresses", "skirts", "pants", "shorts", "jackets", "sweaters", "rompers",
];

/// The smallest image side rendering accepts; smaller settings are raised to it.
pub const MIN_SIDE: u32 = 16;

/// The largest image side rendering accepts; larger settings are lowered to it.
pub const MAX_SIDE: u32 = 4096;

/// How rows encode their images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Lossless PNG (the sample's format: small for flat drawings, and exact for tests).
    Png,
    /// Baseline JPEG, as in the reference data set.
    Jpeg {
        /// 1..=100; rendering clamps other values into that range.
        quality: u8,
    },
}

/// What to generate. There is deliberately no `Default`: use [`SynthConfig::sample`] or spell
/// every setting out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of distinct products. Categories are assigned in shuffled blocks of nine, so any
    /// multiple of nine is exactly balanced over category2.
    pub products: usize,
    /// Views rendered per product: view 1 is the front, 2 the back, 3 a zoomed-out "full" view and
    /// the rest "additional" front views with jitter. Rendering treats 0 as 1.
    pub views_per_product: usize,
    /// Seed of every random choice; the same seed gives byte-identical rows.
    pub seed: u64,
    /// Image width in pixels; rendering clamps it to [`MIN_SIDE`]..=[`MAX_SIDE`].
    pub width: u32,
    /// Image height in pixels; rendering clamps it to [`MIN_SIDE`]..=[`MAX_SIDE`]. Garments are
    /// drawn in the largest centred 2:3 frame, so other aspect ratios add margins, not distortion.
    pub height: u32,
    /// Image encoding.
    pub format: ImageFormat,
}

impl SynthConfig {
    /// The embedded sample catalog: 63 products (7 per category2) × 4 views = 252 rows of 64×96
    /// PNGs, seed 42. Small enough to render in a fraction of a second on every `tailor data` run.
    pub fn sample() -> SynthConfig {
        SynthConfig {
            products: 63,
            views_per_product: 4,
            seed: 42,
            width: 64,
            height: 96,
            format: ImageFormat::Png,
        }
    }

    /// Checks the settings that rendering would otherwise clamp, so that a command line can reject
    /// them with a message instead.
    pub fn validate(&self) -> Result<(), SynthError> {
        let side = MIN_SIDE..=MAX_SIDE;
        if !side.contains(&self.width) || !side.contains(&self.height) {
            return Err(SynthError::Size {
                width: self.width,
                height: self.height,
            });
        }
        if self.views_per_product == 0 {
            return Err(SynthError::NoViews);
        }
        if let ImageFormat::Jpeg { quality } = self.format
            && !(1..=100).contains(&quality)
        {
            return Err(SynthError::JpegQuality(quality));
        }
        Ok(())
    }
}

/// Settings that [`SynthConfig::validate`] rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynthError {
    /// An image side is outside [`MIN_SIDE`]..=[`MAX_SIDE`].
    #[error("image size {width}x{height} is outside {MIN_SIDE}..={MAX_SIDE} pixels a side")]
    Size {
        /// The requested width.
        width: u32,
        /// The requested height.
        height: u32,
    },
    /// `views_per_product` is 0.
    #[error("views per product must be at least 1")]
    NoViews,
    /// The JPEG quality is outside 1..=100.
    #[error("JPEG quality {0} is outside 1..=100")]
    JpegQuality(u8),
}

/// One catalog row in the recipe's schema, plus what generated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthRow {
    /// The encoded image (PNG or JPEG as configured). Empty only if the encoder failed, which the
    /// clamped sizes rule out; readers then report the row's image as unreadable.
    pub image: Vec<u8>,
    /// Gender: `WOMEN` or `MEN`.
    pub category1: String,
    /// One of [`CATEGORY2`].
    pub category2: String,
    /// A DeepFashion-style caption naming exactly the attributes of [`SynthRow::shown`].
    pub text: String,
    /// A generic caption of the same view: shape, colour, pattern, texture, accessory and corner
    /// mark in plain words, derived only from what is drawn, never naming a category, a garment
    /// noun or a gender (no word of [`GENERIC_CAPTION_BANNED_WORDS`]). Not a catalog column of
    /// the recipe's schema; writers add it as `caption` when asked.
    pub caption: String,
    /// DeepFashion form: `WOMEN-Dresses-id_00000123-01_1_front` (gender, in-shop category,
    /// product id, colour index, view number and name).
    pub item_id: String,
    /// The product index, the number in `id_…`.
    pub product: usize,
    /// Which view of the product this row shows.
    pub view: View,
    /// The product's attributes, identical across its views.
    pub attributes: Attributes,
}

impl SynthRow {
    /// The attributes this view shows, which the caption names: see [`Attributes::seen_from`].
    pub fn shown(&self) -> Attributes {
        self.attributes.seen_from(self.view)
    }
}

/// A product's attributes: each one is drawn, and captions name them in DeepFashion's words
/// (`as_str` of each value; serde uses the same strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    /// The main colour.
    pub colour: Colour,
    /// The pattern printed on the fabric (graphic: one shape on the chest).
    pub pattern: Pattern,
    /// The fabric, hinted by texture.
    pub fabric: Fabric,
    /// Sleeve length; `None` for lower garments.
    pub sleeve: Option<Sleeve>,
    /// Neckline; `None` for lower garments.
    pub neckline: Option<Neckline>,
    /// Length of pants, shorts, skirts and dresses; `None` otherwise.
    pub length: Option<Length>,
    /// A hat above the garment or a belt at its waist, if any.
    pub accessory: Option<Accessory>,
}

impl Attributes {
    /// What a view shows of these attributes. The back of a garment hides the neckline (the back
    /// neck is drawn instead) and a graphic print (the back is plain, so it reads as pure color);
    /// every other attribute is visible from every view.
    pub fn seen_from(&self, view: View) -> Attributes {
        if view != View::Back {
            return *self;
        }
        Attributes {
            pattern: match self.pattern {
                Pattern::Graphic => Pattern::PureColour,
                p => p,
            },
            neckline: None,
            ..*self
        }
    }
}

/// Declares a public attribute enum whose serde names and `as_str` are the caption words.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word(s) captions use for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }
    };
}

vocabulary! {
    /// The named colour palette.
    Colour {
        /// Black.
        Black => "black",
        /// White.
        White => "white",
        /// Mid grey.
        Grey => "grey",
        /// Dark blue.
        Navy => "navy",
        /// Blue.
        Blue => "blue",
        /// Red.
        Red => "red",
        /// Pink.
        Pink => "pink",
        /// Yellow.
        Yellow => "yellow",
        /// Green.
        Green => "green",
        /// Brown.
        Brown => "brown",
        /// Beige.
        Beige => "beige",
        /// Purple.
        Purple => "purple",
    }
}

vocabulary! {
    /// Fabric patterns, as DeepFashion names them.
    Pattern {
        /// A single colour.
        PureColour => "pure color",
        /// Horizontal stripes.
        Striped => "striped",
        /// A check of thin lines.
        Lattice => "lattice",
        /// One printed shape on the chest (front views only).
        Graphic => "graphic",
        /// Small flowers.
        Floral => "floral",
    }
}

vocabulary! {
    /// Fabrics, each with its own texture.
    Fabric {
        /// Plain.
        Cotton => "cotton",
        /// Diagonal twill, blue-ish colours.
        Denim => "denim",
        /// Dark with a sheen.
        Leather => "leather",
        /// Vertical ribs (DeepFashion says "knitting").
        Knitting => "knitting",
        /// Sheer: lighter.
        Chiffon => "chiffon",
    }
}

vocabulary! {
    /// Sleeve lengths of tops, dresses and rompers.
    Sleeve {
        /// Straps and armholes, no sleeve.
        Sleeveless => "sleeveless",
        /// Short sleeves.
        Short => "short-sleeve",
        /// Sleeves to the wrist.
        Long => "long-sleeve",
    }
}

vocabulary! {
    /// Necklines of tops, dresses and rompers.
    Neckline {
        /// A rounded cut.
        Round => "round",
        /// A V cut.
        VShape => "V-shape",
        /// Folded-back lapels (jackets).
        Lapel => "lapel",
    }
}

vocabulary! {
    /// Lengths of pants, shorts, skirts and dresses, as DeepFashion names them.
    Length {
        /// The shortest: hot pants, mini skirts.
        ThreePoint => "three-point",
        /// Above the knee.
        MediumShort => "medium-short",
        /// Below the knee, above the ankle.
        ThreeQuarter => "three-quarter",
        /// To the ankle.
        Long => "long",
    }
}

vocabulary! {
    /// Accessories drawn with the garment.
    Accessory {
        /// A hat above a top, dress or romper.
        Hat => "hat",
        /// A belt with a buckle at the waist.
        Belt => "belt",
    }
}

vocabulary! {
    /// The view of a product, named as in DeepFashion's item ids.
    View {
        /// The front, centred.
        Front => "front",
        /// The back: no neckline, no graphic print, no front details.
        Back => "back",
        /// The front, zoomed out.
        Full => "full",
        /// The front with more jitter.
        Additional => "additional",
    }
}

/// The number of rows `cfg` describes: products × views (a view count of 0 counts as 1).
pub fn len(cfg: &SynthConfig) -> usize {
    cfg.products.saturating_mul(cfg.views_per_product.max(1))
}

/// Renders row `index`: product `index / views`, view `index % views`. Deterministic in (seed,
/// index) and independent of other rows; indices past [`len`] still give well-formed rows of
/// further products. Out-of-range settings are clamped (see [`SynthConfig::validate`]).
pub fn row(cfg: &SynthConfig, index: usize) -> SynthRow {
    let views = cfg.views_per_product.max(1);
    let product = make_product(cfg.seed, index / views);
    let number = index % views;
    let view = match number {
        0 => View::Front,
        1 => View::Back,
        2 => View::Full,
        _ => View::Additional,
    };
    let width = cfg.width.clamp(MIN_SIDE, MAX_SIDE);
    let height = cfg.height.clamp(MIN_SIDE, MAX_SIDE);
    let mut view_rng = Rng::keyed(cfg.seed, &[DOMAIN_VIEW, product.id as u64, number as u64]);
    let rgb = render(&product, view, width, height, &mut view_rng);
    let image = encode(&rgb, width, height, cfg.format);
    let shown = product.attributes.seen_from(view);
    SynthRow {
        image,
        category1: product.gender.as_str().to_string(),
        category2: product.category.as_str().to_string(),
        text: caption(product.category, product.gender, &shown),
        caption: generic_caption(product.category, product.gender, view, &shown),
        item_id: format!(
            "{}-{}-id_{:08}-01_{}_{}",
            product.gender.as_str(),
            product.category.shop(product.gender),
            product.id,
            number + 1,
            view.as_str(),
        ),
        product: product.id,
        view,
        attributes: product.attributes,
    }
}

/// All rows in order, rendered lazily one at a time. The iterator owns a copy of `cfg`.
pub fn generate(cfg: &SynthConfig) -> impl ExactSizeIterator<Item = SynthRow> + use<> {
    let cfg = cfg.clone();
    (0..len(&cfg)).map(move |index| row(&cfg, index))
}

// ---------------------------------------------------------------------------------------------
// Products: category, gender and attributes.

/// Domain tags keep the random streams of categories, products and views independent.
const DOMAIN_BLOCK: u64 = 1;
const DOMAIN_PRODUCT: u64 = 2;
const DOMAIN_VIEW: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Tees,
    Blouses,
    Dresses,
    Skirts,
    Pants,
    Shorts,
    Jackets,
    Sweaters,
    Rompers,
}

impl Category {
    const ALL: [Category; 9] = [
        Category::Tees,
        Category::Blouses,
        Category::Dresses,
        Category::Skirts,
        Category::Pants,
        Category::Shorts,
        Category::Jackets,
        Category::Sweaters,
        Category::Rompers,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Category::Tees => "tees",
            Category::Blouses => "blouses",
            Category::Dresses => "dresses",
            Category::Skirts => "skirts",
            Category::Pants => "pants",
            Category::Shorts => "shorts",
            Category::Jackets => "jackets",
            Category::Sweaters => "sweaters",
            Category::Rompers => "rompers",
        }
    }

    /// DeepFashion's in-shop category, the second field of its item ids.
    fn shop(self, gender: Gender) -> &'static str {
        match (self, gender) {
            (Category::Tees, _) => "Tees_Tanks",
            (Category::Blouses, _) => "Blouses_Shirts",
            (Category::Dresses, _) => "Dresses",
            (Category::Skirts, _) => "Skirts",
            (Category::Pants, _) => "Pants",
            (Category::Shorts, _) => "Shorts",
            (Category::Jackets, Gender::Women) => "Jackets_Coats",
            (Category::Jackets, Gender::Men) => "Jackets_Vests",
            (Category::Sweaters, _) => "Sweaters",
            (Category::Rompers, _) => "Rompers_Jumpsuits",
        }
    }

    /// The categories DeepFashion's MEN section has; the others are women's only.
    fn for_men(self) -> bool {
        matches!(
            self,
            Category::Tees
                | Category::Pants
                | Category::Shorts
                | Category::Jackets
                | Category::Sweaters
        )
    }

    /// Fabrics chosen per category. Knitting is kept to sweaters and dresses so that ribbed
    /// texture stays a sweater cue rather than a confusion between tops.
    fn fabrics(self) -> &'static [Fabric] {
        use Fabric::*;
        match self {
            Category::Tees => &[Cotton],
            Category::Blouses => &[Chiffon, Cotton],
            Category::Dresses => &[Cotton, Chiffon, Knitting],
            Category::Skirts => &[Cotton, Denim, Leather, Chiffon],
            Category::Pants => &[Cotton, Denim, Leather],
            Category::Shorts => &[Cotton, Denim],
            Category::Jackets => &[Cotton, Denim, Leather],
            Category::Sweaters => &[Knitting],
            Category::Rompers => &[Cotton, Chiffon, Denim],
        }
    }

    /// Patterns per category (denim and leather are always plain). A graphic print needs a chest,
    /// so only tees and sweaters get one.
    fn patterns(self) -> &'static [Pattern] {
        use Pattern::*;
        match self {
            Category::Tees => &[PureColour, Striped, Graphic, Floral],
            Category::Blouses | Category::Dresses | Category::Skirts | Category::Shorts => {
                &[PureColour, Striped, Lattice, Floral]
            }
            Category::Pants => &[PureColour, Striped, Lattice],
            Category::Jackets => &[PureColour, Lattice],
            Category::Sweaters => &[PureColour, Striped, Graphic, Lattice],
            Category::Rompers => &[PureColour, Striped, Floral],
        }
    }

    /// Sleeve lengths per category; sweaters and jackets always have long sleeves, which is part
    /// of what sets them apart from tees.
    fn sleeves(self) -> &'static [Sleeve] {
        use Sleeve::*;
        match self {
            Category::Tees | Category::Rompers => &[Sleeveless, Short],
            Category::Blouses | Category::Dresses => &[Sleeveless, Short, Long],
            Category::Jackets | Category::Sweaters => &[Long],
            Category::Skirts | Category::Pants | Category::Shorts => &[],
        }
    }

    fn necklines(self) -> &'static [Neckline] {
        use Neckline::*;
        match self {
            Category::Tees
            | Category::Blouses
            | Category::Dresses
            | Category::Sweaters
            | Category::Rompers => &[Round, VShape],
            Category::Jackets => &[Lapel],
            Category::Skirts | Category::Pants | Category::Shorts => &[],
        }
    }

    /// Lengths per category; pants and shorts do not overlap, so length never contradicts the
    /// category.
    fn lengths(self) -> &'static [Length] {
        use Length::*;
        match self {
            Category::Pants => &[ThreeQuarter, Long],
            Category::Shorts => &[ThreePoint, MediumShort],
            Category::Skirts => &[ThreePoint, MediumShort, ThreeQuarter, Long],
            // A three-point dress with long sleeves reads as a coat; dresses stay longer.
            Category::Dresses => &[MediumShort, ThreeQuarter, Long],
            _ => &[],
        }
    }

    fn accessories(self) -> &'static [Accessory] {
        use Accessory::*;
        match self {
            Category::Tees | Category::Blouses | Category::Sweaters => &[Hat],
            Category::Dresses | Category::Rompers => &[Hat, Belt],
            Category::Skirts | Category::Pants | Category::Shorts => &[Belt],
            Category::Jackets => &[],
        }
    }

    /// The caption's noun: tees are "T-shirt"s, or "tank top"s without sleeves.
    fn noun(self, sleeve: Option<Sleeve>) -> &'static str {
        match self {
            Category::Tees if sleeve == Some(Sleeve::Sleeveless) => "tank top",
            Category::Tees => "T-shirt",
            Category::Blouses => "blouse",
            Category::Dresses => "dress",
            Category::Skirts => "skirt",
            Category::Pants => "pants",
            Category::Shorts => "shorts",
            Category::Jackets => "jacket",
            Category::Sweaters => "sweater",
            Category::Rompers => "romper",
        }
    }

    fn plural(self) -> bool {
        matches!(self, Category::Pants | Category::Shorts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gender {
    Women,
    Men,
}

impl Gender {
    fn as_str(self) -> &'static str {
        match self {
            Gender::Women => "WOMEN",
            Gender::Men => "MEN",
        }
    }
}

/// A product: its category and attributes plus the drawing details that captions do not name
/// (second colour, hat and belt colours, print shape, proportions).
struct Product {
    id: usize,
    category: Category,
    gender: Gender,
    attributes: Attributes,
    second: Colour,
    hat: Colour,
    belt: Rgb,
    graphic: Graphic,
    width: f32,
    height: f32,
}

/// The category of product `id`: blocks of nine consecutive products hold each category once, in
/// an order shuffled per block, so classes stay balanced without a visible period.
fn category_of(seed: u64, id: usize) -> Category {
    let n = Category::ALL.len();
    let mut order = Category::ALL;
    let mut r = Rng::keyed(seed, &[DOMAIN_BLOCK, (id / n) as u64]);
    for i in (1..n).rev() {
        order.swap(i, r.below(i + 1));
    }
    order[id % n]
}

fn make_product(seed: u64, id: usize) -> Product {
    let category = category_of(seed, id);
    let mut r = Rng::keyed(seed, &[DOMAIN_PRODUCT, id as u64]);
    let gender = if category.for_men() && r.chance(0.4) {
        Gender::Men
    } else {
        Gender::Women
    };
    let fabric = r.pick(category.fabrics(), Fabric::Cotton);
    let colour = r.pick(fabric.colours(), Colour::Black);
    let pattern = match fabric {
        Fabric::Denim | Fabric::Leather => Pattern::PureColour,
        _ => r.pick(category.patterns(), Pattern::PureColour),
    };
    let sleeve = r.pick_some(category.sleeves());
    let neckline = r.pick_some(category.necklines());
    let length = r.pick_some(category.lengths());
    let accessory = if r.chance(0.35) {
        r.pick_some(category.accessories())
    } else {
        None
    };
    // The pattern's second colour must stand out from the main one, or stripes vanish.
    let lum = luminance(colour.rgb());
    let mut second = if lum > 0.5 {
        Colour::Navy
    } else {
        Colour::White
    };
    for _ in 0..8 {
        let c = r.pick(Colour::ALL, second);
        if (luminance(c.rgb()) - lum).abs() > 0.3 {
            second = c;
            break;
        }
    }
    let mut hat = r.pick(Colour::ALL, Colour::Beige);
    if hat == colour {
        hat = second;
    }
    let belt = r.pick(
        &[[0.32, 0.2, 0.12], [0.1, 0.1, 0.1], [0.62, 0.45, 0.28]],
        [0.1; 3],
    );
    Product {
        id,
        category,
        gender,
        attributes: Attributes {
            colour,
            pattern,
            fabric,
            sleeve,
            neckline,
            length,
            accessory,
        },
        second,
        hat,
        belt,
        graphic: r.pick(&Graphic::ALL, Graphic::Star),
        width: r.range(0.94, 1.06),
        height: r.range(0.95, 1.05),
    }
}

impl Colour {
    fn rgb(self) -> Rgb {
        match self {
            Colour::Black => [0.13, 0.13, 0.14],
            Colour::White => [0.98, 0.98, 0.97],
            Colour::Grey => [0.55, 0.56, 0.58],
            Colour::Navy => [0.13, 0.18, 0.4],
            Colour::Blue => [0.2, 0.42, 0.8],
            Colour::Red => [0.82, 0.14, 0.14],
            Colour::Pink => [0.95, 0.58, 0.72],
            Colour::Yellow => [0.96, 0.82, 0.22],
            Colour::Green => [0.18, 0.55, 0.28],
            Colour::Brown => [0.48, 0.3, 0.17],
            Colour::Beige => [0.86, 0.77, 0.6],
            Colour::Purple => [0.5, 0.27, 0.63],
        }
    }
}

impl Fabric {
    /// Colours a fabric comes in: denim is blue-ish and leather dark, as in real catalogs.
    fn colours(self) -> &'static [Colour] {
        use Colour::*;
        match self {
            Fabric::Denim => &[Blue, Navy, Black, Grey],
            Fabric::Leather => &[Black, Brown, Red],
            _ => Colour::ALL,
        }
    }
}

fn luminance(c: Rgb) -> f32 {
    0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]
}

// ---------------------------------------------------------------------------------------------
// Captions.

/// DeepFashion-style caption (2–5 sentences) naming exactly the attributes in `shown`:
///
/// 1. "This {female|male} wears a {sleeve} {colour} {noun} with {pattern} patterns."
/// 2. "The {noun} is with {fabric} fabric."
/// 3. "It has a {neckline} neckline." (when shown)
/// 4. "The {noun} this {female|male} wears is of {length} length." (when it has one)
/// 5. "This {female|male} wears a hat." or "There is a belt on {her|his} waist."
fn caption(category: Category, gender: Gender, shown: &Attributes) -> String {
    let (who, whose) = match gender {
        Gender::Women => ("female", "her"),
        Gender::Men => ("male", "his"),
    };
    let noun = category.noun(shown.sleeve);
    let (article, is) = if category.plural() {
        ("", "are")
    } else {
        ("a ", "is")
    };
    let sleeve = shown
        .sleeve
        .map(|s| format!("{} ", s.as_str()))
        .unwrap_or_default();
    let mut text = format!(
        "This {who} wears {article}{sleeve}{} {noun} with {} patterns. The {noun} {is} with {} fabric.",
        shown.colour.as_str(),
        shown.pattern.as_str(),
        shown.fabric.as_str(),
    );
    if let Some(n) = shown.neckline {
        text.push_str(&format!(" It has a {} neckline.", n.as_str()));
    }
    if let Some(l) = shown.length {
        // "is of" even for pants: the reference captions say so.
        text.push_str(&format!(
            " The {noun} this {who} wears is of {} length.",
            l.as_str()
        ));
    }
    match shown.accessory {
        Some(Accessory::Hat) => text.push_str(&format!(" This {who} wears a hat.")),
        Some(Accessory::Belt) => text.push_str(&format!(" There is a belt on {whose} waist.")),
        None => {}
    }
    text
}

/// Words a generic caption never contains (compared case-insensitively, word by word, after
/// splitting on anything but letters and hyphens): every category1 and category2 value, the
/// DeepFashion caption nouns and in-shop names, and gender words.
pub const GENERIC_CAPTION_BANNED_WORDS: &[&str] = &[
    // category1 and gender words
    "women",
    "men",
    "woman",
    "man",
    "female",
    "male",
    "lady",
    "gentleman",
    "her",
    "his",
    "she",
    "he",
    // category2 values and their singular nouns
    "tees",
    "tee",
    "blouses",
    "blouse",
    "dresses",
    "dress",
    "skirts",
    "skirt",
    "pants",
    "shorts",
    "jackets",
    "jacket",
    "sweaters",
    "sweater",
    "rompers",
    "romper",
    // the DeepFashion caption nouns and in-shop names
    "t-shirt",
    "shirt",
    "shirts",
    "tank",
    "tanks",
    "top",
    "tops",
    "coat",
    "coats",
    "vest",
    "vests",
    "jumpsuit",
    "jumpsuits",
    "trousers",
    "jeans",
];

/// How a silhouette covers the body, in words shared by several categories: the upper body only
/// (tees, blouses, jackets, sweaters), the lower body in one tube or in two legs (skirts; pants
/// and shorts), or one piece from the shoulders down, in one tube or in two legs (dresses;
/// rompers).
fn coverage(category: Category) -> &'static str {
    match category {
        Category::Tees | Category::Blouses | Category::Jackets | Category::Sweaters => {
            "covering the upper body"
        }
        Category::Skirts => "covering the lower body in one tube",
        Category::Pants | Category::Shorts => "covering the lower body in two legs",
        Category::Dresses => "in one piece from the shoulders down, in one tube",
        Category::Rompers => "in one piece from the shoulders down, in two legs",
    }
}

/// The construction details the silhouette of `category` draws in `view` (see `garment`):
/// seams, bands, openings, buttons and pockets, named as parts, never as the garment they make
/// up. Several categories share each phrase (a waist seam with a flare below it: blouses and
/// dresses; a waistband with pockets: pants and shorts), and the details the back view does not
/// draw (buttons, the open front, front pockets) are not mentioned there.
fn construction(category: Category, view: View) -> &'static str {
    let back = view == View::Back;
    match category {
        Category::Tees => "It hangs straight down to a plain hem, with a band around the neck.",
        Category::Blouses if back => "It is fitted at the waist and flares out below a seam there.",
        Category::Blouses => {
            "It is fitted at the waist and flares out below a seam there, with a row of buttons \
             down the front."
        }
        Category::Dresses => "It is fitted at the waist and flares out below a seam there.",
        Category::Skirts => "It flares out from a waistband down to the hem.",
        Category::Pants if back => "It has a waistband and two patch pockets.",
        Category::Pants => "It has a waistband, a fly and slanted pockets.",
        Category::Shorts if back => "It has a waistband, two patch pockets and turned-up hems.",
        Category::Shorts => "It has a waistband, a fly, slanted pockets and turned-up hems.",
        Category::Jackets if back => "It has a collar band and a seam down the middle.",
        Category::Jackets => {
            "It is open down the front over a light layer, with folded-back lapels, two buttons \
             and pocket flaps."
        }
        Category::Sweaters => {
            "It has ribbed bands at the hem and the cuffs, and a band around the neck."
        }
        Category::Rompers => "It is fitted at the waist, with a band there.",
    }
}

/// A generic caption (4–8 short sentences) of what `shown` draws in `view`, naming no category
/// and no gender. Attribute values use DeepFashion's words (`as_str`), so a model pretrained on
/// these captions knows the attribute vocabulary of the catalog's descriptions, but not its
/// category nouns, its labels or its gender words:
///
/// 1. "A {colour} piece of clothing {coverage}, with {pattern} patterns."
/// 2. The construction details the view draws ([`construction`]).
/// 3. "It is {sleeveless|short-sleeve|long-sleeve}." (tops, dresses, rompers)
/// 4. "It has a {round|V-shape|lapel} neckline." (when shown)
/// 5. "It is of {three-point|medium-short|three-quarter|long} length." (when it has one)
/// 6. "The fabric is {cotton|denim|leather|knitting|chiffon}."
/// 7. "There is a hat above it." / "There is a belt at the waist."
/// 8. "A small {magenta dot|blue square} is in the corner." (the corner mark)
///
/// Every clause is derived from what is drawn in the view: the attributes, the silhouette's
/// coverage and its construction details (words shared by several categories);
/// [`GENERIC_CAPTION_BANNED_WORDS`] lists what it never says.
fn generic_caption(category: Category, gender: Gender, view: View, shown: &Attributes) -> String {
    let mut text = format!(
        "A {} piece of clothing {}, with {} patterns. {}",
        shown.colour.as_str(),
        coverage(category),
        shown.pattern.as_str(),
        construction(category, view),
    );
    if let Some(s) = shown.sleeve {
        text.push_str(&format!(" It is {}.", s.as_str()));
    }
    if let Some(n) = shown.neckline {
        text.push_str(&format!(" It has a {} neckline.", n.as_str()));
    }
    if let Some(l) = shown.length {
        text.push_str(&format!(" It is of {} length.", l.as_str()));
    }
    text.push_str(&format!(" The fabric is {}.", shown.fabric.as_str()));
    match shown.accessory {
        Some(Accessory::Hat) => text.push_str(" There is a hat above it."),
        Some(Accessory::Belt) => text.push_str(" There is a belt at the waist."),
        None => {}
    }
    text.push_str(match gender {
        Gender::Women => " A small magenta dot is in the corner.",
        Gender::Men => " A small blue square is in the corner.",
    });
    text
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Supersampling factor: shapes are filled at twice the size and box-filtered, which smooths
/// edges at almost no cost for images this small.
const SS: usize = 2;

/// Renders one view to 8-bit RGB, `width` × `height`, row-major.
fn render(p: &Product, view: View, width: u32, height: u32, r: &mut Rng) -> Vec<u8> {
    let (w, h) = (width as usize * SS, height as usize * SS);
    // The largest centred 2:3 frame; one frame unit is half its width (the frame is 2 × 3 units).
    let frame_w = (w as f32).min(h as f32 * 2.0 / 3.0);
    let unit = frame_w / 2.0;
    let (ox, oy) = ((w as f32 - frame_w) / 2.0, (h as f32 - frame_w * 1.5) / 2.0);

    let (zoom, jitter) = match view {
        View::Front | View::Back => (1.0, 0.04),
        View::Full => (0.82, 0.04),
        View::Additional => (1.0, 0.08),
    };
    let scale = zoom * r.range(0.92, 1.08);
    let (dx, dy) = (r.range(-jitter, jitter), r.range(-jitter, jitter));
    let tint = [
        r.range(-0.025, 0.025),
        r.range(-0.025, 0.025),
        r.range(-0.025, 0.025),
    ];

    let a = &p.attributes;
    let colour = a.colour.rgb();
    let spec = Spec {
        category: p.category,
        gender: p.gender,
        sleeve: a.sleeve,
        neckline: a.neckline,
        length: a.length,
        accessory: a.accessory,
        back: view == View::Back,
        graphic: (a.pattern == Pattern::Graphic && view != View::Back).then_some(p.graphic),
        width: p.width,
        height: p.height,
        hat: p.hat.rgb(),
        belt: p.belt,
        button: if luminance(colour) < 0.5 {
            [0.95, 0.93, 0.88]
        } else {
            [0.15, 0.15, 0.18]
        },
        shirt: if a.colour == Colour::White {
            [0.7, 0.72, 0.75]
        } else {
            [0.96, 0.96, 0.95]
        },
    };
    let elements = garment::build(&spec);

    // Centre the garment's bounding box in the frame, shrinking it only if it would not fit, so
    // that sizes (a mini skirt against a long one) survive.
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &(x, y) in elements.iter().flat_map(|e| e.poly.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let fit = (1.7 / (x1 - x0).max(1e-3))
        .min(2.55 / (y1 - y0).max(1e-3))
        .min(1.0);
    let k = unit * fit * scale;
    let (bx, by) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let (cx, cy) = (ox + (1.0 + dx) * unit, oy + (1.5 + dy) * unit);

    let bg = [0.93 + tint[0], 0.925 + tint[1], 0.91 + tint[2]];
    let mut canvas = Canvas::new(w, h, |_, y| {
        // A faint studio sweep: slightly darker towards the bottom.
        let g = 1.0 - 0.05 * y as f32 / h as f32;
        bg.map(|c| c * g)
    });
    let look = Look {
        colour,
        second: p.second.rgb(),
        centre: if p.second == Colour::Yellow {
            [0.98, 0.98, 0.97]
        } else {
            [0.96, 0.82, 0.22]
        },
        pattern: a.pattern,
        fabric: a.fabric,
        px: SS as f32 / k,
    };
    for e in &elements {
        let poly: Vec<(f32, f32)> = e
            .poly
            .iter()
            .map(|&(x, y)| (cx + (x - bx) * k, cy + (y - by) * k))
            .collect();
        let paint = e.paint;
        canvas.fill(&poly, e.part, &mut |px, py| {
            look.paint(paint, (px - cx) / k + bx, (py - cy) / k + by)
        });
    }

    // The gender marker sits in the frame's corner, outside the view jitter: a catalog label.
    let (mx, my, mr) = (ox + 0.17 * unit, oy + 0.17 * unit, 0.09 * unit);
    let (marker, marker_rgb): (Vec<(f32, f32)>, Rgb) = match p.gender {
        Gender::Women => (
            (0..24)
                .map(|i| {
                    let (c, s) = garment::circle(i);
                    (mx + mr * c, my + mr * s)
                })
                .collect(),
            [0.85, 0.22, 0.55],
        ),
        Gender::Men => (
            vec![
                (mx - mr, my - mr),
                (mx + mr, my - mr),
                (mx + mr, my + mr),
                (mx - mr, my + mr),
            ],
            [0.15, 0.35, 0.7],
        ),
    };
    canvas.fill(&marker, u8::MAX, &mut |_, _| marker_rgb);
    canvas.outline(0.45);
    canvas.downsample(SS)
}

/// Colours and textures of one product, evaluated per pixel in garment units.
struct Look {
    colour: Rgb,
    second: Rgb,
    /// The centre of floral dots.
    centre: Rgb,
    pattern: Pattern,
    fabric: Fabric,
    /// Garment units per output pixel: pattern and texture periods never go below a few pixels,
    /// or they would alias into noise in small images.
    px: f32,
}

impl Look {
    fn paint(&self, paint: Paint, x: f32, y: f32) -> Rgb {
        match paint {
            Paint::Fabric(tone) => self.fabric(x, y, tone, true),
            Paint::Trim(tone) => self.fabric(x, y, tone, false),
            // The inside shows darker, except in dark garments where it must show at all.
            Paint::Inner if luminance(self.colour) < 0.25 => {
                self.colour.map(|c| c + (1.0 - c) * 0.35)
            }
            Paint::Inner => self.colour.map(|c| c * 0.55),
            Paint::Print => self.second,
            Paint::Flat(c) => c,
        }
    }

    fn fabric(&self, x: f32, y: f32, tone: f32, patterned: bool) -> Rgb {
        let mut c = self.colour;
        if patterned {
            match self.pattern {
                Pattern::Striped => {
                    let p = (0.17f32).max(5.0 * self.px);
                    if frac(y / p) < 0.4 {
                        c = self.second;
                    }
                }
                Pattern::Lattice => {
                    let p = (0.21f32).max(6.0 * self.px);
                    let line = (0.035f32).max(1.1 * self.px) / p;
                    if frac(x / p) < line || frac(y / p) < line {
                        c = self.second;
                    }
                }
                Pattern::Floral => {
                    let p = (0.2f32).max(6.0 * self.px);
                    let row = (y / p).floor();
                    let shift = if row.rem_euclid(2.0) >= 1.0 { 0.5 } else { 0.0 };
                    let fx = frac(x / p + shift) - 0.5;
                    let fy = frac(y / p) - 0.5;
                    let d2 = fx * fx + fy * fy;
                    let r = (0.24f32).max(1.3 * self.px / p);
                    if d2 < r * r * 0.2 {
                        c = self.centre;
                    } else if d2 < r * r {
                        c = self.second;
                    }
                }
                Pattern::PureColour | Pattern::Graphic => {}
            }
        }
        let mut m = tone;
        match self.fabric {
            Fabric::Knitting => {
                let p = (0.07f32).max(3.0 * self.px);
                if frac(x / p) < 0.5 {
                    // Bands and cuffs are rib-knit: stronger ribs than the body.
                    m *= if patterned { 0.9 } else { 0.75 };
                }
            }
            Fabric::Denim => {
                let p = (0.06f32).max(3.0 * self.px);
                if frac((x + y) / p) < 0.35 {
                    m *= 0.85;
                }
            }
            Fabric::Leather | Fabric::Chiffon | Fabric::Cotton => {}
        }
        let mut out = c.map(|v| v * m);
        match self.fabric {
            Fabric::Leather => {
                // A vertical sheen on either side of the centre line.
                let d = (x.abs() - 0.2) / 0.08;
                if d.abs() < 1.0 {
                    let h = (1.0 - d * d) * (1.0 - d * d) * 0.35;
                    out = out.map(|v| v + (1.0 - v) * h);
                }
            }
            Fabric::Chiffon => out = out.map(|v| v + (1.0 - v) * 0.28),
            _ => {}
        }
        out
    }
}

fn frac(v: f32) -> f32 {
    v - v.floor()
}

/// Encodes 8-bit RGB. The sizes are clamped before rendering, so the encoders cannot fail on
/// them; should one fail anyway the row gets an empty image, which readers report as unreadable,
/// rather than aborting the whole catalog.
fn encode(rgb: &[u8], width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    let done = match format {
        ImageFormat::Png => {
            PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive)
                .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        }
        ImageFormat::Jpeg { quality } => JpegEncoder::new_with_quality(
            &mut out,
            quality.clamp(1, 100),
        )
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8),
    };
    if done.is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    fn cfg(products: usize, views: usize, width: u32, height: u32) -> SynthConfig {
        SynthConfig {
            products,
            views_per_product: views,
            seed: 7,
            width,
            height,
            format: ImageFormat::Png,
        }
    }

    #[test]
    fn same_seed_gives_identical_rows_and_row_k_is_the_kth() {
        let cfg = SynthConfig::sample();
        let a: Vec<SynthRow> = generate(&cfg).collect();
        let b: Vec<SynthRow> = generate(&cfg).collect();
        assert_eq!(a.len(), len(&cfg));
        assert_eq!(a, b);
        for k in [0, 1, 2, 3, 17, 100, a.len() - 1] {
            assert_eq!(row(&cfg, k), a[k], "row {k}");
        }
        let other = SynthConfig { seed: 43, ..cfg };
        let c: Vec<SynthRow> = generate(&other).take(8).collect();
        assert!(c.iter().zip(&a).any(|(x, y)| x.image != y.image));
    }

    #[test]
    fn images_decode_with_the_configured_size_and_format() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg { quality: 85 }] {
            for (w, h) in [(64, 96), (50, 50), (120, 90), (17, 31)] {
                let cfg = SynthConfig {
                    format,
                    ..cfg(9, 4, w, h)
                };
                for r in generate(&cfg) {
                    let guessed = image::guess_format(&r.image).ok();
                    let expected = match format {
                        ImageFormat::Png => image::ImageFormat::Png,
                        ImageFormat::Jpeg { .. } => image::ImageFormat::Jpeg,
                    };
                    assert_eq!(guessed, Some(expected));
                    let img = image::load_from_memory(&r.image).expect("decodes");
                    assert_eq!((img.width(), img.height()), (w, h), "{}", r.item_id);
                }
            }
        }
    }

    #[test]
    fn every_category_appears_and_the_sample_is_balanced() {
        let cfg = SynthConfig::sample();
        let mut per_category: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        let mut genders = BTreeSet::new();
        for r in generate(&cfg) {
            assert!(CATEGORY2.contains(&r.category2.as_str()), "{}", r.category2);
            assert!(r.category1 == "WOMEN" || r.category1 == "MEN");
            if r.category1 == "MEN" {
                assert!(
                    ["tees", "pants", "shorts", "jackets", "sweaters"]
                        .contains(&r.category2.as_str()),
                    "{}",
                    r.item_id
                );
            }
            genders.insert(r.category1.clone());
            per_category
                .entry(r.category2)
                .or_default()
                .insert(r.product);
        }
        assert_eq!(per_category.len(), CATEGORY2.len());
        for (c, products) in &per_category {
            assert_eq!(products.len(), 7, "{c}");
        }
        assert_eq!(genders.len(), 2);
        // Any product count is balanced to within one product per category.
        let counts: Vec<usize> = {
            let mut m = BTreeMap::new();
            for id in 0..100 {
                *m.entry(category_of(3, id).as_str()).or_insert(0) += 1;
            }
            m.into_values().collect()
        };
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{counts:?}");
    }

    #[test]
    fn item_ids_name_the_product_and_its_views_share_everything_else() {
        let cfg = cfg(30, 5, 32, 48);
        let full = Regex::new(
            r"^(WOMEN|MEN)-([A-Z][A-Za-z_]+)-id_(\d{8})-01_(\d+)_(front|back|full|additional)$",
        )
        .expect("regex");
        let group = Regex::new(r"id_(\d+)").expect("regex");
        let mut products: BTreeMap<usize, Vec<SynthRow>> = BTreeMap::new();
        for r in generate(&cfg) {
            let caps = full.captures(&r.item_id).expect("DeepFashion item id");
            assert_eq!(&caps[1], r.category1);
            assert_eq!(&caps[5], r.view.as_str());
            let id: usize = group.captures(&r.item_id).expect("id")[1]
                .parse()
                .expect("number");
            assert_eq!(id, r.product);
            products.entry(id).or_default().push(r);
        }
        assert_eq!(products.len(), 30);
        for rows in products.values() {
            assert_eq!(rows.len(), 5);
            let views: Vec<&str> = rows.iter().map(|r| r.view.as_str()).collect();
            assert_eq!(views, ["front", "back", "full", "additional", "additional"]);
            for r in rows {
                assert_eq!(r.category1, rows[0].category1);
                assert_eq!(r.category2, rows[0].category2);
                assert_eq!(r.attributes, rows[0].attributes);
            }
            // Views differ in their images (jitter, tint), not only in name.
            assert_ne!(rows[0].image, rows[3].image);
        }
    }

    /// Attribute mentions parsed back from a caption, as (family, value) pairs.
    fn mentions(text: &str) -> BTreeSet<(&'static str, &'static str)> {
        let tokens: Vec<&str> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .filter(|t| !t.is_empty())
            .collect();
        let mut found = BTreeSet::new();
        let mut family = |name: &'static str, words: Vec<&'static str>| {
            for w in words {
                let hit = if w.contains(' ') {
                    text.contains(w)
                } else {
                    tokens.contains(&w)
                };
                if hit {
                    found.insert((name, w));
                }
            }
        };
        family("colour", Colour::ALL.iter().map(|v| v.as_str()).collect());
        family("pattern", Pattern::ALL.iter().map(|v| v.as_str()).collect());
        family("fabric", Fabric::ALL.iter().map(|v| v.as_str()).collect());
        family("sleeve", Sleeve::ALL.iter().map(|v| v.as_str()).collect());
        family(
            "neckline",
            Neckline::ALL.iter().map(|v| v.as_str()).collect(),
        );
        family("length", Length::ALL.iter().map(|v| v.as_str()).collect());
        family(
            "accessory",
            Accessory::ALL.iter().map(|v| v.as_str()).collect(),
        );
        found
    }

    fn expected(a: &Attributes) -> BTreeSet<(&'static str, &'static str)> {
        let mut e = BTreeSet::from([
            ("colour", a.colour.as_str()),
            ("pattern", a.pattern.as_str()),
            ("fabric", a.fabric.as_str()),
        ]);
        e.extend(a.sleeve.map(|v| ("sleeve", v.as_str())));
        e.extend(a.neckline.map(|v| ("neckline", v.as_str())));
        e.extend(a.length.map(|v| ("length", v.as_str())));
        e.extend(a.accessory.map(|v| ("accessory", v.as_str())));
        e
    }

    fn check_caption(r: &SynthRow) {
        assert_eq!(
            mentions(&r.text),
            expected(&r.shown()),
            "{}: {}",
            r.item_id,
            r.text
        );
        let sentences = r.text.matches(". ").count() + 1;
        assert!((2..=5).contains(&sentences), "{}", r.text);
        let who = if r.category1 == "WOMEN" {
            "female"
        } else {
            "male"
        };
        assert!(
            r.text.starts_with(&format!("This {who} wears ")),
            "{}",
            r.text
        );
        check_generic_caption(r);
    }

    /// The generic caption names no category, garment noun or gender, and says the colour, the
    /// pattern, the fabric and the corner mark of the view.
    fn check_generic_caption(r: &SynthRow) {
        let c = &r.caption;
        let lower = c.to_lowercase();
        for word in lower.split(|ch: char| !(ch.is_alphabetic() || ch == '-')) {
            assert!(
                !GENERIC_CAPTION_BANNED_WORDS.contains(&word),
                "{}: {word:?} in {c}",
                r.item_id
            );
            assert!(
                !CATEGORY2.contains(&word) && word != r.category1.to_lowercase(),
                "{}: {c}",
                r.item_id
            );
        }
        let shown = r.shown();
        assert!(
            c.starts_with(&format!("A {} ", shown.colour.as_str())),
            "{}: {c}",
            r.item_id
        );
        let mark = if r.category1 == "WOMEN" {
            "magenta dot"
        } else {
            "blue square"
        };
        assert!(c.contains(mark), "{}: {c}", r.item_id);
        assert_eq!(
            c.contains("sleeve") || c.contains(" It is sleeveless."),
            shown.sleeve.is_some(),
            "{}: {c}",
            r.item_id
        );
        assert_eq!(
            c.contains("neckline"),
            shown.neckline.is_some(),
            "{}: {c}",
            r.item_id
        );
        let sentences = c.matches(". ").count() + 1;
        assert!((4..=8).contains(&sentences), "{c}");
    }

    #[test]
    fn captions_mention_exactly_the_drawn_attributes() {
        let cfg = cfg(180, 4, 16, 24);
        let mut seen = BTreeSet::new();
        let mut graphic_backs = 0;
        for r in generate(&cfg) {
            check_caption(&r);
            let shown = r.shown();
            seen.extend(expected(&shown));
            if r.view == View::Back {
                assert_eq!(shown.neckline, None);
                if r.attributes.pattern == Pattern::Graphic {
                    graphic_backs += 1;
                    assert!(!r.text.contains("graphic"), "{}", r.text);
                }
            } else {
                assert_eq!(shown, r.attributes);
            }
        }
        assert!(graphic_backs > 0);
        // Every vocabulary word is used somewhere, so the attribute metric can score all of them.
        let all: usize = [
            Colour::ALL.len(),
            Pattern::ALL.len(),
            Fabric::ALL.len(),
            Sleeve::ALL.len(),
            Neckline::ALL.len(),
            Length::ALL.len(),
            Accessory::ALL.len(),
        ]
        .iter()
        .sum();
        assert_eq!(seen.len(), all, "{seen:?}");
    }

    #[test]
    fn caption_template_reads_as_in_deepfashion() {
        let a = Attributes {
            colour: Colour::Red,
            pattern: Pattern::Striped,
            fabric: Fabric::Chiffon,
            sleeve: Some(Sleeve::Long),
            neckline: Some(Neckline::VShape),
            length: Some(Length::ThreeQuarter),
            accessory: Some(Accessory::Belt),
        };
        assert_eq!(
            caption(Category::Dresses, Gender::Women, &a),
            "This female wears a long-sleeve red dress with striped patterns. The dress is with \
             chiffon fabric. It has a V-shape neckline. The dress this female wears is of \
             three-quarter length. There is a belt on her waist."
        );
        let b = Attributes {
            colour: Colour::Navy,
            pattern: Pattern::PureColour,
            fabric: Fabric::Denim,
            sleeve: None,
            neckline: None,
            length: Some(Length::Long),
            accessory: None,
        };
        assert_eq!(
            caption(Category::Pants, Gender::Men, &b),
            "This male wears navy pants with pure color patterns. The pants are with denim \
             fabric. The pants this male wears is of long length."
        );
    }

    #[test]
    fn generic_caption_describes_shape_and_colour_without_categories() {
        let a = Attributes {
            colour: Colour::Red,
            pattern: Pattern::Striped,
            fabric: Fabric::Chiffon,
            sleeve: Some(Sleeve::Long),
            neckline: Some(Neckline::VShape),
            length: Some(Length::ThreeQuarter),
            accessory: Some(Accessory::Belt),
        };
        assert_eq!(
            generic_caption(Category::Dresses, Gender::Women, View::Front, &a),
            "A red piece of clothing in one piece from the shoulders down, in one tube, with \
             striped patterns. It is fitted at the waist and flares out below a seam there. It \
             is long-sleeve. It has a V-shape neckline. It is of \
             three-quarter length. The fabric is chiffon. There is a belt at the waist. A small \
             magenta dot is in the corner."
        );
        let b = Attributes {
            colour: Colour::Navy,
            pattern: Pattern::PureColour,
            fabric: Fabric::Denim,
            sleeve: None,
            neckline: None,
            length: Some(Length::Long),
            accessory: None,
        };
        assert_eq!(
            generic_caption(Category::Pants, Gender::Men, View::Back, &b),
            "A navy piece of clothing covering the lower body in two legs, with pure color \
             patterns. It has a waistband and two patch pockets. It is of long length. The fabric is denim. A small blue square is in the \
             corner."
        );
        // Coverage and construction details name parts (waistband, cuffs, lapels), never the
        // garment, its category or a gender.
        for r in generate(&SynthConfig::sample()) {
            check_generic_caption(&r);
        }
        // The same product seen from the back loses its neckline sentence, as the text does.
        let cfg = cfg(9, 2, 32, 48);
        let front = row(&cfg, 0);
        let back = row(&cfg, 1);
        assert_eq!(
            front.caption.contains("neckline"),
            front.shown().neckline == Some(Neckline::Round)
                || front.shown().neckline == Some(Neckline::VShape)
        );
        assert!(!back.caption.contains("neckline"), "{}", back.caption);
    }

    #[test]
    fn vocabulary_serialises_as_caption_words() {
        fn check<T: Serialize + Copy>(all: &[T], word: impl Fn(T) -> &'static str) {
            for &v in all {
                let json = serde_json::to_string(&v).expect("serialises");
                assert_eq!(json, format!("\"{}\"", word(v)));
            }
        }
        check(Colour::ALL, Colour::as_str);
        check(Pattern::ALL, Pattern::as_str);
        check(Fabric::ALL, Fabric::as_str);
        check(Sleeve::ALL, Sleeve::as_str);
        check(Neckline::ALL, Neckline::as_str);
        check(Length::ALL, Length::as_str);
        check(Accessory::ALL, Accessory::as_str);
        check(View::ALL, View::as_str);
        let r = row(&SynthConfig::sample(), 5);
        let json = serde_json::to_value(r.attributes).expect("serialises");
        let back: Attributes = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, r.attributes);
        for (c, name) in Category::ALL.iter().zip(CATEGORY2) {
            assert_eq!(c.as_str(), name);
        }
    }

    /// Silhouette features: where a pixel differs from the background, averaged over 4×4 blocks.
    fn silhouette(png: &[u8]) -> Vec<f32> {
        let img = image::load_from_memory(png).expect("decodes").to_rgb8();
        let (w, h) = img.dimensions();
        let bg = img.get_pixel(w - 1, h - 1).0;
        let (bw, bh) = (w / 4, h / 4);
        let mut f = vec![0.0; (bw * bh) as usize];
        for (x, y, p) in img.enumerate_pixels() {
            let diff = p.0.iter().zip(bg).map(|(&a, b)| a.abs_diff(b)).max();
            if diff.is_some_and(|d| d > 20) && x / 4 < bw && y / 4 < bh {
                f[((y / 4) * bw + x / 4) as usize] += 1.0 / 16.0;
            }
        }
        f
    }

    /// Nearest-centroid and 1-nearest-neighbour on silhouettes, trained on two thirds of the
    /// products and tested on every view of the other third. Far above chance (1/9) means the
    /// categories' shapes differ, which is what a vision model fine-tuned on this data must pick
    /// up; 1-NN copes with the several lengths of skirts and dresses that one centroid blurs.
    #[test]
    fn silhouettes_separate_categories_of_held_out_products() {
        let cfg = cfg(270, 2, 48, 72);
        let mut train: Vec<(String, Vec<f32>)> = Vec::new();
        let mut test = Vec::new();
        for r in generate(&cfg) {
            let f = silhouette(&r.image);
            if r.product % 3 == 0 {
                test.push((r.category2, f));
            } else {
                train.push((r.category2, f));
            }
        }
        let mut sums: BTreeMap<&str, (Vec<f32>, f32)> = BTreeMap::new();
        for (c, f) in &train {
            let (sum, n) = sums
                .entry(c.as_str())
                .or_insert_with(|| (vec![0.0; f.len()], 0.0));
            sum.iter_mut().zip(f).for_each(|(s, v)| *s += v);
            *n += 1.0;
        }
        let centroids: Vec<(&str, Vec<f32>)> = sums
            .into_iter()
            .map(|(c, (sum, n))| (c, sum.into_iter().map(|s| s / n).collect()))
            .collect();
        let dist =
            |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
        let nearest = |set: &[(&str, &[f32])], f: &[f32]| -> String {
            set.iter()
                .map(|(c, m)| (dist(m, f), *c))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, c)| c.to_string())
                .unwrap_or_default()
        };
        let centroid_set: Vec<(&str, &[f32])> =
            centroids.iter().map(|(c, m)| (*c, m.as_slice())).collect();
        let train_set: Vec<(&str, &[f32])> = train
            .iter()
            .map(|(c, f)| (c.as_str(), f.as_slice()))
            .collect();
        let accuracy = |set: &[(&str, &[f32])]| {
            let correct = test.iter().filter(|(c, f)| nearest(set, f) == *c).count();
            correct as f32 / test.len() as f32
        };
        let (centroid_acc, nn_acc) = (accuracy(&centroid_set), accuracy(&train_set));
        eprintln!(
            "category2 from silhouettes, {} held-out rows: nearest centroid {centroid_acc:.3}, 1-NN {nn_acc:.3} (chance 0.111)",
            test.len()
        );
        assert!(centroid_acc > 0.5, "nearest centroid {centroid_acc}");
        assert!(nn_acc > 0.7, "1-NN {nn_acc}");
    }

    #[test]
    fn sample_renders_fast() {
        let start = Instant::now();
        let rows: Vec<SynthRow> = generate(&SynthConfig::sample()).collect();
        let took = start.elapsed();
        let bytes: usize = rows.iter().map(|r| r.image.len()).sum();
        eprintln!(
            "sample: {} rows in {took:?} ({:.2} ms/row), {bytes} image bytes",
            rows.len(),
            took.as_secs_f64() * 1e3 / rows.len() as f64
        );
        // Generous: the dev profile renders it in a small fraction of this.
        assert!(took < Duration::from_secs(5));
        // For scale: a demo-sized row (Qwen2.5-VL sees 224×336 as 8×12 = 96 image tokens).
        let demo = SynthConfig {
            format: ImageFormat::Jpeg { quality: 90 },
            ..cfg(4, 4, 224, 336)
        };
        let start = Instant::now();
        let n = generate(&demo).count();
        eprintln!(
            "224x336 JPEG: {:.2} ms/row",
            start.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }

    #[test]
    fn bad_settings_are_reported_by_validate_and_clamped_by_rendering() {
        assert_eq!(SynthConfig::sample().validate(), Ok(()));
        let tiny = cfg(2, 0, 0, 5);
        assert_eq!(
            tiny.validate(),
            Err(SynthError::Size {
                width: 0,
                height: 5
            })
        );
        assert_eq!(
            SynthConfig {
                views_per_product: 0,
                ..SynthConfig::sample()
            }
            .validate(),
            Err(SynthError::NoViews)
        );
        let q0 = SynthConfig {
            format: ImageFormat::Jpeg { quality: 0 },
            ..SynthConfig::sample()
        };
        assert_eq!(q0.validate(), Err(SynthError::JpegQuality(0)));
        assert_eq!(len(&tiny), 2);
        let r = row(&tiny, 1);
        let img = image::load_from_memory(&r.image).expect("decodes");
        assert_eq!((img.width(), img.height()), (MIN_SIDE, MIN_SIDE));
        assert!(!row(&q0, 0).image.is_empty());
        assert_eq!(len(&cfg(0, 4, 64, 96)), 0);
        assert_eq!(generate(&cfg(0, 4, 64, 96)).count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_row_is_deterministic_well_formed_and_truthful(seed in any::<u64>(), index in 0usize..100_000) {
            let cfg = SynthConfig { seed, ..cfg(usize::MAX, 4, 24, 36) };
            let r = row(&cfg, index);
            prop_assert_eq!(&r, &row(&cfg, index));
            prop_assert_eq!(r.product, index / 4);
            check_caption(&r);
            let img = image::load_from_memory(&r.image).expect("decodes");
            prop_assert_eq!((img.width(), img.height()), (24, 36));
        }
    }

    /// Writes contact sheets to `$TAILOR_SYNTH_LOOK` (a folder) for a human to look at; does
    /// nothing without it.
    #[test]
    fn look() {
        let Some(dir) = std::env::var_os("TAILOR_SYNTH_LOOK") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create dir");
        // All views of the sample's first products, more of them larger, and front views only.
        for (name, cfg, step, cols, upscale) in [
            ("sample", SynthConfig::sample(), 1, 12, 2),
            ("large", cfg(36, 4, 160, 240), 1, 12, 1),
            ("fronts", cfg(72, 4, 96, 144), 4, 18, 1),
        ] {
            let rows: Vec<SynthRow> = generate(&cfg).step_by(step).take(cols * 6).collect();
            let (w, h) = (cfg.width * upscale, cfg.height * upscale);
            let n_rows = rows.len().div_ceil(cols) as u32;
            let mut sheet = image::RgbImage::new(w * cols as u32, h * n_rows);
            let mut captions = String::new();
            for (i, r) in rows.iter().enumerate() {
                let img = image::load_from_memory(&r.image)
                    .expect("decodes")
                    .to_rgb8();
                let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Nearest);
                let (x, y) = ((i % cols) as u32 * w, (i / cols) as u32 * h);
                image::imageops::replace(&mut sheet, &img, x.into(), y.into());
                captions.push_str(&format!(
                    "{i:3} {} {} | {} | {}\n",
                    r.item_id, r.category2, r.text, r.caption
                ));
            }
            sheet.save(dir.join(format!("{name}.png"))).expect("save");
            std::fs::write(dir.join(format!("{name}.txt")), captions).expect("write");
        }
    }
}
