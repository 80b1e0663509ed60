//! Evaluation for tailor: metrics of generated answers against references, and a self-contained
//! HTML report.
//!
//! - [`metrics`]: category accuracy, category2 macro-F1 and confusion, invalid answers, caption
//!   attribute accuracy, and BLEU-4 / ROUGE-L exactly as LLaMA-Factory computes them
//!   ([`similarity`]).
//! - [`attributes`]: garment attributes parsed back from DeepFashion-style captions.
//! - [`report`]: one HTML file (inline CSS and SVG, no network) comparing runs.
#![deny(missing_docs)]

pub mod attributes;
pub mod metrics;
pub mod report;
pub mod similarity;

pub use attributes::{Attribute, parse_attributes};
pub use metrics::{
    AttributeScore, ClassScore, Confusion, EvalError, INVALID, Labels, Metrics, Sample,
    SampleScore, Throughput, compute, score_sample,
};
pub use report::{
    ConstrainedComparison, LogEntry, ReportInput, ReportSample, RunMetrics, RunPrediction,
    render_report,
};
