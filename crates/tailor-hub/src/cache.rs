//! The on-disk layout of the hub cache, identical to huggingface_hub's so both tools share it.
//!
//! ```text
//! {cache_dir}/
//! ├── CACHEDIR.TAG
//! ├── .locks/{type}s--{org}--{name}/{etag}.lock
//! └── {type}s--{org}--{name}/                  models--… or datasets--…
//!     ├── blobs/{etag}                         file contents, named by the unquoted ETag
//!     ├── refs/{revision}                      the commit hash a branch or tag resolved to
//!     └── snapshots/{commit}/{path} -> ../../blobs/{etag}   relative symlinks
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{Error, RepoType, Result};

/// Content huggingface_hub writes to `CACHEDIR.TAG` (the Cache Directory Tagging Standard), so
/// backup tools skip the cache.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// `models--{org}--{name}` or `datasets--{org}--{name}`: the repo's folder name inside the cache
/// (huggingface_hub's `repo_folder_name`).
pub(crate) fn repo_folder_name(repo_type: RepoType, repo_id: &str) -> String {
    format!("{}--{}", repo_type.plural(), repo_id.replace('/', "--"))
}

/// A full 40-hex-digit commit hash, which needs no `refs/` lookup.
pub(crate) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Rejects repo file names that would land outside the snapshot folder once joined to it, which
/// a hostile listing could otherwise use to write anywhere (huggingface_hub's
/// `_validate_relative_filename`).
pub(crate) fn check_relative_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains(':')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(Error::UnsafePath {
            path: path.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Rejects revisions that cannot name a file under `refs/` safely. Branch names such as
/// `refs/pr/1` keep their `/` (huggingface_hub nests them the same way).
pub(crate) fn check_revision(revision: &str) -> Result<()> {
    check_relative_path(revision).map_err(|_| Error::InvalidRevision {
        revision: revision.to_owned(),
    })
}

/// Rejects a server-provided name (ETag or commit) that is not one plain path component.
pub(crate) fn is_plain_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', ':', '\0'])
}

/// The symlink text for `snapshots/{commit}/{path}`: up to the repo folder, then into `blobs/`.
/// It is relative so a moved or mounted cache keeps working, as in huggingface_hub.
pub(crate) fn link_target(path: &str, etag: &str) -> PathBuf {
    // One `..` per folder of `path`, plus two for `{commit}/` and `snapshots/`.
    let ups = path.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..ups {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    target
}

/// Puts `snapshots/{commit}/{path}` in place, pointing at `blob`.
pub(crate) fn create_pointer(pointer: &Path, blob: &Path, path: &str, etag: &str) -> Result<()> {
    let io_err = |source| Error::Io {
        path: pointer.to_owned(),
        source,
    };
    let parent = pointer
        .parent()
        .expect("pointer paths always have a snapshot parent");
    fs::create_dir_all(parent).map_err(io_err)?;
    // A stale entry (for example a dangling link left by a cleaned-up blob) is replaced.
    match fs::remove_file(pointer) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    #[cfg(unix)]
    {
        let _ = blob;
        std::os::unix::fs::symlink(link_target(path, etag), pointer).map_err(io_err)
    }
    // Without reliable symlinks, huggingface_hub falls back to a copy of the blob; so do we.
    #[cfg(not(unix))]
    {
        let _ = (path, etag);
        fs::copy(blob, pointer).map(|_| ()).map_err(io_err)
    }
}

/// Records that `revision` resolved to `commit`, atomically (temp file + rename) so a reader
/// never sees a half-written ref. Nothing is written for a commit hash or an unchanged ref.
pub(crate) fn write_ref(storage: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    let ref_path = storage.join("refs").join(revision);
    if fs::read_to_string(&ref_path).is_ok_and(|current| current == commit) {
        return Ok(());
    }
    let io_err = |source| Error::Io {
        path: ref_path.clone(),
        source,
    };
    fs::create_dir_all(ref_path.parent().expect("refs/{revision} has a parent")).map_err(io_err)?;
    let tmp = ref_path.with_file_name(format!(
        "{}.{}.tmp",
        ref_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("ref"),
        unique_suffix()
    ));
    fs::write(&tmp, commit).map_err(io_err)?;
    fs::rename(&tmp, &ref_path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(e)
    })
}

/// The commit a revision points at in the cache: itself for a commit hash, else `refs/{revision}`.
pub(crate) fn cached_commit(storage: &Path, revision: &str) -> Option<String> {
    if is_commit_hash(revision) {
        return Some(revision.to_owned());
    }
    let commit = fs::read_to_string(storage.join("refs").join(revision)).ok()?;
    let commit = commit.trim().to_owned();
    is_plain_component(&commit).then_some(commit)
}

/// The snapshot folder for `revision` if the cache holds a usable one: it exists, has at least
/// one file and every entry resolves. The hub's file list is not stored, so files that were never
/// downloaded cannot be detected; since `refs/` is written only after a whole snapshot succeeded
/// (see `snapshot_download`), a ref always names a snapshot that was complete for its patterns.
pub(crate) fn cached_snapshot(storage: &Path, revision: &str) -> Option<PathBuf> {
    let commit = cached_commit(storage, revision)?;
    let folder = storage.join("snapshots").join(commit);
    let mut files = 0usize;
    all_entries_resolve(&folder, &mut files)
        .then_some(())
        .filter(|_| files > 0)?;
    Some(folder)
}

fn all_entries_resolve(dir: &Path, files: &mut usize) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let path = entry.path();
        // `metadata` follows symlinks, so a dangling link fails here.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if !all_entries_resolve(&path, files) {
                    return false;
                }
            }
            Ok(_) => *files += 1,
            Err(_) => return false,
        }
    }
    true
}

/// Tags the cache folder for backup tools; best-effort, as in huggingface_hub.
pub(crate) fn write_cachedir_tag(cache_dir: &Path) {
    let tag = cache_dir.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = fs::write(tag, CACHEDIR_TAG);
    }
}

/// A name suffix unique to this process and call, for temp files that must not collide with
/// another process downloading the same blob into a shared cache.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:08x}{:x}", std::process::id(), nanos, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        assert_eq!(
            repo_folder_name(RepoType::Model, "Qwen/Qwen2.5-VL-3B-Instruct"),
            "models--Qwen--Qwen2.5-VL-3B-Instruct"
        );
        assert_eq!(
            repo_folder_name(RepoType::Dataset, "Marqo/deepfashion-multimodal"),
            "datasets--Marqo--deepfashion-multimodal"
        );
    }

    #[test]
    fn link_targets_are_relative_to_the_pointer_folder() {
        assert_eq!(
            link_target("config.json", "abc"),
            PathBuf::from("../../blobs/abc")
        );
        assert_eq!(
            link_target("a/b/c.json", "abc"),
            PathBuf::from("../../../../blobs/abc")
        );
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "C:x",
            "a\\b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
        for good in ["config.json", "sub/dir/x.bin", ".gitattributes", "a..b"] {
            assert!(check_relative_path(good).is_ok(), "{good:?}");
        }
        assert!(check_revision("refs/pr/1").is_ok());
        assert!(check_revision("../main").is_err());
    }

    #[test]
    fn commit_hashes() {
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash(&"A".repeat(40)));
        assert!(!is_commit_hash("main"));
    }
}
