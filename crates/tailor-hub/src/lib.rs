//! Hugging Face hub client: a model or dataset repo id in, a local folder of its files out.
//!
//! # Brief overview
//!
//! - [`is_repo_id`] tells a hub repo id (`org/name`) from a local path.
//! - [`RepoType`] says whether an id names a model repo (the default) or a dataset repo; the two
//!   live in separate namespaces on the hub and in the cache (`models--…` / `datasets--…`).
//! - [`HubConfig`] holds the endpoint, cache folder, token and offline flag;
//!   [`HubConfig::from_env`] reads them from huggingface_hub's environment variables
//!   (`HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`, …).
//! - [`snapshot_download`] (models) and [`snapshot_download_typed`] (either type) speak the hub's
//!   HTTP protocol (the repo listing API, then a HEAD and a
//!   GET on `resolve/` per file, following the CDN redirect of large files) and stores files in
//!   huggingface_hub's cache layout (`blobs/` named by ETag, `snapshots/{commit}/` of relative
//!   symlinks, `refs/{revision}`), so Python tools and tailor share one cache and one download.
//! - [`Progress`] reports bytes per file to a callback, for a progress bar.
//!
//! Only the hub protocol lives here: no model or tokenizer knowledge. Files arrive whole or not at
//! all (temp file, then rename), so a crash never leaves a half file where a reader looks.
//!
//! # Example
//!
//! Offline mode never touches the network: a repo not in the cache is a clear error.
//!
//! ```
//! use tailor_hub::{Error, HubConfig, RepoType, is_repo_id, snapshot_download, snapshot_download_typed};
//!
//! assert!(is_repo_id("Qwen/Qwen2.5-VL-3B-Instruct"));
//! assert!(!is_repo_id("not a repo"));
//!
//! let cache = tempfile::tempdir()?;
//! let cfg = HubConfig {
//!     endpoint: "https://huggingface.co".into(),
//!     cache_dir: cache.path().to_path_buf(),
//!     token: None,
//!     offline: true,
//! };
//! let result = snapshot_download(&cfg, "Qwen/Qwen2.5-VL-3B-Instruct", "main", &["*.json"], &|_| {});
//! assert!(matches!(result, Err(Error::NotCached { offline: true, .. })));
//!
//! // A dataset repo: same protocol under `datasets/`, cached as `datasets--{org}--{name}`.
//! let result = snapshot_download_typed(
//!     &cfg, RepoType::Dataset, "Marqo/deepfashion-multimodal", "main", &["*.parquet"], &|_| {},
//! );
//! assert!(matches!(result, Err(Error::NotCached { offline: true, .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod config;
mod http;
mod pattern;
mod snapshot;

use std::path::PathBuf;

pub use config::{DEFAULT_ENDPOINT, HubConfig};
pub use snapshot::{snapshot_download, snapshot_download_typed};

/// Result of hub operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while resolving a repo to a local folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string is not a hub repo id of the form `org/name`.
    #[error("invalid repo id {0:?}: expected `org/name`")]
    InvalidRepoId(String),
    /// The revision cannot name a ref (empty, absolute, or with `..`).
    #[error("invalid revision {revision:?}")]
    InvalidRevision {
        /// The revision as given.
        revision: String,
    },
    /// The hub refused access (HTTP 401 or 403): the repo is private or gated, the token is
    /// missing or wrong, or (the hub does not say which) the repo does not exist.
    #[error("access to {repo_id} was refused (HTTP {status}): {}", auth_hint(*.gated, *.token_sent))]
    Unauthorized {
        /// The repo asked for.
        repo_id: String,
        /// The HTTP status, 401 or 403.
        status: u16,
        /// The hub said the repo is gated (its terms must be accepted on the website).
        gated: bool,
        /// A token was sent with the request.
        token_sent: bool,
    },
    /// The repo does not exist (HTTP 404).
    #[error("repository {repo_id} not found on the hub")]
    RepoNotFound {
        /// The repo asked for.
        repo_id: String,
    },
    /// The repo exists but not the branch, tag or commit.
    #[error("revision {revision:?} not found in {repo_id}")]
    RevisionNotFound {
        /// The repo asked for.
        repo_id: String,
        /// The revision asked for.
        revision: String,
    },
    /// A file listed for the repo is not there (HTTP 404 on `resolve/`).
    #[error("file {path:?} not found in {repo_id} at {revision}")]
    EntryNotFound {
        /// The repo asked for.
        repo_id: String,
        /// The revision (commit) the file was requested at.
        revision: String,
        /// The file's path in the repo.
        path: String,
    },
    /// Any other non-success HTTP status.
    #[error("HTTP {status} from {url}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The URL that answered it, without its query string.
        url: String,
    },
    /// The hub could not be reached (DNS, connection, TLS, timeout), or a transfer kept breaking
    /// after its resumes ran out.
    #[error("network error for {url}")]
    Network {
        /// The URL being requested, without its query string (CDN URLs carry signatures).
        url: String,
        /// The underlying client or I/O error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The repo is not in the cache and the network may not or cannot be used.
    #[error(
        "{repo_id} (revision {revision}) is not in the cache at {}{}",
        cache_dir.display(),
        if *offline { "; HF_HUB_OFFLINE is set, unset it to download" } else { "" }
    )]
    NotCached {
        /// The repo asked for.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The hub cache folder that was searched.
        cache_dir: PathBuf,
        /// Offline mode was on (rather than the hub being unreachable).
        offline: bool,
    },
    /// The server's reply does not follow the hub protocol (a missing `X-Repo-Commit`, `ETag` or
    /// size header, or an unreadable listing), typically a proxy or a wrong `HF_ENDPOINT`.
    #[error("unexpected reply from {url}: {reason}")]
    Protocol {
        /// The URL that answered, without its query string.
        url: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// A download ended with a different byte count than the hub announced.
    #[error(
        "{path}: expected {expected} bytes but received {actual}; the connection was probably cut, retry"
    )]
    SizeMismatch {
        /// The file's path in the repo.
        path: String,
        /// The size the hub announced.
        expected: u64,
        /// The bytes received.
        actual: u64,
    },
    /// A repo file name would land outside the snapshot folder (absolute, or with `..`).
    #[error("refusing unsafe file name {path:?} from the hub listing")]
    UnsafePath {
        /// The file name as listed.
        path: String,
    },
    /// Reading or writing the cache failed.
    #[error("cache I/O error at {}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn auth_hint(gated: bool, token_sent: bool) -> &'static str {
    match (gated, token_sent) {
        (true, false) => {
            "the repo is gated; accept its terms on the hub and set HF_TOKEN to a token of that account"
        }
        (true, true) => "the repo is gated and this token's account has not been granted access",
        (false, false) => {
            "the repo is private, gated or missing; if you have access, set HF_TOKEN (or run `hf auth login`)"
        }
        (false, true) => "the token was rejected or has no access to this repo; check HF_TOKEN",
    }
}

