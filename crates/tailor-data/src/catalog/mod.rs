//! Catalog readers: one streaming row interface over parquet (Hugging Face datasets layout), JSON
//! Lines, CSV, image folders with a metadata sidecar, and the embedded synthetic sample.
//!
//! Rows are read lazily and images stay encoded (bytes or a path) until a consumer decodes them, so
//! memory stays bounded whatever the catalog's size.

mod hf_parquet;
mod text;
pub mod write;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;

use crate::error::{DataError, Result};
use crate::synth::{self, SynthConfig};

/// Which source column plays which role.
///
/// The defaults ([`ColumnMap::deepfashion`]) are the column names of Marqo/deepfashion-multimodal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The image column (parquet `{bytes, path}` struct, binary, a path or base64 string).
    pub image: String,
    /// The first category level (e.g. `WOMEN`).
    pub category1: String,
    /// The second category level (e.g. `dresses`).
    pub category2: String,
    /// The description.
    pub text: String,
    /// The column that identifies a product, for grouped splits (e.g. `item_ID`).
    pub group: String,
}

impl ColumnMap {
    /// The column names of Marqo/deepfashion-multimodal.
    pub fn deepfashion() -> Self {
        ColumnMap {
            image: "image".into(),
            category1: "category1".into(),
            category2: "category2".into(),
            text: "text".into(),
            group: "item_ID".into(),
        }
    }

    /// The roles that every catalog must provide, with the flag that maps each.
    fn required(&self) -> [(&str, &'static str); 4] {
        [
            (&self.image, "image-column"),
            (&self.category1, "category1-column"),
            (&self.category2, "category2-column"),
            (&self.text, "text-column"),
        ]
    }
}

/// The file layout a catalog was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One or more parquet files (Hugging Face datasets layout).
    Parquet,
    /// JSON Lines.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// A folder of images with `metadata.jsonl` or `metadata.csv`, as HF's imagefolder.
    ImageFolder,
    /// The synthetic sample catalog built into tailor.
    Sample,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::ImageFolder => "imagefolder",
            Format::Sample => "embedded sample",
        })
    }
}

/// A column of the catalog and its storage type as the source declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Storage type (`string`, `int64`, `struct<bytes: binary, path: string>`, …).
    pub kind: String,
}

/// An image that has not been decoded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// Encoded image bytes held in the row (parquet bytes, base64 in JSON/CSV).
    Bytes(Vec<u8>),
    /// A file, already resolved against the catalog file's folder.
    Path(PathBuf),
}

impl ImageRef {
    /// The encoded bytes, reading the file for a path.
    pub fn bytes(&self) -> std::io::Result<Cow<'_, [u8]>> {
        match self {
            ImageRef::Bytes(b) => Ok(Cow::Borrowed(b)),
            ImageRef::Path(p) => std::fs::read(p).map(Cow::Owned),
        }
    }

    /// A short human description (`<3172 bytes>` or the path).
    pub fn describe(&self) -> String {
        match self {
            ImageRef::Bytes(b) => format!("<{} bytes>", b.len()),
            ImageRef::Path(p) => p.display().to_string(),
        }
    }
}

/// One catalog row: scalar columns as text, the image still encoded.
#[derive(Debug, Clone)]
pub struct Row {
    /// 0-based index of the row in the catalog.
    pub index: usize,
    /// The file the row came from (for error messages).
    pub file: Arc<Path>,
    /// The image, when images were requested.
    pub image: Option<ImageRef>,
    names: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    /// Builds a row from column values (for generated catalogs and tests).
    pub fn new(
        index: usize,
        file: Arc<Path>,
        image: Option<ImageRef>,
        columns: Vec<(String, Option<String>)>,
    ) -> Row {
        let (names, values): (Vec<String>, Vec<Option<String>>) = columns.into_iter().unzip();
        Row {
            index,
            file,
            image,
            names: names.into(),
            values,
        }
    }

