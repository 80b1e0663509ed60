//! End-to-end tests of the `tailor` binary: the commands a user runs, on catalogs written to disk.

use std::path::Path;
use std::process::{Command, Output};

fn tailor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .env_remove("TAILOR_DATASET")
        .output()
        .expect("run tailor")
}

fn ok(args: &[&str]) -> String {
    let out = tailor(args);
    assert!(
        out.status.success(),
        "tailor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = tailor(args);
    assert!(!out.status.success(), "tailor {args:?} should fail");
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8(out.stderr).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn help_explains_every_data_command() {
    let top = ok(&["--help"]);
    assert!(top.contains("data"));
    let data = ok(&["data", "--help"]);
    for cmd in ["stats", "split", "preview", "synth"] {
        assert!(data.contains(cmd), "{data}");
    }
    let split = ok(&["data", "split", "--help"]);
    assert!(split.contains("train_test_split") && split.contains("--group-pattern"));
}

#[test]
fn stats_on_the_embedded_sample_needs_nothing() {
    let out = ok(&["data", "stats"]);
    for needle in [
        "embedded sample",
        "category2",
        "image tokens / image",
        "per epoch",
        "random split",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn stats_json_reports_group_leak() {
    let out = ok(&[
        "data",
        "stats",
        "--json",
        "--group-by",
        "item_ID",
        "--group-pattern",
        r"id_(\d+)",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_u64().unwrap();
    assert!(rows > 100);
    let g = &v["groups"];
    assert!(g["groups"].as_u64().unwrap() < rows);
    assert!(g["random_split_leak"]["leaked_groups"].as_u64().unwrap() > 0);
    assert!(g["grouped_split_sizes"]["Ok"].is_array(), "{g}");
}

fn read_split(dir: &Path) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("split.json")).unwrap()).unwrap();
    let get = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    (get("train"), get("valid"), get("test"))
}

#[test]
fn split_writes_a_partition_and_grouped_split_keeps_products_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat.parquet");
    ok(&["data", "synth", "--out", p(&cat), "--rows", "120"]);
    let random = dir.path().join("random");
    ok(&["data", "split", "--dataset", p(&cat), "--out", p(&random)]);
    let (tr, va, te) = read_split(&random);
    assert_eq!((tr.len(), va.len(), te.len()), (96, 12, 12));
    let mut all: Vec<u64> = tr.iter().chain(&va).chain(&te).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..120).collect::<Vec<_>>());

    let grouped = dir.path().join("grouped");
    ok(&[
        "data",
        "split",
        "--dataset",
        p(&cat),
        "--out",
        p(&grouped),
        "--group-by",
        "item_ID",
        "--group-pattern",
        r"id_(\d+)",
    ]);
    let (tr, va, te) = read_split(&grouped);
    assert_eq!(tr.len() + va.len() + te.len(), 120);
    // Read the product of every row back through stats' JSON is overkill; use the JSONL export.
    let jsonl = dir.path().join("cat.jsonl");
    ok(&["data", "synth", "--out", p(&jsonl), "--rows", "120"]);
    let products: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let id = v["item_ID"].as_str().unwrap();
            id.split("id_").nth(1).unwrap()[..8].to_string()
        })
        .collect();
    let of = |rows: &[u64]| -> std::collections::HashSet<String> {
        rows.iter().map(|&r| products[r as usize].clone()).collect()
    };
    assert!(
        of(&tr).is_disjoint(&of(&va))
            && of(&tr).is_disjoint(&of(&te))
            && of(&va).is_disjoint(&of(&te))
    );
}

/// `--width/--height` draw at the asked size and `--caption` adds the generic caption column.
#[test]
fn synth_draws_at_the_asked_size_with_captions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.parquet");
    ok(&[
        "data",
        "synth",
        "--out",
        p(&path),
        "--rows",
        "9",
        "--width",
        "112",
        "--height",
        "168",
        "--caption",
    ]);
    let json = ok(&["data", "stats", "--json", "--dataset", p(&path)]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["common_sizes"],
        serde_json::json!([[112, 168, 9]]),
        "{json}"
    );
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(columns.contains(&"caption"), "{columns:?}");
}

#[test]
fn every_layout_reads_the_same_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for out in ["c.parquet", "c.jsonl", "c.csv", "folder"] {
        let path = dir.path().join(out);
        ok(&["data", "synth", "--out", p(&path), "--rows", "40"]);
        let json = ok(&["data", "stats", "--json", "--dataset", p(&path)]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["rows"], 40, "{out}");
        reports.push((
            v["category2"].clone(),
            v["tokens"].clone(),
            v["image_tokens"].clone(),
        ));
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "{reports:?}");
}

