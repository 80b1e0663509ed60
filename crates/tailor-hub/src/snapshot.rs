//! `snapshot_download`: list a repo, fetch the selected files into the cache, return the snapshot.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::{self, repo_folder_name};
use crate::http::{Client, Ctx, repo_info_url};
use crate::{Error, HubConfig, Progress, RepoType, Result, is_valid_repo_id, pattern};

/// Read size for file bodies: small enough for smooth progress, large enough to be cheap.
const CHUNK: usize = 1 << 16;
/// Resumes tried after a transfer breaks without progress (huggingface_hub tries 5).
const MAX_RETRIES: u32 = 5;
/// The pause before the first resume; it doubles with each further one (0.05 s to 0.8 s).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Resolves the model repo `repo_id` at `revision` (a branch, tag or commit hash; usually
/// `"main"`) to a local snapshot folder, `{cache_dir}/models--{org}--{name}/snapshots/{commit}/`,
/// downloading the files
/// that match `allow` (fnmatch patterns where `*` also crosses `/`; an empty list means every file).
///
/// Files already in the snapshot are not requested again, and a blob shared with another
/// snapshot is linked without a download. Each new blob is written to a temp file and renamed
/// into place only once complete, so an interrupted run leaves neither a partial blob nor a
/// snapshot entry; a transfer that breaks mid-body is first resumed with `Range` requests (up to
/// five times in a row without progress). `refs/{revision}` is written last, once every file is
/// in place.
///
/// Without network (`cfg.offline`), or when the hub cannot be reached or refuses the listing, the
/// cached snapshot recorded for `revision` is returned instead; the revision itself not existing
/// on the hub is always an error. `progress` is called as bytes arrive, and once per file that
/// was already cached.
///
/// This is [`snapshot_download_typed`] with [`RepoType::Model`].
pub fn snapshot_download(
    cfg: &HubConfig,
    repo_id: &str,
    revision: &str,
    allow: &[&str],
    progress: &dyn Fn(Progress<'_>),
) -> Result<PathBuf> {
    snapshot_download_typed(cfg, RepoType::Model, repo_id, revision, allow, progress)
}

/// [`snapshot_download`] for a repo of any [`RepoType`]: a dataset is listed with
/// `/api/datasets/{repo_id}/revision/{revision}`, its files come from
/// `/datasets/{repo_id}/resolve/{commit}/{path}`, and its snapshot is
/// `{cache_dir}/datasets--{org}--{name}/snapshots/{commit}/`, as huggingface_hub's
/// `snapshot_download(repo_type="dataset")` lays it out. Everything else (headers, redirects,
/// blobs, refs, offline mode, errors) is the same as for models.
pub fn snapshot_download_typed(
    cfg: &HubConfig,
    repo_type: RepoType,
    repo_id: &str,
    revision: &str,
    allow: &[&str],
    progress: &dyn Fn(Progress<'_>),
) -> Result<PathBuf> {
    if !is_valid_repo_id(repo_id) {
        return Err(Error::InvalidRepoId(repo_id.to_owned()));
    }
    cache::check_revision(revision)?;
    let storage = cfg.cache_dir.join(repo_folder_name(repo_type, repo_id));
    let not_cached = |offline| Error::NotCached {
        repo_id: repo_id.to_owned(),
        revision: revision.to_owned(),
        cache_dir: cfg.cache_dir.clone(),
        offline,
    };

    if cfg.offline {
        return cache::cached_snapshot(&storage, revision).ok_or_else(|| not_cached(true));
    }

    let client = Client::new(cfg);
    let info = match client.repo_info(repo_type, repo_id, revision) {
        Ok(info) => info,
        // As in huggingface_hub: a revision the hub says does not exist must not silently
        // resolve to an old cached copy; anything else (no network, hub down, auth) may.
        Err(e @ Error::RevisionNotFound { .. }) => return Err(e),
        Err(e) => return cache::cached_snapshot(&storage, revision).ok_or(e),
    };
    let url = repo_info_url(cfg.base_url(), repo_type, repo_id, revision);
    let commit = match info.sha {
        Some(sha) if cache::is_plain_component(&sha) => sha,
        _ => {
            return Err(Error::Protocol {
                url,
                reason: "repo info has no usable `sha`".into(),
            });
        }
    };

    let files: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|path| pattern::allowed(path, allow))
        .collect();
    // Validate every name before touching the disk, so a bad listing changes nothing.
    for path in &files {
        cache::check_relative_path(path)?;
    }

    let snapshot = storage.join("snapshots").join(&commit);
    let job = Job {
        client: &client,
        cfg,
        storage: &storage,
        repo_type,
        repo_id,
        commit: &commit,
    };
    for (index, path) in files.iter().enumerate() {
        let report = |done, total, cached| {
            progress(Progress {
                path,
                index,
                count: files.len(),
                done,
                total,
                cached,
            })
        };
        job.fetch(path, &snapshot, &report)?;
    }
    cache::write_ref(&storage, revision, &commit)?;
    Ok(snapshot)
}

/// What every file of one snapshot download shares.
struct Job<'a> {
    client: &'a Client<'a>,
    cfg: &'a HubConfig,
    storage: &'a Path,
    repo_type: RepoType,
    repo_id: &'a str,
    commit: &'a str,
}