    /// The value of a scalar column; `None` when the column is absent or null.
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| n == column)?;
        self.values[i].as_deref()
    }

    /// The value of a column that must be present and non-null.
    pub fn require(&self, column: &str) -> Result<&str> {
        if !self.names.iter().any(|n| n == column) {
            return Err(DataError::row(
                self.file.as_ref(),
                self.index,
                column,
                "column missing in this row",
            ));
        }
        self.get(column)
            .ok_or_else(|| DataError::row(self.file.as_ref(), self.index, column, "value is null"))
    }

    /// Every scalar column with its value, in catalog order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter().map(|v| v.as_deref()))
    }

    /// The image, or an error naming the row when it was not read.
    pub fn image(&self, column: &str) -> Result<&ImageRef> {
        self.image
            .as_ref()
            .ok_or_else(|| DataError::row(self.file.as_ref(), self.index, column, "image is null"))
    }

    /// An error about this row and column.
    pub fn error(&self, column: &str, reason: impl std::fmt::Display) -> DataError {
        DataError::row(self.file.as_ref(), self.index, column, reason)
    }
}

/// A stream of rows. Row-level problems come out as [`DataError::Row`] items and reading goes on
/// after them; any other error ends the stream.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<Row>> + 'a>;

#[derive(Debug, Clone)]
enum Source {
    Parquet(Vec<PathBuf>),
    Jsonl(PathBuf),
    Csv(PathBuf),
    Sample(SynthConfig),
}

/// An opened catalog: its layout, columns and column mapping. Opening reads only metadata (or the
/// first record of a text file); rows are read by [`Catalog::rows`].
#[derive(Debug, Clone)]
pub struct Catalog {
    format: Format,
    origin: PathBuf,
    source: Source,
    columns: Vec<ColumnInfo>,
    map: ColumnMap,
    /// The column that actually holds the image (HF imagefolder names it `file_name`).
    image_column: String,
}

