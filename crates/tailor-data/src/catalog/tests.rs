use std::path::Path;

use proptest::prelude::*;

use super::write::{Record, TextImages, write_csv, write_imagefolder, write_jsonl, write_parquet};
use super::*;

pub(crate) fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed.wrapping_add(x as u8), y as u8, seed])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub(crate) fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            image: png(8 + i as u32 % 5, 6, i as u8),
            image_name: format!("{i:05}.png"),
            columns: vec![
                (
                    "category1".into(),
                    Some(if i % 3 == 0 { "MEN" } else { "WOMEN" }.into()),
                ),
                (
                    "category2".into(),
                    Some(["tees", "dresses", "pants"][i % 3].into()),
                ),
                ("text".into(), Some(format!("This female wears item {i}."))),
                (
                    "item_ID".into(),
                    Some(format!("WOMEN-Tees-id_{:08}-01_{}_front", i / 2, i % 2)),
                ),
            ],
        })
        .collect()
}

fn read_all(c: &Catalog, with_images: bool) -> Vec<Row> {
    c.rows(with_images).unwrap().map(|r| r.unwrap()).collect()
}

fn check_roundtrip(c: &Catalog, n: usize) {
    assert_eq!(c.row_count().unwrap(), n);
    let rows = read_all(c, true);
    let expected = records(n);
    assert_eq!(rows.len(), n);
    for (row, rec) in rows.iter().zip(&expected) {
        for (k, v) in &rec.columns {
            assert_eq!(row.get(k), v.as_deref(), "row {} column {k}", row.index);
        }
        assert_eq!(
            row.image.as_ref().unwrap().bytes().unwrap().as_ref(),
            &rec.image[..]
        );
    }
    assert!(read_all(c, false).iter().all(|r| r.image.is_none()));
}

#[test]
fn parquet_file_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cat.parquet");
    assert_eq!(write_parquet(&p, records(250)).unwrap(), 250);
    let c = Catalog::open(&p, &ColumnMap::deepfashion()).unwrap();
    assert_eq!(c.format(), Format::Parquet);
    assert_eq!(c.columns()[0].kind, "struct<bytes: binary, path: string>");
    check_roundtrip(&c, 250);
}

#[test]
fn parquet_dataset_folder_and_shards_keep_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(30);
    write_parquet(
        &dir.path().join("data/train-00001-of-00002.parquet"),
        all[17..].to_vec(),
    )
    .unwrap();
    write_parquet(
        &dir.path().join("data/train-00000-of-00002.parquet"),
        all[..17].to_vec(),
    )
    .unwrap();
    let c = Catalog::open(dir.path(), &ColumnMap::deepfashion()).unwrap();
    assert_eq!(c.files().len(), 2);
    check_roundtrip(&c, 30);
    let shards = Catalog::open(&dir.path().join("data"), &ColumnMap::deepfashion()).unwrap();
    check_roundtrip(&shards, 30);
    let idx: Vec<usize> = read_all(&c, false).iter().map(|r| r.index).collect();
    assert_eq!(idx, (0..30).collect::<Vec<_>>());
}

#[test]
fn parquet_image_path_resolves_against_the_file() {
    // HF datasets stores `{bytes: null, path}` when images live beside the parquet file.
    use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
    use arrow_schema::{DataType, Field, Fields, Schema};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), png(5, 5, 1)).unwrap();
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let image = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(BinaryArray::from(vec![None::<&[u8]>])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("a.png")])) as ArrayRef,
        ],
        None,
    );
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(fields), true),
        Field::new("category1", DataType::Utf8, true),
        Field::new("category2", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(image), s("MEN"), s("tees"), s("t")],
    )
    .unwrap();
    let p = dir.path().join("c.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let c = Catalog::open(&p, &ColumnMap::deepfashion()).unwrap();
    let row = &read_all(&c, true)[0];
    assert_eq!(row.image, Some(ImageRef::Path(dir.path().join("a.png"))));
    assert_eq!(
        row.image.as_ref().unwrap().bytes().unwrap().as_ref(),
        &png(5, 5, 1)[..]
    );
}

