//! Garment attributes parsed back from DeepFashion-style captions.
//!
//! DeepFashion-MultiModal (Text2Human, 2022) captions are generated from per-image labels with a
//! handful of templates per attribute, so a few patterns recover the labels. The phrasings covered
//! here come from the real captions (Marqo/deepfashion-multimodal `text`) and from tailor's own
//! synthetic captions (`tailor_data::synth`):
//!
//! | attribute | real DeepFashion phrasings | synthetic phrasing |
//! | --- | --- | --- |
//! | sleeve | "a short-sleeve T-shirt", "has long sleeves", "has no sleeves", "has sleeves cut off", "a tank tank top" | "a long-sleeve red dress" |
//! | length | "The pants this man wears is of long length", "The lower clothing is of long length", "wears a long pants" | "… is of three-quarter length" |
//! | fabric | "The T-shirt is with cotton fabric", "its fabric is denim", "has …, cotton fabric and …", "The fabric is cotton" | "is with chiffon fabric" |
//! | pattern | "with pure color patterns", "solid color patterns", "stripe patterns", "plaid patterns" | "with striped patterns" |
//! | neckline | "It has a round neckline", "The neckline of it is lapel", "its neckline is v-shape", "a crew neckline" | "It has a V-shape neckline" |
//! | accessories | "There is an accessory on her wrist", "This female wears a ring", "There is a hat in his head", "a belt", sunglasses | "wears a hat", "a belt on her waist" |
//! | colour | (not in DeepFashion captions) | "a long-sleeve red dress" |
//!
//! Synonyms map to one value, following the labels the templates were generated from (Text2Human's
//! `utils/language_utils.py` groups "sleeves cut off", "tank top" and "without sleeves" as
//! sleeveless, "medium"/"short" lower length as medium-short, "cropped" as three-quarter):
//! "solid color" = "pure color", "stripe" = "striped", "plaid" = "lattice", "crew" = "round",
//! "knitted" = "knitting". Values are lowercase.
//!
//! Real captions describe the upper and the lower garment, each with its own fabric and pattern,
//! so the value of fabric, pattern and length is the list of values in the order the caption
//! states them (repeats inside one sentence dropped), joined by ", ": "cotton, denim" for a cotton
//! top over denim pants. Sleeve, neckline and colour belong to one garment: the first statement.
//! Accessories are a set, joined by "+" in alphabetical order ("hat+ring").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One attribute family a caption can state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// Sleeve length: sleeveless, short-sleeve, medium-sleeve, long-sleeve.
    Sleeve,
    /// Lower-garment (or dress) length: three-point, medium-short, three-quarter, long.
    Length,
    /// Fabric: cotton, denim, leather, knitting, chiffon, furry, …
    Fabric,
    /// Pattern: pure color, striped, lattice, graphic, floral, color block, …
    Pattern,
    /// Neckline: round, v-shape, lapel, square, standing, suspenders, …
    Neckline,
    /// Accessories worn: hat, glasses, belt, ring, neckwear, wrist, bag.
    Accessories,
    /// Main colour (tailor's synthetic captions only).
    Colour,
}

impl Attribute {
    /// Every attribute, in report order.
    pub const ALL: [Attribute; 7] = [
        Attribute::Sleeve,
        Attribute::Length,
        Attribute::Fabric,
        Attribute::Pattern,
        Attribute::Neckline,
        Attribute::Accessories,
        Attribute::Colour,
    ];

    /// The attribute's name as serialised (`"sleeve"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Attribute::Sleeve => "sleeve",
            Attribute::Length => "length",
            Attribute::Fabric => "fabric",
            Attribute::Pattern => "pattern",
            Attribute::Neckline => "neckline",
            Attribute::Accessories => "accessories",
            Attribute::Colour => "colour",
        }
    }
}

/// Words that precede "fabric", "patterns" or "neckline" without naming a value ("the fabric
/// is …", "its neckline is …").
const FILLER: [&str; 14] = [
    "the", "its", "with", "and", "of", "a", "an", "is", "this", "has", "it", "her", "his", "their",
];

/// The named colours of tailor's synthetic palette, plus common spellings.
const COLOURS: [(&str, &str); 14] = [
    ("black", "black"),
    ("white", "white"),
    ("grey", "grey"),
    ("gray", "grey"),
    ("navy", "navy"),
    ("blue", "blue"),
    ("red", "red"),
    ("pink", "pink"),
    ("yellow", "yellow"),
    ("green", "green"),
    ("brown", "brown"),
    ("beige", "beige"),
    ("purple", "purple"),
    ("orange", "orange"),
];

