//! Parquet shards in the Hugging Face datasets layout, read through arrow in small record batches.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{ColumnInfo, ImageRef, Row, Rows, image_from_str};
use crate::error::{DataError, Result};

/// Rows per record batch: small enough that a batch of full-size images stays a few MB.
const BATCH_ROWS: usize = 64;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DataError::format(path, format!("not a readable parquet file: {e}")))
}

/// The columns of the first shard; every other shard must have the same names.
pub(super) fn columns(files: &[PathBuf]) -> Result<Vec<ColumnInfo>> {
    let mut columns: Option<Vec<ColumnInfo>> = None;
    for path in files {
        let b = builder(path)?;
        let these: Vec<ColumnInfo> = b
            .schema()
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                kind: type_name(f.data_type()),
            })
            .collect();
        match &columns {
            None => columns = Some(these),
            Some(first) => {
                let names = |c: &[ColumnInfo]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
                if names(first) != names(&these) {
                    return Err(DataError::format(
                        path,
                        format!(
                            "shard columns [{}] differ from the first shard's [{}]",
                            names(&these).join(", "),
                            names(first).join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(columns.unwrap_or_default())
}

pub(super) fn row_count(files: &[PathBuf]) -> Result<usize> {
    let mut n = 0;
    for path in files {
        n += builder(path)?.metadata().file_metadata().num_rows() as usize;
    }
    Ok(n)
}

/// A type name in the style of HF `datasets` features, for summaries and error messages.
pub(super) fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Null => "null".into(),
        other => other.to_string().to_lowercase(),
    }
}

pub(super) fn rows<'a>(files: &'a [PathBuf], image: Option<&'a str>) -> Result<Rows<'a>> {
    let mut offset = 0usize;
    let mut shards = Vec::with_capacity(files.len());
    for path in files {
        let b = builder(path)?;
        let groups: Vec<usize> = b
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows() as usize)
            .collect();
        shards.push((path.clone(), offset, groups));
        offset += b.metadata().file_metadata().num_rows() as usize;
    }
    let it = shards
        .into_iter()
        .flat_map(move |(path, first_row, groups)| {
            let file: Arc<Path> = Arc::from(path.as_path());
            let mut start = first_row;
            groups.into_iter().enumerate().flat_map(move |(rg, n)| {
                let rows = GroupRows::new(file.clone(), rg, start, image);
                start += n;
                rows
            })
        });
    Ok(Box::new(it))
}

/// Streams one row group in small batches. When a batch fails to decode (invalid UTF-8 in a string
/// column spoils a whole page in arrow), the rest of the group is re-read with its string columns
/// as raw bytes, so the bad rows are reported by row and column and the good ones still come out.
struct GroupRows<'a> {
    file: Arc<Path>,
    group: usize,
    /// Catalog index of the group's first row.
    first_row: usize,
    image: Option<&'a str>,
    /// Rows of the group already produced.
    done_rows: usize,
    reader: Option<ParquetRecordBatchReader>,
    pending: std::vec::IntoIter<Result<Row>>,
    finished: bool,
}

impl<'a> GroupRows<'a> {
    fn new(file: Arc<Path>, group: usize, first_row: usize, image: Option<&'a str>) -> Self {
        GroupRows {
            file,
            group,
            first_row,
            image,
            done_rows: 0,
            reader: None,
            pending: Vec::new().into_iter(),
            finished: false,
        }
    }

    /// Indices of the columns to read: the scalar ones and the image.
    fn keep(&self, b: &ParquetRecordBatchReaderBuilder<File>) -> Vec<usize> {
        b.schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| Some(f.name().as_str()) == self.image || is_scalar(f.data_type()))
            .map(|(i, _)| i)
            .collect()
    }

    fn open(&self) -> Result<ParquetRecordBatchReader> {
        let b = builder(&self.file)?;
        let mask = ProjectionMask::roots(b.parquet_schema(), self.keep(&b));
        b.with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .with_row_groups(vec![self.group])
            .build()
            .map_err(|e| DataError::format(self.file.as_ref(), e))
    }

    /// Re-reads the whole group with string columns taken as raw bytes, and returns its rows from
    /// `self.done_rows` on.
    fn fallback(&self) -> Result<Vec<Result<Row>>> {
        let b = builder(&self.file)?;
        let keep = self.keep(&b);
        let schema = b.schema().clone();
        let strings: Vec<usize> = keep
            .iter()
            .copied()
            .filter(|&i| is_string(schema.field(i).data_type()))
            .collect();
        let others: Vec<usize> = keep
            .iter()
            .copied()
            .filter(|i| !strings.contains(i))
            .collect();
        let raw = raw_byte_columns(&self.file, self.group, &strings)?;
        let mask = ProjectionMask::roots(b.parquet_schema(), others.clone());
        let reader = b
            .with_projection(mask)
            .with_batch_size(usize::MAX >> 1)
            .with_row_groups(vec![self.group])
            .build()
            .map_err(|e| DataError::format(self.file.as_ref(), e))?;
        let mut other_cols: Vec<ArrayRef> = Vec::new();
        let mut n = 0;
        for batch in reader {
            let batch = batch.map_err(|e| DataError::format(self.file.as_ref(), e))?;
            n = batch.num_rows();
            other_cols = batch.columns().to_vec();
        }
        if others.is_empty() {
            n = raw.first().map_or(0, |c| c.len());
        }
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for &i in &keep {
            let f = schema.field(i);
            if let Some(k) = strings.iter().position(|&s| s == i) {
                fields.push(Field::new(f.name(), DataType::Binary, true));
                arrays.push(Arc::new(BinaryArray::from_iter(
                    raw[k].iter().map(|v| v.as_deref()),
                )));
            } else {
                let k = others
                    .iter()
                    .position(|&o| o == i)
                    .expect("projected column");
                fields.push(f.as_ref().clone());
                arrays.push(other_cols[k].clone());
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| DataError::format(self.file.as_ref(), e))?;
        let from = self.done_rows.min(n);
        let batch = batch.slice(from, n - from);
        Ok(batch_rows(
            &batch,
            self.first_row + from,
            &self.file,
            self.image,
        ))
    }
}

impl Iterator for GroupRows<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        // arrow and parquet panic on some corrupt pages (out-of-bounds offsets) instead of
        // returning an error; a corrupt file must be an error that names it, never a crash.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.next_row())) {
            Ok(r) => r,
            Err(panic) => {
                self.finished = true;
                self.reader = None;
                self.pending = Vec::new().into_iter();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                Some(Err(DataError::format(
                    self.file.as_ref(),
                    format!(
                        "corrupt data near row {}: the parquet decoder failed ({what})",
                        self.first_row + self.done_rows
                    ),
                )))
            }
        }
    }
}

