//! JSON Lines and CSV catalogs (also the `metadata.jsonl` / `metadata.csv` of an image folder),
//! read one record at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{ColumnInfo, ImageRef, Row, Rows, image_from_str};
use crate::error::{DataError, Result};

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(|e| DataError::io(path, e))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Non-blank lines as raw bytes, with their 0-based record index; UTF-8 is checked per record so
/// that a bad byte is reported against its row.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    index: usize,
}

impl Iterator for Lines {
    type Item = Result<(usize, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let i = self.index;
                    self.index += 1;
                    return Some(Ok((i, buf)));
                }
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            }
        }
    }
}

fn lines(path: &Path) -> Result<Lines> {
    Ok(Lines {
        path: path.to_path_buf(),
        reader: open(path)?,
        index: 0,
    })
}

/// Parses one JSONL record, naming the column that holds invalid UTF-8 when there is one.
fn parse_record(path: &Path, row: usize, line: &[u8]) -> Result<Map<String, Value>> {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(_) => {
            let lossy = String::from_utf8_lossy(line);
            let column = serde_json::from_str::<Map<String, Value>>(&lossy)
                .ok()
                .and_then(|m| {
                    m.into_iter()
                        .find(|(_, v)| v.to_string().contains('\u{FFFD}'))
                        .map(|(k, _)| k)
                })
                .unwrap_or_else(|| "?".into());
            return Err(DataError::row(
                path,
                row,
                &column,
                "text is not valid UTF-8",
            ));
        }
    };
    serde_json::from_str::<Map<String, Value>>(text)
        .map_err(|e| DataError::row(path, row, "?", format!("not a JSON object: {e}")))
}

pub(super) fn jsonl_columns(path: &Path) -> Result<Vec<ColumnInfo>> {
    let Some(first) = lines(path)?.next() else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    };
    let (row, line) = first?;
    let record = parse_record(path, row, &line)?;
    Ok(record
        .iter()
        .map(|(k, v)| ColumnInfo {
            name: k.clone(),
            kind: json_kind(v).into(),
        })
        .collect())
}

pub(super) fn jsonl_len(path: &Path) -> Result<usize> {
    let mut n = 0;
    for l in lines(path)? {
        l?;
        n += 1;
    }
    Ok(n)
}

pub(super) fn jsonl_rows<'a>(path: &'a Path, image: Option<&'a str>) -> Result<Rows<'a>> {
    let names: Arc<[String]> = jsonl_columns(path)?
        .into_iter()
        .map(|c| c.name)
        .filter(|n| Some(n.as_str()) != image)
        .collect();
    let file: Arc<Path> = Arc::from(path);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok(Box::new(lines(path)?.map(move |l| {
        let (index, line) = l?;
        let mut record = parse_record(path, index, &line)?;
        let image = match image {
            None => None,
            Some(col) => {
                let v = record.remove(col).unwrap_or(Value::Null);
                Some(json_image(&v, &base).map_err(|r| DataError::row(path, index, col, r))?)
            }
        };
        let values = names
            .iter()
            .map(|n| match record.get(n) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            })
            .collect();
        Ok(Row {
            index,
            file: file.clone(),
            image,
            names: names.clone(),
            values,
        })
    })))
}

/// A JSON image cell: a path / base64 / data-URI string, or a `{bytes, path}` object whose bytes
/// are base64 (or a list of byte values, as `datasets.to_json` writes them).
fn json_image(v: &Value, base: &Path) -> std::result::Result<ImageRef, String> {
    match v {
        Value::String(s) => image_from_str(s, base),
        Value::Object(m) => {
            match m.get("bytes") {
                Some(Value::String(s)) if !s.is_empty() => {
                    return image_from_str(&format!("data:image;base64,{s}"), base);
                }
                Some(Value::Array(items)) => {
                    let bytes: Option<Vec<u8>> = items
                        .iter()
                        .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    return bytes
                        .map(ImageRef::Bytes)
                        .ok_or_else(|| "image bytes list holds non-byte values".to_string());
                }
                _ => {}
            }
            match m.get("path") {
                Some(Value::String(p)) => image_from_str(p, base),
                _ => Err("image object has neither bytes nor path".into()),
            }
        }
        Value::Null => Err("image is null".into()),
        other => Err(format!(
            "image has JSON type {}, expected a string or {{bytes, path}}",
            json_kind(other)
        )),
    }
}

