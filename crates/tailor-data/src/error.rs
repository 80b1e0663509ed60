//! The data stage's error type: every variant names the file, and row-level ones the row and column.

use std::path::PathBuf;

/// Errors raised while reading, splitting or preparing a catalog.
///
/// Row numbers are 0-based indices into the catalog's rows (the same numbers `split.json` holds).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a catalog tailor can read (unknown extension, corrupt parquet, bad JSON…).
    #[error("{path}: {reason}")]
    Format {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A column the column mapping needs is absent.
    #[error("{path}: no column `{column}` (the catalog has: {available}); map it with --{flag}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// Comma-separated list of the columns that exist.
        available: String,
        /// The command-line flag that maps this column.
        flag: String,
    },
    /// A column has a type tailor cannot use for its role.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The type found.
        found: String,
        /// The type(s) accepted.
        expected: String,
    },
    /// One row is unusable (null or non-UTF-8 value, unreadable or invalid image, …).
    #[error("{path}: row {row}, column `{column}`: {reason}")]
    Row {
        /// The file holding the row.
        path: PathBuf,
        /// 0-based row index in the catalog.
        row: usize,
        /// The offending column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// The catalog has no rows at all.
    #[error("{path}: the catalog has no rows")]
    Empty {
        /// The file or folder.
        path: PathBuf,
    },
    /// A split could not be made or read.
    #[error(transparent)]
    Split(#[from] crate::split::SplitError),
    /// An invalid setting (template, regex, size).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// True for errors that concern a single row, which `--skip-bad` may skip.
    pub fn is_row_error(&self) -> bool {
        matches!(self, DataError::Row { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        DataError::Format {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn row(
        path: impl Into<PathBuf>,
        row: usize,
        column: &str,
        reason: impl std::fmt::Display,
    ) -> Self {
        DataError::Row {
            path: path.into(),
            row,
            column: column.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias for the data stage.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
