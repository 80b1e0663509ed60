//! A self-contained HTML report: one file with inline CSS and inline SVG, no scripts, no network.
//!
//! Sections: summary table (runs side by side, with the change from the first run to the last),
//! constrained-decoding comparison, loss curves, category2 confusion heatmap and per-class
//! precision/recall/F1 bars of the last run, attribute accuracy, and a gallery of sample
//! predictions marked right (green) or wrong (red). Every text from the input is HTML-escaped.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::metrics::{INVALID, Metrics};

/// The metrics of one named run ("base", "fine-tuned", …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Run name shown in table headers.
    pub name: String,
    /// Its metrics.
    pub metrics: Metrics,
}

/// One line of a training run's `log.jsonl`; keys other than these are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Optimizer step.
    pub step: u64,
    /// Mean training loss over the logging window, on training-log lines.
    #[serde(default)]
    pub loss: Option<f64>,
    /// Validation loss, on evaluation lines.
    #[serde(default)]
    pub eval_loss: Option<f64>,
}

impl LogEntry {
    /// Parses the lines of a `log.jsonl` file (blank lines skipped); an error names the 1-based
    /// line.
    pub fn parse_jsonl(text: &str) -> Result<Vec<LogEntry>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect()
    }
}

/// The same model evaluated without and with constrained decoding of the category prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstrainedComparison {
    /// Free generation.
    pub unconstrained: Metrics,
    /// Category prefix constrained to the known labels.
    pub constrained: Metrics,
}

/// One run's answer for a gallery sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPrediction {
    /// The run's name.
    pub run: String,
    /// The generated answer.
    pub prediction: String,
    /// Whether its category2 is right.
    pub category2_correct: bool,
}

/// A gallery sample: thumbnail, reference and each run's prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSample {
    /// Encoded thumbnail (PNG; JPEG, GIF and WebP are recognised too), base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub image: Vec<u8>,
    /// The reference answer.
    pub reference: String,
    /// Predictions, one per run.
    pub predictions: Vec<RunPrediction>,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    /// Page title.
    pub title: String,
    /// One or more runs, oldest first (deltas are last minus first).
    pub runs: Vec<RunMetrics>,
    /// The training log, for the loss curves.
    #[serde(default)]
    pub training_log: Option<Vec<LogEntry>>,
    /// Metrics without and with constrained decoding.
    #[serde(default)]
    pub constrained: Option<ConstrainedComparison>,
    /// Gallery samples.
    #[serde(default)]
    pub samples: Vec<ReportSample>,
}

