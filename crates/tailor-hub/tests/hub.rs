//! End-to-end `snapshot_download` against a loopback hub (see `support/`), checking the cache
//! against huggingface_hub's layout byte for byte and link for link.

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use support::{FakeFile, FakeHub, FakeRepo};
use tailor_hub::{
    Error, HubConfig, Progress, RepoType, snapshot_download, snapshot_download_typed,
};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "tailor-test/tiny-model";
/// The dataset repo's commit; its id is `REPO` too, to show the two namespaces never meet.
const DATASET_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// The tiny-model fixture's JSON files, a nested plain file and an LFS "weights" file.
fn tiny_repo() -> FakeRepo {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-model");
    let mut files: Vec<FakeFile> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            FakeFile::new(
                p.file_name().unwrap().to_str().unwrap(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(
        files.iter().any(|f| f.path == "config.json"),
        "fixture missing"
    );
    files[0].weak_etag = true;
    files.push(FakeFile::new(
        "sub/dir/notes.txt",
        b"nested file\n".to_vec(),
    ));
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    files.push(FakeFile {
        lfs: true,
        ..FakeFile::new("model.safetensors", weights)
    });
    FakeRepo {
        id: REPO.into(),
        commit: COMMIT.into(),
        files,
        token: None,
        old_id: None,
        dataset: false,
    }
}

/// A tiny dataset repo in the hub's layout (one LFS parquet shard under `data/`, the card, and a
/// `.gitattributes` that the dataset patterns leave out), under the same id as the model.
fn tiny_dataset() -> FakeRepo {
    // Any bytes do for the hub: only tailor-data reads them as parquet.
    let shard: Vec<u8> = b"PAR1"
        .iter()
        .copied()
        .chain((0..20_000u32).map(|i| (i * 13 % 251) as u8))
        .chain(*b"PAR1")
        .collect();
    FakeRepo {
        id: REPO.into(),
        commit: DATASET_COMMIT.into(),
        files: vec![
            FakeFile::new(
                ".gitattributes",
                b"*.parquet filter=lfs diff=lfs\n".to_vec(),
            ),
            FakeFile::new(
                "README.md",
                b"---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n"
                    .to_vec(),
            ),
            FakeFile {
                lfs: true,
                ..FakeFile::new("data/train-00000-of-00001.parquet", shard)
            },
        ],
        token: None,
        old_id: None,
        dataset: true,
    }
}

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.into(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
    }
}

/// One progress callback, owned: path, bytes done, bytes total, from cache.
type Event = (String, u64, u64, bool);

/// Runs a model download of `main` with the untyped entry point, collecting every progress event.
fn download(cfg: &HubConfig, repo: &str, allow: &[&str]) -> (Result<PathBuf, Error>, Vec<Event>) {
    recorded(|record| snapshot_download(cfg, repo, "main", allow, record))
}

/// Runs a download of `main` for a repo of the given type, collecting every progress event.
fn download_typed(
    cfg: &HubConfig,
    repo_type: RepoType,
    repo: &str,
    allow: &[&str],
) -> (Result<PathBuf, Error>, Vec<Event>) {
    recorded(|record| snapshot_download_typed(cfg, repo_type, repo, "main", allow, record))
}

fn recorded(
    run: impl FnOnce(&dyn Fn(Progress<'_>)) -> Result<PathBuf, Error>,
) -> (Result<PathBuf, Error>, Vec<Event>) {
    let events = RefCell::new(Vec::new());
    let record = |p: Progress<'_>| {
        assert!(p.index < p.count && p.done <= p.total, "{p:?}");
        events
            .borrow_mut()
            .push((p.path.to_owned(), p.done, p.total, p.cached));
    };
    let result = run(&record);
    (result, events.into_inner())
}

fn file_requests(hub: &FakeHub) -> Vec<String> {
    hub.seen()
        .into_iter()
        .filter(|s| !s.path.starts_with("/api/"))
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

/// Names in `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn cache_layout_matches_huggingface_hub() {
    let repo = tiny_repo();
    let mut hub = FakeHub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let (result, events) = download(&cfg, REPO, &[]);
    let snapshot = result.unwrap();
    let storage = cache.path().join("models--tailor-test--tiny-model");
    assert_eq!(snapshot, storage.join("snapshots").join(COMMIT));
    assert_eq!(
        fs::read_to_string(storage.join("refs/main")).unwrap(),
        COMMIT,
        "ref holds the bare commit"
    );

    // Blobs are named by the unquoted ETag (X-Linked-Etag for LFS), and nothing else is left.
    let expected_blobs: BTreeSet<String> = repo.files.iter().map(|f| f.etag()).collect();
    assert_eq!(
        names(&storage.join("blobs"))
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected_blobs
    );
    for file in &repo.files {
        let pointer = snapshot.join(&file.path);
        let target = fs::read_link(&pointer).unwrap();
        let ups = "../".repeat(file.path.matches('/').count() + 2);
        assert_eq!(
            target,
            PathBuf::from(format!("{ups}blobs/{}", file.etag())),
            "{}",
            file.path
        );
        assert_eq!(fs::read(&pointer).unwrap(), file.body, "{}", file.path);
        assert_eq!(
            fs::read(storage.join("blobs").join(file.etag())).unwrap(),
            file.body
        );
    }
    assert_eq!(names(&storage), ["blobs", "refs", "snapshots"]);
    assert!(cache.path().join("CACHEDIR.TAG").is_file());
    assert!(
        cache
            .path()
            .join(".locks/models--tailor-test--tiny-model")
            .is_dir()
    );

    // The LFS file was fetched from the CDN location given by the HEAD's redirect.
    let requests = file_requests(&hub);
    let weights = repo.files.iter().find(|f| f.lfs).unwrap();
    assert!(
        requests.contains(&format!("GET /cdn/{}?X-Amz-Signature=abc", weights.etag())),
        "{requests:?}"
    );
    assert!(
        requests.contains(&format!("HEAD /{REPO}/resolve/{COMMIT}/model.safetensors")),
        "{requests:?}"
    );

    // Progress ends at the full size of every file.
    for file in &repo.files {
        let last = events.iter().rev().find(|e| e.0 == file.path).unwrap();
        assert_eq!(
            (last.1, last.2, last.3),
            (file.body.len() as u64, file.body.len() as u64, false)
        );
    }

    // A second run lists the repo and requests no file.
    hub.clear_seen();
    let (again, events) = download(&cfg, REPO, &[]);
    assert_eq!(again.unwrap(), snapshot);
    assert_eq!(file_requests(&hub), Vec::<String>::new());
    assert_eq!(hub.seen().len(), 1, "only the listing: {:?}", hub.seen());
    assert!(events.iter().all(|e| e.3 && e.1 == e.2));

    // With the hub gone: offline mode resolves from refs/main without any connection, and a
    // connection failure falls back to the same snapshot.
    hub.stop();
    let offline = HubConfig {
        offline: true,
        ..cfg.clone()
    };
    assert_eq!(download(&offline, REPO, &[]).0.unwrap(), snapshot);
    assert_eq!(download(&cfg, REPO, &[]).0.unwrap(), snapshot);
    let pinned = snapshot_download(&offline, REPO, COMMIT, &[], &|_| {}).unwrap();
    assert_eq!(pinned, snapshot, "a commit hash needs no ref");
}

#[test]
fn allow_patterns_select_files() {
    let hub = FakeHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());
    let snapshot = download(&cfg, REPO, &["*.json"]).0.unwrap();
    let mut got = names(&snapshot);
    got.retain(|n| n != "sub");
    assert!(
        !got.is_empty() && got.iter().all(|n| n.ends_with(".json")),
        "{got:?}"
    );
    assert!(!snapshot.join("sub").exists() && !snapshot.join("model.safetensors").exists());
    assert!(
        file_requests(&hub).iter().all(|r| r.ends_with(".json")),
        "{:?}",
        file_requests(&hub)
    );

    // Widening the patterns later fetches only what is new.
    hub.clear_seen();
    download(&cfg, REPO, &["*.json", "sub/"]).0.unwrap();
    assert_eq!(
        file_requests(&hub),
        [
            format!("HEAD /{REPO}/resolve/{COMMIT}/sub/dir/notes.txt"),
            format!("GET /{REPO}/resolve/{COMMIT}/sub/dir/notes.txt")
        ]
    );
}

#[test]
fn private_repo_needs_a_token_that_never_reaches_the_cdn() {
    let mut repo = tiny_repo();
    repo.id = "tailor-test/private".into();
    repo.token = Some("hf_secret".into());
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = config(&hub.endpoint(), cache.path());

    let err = download(&cfg, "tailor-test/private", &[]).0.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unauthorized {
                status: 401,
                token_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("tailor-test/private") && msg.contains("HF_TOKEN"),
        "{msg}"
    );

    cfg.token = Some("hf_wrong".into());
    let err = download(&cfg, "tailor-test/private", &[]).0.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unauthorized {
                token_sent: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hf_wrong"));

    hub.clear_seen();
    cfg.token = Some("hf_secret".into());
    download(&cfg, "tailor-test/private", &[]).0.unwrap();
    for seen in hub.seen() {
        if seen.path.starts_with("/cdn/") {
            assert_eq!(seen.auth, None, "token sent to the CDN");
        } else {
            assert_eq!(
                seen.auth.as_deref(),
                Some("Bearer hf_secret"),
                "{}",
                seen.path
            );
        }
    }
    assert!(hub.seen().iter().any(|s| s.path.starts_with("/cdn/")));
}

#[test]
fn missing_repo_revision_and_file_are_distinct_errors() {
    let mut repo = tiny_repo();
    repo.files.push(FakeFile {
        missing: true,
        ..FakeFile::new("gone.json", Vec::new())
    });
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let err = download(&cfg, "tailor-test/nope", &[]).0.unwrap_err();
    assert!(
        matches!(&err, Error::RepoNotFound { repo_id } if repo_id == "tailor-test/nope"),
        "{err:?}"
    );

    let err = snapshot_download(&cfg, REPO, "v9", &[], &|_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::RevisionNotFound { revision, .. } if revision == "v9"),
        "{err:?}"
    );

    let err = download(&cfg, REPO, &["gone.json"]).0.unwrap_err();
    assert!(
        matches!(&err, Error::EntryNotFound { path, .. } if path == "gone.json"),
        "{err:?}"
    );
    assert!(err.to_string().contains("gone.json"));

    let err = download(&cfg, "not a repo", &[]).0.unwrap_err();
    assert!(matches!(err, Error::InvalidRepoId(_)), "{err:?}");
}

#[test]
fn cut_download_leaves_no_blob_and_no_snapshot_entry() {
    let repo = tiny_repo();
    let weights = repo.files.iter().find(|f| f.lfs).unwrap();
    weights.cuts.store(usize::MAX, Ordering::SeqCst);
    let weights_etag = weights.etag();
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let err = download(&cfg, REPO, &["config.json", "*.safetensors"])
        .0
        .unwrap_err();
    // ureq notices the early close against Content-Length: a broken transfer, resumed five
    // times without progress before giving up.
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(
        !err.to_string().contains("Signature"),
        "signed URL in {err}"
    );
    assert_eq!(cdn_gets(&hub).len(), 6);
    let storage = cache.path().join("models--tailor-test--tiny-model");
    let blobs = names(&storage.join("blobs"));
    assert!(!blobs.contains(&weights_etag), "{blobs:?}");
    assert!(
        blobs.iter().all(|b| !b.contains("incomplete")),
        "temp file left: {blobs:?}"
    );
    let snapshot = storage.join("snapshots").join(COMMIT);
    assert!(fs::symlink_metadata(snapshot.join("model.safetensors")).is_err());
    assert!(
        snapshot.join("config.json").is_file(),
        "files before the cut are kept"
    );
    assert!(
        !storage.join("refs/main").exists(),
        "no ref to a partial snapshot"
    );

    // Offline, the partial snapshot is not offered.
    let offline = HubConfig {
        offline: true,
        ..cfg.clone()
    };
    let err = download(&offline, REPO, &[]).0.unwrap_err();
    assert!(
        matches!(err, Error::NotCached { offline: true, .. }),
        "{err:?}"
    );

    // Once the network behaves, the retry fetches only the missing file.
    hub.edit(|repos| {
        repos[0]
            .files
            .iter()
            .for_each(|f| f.cuts.store(0, Ordering::SeqCst))
    });
    hub.clear_seen();
    let snapshot = download(&cfg, REPO, &["config.json", "*.safetensors"])
        .0
        .unwrap();
    assert!(
        file_requests(&hub)
            .iter()
            .all(|r| !r.contains("config.json")),
        "{:?}",
        file_requests(&hub)
    );
    assert_eq!(
        fs::read_link(snapshot.join("model.safetensors")).unwrap(),
        PathBuf::from(format!("../../blobs/{weights_etag}"))
    );
}

#[test]
fn offline_without_cache_names_repo_and_cache() {
    let cache = tempfile::tempdir().unwrap();
    // A hub that has shut down: its port refuses connections, and offline mode must not try.
    let mut hub = FakeHub::start(vec![tiny_repo()]);
    hub.stop();
    let cfg = HubConfig {
        offline: true,
        ..config(&hub.endpoint(), cache.path())
    };
    let err = download(&cfg, REPO, &[]).0.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains(&cache.path().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");

    // Online with the hub unreachable and nothing cached, the network error comes back.
    let online = HubConfig {
        offline: false,
        ..cfg
    };
    let err = download(&online, REPO, &[]).0.unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
}

#[test]
fn renamed_repo_follows_relative_redirects() {
    let mut repo = tiny_repo();
    repo.old_id = Some("tailor-test/old-name".into());
    let weights = repo.files.iter().find(|f| f.lfs).unwrap().clone();
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let snapshot = download(&cfg, "tailor-test/old-name", &["*.safetensors"])
        .0
        .unwrap();
    // The cache is keyed by the name asked for, as in huggingface_hub.
    let storage = cache.path().join("models--tailor-test--old-name");
    assert_eq!(snapshot, storage.join("snapshots").join(COMMIT));
    assert_eq!(
        fs::read(snapshot.join("model.safetensors")).unwrap(),
        weights.body
    );
    let requests = file_requests(&hub);
    assert_eq!(
        requests,
        [
            format!("HEAD /tailor-test/old-name/resolve/{COMMIT}/model.safetensors"),
            format!("HEAD /{REPO}/resolve/{COMMIT}/model.safetensors"),
            format!("GET /cdn/{}?X-Amz-Signature=abc", weights.etag()),
        ]
    );
}

#[test]
fn short_body_without_length_fails_the_size_check() {
    let mut repo = tiny_repo();
    let weights = repo.files.iter_mut().find(|f| f.lfs).unwrap();
    weights.cuts.store(usize::MAX, Ordering::SeqCst);
    weights.no_length = true;
    let expected = weights.body.len() as u64;
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let err = download(&cfg, REPO, &["*.safetensors"]).0.unwrap_err();
    assert!(
        matches!(err, Error::SizeMismatch { expected: e, actual, .. } if e == expected && actual == expected / 2),
        "{err:?}"
    );
    let storage = cache.path().join("models--tailor-test--tiny-model");
    assert_eq!(names(&storage.join("blobs")), Vec::<String>::new());
    assert!(
        !storage
            .join("snapshots")
            .join(COMMIT)
            .join("model.safetensors")
            .exists()
    );
    assert!(!err.to_string().contains("Signature"));
}

/// The LFS file's CDN GETs, with their `Range` headers.
fn cdn_gets(hub: &FakeHub) -> Vec<Option<String>> {
    hub.seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/cdn/"))
        .map(|s| s.range)
        .collect()
}

#[test]
fn broken_transfer_resumes_with_a_range_request() {
    let repo = tiny_repo();
    let weights = repo.files.iter().find(|f| f.lfs).unwrap().clone();
    weights.cuts.store(1, Ordering::SeqCst);
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let (result, events) = download(&cfg, REPO, &["*.safetensors"]);
    let snapshot = result.unwrap();
    assert_eq!(
        fs::read(snapshot.join("model.safetensors")).unwrap(),
        weights.body
    );
    let half = weights.body.len() / 2;
    assert_eq!(cdn_gets(&hub), [None, Some(format!("bytes={half}-"))]);
    // Progress went forward only: the resumed part continues from the midpoint.
    assert!(events.windows(2).all(|w| w[0].1 <= w[1].1), "{events:?}");
}

#[test]
fn ignored_range_restarts_the_file() {
    let mut repo = tiny_repo();
    let weights = repo.files.iter_mut().find(|f| f.lfs).unwrap();
    weights.cuts.store(1, Ordering::SeqCst);
    weights.ignore_range = true;
    let body = weights.body.clone();
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let snapshot = download(&cfg, REPO, &["*.safetensors"]).0.unwrap();
    assert_eq!(
        fs::read(snapshot.join("model.safetensors")).unwrap(),
        body,
        "no duplicated bytes"
    );
    assert_eq!(cdn_gets(&hub).len(), 2);
}

#[test]
fn dataset_downloads_into_its_own_cache_folder() {
    let model = tiny_repo();
    let dataset = tiny_dataset();
    let mut hub = FakeHub::start(vec![model.clone(), dataset.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());

    let (result, events) = download_typed(&cfg, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES);
    let snapshot = result.unwrap();
    let storage = cache.path().join("datasets--tailor-test--tiny-model");
    assert_eq!(snapshot, storage.join("snapshots").join(DATASET_COMMIT));
    assert_eq!(
        fs::read_to_string(storage.join("refs/main")).unwrap(),
        DATASET_COMMIT
    );
    assert_eq!(
        names(&snapshot),
        ["README.md", "data"],
        ".gitattributes is left out"
    );
    assert_eq!(
        names(&snapshot.join("data")),
        ["train-00000-of-00001.parquet"]
    );
    for file in dataset.files.iter().filter(|f| f.path != ".gitattributes") {
        let pointer = snapshot.join(&file.path);
        let ups = "../".repeat(file.path.matches('/').count() + 2);
        assert_eq!(
            fs::read_link(&pointer).unwrap(),
            PathBuf::from(format!("{ups}blobs/{}", file.etag()))
        );
        assert_eq!(fs::read(&pointer).unwrap(), file.body, "{}", file.path);
        let last = events.iter().rev().find(|e| e.0 == file.path).unwrap();
        assert_eq!((last.1, last.3), (file.body.len() as u64, false));
    }
    assert!(
        cache
            .path()
            .join(".locks/datasets--tailor-test--tiny-model")
            .is_dir()
    );

    // Every request used the dataset URLs: the listing API and `datasets/…/resolve/`.
    let seen: Vec<String> = hub
        .seen()
        .into_iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    let shard = dataset.files.iter().find(|f| f.lfs).unwrap();
    assert_eq!(
        seen,
        [
            format!("GET /api/datasets/{REPO}/revision/main"),
            format!("HEAD /datasets/{REPO}/resolve/{DATASET_COMMIT}/README.md"),
            format!("GET /datasets/{REPO}/resolve/{DATASET_COMMIT}/README.md"),
            format!(
                "HEAD /datasets/{REPO}/resolve/{DATASET_COMMIT}/data/train-00000-of-00001.parquet"
            ),
            format!("GET /cdn/{}?X-Amz-Signature=abc", shard.etag()),
        ]
    );

    // The model with the same id lands beside it, and neither snapshot sees the other's files.
    let model_snapshot = download(&cfg, REPO, &[]).0.unwrap();
    assert_eq!(
        model_snapshot,
        cache
            .path()
            .join("models--tailor-test--tiny-model/snapshots")
            .join(COMMIT)
    );
    assert!(model_snapshot.join("config.json").is_file());
    assert!(!model_snapshot.join("README.md").exists());
    assert_eq!(names(&snapshot), ["README.md", "data"]);
    assert_eq!(
        names(cache.path()),
        [
            ".locks",
            "CACHEDIR.TAG",
            "datasets--tailor-test--tiny-model",
            "models--tailor-test--tiny-model"
        ]
    );

    // A second run lists the dataset and requests no file.
    hub.clear_seen();
    let (again, events) = download_typed(&cfg, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES);
    assert_eq!(again.unwrap(), snapshot);
    assert_eq!(file_requests(&hub), Vec::<String>::new());
    assert!(events.iter().all(|e| e.3));

    // With the hub gone and HF_HUB_OFFLINE set, both resolve from the cache, each to its own.
    hub.stop();
    let cache_dir = cache.path().to_str().unwrap().to_owned();
    let endpoint = hub.endpoint();
    let offline = HubConfig::from_lookup(&|key| match key {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_HUB_CACHE" => Some(cache_dir.clone()),
        "HF_ENDPOINT" => Some(endpoint.clone()),
        _ => None,
    });
    assert!(offline.offline && offline.cache_dir == cache.path());
    let (cached, events) =
        download_typed(&offline, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES);
    assert_eq!(cached.unwrap(), snapshot);
    assert!(events.is_empty(), "offline lists nothing: {events:?}");
    assert_eq!(
        download_typed(&offline, RepoType::Model, REPO, &[])
            .0
            .unwrap(),
        model_snapshot
    );
    let pinned = snapshot_download_typed(
        &offline,
        RepoType::Dataset,
        REPO,
        DATASET_COMMIT,
        &[],
        &|_| {},
    )
    .unwrap();
    assert_eq!(pinned, snapshot);
    // The model's commit is not a snapshot of the dataset.
    let err = snapshot_download_typed(&offline, RepoType::Dataset, REPO, COMMIT, &[], &|_| {})
        .unwrap_err();
    assert!(
        matches!(err, Error::NotCached { offline: true, .. }),
        "{err:?}"
    );
}

#[test]
fn model_and_dataset_ids_never_resolve_to_each_other() {
    let hub = FakeHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());
    download(&cfg, REPO, &["*.json"]).0.unwrap();

    // Only a model exists under the id: the dataset is not found, online or from the cache.
    let err = download_typed(&cfg, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES)
        .0
        .unwrap_err();
    assert!(
        matches!(&err, Error::RepoNotFound { repo_id } if repo_id == REPO),
        "{err:?}"
    );
    let offline = HubConfig {
        offline: true,
        ..cfg.clone()
    };
    let err = download_typed(&offline, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES)
        .0
        .unwrap_err();
    assert!(
        matches!(err, Error::NotCached { offline: true, .. }),
        "{err:?}"
    );
    assert!(
        !cache
            .path()
            .join("datasets--tailor-test--tiny-model")
            .exists()
    );

    // And the other way round: a dataset-only id is no model.
    let hub = FakeHub::start(vec![tiny_dataset()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.endpoint(), cache.path());
    download_typed(&cfg, RepoType::Dataset, REPO, tailor_hub::DATASET_FILES)
        .0
        .unwrap();
    let err = download(&cfg, REPO, &[]).0.unwrap_err();
    assert!(matches!(err, Error::RepoNotFound { .. }), "{err:?}");
    let offline = HubConfig {
        offline: true,
        ..cfg
    };
    let err = download(&offline, REPO, &[]).0.unwrap_err();
    assert!(
        matches!(err, Error::NotCached { offline: true, .. }),
        "{err:?}"
    );
}