fn csv_reader(path: &Path) -> Result<csv::Reader<BufReader<File>>> {
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(open(path)?))
}

fn csv_headers(path: &Path, r: &mut csv::Reader<BufReader<File>>) -> Result<Vec<String>> {
    let h = r
        .byte_headers()
        .map_err(|e| DataError::format(path, format!("bad CSV header: {e}")))?;
    h.iter()
        .map(|f| {
            String::from_utf8(f.to_vec())
                .map_err(|_| DataError::format(path, "CSV header is not valid UTF-8"))
        })
        .collect()
}

pub(super) fn csv_columns(path: &Path) -> Result<Vec<ColumnInfo>> {
    let mut r = csv_reader(path)?;
    let headers = csv_headers(path, &mut r)?;
    if headers.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(headers
        .into_iter()
        .map(|name| ColumnInfo {
            name,
            kind: "string".into(),
        })
        .collect())
}

pub(super) fn csv_len(path: &Path) -> Result<usize> {
    let mut r = csv_reader(path)?;
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    loop {
        match r.read_byte_record(&mut rec) {
            Ok(true) => n += 1,
            Ok(false) => return Ok(n),
            Err(e) => return Err(DataError::row(path, n, "?", format!("bad CSV record: {e}"))),
        }
    }
}

pub(super) fn csv_rows<'a>(path: &'a Path, image: Option<&'a str>) -> Result<Rows<'a>> {
    let mut r = csv_reader(path)?;
    let headers = csv_headers(path, &mut r)?;
    let image_at = image.and_then(|c| headers.iter().position(|h| h == c));
    let names: Arc<[String]> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != image_at)
        .map(|(_, h)| h.clone())
        .collect();
    let file: Arc<Path> = Arc::from(path);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut index = 0usize;
    let mut failed = false;
    let mut rec = csv::ByteRecord::new();
    Ok(Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let row = index;
        match r.read_byte_record(&mut rec) {
            Ok(false) => return None,
            Ok(true) => index += 1,
            Err(e) => {
                // The csv crate cannot resynchronise after a malformed record; stop here.
                failed = true;
                return Some(Err(DataError::format(
                    path,
                    format!("row {row}: bad CSV record: {e}"),
                )));
            }
        }
        Some(csv_row(&rec, row, &headers, image_at, &names, &file, &base))
    })))
}

fn csv_row(
    rec: &csv::ByteRecord,
    index: usize,
    headers: &[String],
    image_at: Option<usize>,
    names: &Arc<[String]>,
    file: &Arc<Path>,
    base: &Path,
) -> Result<Row> {
    let mut values = Vec::with_capacity(names.len());
    let mut image = None;
    for (i, field) in rec.iter().enumerate() {
        let column = &headers[i];
        let text = std::str::from_utf8(field)
            .map_err(|_| DataError::row(file.as_ref(), index, column, "text is not valid UTF-8"))?;
        if Some(i) == image_at {
            image = Some(
                image_from_str(text, base)
                    .map_err(|r| DataError::row(file.as_ref(), index, column, r))?,
            );
        } else {
            // An empty CSV field is a missing value, as `datasets` (via pandas) reads it.
            values.push((!text.is_empty()).then(|| text.to_string()));
        }
    }
    Ok(Row {
        index,
        file: file.clone(),
        image,
        names: names.clone(),
        values,
    })
}
