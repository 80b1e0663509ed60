//! Catalog data for tailor: readers, splits, chat samples and statistics.
#![deny(missing_docs)]

pub mod catalog;
pub mod chat;
pub mod error;
pub mod groups;
pub mod split;
pub mod synth;

pub use catalog::{Catalog, ColumnInfo, ColumnMap, Format, ImageRef, Row};
pub use error::{DataError, Result};
pub mod prepare;
pub mod stats;