impl Catalog {
    /// Opens a catalog, detecting its layout from the path:
    ///
    /// - a `.parquet` file, a folder of `.parquet` shards, or a dataset folder with `data/*.parquet`;
    /// - a `.jsonl` / `.json` (JSON Lines) or `.csv` file;
    /// - a folder with `metadata.jsonl` or `metadata.csv` (HF imagefolder: `file_name` holds the
    ///   image path relative to the metadata file).
    ///
    /// Fails with [`DataError::MissingColumn`] when a column of `map` (other than the group column,
    /// which only grouped splits need) is absent.
    pub fn open(path: &Path, map: &ColumnMap) -> Result<Catalog> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let (format, source) = if meta.is_dir() {
            detect_folder(path)?
        } else {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            match ext.as_deref() {
                Some("parquet") => (Format::Parquet, Source::Parquet(vec![path.to_path_buf()])),
                Some("jsonl") | Some("json") | Some("ndjson") => {
                    (Format::Jsonl, Source::Jsonl(path.to_path_buf()))
                }
                Some("csv") => (Format::Csv, Source::Csv(path.to_path_buf())),
                _ => {
                    return Err(DataError::format(
                        path,
                        "unknown catalog format (expected .parquet, .jsonl, .csv or a folder)",
                    ));
                }
            }
        };
        let columns = match &source {
            Source::Parquet(files) => hf_parquet::columns(files)?,
            Source::Jsonl(file) => text::jsonl_columns(file)?,
            Source::Csv(file) => text::csv_columns(file)?,
            Source::Sample(_) => unreachable!("folders never resolve to the sample"),
        };
        let mut image_column = map.image.clone();
        if format == Format::ImageFolder
            && !columns.iter().any(|c| c.name == image_column)
            && columns.iter().any(|c| c.name == "file_name")
        {
            image_column = "file_name".into();
        }
        let catalog = Catalog {
            format,
            origin: path.to_path_buf(),
            source,
            columns,
            map: map.clone(),
            image_column,
        };
        catalog.check_columns()?;
        Ok(catalog)
    }

    /// The synthetic sample catalog built into tailor (see [`crate::synth`]): every `tailor data`
    /// command works on it with no file and no download.
    pub fn sample() -> Catalog {
        Catalog::synthetic(SynthConfig::sample())
    }

    /// A synthetic catalog with the given settings.
    pub fn synthetic(cfg: SynthConfig) -> Catalog {
        let columns = SAMPLE_COLUMNS
            .iter()
            .map(|(name, kind)| ColumnInfo {
                name: name.to_string(),
                kind: kind.to_string(),
            })
            .collect();
        Catalog {
            format: Format::Sample,
            origin: PathBuf::from("<embedded sample>"),
            source: Source::Sample(cfg),
            columns,
            map: ColumnMap::deepfashion(),
            image_column: "image".into(),
        }
    }

    fn check_columns(&self) -> Result<()> {
        for (role, flag) in self.map.required() {
            let column = if role == self.map.image {
                &self.image_column
            } else {
                role
            };
            let Some(info) = self.columns.iter().find(|c| c.name == column) else {
                return Err(self.missing(column, flag));
            };
            let is_image = *column == self.image_column;
            let ok = if is_image {
                info.kind.starts_with("struct")
                    || matches!(info.kind.as_str(), "binary" | "string" | "object")
            } else {
                matches!(info.kind.as_str(), "string" | "null")
            };
            if !ok {
                return Err(DataError::ColumnType {
                    path: self.first_file().to_path_buf(),
                    column: column.to_string(),
                    found: info.kind.clone(),
                    expected: if is_image {
                        "struct<bytes, path>, binary, or a path / base64 string".into()
                    } else {
                        "string".into()
                    },
                });
            }
        }
        Ok(())
    }

    fn missing(&self, column: &str, flag: &str) -> DataError {
        DataError::MissingColumn {
            path: self.first_file().to_path_buf(),
            column: column.to_string(),
            available: self
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            flag: flag.to_string(),
        }
    }

    /// Fails with [`DataError::MissingColumn`] unless `column` exists; `flag` is the option that
    /// named it, quoted in the message.
    pub fn require_column(&self, column: &str, flag: &str) -> Result<()> {
        if self.columns.iter().any(|c| c.name == column) {
            Ok(())
        } else {
            Err(self.missing(column, flag))
        }
    }

    fn first_file(&self) -> &Path {
        match &self.source {
            Source::Parquet(files) => files.first().map(PathBuf::as_path).unwrap_or(&self.origin),
            Source::Jsonl(f) | Source::Csv(f) => f,
            Source::Sample(_) => &self.origin,
        }
    }

    /// The layout the catalog was read from.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The path the catalog was opened from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The data files (parquet shards, the JSONL/CSV file; empty for the sample).
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.source {
            Source::Parquet(files) => files.clone(),
            Source::Jsonl(f) | Source::Csv(f) => vec![f.clone()],
            Source::Sample(_) => Vec::new(),
        }
    }

    /// The columns, image column included, in source order.
    pub fn columns(&self) -> &[ColumnInfo] {
        &self.columns
    }

    /// The column mapping.
    pub fn map(&self) -> &ColumnMap {
        &self.map
    }

    /// The column that holds the image.
    pub fn image_column(&self) -> &str {
        &self.image_column
    }

    /// The number of rows. Free for parquet (footer metadata) and the sample; one pass without
    /// image decoding for text formats.
    pub fn row_count(&self) -> Result<usize> {
        let n = match &self.source {
            Source::Parquet(files) => hf_parquet::row_count(files)?,
            Source::Jsonl(file) => text::jsonl_len(file)?,
            Source::Csv(file) => text::csv_len(file)?,
            Source::Sample(cfg) => synth::len(cfg),
        };
        if n == 0 {
            return Err(DataError::Empty {
                path: self.origin.clone(),
            });
        }
        Ok(n)
    }

    /// Streams the rows in order. With `with_images` false the image column is not even read
    /// (parquet projection), which makes passes over categories and groups cheap.
    pub fn rows(&self, with_images: bool) -> Result<Rows<'_>> {
        let image = with_images.then_some(self.image_column.as_str());
        match &self.source {
            Source::Parquet(files) => hf_parquet::rows(files, image),
            Source::Jsonl(file) => text::jsonl_rows(file, image),
            Source::Csv(file) => text::csv_rows(file, image),
            Source::Sample(cfg) => Ok(sample_rows(cfg, with_images)),
        }
    }
}

