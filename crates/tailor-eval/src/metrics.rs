//! Scores of predicted answers (`category1/category2: description`) against reference answers.
//!
//! # Definitions
//!
//! A prediction is **valid** when [`ParsedAnswer::parse`] accepts it and, if the label set is not
//! empty, its `(category1, category2)` pair is in the label set. An invalid prediction is wrong
//! for every category metric, and its category2 counts as the pseudo-class `<invalid>`.
//!
//! - `category1_accuracy`, `category2_accuracy`, `joint_accuracy` (both right): fractions of all
//!   samples; labels compare as exact strings after trimming.
//! - `category2_macro_f1`: scikit-learn's `f1_score(y_true, y_pred, average="macro",
//!   labels=L)` where `L` is the sorted union of the reference classes and the predicted classes of
//!   valid predictions (`<invalid>` is not in `L`, but a sample predicted `<invalid>` is still a
//!   false negative of its reference class). Per class, `F1 = 2·TP / (2·TP + FP + FN)`, 0 when the
//!   denominator is 0 (scikit-learn's `zero_division` default); the macro average is the unweighted
//!   mean over `L`. `per_class` lists precision, recall, F1 and support (reference count) of each
//!   class in `L`.
//! - `confusion`: rows are the classes of `L` as references, columns the classes of `L` as
//!   predictions plus a last `<invalid>` column.
//! - `invalid_rate`: invalid predictions over all samples.
//! - `bleu4`, `rouge_l`: LLaMA-Factory's `ComputeSimilarity` on the description parts (the whole
//!   prediction text when it is invalid): per sample `round(score · 100, 4)`, then the mean. See
//!   [`crate::similarity`] for the exact tokenization (characters for BLEU, jieba words for ROUGE).
//! - `attributes`: per [`Attribute`], over the samples whose reference description states it, the
//!   fraction whose prediction states the same value ([`parse_attributes`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tailor_data::chat::ParsedAnswer;

use crate::attributes::{Attribute, parse_attributes};
use crate::similarity::{py_round4, rouge_l, sentence_bleu4};

/// The pseudo-class of predictions that are not a valid answer.
pub const INVALID: &str = "<invalid>";

/// One evaluated example: the reference answer and the model's answer, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The expected answer, `category1/category2: description`.
    pub reference: String,
    /// The generated answer.
    pub prediction: String,
}

/// The (category1, category2) pairs seen in training; empty accepts any pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The known pairs.
    pub pairs: BTreeSet<(String, String)>,
}

impl Labels {
    /// A label set from pairs.
    pub fn new<I, A, B>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        Labels {
            pairs: pairs
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect(),
        }
    }

    /// Whether `(category1, category2)` is acceptable: always true for an empty set.
    pub fn accepts(&self, category1: &str, category2: &str) -> bool {
        self.pairs.is_empty()
            || self
                .pairs
                .contains(&(category1.to_string(), category2.to_string()))
    }
}

/// Precision, recall and F1 of one category2 class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// The class.
    pub label: String,
    /// TP / (TP + FP); 0 when never predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when absent from the references.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN); 0 when that denominator is 0.
    pub f1: f64,
    /// Number of references of this class.
    pub support: u64,
}

/// The category2 confusion matrix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Row and column classes (sorted); the matrix has one more column, [`INVALID`].
    pub labels: Vec<String>,
    /// `matrix[reference][prediction]`, `labels.len()` rows of `labels.len() + 1` counts.
    pub matrix: Vec<Vec<u64>>,
}

/// Accuracy of one caption attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeScore {
    /// The attribute.
    pub attribute: Attribute,
    /// Samples whose reference states the attribute.
    pub support: u64,
    /// Of those, predictions stating any value for it.
    pub stated: u64,
    /// Of those, predictions stating the reference's value.
    pub correct: u64,
    /// `correct / support`.
    pub accuracy: f64,
}

/// Generation speed, measured and filled in by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Samples generated per second.
    #[serde(default)]
    pub samples_per_second: Option<f64>,
    /// Generated tokens per second.
    #[serde(default)]
    pub generated_tokens_per_second: Option<f64>,
}

