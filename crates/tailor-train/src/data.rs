//! Catalog rows as a [`BatchSource`]: rows stay encoded in memory (image bytes, not pixels), and
//! each micro-batch is decoded, processed, encoded and collated when the loop asks for it.
//!
//! Rows longer than `max_length` tokens are dropped once, before training, and counted (the
//! length is known from the image header and the tokenizer alone), so a micro-batch never loses
//! a sample halfway through an epoch and the step plan stays exact.

use tailor_core::{Batch, LabelMask};
use tailor_data::Row;
use tailor_data::chat::ChatFormat;
use tailor_data::prepare::Processor;

use crate::trainer::{BatchSource, BoxError};

/// Rows of one split ready to be batched.
pub struct CatalogSource<'a> {
    rows: Vec<Row>,
    processor: &'a Processor,
    format: &'a ChatFormat,
    image_column: String,
    mask: LabelMask,
}

/// What [`CatalogSource::new`] kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Rows kept.
    pub kept: usize,
    /// Rows dropped for exceeding `max_length`, with their token counts.
    pub too_long: Vec<(usize, usize)>,
    /// Labelled tokens over the kept rows.
    pub label_tokens: usize,
    /// Tokens over the kept rows.
    pub tokens: usize,
}

impl<'a> CatalogSource<'a> {
    /// Checks every row (image header, template, tokenization) and keeps those within
    /// `max_length`. `rows` carry their catalog indices for error messages.
    pub fn new(
        rows: Vec<Row>,
        processor: &'a Processor,
        format: &'a ChatFormat,
        image_column: &str,
        mask: LabelMask,
        max_length: Option<usize>,
    ) -> tailor_data::Result<(Self, SourceReport)> {
        let mut report = SourceReport::default();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let (_, _, grid) = processor.grid_of(&row, image_column)?;
            let encoded = processor.encode(&row, format, grid, mask)?;
            let len = encoded.input_ids.len();
            if max_length.is_some_and(|m| len > m) {
                report.too_long.push((row.index, len));
                continue;
            }
            report.tokens += len;
            report.label_tokens += encoded
                .labels
                .iter()
                .filter(|&&l| l != tailor_core::IGNORE_INDEX)
                .count();
            kept.push(row);
        }
        report.kept = kept.len();
        Ok((
            Self {
                rows: kept,
                processor,
                format,
                image_column: image_column.to_owned(),
                mask,
            },
            report,
        ))
    }
}

impl BatchSource for CatalogSource<'_> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<Batch, BoxError> {
        let rows: Vec<Row> = indices.iter().map(|&i| self.rows[i].clone()).collect();
        let (batch, report) =
            self.processor
                .batch(&rows, self.format, &self.image_column, self.mask, None)?;
        debug_assert!(report.skipped.is_empty());
        Ok(batch)
    }
}
