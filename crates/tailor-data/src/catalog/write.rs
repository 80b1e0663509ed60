//! Writing catalogs: the HF datasets parquet layout, JSON Lines, CSV and image folders. Used by
//! `tailor data synth` and by tests that need catalogs of every kind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use base64::Engine;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{DataError, Result};

/// One row to write: encoded image bytes, a file name for it, and string columns.
#[derive(Debug, Clone)]
pub struct Record {
    /// Encoded image (PNG, JPEG…).
    pub image: Vec<u8>,
    /// A file name for the image (used as `path` in parquet and as the file in folders).
    pub image_name: String,
    /// String columns in order; `None` is null.
    pub columns: Vec<(String, Option<String>)>,
}

/// How JSON Lines and CSV files store images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextImages {
    /// Base64 inside the record.
    Base64,
    /// Files beside the catalog, referenced by relative path.
    Files,
}

/// Rows per parquet row group: datasets uses 100 for image data sets, which keeps reads of a single
/// group small.
const ROWS_PER_GROUP: usize = 100;

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| DataError::io(path, e))
}

/// Writes a parquet file in the Hugging Face datasets layout: `image` is a `{bytes, path}` struct,
/// the other columns strings, and the schema carries the `huggingface` features metadata so that
/// `datasets` decodes the image column as `Image`. Returns the number of rows written.
pub fn write_parquet(path: &Path, records: impl IntoIterator<Item = Record>) -> Result<usize> {
    let mut records = records.into_iter().peekable();
    let Some(first) = records.peek() else {
        return Err(DataError::Invalid(format!(
            "{}: refusing to write a catalog with no rows",
            path.display()
        )));
    };
    let names: Vec<String> = first.columns.iter().map(|(n, _)| n.clone()).collect();
    let image_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let mut fields = vec![Field::new(
        "image",
        DataType::Struct(image_fields.clone()),
        true,
    )];
    fields.extend(names.iter().map(|n| Field::new(n, DataType::Utf8, true)));
    let mut features = serde_json::Map::new();
    features.insert("image".into(), serde_json::json!({"_type": "Image"}));
    for n in &names {
        features.insert(
            n.clone(),
            serde_json::json!({"dtype": "string", "_type": "Value"}),
        );
    }
    let hf = serde_json::json!({"info": {"features": features}}).to_string();
    let schema = Arc::new(Schema::new(fields).with_metadata([("huggingface", hf)]));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .build();
    let out = create(path)?;
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
        .map_err(|e| DataError::format(path, e))?;
    let mut total = 0;
    loop {
        let chunk: Vec<Record> = records.by_ref().take(ROWS_PER_GROUP).collect();
        if chunk.is_empty() {
            break;
        }
        total += chunk.len();
        let mut bytes = BinaryBuilder::new();
        let mut paths = StringBuilder::new();
        let mut cols: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
        for r in &chunk {
            bytes.append_value(&r.image);
            paths.append_value(&r.image_name);
            if r.columns.len() != names.len() {
                return Err(DataError::Invalid(format!(
                    "{}: record for {} has {} columns, expected {}",
                    path.display(),
                    r.image_name,
                    r.columns.len(),
                    names.len()
                )));
            }
            for (b, (_, v)) in cols.iter_mut().zip(&r.columns) {
                b.append_option(v.as_deref());
            }
        }
        let image = StructArray::new(
            image_fields.clone(),
            vec![
                Arc::new(bytes.finish()) as ArrayRef,
                Arc::new(paths.finish()) as ArrayRef,
            ],
            None,
        );
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(image)];
        arrays.extend(cols.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        let batch =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| DataError::format(path, e))?;
        writer
            .write(&batch)
            .map_err(|e| DataError::format(path, e))?;
    }
    writer.close().map_err(|e| DataError::format(path, e))?;
    Ok(total)
}

fn image_value(dir: &Path, r: &Record, images: TextImages) -> Result<String> {
    match images {
        TextImages::Base64 => Ok(base64::engine::general_purpose::STANDARD.encode(&r.image)),
        TextImages::Files => {
            let rel = Path::new("images").join(&r.image_name);
            let full = dir.join(&rel);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            std::fs::write(&full, &r.image).map_err(|e| DataError::io(&full, e))?;
            Ok(rel.to_string_lossy().into_owned())
        }
    }
}

/// Writes JSON Lines with the image under `image_key`. Returns the number of rows.
pub fn write_jsonl(
    path: &Path,
    records: impl IntoIterator<Item = Record>,
    images: TextImages,
    image_key: &str,
) -> Result<usize> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = create(path)?;
    let mut n = 0;
    for r in records {
        let mut obj = serde_json::Map::new();
        obj.insert(image_key.into(), image_value(dir, &r, images)?.into());
        for (k, v) in &r.columns {
            obj.insert(
                k.clone(),
                v.clone().map_or(serde_json::Value::Null, Into::into),
            );
        }
        serde_json::to_writer(&mut out, &obj).map_err(|e| DataError::format(path, e))?;
        out.write_all(b"\n").map_err(|e| DataError::io(path, e))?;
        n += 1;
    }
    out.flush().map_err(|e| DataError::io(path, e))?;
    Ok(n)
}

/// Writes CSV with a header row and the image column first. Returns the number of rows.
pub fn write_csv(
    path: &Path,
    records: impl IntoIterator<Item = Record>,
    images: TextImages,
    image_key: &str,
) -> Result<usize> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut w = csv::Writer::from_writer(create(path)?);
    let mut n = 0;
    for r in records {
        if n == 0 {
            let mut header = vec![image_key.to_string()];
            header.extend(r.columns.iter().map(|(k, _)| k.clone()));
            w.write_record(&header)
                .map_err(|e| DataError::format(path, e))?;
        }
        let mut fields = vec![image_value(dir, &r, images)?];
        fields.extend(r.columns.iter().map(|(_, v)| v.clone().unwrap_or_default()));
        w.write_record(&fields)
            .map_err(|e| DataError::format(path, e))?;
        n += 1;
    }
    w.flush().map_err(|e| DataError::io(path, e))?;
    Ok(n)
}

/// Writes an HF imagefolder: images under `dir/images/` and `dir/metadata.jsonl` whose
/// `file_name` column points at them. Returns the number of rows.
pub fn write_imagefolder(dir: &Path, records: impl IntoIterator<Item = Record>) -> Result<usize> {
    write_jsonl(
        &dir.join("metadata.jsonl"),
        records,
        TextImages::Files,
        "file_name",
    )
}