/// The sample's columns in the recipe's schema; the values of the non-image ones follow this order.
const SAMPLE_COLUMNS: [(&str, &str); 5] = [
    ("image", "struct<bytes: binary, path: string>"),
    ("category1", "string"),
    ("category2", "string"),
    ("text", "string"),
    ("item_ID", "string"),
];

fn sample_rows(cfg: &SynthConfig, with_images: bool) -> Rows<'static> {
    let names: Arc<[String]> = SAMPLE_COLUMNS
        .iter()
        .filter(|(n, _)| *n != "image")
        .map(|(n, _)| n.to_string())
        .collect();
    let file: Arc<Path> = Arc::from(Path::new("<embedded sample>"));
    let cfg = cfg.clone();
    let n = synth::len(&cfg);
    Box::new((0..n).map(move |index| {
        let mut row = synth::row(&cfg, index);
        Ok(Row {
            index,
            file: file.clone(),
            image: with_images.then(|| ImageRef::Bytes(std::mem::take(&mut row.image))),
            values: vec![
                Some(row.category1),
                Some(row.category2),
                Some(row.text),
                Some(row.item_id),
            ],
            names: names.clone(),
        })
    }))
}

fn detect_folder(path: &Path) -> Result<(Format, Source)> {
    for name in ["metadata.jsonl", "metadata.csv"] {
        let meta = path.join(name);
        if meta.is_file() {
            let source = if name.ends_with("jsonl") {
                Source::Jsonl(meta)
            } else {
                Source::Csv(meta)
            };
            return Ok((Format::ImageFolder, source));
        }
    }
    let data = path.join("data");
    let shard_dir = if data.is_dir() && !parquet_files(&data)?.is_empty() {
        data
    } else {
        path.to_path_buf()
    };
    let files = parquet_files(&shard_dir)?;
    if files.is_empty() {
        return Err(DataError::format(
            path,
            "folder holds no catalog: expected *.parquet shards, data/*.parquet, or metadata.jsonl / metadata.csv beside images",
        ));
    }
    Ok((Format::Parquet, Source::Parquet(files)))
}

/// Parquet shards of a folder in name order, which is HF's `-00000-of-00002` order.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let p = entry.path();
        if p.is_file()
            && p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Interprets a string image cell: a `data:` URI, bare base64 (recognised by having no `.`, which
/// every image path with an extension has and the base64 alphabet lacks), or a path relative to
/// `base`.
pub(crate) fn image_from_str(value: &str, base: &Path) -> std::result::Result<ImageRef, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("image value is empty".into());
    }
    if let Some(rest) = value.strip_prefix("data:") {
        let (_, payload) = rest
            .split_once(";base64,")
            .ok_or("data URI is not base64 (expected data:<type>;base64,<data>)")?;
        return decode_base64(payload).map(ImageRef::Bytes);
    }
    if value.len() >= 64 && !value.contains('.') {
        return decode_base64(value).map(ImageRef::Bytes);
    }
    let p = Path::new(value);
    Ok(ImageRef::Path(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }))
}

fn decode_base64(s: &str) -> std::result::Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("invalid base64 image data: {e}"))
}

#[cfg(test)]
mod tests;