/// Every metric of one evaluation run (what `metrics.json` holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of samples.
    pub samples: u64,
    /// Fraction with the right category1.
    pub category1_accuracy: f64,
    /// Fraction with the right category2.
    pub category2_accuracy: f64,
    /// Fraction with both right.
    pub joint_accuracy: f64,
    /// Macro F1 over category2 classes (see the module documentation).
    pub category2_macro_f1: f64,
    /// Fraction of invalid predictions.
    pub invalid_rate: f64,
    /// Mean sentence BLEU-4 ×100 (characters, NLTK method3), LLaMA-Factory's `bleu-4`.
    pub bleu4: f64,
    /// Mean ROUGE-L F ×100 (jieba words, rouge_chinese), LLaMA-Factory's `rouge-l`.
    pub rouge_l: f64,
    /// Per-class scores, in label order.
    pub per_class: Vec<ClassScore>,
    /// The category2 confusion matrix.
    pub confusion: Confusion,
    /// Per-attribute accuracy, for attributes some reference states.
    pub attributes: Vec<AttributeScore>,
    /// Speed, when the caller measured it.
    #[serde(default)]
    pub throughput: Throughput,
}

/// Why metrics could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// There were no samples.
    #[error("no samples to evaluate")]
    NoSamples,
    /// A reference is not of the form `category1/category2: description`.
    #[error("sample {index}: reference {reference:?} is not `category1/category2: description`")]
    BadReference {
        /// 0-based sample index.
        index: usize,
        /// The reference text.
        reference: String,
    },
}

/// How one prediction fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    /// The prediction is `c1/c2: text` with a known pair.
    pub valid: bool,
    /// Right category1 (false when invalid).
    pub category1_correct: bool,
    /// Right category2 (false when invalid).
    pub category2_correct: bool,
    /// Sentence BLEU-4 ×100, rounded to 4 decimals as LLaMA-Factory does.
    pub bleu4: f64,
    /// ROUGE-L F ×100, rounded to 4 decimals as LLaMA-Factory does.
    pub rouge_l: f64,
}

/// Scores one sample (for a gallery or a per-sample log); `None` when the reference is not
/// `category1/category2: description`.
pub fn score_sample(sample: &Sample, labels: &Labels) -> Option<SampleScore> {
    let reference = ParsedAnswer::parse(&sample.reference)?;
    let (valid, pred) = parse_prediction(&sample.prediction, labels);
    let description = pred
        .as_ref()
        .map_or(sample.prediction.as_str(), |p| p.description.as_str());
    Some(SampleScore {
        valid,
        category1_correct: valid
            && pred
                .as_ref()
                .is_some_and(|p| p.category1 == reference.category1),
        category2_correct: valid
            && pred
                .as_ref()
                .is_some_and(|p| p.category2 == reference.category2),
        bleu4: py_round4(sentence_bleu4(&reference.description, description) * 100.0),
        rouge_l: py_round4(rouge_l(&reference.description, description) * 100.0),
    })
}

/// The parsed prediction and whether it is valid; an answer that parses but names an unknown
/// pair is returned (for its description) but invalid.
fn parse_prediction(prediction: &str, labels: &Labels) -> (bool, Option<ParsedAnswer>) {
    match ParsedAnswer::parse(prediction) {
        Some(p) => (labels.accepts(&p.category1, &p.category2), Some(p)),
        None => (false, None),
    }
}