impl Job<'_> {
    /// Puts `snapshots/{commit}/{path}` in place (huggingface_hub's `_hf_hub_download_to_cache_dir`
    /// with the revision pinned to the commit).
    fn fetch(&self, path: &str, snapshot: &Path, report: &dyn Fn(u64, u64, bool)) -> Result<()> {
        let pointer = snapshot.join(path);
        // A pointer that resolves means the file is complete: blobs appear only by rename.
        if let Ok(meta) = fs::metadata(&pointer) {
            report(meta.len(), meta.len(), true);
            return Ok(());
        }

        let meta = self
            .client
            .file_meta(self.repo_type, self.repo_id, self.commit, path)?;
        let blobs = self.storage.join("blobs");
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            let io_err = |p: &Path| {
                let p = p.to_owned();
                move |source| Error::Io { path: p, source }
            };
            fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
            cache::write_cachedir_tag(&self.cfg.cache_dir);
            let locks = self
                .cfg
                .cache_dir
                .join(".locks")
                .join(repo_folder_name(self.repo_type, self.repo_id));
            fs::create_dir_all(&locks).map_err(io_err(&locks))?;
            let lock_path = locks.join(format!("{}.lock", meta.etag));
            // Another process may be fetching the same blob into a shared cache; wait for it
            // rather than download twice. The lock is best-effort, as huggingface_hub's
            // `WeakFileLock`: where the filesystem cannot lock we go on, and the unique temp file
            // still keeps the blob whole.
            let lock = File::create(&lock_path).ok();
            if let Some(lock) = &lock {
                let _ = lock.lock();
            }
            if !blob.is_file() {
                self.download_blob(path, &meta.location, &blob, meta.size, report)?;
            } else {
                report(meta.size, meta.size, true);
            }
            drop(lock);
        } else {
            report(meta.size, meta.size, true);
        }
        cache::create_pointer(&pointer, &blob, path, &meta.etag)
    }

    fn download_blob(
        &self,
        path: &str,
        url: &str,
        blob: &Path,
        size: u64,
        report: &dyn Fn(u64, u64, bool),
    ) -> Result<()> {
        let etag = blob.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        let tmp = blob.with_file_name(format!("{etag}.{}.incomplete", cache::unique_suffix()));
        // The guard removes the temp file on every early return, including a broken connection.
        let guard = RemoveOnDrop(&tmp);
        let io_err = |source| Error::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = File::create(&tmp).map_err(io_err)?;
        let ctx = Ctx {
            repo_id: self.repo_id,
            revision: self.commit,
            path: Some(path),
        };
        report(0, size, false);
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        let mut failures = 0u32;
        // A transfer that breaks mid-body is resumed with a `Range` request, as huggingface_hub's
        // `http_get` does: multi-gigabyte weights should survive a dropped connection. Failing to
        // connect at all is not retried, and neither is a short body that ended cleanly (that is
        // the size check's job).
        loop {
            let mut bytes = self.client.open_bytes(url, &ctx, done)?;
            if done > 0 && !bytes.resumed {
                // The server ignored the range and sends everything again: start over.
                file.set_len(0).map_err(io_err)?;
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                done = 0;
                report(0, size, false);
            }
            let before = done;
            let broken = loop {
                match bytes.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        file.write_all(&buf[..n]).map_err(io_err)?;
                        done += n as u64;
                        report(done, size, false);
                    }
                    Err(e) => break Some(e),
                }
            };
            let Some(error) = broken else { break };
            // Count only failures in a row that brought nothing, so a slow but moving transfer
            // is never abandoned.
            failures = if done > before { 1 } else { failures + 1 };
            if failures > MAX_RETRIES {
                return Err(error);
            }
            std::thread::sleep(RETRY_PAUSE * 2u32.pow(failures - 1));
        }
        if done != size {
            return Err(Error::SizeMismatch {
                path: path.to_owned(),
                expected: size,
                actual: done,
            });
        }
        // The data must be on disk before the rename makes it visible as complete.
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&tmp, blob).map_err(|source| Error::Io {
            path: blob.to_owned(),
            source,
        })?;
        std::mem::forget(guard);
        Ok(())
    }
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        // A failure here cannot be reported from a destructor; a stray temp file is harmless
        // because its `.incomplete` name is never taken for a blob.
        let _ = fs::remove_file(self.0);
    }
}
