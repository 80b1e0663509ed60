//! The hub's HTTP protocol: repo listing, per-file metadata (HEAD) and streamed downloads (GET).
//!
//! Redirects are followed by hand rather than by ureq, because the two requests need different
//! rules, as in huggingface_hub: the metadata HEAD follows only relative redirects (a renamed
//! repo) and reports an absolute one (the LFS/CDN URL) as the download location, and the token
//! must never travel to a host other than the hub's.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use ureq::http::{Response, StatusCode};

use crate::{Error, HubConfig, RepoType, Result};

/// How many redirects one request may take before we give up, like common HTTP clients.
const MAX_REDIRECTS: usize = 10;
/// huggingface_hub's `HF_HUB_ETAG_TIMEOUT` / `HF_HUB_DOWNLOAD_TIMEOUT` default.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What `GET /api/{models,datasets}/{repo_id}/revision/{revision}` tells us.
#[derive(Debug, Deserialize)]
pub(crate) struct RepoInfo {
    /// The commit the revision resolves to.
    pub sha: Option<String>,
    /// Every file in the repo at that commit.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// One file of a repo listing.
#[derive(Debug, Deserialize)]
pub(crate) struct Sibling {
    /// Path of the file relative to the repo root, `/`-separated.
    pub rfilename: String,
}

/// The metadata the HEAD on `resolve/` gives for one file.
#[derive(Debug)]
pub(crate) struct FileMeta {
    /// The ETag (`X-Linked-Etag` for LFS files), unquoted: the blob's name in the cache.
    pub etag: String,
    /// `X-Linked-Size`, or `Content-Length` when not redirected.
    pub size: u64,
    /// Where to GET the bytes: the CDN URL of a redirect, else the resolve URL itself.
    pub location: String,
}

/// A file's bytes being received.
pub(crate) struct Bytes {
    reader: Box<dyn Read + Send>,
    /// The server continues from the requested offset rather than from byte 0.
    pub resumed: bool,
    url: String,
}

impl Bytes {
    /// Reads the next chunk into `buf`; `Ok(0)` at the end. A failure here is a broken transfer,
    /// worth resuming, unlike a failure to connect.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.reader.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                result => return result.map_err(|e| network(&self.url, e)),
            }
        }
    }
}

/// What a failed request was about, so its status can be turned into a precise error.
pub(crate) struct Ctx<'a> {
    pub repo_id: &'a str,
    pub revision: &'a str,
    pub path: Option<&'a str>,
}

pub(crate) struct Client<'a> {
    agent: ureq::Agent,
    cfg: &'a HubConfig,
}

impl<'a> Client<'a> {
    pub fn new(cfg: &'a HubConfig) -> Client<'a> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("tailor-hub/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(TIMEOUT))
            .timeout_recv_response(Some(TIMEOUT))
            .timeout_per_read(Some(TIMEOUT));
        // A proxy cannot reach this machine's loopback, so a local endpoint (a mirror on this
        // host, or a test server) bypasses any proxy taken from the environment.
        if is_loopback(host_of(cfg.base_url())) {
            builder = builder.proxy(None);
        }
        Client {
            agent: builder.build().into(),
            cfg,
        }
    }

    /// `GET /api/{models,datasets}/{repo_id}/revision/{revision}`: the commit and the file list.
    pub fn repo_info(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
    ) -> Result<RepoInfo> {
        let url = repo_info_url(self.cfg.base_url(), repo_type, repo_id, revision);
        let ctx = Ctx {
            repo_id,
            revision,
            path: None,
        };
        let mut response = self.get_following(&url, &ctx, None)?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| network(&url, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Protocol {
            url: shown(&url),
            reason: format!("repo info is not valid JSON: {e}"),
        })
    }

    /// HEAD on `resolve/{revision}/{path}` (huggingface_hub's `get_hf_file_metadata`).
    pub fn file_meta(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        path: &str,
    ) -> Result<FileMeta> {
        let mut url = resolve_url(self.cfg.base_url(), repo_type, repo_id, revision, path);
        let ctx = Ctx {
            repo_id,
            revision,
            path: Some(path),
        };
        let mut hops = 0;
        let response = loop {
            let response = self.send(true, &url, None)?;
            let status = response.status();
            if !status.is_success() && !status.is_redirection() {
                return Err(status_error(&response, &url, &ctx, self.sends_token(&url)));
            }
            if status.is_redirection() {
                let location = header(&response, "location").unwrap_or_default();
                if !location.contains("://") && !location.starts_with("//") && hops < MAX_REDIRECTS
                {
                    url = join_location(&url, location);
                    hops += 1;
                    continue;
                }
            }
            break response;
        };
        let redirected = response.status().is_redirection();
        let protocol = |reason: &str| Error::Protocol {
            url: shown(&url),
            reason: reason.to_owned(),
        };
        if header(&response, "x-repo-commit").is_none() {
            return Err(protocol(
                "no X-Repo-Commit header: the endpoint does not look like a Hugging Face hub (check HF_ENDPOINT and proxy settings)",
            ));
        }
        let etag = header(&response, "x-linked-etag")
            .or_else(|| header(&response, "etag"))
            .map(normalize_etag)
            .ok_or_else(|| protocol("no ETag header"))?;
        if !crate::cache::is_plain_component(&etag) {
            return Err(protocol("the ETag cannot name a cache file"));
        }
        let size = header(&response, "x-linked-size")
            .or_else(|| {
                if redirected {
                    None
                } else {
                    header(&response, "content-length")
                }
            })
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| protocol("no X-Linked-Size or Content-Length header"))?;
        let location = match header(&response, "location") {
            Some(location) => join_location(&url, location),
            None => url.clone(),
        };
        Ok(FileMeta {
            etag,
            size,
            location,
        })
    }