/// The attributes `text` states, each with its normalised value; attributes it does not mention
/// are absent.
pub fn parse_attributes(text: &str) -> BTreeMap<Attribute, String> {
    let mut lists: BTreeMap<Attribute, Vec<String>> = BTreeMap::new();
    let mut accessories: Vec<&'static str> = Vec::new();
    let lower = text.to_lowercase();
    for sentence in lower.split(['.', '!', '?', ';', '\n']) {
        let t: Vec<&str> = sentence
            .split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .map(|w| w.trim_matches('-'))
            .filter(|w| !w.is_empty())
            .collect();
        let mut found: Vec<(Attribute, String)> = Vec::new();
        sentence_attributes(&t, &mut found, &mut accessories);
        // Repeats inside one sentence are one statement ("a sleeveless … tank top").
        let mut seen: Vec<(Attribute, String)> = Vec::new();
        for f in found {
            if !seen.contains(&f) {
                seen.push(f.clone());
                lists.entry(f.0).or_default().push(f.1);
            }
        }
    }
    let mut out: BTreeMap<Attribute, String> = lists
        .into_iter()
        .map(|(a, mut v)| {
            // One garment has sleeves, a neckline and the main colour: the first statement is
            // the value ("a tank tank shirt … The tank shirt is with …" states it twice).
            if matches!(
                a,
                Attribute::Sleeve | Attribute::Neckline | Attribute::Colour
            ) {
                v.truncate(1);
            }
            (a, v.join(", "))
        })
        .collect();
    if !accessories.is_empty() {
        accessories.sort_unstable();
        accessories.dedup();
        out.insert(Attribute::Accessories, accessories.join("+"));
    }
    out
}