impl GroupRows<'_> {
    fn next_row(&mut self) -> Option<Result<Row>> {
        loop {
            if let Some(r) = self.pending.next() {
                return Some(r);
            }
            if self.finished {
                return None;
            }
            if self.reader.is_none() {
                match self.open() {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
            match self.reader.as_mut().and_then(Iterator::next) {
                None => {
                    self.finished = true;
                    return None;
                }
                Some(Ok(batch)) => {
                    let start = self.first_row + self.done_rows;
                    self.done_rows += batch.num_rows();
                    self.pending = batch_rows(&batch, start, &self.file, self.image).into_iter();
                }
                Some(Err(e)) => {
                    self.finished = true;
                    self.reader = None;
                    match self.fallback() {
                        Ok(rows) => self.pending = rows.into_iter(),
                        Err(_) => {
                            return Some(Err(DataError::format(
                                self.file.as_ref(),
                                format!("rows from {}: {e}", self.first_row + self.done_rows),
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// The raw bytes of flat (top-level, non-repeated) byte-array columns of one row group, read
/// below arrow so that no UTF-8 validation happens.
fn raw_byte_columns(
    path: &Path,
    group: usize,
    columns: &[usize],
) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
    let fail = |e: parquet::errors::ParquetError| DataError::format(path, e);
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(fail)?;
    let rg = reader.get_row_group(group).map_err(fail)?;
    let descr = reader.metadata().file_metadata().schema_descr_ptr();
    let top = descr.root_schema().get_fields();
    let mut out = Vec::with_capacity(columns.len());
    for &field in columns {
        let name = top[field].name();
        let leaf = (0..descr.num_columns())
            .find(|&i| descr.column(i).path().parts() == [name.to_string()])
            .ok_or_else(|| DataError::format(path, format!("column `{name}` is nested")))?;
        let max_def = descr.column(leaf).max_def_level();
        let n = rg.metadata().num_rows() as usize;
        let ColumnReader::ByteArrayColumnReader(mut r) =
            rg.get_column_reader(leaf).map_err(fail)?
        else {
            return Err(DataError::format(
                path,
                format!("column `{name}` is not a byte array"),
            ));
        };
        let mut defs = Vec::new();
        let mut values: Vec<ByteArray> = Vec::new();
        r.read_records(n, Some(&mut defs), None, &mut values)
            .map_err(fail)?;
        let mut vals = values.into_iter();
        let col = if max_def == 0 {
            vals.map(|v| Some(v.data().to_vec())).collect()
        } else {
            defs.iter()
                .map(|&d| {
                    (d == max_def)
                        .then(|| vals.next().map(|v| v.data().to_vec()))
                        .flatten()
                })
                .collect()
        };
        out.push(col);
    }
    Ok(out)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_scalar(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Null
        )
}

fn batch_rows(
    batch: &RecordBatch,
    start: usize,
    file: &Arc<Path>,
    image: Option<&str>,
) -> Vec<Result<Row>> {
    let schema = batch.schema();
    let names: Arc<[String]> = schema
        .fields()
        .iter()
        .filter(|f| Some(f.name().as_str()) != image)
        .map(|f| f.name().clone())
        .collect();
    let scalar: Vec<&dyn Array> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| Some(f.name().as_str()) != image)
        .map(|(_, c)| c.as_ref())
        .collect();
    let image_col = image.and_then(|name| batch.column_by_name(name).map(|c| (name, c.as_ref())));
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    (0..batch.num_rows())
        .map(|i| {
            let index = start + i;
            let mut values = Vec::with_capacity(scalar.len());
            for (name, col) in names.iter().zip(&scalar) {
                values.push(
                    cell_text(*col, i)
                        .map_err(|r| DataError::row(file.as_ref(), index, name, r))?,
                );
            }
            let image = match image_col {
                None => None,
                Some((name, col)) => image_cell(col, i, &base)
                    .map_err(|r| DataError::row(file.as_ref(), index, name, r))?,
            };
            Ok(Row {
                index,
                file: file.clone(),
                image,
                names: names.clone(),
                values,
            })
        })
        .collect()
}

/// A scalar cell as text; `None` for null.
fn cell_text(col: &dyn Array, i: usize) -> std::result::Result<Option<String>, String> {
    if col.is_null(i) {
        return Ok(None);
    }
    macro_rules! prim {
        ($t:ty) => {
            col.as_primitive::<$t>().value(i).to_string()
        };
    }
    let s = match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => col.as_string_view().value(i).to_string(),
        DataType::Binary => std::str::from_utf8(col.as_binary::<i32>().value(i))
            .map_err(|_| "text is not valid UTF-8".to_string())?
            .to_string(),
        DataType::Boolean => col.as_boolean().value(i).to_string(),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => prim!(Float16Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Null => return Ok(None),
        // Dates, decimals and other exotic scalars carry no catalog meaning; leave them out.
        _ => return Ok(None),
    };
    Ok(Some(s))
}

/// The image cell: HF's `{bytes, path}` struct (bytes first, else path), raw binary, or a string.
fn image_cell(
    col: &dyn Array,
    i: usize,
    base: &Path,
) -> std::result::Result<Option<ImageRef>, String> {
    if col.is_null(i) {
        return Err("image is null".into());
    }
    match col.data_type() {
        DataType::Struct(_) => {
            let s: &StructArray = col.as_struct();
            if let Some(bytes) = s.column_by_name("bytes")
                && let Some(b) = binary_cell(bytes.as_ref(), i)?
            {
                return Ok(Some(ImageRef::Bytes(b)));
            }
            if let Some(path) = s.column_by_name("path")
                && let Some(p) = cell_text(path.as_ref(), i)?
            {
                return image_from_str(&p, base).map(Some);
            }
            Err("image struct has neither bytes nor path".into())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            Ok(binary_cell(col, i)?.map(ImageRef::Bytes))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = cell_text(col, i)?.unwrap_or_default();
            image_from_str(&s, base).map(Some)
        }
        other => Err(format!(
            "image column has type {}, expected struct<bytes, path>, binary or string",
            type_name(other)
        )),
    }
}

fn binary_cell(col: &dyn Array, i: usize) -> std::result::Result<Option<Vec<u8>>, String> {
    if col.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match col.data_type() {
        DataType::Binary => col.as_binary::<i32>().value(i).to_vec(),
        DataType::LargeBinary => col.as_binary::<i64>().value(i).to_vec(),
        DataType::BinaryView => col.as_binary_view().value(i).to_vec(),
        other => {
            return Err(format!(
                "image bytes have type {}, expected binary",
                type_name(other)
            ));
        }
    }))
}