/// Serde for bytes as a base64 string (JSON has no byte type).
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Opens a table whose columns are `first`, one per run and, with two runs or more, a Δ column;
/// returns whether the Δ column is there.
fn runs_header<M>(h: &mut String, open: &str, first: &str, runs: &[(&str, M)]) -> bool {
    let _ = write!(h, "{open}\n<thead><tr><th>{first}</th>");
    for (name, _) in runs {
        let _ = write!(h, "<th>{}</th>", escape(name));
    }
    let delta = runs.len() > 1;
    if delta {
        h.push_str("<th>Δ</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    delta
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --ok: #1a7f37; --bad: #cf222e; --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --accent: #0969da; --accent2: #e16f24; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink); margin: 0; background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; }
.sub { color: var(--muted); margin-bottom: 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 20px; margin: 0 0 18px; }
table { border-collapse: collapse; }
th, td { padding: 5px 12px; text-align: right; border-bottom: 1px solid #eaeef2; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid var(--line); font-weight: 600; }
.up { color: var(--ok); font-weight: 600; }
.down { color: var(--bad); font-weight: 600; }
.flat { color: var(--muted); }
.note { color: var(--muted); font-size: 12px; margin-top: 8px; }
.cm td, .cm th { padding: 3px 6px; text-align: center; font-size: 12px; border: 1px solid #fff; min-width: 34px; }
.cm th.rowh { text-align: right; }
.cm th.colh { writing-mode: vertical-rl; transform: rotate(180deg); height: 96px; vertical-align: bottom; font-weight: 500; }
.cm td.diag { outline: 2px solid #1f2328; outline-offset: -2px; }
.legend span { display: inline-block; margin-right: 16px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px; background: #fff; }
.card img { display: block; width: 100%; max-height: 260px; object-fit: contain; background: #f0f2f4; border-radius: 4px; image-rendering: auto; }
.ref { font-size: 12px; color: var(--muted); margin: 8px 0 6px; }
.pred { font-size: 12px; border-left: 4px solid; padding: 4px 8px; margin: 4px 0; border-radius: 0 4px 4px 0; overflow-wrap: anywhere; }
.pred.ok { border-color: var(--ok); background: #dafbe1; }
.pred.bad { border-color: var(--bad); background: #ffebe9; }
.pred b { display: block; font-size: 11px; }
.card.ok { box-shadow: inset 0 0 0 2px var(--ok); }
.card.bad { box-shadow: inset 0 0 0 2px var(--bad); }
svg text { font-family: inherit; }
"#;

/// Renders the report as one HTML document.
pub fn render_report(input: &ReportInput) -> String {
    let mut h = String::new();
    let title = escape(&input.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n"
    );
    let names: Vec<String> = input.runs.iter().map(|r| escape(&r.name)).collect();
    let samples = input.runs.last().map_or(0, |r| r.metrics.samples);
    let _ = writeln!(
        h,
        "<div class=\"sub\">Runs: {} · {} evaluated samples</div>",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" → ")
        },
        samples
    );

    let runs: Vec<(&str, &Metrics)> = input
        .runs
        .iter()
        .map(|r| (r.name.as_str(), &r.metrics))
        .collect();
    section(&mut h, "summary", "Summary", |h| summary_table(h, &runs));
    if let Some(c) = &input.constrained {
        section(&mut h, "constrained", "Constrained decoding", |h| {
            summary_table(
                h,
                &[
                    ("unconstrained", &c.unconstrained),
                    ("constrained", &c.constrained),
                ],
            );
            h.push_str(
                "<div class=\"note\">The same model, with the category prefix free or \
                 constrained to the labels seen in training.</div>\n",
            );
        });
    }
    section(&mut h, "loss", "Loss curves", |h| {
        match &input.training_log {
            Some(log)
                if log
                    .iter()
                    .any(|e| e.loss.is_some() || e.eval_loss.is_some()) =>
            {
                loss_chart(h, log)
            }
            _ => h.push_str("<p class=\"note\">No training log.</p>\n"),
        }
    });
    if let Some(last) = input.runs.last() {
        let name = escape(&last.name);
        section(
            &mut h,
            "confusion",
            &format!("Category2 confusion — {name}"),
            |h| confusion_table(h, &last.metrics),
        );
        section(
            &mut h,
            "per-class",
            &format!("Per-class precision, recall, F1 — {name}"),
            |h| class_bars(h, &last.metrics),
        );
    }
    section(&mut h, "attributes", "Caption attribute accuracy", |h| {
        attribute_table(h, &runs)
    });
    section(&mut h, "gallery", "Sample predictions", |h| {
        gallery(h, &input.samples)
    });
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// Writes `<section id=…><h2>title</h2>…</section>`; `title` is already escaped.
fn section(h: &mut String, id: &str, title: &str, body: impl FnOnce(&mut String)) {
    let _ = writeln!(h, "<section id=\"{id}\">\n<h2>{title}</h2>");
    body(h);
    h.push_str("</section>\n");
}

/// How a summary row is shown.
#[derive(Clone, Copy)]
enum Kind {
    /// A fraction shown as a percentage; deltas in percentage points.
    Percent,
    /// A score already ×100 (BLEU, ROUGE).
    Score,
    /// A count.
    Plain,
    /// A speed (per second), one decimal.
    Rate,
}

/// Metric rows × run columns, with a Δ column (last − first) for several runs.
fn summary_table(h: &mut String, runs: &[(&str, &Metrics)]) {
    if runs.is_empty() {
        h.push_str("<p class=\"note\">No runs.</p>\n");
        return;
    }
    type Getter = fn(&Metrics) -> Option<f64>;
    let rows: [(&str, Kind, bool, Getter); 10] = [
        ("Samples", Kind::Plain, true, |m| Some(m.samples as f64)),
        ("Category1 accuracy", Kind::Percent, true, |m| {
            Some(m.category1_accuracy)
        }),
        ("Category2 accuracy", Kind::Percent, true, |m| {
            Some(m.category2_accuracy)
        }),
        ("Joint accuracy", Kind::Percent, true, |m| {
            Some(m.joint_accuracy)
        }),
        ("Category2 macro-F1", Kind::Percent, true, |m| {
            Some(m.category2_macro_f1)
        }),
        ("Invalid answers", Kind::Percent, false, |m| {
            Some(m.invalid_rate)
        }),
        ("BLEU-4", Kind::Score, true, |m| Some(m.bleu4)),
        ("ROUGE-L", Kind::Score, true, |m| Some(m.rouge_l)),
        ("Samples / s", Kind::Rate, true, |m| {
            m.throughput.samples_per_second
        }),
        ("Generated tokens / s", Kind::Rate, true, |m| {
            m.throughput.generated_tokens_per_second
        }),
    ];
    let delta = runs_header(h, "<table class=\"summary\">", "Metric", runs);
    for (label, kind, higher_better, get) in rows {
        let values: Vec<Option<f64>> = runs.iter().map(|(_, m)| get(m)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(h, "<tr><td>{label}</td>");
        for v in &values {
            let _ = write!(h, "<td>{}</td>", fmt_value(*v, kind));
        }
        if delta {
            let d = match (values[0], values[values.len() - 1]) {
                (Some(a), Some(b)) if label != "Samples" => Some(b - a),
                _ => None,
            };
            let _ = write!(h, "<td>{}</td>", fmt_delta(d, kind, higher_better));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

fn fmt_value(v: Option<f64>, kind: Kind) -> String {
    match (v, kind) {
        (None, _) => "—".to_string(),
        (Some(v), Kind::Percent) => format!("{:.1}%", v * 100.0),
        (Some(v), Kind::Score) => format!("{v:.2}"),
        (Some(v), Kind::Plain) => format!("{v:.0}"),
        (Some(v), Kind::Rate) => format!("{v:.1}"),
    }
}

fn fmt_delta(d: Option<f64>, kind: Kind, higher_better: bool) -> String {
    let Some(d) = d else {
        return String::new();
    };
    let (text, tiny) = match kind {
        Kind::Percent => (format!("{:+.1} pp", d * 100.0), (d * 100.0).abs() < 0.05),
        Kind::Score | Kind::Plain => (format!("{d:+.2}"), d.abs() < 0.005),
        Kind::Rate => (format!("{d:+.1}"), d.abs() < 0.05),
    };
    let class = if tiny {
        "flat"
    } else if (d > 0.0) == higher_better {
        "up"
    } else {
        "down"
    };
    format!("<span class=\"{class}\">{text}</span>")
}

/// "Nice" axis ticks covering `[lo, hi]` (steps of 1, 2 or 5 × 10^k, about five of them).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let exp = (span / 5.0).log10().floor() as i32;
    let (mult, exp) = [1.0, 2.0, 5.0]
        .iter()
        .map(|&m| (m, exp))
        .find(|&(m, e)| span / (m * 10f64.powi(e)) <= 6.0)
        .unwrap_or((1.0, exp + 1));
    // Tick k is k·mult·10^exp, computed so that 10^-exp stays an exact integer divisor: labels
    // read 0.6, not 0.6000000000000001.
    let at = |k: f64| {
        if exp >= 0 {
            k * mult * 10f64.powi(exp)
        } else {
            k * mult / 10f64.powi(-exp)
        }
    };
    let step = at(1.0);
    let mut k = (lo / step).ceil();
    let mut out = Vec::new();
    while at(k) <= hi + step * 1e-9 {
        out.push(at(k));
        k += 1.0;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Train and eval loss against step: SVG polylines with axes, ticks and a legend.
fn loss_chart(h: &mut String, log: &[LogEntry]) {
    let train: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|e| e.loss.filter(|l| l.is_finite()).map(|l| (e.step as f64, l)))
        .collect();
    let eval: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|e| {
            e.eval_loss
                .filter(|l| l.is_finite())
                .map(|l| (e.step as f64, l))
        })
        .collect();
    let all = train.iter().chain(&eval);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        h.push_str("<p class=\"note\">No finite losses in the training log.</p>\n");
        return;
    }
    // Losses start at 0 on the y axis unless they sit far above it, so that slopes are honest.
    if y0 > 0.0 && y0 < 0.5 * y1 {
        y0 = 0.0;
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (if y0 == 0.0 { 0.0 } else { y0 - pad }, y1 + pad);
    let (w, hgt, left, right, top, bottom) = (860.0, 320.0, 64.0, 20.0, 16.0, 44.0);
    let pw = w - left - right;
    let ph = hgt - top - bottom;
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let _ = writeln!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" role=\"img\" \
         aria-label=\"Loss against step\">"
    );
    // Grid and ticks.
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = writeln!(
            h,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#656d76\">{}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = writeln!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#656d76\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#656d76\">{}</text>",
            top + ph,
            top + ph + 5.0,
            top + ph + 18.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        h,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#656d76\"/>\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#656d76\"/>",
        top + ph,
        top + ph,
        w - right,
        top + ph
    );
    let _ = writeln!(
        h,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#1f2328\">step</text>\
         <text x=\"14\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#1f2328\" \
         transform=\"rotate(-90 14 {:.1})\">loss</text>",
        left + pw / 2.0,
        hgt - 6.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let line = |h: &mut String, pts: &[(f64, f64)], colour: &str, markers: bool| {
        if pts.is_empty() {
            return;
        }
        let points: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            h,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"/>",
            points.join(" ")
        );
        if markers || pts.len() == 1 {
            for &(x, y) in pts {
                let _ = writeln!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"/>",
                    sx(x),
                    sy(y)
                );
            }
        }
    };
    line(h, &train, "#0969da", false);
    line(h, &eval, "#e16f24", true);
    h.push_str("</svg>\n<div class=\"legend note\">");
    if !train.is_empty() {
        h.push_str("<span><i class=\"swatch\" style=\"background:#0969da\"></i>train loss</span>");
    }
    if !eval.is_empty() {
        h.push_str("<span><i class=\"swatch\" style=\"background:#e16f24\"></i>eval loss</span>");
    }
    h.push_str("</div>\n");
}

/// A white-to-blue colour for a fraction in [0, 1], and whether text on it should be white.
fn heat(t: f64) -> (String, bool) {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    let (r, g, b) = (lerp(247.0, 8.0), lerp(251.0, 69.0), lerp(255.0, 148.0));
    (format!("#{r:02x}{g:02x}{b:02x}"), t > 0.5)
}

/// The confusion matrix as a table; cells are shaded by their share of the reference row.
fn confusion_table(h: &mut String, m: &Metrics) {
    let c = &m.confusion;
    if c.labels.is_empty() {
        h.push_str("<p class=\"note\">No classes.</p>\n");
        return;
    }
    h.push_str(
        "<table class=\"cm\">\n<thead><tr><th class=\"rowh\">reference ↓ / predicted →</th>",
    );
    for l in c.labels.iter().map(String::as_str).chain([INVALID]) {
        let _ = write!(h, "<th class=\"colh\">{}</th>", escape(l));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in c.matrix.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let _ = write!(h, "<tr><th class=\"rowh\">{}</th>", escape(&c.labels[i]));
        for (j, &v) in row.iter().enumerate() {
            let frac = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let (bg, light) = heat(frac);
            let fg = if light { "#fff" } else { "#1f2328" };
            let diag = if i == j { " class=\"diag\"" } else { "" };
            let shown = if v == 0 { String::new() } else { v.to_string() };
            let _ = write!(
                h,
                "<td{diag} style=\"background:{bg};color:{fg}\" title=\"{:.1}% of row\">{shown}</td>",
                frac * 100.0
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    let (lo, _) = heat(0.0);
    let (hi, _) = heat(1.0);
    let _ = writeln!(
        h,
        "<div class=\"note\">Rows are references, columns predictions; shade = share of the row \
         (<i class=\"swatch\" style=\"background:{lo};border:1px solid #d0d7de\"></i>0% … \
         <i class=\"swatch\" style=\"background:{hi}\"></i>100%). Outlined: correct.</div>"
    );
}

/// Per-class precision, recall and F1 as grouped horizontal SVG bars.
fn class_bars(h: &mut String, m: &Metrics) {
    if m.per_class.is_empty() {
        h.push_str("<p class=\"note\">No classes.</p>\n");
        return;
    }
    let colours = [
        ("precision", "#0969da"),
        ("recall", "#e16f24"),
        ("F1", "#1a7f37"),
    ];
    let (left, bar_w, row_h, top) = (150.0, 560.0, 34.0, 24.0);
    let w = left + bar_w + 150.0;
    let hgt = top + row_h * m.per_class.len() as f64 + 8.0;
    let _ = writeln!(
        h,
        "<svg class=\"bars\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" role=\"img\" \
         aria-label=\"Per-class precision, recall and F1\">"
    );
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = left + t * bar_w;
        let _ = writeln!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{x:.1}\" y=\"14\" font-size=\"11\" text-anchor=\"middle\" fill=\"#656d76\">{}%</text>",
            top - 4.0,
            hgt - 4.0,
            t * 100.0
        );
    }
    for (i, c) in m.per_class.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#1f2328\">{}</text>",
            left - 8.0,
            y + 17.0,
            escape(&c.label)
        );
        for (k, (v, (name, colour))) in [c.precision, c.recall, c.f1]
            .into_iter()
            .zip(colours)
            .enumerate()
        {
            let _ = writeln!(
                h,
                "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" fill=\"{colour}\">\
                 <title>{} {name} {:.1}%</title></rect>",
                y + 3.0 + k as f64 * 9.0,
                (v.clamp(0.0, 1.0) * bar_w).max(0.5),
                escape(&c.label),
                v * 100.0
            );
        }
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#656d76\">F1 {:.1}% · n={}</text>",
            left + bar_w + 8.0,
            y + 17.0,
            c.f1 * 100.0,
            c.support
        );
    }
    h.push_str("</svg>\n<div class=\"legend note\">");
    for (name, colour) in colours {
        let _ = write!(
            h,
            "<span><i class=\"swatch\" style=\"background:{colour}\"></i>{name}</span>"
        );
    }
    h.push_str("</div>\n");
}

/// Attribute rows × run columns (accuracy and support), with a Δ column for several runs.
fn attribute_table(h: &mut String, runs: &[(&str, &Metrics)]) {
    let mut attrs: Vec<crate::Attribute> = runs
        .iter()
        .flat_map(|(_, m)| m.attributes.iter().map(|a| a.attribute))
        .collect();
    attrs.sort_unstable();
    attrs.dedup();
    if attrs.is_empty() {
        h.push_str("<p class=\"note\">No reference states a known attribute.</p>\n");
        return;
    }
    let delta = runs_header(h, "<table>", "Attribute", runs);
    for a in attrs {
        let _ = write!(h, "<tr><td>{}</td>", a.name());
        let mut values = Vec::new();
        for (_, m) in runs {
            match m.attributes.iter().find(|s| s.attribute == a) {
                Some(s) => {
                    values.push(Some(s.accuracy));
                    let _ = write!(
                        h,
                        "<td>{:.1}% <span class=\"flat\">({}/{})</span></td>",
                        s.accuracy * 100.0,
                        s.correct,
                        s.support
                    );
                }
                None => {
                    values.push(None);
                    h.push_str("<td>—</td>");
                }
            }
        }
        if delta {
            let d = match (values[0], values[values.len() - 1]) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            };
            let _ = write!(h, "<td>{}</td>", fmt_delta(d, Kind::Percent, true));
        }
        h.push_str("</tr>\n");
    }
    h.push_str(
        "</tbody>\n</table>\n<div class=\"note\">Over samples whose reference states the \
                attribute: the share of predictions stating the same value.</div>\n",
    );
}

/// The media type of an encoded image, from its magic bytes.
fn media_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [b'G', b'I', b'F', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        _ => "image/png",
    }
}

/// Thumbnail cards; each run's prediction is green when its category2 is right, red otherwise,
/// and the card's frame follows the last run.
fn gallery(h: &mut String, samples: &[ReportSample]) {
    if samples.is_empty() {
        h.push_str("<p class=\"note\">No samples.</p>\n");
        return;
    }
    h.push_str("<div class=\"gallery\">\n");
    for s in samples {
        let frame = match s.predictions.last() {
            Some(p) if p.category2_correct => " ok",
            Some(_) => " bad",
            None => "",
        };
        let _ = write!(h, "<div class=\"card{frame}\">");
        if !s.image.is_empty() {
            let data = base64::engine::general_purpose::STANDARD.encode(&s.image);
            let _ = write!(
                h,
                "<img alt=\"product photo\" src=\"data:{};base64,{data}\">",
                media_type(&s.image)
            );
        }
        let _ = write!(
            h,
            "<div class=\"ref\"><b>reference</b> {}</div>",
            escape(&s.reference)
        );
        for p in &s.predictions {
            let (class, mark) = if p.category2_correct {
                ("ok", "✓")
            } else {
                ("bad", "✗")
            };
            let _ = write!(
                h,
                "<div class=\"pred {class}\"><b>{mark} {}</b>{}</div>",
                escape(&p.run),
                escape(&p.prediction)
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str("</div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(3.0, 117.0), [20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(fmt_tick(0.30000000000000004), "0.3");
    }

    #[test]
    fn log_lines_parse() {
        let log = LogEntry::parse_jsonl(
            "{\"step\": 10, \"loss\": 1.5, \"learning_rate\": 0.001}\n\n{\"step\": 10, \"eval_loss\": 1.7}\n",
        )
        .unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].eval_loss, Some(1.7));
        assert!(
            LogEntry::parse_jsonl("{\"loss\": 1}")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
