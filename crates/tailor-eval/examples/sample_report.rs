//! Writes a sample report from synthetic catalog rows and made-up predictions, to look at the
//! layout without a trained model:
//!
//! ```text
//! cargo run -p tailor-eval --example sample_report -- target/sample_report.html
//! tools/report/screenshot.sh target/sample_report.html target/sample_report.png
//! ```

use tailor_data::synth::{self, CATEGORY2, ImageFormat, SynthConfig};
use tailor_eval::{
    ConstrainedComparison, Labels, LogEntry, ReportInput, ReportSample, RunMetrics, RunPrediction,
    Sample, compute, render_report, score_sample,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/sample_report.html".to_string());
    let cfg = SynthConfig {
        products: 36,
        views_per_product: 2,
        seed: 7,
        width: 160,
        height: 240,
        format: ImageFormat::Png,
    };
    let rows: Vec<_> = synth::generate(&cfg).collect();
    let labels = Labels::new(
        rows.iter()
            .map(|r| (r.category1.clone(), r.category2.clone())),
    );

    // Made-up answers: the base model rambles or guesses, the fine-tuned one is mostly right.
    let mut base = Vec::new();
    let mut tuned = Vec::new();
    let mut constrained = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let reference = format!("{}/{}: {}", r.category1, r.category2, r.text);
        let other = CATEGORY2[(CATEGORY2
            .iter()
            .position(|c| *c == r.category2)
            .unwrap_or(0)
            + 1
            + i % 3)
            % CATEGORY2.len()];
        let base_answer = match i % 4 {
            0 => format!(
                "The image shows a piece of clothing, probably a {}.",
                r.category2
            ),
            1 => format!(
                "{}/{}: {}",
                r.category1,
                other,
                r.text.replace("is with", "is made of")
            ),
            2 => format!(
                "{}/{}: A garment on a plain background.",
                r.category1, r.category2
            ),
            _ => "I cannot tell <what> this is & why.".to_string(),
        };
        let tuned_answer = match i % 9 {
            4 => format!("{}/{}: {}", r.category1, other, r.text),
            7 => format!(
                "{}/{}: {}",
                r.category1,
                r.category2,
                r.text
                    .replace("long-sleeve", "short-sleeve")
                    .replace("cotton", "denim")
            ),
            8 if i % 2 == 0 => format!("{}/tshirts: {}", r.category1, r.text),
            _ => reference.clone(),
        };
        let constrained_answer = if tuned_answer.contains("/tshirts:") {
            // Constrained to known labels, the unknown "tshirts" becomes the closest known one.
            format!("{}/{}: {}", r.category1, r.category2, r.text)
        } else {
            tuned_answer.clone()
        };
        base.push(Sample {
            reference: reference.clone(),
            prediction: base_answer,
        });
        tuned.push(Sample {
            reference: reference.clone(),
            prediction: tuned_answer,
        });
        constrained.push(Sample {
            reference,
            prediction: constrained_answer,
        });
    }
    let mut base_m = compute(&base, &labels)?;
    let mut tuned_m = compute(&tuned, &labels)?;
    let constrained_m = compute(&constrained, &labels)?;
    base_m.throughput.samples_per_second = Some(3.1);
    base_m.throughput.generated_tokens_per_second = Some(142.0);
    tuned_m.throughput.samples_per_second = Some(3.4);
    tuned_m.throughput.generated_tokens_per_second = Some(151.5);

    // A plausible loss curve: exponential decay with a deterministic wobble.
    let mut log = Vec::new();
    for step in (10..=600).step_by(10) {
        let t = step as f64;
        let wobble = ((t * 0.37).sin() * 0.06) + ((t * 0.11).cos() * 0.03);
        log.push(LogEntry {
            step,
            loss: Some(0.35 + 2.1 * (-t / 120.0).exp() + wobble),
            eval_loss: None,
        });
        if step % 100 == 0 {
            log.push(LogEntry {
                step,
                loss: None,
                eval_loss: Some(0.42 + 1.9 * (-t / 140.0).exp()),
            });
        }
    }

    let samples = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 0)
        .take(12)
        .map(|(i, r)| {
            let preds = [("base", &base[i]), ("fine-tuned", &tuned[i])]
                .into_iter()
                .map(|(run, s)| RunPrediction {
                    run: run.to_string(),
                    prediction: s.prediction.clone(),
                    category2_correct: score_sample(s, &labels)
                        .is_some_and(|x| x.category2_correct),
                })
                .collect();
            ReportSample {
                image: r.image.clone(),
                reference: base[i].reference.clone(),
                predictions: preds,
            }
        })
        .collect();

    let input = ReportInput {
        title: "tailor evaluation — synthetic sample".to_string(),
        runs: vec![
            RunMetrics {
                name: "base".to_string(),
                metrics: base_m,
            },
            RunMetrics {
                name: "fine-tuned".to_string(),
                metrics: tuned_m.clone(),
            },
        ],
        training_log: Some(log),
        constrained: Some(ConstrainedComparison {
            unconstrained: tuned_m,
            constrained: constrained_m,
        }),
        samples,
    };
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, render_report(&input))?;
    eprintln!("wrote {out}");
    Ok(())
}
