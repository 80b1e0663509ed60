//! Parity with the Python metric libraries LLaMA-Factory uses.
//!
//! Expected values come from `tools/reference/metric_fixtures.py` (nltk 3.10.4, rouge-chinese
//! 1.0.3, jieba 0.42.1, scikit-learn 1.9.1; regenerate with
//! `/work/venv-metrics/bin/python tools/reference/metric_fixtures.py`), written to
//! `tests/fixtures/eval/metrics.json`.

use std::path::Path;

use serde_json::Value;
use tailor_eval::similarity::{jieba_cut, py_round4, rouge_l, sentence_bleu4};
use tailor_eval::{Labels, Sample, compute};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval/metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// Scores agree to 1e-12 (raw) here; the brief's bound is 1e-9. They are not asserted
/// bit-identical because `exp`/`ln` may differ in the last bit between libm builds.
const TOL: f64 = 1e-12;

#[test]
fn jieba_tokens_match() {
    let f = fixture();
    for p in f["similarity"].as_array().expect("pairs") {
        let want: Vec<&str> = p["prediction_tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(str_of)
            .collect();
        assert_eq!(
            jieba_cut(str_of(&p["prediction"])),
            want,
            "{:?}",
            p["prediction"]
        );
    }
}

#[test]
fn bleu_and_rouge_match_per_pair() {
    let f = fixture();
    let pairs = f["similarity"].as_array().expect("pairs");
    assert!(pairs.len() >= 30);
    for p in pairs {
        let (r, h) = (str_of(&p["reference"]), str_of(&p["prediction"]));
        let bleu = sentence_bleu4(r, h);
        let want = f64_of(&p["bleu4"]);
        assert!(
            (bleu - want).abs() <= TOL * want.abs().max(1e-300) || (bleu - want).abs() < 1e-300,
            "bleu {r:?} / {h:?}: {bleu} vs {want}"
        );
        let rouge = rouge_l(r, h);
        let want_r = f64_of(&p["rouge_l"]);
        assert!(
            (rouge - want_r).abs() <= TOL,
            "rouge {r:?} / {h:?}: {rouge} vs {want_r}"
        );
        // LLaMA-Factory's per-sample rounding lands on the same 4-decimal value.
        assert_eq!(
            py_round4(bleu * 100.0),
            f64_of(&p["llamafactory_bleu4"]),
            "{h:?}"
        );
        assert_eq!(
            py_round4(rouge * 100.0),
            f64_of(&p["llamafactory_rouge_l"]),
            "{h:?}"
        );
    }
}

#[test]
fn averaged_scores_match_through_compute() {
    let f = fixture();
    let pairs = f["similarity"].as_array().expect("pairs");
    let samples: Vec<Sample> = pairs
        .iter()
        .map(|p| Sample {
            reference: format!("WOMEN/dresses: {}", str_of(&p["reference"])),
            prediction: format!("WOMEN/dresses: {}", str_of(&p["prediction"])),
        })
        .collect();
    // `ParsedAnswer` trims descriptions; every fixture text with outer whitespace is scored on
    // its trimmed form, so compare against the per-pair values of the trimmed texts.
    let trimmed_all = pairs.iter().all(|p| {
        let (r, h) = (str_of(&p["reference"]), str_of(&p["prediction"]));
        r == r.trim() && h == h.trim()
    });
    let m = compute(&samples, &Labels::default()).expect("metrics");
    if trimmed_all {
        assert!(
            (m.bleu4 - f64_of(&f["mean_bleu4"])).abs() < 1e-9,
            "{}",
            m.bleu4
        );
        assert!(
            (m.rouge_l - f64_of(&f["mean_rouge_l"])).abs() < 1e-9,
            "{}",
            m.rouge_l
        );
    } else {
        let n = pairs.len() as f64;
        let (mut b, mut r) = (0.0, 0.0);
        for p in pairs {
            let (rf, hp) = (
                str_of(&p["reference"]).trim(),
                str_of(&p["prediction"]).trim(),
            );
            b += py_round4(sentence_bleu4(rf, hp) * 100.0);
            r += py_round4(rouge_l(rf, hp) * 100.0);
        }
        assert!((m.bleu4 - b / n).abs() < 1e-9);
        assert!((m.rouge_l - r / n).abs() < 1e-9);
        // And the untrimmed mean is the Python one.
        let (mut b, mut r) = (0.0, 0.0);
        for p in pairs {
            let (rf, hp) = (str_of(&p["reference"]), str_of(&p["prediction"]));
            b += py_round4(sentence_bleu4(rf, hp) * 100.0);
            r += py_round4(rouge_l(rf, hp) * 100.0);
        }
        assert!((b / n - f64_of(&f["mean_bleu4"])).abs() < 1e-9);
        assert!((r / n - f64_of(&f["mean_rouge_l"])).abs() < 1e-9);
    }
}

#[test]
fn macro_f1_matches_scikit_learn() {
    let f = fixture();
    let c = &f["classification"];
    let labels = Labels::new(
        c["label_set"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| (str_of(&p[0]).to_string(), str_of(&p[1]).to_string())),
    );
    let samples: Vec<Sample> = c["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| Sample {
            reference: str_of(&s["reference"]).into(),
            prediction: str_of(&s["prediction"]).into(),
        })
        .collect();
    let m = compute(&samples, &labels).expect("metrics");
    let want_labels: Vec<&str> = c["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(m.confusion.labels, want_labels);
    assert!((m.category2_macro_f1 - f64_of(&c["macro_f1"])).abs() < 1e-12);
    for (got, want) in m
        .per_class
        .iter()
        .zip(c["per_class"].as_array().expect("rows"))
    {
        assert_eq!(got.label, str_of(&want["label"]));
        assert_eq!(got.support, want["support"].as_u64().expect("support"));
        for (g, w) in [
            (got.precision, &want["precision"]),
            (got.recall, &want["recall"]),
            (got.f1, &want["f1"]),
        ] {
            assert!((g - f64_of(w)).abs() < 1e-12, "{}: {g} vs {w}", got.label);
        }
    }
    // The two invalid predictions (not an answer; an unknown pair) land in the last column.
    let invalid: u64 = m
        .confusion
        .matrix
        .iter()
        .map(|row| row[row.len() - 1])
        .sum();
    assert_eq!(invalid, 2);
    assert!((m.invalid_rate - 2.0 / 12.0).abs() < 1e-15);
}