/// Collects the attribute statements of one sentence (lowercase tokens).
fn sentence_attributes(
    t: &[&str],
    found: &mut Vec<(Attribute, String)>,
    accessories: &mut Vec<&'static str>,
) {
    let at = |i: usize| t.get(i).copied().unwrap_or("");
    let prev = |i: usize| if i == 0 { "" } else { t[i - 1] };
    for (i, &w) in t.iter().enumerate() {
        // Sleeves.
        let sleeve = match w {
            "sleeveless" => Some("sleeveless"),
            "short-sleeve" | "short-sleeved" => Some("short-sleeve"),
            "medium-sleeve" | "medium-sleeved" => Some("medium-sleeve"),
            "long-sleeve" | "long-sleeved" => Some("long-sleeve"),
            "sleeves" | "sleeve" => match prev(i) {
                "no" | "without" => Some("sleeveless"),
                "short" => Some("short-sleeve"),
                "medium" => Some("medium-sleeve"),
                "long" => Some("long-sleeve"),
                _ if at(i + 1) == "cut" && at(i + 2) == "off" => Some("sleeveless"),
                _ if at(i + 1) == "reach" && at(i + 2) == "elbow" => Some("medium-sleeve"),
                _ => None,
            },
            "tank" if matches!(at(i + 1), "top" | "shirt" | "tank") => Some("sleeveless"),
            _ => None,
        };
        if let Some(v) = sleeve {
            found.push((Attribute::Sleeve, v.to_string()));
        }

        // Lengths: "{x} length" or "{x} pants".
        let lower_noun = matches!(
            at(i + 1),
            "length" | "pants" | "trousers" | "shorts" | "skirt" | "jeans" | "leggings"
        );
        if lower_noun {
            let length = match w {
                "three-point" => Some("three-point"),
                "medium-short" | "medium" | "short" => Some("medium-short"),
                "three-quarter" | "cropped" => Some("three-quarter"),
                "long" => Some("long"),
                _ => None,
            };
            if let Some(v) = length {
                found.push((Attribute::Length, v.to_string()));
            }
        }

        // Fabric: "{x} fabric" or "fabric is {x}".
        if w == "fabric" {
            let v = if !prev(i).is_empty() && !FILLER.contains(&prev(i)) {
                Some(prev(i))
            } else if at(i + 1) == "is" && !at(i + 2).is_empty() {
                Some(at(i + 2))
            } else {
                None
            };
            if let Some(v) = v {
                let v = match v {
                    "knitted" | "knit" | "knitting" => "knitting",
                    "fur" | "furry" => "furry",
                    v => v,
                };
                found.push((Attribute::Fabric, v.to_string()));
            }
        }

        // Pattern: "{x} patterns".
        if matches!(w, "patterns" | "pattern") && i > 0 {
            let p1 = prev(i);
            let p2 = if i >= 2 { t[i - 2] } else { "" };
            let v = match (p2, p1) {
                ("pure" | "solid", "color" | "colour") => Some("pure color"),
                ("color" | "colour", "block") => Some("color block"),
                (_, "stripe" | "striped" | "stripes") => Some("striped"),
                (_, "plaid" | "lattice") => Some("lattice"),
                (_, x) if !FILLER.contains(&x) => Some(x),
                _ => None,
            };
            if let Some(v) = v {
                found.push((Attribute::Pattern, v.to_string()));
            }
        }

        // Neckline: "{x} neckline" or "neckline (of it) is {x}".
        if w == "neckline" {
            let before = prev(i);
            let v = if !before.is_empty() && !FILLER.contains(&before) {
                Some(before)
            } else {
                t[i + 1..]
                    .iter()
                    .position(|&x| x == "is")
                    .and_then(|k| t.get(i + 2 + k).copied())
            };
            if let Some(v) = v {
                let v = match v {
                    "crew" | "round" => "round",
                    "v-shape" | "v-neck" | "v" | "v-shaped" => "v-shape",
                    "stand" | "standing" => "standing",
                    v => v,
                };
                found.push((Attribute::Neckline, v.to_string()));
            }
        }

        // Accessories: any mention.
        let acc = match w {
            "hat" | "hats" | "cap" | "chapeau" => Some("hat"),
            "glasses" | "sunglasses" | "eyeglasses" | "eyeglass" => Some("glasses"),
            "belt" => Some("belt"),
            "ring" | "rings" => Some("ring"),
            "neck" | "neckwear" | "necklace" | "scarf" => Some("neckwear"),
            "wrist" | "bracelet" | "watch" => Some("wrist"),
            "bag" | "handbag" => Some("bag"),
            _ => None,
        };
        if let Some(a) = acc {
            accessories.push(a);
        }

        // Colour.
        if let Some(&(_, c)) = COLOURS.iter().find(|(word, _)| *word == w) {
            found.push((Attribute::Colour, c.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(&'static str, String)> {
        parse_attributes(text)
            .into_iter()
            .map(|(a, v)| (a.name(), v))
            .collect()
    }

    fn pairs(v: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut v: Vec<_> = v.iter().map(|(a, b)| (*a, b.to_string())).collect();
        v.sort_by_key(|(a, _)| {
            Attribute::ALL
                .iter()
                .position(|x| x.name() == *a)
                .unwrap_or(99)
        });
        v
    }

    #[test]
    fn synthetic_captions() {
        assert_eq!(
            parsed(
                "This female wears a long-sleeve red dress with striped patterns. The dress is \
                 with chiffon fabric. It has a V-shape neckline. The dress this female wears is \
                 of three-quarter length. There is a belt on her waist."
            ),
            pairs(&[
                ("sleeve", "long-sleeve"),
                ("length", "three-quarter"),
                ("fabric", "chiffon"),
                ("pattern", "striped"),
                ("neckline", "v-shape"),
                ("accessories", "belt"),
                ("colour", "red"),
            ])
        );
        assert_eq!(
            parsed(
                "This male wears a sleeveless black tank top with graphic patterns. The tank top \
                 is with cotton fabric. This male wears a hat."
            ),
            pairs(&[
                ("sleeve", "sleeveless"),
                ("fabric", "cotton"),
                ("pattern", "graphic"),
                ("accessories", "hat"),
                ("colour", "black"),
            ])
        );
    }

    #[test]
    fn deepfashion_captions() {
        assert_eq!(
            parsed(
                "The person is wearing a tank tank shirt with pure color patterns. The tank shirt \
                 is with cotton fabric. It has a round neckline. The pants this lady wears is of \
                 long length. The pants are with cotton fabric and pure color patterns. There is \
                 an accessory on her wrist. This female wears a ring."
            ),
            pairs(&[
                ("sleeve", "sleeveless"),
                ("length", "long"),
                ("fabric", "cotton, cotton"),
                ("pattern", "pure color, pure color"),
                ("neckline", "round"),
                ("accessories", "ring+wrist"),
            ])
        );
        assert_eq!(
            parsed(
                "His sweater has long sleeves, cotton fabric and stripe patterns. The neckline of \
                 it is lapel. The gentleman wears a long pants. The pants are with denim fabric \
                 and solid color patterns."
            ),
            pairs(&[
                ("sleeve", "long-sleeve"),
                ("length", "long"),
                ("fabric", "cotton, denim"),
                ("pattern", "striped, pure color"),
                ("neckline", "lapel"),
            ])
        );
        assert_eq!(
            parsed(
                "The upper clothing has sleeves cut off, cotton fabric and plaid patterns. Its \
                 neckline is crew. The lower clothing is of medium length. The fabric is denim."
            ),
            pairs(&[
                ("sleeve", "sleeveless"),
                ("length", "medium-short"),
                ("fabric", "cotton, denim"),
                ("pattern", "lattice"),
                ("neckline", "round"),
            ])
        );
        assert!(parse_attributes("").is_empty());
        assert!(parse_attributes("no garment words at all").is_empty());
    }
}