#[test]
fn jsonl_csv_and_imagefolder_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    for images in [TextImages::Base64, TextImages::Files] {
        let sub = dir.path().join(format!("{images:?}"));
        let j = sub.join("cat.jsonl");
        write_jsonl(&j, records(12), images, "image").unwrap();
        let c = Catalog::open(&j, &ColumnMap::deepfashion()).unwrap();
        assert_eq!(c.format(), Format::Jsonl);
        check_roundtrip(&c, 12);
        let s = sub.join("cat.csv");
        write_csv(&s, records(12), images, "image").unwrap();
        let c = Catalog::open(&s, &ColumnMap::deepfashion()).unwrap();
        assert_eq!(c.format(), Format::Csv);
        check_roundtrip(&c, 12);
    }
    let folder = dir.path().join("folder");
    write_imagefolder(&folder, records(7)).unwrap();
    let c = Catalog::open(&folder, &ColumnMap::deepfashion()).unwrap();
    assert_eq!(c.format(), Format::ImageFolder);
    assert_eq!(c.image_column(), "file_name");
    check_roundtrip(&c, 7);
}

#[test]
fn data_uri_and_base64_and_paths() {
    let base = Path::new("/data");
    let b = image_from_str("data:image/png;base64,AAEC", base).unwrap();
    assert_eq!(b, ImageRef::Bytes(vec![0, 1, 2]));
    assert_eq!(
        image_from_str("imgs/a.jpg", base).unwrap(),
        ImageRef::Path("/data/imgs/a.jpg".into())
    );
    let long = "A".repeat(64);
    assert!(matches!(
        image_from_str(&long, base).unwrap(),
        ImageRef::Bytes(_)
    ));
    assert!(image_from_str("", base).is_err());
    assert!(image_from_str("data:image/png,xyz", base).is_err());
}

#[test]
fn missing_and_mistyped_columns_name_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cat.parquet");
    write_parquet(&p, records(3)).unwrap();
    let mut map = ColumnMap::deepfashion();
    map.category2 = "kind".into();
    let err = Catalog::open(&p, &map).unwrap_err().to_string();
    assert!(
        err.contains("cat.parquet") && err.contains("`kind`") && err.contains("category2"),
        "{err}"
    );

    let j = dir.path().join("typed.jsonl");
    std::fs::write(
        &j,
        "{\"image\": \"a.png\", \"category1\": 3, \"category2\": \"x\", \"text\": \"t\"}\n",
    )
    .unwrap();
    let err = Catalog::open(&j, &ColumnMap::deepfashion())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("typed.jsonl") && err.contains("category1") && err.contains("number"),
        "{err}"
    );
}

