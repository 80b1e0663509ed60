//! The HTML report's structure: sections present, text escaped, nothing fetched from the network,
//! SVG that parses as balanced tags with finite coordinates.

use tailor_eval::{
    ConstrainedComparison, Labels, LogEntry, ReportInput, ReportSample, RunMetrics, RunPrediction,
    Sample, compute, render_report,
};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E,
    0x44, 0xAE, 0x42, 0x60, 0x82,
];

fn sample(reference: &str, prediction: &str) -> Sample {
    Sample {
        reference: reference.into(),
        prediction: prediction.into(),
    }
}

fn input() -> ReportInput {
    let refs = [
        "WOMEN/dresses: This female wears a long-sleeve red dress with striped patterns. The dress is with chiffon fabric.",
        "MEN/tees: This male wears a short-sleeve black T-shirt with pure color patterns. The T-shirt is with cotton fabric.",
        "WOMEN/skirts: This female wears a blue skirt with floral patterns. The skirt is with denim fabric.",
    ];
    let base: Vec<Sample> = refs
        .iter()
        .map(|r| sample(r, "A photo of <clothes> & \"stuff\""))
        .collect();
    let tuned = vec![
        sample(refs[0], refs[0]),
        sample(
            refs[1],
            "MEN/tees: This male wears a long-sleeve black T-shirt.",
        ),
        sample(refs[2], "WOMEN/dresses: This female wears a blue dress."),
    ];
    let labels = Labels::default();
    let base_m = compute(&base, &labels).unwrap();
    let tuned_m = compute(&tuned, &labels).unwrap();
    ReportInput {
        title: "Eval <script>alert(1)</script>".into(),
        runs: vec![
            RunMetrics {
                name: "base".into(),
                metrics: base_m,
            },
            RunMetrics {
                name: "fine-tuned & co".into(),
                metrics: tuned_m.clone(),
            },
        ],
        training_log: Some(
            (1..=20)
                .map(|s| LogEntry {
                    step: s * 5,
                    loss: Some(2.0 / s as f64),
                    eval_loss: (s % 5 == 0).then_some(2.2 / s as f64),
                })
                .collect(),
        ),
        constrained: Some(ConstrainedComparison {
            unconstrained: tuned_m.clone(),
            constrained: tuned_m,
        }),
        samples: vec![ReportSample {
            image: PNG.to_vec(),
            reference: refs[2].into(),
            predictions: vec![
                RunPrediction {
                    run: "base".into(),
                    prediction: "A photo of <clothes>".into(),
                    category2_correct: false,
                },
                RunPrediction {
                    run: "fine-tuned".into(),
                    prediction: "WOMEN/skirts: …".into(),
                    category2_correct: true,
                },
            ],
        }],
    }
}

/// Checks that `<svg>` … `</svg>` blocks hold balanced elements and finite numbers.
fn check_svg(html: &str) -> usize {
    let mut count = 0;
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("closed svg") + start;
        let svg = &rest[start..end + "</svg>".len()];
        assert!(svg.contains("viewBox=\""), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Balanced tags: every opening tag is self-closed or closed.
        let mut stack: Vec<String> = Vec::new();
        let mut s = svg;
        while let Some(lt) = s.find('<') {
            let gt = s[lt..].find('>').expect("tag ends") + lt;
            let tag = &s[lt + 1..gt];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "in {svg}");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_string());
            }
            s = &s[gt + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        for pts in svg.split("points=\"").skip(1) {
            let pts = &pts[..pts.find('"').expect("quoted")];
            for p in pts.split_whitespace() {
                let (x, y) = p.split_once(',').expect("x,y");
                assert!(
                    x.parse::<f64>().unwrap().is_finite() && y.parse::<f64>().unwrap().is_finite()
                );
            }
        }
        count += 1;
        rest = &rest[end..];
    }
    count
}

#[test]
fn report_has_every_section_and_is_self_contained() {
    let html = render_report(&input());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    for id in [
        "summary",
        "constrained",
        "loss",
        "confusion",
        "per-class",
        "attributes",
        "gallery",
    ] {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    // Self-contained: no links, scripts or stylesheets from anywhere.
    assert!(!html.contains("http"), "network reference");
    assert!(!html.contains("<script"), "script tag");
    assert!(!html.contains("<link"));
    assert!(html.contains("src=\"data:image/png;base64,"));
    // Escaping.
    assert!(html.contains("Eval &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("fine-tuned &amp; co"));
    assert!(html.contains("A photo of &lt;clothes&gt;</div>"));
    // Loss chart (train and eval lines) and per-class bars.
    assert_eq!(html.matches("<polyline").count(), 2);
    assert_eq!(check_svg(&html), 2);
    // Right and wrong predictions are marked.
    assert!(html.contains("class=\"pred ok\"") && html.contains("class=\"pred bad\""));
    // Deltas between the two runs.
    assert!(html.contains("<th>Δ</th>"));
    assert!(html.contains("&lt;invalid&gt;"));
}

#[test]
fn report_without_optional_parts() {
    let mut input = input();
    input.training_log = None;
    input.constrained = None;
    input.samples.clear();
    input.runs.truncate(1);
    let html = render_report(&input);
    assert!(!html.contains("<section id=\"constrained\">"));
    assert!(html.contains("No training log."));
    assert!(html.contains("No samples."));
    assert!(!html.contains("<th>Δ</th>"));
    assert_eq!(check_svg(&html), 1);
    // An empty run list still renders.
    input.runs.clear();
    let html = render_report(&input);
    assert!(html.contains("No runs."));
}

#[test]
fn report_input_round_trips_through_json() {
    let input = input();
    let json = serde_json::to_string(&input).unwrap();
    let back: ReportInput = serde_json::from_str(&json).unwrap();
    assert_eq!(back, input);
}