    /// Starts the GET of a file's bytes at `url`, from byte `offset` on (a `Range` request) when
    /// resuming. The reply says whether the server honoured the range (206) or sent the whole
    /// file again (200), in which case the caller must start over.
    pub fn open_bytes(&self, url: &str, ctx: &Ctx<'_>, offset: u64) -> Result<Bytes> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = self.get_following(url, ctx, range.as_deref())?;
        let resumed = offset > 0 && response.status() == StatusCode::PARTIAL_CONTENT;
        let reader = Box::new(response.into_body().into_reader());
        Ok(Bytes {
            reader,
            resumed,
            url: url.to_owned(),
        })
    }

    /// GET that follows every redirect, dropping the token when the host is not the hub's.
    fn get_following(
        &self,
        url: &str,
        ctx: &Ctx<'_>,
        range: Option<&str>,
    ) -> Result<Response<ureq::Body>> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(false, &url, range)?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let Some(location) = header(&response, "location") else {
                    return Err(Error::Protocol {
                        url: shown(&url),
                        reason: "redirect without Location".into(),
                    });
                };
                url = join_location(&url, location);
                continue;
            }
            if !status.is_success() {
                return Err(status_error(&response, &url, ctx, self.sends_token(&url)));
            }
            return Ok(response);
        }
        Err(Error::Protocol {
            url: shown(&url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn sends_token(&self, url: &str) -> bool {
        self.cfg.token.is_some() && host_of(url) == host_of(self.cfg.base_url())
    }

    fn send(&self, head: bool, url: &str, range: Option<&str>) -> Result<Response<ureq::Body>> {
        let auth = self
            .cfg
            .token
            .as_ref()
            .filter(|_| self.sends_token(url))
            .map(|t| format!("Bearer {t}"));
        let result = if head {
            // Identity encoding: the HEAD must report the real file size, not a compressed one.
            let mut request = self.agent.head(url).header("Accept-Encoding", "identity");
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            request.call()
        } else {
            let mut request = self.agent.get(url).header("Accept-Encoding", "identity");
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            if let Some(range) = range {
                request = request.header("Range", range);
            }
            request.call()
        };
        result.map_err(|e| network(url, e))
    }
}

/// `{endpoint}/api/{models,datasets}/{repo_id}/revision/{revision}`, as huggingface_hub's
/// `model_info` / `dataset_info`.
pub(crate) fn repo_info_url(
    base: &str,
    repo_type: RepoType,
    repo_id: &str,
    revision: &str,
) -> String {
    format!(
        "{base}/api/{}/{repo_id}/revision/{}",
        repo_type.plural(),
        quote(revision, false)
    )
}

/// `{endpoint}/{prefix}{repo_id}/resolve/{revision}/{path}` (prefix `datasets/` for datasets),
/// quoted as huggingface_hub's `hf_hub_url`.
pub(crate) fn resolve_url(
    base: &str,
    repo_type: RepoType,
    repo_id: &str,
    revision: &str,
    path: &str,
) -> String {
    format!(
        "{base}/{}{repo_id}/resolve/{}/{}",
        repo_type.url_prefix(),
        quote(revision, false),
        quote(path, true)
    )
}

/// Percent-encodes like Python's `urllib.parse.quote`: unreserved characters stay, and `/` stays
/// only when `keep_slash` (the default `safe='/'` for file paths, `safe=''` for revisions).
pub(crate) fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// huggingface_hub's `_normalize_etag`: drop a weak `W/` prefix and the quotes.
pub(crate) fn normalize_etag(raw: &str) -> String {
    let raw = raw.trim();
    raw.strip_prefix("W/")
        .unwrap_or(raw)
        .trim_matches('"')
        .to_owned()
}

fn header<'r>(response: &'r Response<ureq::Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A URL as put in errors: without its query, which for CDN URLs is a signature that grants
/// access and has no place in logs.
fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

fn network(url: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Network {
        url: shown(url),
        source: Box::new(e),
    }
}

/// Maps a failed response to an error, reading the hub's `X-Error-Code` as huggingface_hub's
/// `hf_raise_for_status` does.
fn status_error(
    response: &Response<ureq::Body>,
    url: &str,
    ctx: &Ctx<'_>,
    token_sent: bool,
) -> Error {
    let status = response.status().as_u16();
    let repo_id = ctx.repo_id.to_owned();
    match header(response, "x-error-code") {
        Some("RevisionNotFound") => {
            return Error::RevisionNotFound {
                repo_id,
                revision: ctx.revision.to_owned(),
            };
        }
        Some("EntryNotFound") => {
            return Error::EntryNotFound {
                repo_id,
                revision: ctx.revision.to_owned(),
                path: ctx.path.unwrap_or_default().to_owned(),
            };
        }
        Some("GatedRepo") => {
            return Error::Unauthorized {
                repo_id,
                status,
                gated: true,
                token_sent,
            };
        }
        _ => {}
    }
    match status {
        // The hub answers 401 for private repos and for repos that do not exist alike, so the
        // message has to cover both; the token hint is what usually fixes it.
        401 | 403 => Error::Unauthorized {
            repo_id,
            status,
            gated: false,
            token_sent,
        },
        404 => match (header(response, "x-error-code"), ctx.path) {
            (Some("RepoNotFound"), _) | (_, None) => Error::RepoNotFound { repo_id },
            (_, Some(path)) => Error::EntryNotFound {
                repo_id,
                revision: ctx.revision.to_owned(),
                path: path.to_owned(),
            },
        },
        _ => Error::Http {
            status,
            url: shown(url),
        },
    }
}

/// The `host[:port]` part of a URL (Python's `netloc`, without user info).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a `Location` header against the URL that returned it.
fn join_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(net_path) = location.strip_prefix("//") {
        return format!("{scheme}://{net_path}");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..authority_end]);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    // A path relative to the current folder: rare from the hub, handled for completeness.
    let path = rest[authority_end..].split(['?', '#']).next().unwrap_or("");
    let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
    format!("{origin}{folder}/{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_python() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("sub dir/a+b.json", true), "sub%20dir/a%2Bb.json");
        assert_eq!(quote("é", true), "%C3%A9");
    }

    #[test]
    fn urls_by_repo_type() {
        let base = "https://hub.example";
        assert_eq!(
            repo_info_url(base, RepoType::Model, "o/m", "main"),
            "https://hub.example/api/models/o/m/revision/main"
        );
        assert_eq!(
            repo_info_url(base, RepoType::Dataset, "o/d", "refs/pr/1"),
            "https://hub.example/api/datasets/o/d/revision/refs%2Fpr%2F1"
        );
        assert_eq!(
            resolve_url(base, RepoType::Model, "o/m", "main", "config.json"),
            "https://hub.example/o/m/resolve/main/config.json"
        );
        assert_eq!(
            resolve_url(
                base,
                RepoType::Dataset,
                "o/d",
                "main",
                "data/train-00000-of-00001.parquet"
            ),
            "https://hub.example/datasets/o/d/resolve/main/data/train-00000-of-00001.parquet"
        );
    }

    #[test]
    fn etags_are_normalized() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn locations_resolve() {
        let base = "http://127.0.0.1:8080/org/name/resolve/main/config.json";
        assert_eq!(
            join_location(base, "https://cdn.example/x?sig=1"),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(
            join_location(base, "/new/name/resolve/main/config.json"),
            "http://127.0.0.1:8080/new/name/resolve/main/config.json"
        );
        assert_eq!(
            join_location(base, "other.json"),
            "http://127.0.0.1:8080/org/name/resolve/main/other.json"
        );
        assert_eq!(
            join_location(base, "//cdn.example/y"),
            "http://cdn.example/y"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://huggingface.co/api/models"),
            "huggingface.co"
        );
        assert_eq!(host_of("http://u:p@127.0.0.1:9/x"), "127.0.0.1:9");
        assert!(is_loopback("127.0.0.1:9"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:80"));
        assert!(!is_loopback("huggingface.co"));
    }
}