#[test]
fn bad_rows_are_reported_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("bad.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(
        b"{\"image\": \"a.png\", \"category1\": \"MEN\", \"category2\": \"x\", \"text\": \"ok\"}\n",
    );
    bytes.extend_from_slice(b"{\"image\": \"a.png\", \"category1\": \"MEN\", \"category2\": \"x\", \"text\": \"bad \xff\"}\n");
    bytes.extend_from_slice(b"not json\n");
    bytes.extend_from_slice(
        b"{\"image\": null, \"category1\": \"MEN\", \"category2\": \"x\", \"text\": \"t\"}\n",
    );
    bytes.extend_from_slice(b"{\"image\": \"b.png\", \"category1\": \"WOMEN\", \"category2\": \"y\", \"text\": \"ok2\"}\n");
    std::fs::write(&j, bytes).unwrap();
    let c = Catalog::open(&j, &ColumnMap::deepfashion()).unwrap();
    let out: Vec<_> = c.rows(true).unwrap().collect();
    assert_eq!(out.len(), 5);
    let errs: Vec<String> = out
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs.len(), 3);
    assert!(
        errs[0].contains("row 1") && errs[0].contains("`text`") && errs[0].contains("UTF-8"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("row 2") && errs[1].contains("JSON"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("row 3") && errs[2].contains("`image`") && errs[2].contains("null"),
        "{}",
        errs[2]
    );
    assert_eq!(out[4].as_ref().unwrap().get("text"), Some("ok2"));

    let s = dir.path().join("bad.csv");
    std::fs::write(
        &s,
        b"image,category1,category2,text\na.png,MEN,x,fine\na.png,MEN,x,\xfe\xff\n",
    )
    .unwrap();
    let c = Catalog::open(&s, &ColumnMap::deepfashion()).unwrap();
    let out: Vec<_> = c.rows(true).unwrap().collect();
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("bad.csv") && err.contains("row 1") && err.contains("`text`"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_a_parquet_string_column_names_the_row() {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("raw.parquet");
    let schema = Arc::new(
        parse_message_type(
            "message m { required binary image; required binary category1 (UTF8);
             required binary category2 (UTF8); required binary text (UTF8); }",
        )
        .unwrap(),
    );
    let file = std::fs::File::create(&p).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let texts: Vec<&[u8]> = vec![b"fine", b"fine", b"bad \xff", b"fine"];
    let cols: Vec<Vec<ByteArray>> = vec![
        texts
            .iter()
            .map(|_| ByteArray::from(png(4, 4, 0)))
            .collect(),
        texts.iter().map(|_| ByteArray::from("WOMEN")).collect(),
        texts.iter().map(|_| ByteArray::from("tees")).collect(),
        texts.iter().map(|t| ByteArray::from(t.to_vec())).collect(),
    ];
    for values in cols {
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
    let c = Catalog::open(&p, &ColumnMap::deepfashion()).unwrap();
    let out: Vec<_> = c.rows(false).unwrap().collect();
    let oks = out.iter().filter(|r| r.is_ok()).count();
    let errs: Vec<String> = out
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("raw.parquet") && errs[0].contains("row 2"),
        "{}",
        errs[0]
    );
    assert_eq!(oks, 3);
}

#[test]
fn empty_and_unreadable_catalogs() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("empty.jsonl");
    std::fs::write(&j, "\n\n").unwrap();
    assert!(
        Catalog::open(&j, &ColumnMap::deepfashion())
            .unwrap_err()
            .to_string()
            .contains("no rows")
    );
    let missing = dir.path().join("nope.parquet");
    let err = Catalog::open(&missing, &ColumnMap::deepfashion())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.parquet"), "{err}");
    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"definitely not parquet").unwrap();
    let err = Catalog::open(&junk, &ColumnMap::deepfashion())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("junk.parquet") && err.contains("parquet"),
        "{err}"
    );
    let txt = dir.path().join("x.txt");
    std::fs::write(&txt, "hi").unwrap();
    assert!(Catalog::open(&txt, &ColumnMap::deepfashion()).is_err());
    assert!(Catalog::open(dir.path(), &ColumnMap::deepfashion()).is_err());
}

#[test]
fn sample_catalog_reads_like_any_other() {
    let c = Catalog::sample();
    let n = c.row_count().unwrap();
    assert!(n > 0);
    let rows = read_all(&c, true);
    assert_eq!(rows.len(), n);
    assert!(
        rows.iter()
            .all(|r| r.get("category2").is_some() && r.image.is_some())
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Truncated or bit-flipped parquet files give errors, never panics.
    #[test]
    fn corrupt_parquet_never_panics(cut in 0usize..4000, flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..6)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.parquet");
        write_parquet(&p, records(20)).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        if cut < bytes.len() && cut % 3 == 0 {
            bytes.truncate(cut);
        }
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(c) = Catalog::open(&p, &ColumnMap::deepfashion())
            && let Ok(rows) = c.rows(true)
        {
            for r in rows.take(100) {
                let _ = r;
            }
        }
    }
}