/// Computes every metric of `samples` (see the module documentation for the definitions).
pub fn compute(samples: &[Sample], labels: &Labels) -> Result<Metrics, EvalError> {
    if samples.is_empty() {
        return Err(EvalError::NoSamples);
    }
    let n = samples.len() as f64;
    let (mut c1, mut c2, mut joint, mut invalid) = (0u64, 0u64, 0u64, 0u64);
    let (mut bleu, mut rouge) = (Vec::new(), Vec::new());
    // (reference class, predicted class or INVALID)
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(samples.len());
    let mut attr: BTreeMap<Attribute, (u64, u64, u64)> = BTreeMap::new();
    for (index, s) in samples.iter().enumerate() {
        let bad = || EvalError::BadReference {
            index,
            reference: s.reference.clone(),
        };
        let reference = ParsedAnswer::parse(&s.reference).ok_or_else(bad)?;
        let score = score_sample(s, labels).ok_or_else(bad)?;
        let (valid, pred) = parse_prediction(&s.prediction, labels);
        c1 += u64::from(score.category1_correct);
        c2 += u64::from(score.category2_correct);
        joint += u64::from(score.category1_correct && score.category2_correct);
        invalid += u64::from(!valid);
        bleu.push(score.bleu4);
        rouge.push(score.rouge_l);
        let predicted = match (&pred, valid) {
            (Some(p), true) => p.category2.clone(),
            _ => INVALID.to_string(),
        };
        pairs.push((reference.category2.clone(), predicted));

        let description = pred
            .as_ref()
            .map_or(s.prediction.as_str(), |p| p.description.as_str());
        let want = parse_attributes(&reference.description);
        let got = parse_attributes(description);
        for (a, v) in &want {
            let e = attr.entry(*a).or_default();
            e.0 += 1;
            if let Some(g) = got.get(a) {
                e.1 += 1;
                e.2 += u64::from(g == v);
            }
        }
    }

    let (per_class, confusion) = classify(&pairs);
    let macro_f1 = if per_class.is_empty() {
        0.0
    } else {
        per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len() as f64
    };
    let attributes = Attribute::ALL
        .iter()
        .filter_map(|a| {
            attr.get(a)
                .map(|&(support, stated, correct)| AttributeScore {
                    attribute: *a,
                    support,
                    stated,
                    correct,
                    accuracy: correct as f64 / support as f64,
                })
        })
        .collect();
    Ok(Metrics {
        samples: samples.len() as u64,
        category1_accuracy: c1 as f64 / n,
        category2_accuracy: c2 as f64 / n,
        joint_accuracy: joint as f64 / n,
        category2_macro_f1: macro_f1,
        invalid_rate: invalid as f64 / n,
        bleu4: mean(&bleu),
        rouge_l: mean(&rouge),
        per_class,
        confusion,
        attributes,
        throughput: Throughput::default(),
    })
}

/// Per-class scores and the confusion matrix of (reference, prediction) class pairs.
fn classify(pairs: &[(String, String)]) -> (Vec<ClassScore>, Confusion) {
    let labels: Vec<String> = pairs
        .iter()
        .flat_map(|(r, p)| [r, p])
        .filter(|l| *l != INVALID)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let k = labels.len();
    let mut matrix = vec![vec![0u64; k + 1]; k];
    for (r, p) in pairs {
        let col = index.get(p.as_str()).copied().unwrap_or(k);
        matrix[index[r.as_str()]][col] += 1;
    }
    let per_class = (0..k)
        .map(|i| {
            let tp = matrix[i][i];
            let support: u64 = matrix[i].iter().sum();
            let predicted: u64 = matrix.iter().map(|row| row[i]).sum();
            let (fp, fn_) = (predicted - tp, support - tp);
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            ClassScore {
                label: labels[i].clone(),
                precision: ratio(tp, predicted),
                recall: ratio(tp, support),
                f1: ratio(2 * tp, 2 * tp + fp + fn_),
                support,
            }
        })
        .collect();
    (per_class, Confusion { labels, matrix })
}