/// The kind of hub repo an id names. Models and datasets are separate namespaces: the same
/// `org/name` can be both, with different files, and they never share a cache folder.
///
/// Only the URL prefixes and the cache folder name differ (huggingface_hub's
/// `REPO_TYPES_URL_PREFIXES` and `repo_folder_name`); headers, redirects, blobs, refs and offline
/// behaviour are the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RepoType {
    /// A model repo: `{endpoint}/{id}/resolve/…`, cached as `models--{org}--{name}`.
    #[default]
    Model,
    /// A dataset repo: `{endpoint}/datasets/{id}/resolve/…`, cached as `datasets--{org}--{name}`.
    Dataset,
}

impl RepoType {
    /// The plural the API and the cache use: `models` or `datasets`.
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }

    /// What goes before the repo id in `resolve/` URLs: nothing for models (huggingface_hub's
    /// default type), `datasets/` for datasets.
    pub(crate) fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
        }
    }
}

/// Download progress of one file, passed to the callback of [`snapshot_download`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The file's path in the repo.
    pub path: &'a str,
    /// Position of this file among the selected files, from 0.
    pub index: usize,
    /// Number of selected files.
    pub count: usize,
    /// Bytes of this file done so far.
    pub done: u64,
    /// Size of this file in bytes.
    pub total: u64,
    /// The file came from the cache without a download (then `done == total`).
    pub cached: bool,
}

/// The files a dataset snapshot needs: what `Catalog::open` reads (parquet shards, JSON Lines,
/// CSV, imagefolder metadata and its images) and the dataset card.
///
/// A pattern list rather than every file: dataset repos often also carry archives of the raw
/// data (zip/tar of images, often many times the size of the parquet shards) or formats tailor
/// cannot read, and fetching those would only cost time and disk. Patterns are case-sensitive
/// (huggingface_hub's fnmatch), hence both cases for image extensions.
pub const DATASET_FILES: &[&str] = &[
    "*.parquet",
    "*.json",
    "*.jsonl",
    "*.csv",
    "README.md",
    "*.jpg",
    "*.jpeg",
    "*.png",
    "*.webp",
    "*.JPG",
    "*.JPEG",
    "*.PNG",
    "*.WEBP",
];

/// Whether `s` names a hub repo (`org/name`) rather than a local folder: it has the hub's repo id
/// syntax and no file or folder of that name exists.
pub fn is_repo_id(s: &str) -> bool {
    is_valid_repo_id(s) && !std::path::Path::new(s).exists()
}

/// The hub's repo id rules (huggingface_hub's `validate_repo_id`), with the namespace required:
/// two parts of letters, digits, `_`, `-`, `.`, each starting and ending with a letter, digit or
/// `_`, no `--` or `..`, at most 96 characters.
pub(crate) fn is_valid_repo_id(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let part_ok = |part: &str| {
        part.chars().all(|c| word(c) || c == '-' || c == '.')
            && part.starts_with(word)
            && part.ends_with(word)
    };
    let Some((org, name)) = s.split_once('/') else {
        return false;
    };
    s.len() <= 96 && !s.contains("--") && !s.contains("..") && part_ok(org) && part_ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for good in [
            "Qwen/Qwen2.5-VL-3B-Instruct",
            "a/b",
            "my_org/model.v2",
            "org_/_x",
        ] {
            assert!(is_valid_repo_id(good), "{good}");
        }
        for bad in [
            "gpt2", "a/b/c", "/abs", "org/", "org/-x", "org/x.", "a--b/c", "a/b..c", "a b/c", "",
        ] {
            assert!(!is_valid_repo_id(bad), "{bad}");
        }
        assert!(!is_valid_repo_id(&format!("org/{}", "x".repeat(93))));
    }

    #[test]
    fn existing_paths_are_not_repo_ids() {
        let rel = "src/lib.rs"; // cargo runs unit tests from the crate root, where this exists
        assert!(is_valid_repo_id(rel) && !is_repo_id(rel));
        assert!(
            is_repo_id("Qwen/Qwen2.5-VL-3B-Instruct"),
            "no such folder in the crate root"
        );
    }

    #[test]
    fn auth_message_names_hf_token() {
        let e = Error::Unauthorized {
            repo_id: "o/p".into(),
            status: 401,
            gated: false,
            token_sent: false,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("o/p") && msg.contains("HF_TOKEN") && msg.contains("401"),
            "{msg}"
        );
    }
}