#[test]
fn preview_shows_the_chat_and_its_labels() {
    let out = ok(&["data", "preview", "--rows", "1"]);
    assert!(out.contains("── row 0 ──"), "{out}");
    assert!(
        out.contains("What is this product?") && out.contains("labels:"),
        "{out}"
    );
    assert!(out.contains("<|image_pad|>×"), "{out}");
}

#[test]
fn bad_input_names_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("c.jsonl");
    ok(&["data", "synth", "--out", p(&cat), "--rows", "6"]);
    // Corrupt row 2's image and drop row 4's text.
    let lines: Vec<String> = std::fs::read_to_string(&cat)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if i == 2 {
                v["image"] =
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAADUlEQVR42mNkYPj".into();
            }
            if i == 4 {
                v["text"] = serde_json::Value::Null;
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&cat, lines.join("\n")).unwrap();
    let err = fails(&["data", "stats", "--dataset", p(&cat)]);
    assert!(
        err.contains("c.jsonl") && err.contains("row 2") && err.contains("`image`"),
        "{err}"
    );
    let out = ok(&[
        "data",
        "stats",
        "--dataset",
        p(&cat),
        "--skip-bad",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["skipped_rows"], 2);
    assert!(v["skipped_examples"][1].as_str().unwrap().contains("row 4"));

    let err = fails(&[
        "data",
        "stats",
        "--dataset",
        p(&cat),
        "--category2-column",
        "kind",
    ]);
    assert!(err.contains("c.jsonl") && err.contains("`kind`"), "{err}");
    let err = fails(&[
        "data",
        "stats",
        "--dataset",
        p(&dir.path().join("missing.parquet")),
    ]);
    assert!(err.contains("missing.parquet"), "{err}");
    let err = fails(&[
        "data",
        "split",
        "--out",
        p(dir.path()),
        "--group-by",
        "nope",
    ]);
    assert!(err.contains("`nope`"), "{err}");
}

fn fixture_model(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(name)
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn predict_writes_one_line_per_image_in_order_and_batches_do_not_change_results() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("c.parquet");
    ok(&["data", "synth", "--out", p(&cat), "--rows", "5"]);
    let model = fixture_model("windows");
    let run = |batch: &str| {
        json_lines(&ok(&[
            "predict",
            "--model",
            p(&model),
            "--dataset",
            p(&cat),
            "--max-new-tokens",
            "6",
            "--batch-size",
            batch,
        ]))
    };
    let one = run("1");
    let three = run("3");
    assert_eq!(one.len(), 5);
    assert_eq!(one, three);
    for (i, line) in one.iter().enumerate() {
        assert_eq!(line["row"], i);
        let ids = line["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 6, "{line}");
        assert!(line["text"].is_string());
    }
}

#[test]
fn predict_reports_unreadable_images_in_their_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image/jpeg_420.jpg");
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let model = fixture_model("tied");
    let lines = json_lines(&ok(&[
        "predict",
        "--model",
        p(&model),
        "--image",
        p(&good),
        p(&bad),
        p(&good),
        "--max-new-tokens",
        "4",
    ]));
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["token_ids"].is_array() && lines[2]["token_ids"].is_array());
    assert_eq!(lines[0]["token_ids"], lines[2]["token_ids"]);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("broken.png"),
        "{}",
        lines[1]
    );
    // Seeded sampling is deterministic.
    let sample = |seed: &str| {
        ok(&[
            "predict",
            "--model",
            p(&model),
            "--image",
            p(&good),
            "--max-new-tokens",
            "6",
            "--temperature",
            "1.5",
            "--seed",
            seed,
        ])
    };
    assert_eq!(sample("7"), sample("7"));
}

#[test]
fn predict_resolves_a_repo_id_from_the_offline_hub_cache() {
    // The hub cache layout huggingface_hub writes: blobs, a snapshot of symlinks, refs/main.
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--tailor-test--tiny-vl");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(fixture_model("tied")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let blob = repo.join("blobs").join(format!("etag-{name}"));
        std::fs::copy(entry.path(), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/etag-{name}"), snap.join(&name)).unwrap();
    }
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image/jpeg_420.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args([
            "predict",
            "--model",
            "tailor-test/tiny-vl",
            "--image",
            p(&image),
            "--max-new-tokens",
            "3",
        ])
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct = ok(&[
        "predict",
        "--model",
        p(&fixture_model("tied")),
        "--image",
        p(&image),
        "--max-new-tokens",
        "3",
    ]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), direct);

    let missing = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args([
            "predict",
            "--model",
            "tailor-test/absent",
            "--image",
            p(&image),
        ])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("tailor-test/absent"));
}