/// Arithmetic mean (LLaMA-Factory's `np.mean`; summation order differs by rounding only).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(reference: &str, prediction: &str) -> Sample {
        Sample {
            reference: reference.into(),
            prediction: prediction.into(),
        }
    }

    #[test]
    fn categories_invalid_and_confusion() {
        let samples = [
            s("WOMEN/dresses: a", "WOMEN/dresses: a"),
            s("WOMEN/dresses: a", "WOMEN/skirts: a"),
            s("MEN/tees: a", "WOMEN/tees: a"),
            s("MEN/tees: a", "garbage"),
            s("WOMEN/skirts: a", "WOMEN/jumpsuits: a"),
        ];
        let labels = Labels::new([
            ("WOMEN", "dresses"),
            ("WOMEN", "skirts"),
            ("WOMEN", "tees"),
            ("MEN", "tees"),
        ]);
        let m = compute(&samples, &labels).unwrap();
        assert_eq!(m.samples, 5);
        // Right category1: #0, #1; #4 is invalid (unknown pair) so wrong.
        assert_eq!(m.category1_accuracy, 2.0 / 5.0);
        assert_eq!(m.category2_accuracy, 2.0 / 5.0); // #0, #2
        assert_eq!(m.joint_accuracy, 1.0 / 5.0);
        assert_eq!(m.invalid_rate, 2.0 / 5.0);
        assert_eq!(m.confusion.labels, ["dresses", "skirts", "tees"]);
        assert_eq!(
            m.confusion.matrix,
            [vec![1, 1, 0, 0], vec![0, 0, 0, 1], vec![0, 0, 1, 1]]
        );
        // dresses: tp 1, fp 0, fn 1 -> 2/3; skirts: tp 0 -> 0; tees: tp 1, fn 1 -> 2/3.
        let f1: Vec<f64> = m.per_class.iter().map(|c| c.f1).collect();
        assert_eq!(f1, [2.0 / 3.0, 0.0, 2.0 / 3.0]);
        assert!((m.category2_macro_f1 - 4.0 / 9.0).abs() < 1e-15);
        // Without a label set the jumpsuit answer is valid and `jumpsuits` becomes a class.
        let m = compute(&samples, &Labels::default()).unwrap();
        assert_eq!(m.invalid_rate, 1.0 / 5.0);
        assert_eq!(m.confusion.labels.len(), 4);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            compute(&[], &Labels::default()),
            Err(EvalError::NoSamples)
        ));
        let e = compute(&[s("no label", "x")], &Labels::default()).unwrap_err();
        assert!(e.to_string().contains("sample 0"), "{e}");
    }

    #[test]
    fn attribute_accuracy_counts_only_stated_references() {
        let samples = [
            s(
                "WOMEN/dresses: This female wears a long-sleeve red dress with striped patterns. \
                 The dress is with chiffon fabric.",
                "WOMEN/dresses: This female wears a short-sleeve red dress with striped patterns. \
                 The dress is with cotton fabric.",
            ),
            s(
                "MEN/pants: This male wears navy pants with pure color patterns. The pants are \
                 with denim fabric. The pants this male wears is of long length.",
                "not an answer: This male wears navy pants with pure color patterns.",
            ),
        ];
        let m = compute(&samples, &Labels::default()).unwrap();
        let get = |a: Attribute| m.attributes.iter().find(|x| x.attribute == a).unwrap();
        assert_eq!(get(Attribute::Sleeve).support, 1);
        assert_eq!(get(Attribute::Sleeve).accuracy, 0.0);
        assert_eq!(get(Attribute::Pattern).accuracy, 1.0);
        assert_eq!(
            (
                get(Attribute::Fabric).support,
                get(Attribute::Fabric).stated,
                get(Attribute::Fabric).correct
            ),
            (2, 1, 0)
        );
        assert_eq!(get(Attribute::Length).stated, 0);
        assert_eq!(get(Attribute::Colour).accuracy, 1.0);
        assert!(
            m.attributes
                .iter()
                .all(|a| a.attribute != Attribute::Neckline)
        );
    }

    #[test]
    fn metrics_round_trip_through_json() {
        let m = compute(
            &[s("WOMEN/dresses: a b", "WOMEN/dresses: a c")],
            &Labels::default(),
        )
        .unwrap();
        let mut m2 = m.clone();
        m2.throughput.samples_per_second = Some(2.5);
        let json = serde_json::to_string(&m2).unwrap();
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m2);
        assert!(json.contains("\"samples_per_second\":2.5"));
    }
}
